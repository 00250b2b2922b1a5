/*
 * Bytes out: a whole response, or server-sent events.
 */

#include "ngx_http_sparsegate_send.h"


void
ngx_http_sparsegate_finalize(ngx_http_request_t *r, ngx_int_t rc)
{
    ngx_connection_t  *c;

    /* what the finalizing posted (a termination, a subrequest) runs now:
     * nothing else on this connection would run it before its next event,
     * and a stream cut by an error would hang open until the client gave
     * up (as nginx's own upstream handlers do; c outlives a close) */
    c = r->connection;
    ngx_http_finalize_request(r, rc);
    ngx_http_run_posted_requests(c);
}


ngx_int_t
ngx_http_sparsegate_send_text(ngx_http_request_t *r, ngx_uint_t status,
    const char *type, u_char *data, size_t len)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "sparsegate send: %ui, %uz bytes", status, len);

    r->headers_out.status = status;
    r->headers_out.content_length_n = len;
    r->headers_out.content_type.data = (u_char *) type;
    r->headers_out.content_type.len = ngx_strlen(type);
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    if (r->method == NGX_HTTP_HEAD || len == 0) {
        r->header_only = (r->method == NGX_HTTP_HEAD);
        rc = ngx_http_send_header(r);
        if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
            return rc;
        }
        return ngx_http_send_special(r, NGX_HTTP_LAST);
    }

    b = ngx_create_temp_buf(r->pool, len);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    b->last = ngx_cpymem(b->pos, data, len);
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    rc = ngx_http_send_header(r);
    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        /* header_only: a 304 of the not-modified filter */
        return rc;
    }

    out.buf = b;
    out.next = NULL;
    return ngx_http_output_filter(r, &out);
}


ngx_int_t
ngx_http_sparsegate_send_json(ngx_http_request_t *r, ngx_uint_t status,
    cJSON *json)
{
    char       *text;
    ngx_int_t   rc;

    text = cJSON_PrintUnformatted(json);
    if (text == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    rc = ngx_http_sparsegate_send_text(r, status, "application/json",
                                       (u_char *) text, ngx_strlen(text));
    free(text);
    return rc;
}


ngx_int_t
ngx_http_sparsegate_sse_start(ngx_http_request_t *r)
{
    ngx_table_elt_t  *h;

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "sparsegate send: event stream starts");

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = -1;
    ngx_str_set(&r->headers_out.content_type, "text/event-stream");
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }
    h->hash = 1;
    ngx_str_set(&h->key, "Cache-Control");
    ngx_str_set(&h->value, "no-cache");

    /* a proxy in front must not buffer the stream */
    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }
    h->hash = 1;
    ngx_str_set(&h->key, "X-Accel-Buffering");
    ngx_str_set(&h->value, "no");

    return ngx_http_send_header(r);
}


ngx_int_t
ngx_http_sparsegate_sse(ngx_http_request_t *r, const char *payload,
    size_t len, ngx_uint_t last)
{
    ngx_buf_t    *b;
    ngx_chain_t   out;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "sparsegate send: event of %uz bytes%s", len,
                   last ? ", the last" : "");

    b = ngx_create_temp_buf(r->pool, len + sizeof("data: \n\n") - 1);
    if (b == NULL) {
        return NGX_ERROR;
    }
    b->last = ngx_cpymem(b->last, "data: ", sizeof("data: ") - 1);
    b->last = ngx_cpymem(b->last, payload, len);
    b->last = ngx_cpymem(b->last, "\n\n", 2);
    b->flush = 1;
    if (last) {
        b->last_buf = 1;
        b->last_in_chain = 1;
    }

    out.buf = b;
    out.next = NULL;
    return ngx_http_output_filter(r, &out);
}


ngx_int_t
ngx_http_sparsegate_sse_json(ngx_http_request_t *r, cJSON *json)
{
    char       *text;
    ngx_int_t   rc;

    text = cJSON_PrintUnformatted(json);
    if (text == NULL) {
        return NGX_ERROR;
    }
    rc = ngx_http_sparsegate_sse(r, text, ngx_strlen(text), 0);
    free(text);
    return rc;
}
