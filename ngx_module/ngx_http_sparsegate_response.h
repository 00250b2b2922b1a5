/*
 * OpenAI's response shapes for a generation: one JSON object at the end, or
 * server-sent events (role chunks, delta chunks, finish chunks, a usage
 * chunk, "data: [DONE]").  Choices, reasoning_content, tool_calls and
 * logprobs as OpenAI (and DeepSeek's API for reasoning_content) write them.
 * Formatting only: it knows neither the job nor the engine.
 */
#ifndef NGX_HTTP_SPARSEGATE_RESPONSE_H
#define NGX_HTTP_SPARSEGATE_RESPONSE_H

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_sparsegate_errors.h"


#define NGX_HTTP_SG_MAX_TOP  20


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
    unsigned                       reasoning:1;   /* thinking: the message
                                                     has reasoning_content */
    unsigned                       logprobs:1;    /* asked for */
} ngx_http_sparsegate_reply_t;


typedef struct {
    ngx_int_t                      prompt_tokens;
    ngx_int_t                      cached_tokens;
    ngx_int_t                      completion_tokens;
    ngx_int_t                      reasoning_tokens;
} ngx_http_sparsegate_usage_t;


/* A token as logprobs show it: its text (valid UTF-8) and its bytes. */
typedef struct {
    ngx_str_t                      text;
    ngx_str_t                      bytes;
    float                          logprob;
} ngx_http_sparsegate_lp_token_t;

typedef struct {
    ngx_http_sparsegate_lp_token_t  chosen;
    ngx_uint_t                      n_top;
    ngx_http_sparsegate_lp_token_t  top[NGX_HTTP_SG_MAX_TOP];
    size_t                          text_offset;  /* completions */
} ngx_http_sparsegate_logprob_t;


typedef struct {
    ngx_uint_t                     index;         /* in its choice */
    ngx_str_t                      id;
    ngx_str_t                      name;
    ngx_str_t                      arguments;     /* JSON text */
} ngx_http_sparsegate_call_t;


/* What one choice adds: a chunk's delta, or (at the end of a whole
 * response) its message. */
typedef struct {
    ngx_uint_t                     index;
    ngx_str_t                      reasoning;
    ngx_str_t                      content;
    ngx_http_sparsegate_call_t    *calls;
    ngx_uint_t                     n_calls;
    ngx_http_sparsegate_logprob_t *logprobs;
    ngx_uint_t                     n_logprobs;
    const char                    *finish_reason; /* NULL: not finished */
} ngx_http_sparsegate_delta_t;


/* A stream's head: headers and a role chunk per choice; NGX_OK or what to
 * finalize the request with. */
ngx_int_t ngx_http_sparsegate_reply_start(ngx_http_request_t *r,
    ngx_http_sparsegate_reply_t *rp, ngx_uint_t n_choices);
/* The chunks of one delta (its text, then each call's, then its finish);
 * nothing for an empty delta; NGX_OK or NGX_ERROR. */
ngx_int_t ngx_http_sparsegate_reply_delta(ngx_http_request_t *r,
    ngx_http_sparsegate_reply_t *rp, const ngx_http_sparsegate_delta_t *d);
/* The end: the whole object (the choices' messages), or a stream's usage
 * chunk (when asked) and [DONE]; what to finalize with. */
ngx_int_t ngx_http_sparsegate_reply_finish(ngx_http_request_t *r,
    ngx_http_sparsegate_reply_t *rp, const ngx_http_sparsegate_delta_t *d,
    ngx_uint_t n, const ngx_http_sparsegate_usage_t *usage);
/* An error: the whole response, or mid-stream an error event and the end
 * of the stream; what to finalize with. */
ngx_int_t ngx_http_sparsegate_reply_error(ngx_http_request_t *r,
    ngx_http_sparsegate_reply_t *rp, ngx_uint_t status,
    ngx_http_sparsegate_error_e kind, const char *msg);

#endif /* NGX_HTTP_SPARSEGATE_RESPONSE_H */
