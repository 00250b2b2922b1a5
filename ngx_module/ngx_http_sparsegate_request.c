/*
 * Requests: which endpoint, API keys, reading the body (from memory or from
 * the temp file nginx spooled it into), and the content handler that sends
 * each endpoint its way.
 */

#include "ngx_http_sparsegate.h"


static void ngx_http_sparsegate_body_done(ngx_http_request_t *r);


static ngx_http_sparsegate_endpoint_e
ngx_http_sparsegate_endpoint(ngx_str_t *uri)
{
    static const struct {
        const char                      *suffix;
        ngx_http_sparsegate_endpoint_e   ep;
    } map[] = {
        { "/chat/completions", NGX_HTTP_SG_EP_CHAT },
        { "/completions", NGX_HTTP_SG_EP_COMPLETIONS },
        { "/rag", NGX_HTTP_SG_EP_RAG },
        { "/models", NGX_HTTP_SG_EP_MODELS },
        { "/health", NGX_HTTP_SG_EP_HEALTH },
        { "/metrics", NGX_HTTP_SG_EP_METRICS },
    };

    size_t      len;
    ngx_uint_t  i;
    u_char     *p;

    for (i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        len = ngx_strlen(map[i].suffix);
        if (uri->len >= len
            && ngx_strncmp(uri->data + uri->len - len, map[i].suffix, len)
               == 0)
        {
            return map[i].ep;
        }
    }

    /* /v1/models/{name} */
    p = ngx_strlcasestrn(uri->data, uri->data + uri->len,
                         (u_char *) "/models/", sizeof("/models/") - 2);
    if (p != NULL) {
        return NGX_HTTP_SG_EP_MODELS;
    }

    return NGX_HTTP_SG_EP_OTHER;
}


/* NGX_OK when the request may go on; else the 401 is answered and *rc
 * is what to finalize with. */
ngx_int_t
ngx_http_sparsegate_check_auth(ngx_http_request_t *r, ngx_int_t *rc)
{
    u_char                          *key;
    size_t                           len, j;
    ngx_uint_t                       i, diff;
    ngx_str_t                       *keys;
    ngx_table_elt_t                 *h;
    ngx_http_sparsegate_loc_conf_t  *slcf;

    slcf = ngx_http_get_module_loc_conf(r, ngx_http_sparsegate_module);
    if (slcf->api_keys == NULL || slcf->api_keys->nelts == 0) {
        return NGX_OK;
    }

    h = r->headers_in.authorization;
    if (h == NULL) {
        *rc = ngx_http_sparsegate_error(r, NGX_HTTP_UNAUTHORIZED,
                   NGX_HTTP_SG_ERR_AUTH, NULL,
                   "missing API key: send \"Authorization: Bearer KEY\"");
        return NGX_ERROR;
    }
    if (h->value.len < sizeof("Bearer ") - 1
        || ngx_strncasecmp(h->value.data, (u_char *) "Bearer ",
                           sizeof("Bearer ") - 1) != 0)
    {
        *rc = ngx_http_sparsegate_error(r, NGX_HTTP_UNAUTHORIZED,
                   NGX_HTTP_SG_ERR_AUTH, NULL,
                   "the Authorization header must be \"Bearer KEY\"");
        return NGX_ERROR;
    }
    key = h->value.data + sizeof("Bearer ") - 1;
    len = h->value.len - (sizeof("Bearer ") - 1);

    keys = slcf->api_keys->elts;
    for (i = 0; i < slcf->api_keys->nelts; i++) {
        if (keys[i].len != len) {
            continue;
        }
        /* constant time over the key's length */
        diff = 0;
        for (j = 0; j < len; j++) {
            diff |= keys[i].data[j] ^ key[j];
        }
        if (diff == 0) {
            return NGX_OK;
        }
    }

    *rc = ngx_http_sparsegate_error(r, NGX_HTTP_UNAUTHORIZED,
                                     NGX_HTTP_SG_ERR_AUTH, NULL,
                                     "incorrect API key provided");
    return NGX_ERROR;
}


ngx_int_t
ngx_http_sparsegate_handler(ngx_http_request_t *r)
{
    ngx_int_t                        rc;
    ngx_http_sparsegate_ctx_t       *ctx;
    ngx_http_sparsegate_endpoint_e   ep;

    ep = ngx_http_sparsegate_endpoint(&r->uri);
    ngx_http_sparsegate_count_request(ep);

    /* reached through "error_page 413 ..." when nginx refused the body */
    if (r->err_status == NGX_HTTP_REQUEST_ENTITY_TOO_LARGE) {
        ngx_http_core_loc_conf_t  *clcf;

        clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);
        return ngx_http_sparsegate_error(r,
                   NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                   NGX_HTTP_SG_ERR_TOO_LARGE, NULL,
                   "request body too large: the limit is %O bytes "
                   "(client_max_body_size)", clcf->client_max_body_size);
    }

    switch (ep) {

    case NGX_HTTP_SG_EP_HEALTH:
    case NGX_HTTP_SG_EP_METRICS:
    case NGX_HTTP_SG_EP_MODELS:
        if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
            return ngx_http_sparsegate_error(r, NGX_HTTP_NOT_ALLOWED,
                       NGX_HTTP_SG_ERR_BAD_REQUEST, NULL,
                       "method not allowed: use GET");
        }
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }
        if (ep == NGX_HTTP_SG_EP_METRICS) {
            return ngx_http_sparsegate_metrics(r);
        }
        if (ep == NGX_HTTP_SG_EP_HEALTH) {
            static u_char  ok[] = "{\"status\":\"ok\"}\n";
            u_char         buf[512];
            size_t         n;

            if (ngx_http_sparsegate_engine() != NULL) {
                return ngx_http_sparsegate_send_text(r, NGX_HTTP_OK,
                           "application/json", ok, sizeof(ok) - 1);
            }
            n = ngx_snprintf(buf, sizeof(buf),
                             "{\"status\":\"unavailable\",\"reason\":\"%s\"}\n",
                             ngx_http_sparsegate_engine_error()) - buf;
            return ngx_http_sparsegate_send_text(r,
                       NGX_HTTP_SERVICE_UNAVAILABLE, "application/json",
                       buf, n);
        }
        if (ngx_http_sparsegate_check_auth(r, &rc) != NGX_OK) {
            return rc;
        }
        return ngx_http_sparsegate_models(r);

    case NGX_HTTP_SG_EP_CHAT:
    case NGX_HTTP_SG_EP_COMPLETIONS:
    case NGX_HTTP_SG_EP_RAG:
        break;

    default:
        return ngx_http_sparsegate_error(r, NGX_HTTP_NOT_FOUND,
                   NGX_HTTP_SG_ERR_NOT_FOUND, NULL,
                   "unknown endpoint \"%V\"", &r->uri);
    }

    if (!(r->method & NGX_HTTP_POST)) {
        return ngx_http_sparsegate_error(r, NGX_HTTP_NOT_ALLOWED,
                   NGX_HTTP_SG_ERR_BAD_REQUEST, NULL,
                   "method not allowed: use POST");
    }

    if (ngx_http_sparsegate_check_auth(r, &rc) != NGX_OK) {
        return rc;
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_sparsegate_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    ctx->endpoint = ep;
    ngx_http_set_ctx(r, ctx, ngx_http_sparsegate_module);

    rc = ngx_http_read_client_request_body(r, ngx_http_sparsegate_body_done);
    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


static void
ngx_http_sparsegate_body_done(ngx_http_request_t *r)
{
    ngx_int_t                   rc;
    ngx_http_sparsegate_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_sparsegate_module);

    if (ngx_http_sparsegate_engine() == NULL) {
        rc = ngx_http_sparsegate_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                 NGX_HTTP_SG_ERR_ENGINE, NULL, "engine unavailable: %s",
                 ngx_http_sparsegate_engine_error());
        ngx_http_finalize_request(r, rc);
        return;
    }

    switch (ctx->endpoint) {
    case NGX_HTTP_SG_EP_CHAT:
        rc = ngx_http_sparsegate_chat(r);
        break;
    case NGX_HTTP_SG_EP_COMPLETIONS:
        rc = ngx_http_sparsegate_completions(r);
        break;
    default:
        rc = ngx_http_sparsegate_rag(r);
        break;
    }

    if (rc != NGX_DONE) {
        ngx_http_finalize_request(r, rc);
    }
}


/* The whole body in one buffer (pool memory), from memory or from the
 * temp file nginx spooled a large body into. */
ngx_int_t
ngx_http_sparsegate_read_body(ngx_http_request_t *r, u_char **data,
    size_t *len)
{
    off_t         size;
    u_char       *p;
    ssize_t       n;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    *data = NULL;
    *len = 0;
    if (r->request_body == NULL || r->request_body->bufs == NULL) {
        return NGX_OK;
    }

    size = 0;
    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        size += ngx_buf_size(cl->buf);
    }

    p = ngx_pnalloc(r->pool, (size_t) size + 1);
    if (p == NULL) {
        return NGX_ERROR;
    }
    *data = p;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;
        if (ngx_buf_in_memory(b)) {
            p = ngx_cpymem(p, b->pos, b->last - b->pos);
            continue;
        }
        if (b->in_file) {
            /* a local temp file: a short read, as nginx's own modules do */
            n = ngx_read_file(b->file, p, (size_t) (b->file_last - b->file_pos),
                              b->file_pos);
            if (n != b->file_last - b->file_pos) {
                ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                              "sparsegate: short read of the request body "
                              "temp file");
                return NGX_ERROR;
            }
            p += n;
        }
    }

    *p = '\0';
    *len = p - *data;
    return NGX_OK;
}


cJSON *
ngx_http_sparsegate_parse_body(ngx_http_request_t *r, ngx_int_t *rc)
{
    u_char       *data;
    size_t        len;
    cJSON        *root;
    const char   *where;

    if (ngx_http_sparsegate_read_body(r, &data, &len) != NGX_OK) {
        *rc = ngx_http_sparsegate_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                        NGX_HTTP_SG_ERR_BAD_REQUEST, NULL,
                                        "cannot read the request body");
        return NULL;
    }
    if (len == 0) {
        *rc = ngx_http_sparsegate_error(r, NGX_HTTP_BAD_REQUEST,
                                        NGX_HTTP_SG_ERR_BAD_REQUEST, NULL,
                                        "the request body is empty: send "
                                        "a JSON object");
        return NULL;
    }

    root = cJSON_ParseWithLengthOpts((char *) data, len, &where, 0);
    if (root == NULL || !cJSON_IsObject(root)) {
        *rc = ngx_http_sparsegate_error(r, NGX_HTTP_BAD_REQUEST,
                                        NGX_HTTP_SG_ERR_BAD_REQUEST, NULL,
                                        "the request body is not a JSON "
                                        "object (error near byte %uz)",
                                        root ? (size_t) 0
                                        : (size_t) (where - (char *) data));
        cJSON_Delete(root);
        return NULL;
    }

    return root;
}
