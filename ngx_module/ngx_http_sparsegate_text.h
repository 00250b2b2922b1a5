/*
 * A generation's text: tokens in, valid UTF-8 out (whole characters only;
 * an ill-formed sequence is U+FFFD, decided before it is handed out), cut at
 * the first stop string.  Text that could still grow into a stop string is
 * held back from a stream until it cannot.
 */
#ifndef NGX_HTTP_SPARSEGATE_TEXT_H
#define NGX_HTTP_SPARSEGATE_TEXT_H

#include <ngx_config.h>
#include <ngx_core.h>

#include "tokenizer.h"


#define NGX_HTTP_SG_MAX_STOPS  4


typedef struct {
    sg_detok             detok;
    u_char              *data;          /* malloc'ed, NUL-terminated */
    size_t               len;
    size_t               cap;
    size_t               room;          /* one push's text at most */
    size_t               taken;         /* bytes handed out by _next() */
    char                *stops[NGX_HTTP_SG_MAX_STOPS];   /* malloc'ed */
    ngx_uint_t           n_stops;
    size_t               max_stop_len;
    unsigned             stopped:1;     /* a stop string matched */
} ngx_http_sparsegate_text_t;


/* Copies the stop strings; NGX_OK or NGX_ERROR (out of memory). */
ngx_int_t ngx_http_sparsegate_text_init(ngx_http_sparsegate_text_t *t,
    const sg_tokenizer *tokenizer, const ngx_str_t *stops, ngx_uint_t n);
/* NGX_OK, NGX_DONE when a stop string matched (the text ends before it:
 * nothing more may be pushed), NGX_ERROR (out of memory). */
ngx_int_t ngx_http_sparsegate_text_push(ngx_http_sparsegate_text_t *t,
    int32_t token);
/* The end of the generation: the bytes the detokenizer still holds. */
ngx_int_t ngx_http_sparsegate_text_finish(ngx_http_sparsegate_text_t *t);
/* The text not handed out yet that can no longer become a stop string (all
 * of it with all, or once stopped), never split inside a character. */
void ngx_http_sparsegate_text_next(ngx_http_sparsegate_text_t *t,
    ngx_uint_t all, u_char **text, size_t *len);
void ngx_http_sparsegate_text_free(ngx_http_sparsegate_text_t *t);

/* Appends n bytes to a malloc'ed buffer that grows (and stays
 * NUL-terminated); NGX_OK or NGX_ERROR. */
ngx_int_t ngx_http_sparsegate_text_grow(u_char **data, size_t *len,
    size_t *cap, const void *s, size_t n);

/* s as valid UTF-8 (so that it can be a JSON string): each ill-formed
 * sequence is U+FFFD, as in the generated text; malloc'ed,
 * NUL-terminated, NULL when out of memory. */
u_char *ngx_http_sparsegate_text_sanitize(const u_char *s, size_t n,
    size_t *len);

#endif /* NGX_HTTP_SPARSEGATE_TEXT_H */
