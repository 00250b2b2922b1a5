/*
 * Hashing and the two lookup tables of the tokenizer: token bytes -> id and
 * (left id, right id) -> merge (tok_internal.h says why it looks as it
 * does).  Both are open-addressing with linear probing, sized to at most
 * half full, built once at load and then only read (safe to share across
 * threads).
 */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "tok_internal.h"

uint64_t
tok_hash_bytes(const void *p, size_t n, uint64_t seed)
{
    const unsigned char *s = p;
    uint64_t h = seed ^ 0x9E3779B97F4A7C15ull;
    size_t i = 0;

    /* Eight bytes per step, then a final mix (the tails of short keys are
     * common, so they are handled as one zero-padded word). */
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        h = (h ^ w) * 0xFF51AFD7ED558CCDull;
        h ^= h >> 32;
    }
    if (i < n) {
        uint64_t w = 0;
        memcpy(&w, s + i, n - i);
        h = (h ^ w ^ ((uint64_t)(n - i) << 56)) * 0xC4CEB9FE1A85EC53ull;
    }
    h ^= (uint64_t)n;
    h ^= h >> 33;
    h *= 0xFF51AFD7ED558CCDull;
    h ^= h >> 33;
    return h;
}

int
tok_strmap_init(tok_strmap *m, size_t n_keys)
{
    size_t cap = 16;

    while (cap < n_keys * 2) cap <<= 1;
    m->slots = calloc(cap, sizeof(uint32_t));
    m->mask = (uint32_t)(cap - 1);
    return m->slots ? 0 : -1;
}

void
tok_strmap_put(tok_strmap *m, const sg_tokenizer *t, int32_t id)
{
    tok_str k = t->id_bytes[id];
    uint32_t i = (uint32_t)tok_hash_bytes(t->arena + k.off, k.len, 0) & m->mask;

    while (m->slots[i] != 0) {
        tok_str o = t->id_bytes[m->slots[i] - 1];
        if (o.len == k.len
            && memcmp(t->arena + o.off, t->arena + k.off, k.len) == 0) {
            /* Same bytes twice: the later id wins, as a JS Map does. */
            m->slots[i] = (uint32_t)id + 1;
            return;
        }
        i = (i + 1) & m->mask;
    }
    m->slots[i] = (uint32_t)id + 1;
}

int32_t
tok_strmap_get(const tok_strmap *m, const sg_tokenizer *t, const char *s,
    size_t n)
{
    uint32_t i = (uint32_t)tok_hash_bytes(s, n, 0) & m->mask;

    while (m->slots[i] != 0) {
        tok_str o = t->id_bytes[m->slots[i] - 1];
        if (o.len == n && memcmp(t->arena + o.off, s, n) == 0) {
            return (int32_t)m->slots[i] - 1;
        }
        i = (i + 1) & m->mask;
    }
    return -1;
}

static inline uint64_t
mix64(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xFF51AFD7ED558CCDull;
    k ^= k >> 33;
    k *= 0xC4CEB9FE1A85EC53ull;
    k ^= k >> 33;
    return k;
}

/* Zeroed memory; tables of 2 MB or more are asked to sit in huge pages
 * (one TLB entry instead of 512: the lookups are random). */
static void *
table_alloc(size_t bytes)
{
    const size_t huge = (size_t)2 << 20;
    void *p = NULL;

    if (bytes < huge) return calloc(1, bytes);
    if (posix_memalign(&p, huge, bytes) != 0) return NULL;
    (void)madvise(p, bytes, MADV_HUGEPAGE);    /* only a hint */
    memset(p, 0, bytes);
    return p;
}

int
tok_merges_init(sg_tokenizer *t, size_t n)
{
    size_t cap = 16, words = 8;

    while (cap < n * 2) cap <<= 1;
    /* About four pairs a word: 1-2 % false positives. */
    while (words * 4 < n) words <<= 1;
    t->merges = table_alloc(cap * sizeof(uint64_t));
    t->merge_bloom = table_alloc(words * sizeof(uint64_t));
    t->merge_result = malloc((n ? n : 1) * sizeof(int32_t));
    if (t->merges == NULL || t->merge_bloom == NULL
        || t->merge_result == NULL) {
        return -1;
    }
    t->merge_mask = cap - 1;
    t->bloom_shift = 64 - __builtin_ctzll(words);
    return 0;
}

/* The two filter bits of a pair, from hash bits the slot index and the
 * word index do not use. */
static inline uint64_t
bloom_bits(uint64_t h)
{
    return (1ull << ((h >> 24) & 63)) | (1ull << ((h >> 30) & 63));
}

int32_t
tok_merge_rank(const sg_tokenizer *t, int32_t left, int32_t right)
{
    uint64_t key = tok_pair_key(left, right), h = mix64(key), bits;
    uint64_t i = h & t->merge_mask, slot;

    bits = bloom_bits(h);
    if ((t->merge_bloom[h >> t->bloom_shift] & bits) != bits) return -1;
    while ((slot = t->merges[i]) != 0) {
        if (slot >> TOK_RANK_BITS == key) {
            return (int32_t)(slot & TOK_RANK_MASK);
        }
        i = (i + 1) & t->merge_mask;
    }
    return -1;
}

/* The caller keeps ids below 2^TOK_ID_BITS - 1 and ranks below
 * 2^TOK_RANK_BITS (tok_load.c checks both). */
void
tok_merge_put(sg_tokenizer *t, int32_t left, int32_t right, int32_t rank,
    int32_t merged)
{
    uint64_t key = tok_pair_key(left, right), h = mix64(key);
    uint64_t i = h & t->merge_mask;

    /* A pair listed twice keeps its later rank, as the JS Map does. */
    while (t->merges[i] != 0 && t->merges[i] >> TOK_RANK_BITS != key) {
        i = (i + 1) & t->merge_mask;
    }
    t->merges[i] = key << TOK_RANK_BITS | (uint64_t)rank;
    t->merge_result[rank] = merged;
    t->merge_bloom[h >> t->bloom_shift] |= bloom_bits(h);
}
