/*
 * BPE of one pre-tokenized piece.  Every byte starts as its own symbol;
 * the pair with the lowest merge rank is merged, the leftmost first when
 * a pair occurs more than once (the order the JS and Rust tokenizers use:
 * rank, then position).  A min-heap of (rank, position) with lazily
 * dropped stale entries makes it O(n log n), so a 100 KB run of one
 * character is no slower per byte than a word.
 */
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

static void
free_arrays(tok_bpe_scratch *sc)
{
    free(sc->sym);
    free(sc->next);
    free(sc->prev);
    free(sc->heap);
    sc->sym = sc->next = sc->prev = NULL;
    sc->heap = NULL;
    sc->cap = 0;
}

void
tok_bpe_scratch_free(tok_bpe_scratch *sc)
{
    free_arrays(sc);
    free(sc->pairs);
    memset(sc, 0, sizeof(*sc));
}

/* tok_merge_get through the scratch's pair cache. */
static inline int32_t
merge_get(const sg_tokenizer *t, tok_bpe_scratch *sc, int32_t left,
    int32_t right, int32_t *merged)
{
    uint64_t key = ((uint64_t)(uint32_t)(left + 1) << 32)
                   | (uint32_t)(right + 1);
    tok_pair_slot *p = &sc->pairs[(key * 0x9E3779B97F4A7C15ull) >> 52];

    if (p->key != key) {
        p->key = key;
        p->rank = tok_merge_get(t, left, right, &p->merged);
    }
    *merged = p->merged;
    return p->rank;
}

static int
scratch_reserve(tok_bpe_scratch *sc, size_t n)
{
    size_t cap;

    if (n <= sc->cap) return 0;
    cap = sc->cap ? sc->cap : 64;
    while (cap < n) cap *= 2;
    free_arrays(sc);
    sc->sym = malloc(cap * sizeof(int32_t));
    sc->next = malloc(cap * sizeof(int32_t));
    sc->prev = malloc(cap * sizeof(int32_t));
    sc->heap = malloc(3 * cap * sizeof(uint64_t));
    if (!sc->sym || !sc->next || !sc->prev || !sc->heap) {
        free_arrays(sc);
        return -1;
    }
    sc->cap = cap;
    return 0;
}

static inline void
heap_push(uint64_t *h, size_t *n, uint64_t v)
{
    size_t i = (*n)++;

    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (h[p] <= v) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = v;
}

static inline uint64_t
heap_pop(uint64_t *h, size_t *n)
{
    uint64_t top = h[0], v = h[--(*n)];
    size_t i = 0, m = *n;

    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= m) break;
        if (c + 1 < m && h[c + 1] < h[c]) c++;
        if (h[c] >= v) break;
        h[i] = h[c];
        i = c;
    }
    if (m > 0) h[i] = v;
    return top;
}

/* Pushes the pair starting at symbol position i, if it is a merge. */
static inline void
push_pair(const sg_tokenizer *t, tok_bpe_scratch *sc, size_t *hn, int32_t i)
{
    int32_t j, merged, rank;

    if (i < 0 || (j = sc->next[i]) < 0) return;
    rank = merge_get(t, sc, sc->sym[i], sc->sym[j], &merged);
    if (rank >= 0) {
        heap_push(sc->heap, hn, ((uint64_t)(uint32_t)rank << 32)
                  | (uint32_t)i);
    }
}

/*
 * Short pieces (nearly all of them): the rank of every adjacent pair is
 * kept in an array and only the two pairs beside a merge are looked up
 * again, so each merge costs two table lookups and a scan of a few
 * in-cache integers.
 */
#define SMALL_PIECE 64

static int
bpe_small(const sg_tokenizer *t, tok_bpe_scratch *sc, const unsigned char *u,
    size_t n, int32_t *out)
{
    int32_t rank[SMALL_PIECE], merged[SMALL_PIECE];
    size_t m = n;

    for (size_t i = 0; i < n; i++) out[i] = t->byte_id[u[i]];
    for (size_t i = 0; i + 1 < n; i++) {
        rank[i] = merge_get(t, sc, out[i], out[i + 1], &merged[i]);
    }
    for (;;) {
        int32_t best = INT32_MAX;
        size_t at = 0;

        for (size_t i = 0; i + 1 < m; i++) {
            if (rank[i] >= 0 && rank[i] < best) {
                best = rank[i];
                at = i;
            }
        }
        if (best == INT32_MAX) break;
        out[at] = merged[at];
        /* Drop symbol at + 1 and the pair (at, at + 1). */
        memmove(out + at + 1, out + at + 2, (m - at - 2) * sizeof(int32_t));
        memmove(rank + at + 1, rank + at + 2,
                (m - at - 2) * sizeof(int32_t));
        memmove(merged + at + 1, merged + at + 2,
                (m - at - 2) * sizeof(int32_t));
        m--;
        if (at > 0) {
            rank[at - 1] = merge_get(t, sc, out[at - 1], out[at],
                                     &merged[at - 1]);
        }
        if (at + 1 < m) {
            rank[at] = merge_get(t, sc, out[at], out[at + 1], &merged[at]);
        }
    }
    return (int)m;
}

int
tok_bpe(const sg_tokenizer *t, const char *s, size_t n, tok_bpe_scratch *sc,
    int32_t *out)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t hn = 0;
    int32_t id, merged;
    int k = 0;

    if (n == 0) return 0;
    if (n == 1) {
        out[0] = t->byte_id[u[0]];
        return 1;
    }
    if (t->ignore_merges && (id = tok_strmap_get(&t->vocab, t, s, n)) >= 0) {
        out[0] = id;
        return 1;
    }
    if (sc->pairs == NULL) {
        sc->pairs = calloc(TOK_PAIR_CACHE, sizeof(tok_pair_slot));
        if (sc->pairs == NULL) return -1;
    }
    if (n <= SMALL_PIECE) return bpe_small(t, sc, u, n, out);
    if (n > INT32_MAX / 4 || scratch_reserve(sc, n) != 0) return -1;

    for (size_t i = 0; i < n; i++) {
        sc->sym[i] = t->byte_id[u[i]];
        sc->prev[i] = (int32_t)i - 1;
        sc->next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    for (size_t i = 0; i + 1 < n; i++) push_pair(t, sc, &hn, (int32_t)i);

    while (hn > 0) {
        uint64_t e = heap_pop(sc->heap, &hn);
        int32_t i = (int32_t)(uint32_t)e, rank = (int32_t)(e >> 32), j;

        /* Stale: the left symbol was merged away or the pair changed.
         * A rank names exactly one pair, so equal rank = same pair. */
        if (sc->sym[i] < 0 || (j = sc->next[i]) < 0) continue;
        if (merge_get(t, sc, sc->sym[i], sc->sym[j], &merged) != rank) {
            continue;
        }
        sc->sym[i] = merged;
        sc->sym[j] = -1;
        sc->next[i] = sc->next[j];
        if (sc->next[j] >= 0) sc->prev[sc->next[j]] = i;
        push_pair(t, sc, &hn, sc->prev[i]);
        push_pair(t, sc, &hn, i);
    }
    for (int32_t i = 0; i >= 0; i = sc->next[i]) out[k++] = sc->sym[i];
    return k;
}

int
tok_bpe_simple(const sg_tokenizer *t, const char *s, size_t n, int32_t *out)
{
    const unsigned char *u = (const unsigned char *)s;
    int32_t id;
    size_t m = n;

    if (n == 0) return 0;
    if (n > 1 && t->ignore_merges
        && (id = tok_strmap_get(&t->vocab, t, s, n)) >= 0) {
        out[0] = id;
        return 1;
    }
    for (size_t i = 0; i < n; i++) out[i] = t->byte_id[u[i]];
    for (;;) {
        int32_t best = -1, best_merged = 0, merged, r;
        size_t at = 0;

        for (size_t i = 0; i + 1 < m; i++) {
            r = tok_merge_get(t, out[i], out[i + 1], &merged);
            if (r >= 0 && (best < 0 || r < best)) {
                best = r;
                best_merged = merged;
                at = i;
            }
        }
        if (best < 0) break;
        out[at] = best_merged;
        memmove(out + at + 1, out + at + 2, (m - at - 2) * sizeof(int32_t));
        m--;
    }
    return (int)m;
}
