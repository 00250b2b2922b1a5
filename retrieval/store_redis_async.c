/*
 * Redis store, async face: hiredis's async API on connections the host's
 * event loop drives.  hiredis asks, through its ev hooks, to start/stop
 * watching the fd for read/write; here those hooks only set flags, which
 * sg_aquery_wants() reports, and sg_aquery_step() calls
 * redisAsyncHandleRead/Write.  So the "adapter" is the sg_aquery
 * interface itself: the nginx module watches one fd per query, like any
 * other async store.  One command in flight per connection, a small pool
 * per worker, reconnect on the next query after a connection dies, a
 * pooled connection found dead at first use replaced once transparently.
 * hiredis 0.14 has no timeouts: the query's deadline is the timeout.
 */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/async.h>

#include "store_redis.h"
#include "store_kinds.h"

typedef struct rconn rconn;

typedef struct r_aquery {
    sg_aquery         base;
    struct r_astore  *as;
    rconn            *conn;
    rcmd              cmd;
    sg_redis_work_fn  work;       /* finishes cmd in the host's thread */
    const char       *work_arg;
    int               work_failed;
    int               started;    /* the command went to the connection */
    sg_redis_done_fn  done;
    void             *ud;
    int               reused;
    int               retried;
    int               lost;       /* a NULL reply came: the conn died */
} r_aquery;

struct rconn {
    redisAsyncContext *ac;
    int                reading;
    int                writing;
    int                connected;
    int                busy;
    r_aquery          *q;          /* the query waiting for a reply */
};

typedef struct r_astore {
    sg_astore  base;
    char       host[256];
    int        port;
    rconn     *pool;
    int        n_pool;
} r_astore;

static const sg_astore_vt redis_avt;

/* hiredis event hooks: record what it wants watched. */
static void ev_add_read(void *d)  { ((rconn *)d)->reading = 1; }
static void ev_del_read(void *d)  { ((rconn *)d)->reading = 0; }
static void ev_add_write(void *d) { ((rconn *)d)->writing = 1; }
static void ev_del_write(void *d) { ((rconn *)d)->writing = 0; }
/* hiredis is freeing the context (closed, failed, or freed by us). */
static void ev_cleanup(void *d)
{
    rconn *c = d;

    c->reading = c->writing = 0;
    c->ac = NULL;
    c->connected = 0;
}

static void
update_fd(r_aquery *q)
{
    rconn *c = q->conn;

    if (q->base.done)
        return;
    q->base.fd = c->ac ? c->ac->c.fd : -1;
    q->base.wants = (c->reading ? SG_AQ_READ : 0)
                    | (c->writing ? SG_AQ_WRITE : 0);
    if (q->base.wants == 0)
        q->base.wants = SG_AQ_READ;     /* waiting for the reply */
}

static void start_on(r_aquery *q);

/* The connection is gone (hiredis frees the context itself). */
static void
lost(r_aquery *q, const char *why)
{
    if (q->reused && !q->retried) {
        q->retried = 1;
        q->reused = 0;
        start_on(q);                    /* a fresh connection */
        return;
    }
    sg_aquery_finish(&q->base, SG_STORE_EDOWN, "redis %s:%d: %s",
                     q->as->host, q->as->port, why);
}

static void
on_connect(const redisAsyncContext *ac, int status)
{
    rconn *c = ac->data;

    if (status == REDIS_OK) {
        c->connected = 1;
        return;
    }
    /* hiredis frees ac after this returns */
    c->ac = NULL;
    c->connected = 0;
    if (c->q) {
        r_aquery *q = c->q;
        char      why[160];

        c->q = NULL;
        snprintf(why, sizeof(why), "cannot connect: %s", ac->errstr);
        sg_aquery_finish(&q->base, SG_STORE_EDOWN, "redis %s:%d: %s",
                         q->as->host, q->as->port, why);
    }
}

static void
on_disconnect(const redisAsyncContext *ac, int status)
{
    rconn *c = ac->data;

    (void)status;
    c->ac = NULL;
    c->connected = 0;
}

static void
on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    rconn    *c = privdata;
    r_aquery *q = c->q;
    int       rc;

    (void)ac;
    if (q == NULL)
        return;                         /* abandoned */
    c->q = NULL;
    if (reply == NULL) {
        /* connection lost: hiredis frees it after this returns; r_step
         * then retries on a new one (when it was a pooled one) */
        q->lost = 1;
        return;
    }
    rc = q->done(&q->base, reply, q->ud);
    if (!q->base.done) {
        char msg[sizeof(q->base.err)];

        /* done() wrote its message into q->base.err */
        memcpy(msg, q->base.err, sizeof(msg));
        sg_aquery_finish(&q->base, rc, rc == SG_STORE_OK ? NULL : "%s",
                         msg);
    }
}

/* Connects c (non-blocking; the reply waits in hiredis's buffer). */
static int
connect_conn(r_astore *as, rconn *c)
{
    redisAsyncContext *ac = redisAsyncConnect(as->host, as->port);

    c->reading = c->writing = c->connected = 0;
    if (ac == NULL)
        return -1;
    if (ac->err) {
        redisAsyncFree(ac);
        return -1;
    }
    ac->data = c;
    ac->ev.data = c;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    c->ac = ac;
    /* sets the write watch that tells when the connect completes */
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    return 0;
}

/* Sends q's command on q->conn, connecting first when needed. */
static void
start_on(r_aquery *q)
{
    rconn *c = q->conn;

    q->started = 1;
    if (c->ac == NULL && connect_conn(q->as, c) < 0) {
        sg_aquery_finish(&q->base, SG_STORE_EDOWN,
                         "redis %s:%d: cannot connect", q->as->host,
                         q->as->port);
        return;
    }
    c->q = q;
    if (redisAsyncCommandArgv(c->ac, on_reply, c, q->cmd.argc,
                              (const char **)q->cmd.argv, q->cmd.len)
        != REDIS_OK)
    {
        c->q = NULL;
        sg_aquery_finish(&q->base, SG_STORE_EDOWN,
                         "redis %s:%d: cannot send: %s", q->as->host,
                         q->as->port, c->ac->errstr);
        return;
    }
    update_fd(q);
}

static void
r_work(sg_aquery *base)
{
    r_aquery *q = (r_aquery *)base;

    q->work_failed = q->work(q->work_arg, &q->cmd) < 0;
}

static void
r_step(sg_aquery *base, int events)
{
    r_aquery *q = (r_aquery *)base;
    rconn    *c = q->conn;

    if (events & SG_AQ_WORK) {
        if (q->work_failed)
            sg_aquery_finish(&q->base, SG_STORE_ENOMEM, "out of memory");
        else
            start_on(q);
        return;
    }
    if (c->ac && (events & SG_AQ_WRITE))
        redisAsyncHandleWrite(c->ac);
    /* the write may have completed the query or lost the connection */
    if (!q->base.done && c->ac && (events & SG_AQ_READ))
        redisAsyncHandleRead(c->ac);
    if (!q->base.done && (q->lost || (c->ac == NULL && c->q == q))) {
        q->lost = 0;
        c->q = NULL;
        if (c->ac != NULL) {             /* still there: not reusable */
            redisAsyncContext *ac = c->ac;

            c->ac = NULL;
            redisAsyncFree(ac);
        }
        lost(q, "connection lost");
    }
    update_fd(q);
}

static void
r_release(sg_aquery *base)
{
    r_aquery *q = (r_aquery *)base;
    rconn    *c = q->conn;

    if (c) {
        if (q->started && (c->q == q || !q->base.done
                           || q->base.code == SG_STORE_ETIMEOUT))
        {
            /* a reply may still come: this connection cannot be reused */
            c->q = NULL;
            if (c->ac) {
                redisAsyncContext *ac = c->ac;

                c->ac = NULL;
                redisAsyncFree(ac);
            }
        }
        c->busy = 0;
    }
    rcmd_free(&q->cmd);
    free(q->ud);
}

int
sg_redis_is_astore(const sg_astore *as)
{
    return as->vt == &redis_avt;
}

int
sg_redis_astart(sg_astore *as_, rcmd *cmd, sg_redis_work_fn work,
    const char *arg, sg_redis_done_fn done, void *ud, int timeout_ms,
    sg_aquery **qp, char *err, int errlen)
{
    r_astore *as = (r_astore *)as_;
    r_aquery *q;
    rconn    *pick = NULL;

    *qp = NULL;
    if (as->pool == NULL) {
        as->n_pool = as->base.pool_size > 0 ? as->base.pool_size : 4;
        as->pool = calloc(as->n_pool, sizeof(*as->pool));
        if (as->pool == NULL)
            goto oom;
    }
    for (int i = 0; i < as->n_pool; i++) {
        rconn *c = &as->pool[i];

        if (c->busy)
            continue;
        if (c->ac && c->connected) {
            /* an idle connection with something to read was closed by
             * the server (restart, timeout): drop it */
            struct pollfd pfd = { .fd = c->ac->c.fd, .events = POLLIN };

            if (poll(&pfd, 1, 0) != 0) {
                redisAsyncContext *ac = c->ac;

                c->ac = NULL;
                redisAsyncFree(ac);
            }
        }
        if (c->ac && c->connected) {
            pick = c;                    /* an idle live one first */
            break;
        }
        if (pick == NULL)
            pick = c;
    }
    if (pick == NULL) {
        rcmd_free(cmd);
        free(ud);
        return sg_store_err(err, errlen, SG_STORE_EBUSY,
                            "redis: all %d pooled connections are busy",
                            as->n_pool);
    }
    q = calloc(1, sizeof(*q));
    if (q == NULL)
        goto oom;
    q->as = as;
    q->conn = pick;
    q->cmd = *cmd;
    memset(cmd, 0, sizeof(*cmd));
    q->done = done;
    q->ud = ud;
    q->reused = pick->ac != NULL && pick->connected;
    q->base.fd = -1;
    q->base.step = r_step;
    q->base.release = r_release;
    q->base.deadline = sg_now_ms()
                       + (timeout_ms > 0 ? timeout_ms : as->base.timeout_ms);
    pick->busy = 1;
    *qp = &q->base;
    if (work) {
        q->work = work;
        q->work_arg = arg;
        q->base.work = r_work;
        q->base.wants = SG_AQ_WORK;
        return SG_STORE_OK;
    }
    start_on(q);
    return SG_STORE_OK;
oom:
    rcmd_free(cmd);
    free(ud);
    return sg_store_err(err, errlen, SG_STORE_ENOMEM, "out of memory");
}

static int
search_done(sg_aquery *q, const redisReply *r, void *ud)
{
    return sg_redis_take_search(r, &q->res, *(int *)ud, q->err,
                                sizeof(q->err));
}

static int
r_asearch(sg_astore *as, const char *query, const sg_search_opts *o,
    sg_aquery **qp, char *err, int errlen)
{
    rcmd cmd;
    int *limit = malloc(sizeof(*limit));
    int  later = query && strlen(query) >= SG_STORE_INLINE_QUERY;

    if (limit == NULL || sg_redis_search_cmd(query, o, !later, &cmd) < 0) {
        free(limit);
        return sg_store_err(err, errlen, SG_STORE_ENOMEM, "out of memory");
    }
    *limit = sg_search_limit(o);
    /* a long question's terms are split in the host's thread */
    return sg_redis_astart(as, &cmd, later ? sg_redis_search_terms : NULL,
                           query, search_done, limit,
                           sg_search_timeout(o, as->timeout_ms), qp, err,
                           errlen);
}

/* Each collection's name and its number of passages, in byte order. */
static const char collections_lua[] =
    "local out = {}\n"
    "for _, c in ipairs(redis.call('ZRANGE', 'sg:colls', 0, -1)) do\n"
    "  out[#out + 1] = c\n"
    "  out[#out + 1] = redis.call('ZCARD', 'sg:coll:' .. c)\n"
    "end\n"
    "return out\n";

static int
collections_done(sg_aquery *q, const redisReply *r, void *ud)
{
    (void)ud;
    if (r->type != REDIS_REPLY_ARRAY || r->elements % 2 != 0)
        return sg_redis_reply_err(r, "collections", q->err,
                                  sizeof(q->err));
    for (size_t i = 0; i < r->elements; i += 2) {
        const redisReply *name = r->element[i], *n = r->element[i + 1];

        if (name->type != REDIS_REPLY_STRING
            || n->type != REDIS_REPLY_INTEGER)
            return sg_store_err(q->err, sizeof(q->err), SG_STORE_EBADROW,
                                "redis: collections: malformed reply");
        if (sg_collection_push(&q->res, name->str, (double)n->integer) != 0)
            return sg_store_err(q->err, sizeof(q->err), SG_STORE_ENOMEM,
                                "out of memory");
    }
    return SG_STORE_OK;
}

static int
r_acollections(sg_astore *as, sg_aquery **qp, char *err, int errlen)
{
    rcmd cmd = { 0 };

    if (rcmd_add(&cmd, "EVAL", 4) != 0
        || rcmd_add(&cmd, collections_lua, sizeof(collections_lua) - 1) != 0
        || rcmd_add(&cmd, "0", 1) != 0)
    {
        rcmd_free(&cmd);
        return sg_store_err(err, errlen, SG_STORE_ENOMEM, "out of memory");
    }
    /* timeout 0: the store's own */
    return sg_redis_astart(as, &cmd, NULL, NULL, collections_done, NULL, 0,
                           qp, err, errlen);
}

static void
r_aclose(sg_astore *as_)
{
    r_astore *as = (r_astore *)as_;

    for (int i = 0; i < as->n_pool; i++) {
        if (as->pool[i].ac) {
            redisAsyncContext *ac = as->pool[i].ac;

            as->pool[i].ac = NULL;
            as->pool[i].q = NULL;
            redisAsyncFree(ac);
        }
    }
    free(as->pool);
    free(as);
}

static const sg_astore_vt redis_avt = {
    "redis", r_asearch, r_aclose, r_acollections,
};

int
sg_redis_aopen(const char *hostport, sg_astore **out, char *err, int errlen)
{
    r_astore *as = calloc(1, sizeof(*as));

    *out = NULL;
    if (as == NULL)
        return sg_store_err(err, errlen, SG_STORE_ENOMEM, "out of memory");
    if (sg_parse_hostport(hostport, as->host, sizeof(as->host), &as->port)
        < 0)
    {
        free(as);
        return sg_store_err(err, errlen, SG_STORE_EINVAL,
                            "redis store '%s': expected IP:PORT", hostport);
    }
    as->base.vt = &redis_avt;
    *out = &as->base;
    return SG_STORE_OK;
}
