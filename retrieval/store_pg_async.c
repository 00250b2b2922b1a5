/*
 * PostgreSQL store, async face: a small pool of non-blocking libpq
 * connections per worker.  A query takes an idle connection (or opens one
 * with PQconnectStart/PQconnectPoll), sends with PQsendQueryParams, flushes,
 * then reads with PQconsumeInput/PQisBusy/PQgetResult; the host only sees
 * PQsocket and whether to wait for read or write.  A pooled connection that
 * died while idle (server restarted) is replaced once, transparently.  A
 * query that times out or is abandoned closes its connection: it is never
 * reused with a result still in flight (the server notices the closed
 * socket via client_connection_check_interval and stops).
 */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_pg.h"
#include "store_kinds.h"

typedef struct pg_conn {
    PGconn *c;
    int     busy;
} pg_conn;

typedef struct pg_astore {
    sg_astore  base;
    char      *conninfo;
    pg_conn   *pool;
    int        n_pool;
} pg_astore;

enum { P_CONNECT, P_FLUSH, P_READ };

typedef struct pg_aquery {
    sg_aquery  base;
    pg_astore *as;
    pg_conn   *pc;
    pg_search  ps;
    const char *query;     /* the caller's, for the terms in the work */
    int        fresh;      /* pc needs a new connection */
    int        phase;
    int        reused;     /* the connection came from the pool */
    int        retried;
    int        sent;       /* the query is fully on its way */
    int        got_result; /* the first result has been taken */
    int        drained;    /* PQgetResult returned NULL: conn reusable */
    int        code;
    char       err[256];
} pg_aquery;

static void start_connect(pg_aquery *q);

static void
update_fd(pg_aquery *q, int wants)
{
    q->base.fd = PQsocket(q->pc->c);
    q->base.wants = wants;
}

/* A connection-level failure: retry once on a fresh connection when the
 * dead one came from the pool, else fail with EDOWN. */
static void
conn_failed(pg_aquery *q, const char *what)
{
    const char *m = PQerrorMessage(q->pc->c);

    if (q->reused && !q->retried && !q->sent) {
        q->retried = 1;
        q->reused = 0;
        PQfinish(q->pc->c);
        q->pc->c = NULL;
        start_connect(q);
        return;
    }
    sg_aquery_finish(&q->base, SG_STORE_EDOWN, "postgres: %s: %.*s", what,
                     (int)strcspn(m, "\n"), m);
}

static void
flush_out(pg_aquery *q)
{
    int r = PQflush(q->pc->c);

    if (r < 0) {
        conn_failed(q, "sending the query");
    } else if (r == 1) {
        q->phase = P_FLUSH;
        update_fd(q, SG_AQ_READ | SG_AQ_WRITE);
    } else {
        q->sent = 1;
        q->phase = P_READ;
        update_fd(q, SG_AQ_READ);
    }
}

static void
send_query(pg_aquery *q)
{
    if (!PQsendQueryParams(q->pc->c, q->ps.sql, q->ps.n_values, NULL,
                           q->ps.values, NULL, NULL, 0))
    {
        conn_failed(q, "sending the query");
        return;
    }
    flush_out(q);
}

static void
start_connect(pg_aquery *q)
{
    q->pc->c = sg_pg_connect(q->as->conninfo, q->as->base.timeout_ms, 1);
    if (q->pc->c == NULL) {
        sg_aquery_finish(&q->base, SG_STORE_ENOMEM, "out of memory");
        return;
    }
    if (PQstatus(q->pc->c) == CONNECTION_BAD) {
        const char *m = PQerrorMessage(q->pc->c);

        sg_aquery_finish(&q->base, SG_STORE_EDOWN,
                         "postgres: cannot connect: %.*s",
                         (int)strcspn(m, "\n"), m);
        return;
    }
    q->phase = P_CONNECT;
    update_fd(q, SG_AQ_WRITE);     /* as libpq's docs say: start writing */
}

static void
read_results(pg_aquery *q)
{
    if (!PQconsumeInput(q->pc->c)) {
        conn_failed(q, "reading the result");
        return;
    }
    while (!PQisBusy(q->pc->c)) {
        PGresult *r = PQgetResult(q->pc->c);

        if (r == NULL) {
            q->drained = 1;
            if (!q->got_result)
                sg_aquery_finish(&q->base, SG_STORE_EBADROW,
                                 "postgres: no result for the query");
            else
                sg_aquery_finish(&q->base, q->code, "%s", q->err);
            return;
        }
        if (!q->got_result) {
            q->got_result = 1;
            q->code = sg_pg_take_result(r, &q->base.res, q->err,
                                        sizeof(q->err));
        }
        PQclear(r);
    }
    update_fd(q, SG_AQ_READ);
}

/* The query's terms are there: an empty result when there are none, else
 * the query goes out on its connection (a new one when it needs it). */
static void
start(pg_aquery *q)
{
    if (q->ps.tsquery && q->ps.tsquery[0] == '\0') {
        sg_aquery_finish(&q->base, SG_STORE_OK, NULL);
        q->drained = 1;                 /* the connection was not used */
        return;
    }
    if (!q->fresh) {
        q->reused = 1;
        send_query(q);
        return;
    }
    if (q->pc->c) {
        PQfinish(q->pc->c);
        q->pc->c = NULL;
    }
    start_connect(q);
}

/* In the host's thread: a long query's terms. */
static void
pg_work(sg_aquery *base)
{
    pg_aquery *q = (pg_aquery *)base;

    q->code = sg_pg_search_terms(q->query, &q->ps, q->err, sizeof(q->err));
}

static void
pg_step(sg_aquery *base, int events)
{
    pg_aquery *q = (pg_aquery *)base;

    if (events & SG_AQ_WORK) {
        if (q->code != SG_STORE_OK) {
            q->drained = 1;
            sg_aquery_finish(&q->base, q->code, "%s", q->err);
        } else {
            start(q);
        }
        return;
    }
    switch (q->phase) {
    case P_CONNECT:
        switch (PQconnectPoll(q->pc->c)) {
        case PGRES_POLLING_READING:
            update_fd(q, SG_AQ_READ);
            break;
        case PGRES_POLLING_WRITING:
            update_fd(q, SG_AQ_WRITE);
            break;
        case PGRES_POLLING_OK:
            if (PQsetnonblocking(q->pc->c, 1) != 0) {
                conn_failed(q, "non-blocking mode");
                break;
            }
            send_query(q);
            break;
        default: {
            const char *m = PQerrorMessage(q->pc->c);

            sg_aquery_finish(&q->base, SG_STORE_EDOWN,
                             "postgres: cannot connect: %.*s",
                             (int)strcspn(m, "\n"), m);
        }
        }
        break;
    case P_FLUSH:
        if ((events & SG_AQ_READ) && !PQconsumeInput(q->pc->c)) {
            conn_failed(q, "sending the query");
            break;
        }
        flush_out(q);
        break;
    case P_READ:
        if (events & SG_AQ_READ)
            read_results(q);
        break;
    }
}

static void
pg_release(sg_aquery *base)
{
    pg_aquery *q = (pg_aquery *)base;

    if (q->pc) {
        /* Back to the pool only when nothing of this query is left on
         * the connection (or it never went out: abandoned during its
         * work); otherwise close it (timeout, abandon, error). */
        if (!(q->base.wants == SG_AQ_WORK
              || (q->drained && (q->pc->c == NULL
                                 || PQstatus(q->pc->c) == CONNECTION_OK))))
        {
            PQfinish(q->pc->c);
            q->pc->c = NULL;
        }
        q->pc->busy = 0;
    }
    sg_pg_search_free(&q->ps);
}

/* An idle connection has nothing to say: if its socket is readable, the
 * server closed it (restart, idle kill) and it must not be used. */
static int
idle_alive(PGconn *c)
{
    struct pollfd pfd = { .fd = PQsocket(c), .events = POLLIN };

    return PQstatus(c) == CONNECTION_OK && pfd.fd >= 0
           && poll(&pfd, 1, 0) == 0;
}

/* Starts q (its statement in q->ps) on a pooled connection; q is freed
 * when it cannot start. */
static int
pg_astart(pg_astore *as, pg_aquery *q, int timeout_ms, sg_aquery **qp,
    char *err, int errlen)
{
    pg_conn   *idle = NULL, *empty = NULL;

    if (as->pool == NULL) {
        as->n_pool = as->base.pool_size > 0 ? as->base.pool_size : 4;
        as->pool = calloc(as->n_pool, sizeof(*as->pool));
        if (as->pool == NULL) {
            sg_pg_search_free(&q->ps);
            free(q);
            return sg_store_err(err, errlen, SG_STORE_ENOMEM,
                                "out of memory");
        }
    }
    for (int i = 0; i < as->n_pool; i++) {
        pg_conn *pc = &as->pool[i];

        if (pc->busy)
            continue;
        if (pc->c && idle == NULL && idle_alive(pc->c))
            idle = pc;
        else if (pc->c == NULL || !idle_alive(pc->c)) {
            if (empty == NULL)
                empty = pc;
        }
    }
    if (idle == NULL && empty == NULL) {
        sg_pg_search_free(&q->ps);
        free(q);
        return sg_store_err(err, errlen, SG_STORE_EBUSY,
                            "postgres: all %d pooled connections are busy",
                            as->n_pool);
    }
    q->as = as;
    q->base.fd = -1;
    q->base.work = pg_work;
    q->base.step = pg_step;
    q->base.release = pg_release;
    q->base.deadline = sg_now_ms() + timeout_ms;
    q->pc = idle ? idle : empty;
    q->pc->busy = 1;
    q->fresh = idle == NULL;
    *qp = &q->base;
    if (q->query && q->query[0] && q->ps.tsquery == NULL)
        q->base.wants = SG_AQ_WORK;     /* a long query's terms first */
    else
        start(q);
    return SG_STORE_OK;
}

static int
pg_asearch(sg_astore *as_, const char *query, const sg_search_opts *o,
    sg_aquery **qp, char *err, int errlen)
{
    pg_astore *as = (pg_astore *)as_;
    pg_aquery *q = calloc(1, sizeof(*q));
    int        rc;

    if (q == NULL)
        return sg_store_err(err, errlen, SG_STORE_ENOMEM, "out of memory");
    rc = sg_pg_search_prepare(query, o, &q->ps, err, errlen);
    /* a short question's terms now; a long one's in the host's thread
     * (pg_work) */
    if (rc == SG_STORE_OK && query && query[0]
        && strlen(query) < SG_STORE_INLINE_QUERY)
        rc = sg_pg_search_terms(query, &q->ps, err, errlen);
    if (rc != SG_STORE_OK) {
        sg_pg_search_free(&q->ps);
        free(q);
        return rc;
    }
    q->query = query;
    return pg_astart(as, q, sg_search_timeout(o, as->base.timeout_ms), qp,
                     err, errlen);
}

/* The rows of a search (7 columns): name, the passages' count as score. */
static const char collections_sql[] =
    "SELECT collection, '', '', '', collection, NULL::text, count(*)::text"
    " FROM passages GROUP BY collection ORDER BY collection";

static int
pg_acollections(sg_astore *as_, sg_aquery **qp, char *err, int errlen)
{
    pg_astore *as = (pg_astore *)as_;
    pg_aquery *q = calloc(1, sizeof(*q));

    if (q == NULL)
        return sg_store_err(err, errlen, SG_STORE_ENOMEM, "out of memory");
    q->ps.sql = collections_sql;
    return pg_astart(as, q, as->base.timeout_ms, qp, err, errlen);
}

static void
pg_aclose(sg_astore *as_)
{
    pg_astore *as = (pg_astore *)as_;

    for (int i = 0; i < as->n_pool; i++)
        PQfinish(as->pool[i].c);
    free(as->pool);
    free(as->conninfo);
    free(as);
}

static const sg_astore_vt pg_avt = {
    "postgres", pg_asearch, pg_aclose, pg_acollections,
};

int
sg_pg_aopen(const char *conninfo, sg_astore **out, char *err, int errlen)
{
    pg_astore *as = calloc(1, sizeof(*as));

    if (as == NULL || (as->conninfo = strdup(conninfo)) == NULL) {
        free(as);
        return sg_store_err(err, errlen, SG_STORE_ENOMEM, "out of memory");
    }
    as->base.vt = &pg_avt;
    *out = &as->base;
    return SG_STORE_OK;
}
