/*
 * Free list and reference counts of the cache pool's blocks.
 */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block_pool.h"

int
sg_block_pool_init(sg_block_pool *p, int n_blocks)
{
    memset(p, 0, sizeof(*p));
    if (n_blocks < 1)
        return -1;
    p->free_ids = malloc(sizeof(int32_t) * n_blocks);
    p->ref = calloc(n_blocks, sizeof(int32_t));
    if (p->free_ids == NULL || p->ref == NULL) {
        sg_block_pool_destroy(p);
        return -1;
    }
    p->n_blocks = n_blocks;
    /* Pushed in reverse so block 0 is handed out first (easier to read in
     * traces; the order does not matter otherwise). */
    for (int i = 0; i < n_blocks; i++)
        p->free_ids[i] = n_blocks - 1 - i;
    p->n_free = n_blocks;
    return 0;
}

void
sg_block_pool_destroy(sg_block_pool *p)
{
    free(p->free_ids);
    free(p->ref);
    memset(p, 0, sizeof(*p));
}

int32_t
sg_block_alloc(sg_block_pool *p)
{
    int32_t id;

    if (p->n_free == 0)
        return -1;
    id = p->free_ids[--p->n_free];
    assert(p->ref[id] == 0);
    p->ref[id] = 1;
    return id;
}

void
sg_block_ref(sg_block_pool *p, int32_t id)
{
    assert(id >= 0 && id < p->n_blocks);
    /* Only a block somebody holds can gain holders: a free one is taken
     * with sg_block_alloc. */
    assert(p->ref[id] > 0);
    p->ref[id]++;
}

int
sg_block_unref(sg_block_pool *p, int32_t id)
{
    assert(id >= 0 && id < p->n_blocks);
    assert(p->ref[id] > 0);         /* counts never go negative */
    if (--p->ref[id] == 0) {
        assert(p->n_free < p->n_blocks);
        p->free_ids[p->n_free++] = id;
    }
    return p->ref[id];
}

int
sg_block_pool_check(const sg_block_pool *p, char *err, int errlen)
{
    int   zero = 0;
    char *seen;

    if (p->n_free < 0 || p->n_free > p->n_blocks) {
        snprintf(err, errlen, "block pool: %d free of %d", p->n_free,
                 p->n_blocks);
        return -1;
    }
    seen = calloc(p->n_blocks, 1);
    if (seen == NULL) {
        snprintf(err, errlen, "block pool check: out of memory");
        return -1;
    }
    for (int i = 0; i < p->n_free; i++) {
        int32_t id = p->free_ids[i];
        if (id < 0 || id >= p->n_blocks || seen[id] || p->ref[id] != 0) {
            snprintf(err, errlen, "block pool: free list entry %d (block %d) "
                     "is out of range, repeated or held", i, (int)id);
            free(seen);
            return -1;
        }
        seen[id] = 1;
    }
    free(seen);
    for (int i = 0; i < p->n_blocks; i++) {
        if (p->ref[i] < 0) {
            snprintf(err, errlen, "block pool: block %d has %d holders", i,
                     (int)p->ref[i]);
            return -1;
        }
        zero += p->ref[i] == 0;
    }
    if (zero != p->n_free) {
        snprintf(err, errlen, "block pool: %d blocks without holders but %d "
                 "on the free list", zero, p->n_free);
        return -1;
    }
    return 0;
}
