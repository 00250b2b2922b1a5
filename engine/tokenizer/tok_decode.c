/*
 * Decoding ids back to bytes, or to text, whole or streamed.  Tokens hold
 * raw bytes (the byte-level alphabet is undone at load), so decoding bytes
 * is concatenation.  Text is always valid UTF-8: a generation may sample a
 * token that starts a character and then one that does not finish it, and
 * that sequence becomes U+FFFD as in Hugging Face's decoder; the stream
 * holds back the start of a character that the next token may complete.
 */
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

static inline int
known(const sg_tokenizer *t, int32_t id)
{
    return id >= 0 && id < t->n_ids && t->id_used[id];
}

int
sg_tokenizer_decode(const sg_tokenizer *t, const int32_t *ids, size_t n_ids,
    char **text, size_t *len)
{
    size_t total = 0, k = 0;
    char *out;

    for (size_t i = 0; i < n_ids; i++) {
        if (known(t, ids[i])) total += t->id_bytes[ids[i]].len;
    }
    out = malloc(total + 1);
    if (out == NULL) return -1;
    for (size_t i = 0; i < n_ids; i++) {
        if (!known(t, ids[i])) continue;
        tok_str s = t->id_bytes[ids[i]];
        memcpy(out + k, t->arena + s.off, s.len);
        k += s.len;
    }
    out[k] = '\0';
    *text = out;
    *len = k;
    return 0;
}

void
sg_detok_init(sg_detok *d, const sg_tokenizer *t)
{
    d->t = t;
    d->n_pending = 0;
}

/* U+FFFD, what an ill-formed sequence becomes. */
static const char replacement[3] = { '\xEF', '\xBF', '\xBD' };

/* Writes n bytes at out[*k] as far as cap allows; *k counts them all. */
static inline void
put(char *out, size_t cap, size_t *k, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++, (*k)++)
        if (*k < cap) out[*k] = s[i];
}

/*
 * One byte through the decoder.  d->pending holds the valid beginning of a
 * character (its lead and the continuation bytes so far) until the byte
 * that completes it comes, or one that cannot continue it: then the
 * beginning is one U+FFFD and that byte starts afresh.  This is the
 * "maximal subpart" rule (Unicode 3.9, WHATWG, Rust's from_utf8_lossy that
 * Hugging Face's decoder uses), so the text is the same whatever the token
 * boundaries are.
 */
static void
feed(sg_detok *d, unsigned char b, char *out, size_t cap, size_t *k)
{
    unsigned char lo, hi;
    int           need;

    if (d->n_pending > 0) {
        need = tok_utf8_lead((unsigned char)d->pending[0], &lo, &hi);
        if (d->n_pending > 1) {
            lo = 0x80;
            hi = 0xBF;
        }
        if (b >= lo && b <= hi) {
            d->pending[d->n_pending++] = (char)b;
            if (d->n_pending == need + 1) {
                put(out, cap, k, d->pending, (size_t)d->n_pending);
                d->n_pending = 0;
            }
            return;
        }
        put(out, cap, k, replacement, 3);
        d->n_pending = 0;
    }
    if (b < 0x80) {
        put(out, cap, k, (const char *)&b, 1);
    } else if (tok_utf8_lead(b, &lo, &hi) > 0) {
        d->pending[0] = (char)b;
        d->n_pending = 1;
    } else {
        put(out, cap, k, replacement, 3);
    }
}

size_t
sg_detok_push(sg_detok *d, int32_t id, char *out, size_t cap)
{
    const sg_tokenizer  *t = d->t;
    const unsigned char *tok;
    size_t               n, k = 0, i = 0;

    if (!known(t, id)) return 0;
    tok = (const unsigned char *)t->arena + t->id_bytes[id].off;
    n = t->id_bytes[id].len;
    while (i < n) {
        /* whole runs of valid text are copied as they are */
        if (d->n_pending == 0) {
            size_t run = tok_utf8_valid_prefix((const char *)tok + i, n - i);
            put(out, cap, &k, (const char *)tok + i, run);
            i += run;
            if (i == n) break;
        }
        feed(d, tok[i++], out, cap, &k);
    }
    return k < cap ? k : cap;
}

size_t
sg_detok_finish(sg_detok *d, char *out, size_t cap)
{
    size_t k = 0;

    /* a character the text ended inside of */
    if (d->n_pending > 0) put(out, cap, &k, replacement, 3);
    d->n_pending = 0;
    return k < cap ? k : cap;
}

char *
sg_utf8_lossy(const char *s, size_t n, size_t *len)
{
    sg_detok d = { 0 };
    size_t   cap = 3 * n + 4, k = 0, i = 0;
    char    *out = malloc(cap);

    if (out == NULL) return NULL;
    while (i < n) {
        if (d.n_pending == 0) {
            size_t run = tok_utf8_valid_prefix(s + i, n - i);
            put(out, cap, &k, s + i, run);
            i += run;
            if (i == n) break;
        }
        feed(&d, (unsigned char)s[i++], out, cap, &k);
    }
    k += sg_detok_finish(&d, out + k, cap - k);
    out[k] = '\0';
    *len = k;
    return out;
}

int
sg_tokenizer_decode_text(const sg_tokenizer *t, const int32_t *ids,
    size_t n_ids, char **text, size_t *len)
{
    sg_detok d;
    size_t   cap = 4, k = 0;
    char    *out;

    /* at most 3 bytes out per byte in (a lone bad byte is U+FFFD) */
    for (size_t i = 0; i < n_ids; i++)
        if (known(t, ids[i])) cap += 3 * (size_t)t->id_bytes[ids[i]].len;
    out = malloc(cap);
    if (out == NULL) return -1;
    sg_detok_init(&d, t);
    for (size_t i = 0; i < n_ids; i++)
        k += sg_detok_push(&d, ids[i], out + k, cap - k);
    k += sg_detok_finish(&d, out + k, cap - k);
    out[k] = '\0';
    *text = out;
    *len = k;
    return 0;
}
