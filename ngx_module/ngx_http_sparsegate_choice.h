/*
 * One choice of a generation: its tokens into text (text.c), the text into
 * reasoning, content and tool calls (the V3.2 output parser of the
 * tokenizer library), its logprobs as OpenAI shows them; and what of it a
 * stream has not sent yet.  The job owns n of them.
 */
#ifndef NGX_HTTP_SPARSEGATE_CHOICE_H
#define NGX_HTTP_SPARSEGATE_CHOICE_H

#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_http_sparsegate_engine.h"
#include "ngx_http_sparsegate_response.h"
#include "ngx_http_sparsegate_text.h"


typedef struct {
    const sg_tokenizer              *tokenizer;
    ngx_http_sparsegate_format_e     format;
    const ngx_str_t                 *stops;
    ngx_uint_t                       n_stops;
    ngx_uint_t                       thinking;   /* reasoning first */
    ngx_uint_t                       tools;      /* DSML calls parsed */
    ngx_uint_t                       logprobs;
    const char                      *call_prefix;   /* tool call ids */
} ngx_http_sparsegate_choice_opts_t;


/* A growing byte string, and how much of it a stream has sent. */
typedef struct {
    u_char                          *data;
    size_t                           len, cap, sent;
} ngx_http_sparsegate_buf_t;


typedef struct {
    ngx_http_sparsegate_engine_client_t   client;   /* its generation */
    void                                 *owner;    /* the job */
    ngx_uint_t                            index;

    ngx_http_sparsegate_text_t            text;
    sg_chat_parser                       *parser;   /* NULL: plain text */
    ngx_http_sparsegate_buf_t             reasoning;
    ngx_http_sparsegate_buf_t             content;
    ngx_http_sparsegate_call_t           *calls;
    ngx_uint_t                            n_calls, cap_calls, calls_sent;

    ngx_http_sparsegate_logprob_t        *logprobs;
    ngx_uint_t                            n_logprobs, cap_logprobs;
    ngx_uint_t                            logprobs_sent;
    ngx_http_sparsegate_buf_t             lp_text;  /* their strings */
    size_t                               *token_end;    /* text bytes after
                                                           each token */
    ngx_uint_t                            n_tokens, cap_tokens;
    size_t                                chars;    /* characters so far */

    ngx_http_sparsegate_finish_e          finish;
    const char                           *call_prefix;
    int32_t                               eos;
    unsigned                              want_logprobs:1;
    unsigned                              format_text:1;  /* completions */
    unsigned                              submitted:1;
    unsigned                              engine_done:1;
    unsigned                              ended:1;        /* last delta
                                                             given */
    unsigned                              failed:1;       /* out of memory */
} ngx_http_sparsegate_choice_t;


ngx_int_t ngx_http_sparsegate_choice_init(ngx_http_sparsegate_choice_t *ch,
    ngx_uint_t index, const ngx_http_sparsegate_choice_opts_t *o);
void ngx_http_sparsegate_choice_free(ngx_http_sparsegate_choice_t *ch);

/* A token (and its logprobs): NGX_OK, NGX_DONE when a stop string ended
 * the text (nothing more may come), NGX_ERROR (out of memory). */
ngx_int_t ngx_http_sparsegate_choice_token(ngx_http_sparsegate_choice_t *ch,
    int32_t token, const ngx_http_sparsegate_token_lp_t *lp);

/* What the choice adds since the last delta (all of it with last, the
 * generation being over, and with its finish reason then); the strings
 * point into the choice.  NGX_OK or NGX_ERROR. */
ngx_int_t ngx_http_sparsegate_choice_delta(ngx_http_sparsegate_choice_t *ch,
    ngx_uint_t last, ngx_http_sparsegate_delta_t *d);

/* The whole message, once the last delta was taken. */
void ngx_http_sparsegate_choice_message(ngx_http_sparsegate_choice_t *ch,
    ngx_http_sparsegate_delta_t *d);

/* Tokens of the reasoning (up to "</think>"), and all. */
ngx_int_t ngx_http_sparsegate_choice_reasoning_tokens(
    ngx_http_sparsegate_choice_t *ch);

#endif /* NGX_HTTP_SPARSEGATE_CHOICE_H */
