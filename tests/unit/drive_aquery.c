#include <poll.h>
#include <stdio.h>
#include <string.h>

#include "drive_aquery.h"

int
drive_aquery(sg_aquery *q, sg_passage_list *out, char *err, int errlen,
    double *max_step_ms)
{
    *max_step_ms = 0;
    while (!sg_aquery_done(q)) {
        struct pollfd pfd = { .fd = sg_aquery_fd(q) };
        int64_t       left = sg_aquery_deadline(q) - sg_now_ms();
        int           ev = 0;
        int64_t       t0;

        if (sg_aquery_wants(q) == SG_AQ_WORK) {
            /* a host's thread would run it: inline here, not timed as a
             * step (steps are what runs on the event loop) */
            sg_aquery_work(q);
            ev = SG_AQ_WORK;
        } else {
            pfd.events = (sg_aquery_wants(q) & SG_AQ_READ ? POLLIN : 0)
                         | (sg_aquery_wants(q) & SG_AQ_WRITE ? POLLOUT : 0);
            if (poll(&pfd, 1, left > 0 ? (int)left : 0) > 0)
                ev = (pfd.revents & (POLLIN | POLLHUP | POLLERR)
                      ? SG_AQ_READ : 0)
                     | (pfd.revents & POLLOUT ? SG_AQ_WRITE : 0);
        }
        t0 = sg_now_ms();
        sg_aquery_step(q, ev);
        if (sg_now_ms() - t0 > *max_step_ms)
            *max_step_ms = (double)(sg_now_ms() - t0);
    }
    return sg_aquery_result(q, out, err, errlen);
}

int
collections_hold(sg_astore *as, const char *coll, long n, char *err,
    int errlen)
{
    sg_aquery      *q;
    sg_passage_list l = { 0 };
    double          max_step;
    int             rc, found = 0;

    rc = sg_astore_collections(as, &q, err, errlen);
    if (rc != SG_STORE_OK)
        return 0;
    rc = drive_aquery(q, &l, err, errlen, &max_step);
    sg_aquery_free(q);
    for (size_t i = 0; rc == 0 && i < l.n; i++) {
        if (i > 0 && strcmp(l.v[i - 1].collection, l.v[i].collection) >= 0)
            rc = -1;                      /* not in byte order */
        if (strcmp(l.v[i].collection, coll) == 0
            && strcmp(l.v[i].id, coll) == 0 && l.v[i].score == (double)n)
            found = 1;
    }
    if (rc == 0 && !found)
        snprintf(err, errlen, "%s with %ld passages not among %zu "
                 "collections", coll, n, l.n);
    sg_passage_list_free(&l);
    return rc == 0 && found;
}
