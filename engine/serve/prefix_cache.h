/*
 * The prefix cache: a radix tree over FULL blocks of SG_KV_BLOCK tokens.
 * A node stands for one block of a prompt given everything before it; its
 * key chains the parent's key with the block's token ids, and the ids are
 * kept so that a hash collision can never give a false hit.  A node holds
 * one reference to its cache block, so the block outlives the sequence
 * that computed it; blocks that only the cache holds are evicted least
 * recently used first, leaves before their parents.
 *
 * Reuse is exact: a block's latents and indexer keys depend only on the
 * tokens of the prefix that ends with it (DSA reads earlier keys, never
 * later ones).  Partial blocks are never shared.
 *
 * Prefixes are shared within a namespace only: a request's namespace is its
 * salt (the host's tenant, e.g. a digest of the API key, and a client's
 * cache_salt), and nodes of two namespaces never match, so no tenant can
 * learn from cached_tokens what another's prompts hold.  Namespace 0 is
 * the shared one (an empty salt).
 */
#ifndef SG_PREFIX_CACHE_H
#define SG_PREFIX_CACHE_H

#include <stdint.h>

#include "block_pool.h"

typedef struct sg_prefix_cache sg_prefix_cache;

/* A cache able to hold every block of the pool; NULL when out of memory. */
sg_prefix_cache *sg_prefix_cache_new(sg_block_pool *pool);
/* Drops every node (and its block reference). */
void sg_prefix_cache_free(sg_prefix_cache *pc);

/* The namespace of a salt (its bytes are copied once for every holder),
 * with one more holder: -1 when out of memory; 0 for an empty salt. */
int32_t sg_prefix_cache_ns_get(sg_prefix_cache *pc, const void *salt,
    size_t len);
/* The namespace of a salt if anyone holds it, else -1 (nothing of it is
 * cached then); no new holder. */
int32_t sg_prefix_cache_ns_find(const sg_prefix_cache *pc, const void *salt,
    size_t len);
/* One holder fewer; the last one frees it. */
void sg_prefix_cache_ns_put(sg_prefix_cache *pc, int32_t ns);
/* Namespaces held besides the shared one; the bytes their table takes. */
int sg_prefix_cache_namespaces(const sg_prefix_cache *pc);
size_t sg_prefix_cache_ns_bytes(const sg_prefix_cache *pc);

/*
 * The longest cached prefix of tokens[0..n_tokens) in namespace ns, in
 * full blocks, at most
 * max_blocks of them: writes their block ids to blocks[] with one new
 * reference each (the caller's) and returns how many.  blocks NULL: only
 * counts them (no reference taken, recency untouched).
 */
int sg_prefix_cache_match(sg_prefix_cache *pc, int32_t ns,
    const int32_t *tokens, int n_tokens, int max_blocks, int32_t *blocks);

/*
 * Makes blocks [0, n_full) of a sequence (tokens and block table, its KV
 * computed) known to the cache, in namespace ns.  The first `from` blocks must already be
 * cache nodes (from an earlier match or insert).  A block whose content is
 * already cached under another id is swapped in blocks[] for the cached
 * one (the sequence's own copy is released), so one prefix is kept once.
 * Returns n_full, or a smaller count when the tree is full.
 */
int sg_prefix_cache_insert(sg_prefix_cache *pc, int32_t ns,
    const int32_t *tokens, int n_full, int32_t *blocks, int from);

/* Evicts the least recently used block that only the cache holds and that
 * no other cached block extends; 1 when one was freed, 0 when none can be. */
int sg_prefix_cache_evict_one(sg_prefix_cache *pc);

/* Cached blocks held by nobody else (all of them can be evicted). */
int sg_prefix_cache_evictable(const sg_prefix_cache *pc);
/* Blocks in the tree. */
int sg_prefix_cache_nodes(const sg_prefix_cache *pc);

/* Adds one to count[block] for every block in the tree (for checks). */
void sg_prefix_cache_count_blocks(const sg_prefix_cache *pc, int32_t *count);

/* Checks that the namespaces' holders are the nodes in them and `held`
 * requests; 0, or -1 with a message. */
int sg_prefix_cache_check_ns(const sg_prefix_cache *pc, int held, char *err,
    int errlen);

/* Checks the tree: keys, parents, child counts, the LRU list and that each
 * node's block has a holder; 0, or -1 with a message. */
int sg_prefix_cache_check(const sg_prefix_cache *pc, char *err, int errlen);

#endif
