/*
 * Hashing and the two lookup tables of the tokenizer: token bytes -> id and
 * (left id, right id) -> merge.  Both are open-addressing with linear
 * probing, sized to at most half full, built once at load and then only
 * read (safe to share across threads).
 */
#include <stdlib.h>
#include <string.h>

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
    return k;
}

int32_t
tok_merge_get(const sg_tokenizer *t, int32_t left, int32_t right,
    int32_t *merged)
{
    /* +1 on both ids keeps the key of (0, 0) away from the empty marker. */
    uint64_t key = ((uint64_t)(uint32_t)(left + 1) << 32)
                   | (uint32_t)(right + 1);
    uint64_t i = mix64(key) & t->merge_mask;

    while (t->merges[i].key != 0) {
        if (t->merges[i].key == key) {
            *merged = t->merges[i].merged;
            return t->merges[i].rank;
        }
        i = (i + 1) & t->merge_mask;
    }
    return -1;
}

void
tok_merge_put(sg_tokenizer *t, int32_t left, int32_t right, int32_t rank,
    int32_t merged)
{
    uint64_t key = ((uint64_t)(uint32_t)(left + 1) << 32)
                   | (uint32_t)(right + 1);
    uint64_t i = mix64(key) & t->merge_mask;

    /* A pair listed twice keeps its later rank, as the JS Map does. */
    while (t->merges[i].key != 0 && t->merges[i].key != key) {
        i = (i + 1) & t->merge_mask;
    }
    t->merges[i].key = key;
    t->merges[i].rank = rank;
    t->merges[i].merged = merged;
}
