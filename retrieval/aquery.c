/*
 * The generic part of an async query (sg_aquery_* of store.h): its fd,
 * interest and deadline, its work for a thread, one step through the
 * implementation, the result moved out.  Each implementation fills the
 * struct and finishes it with sg_aquery_finish (store_impl.h).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_impl.h"

void
sg_aquery_finish(sg_aquery *q, int code, const char *fmt, ...)
{
    va_list ap;

    q->done = 1;
    q->code = code;
    q->fd = -1;
    q->wants = 0;
    q->err[0] = '\0';
    if (fmt) {
        va_start(ap, fmt);
        vsnprintf(q->err, sizeof(q->err), fmt, ap);
        va_end(ap);
    }
}

int
sg_aquery_fd(const sg_aquery *q)
{
    return q->done ? -1 : q->fd;
}

int
sg_aquery_wants(const sg_aquery *q)
{
    return q->done ? 0 : q->wants;
}

int64_t
sg_aquery_deadline(const sg_aquery *q)
{
    return q->deadline;
}

int
sg_aquery_done(const sg_aquery *q)
{
    return q->done;
}

void
sg_aquery_work(sg_aquery *q)
{
    if (!q->done && q->wants == SG_AQ_WORK && !q->worked) {
        if (q->work)
            q->work(q);
        q->worked = 1;
    }
}

int
sg_aquery_step(sg_aquery *q, int events)
{
    if (q->done)
        return SG_AQ_DONE;
    if (q->wants == SG_AQ_WORK) {
        if (!(events & SG_AQ_WORK))
            return SG_AQ_AGAIN;         /* the host runs the work first */
        sg_aquery_work(q);              /* unless it has */
        q->worked = 0;
        q->wants = 0;
    } else if (events == 0 && sg_now_ms() >= q->deadline) {
        /* The implementation drops the connection in release(). */
        sg_aquery_finish(q, SG_STORE_ETIMEOUT,
                         "store query timed out after the deadline");
        return SG_AQ_DONE;
    }
    q->step(q, events);
    if (!q->done && sg_now_ms() >= q->deadline)
        sg_aquery_finish(q, SG_STORE_ETIMEOUT,
                         "store query timed out after the deadline");
    return q->done ? SG_AQ_DONE : SG_AQ_AGAIN;
}

int
sg_aquery_result(sg_aquery *q, sg_passage_list *out, char *err, int errlen)
{
    if (!q->done)
        return sg_store_err(err, errlen, SG_STORE_EINVAL,
                            "query still running");
    if (q->code != SG_STORE_OK)
        return sg_store_err(err, errlen, q->code, "%s", q->err);
    for (size_t i = 0; i < q->res.n; i++) {
        if (out->n == out->cap) {
            size_t      cap = out->cap ? out->cap * 2 : 16;
            sg_passage *v;

            while (cap < out->n + q->res.n - i)
                cap *= 2;
            v = realloc(out->v, cap * sizeof(*v));
            if (v == NULL)
                return sg_store_err(err, errlen, SG_STORE_ENOMEM,
                                    "out of memory");
            out->v = v;
            out->cap = cap;
        }
        out->v[out->n++] = q->res.v[i];     /* moved, not copied */
    }
    free(q->res.v);
    memset(&q->res, 0, sizeof(q->res));
    return SG_STORE_OK;
}

void
sg_aquery_free(sg_aquery *q)
{
    if (q == NULL)
        return;
    if (q->release)
        q->release(q);
    sg_passage_list_free(&q->res);
    free(q);
}
