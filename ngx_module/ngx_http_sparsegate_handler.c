/*
 * The content handler of every sparsegate location: the endpoint its
 * configuration names, the API key (for every endpoint of a location that
 * has keys), the method, the body, then the endpoint.
 */

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "ngx_http_sparsegate_handler.h"
#include "ngx_http_sparsegate_conf.h"
#include "ngx_http_sparsegate_counters.h"
#include "ngx_http_sparsegate_endpoints.h"
#include "ngx_http_sparsegate_engine.h"
#include "ngx_http_sparsegate_errors.h"
#include "ngx_http_sparsegate_fault.h"


typedef ngx_int_t (*ngx_http_sparsegate_endpoint_pt)(ngx_http_request_t *r);

struct ngx_http_sparsegate_endpoint_s {
    ngx_str_t                         name;
    ngx_uint_t                        methods;
    ngx_http_sparsegate_count_e       counter;
    unsigned                          body:1;      /* a JSON body */
    unsigned                          engine:1;    /* generates */
    unsigned                          prefix:1;    /* the URI past the
                                                      location's prefix is
                                                      its argument */
    ngx_http_sparsegate_endpoint_pt   handler;
};


static ngx_int_t ngx_http_sparsegate_handler(ngx_http_request_t *r);
static void ngx_http_sparsegate_body_done(ngx_http_request_t *r);
static ngx_int_t ngx_http_sparsegate_not_found(ngx_http_request_t *r);


#define NGX_HTTP_SG_READ  (NGX_HTTP_GET|NGX_HTTP_HEAD)

static ngx_http_sparsegate_endpoint_t  ngx_http_sparsegate_endpoints[] = {

    { ngx_string("chat_completions"), NGX_HTTP_POST,
      NGX_HTTP_SG_COUNT_CHAT, 1, 1, 0, ngx_http_sparsegate_chat },

    { ngx_string("completions"), NGX_HTTP_POST,
      NGX_HTTP_SG_COUNT_COMPLETIONS, 1, 1, 0,
      ngx_http_sparsegate_completions },

    { ngx_string("rag"), NGX_HTTP_POST,
      NGX_HTTP_SG_COUNT_RAG, 1, 1, 0, ngx_http_sparsegate_rag },

    /* the tokenizer only: they answer without an engine */
    { ngx_string("tokenize"), NGX_HTTP_POST,
      NGX_HTTP_SG_COUNT_TOKENIZE, 1, 0, 0, ngx_http_sparsegate_tokenize },

    { ngx_string("detokenize"), NGX_HTTP_POST,
      NGX_HTTP_SG_COUNT_TOKENIZE, 1, 0, 0, ngx_http_sparsegate_detokenize },

    { ngx_string("models"), NGX_HTTP_SG_READ,
      NGX_HTTP_SG_COUNT_MODELS, 0, 0, 0, ngx_http_sparsegate_models },

    { ngx_string("model"), NGX_HTTP_SG_READ,
      NGX_HTTP_SG_COUNT_MODELS, 0, 0, 1, ngx_http_sparsegate_model },

    { ngx_string("health"), NGX_HTTP_SG_READ,
      NGX_HTTP_SG_COUNT_HEALTH, 0, 0, 0, ngx_http_sparsegate_health },

    { ngx_string("metrics"), NGX_HTTP_SG_READ,
      NGX_HTTP_SG_COUNT_METRICS, 0, 0, 0, ngx_http_sparsegate_metrics },

    { ngx_string("status"), NGX_HTTP_SG_READ,
      NGX_HTTP_SG_COUNT_STATUS, 0, 0, 0, ngx_http_sparsegate_status },

    { ngx_string("collections"), NGX_HTTP_SG_READ,
      NGX_HTTP_SG_COUNT_COLLECTIONS, 0, 0, 0,
      ngx_http_sparsegate_collections },

    /* the page; its files are read at configuration time */
    { ngx_string("ui"), NGX_HTTP_SG_READ,
      NGX_HTTP_SG_COUNT_UI, 0, 0, 1, ngx_http_sparsegate_ui },

    /* OpenAI's error shape for what error_page hands over (413), and a
     * 404 for paths that name no endpoint */
    { ngx_string("error"), 0,
      NGX_HTTP_SG_COUNT_OTHER, 0, 0, 0, ngx_http_sparsegate_not_found },

    { ngx_null_string, 0, 0, 0, 0, 0, NULL }
};


/* ---------------------------------------------------------- directives */

/* sparsegate_api ENDPOINT: this location serves ENDPOINT. */
char *
ngx_http_sparsegate_api(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_sparsegate_loc_conf_t *slcf = conf;

    ngx_str_t                       *value;
    ngx_http_core_loc_conf_t        *clcf;
    ngx_http_sparsegate_endpoint_t  *ep;

    if (slcf->endpoint != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;
    if (cf->args->nelts < 2) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"sparsegate_api\" needs the endpoint this "
                           "location serves: chat_completions, "
                           "completions, rag, tokenize, detokenize, models, "
                           "model, health, metrics, status, collections, ui "
                           "or error");
        return NGX_CONF_ERROR;
    }

    for (ep = ngx_http_sparsegate_endpoints; ep->name.len; ep++) {
        if (ep->name.len == value[1].len
            && ngx_strncmp(ep->name.data, value[1].data, value[1].len) == 0)
        {
            break;
        }
    }
    if (ep->name.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unknown endpoint \"%V\": chat_completions, "
                           "completions, rag, tokenize, detokenize, models, "
                           "model, health, metrics, status, collections, ui "
                           "or error", &value[1]);
        return NGX_CONF_ERROR;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (ep->prefix
        && (clcf->exact_match || clcf->named || clcf->noname
#if (NGX_PCRE)
            || clcf->regex
#endif
            || clcf->name.len == 0
            || clcf->name.data[clcf->name.len - 1] != '/'))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "endpoint \"%V\" takes what follows a prefix "
                           "location ending in \"/\", such as "
                           "\"location ^~ /v1/models/\"", &value[1]);
        return NGX_CONF_ERROR;
    }
    if (ep->prefix) {
        /* the prefix without its "/" is answered with a redirect to it */
        clcf->auto_redirect = 1;
    }

    slcf->endpoint = ep;
    clcf->handler = ngx_http_sparsegate_handler;

    return NGX_CONF_OK;
}


/* sparsegate_api_key KEY | off: kept as a SHA-256 digest, so that the
 * check compares 32 bytes whatever the length of either key. */
char *
ngx_http_sparsegate_api_key(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_sparsegate_loc_conf_t *slcf = conf;

    u_char     *digest;
    ngx_str_t  *value;

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        if (slcf->api_keys != NGX_CONF_UNSET_PTR) {
            return "is duplicate (\"off\" with keys)";
        }
        slcf->api_keys = NULL;
        return NGX_CONF_OK;
    }

    if (slcf->api_keys == NULL) {
        return "is duplicate (keys after \"off\")";
    }
    if (value[1].len == 0) {
        return "is empty";
    }

    if (slcf->api_keys == NGX_CONF_UNSET_PTR) {
        slcf->api_keys = ngx_array_create(cf->pool, 2, SHA256_DIGEST_LENGTH);
        if (slcf->api_keys == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    digest = ngx_array_push(slcf->api_keys);
    if (digest == NULL) {
        return NGX_CONF_ERROR;
    }
    SHA256(value[1].data, value[1].len, digest);

    return NGX_CONF_OK;
}


/* An endpoint's configuration once the location's is merged: the page's
 * files are read for a location that serves the page (prev: the
 * enclosing level, whose endpoint a nested location inherits). */
char *
ngx_http_sparsegate_endpoint_merge(ngx_conf_t *cf,
    ngx_http_sparsegate_loc_conf_t *prev, ngx_http_sparsegate_loc_conf_t *conf)
{
    if (conf->endpoint != NULL && conf->endpoint != prev->endpoint
        && conf->endpoint->handler == ngx_http_sparsegate_ui)
    {
        return ngx_http_sparsegate_ui_load(cf, conf);
    }
    return NGX_CONF_OK;
}


/* -------------------------------------------------------------- access */

/* NGX_OK when the location has no keys or the request carries one of
 * them; else NGX_ERROR and the 401 in f.  Every key is compared, each in
 * time independent of its content and of the lengths of both. */
static ngx_int_t
ngx_http_sparsegate_access(ngx_http_request_t *r,
    ngx_http_sparsegate_fault_t *f)
{
    u_char                          *key, *keys, digest[SHA256_DIGEST_LENGTH];
    size_t                           len;
    ngx_uint_t                       i, match;
    ngx_table_elt_t                 *h;
    ngx_http_sparsegate_ctx_t       *ctx;
    ngx_http_sparsegate_loc_conf_t  *slcf;

    slcf = ngx_http_get_module_loc_conf(r, ngx_http_sparsegate_module);
    if (slcf->api_keys == NULL) {
        return NGX_OK;
    }

    h = r->headers_in.authorization;
    if (h == NULL) {
        return ngx_http_sparsegate_fault(f, NGX_HTTP_UNAUTHORIZED,
                   NGX_HTTP_SG_ERR_AUTH, NULL,
                   "missing API key: send \"Authorization: Bearer KEY\"");
    }
    if (h->value.len < sizeof("Bearer ") - 1
        || ngx_strncasecmp(h->value.data, (u_char *) "Bearer ",
                           sizeof("Bearer ") - 1) != 0)
    {
        return ngx_http_sparsegate_fault(f, NGX_HTTP_UNAUTHORIZED,
                   NGX_HTTP_SG_ERR_AUTH, NULL,
                   "the Authorization header must be \"Bearer KEY\"");
    }
    key = h->value.data + sizeof("Bearer ") - 1;
    len = h->value.len - (sizeof("Bearer ") - 1);

    SHA256(key, len, digest);

    match = 0;
    keys = slcf->api_keys->elts;
    for (i = 0; i < slcf->api_keys->nelts; i++) {
        match |= (CRYPTO_memcmp(keys + i * SHA256_DIGEST_LENGTH, digest,
                                SHA256_DIGEST_LENGTH) == 0);
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "sparsegate access: key of %uz bytes %s", len,
                   match ? "accepted" : "refused");

    if (match) {
        /* the key's digest is the tenant: its prompts share the prefix
         * cache with its own requests only */
        ctx = ngx_http_sparsegate_ctx(r);
        if (ctx == NULL) {
            return ngx_http_sparsegate_fault_oom(f);
        }
        ngx_memcpy(ctx->tenant, digest, SHA256_DIGEST_LENGTH);
        ctx->keyed = 1;
        return NGX_OK;
    }
    return ngx_http_sparsegate_fault(f, NGX_HTTP_UNAUTHORIZED,
                                     NGX_HTTP_SG_ERR_AUTH, NULL,
                                     "incorrect API key provided");
}


/* ------------------------------------------------------------- handler */

static ngx_int_t
ngx_http_sparsegate_handler(ngx_http_request_t *r)
{
    ngx_int_t                              rc;
    const char                            *reason;
    ngx_http_core_loc_conf_t              *clcf;
    ngx_http_sparsegate_fault_t            f;
    ngx_http_sparsegate_loc_conf_t        *slcf;
    const ngx_http_sparsegate_endpoint_t  *ep;

    slcf = ngx_http_get_module_loc_conf(r, ngx_http_sparsegate_module);
    ep = slcf->endpoint;

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "sparsegate: %V \"%V\": endpoint %V", &r->method_name,
                   &r->uri, &ep->name);

    ngx_http_sparsegate_fault_arm(r);
    ngx_http_sparsegate_count_request(ep->counter);

    if (ngx_http_sparsegate_access(r, &f) != NGX_OK) {
        goto refuse;
    }

    /* reached through "error_page 413 ..." when nginx refused the body */
    if (r->err_status == NGX_HTTP_REQUEST_ENTITY_TOO_LARGE) {
        clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);
        ngx_http_sparsegate_fault(&f, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
            NGX_HTTP_SG_ERR_TOO_LARGE, NULL,
            "request body too large: the limit is %O bytes "
            "(client_max_body_size)", clcf->client_max_body_size);
        goto refuse;
    }
    if (r->err_status >= NGX_HTTP_BAD_REQUEST) {
        ngx_http_sparsegate_fault(&f, r->err_status,
            r->err_status >= NGX_HTTP_INTERNAL_SERVER_ERROR
            ? NGX_HTTP_SG_ERR_ENGINE : NGX_HTTP_SG_ERR_BAD_REQUEST, NULL,
            "the request failed with HTTP status %ui", r->err_status);
        goto refuse;
    }

    if (ep->methods != 0 && !(r->method & ep->methods)) {
        ngx_http_sparsegate_fault(&f, NGX_HTTP_NOT_ALLOWED,
            NGX_HTTP_SG_ERR_BAD_REQUEST, NULL, "method not allowed: use %s",
            (ep->methods & NGX_HTTP_POST) ? "POST" : "GET");
        goto refuse;
    }

    if (!ep->body) {
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }
        return ep->handler(r);
    }

    reason = ep->engine ? ngx_http_sparsegate_engine_unavailable() : NULL;
    if (reason != NULL) {
        ngx_http_sparsegate_fault(&f, NGX_HTTP_SERVICE_UNAVAILABLE,
            NGX_HTTP_SG_ERR_ENGINE, NULL, "engine unavailable: %s", reason);
        goto refuse;
    }

    rc = ngx_http_read_client_request_body(r, ngx_http_sparsegate_body_done);
    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }
    return NGX_DONE;

refuse:

    /* the body is not read: drop it, so that it is not taken for the next
     * request on the connection */
    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }
    return ngx_http_sparsegate_send_fault(r, &f);
}


static void
ngx_http_sparsegate_body_done(ngx_http_request_t *r)
{
    ngx_int_t                        rc;
    ngx_http_sparsegate_loc_conf_t  *slcf;

    slcf = ngx_http_get_module_loc_conf(r, ngx_http_sparsegate_module);

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "sparsegate: body read, to endpoint %V",
                   &slcf->endpoint->name);

    rc = slcf->endpoint->handler(r);
    if (rc != NGX_DONE) {
        ngx_http_finalize_request(r, rc);
    }
}


static ngx_int_t
ngx_http_sparsegate_not_found(ngx_http_request_t *r)
{
    return ngx_http_sparsegate_error(r, NGX_HTTP_NOT_FOUND,
                                     NGX_HTTP_SG_ERR_NOT_FOUND, NULL,
                                     "unknown endpoint \"%V\"", &r->uri);
}
