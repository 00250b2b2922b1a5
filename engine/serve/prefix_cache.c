/*
 * Radix tree of full token blocks, stored as a hash table of nodes keyed by
 * a hash chain (key of block i = hash(key of block i-1, its tokens)), with
 * an LRU list for eviction.  Nodes live in one array sized to the pool:
 * a block is in the tree at most once, so the tree never needs more.
 *
 * Each tree has a namespace: its salt's bytes, kept once (interned) and
 * counted by the nodes and requests that hold it.  A chain starts from its
 * namespace's root key and every node records its namespace, so nodes of
 * two namespaces never match, whatever their keys.
 */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/kv.h"
#include "prefix_cache.h"

#define ROOT_KEY 0x6a09e667f3bcc908ull
#define NONE     (-1)

typedef struct pc_node {
    uint64_t key;
    int32_t  ns;             /* its namespace */
    int32_t  parent;         /* node index, NONE for a first block */
    int32_t  block;
    int32_t  n_children;
    int32_t  hnext;          /* next node in the same bucket */
    int32_t  lru_prev;       /* towards the most recently used end */
    int32_t  lru_next;       /* towards the least recently used end */
    int      used;
    int32_t  tokens[SG_KV_BLOCK];
} pc_node;

/* A namespace: slot 0 is the shared one (no salt), never freed. */
typedef struct pc_ns {
    uint64_t root;           /* its chains' first key */
    int32_t  refs;           /* nodes and requests holding it; 0: free */
    int32_t  hnext;          /* next in the same bucket, or the free list */
    size_t   len;
    char    *salt;           /* malloc'ed */
} pc_ns;

struct sg_prefix_cache {
    pc_ns         *ns;
    int            ns_cap;
    int            ns_live;      /* besides the shared one */
    int32_t        ns_free;      /* free slots, chained by hnext */
    int32_t       *ns_buckets;   /* [ns_cap * 2] */
    sg_block_pool *pool;
    pc_node       *nodes;
    int            cap;
    int            n_nodes;
    int32_t       *free_nodes;
    int            n_free_nodes;
    int32_t       *buckets;
    uint32_t       mask;
    int32_t        mru;      /* list head */
    int32_t        lru;      /* list tail */
};

static uint64_t
mix(uint64_t h)
{
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebull;
    h ^= h >> 31;
    return h;
}

static uint64_t
chain_key(uint64_t parent_key, const int32_t *tokens)
{
    uint64_t h = parent_key;

    /* FNV-1a over the 32-bit ids, then a splitmix finalizer so that the
     * low bits used for the bucket are well mixed. */
    for (int i = 0; i < SG_KV_BLOCK; i++) {
        h ^= (uint32_t)tokens[i];
        h *= 0x100000001b3ull;
    }
    return mix(h);
}

static uint64_t
salt_root(const void *salt, size_t len)
{
    const unsigned char *p = salt;
    uint64_t             h = 0xcbf29ce484222325ull;

    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return mix(h ^ ROOT_KEY ^ len);
}

/* The namespace table at cap slots, rehashed; -1 when out of memory. */
static int
ns_grow(sg_prefix_cache *pc, int cap)
{
    pc_ns   *ns = realloc(pc->ns, sizeof(pc_ns) * cap);
    int32_t *bk;

    if (ns == NULL)
        return -1;
    pc->ns = ns;
    bk = malloc(sizeof(int32_t) * cap * 2);
    if (bk == NULL)
        return -1;
    for (int i = 0; i < cap * 2; i++)
        bk[i] = NONE;
    for (int i = pc->ns_cap; i < cap; i++) {
        memset(&ns[i], 0, sizeof(ns[i]));
        ns[i].hnext = i + 1 < cap ? i + 1 : pc->ns_free;
    }
    if (cap > pc->ns_cap)
        pc->ns_free = pc->ns_cap;
    /* slot 0 is never hashed: it is found by an empty salt */
    for (int i = 1; i < pc->ns_cap; i++) {
        if (ns[i].refs > 0) {
            uint32_t b = (uint32_t)(ns[i].root & (uint64_t)(cap * 2 - 1));
            ns[i].hnext = bk[b];
            bk[b] = i;
        }
    }
    free(pc->ns_buckets);
    pc->ns_buckets = bk;
    pc->ns_cap = cap;
    return 0;
}

int32_t
sg_prefix_cache_ns_find(const sg_prefix_cache *pc, const void *salt,
    size_t len)
{
    uint64_t root;
    int32_t  i;
    uint32_t b;

    if (len == 0)
        return 0;
    root = salt_root(salt, len);
    b = (uint32_t)(root & (uint64_t)(pc->ns_cap * 2 - 1));
    for (i = pc->ns_buckets[b]; i != NONE; i = pc->ns[i].hnext) {
        if (pc->ns[i].root == root && pc->ns[i].len == len
            && memcmp(pc->ns[i].salt, salt, len) == 0)
        {
            return i;
        }
    }
    return -1;
}

int32_t
sg_prefix_cache_ns_get(sg_prefix_cache *pc, const void *salt, size_t len)
{
    uint64_t root;
    int32_t  i;
    uint32_t b;

    i = sg_prefix_cache_ns_find(pc, salt, len);
    if (i >= 0) {
        pc->ns[i].refs += i > 0;
        return i;
    }
    root = salt_root(salt, len);
    if (pc->ns_free == NONE && ns_grow(pc, pc->ns_cap * 2) != 0)
        return -1;
    i = pc->ns_free;
    b = (uint32_t)(root & (uint64_t)(pc->ns_cap * 2 - 1));
    pc->ns[i].salt = malloc(len);
    if (pc->ns[i].salt == NULL)
        return -1;
    pc->ns_free = pc->ns[i].hnext;
    memcpy(pc->ns[i].salt, salt, len);
    pc->ns[i].len = len;
    pc->ns[i].root = root;
    pc->ns[i].refs = 1;
    pc->ns[i].hnext = pc->ns_buckets[b];
    pc->ns_buckets[b] = i;
    pc->ns_live++;
    return i;
}

void
sg_prefix_cache_ns_put(sg_prefix_cache *pc, int32_t i)
{
    pc_ns   *n;
    int32_t *link;

    if (i <= 0)
        return;
    n = &pc->ns[i];
    if (--n->refs > 0)
        return;
    link = &pc->ns_buckets[n->root & (uint64_t)(pc->ns_cap * 2 - 1)];
    while (*link != i)
        link = &pc->ns[*link].hnext;
    *link = n->hnext;
    free(n->salt);
    memset(n, 0, sizeof(*n));
    n->hnext = pc->ns_free;
    pc->ns_free = i;
    pc->ns_live--;
}

int
sg_prefix_cache_namespaces(const sg_prefix_cache *pc)
{
    return pc->ns_live;
}

size_t
sg_prefix_cache_ns_bytes(const sg_prefix_cache *pc)
{
    size_t n = (size_t)pc->ns_cap * (sizeof(pc_ns) + 2 * sizeof(int32_t));

    for (int i = 1; i < pc->ns_cap; i++)
        if (pc->ns[i].refs > 0)
            n += pc->ns[i].len;
    return n;
}

int
sg_prefix_cache_check_ns(const sg_prefix_cache *pc, int held, char *err,
    int errlen)
{
    long refs = 0, nodes = 0;
    int  live = 0;

    for (int i = 1; i < pc->ns_cap; i++) {
        refs += pc->ns[i].refs;
        live += pc->ns[i].refs > 0;
    }
    for (int i = 0; i < pc->cap; i++)
        nodes += pc->nodes[i].used && pc->nodes[i].ns > 0;
    if (refs != nodes + held || live != pc->ns_live) {
        snprintf(err, errlen, "prefix cache: namespaces counted %ld holders, "
                 "%ld nodes and %d requests hold them (%d live, %d counted)",
                 refs, nodes, held, live, pc->ns_live);
        return -1;
    }
    return 0;
}

sg_prefix_cache *
sg_prefix_cache_new(sg_block_pool *pool)
{
    sg_prefix_cache *pc = calloc(1, sizeof(*pc));
    uint32_t         nb = 16;

    if (pc == NULL)
        return NULL;
    pc->pool = pool;
    pc->ns_free = NONE;
    if (ns_grow(pc, 16) != 0) {
        sg_prefix_cache_free(pc);
        return NULL;
    }
    /* slot 0: the shared namespace */
    pc->ns_free = pc->ns[0].hnext;
    pc->ns[0].root = ROOT_KEY;
    pc->ns[0].refs = 1;
    pc->cap = pool->n_blocks;
    while (nb < (uint32_t)pc->cap * 2)
        nb <<= 1;
    pc->mask = nb - 1;
    pc->nodes = calloc(pc->cap, sizeof(pc_node));
    pc->free_nodes = malloc(sizeof(int32_t) * pc->cap);
    pc->buckets = malloc(sizeof(int32_t) * nb);
    if (pc->nodes == NULL || pc->free_nodes == NULL || pc->buckets == NULL) {
        sg_prefix_cache_free(pc);
        return NULL;
    }
    for (uint32_t i = 0; i < nb; i++)
        pc->buckets[i] = NONE;
    for (int i = 0; i < pc->cap; i++)
        pc->free_nodes[i] = pc->cap - 1 - i;
    pc->n_free_nodes = pc->cap;
    pc->mru = pc->lru = NONE;
    return pc;
}

void
sg_prefix_cache_free(sg_prefix_cache *pc)
{
    if (pc == NULL)
        return;
    if (pc->nodes) {
        for (int i = 0; i < pc->cap; i++)
            if (pc->nodes[i].used)
                sg_block_unref(pc->pool, pc->nodes[i].block);
    }
    for (int i = 1; i < pc->ns_cap; i++)
        free(pc->ns[i].salt);
    free(pc->ns);
    free(pc->ns_buckets);
    free(pc->nodes);
    free(pc->free_nodes);
    free(pc->buckets);
    free(pc);
}

static void
lru_unlink(sg_prefix_cache *pc, int32_t i)
{
    pc_node *n = &pc->nodes[i];

    if (n->lru_prev != NONE)
        pc->nodes[n->lru_prev].lru_next = n->lru_next;
    else
        pc->mru = n->lru_next;
    if (n->lru_next != NONE)
        pc->nodes[n->lru_next].lru_prev = n->lru_prev;
    else
        pc->lru = n->lru_prev;
    n->lru_prev = n->lru_next = NONE;
}

static void
lru_push_front(sg_prefix_cache *pc, int32_t i)
{
    pc_node *n = &pc->nodes[i];

    n->lru_prev = NONE;
    n->lru_next = pc->mru;
    if (pc->mru != NONE)
        pc->nodes[pc->mru].lru_prev = i;
    pc->mru = i;
    if (pc->lru == NONE)
        pc->lru = i;
}

/* Marks a chain used, deepest node first, so that parents end up more
 * recent than their children and the LRU end meets leaves first. */
static void
touch_chain(sg_prefix_cache *pc, int32_t deepest)
{
    for (int32_t i = deepest; i != NONE; i = pc->nodes[i].parent) {
        lru_unlink(pc, i);
        lru_push_front(pc, i);
    }
}

static int32_t
lookup(const sg_prefix_cache *pc, int32_t ns, int32_t parent, uint64_t key,
    const int32_t *tokens)
{
    for (int32_t i = pc->buckets[key & pc->mask]; i != NONE;
         i = pc->nodes[i].hnext)
    {
        const pc_node *n = &pc->nodes[i];
        if (n->key == key && n->parent == parent && n->ns == ns
            && memcmp(n->tokens, tokens, sizeof(n->tokens)) == 0)
        {
            return i;
        }
    }
    return NONE;
}

int
sg_prefix_cache_match(sg_prefix_cache *pc, int32_t ns, const int32_t *tokens,
    int n_tokens, int max_blocks, int32_t *blocks)
{
    uint64_t key = pc->ns[ns].root;
    int32_t  parent = NONE;
    int      n = 0;

    while (n < max_blocks && (n + 1) * SG_KV_BLOCK <= n_tokens) {
        const int32_t *t = tokens + (size_t)n * SG_KV_BLOCK;
        uint64_t       k = chain_key(key, t);
        int32_t        i = lookup(pc, ns, parent, k, t);

        if (i == NONE)
            break;
        if (blocks) {
            blocks[n] = pc->nodes[i].block;
            sg_block_ref(pc->pool, pc->nodes[i].block);
        }
        n++;
        parent = i;
        key = k;
    }
    if (parent != NONE && blocks)
        touch_chain(pc, parent);
    return n;
}

static int32_t
add_node(sg_prefix_cache *pc, int32_t ns, int32_t parent, uint64_t key,
    const int32_t *tokens, int32_t block)
{
    int32_t  i;
    pc_node *n;

    if (pc->n_free_nodes == 0)
        return NONE;
    i = pc->free_nodes[--pc->n_free_nodes];
    n = &pc->nodes[i];
    memset(n, 0, sizeof(*n));
    n->used = 1;
    n->key = key;
    n->ns = ns;
    pc->ns[ns].refs++;
    n->parent = parent;
    n->block = block;
    memcpy(n->tokens, tokens, sizeof(n->tokens));
    n->hnext = pc->buckets[key & pc->mask];
    pc->buckets[key & pc->mask] = i;
    n->lru_prev = n->lru_next = NONE;
    lru_push_front(pc, i);
    if (parent != NONE)
        pc->nodes[parent].n_children++;
    sg_block_ref(pc->pool, block);
    pc->n_nodes++;
    return i;
}

int
sg_prefix_cache_insert(sg_prefix_cache *pc, int32_t ns,
    const int32_t *tokens, int n_full, int32_t *blocks, int from)
{
    uint64_t key = pc->ns[ns].root;
    int32_t  parent = NONE;
    int      n;

    for (n = 0; n < n_full; n++) {
        const int32_t *t = tokens + (size_t)n * SG_KV_BLOCK;
        uint64_t       k = chain_key(key, t);
        int32_t        i = lookup(pc, ns, parent, k, t);

        if (i == NONE) {
            assert(n >= from);
            i = add_node(pc, ns, parent, k, t, blocks[n]);
            if (i == NONE)
                break;
        } else if (pc->nodes[i].block != blocks[n]) {
            /* Computed twice (two requests missed on the same prefix at
             * once): keep the cached copy, release ours. */
            assert(n >= from);
            sg_block_ref(pc->pool, pc->nodes[i].block);
            sg_block_unref(pc->pool, blocks[n]);
            blocks[n] = pc->nodes[i].block;
        }
        parent = i;
        key = k;
    }
    if (parent != NONE)
        touch_chain(pc, parent);
    return n;
}

static void
remove_node(sg_prefix_cache *pc, int32_t i)
{
    pc_node *n = &pc->nodes[i];
    int32_t *link = &pc->buckets[n->key & pc->mask];

    while (*link != i)
        link = &pc->nodes[*link].hnext;
    *link = n->hnext;
    lru_unlink(pc, i);
    if (n->parent != NONE)
        pc->nodes[n->parent].n_children--;
    sg_block_unref(pc->pool, n->block);
    sg_prefix_cache_ns_put(pc, n->ns);
    n->used = 0;
    pc->free_nodes[pc->n_free_nodes++] = i;
    pc->n_nodes--;
}

int
sg_prefix_cache_evict_one(sg_prefix_cache *pc)
{
    for (int32_t i = pc->lru; i != NONE; i = pc->nodes[i].lru_prev) {
        pc_node *n = &pc->nodes[i];
        if (n->n_children == 0 && sg_block_refcount(pc->pool, n->block) == 1) {
            remove_node(pc, i);
            return 1;
        }
    }
    return 0;
}

int
sg_prefix_cache_evictable(const sg_prefix_cache *pc)
{
    int n = 0;

    for (int32_t i = pc->mru; i != NONE; i = pc->nodes[i].lru_next)
        n += sg_block_refcount(pc->pool, pc->nodes[i].block) == 1;
    return n;
}

int
sg_prefix_cache_nodes(const sg_prefix_cache *pc)
{
    return pc->n_nodes;
}

void
sg_prefix_cache_count_blocks(const sg_prefix_cache *pc, int32_t *count)
{
    for (int i = 0; i < pc->cap; i++)
        if (pc->nodes[i].used)
            count[pc->nodes[i].block]++;
}

int
sg_prefix_cache_check(const sg_prefix_cache *pc, char *err, int errlen)
{
    int *children = calloc(pc->cap, sizeof(int));
    int  used = 0, listed = 0, rc = -1;

    if (children == NULL) {
        snprintf(err, errlen, "prefix cache check: out of memory");
        return -1;
    }
    for (int i = 0; i < pc->cap; i++) {
        const pc_node *n = &pc->nodes[i];
        uint64_t       pk;

        if (!n->used)
            continue;
        used++;
        if (n->block < 0 || n->block >= pc->pool->n_blocks
            || sg_block_refcount(pc->pool, n->block) < 1)
        {
            snprintf(err, errlen, "prefix cache: node %d holds block %d "
                     "without a reference", i, (int)n->block);
            goto out;
        }
        if (n->parent != NONE && !pc->nodes[n->parent].used) {
            snprintf(err, errlen, "prefix cache: node %d has a freed parent",
                     i);
            goto out;
        }
        if (n->ns < 0 || n->ns >= pc->ns_cap || pc->ns[n->ns].refs < 1
            || (n->parent != NONE && pc->nodes[n->parent].ns != n->ns))
        {
            snprintf(err, errlen, "prefix cache: node %d is in namespace %d, "
                     "which is not held (or not its parent's)", i,
                     (int)n->ns);
            goto out;
        }
        pk = n->parent == NONE ? pc->ns[n->ns].root
                               : pc->nodes[n->parent].key;
        if (chain_key(pk, n->tokens) != n->key
            || lookup(pc, n->ns, n->parent, n->key, n->tokens) != i)
        {
            snprintf(err, errlen, "prefix cache: node %d is not found by its "
                     "key", i);
            goto out;
        }
        /* A block held by a sequence is held with all of its prefix. */
        if (n->parent != NONE
            && sg_block_refcount(pc->pool, n->block) > 1
            && sg_block_refcount(pc->pool, pc->nodes[n->parent].block) < 2)
        {
            snprintf(err, errlen, "prefix cache: node %d is in use but its "
                     "parent is not", i);
            goto out;
        }
        if (n->parent != NONE)
            children[n->parent]++;
    }
    for (int i = 0; i < pc->cap; i++) {
        if (pc->nodes[i].used && children[i] != pc->nodes[i].n_children) {
            snprintf(err, errlen, "prefix cache: node %d counts %d children, "
                     "has %d", i, (int)pc->nodes[i].n_children, children[i]);
            goto out;
        }
    }
    for (int32_t i = pc->mru; i != NONE && listed <= used;
         i = pc->nodes[i].lru_next)
    {
        listed++;
    }
    if (used != pc->n_nodes || listed != used
        || used + pc->n_free_nodes != pc->cap)
    {
        snprintf(err, errlen, "prefix cache: %d nodes used, %d counted, %d in "
                 "the LRU list, %d free of %d", used, pc->n_nodes, listed,
                 pc->n_free_nodes, pc->cap);
        goto out;
    }
    rc = 0;
out:
    free(children);
    return rc;
}
