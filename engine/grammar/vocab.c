/*
 * The vocabulary as the masks walk it: every token's bytes, sorted, each
 * with the length of the prefix it shares with the one before.  Walking
 * them in that order visits the tokens as a trie: a token's bytes past the
 * shared prefix are the only ones stepped, and when a byte is refused every
 * token that shares the prefix up to it is skipped.
 */
#include <stdlib.h>
#include <string.h>

#include "grammar_internal.h"
#include "util/err.h"

/* DeepSeek-V3.2's added tokens that are text of its own languages: the
 * thinking markers and the DSML marker.  Other added tokens (BOS, EOS,
 * <｜User｜>, the place holders...) never appear in a constrained output. */
static const char *const text_added[] = { "<think>", "</think>",
                                          "｜DSML｜", NULL };

typedef struct tok {
    const char *s;
    size_t      n;
    int32_t     id;
} tok;

static int
by_bytes(const void *a, const void *b)
{
    const tok *x = a, *y = b;
    size_t     n = x->n < y->n ? x->n : y->n;
    int        c = memcmp(x->s, y->s, n);

    if (c != 0)
        return c;
    if (x->n != y->n)
        return x->n < y->n ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

void
sg_vocab_free(sg_vocab *v)
{
    if (v == NULL)
        return;
    free(v->id);
    free(v->off);
    free(v->len);
    free(v->lcp);
    free(v->bytes);
    free(v->pos_of);
    free(v);
}

sg_vocab *
sg_vocab_new(const sg_tokenizer *t, int n_vocab, char *err, int errlen)
{
    int        n_ids = sg_tokenizer_vocab_size(t), n = 0, singles = 0;
    size_t     total = 0, at = 0;
    tok       *toks;
    sg_vocab  *v;

    if (n_vocab < n_ids)
        n_vocab = n_ids;
    toks = malloc(sizeof(tok) * (size_t)n_ids);
    v = calloc(1, sizeof(*v));
    if (toks == NULL || v == NULL) {
        free(toks);
        free(v);
        sg_err(err, errlen, "vocabulary: out of memory");
        return NULL;
    }
    for (int32_t id = 0; id < n_ids; id++) {
        const char *s;
        size_t      len;
        int         kind = sg_tokenizer_token(t, id, &s, &len), keep = 0;

        if (kind == 1) {
            keep = 1;
        } else if (kind == 2) {
            for (int k = 0; text_added[k]; k++) {
                if (len == strlen(text_added[k])
                    && memcmp(s, text_added[k], len) == 0)
                    keep = 1;
            }
        }
        if (!keep || len == 0 || len > 65535)
            continue;
        if (kind == 1 && len == 1)
            singles++;
        toks[n].s = s;
        toks[n].n = len;
        toks[n].id = id;
        total += len;
        n++;
    }
    /* The budget rule needs every byte to be a token of its own. */
    if (singles < 256) {
        free(toks);
        free(v);
        sg_err(err, errlen, "vocabulary: %d of the 256 single bytes are "
               "tokens; constrained decoding needs all of them", singles);
        return NULL;
    }
    qsort(toks, n, sizeof(tok), by_bytes);

    v->n_vocab = n_vocab;
    v->n = n;
    v->eos = sg_tokenizer_eos(t);
    v->id = malloc(sizeof(int32_t) * n);
    v->off = malloc(sizeof(uint32_t) * n);
    v->len = malloc(sizeof(uint16_t) * n);
    v->lcp = malloc(sizeof(uint16_t) * n);
    v->bytes = malloc(total + 1);
    v->pos_of = malloc(sizeof(int32_t) * (size_t)n_vocab);
    if (!v->id || !v->off || !v->len || !v->lcp || !v->bytes || !v->pos_of) {
        free(toks);
        sg_vocab_free(v);
        sg_err(err, errlen, "vocabulary: out of memory");
        return NULL;
    }
    for (int i = 0; i < n_vocab; i++)
        v->pos_of[i] = -1;
    for (int i = 0; i < n; i++) {
        size_t k = 0;

        if (i > 0) {
            size_t m = toks[i].n < toks[i - 1].n ? toks[i].n : toks[i - 1].n;
            while (k < m && toks[i].s[k] == toks[i - 1].s[k])
                k++;
        }
        v->id[i] = toks[i].id;
        v->off[i] = (uint32_t)at;
        v->len[i] = (uint16_t)toks[i].n;
        v->lcp[i] = (uint16_t)k;
        memcpy(v->bytes + at, toks[i].s, toks[i].n);
        at += toks[i].n;
        v->pos_of[toks[i].id] = i;
    }
    free(toks);
    return v;
}


/* The lengths k (2 <= k <= max) for which s[0, k) is a token of the
 * walk, in lens (returns how many): the sorted run of tokens that begin
 * with s[0, k) narrows byte by byte (a binary search each) and ends the
 * search when it is empty. */
int
g_vocab_prefixes(const sg_vocab *v, const char *s, int max, int *lens)
{
    int lo = 0, hi = v->n, found = 0;

    for (int k = 1; k <= max && lo < hi; k++) {
        uint8_t b = (uint8_t)s[k - 1];
        int     a = lo, z = hi;

        /* in [lo, hi) every token begins with s[0, k - 1): those of
         * length k - 1 first, then by their byte k - 1 */
        while (a < z) {
            int m = a + (z - a) / 2;
            if (v->len[m] < k || (uint8_t)v->bytes[v->off[m] + k - 1] < b)
                a = m + 1;
            else
                z = m;
        }
        lo = a;
        z = hi;
        while (a < z) {
            int m = a + (z - a) / 2;
            if ((uint8_t)v->bytes[v->off[m] + k - 1] == b)
                a = m + 1;
            else
                z = m;
        }
        hi = a;
        if (lo < hi && v->len[lo] == k && k >= 2)
            lens[found++] = k;
    }
    return found;
}
