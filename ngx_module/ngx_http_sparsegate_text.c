/*
 * A generation's text and its stop strings.  Memory is malloc'ed: the text
 * belongs to a job, which may outlive its request.
 */

#include "ngx_http_sparsegate_text.h"


ngx_int_t
ngx_http_sparsegate_text_grow(u_char **data, size_t *len, size_t *cap,
    const void *s, size_t n)
{
    u_char  *p;
    size_t   c;

    if (*len + n + 1 > *cap) {
        c = ngx_max(*cap * 2, *len + n + 256);
        p = realloc(*data, c);
        if (p == NULL) {
            return NGX_ERROR;
        }
        *data = p;
        *cap = c;
    }
    ngx_memcpy(*data + *len, s, n);
    *len += n;
    (*data)[*len] = '\0';
    return NGX_OK;
}


static ngx_int_t
ngx_http_sparsegate_text_append(ngx_http_sparsegate_text_t *t, const char *s,
    size_t n)
{
    return ngx_http_sparsegate_text_grow(&t->data, &t->len, &t->cap, s, n);
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

    /* an empty text, so that data is never NULL */
    return ngx_http_sparsegate_text_append(t, "", 0);
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
    char    buf[1024];
    size_t  n, old_len;

    n = sg_detok_push(&t->detok, token, buf, sizeof(buf));
    if (n == 0) {
        return NGX_OK;
    }

    old_len = t->len;
    if (ngx_http_sparsegate_text_append(t, buf, n) != NGX_OK) {
        return NGX_ERROR;
    }
    if (t->n_stops == 0) {
        return NGX_OK;
    }
    return ngx_http_sparsegate_text_match(t, old_len);
}


ngx_int_t
ngx_http_sparsegate_text_finish(ngx_http_sparsegate_text_t *t)
{
    char    buf[64];
    size_t  n;

    if (t->stopped) {
        return NGX_OK;
    }
    n = sg_detok_finish(&t->detok, buf, sizeof(buf));
    if (n == 0) {
        return NGX_OK;
    }
    return ngx_http_sparsegate_text_append(t, buf, n);
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


/* The length of the whole UTF-8 character at s (RFC 3629: no overlong
 * forms, no surrogates), or 0. */
static size_t
ngx_http_sparsegate_utf8_char(const u_char *s, size_t n)
{
    size_t  k, i;
    u_char  lo = 0x80, hi = 0xBF;

    if (s[0] < 0x80) {
        return 1;
    }
    if (s[0] >= 0xC2 && s[0] <= 0xDF) {
        k = 2;
    } else if (s[0] >= 0xE0 && s[0] <= 0xEF) {
        k = 3;
        lo = s[0] == 0xE0 ? 0xA0 : 0x80;
        hi = s[0] == 0xED ? 0x9F : 0xBF;
    } else if (s[0] >= 0xF0 && s[0] <= 0xF4) {
        k = 4;
        lo = s[0] == 0xF0 ? 0x90 : 0x80;
        hi = s[0] == 0xF4 ? 0x8F : 0xBF;
    } else {
        return 0;
    }
    if (n < k || s[1] < lo || s[1] > hi) {
        return 0;
    }
    for (i = 2; i < k; i++) {
        if (s[i] < 0x80 || s[i] > 0xBF) {
            return 0;
        }
    }
    return k;
}


u_char *
ngx_http_sparsegate_text_sanitize(const u_char *s, size_t n, size_t *len)
{
    u_char  *out, *p;
    size_t   i, k;

    out = malloc(3 * n + 1);
    if (out == NULL) {
        return NULL;
    }
    p = out;
    for (i = 0; i < n; i += k) {
        k = ngx_http_sparsegate_utf8_char(s + i, n - i);
        if (k > 0) {
            p = ngx_cpymem(p, s + i, k);
        } else {
            k = 1;
            p = ngx_cpymem(p, "\xEF\xBF\xBD", 3);
        }
    }
    *p = '\0';
    *len = p - out;
    return out;
}
