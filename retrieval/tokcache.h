/*
 * The Redis cache of pre-tokenized passages: key
 *   tok:<tokenizer hash, 16 hex digits>:<passage key>
 * (a passage's key names its collection and id: store_redis.h)
 * holds the raw little-endian int32 ids of the passage's context block (the
 * text sg_ctx_block() makes), so a hot passage is tokenized once and never
 * again, across requests, workers and hosts.  Entries expire after a TTL
 * (0 = never) so a changed passage is re-tokenized eventually; ingest
 * deletes the keys of passages it replaces.
 *
 * The sync calls take an sg_store opened on a "redis:" URI; the async ones
 * an sg_astore on one (other kinds answer SG_STORE_EINVAL).
 */
#ifndef SG_TOKCACHE_H
#define SG_TOKCACHE_H

#include "store.h"

/* Fills p[i].tokens / n_tokens for every cached passage (others are left
 * as they are); *hits gets how many were found. */
int sg_tokcache_get(sg_store *s, uint64_t tok_hash, sg_passage *p, size_t n,
    size_t *hits, char *err, int errlen);

/* Stores every p[i] that has tokens. */
int sg_tokcache_put(sg_store *s, uint64_t tok_hash, const sg_passage *p,
    size_t n, int ttl_s, char *err, int errlen);

/* Async: the query fills p[] when it completes (sg_aquery_result() then
 * returns SG_STORE_OK and appends nothing).  p must outlive the query. */
int sg_atokcache_get(sg_astore *as, uint64_t tok_hash, sg_passage *p,
    size_t n, sg_aquery **q, char *err, int errlen);
/* Copies what it needs: p may be freed right after the call. */
int sg_atokcache_put(sg_astore *as, uint64_t tok_hash, const sg_passage *p,
    size_t n, int ttl_s, sg_aquery **q, char *err, int errlen);

#endif
