/*
 * Pieces of the Redis store shared by its sync (store_redis.c), async
 * (store_redis_async.c) and token-cache (tokcache.c) parts.
 *
 * Layout (one Redis database), schema 2: a passage's KEY is
 * "<length of its collection>:<collection>:<id>" (ids are unique per
 * collection; the length makes every pair's key distinct, and keeps a
 * collection's keys in the byte order of their ids):
 *   sg:schema                 "2"
 *   passage:<key>             hash: id doc_id title text collection meta dl
 *   sg:colls                  zset (scores 0) of collection names
 *   sg:coll:<collection>      zset, all scores 0: keys in byte order (the
 *                             canonical listing)
 *   sg:doc:<doc key>          set of its passages' keys (the document's
 *                             key is made like a passage's)
 *   sg:idx:<collection>:<term> zset key -> BM25 term weight (k1 1.2,
 *                             b 0.75, average length of the collection at
 *                             ingest)
 *   sg:terms:<key>            list of the passage's terms (to unindex it)
 *   sg:stats:<collection>     hash: n passages, len total terms
 *   tok:<hash>:<key>          cached token ids (see tokcache.h)
 *   sg:tokkeys:<key>          set of its tok: keys (dropped on change)
 * Searches run as one Lua script (idf from ZCARD, ZUNIONSTORE with idf
 * weights, filters, fetch), so a query is one round trip; the scripts
 * touch keys they do not declare, so this needs a single Redis (or a
 * replica set), not Redis Cluster.
 */
#ifndef SG_STORE_REDIS_H
#define SG_STORE_REDIS_H

#include <hiredis/hiredis.h>

#include "store_impl.h"

/* A command as argv + lengths (owned strings). */
typedef struct rcmd {
    char   **argv;
    size_t  *len;
    int      argc;
    int      cap;
} rcmd;

int rcmd_add(rcmd *c, const char *s, size_t n);
int rcmd_addf(rcmd *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void rcmd_free(rcmd *c);

/* EVAL of the search script for query/options; without terms (0) the
 * command ends before them, and sg_redis_search_terms adds them. */
int sg_redis_search_cmd(const char *query, const sg_search_opts *o,
    int terms, rcmd *c);
int sg_redis_search_terms(const char *query, rcmd *c);
/* Adds prefix + the key of passage p (its collection and id). */
int sg_redis_add_key(rcmd *c, const char *prefix, const sg_passage *p);
/* Reply of the search script -> passages (appended, best first). */
int sg_redis_take_search(const redisReply *r, sg_passage_list *out,
    int limit, char *err, int errlen);

/* Token cache commands and replies. */
int sg_redis_tokget_cmd(uint64_t hash, const sg_passage *p, size_t n,
    rcmd *c);
int sg_redis_take_tokget(const redisReply *r, sg_passage *p, size_t n,
    size_t *hits, char *err, int errlen);
int sg_redis_tokput_cmd(uint64_t hash, const sg_passage *p, size_t n,
    int ttl_s, rcmd *c);

/* A reply that is an error or not what was expected -> code + message. */
int sg_redis_reply_err(const redisReply *r, const char *what, char *err,
    int errlen);

/* The sync redisContext of a "redis:" sg_store, or NULL for another kind
 * (for tokcache.c); reconnects when the connection died. */
redisContext *sg_redis_sync_ctx(sg_store *s, char *err, int errlen,
    int *rc);
/* Async: starts one command on a pooled connection; done(q, reply, ud) runs
 * inside sg_aquery_step when the reply arrives (never for a NULL reply:
 * that fails the query with EDOWN) and returns its result code; ud, when
 * not NULL, is malloc'ed and freed with the query.  With work, the command
 * is finished by work(cmd, arg) in the host's thread (SG_AQ_WORK; 0 or -1
 * out of memory) and sent after it. */
typedef int (*sg_redis_done_fn)(sg_aquery *q, const redisReply *r,
    void *ud);
typedef int (*sg_redis_work_fn)(const char *arg, rcmd *cmd);
int sg_redis_astart(sg_astore *as, rcmd *cmd, sg_redis_work_fn work,
    const char *arg, sg_redis_done_fn done, void *ud, int timeout_ms,
    sg_aquery **qp, char *err, int errlen);
int sg_redis_is_astore(const sg_astore *as);

#endif
