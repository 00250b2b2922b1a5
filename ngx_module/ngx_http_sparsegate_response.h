/*
 * OpenAI's response shapes for a generation: one JSON object at the end, or
 * server-sent events (a role chunk, text chunks, a finish chunk, a usage
 * chunk, "data: [DONE]").  Formatting only: it knows neither the job nor
 * the engine.
 */
#ifndef NGX_HTTP_SPARSEGATE_RESPONSE_H
#define NGX_HTTP_SPARSEGATE_RESPONSE_H

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_sparsegate_errors.h"


typedef enum {
    NGX_HTTP_SG_FMT_CHAT = 0,        /* chat.completion(.chunk) */
    NGX_HTTP_SG_FMT_COMPLETION,      /* text_completion */
    NGX_HTTP_SG_FMT_RAG              /* chat.completion + citations */
} ngx_http_sparsegate_format_e;


/* What every object and chunk of one response repeats. */
typedef struct {
    ngx_http_sparsegate_format_e   format;
    char                           id[48];
    time_t                         created;
    const char                    *model;         /* NUL-terminated */
    char                          *citations;     /* JSON array, or NULL */
    unsigned                       stream:1;
    unsigned                       include_usage:1;
} ngx_http_sparsegate_reply_t;


typedef struct {
    ngx_int_t                      prompt_tokens;
    ngx_int_t                      cached_tokens;
    ngx_int_t                      completion_tokens;
} ngx_http_sparsegate_usage_t;


/* A stream's head: headers and the first chunk; NGX_OK or what to
 * finalize the request with. */
ngx_int_t ngx_http_sparsegate_reply_start(ngx_http_request_t *r,
    ngx_http_sparsegate_reply_t *rp);
/* One chunk of streamed text; NGX_OK or NGX_ERROR. */
ngx_int_t ngx_http_sparsegate_reply_text(ngx_http_request_t *r,
    ngx_http_sparsegate_reply_t *rp, const u_char *text, size_t len);
/* The end: the whole object (text is all of it), or the stream's last
 * chunks (text is what was not streamed yet); what to finalize with. */
ngx_int_t ngx_http_sparsegate_reply_finish(ngx_http_request_t *r,
    ngx_http_sparsegate_reply_t *rp, const u_char *text, size_t len,
    const char *finish_reason, const ngx_http_sparsegate_usage_t *usage);
/* An error: the whole response, or mid-stream an error event and the end
 * of the stream; what to finalize with. */
ngx_int_t ngx_http_sparsegate_reply_error(ngx_http_request_t *r,
    ngx_http_sparsegate_reply_t *rp, ngx_uint_t status,
    ngx_http_sparsegate_error_e kind, const char *msg);

#endif /* NGX_HTTP_SPARSEGATE_RESPONSE_H */
