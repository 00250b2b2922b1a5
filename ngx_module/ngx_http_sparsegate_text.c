/*
 * A generation's text and its stop strings.  Memory is malloc'ed: the text
 * belongs to a job, which may outlive its request.
 */

#include "ngx_http_sparsegate_text.h"


/* Room for n more bytes and the NUL in a malloc'ed buffer. */
static ngx_int_t
ngx_http_sparsegate_text_room(u_char **data, size_t len, size_t *cap,
    size_t n)
{
    u_char  *p;
    size_t   c;

    if (len + n + 1 > *cap) {
        c = ngx_max(*cap * 2, len + n + 256);
        p = realloc(*data, c);
        if (p == NULL) {
            return NGX_ERROR;
        }
        *data = p;
        *cap = c;
    }
    return NGX_OK;
}


ngx_int_t
ngx_http_sparsegate_text_grow(u_char **data, size_t *len, size_t *cap,
    const void *s, size_t n)
{
    if (ngx_http_sparsegate_text_room(data, *len, cap, n) != NGX_OK) {
        return NGX_ERROR;
    }
    ngx_memcpy(*data + *len, s, n);
    *len += n;
    (*data)[*len] = '\0';
    return NGX_OK;
}


/* Room for n more bytes and the NUL. */
static ngx_int_t
ngx_http_sparsegate_text_reserve(ngx_http_sparsegate_text_t *t, size_t n)
{
    return ngx_http_sparsegate_text_room(&t->data, t->len, &t->cap, n);
}


ngx_int_t
ngx_http_sparsegate_text_init(ngx_http_sparsegate_text_t *t,
    const sg_tokenizer *tokenizer, const ngx_str_t *stops, ngx_uint_t n)
{
    ngx_uint_t  i;

    ngx_memzero(t, sizeof(ngx_http_sparsegate_text_t));
    sg_detok_init(&t->detok, tokenizer);

    for (i = 0; i < n && i < NGX_HTTP_SG_MAX_STOPS; i++) {
        t->stops[i] = malloc(stops[i].len + 1);
        if (t->stops[i] == NULL) {
            return NGX_ERROR;
        }
        ngx_memcpy(t->stops[i], stops[i].data, stops[i].len);
        t->stops[i][stops[i].len] = '\0';
        t->n_stops++;
        t->max_stop_len = ngx_max(t->max_stop_len, stops[i].len);
    }

    /* one token's text at most (the detokenizer's bound), so that data is
     * never NULL */
    t->room = 3 * (sg_tokenizer_max_token_len(tokenizer) + 3);
    if (ngx_http_sparsegate_text_reserve(t, t->room) != NGX_OK) {
        return NGX_ERROR;
    }
    t->data[0] = '\0';
    return NGX_OK;
}


/* The first stop string in the text added since old_len (and the bytes
 * before it that could have begun one): the text is cut there. */
static ngx_int_t
ngx_http_sparsegate_text_match(ngx_http_sparsegate_text_t *t, size_t old_len)
{
    size_t       from, slen, best;
    u_char      *hit, *end;
    ngx_uint_t   i;

    from = old_len > t->max_stop_len ? old_len - t->max_stop_len : 0;
    end = t->data + t->len;
    best = (size_t) -1;

    for (i = 0; i < t->n_stops; i++) {
        slen = ngx_strlen(t->stops[i]);
        hit = ngx_strlcasestrn(t->data + from, end, (u_char *) t->stops[i],
                               slen - 1);
        /* ngx_strlcasestrn ignores case: confirm the exact bytes */
        while (hit != NULL && ngx_strncmp(hit, t->stops[i], slen) != 0) {
            hit = ngx_strlcasestrn(hit + 1, end, (u_char *) t->stops[i],
                                   slen - 1);
        }
        if (hit != NULL && (size_t) (hit - t->data) < best) {
            best = hit - t->data;
        }
    }

    if (best == (size_t) -1) {
        return NGX_OK;
    }

    t->len = best;
    t->data[best] = '\0';
    t->stopped = 1;
    if (t->taken > best) {
        t->taken = best;
    }
    return NGX_DONE;
}


ngx_int_t
ngx_http_sparsegate_text_push(ngx_http_sparsegate_text_t *t, int32_t token)
{
    size_t  n, old_len;

    /* the detokenizer writes valid UTF-8 straight into the text */
    if (ngx_http_sparsegate_text_reserve(t, t->room) != NGX_OK) {
        return NGX_ERROR;
    }
    n = sg_detok_push(&t->detok, token, (char *) t->data + t->len, t->room);
    if (n == 0) {
        return NGX_OK;
    }

    old_len = t->len;
    t->len += n;
    t->data[t->len] = '\0';
    if (t->n_stops == 0) {
        return NGX_OK;
    }
    return ngx_http_sparsegate_text_match(t, old_len);
}


ngx_int_t
ngx_http_sparsegate_text_finish(ngx_http_sparsegate_text_t *t)
{
    if (t->stopped) {
        return NGX_OK;
    }
    if (ngx_http_sparsegate_text_reserve(t, t->room) != NGX_OK) {
        return NGX_ERROR;
    }
    t->len += sg_detok_finish(&t->detok, (char *) t->data + t->len, t->room);
    t->data[t->len] = '\0';
    return NGX_OK;
}


void
ngx_http_sparsegate_text_next(ngx_http_sparsegate_text_t *t, ngx_uint_t all,
    u_char **text, size_t *len)
{
    size_t  safe;

    safe = t->len;
    if (!all && !t->stopped && t->max_stop_len > 1) {
        safe = (t->len > t->max_stop_len - 1)
               ? t->len - (t->max_stop_len - 1) : 0;
        /* never split a UTF-8 character */
        while (safe > t->taken && (t->data[safe] & 0xc0) == 0x80) {
            safe--;
        }
    }

    *text = t->data + t->taken;
    *len = safe > t->taken ? safe - t->taken : 0;
    t->taken += *len;
}


void
ngx_http_sparsegate_text_free(ngx_http_sparsegate_text_t *t)
{
    ngx_uint_t  i;

    for (i = 0; i < t->n_stops; i++) {
        free(t->stops[i]);
    }
    free(t->data);
    t->data = NULL;
    t->n_stops = 0;
}


u_char *
ngx_http_sparsegate_text_sanitize(const u_char *s, size_t n, size_t *len)
{
    /* as the generated text is made: each ill-formed sequence is U+FFFD */
    return (u_char *) sg_utf8_lossy((const char *) s, n, len);
}
