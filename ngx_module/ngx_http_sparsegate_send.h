/*
 * Bytes out: a whole response (JSON or text), or server-sent events one at a
 * time.  Knows HTTP and nothing of generation.
 */
#ifndef NGX_HTTP_SPARSEGATE_SEND_H
#define NGX_HTTP_SPARSEGATE_SEND_H

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <cjson/cJSON.h>


/* The whole response; returns what to finalize the request with. */
ngx_int_t ngx_http_sparsegate_send_text(ngx_http_request_t *r,
    ngx_uint_t status, const char *type, u_char *data, size_t len);
ngx_int_t ngx_http_sparsegate_send_json(ngx_http_request_t *r,
    ngx_uint_t status, cJSON *json);

/* An event stream: the 200 header, then "data: <payload>\n\n" events,
 * each flushed at once; last ends the response. */
ngx_int_t ngx_http_sparsegate_sse_start(ngx_http_request_t *r);
ngx_int_t ngx_http_sparsegate_sse(ngx_http_request_t *r, const char *payload,
    size_t len, ngx_uint_t last);
ngx_int_t ngx_http_sparsegate_sse_json(ngx_http_request_t *r, cJSON *json);

/* Finalizes a request from an event that is not its connection's own (the
 * engine's eventfd, a timer, a store query, a thread's completion), and
 * runs what that posted. */
void ngx_http_sparsegate_finalize(ngx_http_request_t *r, ngx_int_t rc);

#endif /* NGX_HTTP_SPARSEGATE_SEND_H */
