/*
 * Decoding ids back to bytes, whole or streamed.  Tokens hold raw bytes
 * (the byte-level alphabet is undone at load), so decoding is
 * concatenation; the stream only has to hold back the start of a UTF-8
 * character that the next token may complete.
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

/* How many bytes at the end of s[0, n) are the valid start of a character
 * that is not complete yet (0..3). */
static size_t
incomplete_tail(const unsigned char *s, size_t n)
{
    for (size_t k = 1; k <= 3 && k <= n; k++) {
        unsigned char c = s[n - k];
        if (c >= 0x80 && c <= 0xBF) continue;       /* continuation */
        if (c < 0xC2 || c > 0xF4) return 0;         /* ASCII or never a lead */
        /* A lead: incomplete if it wants more than the k bytes there and
         * those are a valid beginning (the bad-length rule says so). */
        size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
        if (need <= k) return 0;
        return tok_utf8_bad_len(s + n - k, k) == k ? k : 0;
    }
    return 0;
}

size_t
sg_detok_push(sg_detok *d, int32_t id, char *out, size_t cap)
{
    const sg_tokenizer *t = d->t;
    unsigned char buf[16];
    const unsigned char *tok;
    size_t n, k = 0, tail, emit;

    if (!known(t, id)) return 0;
    tok = (const unsigned char *)t->arena + t->id_bytes[id].off;
    n = t->id_bytes[id].len;
    if (n == 0) return 0;

    /* The bytes to consider are pending + tok; only the last 3 of them
     * can be held back, so look at the tail through a small window. */
    size_t total = (size_t)d->n_pending + n;
    size_t w = total < 3 ? total : 3;
    for (size_t i = 0; i < w; i++) {
        size_t pos = total - w + i;
        buf[i] = pos < (size_t)d->n_pending ? (unsigned char)d->pending[pos]
                                            : tok[pos - d->n_pending];
    }
    tail = incomplete_tail(buf, w);
    emit = total - tail;

    /* Write pending then the token, up to emit bytes and cap. */
    for (int i = 0; i < d->n_pending && k < emit; i++) {
        if (k < cap) out[k] = d->pending[i];
        k++;
    }
    size_t from_tok = emit - k;
    if (k < cap) {
        size_t room = cap - k;
        memcpy(out + k, tok, from_tok < room ? from_tok : room);
    }
    k += from_tok;

    /* Keep the tail (it lies in pending + tok; copy it out first). */
    for (size_t i = 0; i < tail; i++) {
        buf[8 + i] = buf[w - tail + i];
    }
    for (size_t i = 0; i < tail; i++) d->pending[i] = (char)buf[8 + i];
    d->n_pending = (int)tail;
    return k < cap ? k : cap;
}

size_t
sg_detok_finish(sg_detok *d, char *out, size_t cap)
{
    size_t k = 0;

    for (int i = 0; i < d->n_pending && k < cap; i++) out[k++] = d->pending[i];
    d->n_pending = 0;
    return k;
}
