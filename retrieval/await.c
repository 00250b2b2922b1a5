/*
 * poll(2) loop over one async query (see await.h).
 */
#include <poll.h>

#include "await.h"

int
sg_aquery_wait(sg_aquery *q, sg_passage_list *out, char *err, int errlen)
{
    while (!sg_aquery_done(q)) {
        struct pollfd pfd = { .fd = sg_aquery_fd(q) };
        int64_t       left = sg_aquery_deadline(q) - sg_now_ms();
        int           wants = sg_aquery_wants(q), ev = 0, n;

        if (wants == SG_AQ_WORK) {          /* no threads here: inline */
            sg_aquery_work(q);
            sg_aquery_step(q, SG_AQ_WORK);
            continue;
        }
        if (left < 0)
            left = 0;
        if (wants & SG_AQ_READ)
            pfd.events |= POLLIN;
        if (wants & SG_AQ_WRITE)
            pfd.events |= POLLOUT;
        n = pfd.fd >= 0 ? poll(&pfd, 1, (int)left) : 0;
        if (n > 0) {
            if (pfd.revents & (POLLIN | POLLHUP | POLLERR))
                ev |= SG_AQ_READ;
            if (pfd.revents & (POLLOUT | POLLERR))
                ev |= SG_AQ_WRITE;
        }
        sg_aquery_step(q, ev);
    }
    return sg_aquery_result(q, out, err, errlen);
}
