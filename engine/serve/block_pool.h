/*
 * The cache pool's bookkeeping on the host: which of the pool's fixed
 * blocks are free, and how many holders each block has (sequences that use
 * it in their block table, and the prefix cache that keeps it for reuse).
 * A block returns to the free list when its last holder lets it go.
 */
#ifndef SG_BLOCK_POOL_H
#define SG_BLOCK_POOL_H

#include <stdint.h>

typedef struct sg_block_pool {
    int      n_blocks;
    int      n_free;
    int32_t *free_ids;      /* stack of free block ids [n_blocks] */
    int32_t *ref;           /* holders per block [n_blocks] */
} sg_block_pool;

/* 0, or -1 when memory runs out or n_blocks < 1. */
int sg_block_pool_init(sg_block_pool *p, int n_blocks);
void sg_block_pool_destroy(sg_block_pool *p);

/* A free block with one holder, or -1 when none is free. */
int32_t sg_block_alloc(sg_block_pool *p);
void sg_block_ref(sg_block_pool *p, int32_t id);
/* Drops one holder; returns the holders left (0: the block is free). */
int sg_block_unref(sg_block_pool *p, int32_t id);

static inline int
sg_block_refcount(const sg_block_pool *p, int32_t id)
{
    return p->ref[id];
}

static inline int
sg_block_pool_used(const sg_block_pool *p)
{
    return p->n_blocks - p->n_free;
}

/* Checks that the free list holds exactly the blocks with no holder, once
 * each; 0, or -1 with a message. */
int sg_block_pool_check(const sg_block_pool *p, char *err, int errlen);

#endif
