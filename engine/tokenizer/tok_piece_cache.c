/*
 * The per-call cache of pieces already encoded (words repeat, so most
 * pieces of ordinary text are found here and never reach BPE).
 *
 * Built for the hit, which is what nearly every lookup is: a slot is 8
 * bytes (a 32-bit hash tag and where its entry is), and an entry keeps its
 * ids and its key bytes together in one arena, [len | n_ids << 16][ids]
 * [key bytes], so a hit reads one slot and one or two lines of the arena,
 * never the far-away place in the input where the piece was first seen.
 */
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

#define FIRST_SLOTS 4096

/* Words of arena an entry takes. */
static inline size_t
entry_words(size_t len, size_t n_ids)
{
    return 1 + n_ids + (len + 3) / 4;
}

static inline const char *
entry_key(const int32_t *e)
{
    return (const char *)(e + 1 + ((uint32_t)e[0] >> 16));
}

const int32_t *
tok_piece_cache_get(const tok_piece_cache *c, const char *s, size_t n,
    uint64_t *hash, size_t *n_ids)
{
    uint64_t h = tok_hash_bytes(s, n, 1), slot;
    uint32_t tag = (uint32_t)(h >> 32), i = (uint32_t)h & c->mask;

    *hash = h;
    if (c->slots == NULL) return NULL;
    while ((slot = c->slots[i]) != 0) {
        if ((uint32_t)(slot >> 32) == tag) {
            const int32_t *e = c->arena + (uint32_t)slot - 1;
            if (((uint32_t)e[0] & 0xFFFF) == n
                && memcmp(entry_key(e), s, n) == 0) {
                *n_ids = (uint32_t)e[0] >> 16;
                return e + 1;
            }
        }
        i = (i + 1) & c->mask;
    }
    return NULL;
}

static void
place(tok_piece_cache *c, uint64_t h, uint32_t at)
{
    uint32_t i = (uint32_t)h & c->mask;

    while (c->slots[i] != 0) i = (i + 1) & c->mask;
    c->slots[i] = (h >> 32) << 32 | ((uint64_t)at + 1);
}

static int
grow_slots(tok_piece_cache *c)
{
    size_t cap = c->slots ? ((size_t)c->mask + 1) * 2 : FIRST_SLOTS;
    uint64_t *old = c->slots;
    size_t old_cap = old ? (size_t)c->mask + 1 : 0;

    c->slots = calloc(cap, sizeof(uint64_t));
    if (c->slots == NULL) {
        c->slots = old;
        return -1;
    }
    c->mask = (uint32_t)(cap - 1);
    /* Rehash from the keys in the arena (a 32-bit tag is not enough to
     * find the new home slot). */
    for (size_t i = 0; i < old_cap; i++) {
        if (old[i] == 0) continue;
        uint32_t at = (uint32_t)old[i] - 1;
        const int32_t *e = c->arena + at;
        place(c, tok_hash_bytes(entry_key(e), (uint32_t)e[0] & 0xFFFF, 1),
              at);
    }
    free(old);
    return 0;
}

int
tok_piece_cache_put(tok_piece_cache *c, const char *s, size_t n,
    uint64_t hash, const int32_t *ids, size_t n_ids)
{
    size_t need = entry_words(n, n_ids);
    int32_t *e;

    if (n > TOK_CACHE_MAX_PIECE || n_ids > n) return 0;
    /* Offsets are 32-bit: a cache that big just stops growing. */
    if (c->n + need >= UINT32_MAX) return 0;
    if ((c->slots == NULL || c->used * 2 >= c->mask) && grow_slots(c) != 0) {
        return -1;
    }
    if (c->n + need > c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 16384;
        while (cap < c->n + need) cap *= 2;
        int32_t *a = realloc(c->arena, cap * sizeof(int32_t));
        if (a == NULL) return -1;
        c->arena = a;
        c->cap = cap;
    }
    e = c->arena + c->n;
    e[0] = (int32_t)(n | n_ids << 16);
    memcpy(e + 1, ids, n_ids * sizeof(int32_t));
    memcpy(e + 1 + n_ids, s, n);
    place(c, hash, (uint32_t)c->n);
    c->n += need;
    c->used++;
    return 0;
}

void
tok_piece_cache_free(tok_piece_cache *c)
{
    free(c->slots);
    free(c->arena);
    memset(c, 0, sizeof(*c));
}
