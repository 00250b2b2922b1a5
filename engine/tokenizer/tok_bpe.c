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

/* tok_merge_rank through the scratch's pair cache. */
static inline int32_t
merge_rank(const sg_tokenizer *t, tok_bpe_scratch *sc, int32_t left,
    int32_t right)
{
    uint64_t key = tok_pair_key(left, right);
    uint64_t *p = &sc->pairs[(key * 0x9E3779B97F4A7C15ull)
                             >> (64 - TOK_PAIR_CACHE_BITS)];
    uint32_t rank;

    if (*p >> TOK_RANK_BITS != key) {
        /* -1 (no merge) is stored as TOK_RANK_MASK. */
        *p = key << TOK_RANK_BITS
             | ((uint32_t)tok_merge_rank(t, left, right) & TOK_RANK_MASK);
    }
    rank = (uint32_t)(*p & TOK_RANK_MASK);
    return rank == TOK_RANK_MASK ? -1 : (int32_t)rank;
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
    int32_t j, rank;

    if (i < 0 || (j = sc->next[i]) < 0) return;
    rank = merge_rank(t, sc, sc->sym[i], sc->sym[j]);
    if (rank >= 0) {
        heap_push(sc->heap, hn, ((uint64_t)(uint32_t)rank << 32)
                  | (uint32_t)i);
    }
}

/*
 * Short pieces (nearly all of them): every symbol keeps its place in the
 * arrays (merged-away ones drop out of a linked list) and key[i] is the
 * rank of the pair starting at symbol i, shifted up, with i in the low
 * bits: the smallest key is then the lowest rank, leftmost first, and
 * finding it is a plain minimum over at most SMALL_PIECE words that the
 * compiler vectorizes.  Each merge costs that scan and two lookups.
 */
#define SMALL_PIECE 128         /* at most 256: i fits in 8 bits */
#define NO_PAIR UINT32_MAX

static inline uint32_t
pair_key(const sg_tokenizer *t, tok_bpe_scratch *sc, const int32_t *sym,
    int i, int j)
{
    int32_t r = merge_rank(t, sc, sym[i], sym[j]);

    /* Ranks are below 2^24 - 1, so this stays under NO_PAIR. */
    return r < 0 ? NO_PAIR : (uint32_t)r << 8 | (uint32_t)i;
}

static int
bpe_small(const sg_tokenizer *t, tok_bpe_scratch *sc, const unsigned char *u,
    int n, int32_t *out)
{
    uint32_t key[SMALL_PIECE];
    int32_t sym[SMALL_PIECE];
    int16_t next[SMALL_PIECE], prev[SMALL_PIECE];
    int k = 0;

    for (int i = 0; i < n; i++) {
        sym[i] = t->byte_id[u[i]];
        next[i] = (int16_t)(i + 1 < n ? i + 1 : -1);
        prev[i] = (int16_t)(i - 1);
    }
    for (int i = 0; i + 1 < n; i++) key[i] = pair_key(t, sc, sym, i, i + 1);
    key[n - 1] = NO_PAIR;
    for (;;) {
        uint32_t best = NO_PAIR;
        for (int i = 0; i < n; i++) best = key[i] < best ? key[i] : best;
        if (best == NO_PAIR) break;
        int i = (int)(best & 0xFF), j = next[i];
        sym[i] = t->merge_result[best >> 8];
        key[j] = NO_PAIR;
        next[i] = next[j];
        if (next[j] >= 0) prev[next[j]] = (int16_t)i;
        key[i] = next[i] >= 0 ? pair_key(t, sc, sym, i, next[i]) : NO_PAIR;
        if (prev[i] >= 0) key[prev[i]] = pair_key(t, sc, sym, prev[i], i);
    }
    for (int i = 0; i >= 0; i = next[i]) out[k++] = sym[i];
    return k;
}

int
tok_bpe(const sg_tokenizer *t, const char *s, size_t n, tok_bpe_scratch *sc,
    int32_t *out)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t hn = 0;
    int32_t id;
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
        sc->pairs = calloc((size_t)1 << TOK_PAIR_CACHE_BITS,
                           sizeof(uint64_t));
        if (sc->pairs == NULL) return -1;
    }
    if (n <= SMALL_PIECE) return bpe_small(t, sc, u, (int)n, out);
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
        if (merge_rank(t, sc, sc->sym[i], sc->sym[j]) != rank) continue;
        sc->sym[i] = t->merge_result[rank];
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
        int32_t best = -1, r;
        size_t at = 0;

        for (size_t i = 0; i + 1 < m; i++) {
            r = tok_merge_rank(t, out[i], out[i + 1]);
            if (r >= 0 && (best < 0 || r < best)) {
                best = r;
                at = i;
            }
        }
        if (best < 0) break;
        out[at] = t->merge_result[best];
        memmove(out + at + 1, out + at + 2, (m - at - 2) * sizeof(int32_t));
        m--;
    }
    return (int)m;
}
