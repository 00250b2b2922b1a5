/*
 * Prompt text to token ids (the tokenizer, special tokens on; a chat through
 * DeepSeek-V3.2's encoding first): inline when short, in nginx's thread
 * pool when long.
 */
#ifndef NGX_HTTP_SPARSEGATE_ENCODE_H
#define NGX_HTTP_SPARSEGATE_ENCODE_H

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "tokenizer.h"


/* Given the text and its ids (both freed when it returns, the ids never
 * empty); returns NGX_DONE or what to finalize the request with. */
typedef ngx_int_t (*ngx_http_sparsegate_encoded_pt)(ngx_http_request_t *r,
    void *data, const char *text, size_t len, const int32_t *ids,
    size_t n_ids);


/* Encodes text (malloc'ed: freed here) and calls done() with the ids.
 * Returns done()'s result when it ran inline, NGX_DONE when the text went
 * to a thread (done()'s result then finalizes the request), or an error
 * answered (a prompt of no tokens is a 400). */
ngx_int_t ngx_http_sparsegate_encode(ngx_http_request_t *r, char *text,
    size_t len, ngx_http_sparsegate_encoded_pt done, void *data);

/* The same for chat messages, rendered by DeepSeek-V3.2's encoding first
 * (special tokens recognized in its markup only); what the encoding
 * refuses is a 400 naming the message. */
ngx_int_t ngx_http_sparsegate_encode_chat(ngx_http_request_t *r,
    const sg_chat_message *msgs, ngx_uint_t n, ngx_uint_t thinking,
    ngx_http_sparsegate_encoded_pt done, void *data);

#endif /* NGX_HTTP_SPARSEGATE_ENCODE_H */
