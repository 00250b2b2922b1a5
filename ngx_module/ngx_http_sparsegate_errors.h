/*
 * Errors in OpenAI's shape, so that its client libraries raise the right
 * exception class with a readable message:
 *   {"error": {"message": "...", "type": "...", "param": ..., "code": ...}}
 */
#ifndef NGX_HTTP_SPARSEGATE_ERRORS_H
#define NGX_HTTP_SPARSEGATE_ERRORS_H

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_sparsegate_counters.h"


/* An error found where the request is not at hand (parsing, submitting),
 * answered later by ngx_http_sparsegate_send_fault(). */
typedef struct {
    ngx_uint_t                   status;
    ngx_http_sparsegate_error_e  kind;
    const char                  *param;
    char                         msg[512];
} ngx_http_sparsegate_fault_t;


/* Fills f; returns NGX_ERROR, so that "return ngx_http_sparsegate_fault()"
 * reads as a failure. */
ngx_int_t ngx_http_sparsegate_fault(ngx_http_sparsegate_fault_t *f,
    ngx_uint_t status, ngx_http_sparsegate_error_e kind, const char *param,
    const char *fmt, ...);

/* The worker's memory ran out, wherever: 503 out_of_memory (the client
 * may try again: Retry-After), "out of memory". */
ngx_int_t ngx_http_sparsegate_fault_oom(ngx_http_sparsegate_fault_t *f);

/* Sends the error as the whole response (counted, logged; a 429 or a 503
 * carries Retry-After); returns what to finalize the request with. */
ngx_int_t ngx_http_sparsegate_error(ngx_http_request_t *r,
    ngx_uint_t status, ngx_http_sparsegate_error_e kind, const char *param,
    const char *fmt, ...);
ngx_int_t ngx_http_sparsegate_send_fault(ngx_http_request_t *r,
    ngx_http_sparsegate_fault_t *f);

/* The error's JSON text (malloc'ed), for a stream that has begun. */
u_char *ngx_http_sparsegate_error_json(ngx_http_sparsegate_error_e kind,
    const char *param, const char *message, size_t *len);

#endif /* NGX_HTTP_SPARSEGATE_ERRORS_H */
