/*
 * The Redis token cache (see tokcache.h): MGET of tok:<hash>:<key> keys on
 * the way in, one Lua call that SETs them (with a TTL) and records them
 * per passage on the way out.
 */
#include <stdlib.h>
#include <string.h>

#include "store_redis.h"
#include "tokcache.h"

int
sg_tokcache_get(sg_store *s, uint64_t tok_hash, sg_passage *p, size_t n,
    size_t *hits, char *err, int errlen)
{
    redisContext *c;
    redisReply   *r;
    rcmd          cmd;
    int           rc;

    if (hits)
        *hits = 0;
    if (n == 0)
        return SG_STORE_OK;
    c = sg_redis_sync_ctx(s, err, errlen, &rc);
    if (c == NULL)
        return rc;
    if (sg_redis_tokget_cmd(tok_hash, p, n, &cmd) < 0)
        return sg_store_err(err, errlen, SG_STORE_ENOMEM, "out of memory");
    r = redisCommandArgv(c, cmd.argc, (const char **)cmd.argv, cmd.len);
    rcmd_free(&cmd);
    rc = sg_redis_take_tokget(r, p, n, hits, err, errlen);
    if (r)
        freeReplyObject(r);
    return rc;
}

int
sg_tokcache_put(sg_store *s, uint64_t tok_hash, const sg_passage *p,
    size_t n, int ttl_s, char *err, int errlen)
{
    redisContext *c;
    redisReply   *r;
    rcmd          cmd;
    int           rc;

    if (n == 0)
        return SG_STORE_OK;
    c = sg_redis_sync_ctx(s, err, errlen, &rc);
    if (c == NULL)
        return rc;
    if (sg_redis_tokput_cmd(tok_hash, p, n, ttl_s, &cmd) < 0)
        return sg_store_err(err, errlen, SG_STORE_ENOMEM, "out of memory");
    r = redisCommandArgv(c, cmd.argc, (const char **)cmd.argv, cmd.len);
    rcmd_free(&cmd);
    rc = r && r->type == REDIS_REPLY_INTEGER
         ? SG_STORE_OK : sg_redis_reply_err(r, "token cache put", err,
                                            errlen);
    if (r)
        freeReplyObject(r);
    return rc;
}

typedef struct tokget_ud {
    sg_passage *p;
    size_t      n;
} tokget_ud;

static int
tokget_done(sg_aquery *q, const redisReply *r, void *ud)
{
    tokget_ud *u = ud;

    return sg_redis_take_tokget(r, u->p, u->n, NULL, q->err,
                                sizeof(q->err));
}

static int
tokput_done(sg_aquery *q, const redisReply *r, void *ud)
{
    (void)ud;
    if (r->type == REDIS_REPLY_INTEGER)
        return SG_STORE_OK;
    return sg_redis_reply_err(r, "token cache put", q->err, sizeof(q->err));
}

int
sg_atokcache_get(sg_astore *as, uint64_t tok_hash, sg_passage *p, size_t n,
    sg_aquery **q, char *err, int errlen)
{
    tokget_ud *u;
    rcmd       cmd;

    *q = NULL;
    if (!sg_redis_is_astore(as))
        return sg_store_err(err, errlen, SG_STORE_EINVAL,
                            "the token cache needs a redis: store");
    if (sg_redis_tokget_cmd(tok_hash, p, n, &cmd) < 0
        || (u = malloc(sizeof(*u))) == NULL)
    {
        rcmd_free(&cmd);
        return sg_store_err(err, errlen, SG_STORE_ENOMEM, "out of memory");
    }
    u->p = p;
    u->n = n;
    return sg_redis_astart(as, &cmd, NULL, NULL, tokget_done, u, 0, q, err,
                           errlen);
}

int
sg_atokcache_put(sg_astore *as, uint64_t tok_hash, const sg_passage *p,
    size_t n, int ttl_s, sg_aquery **q, char *err, int errlen)
{
    rcmd cmd;

    *q = NULL;
    if (!sg_redis_is_astore(as))
        return sg_store_err(err, errlen, SG_STORE_EINVAL,
                            "the token cache needs a redis: store");
    if (sg_redis_tokput_cmd(tok_hash, p, n, ttl_s, &cmd) < 0)
        return sg_store_err(err, errlen, SG_STORE_ENOMEM, "out of memory");
    return sg_redis_astart(as, &cmd, NULL, NULL, tokput_done, NULL, 0, q,
                           err, errlen);
}
