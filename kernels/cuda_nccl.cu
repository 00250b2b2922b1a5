/*
 * The collective of a device group of CUDA backends in one process
 * (model/collective.h), over NCCL: one communicator per GPU from
 * ncclCommInitAll, each rank's operations on its backend's stream, so an
 * exchange is ordered with the kernels around it and the host never waits
 * for it.
 *
 * all_to_all: the sizes first meet on the host (an all_gather through the
 * host collective the group passes in: the ranks are threads of this
 * process); every rank checks that all senders and receivers agree, so
 * all go on or all stop, and the all_gather is also the rendezvous: a rank
 * that failed before the exchange has aborted the group, the others'
 * all_gather fails, and no NCCL operation is posted that could wait on
 * the GPU for a partner that will not come.  Then one
 * ncclGroupStart / ncclSend + ncclRecv per peer / ncclGroupEnd.  barrier
 * and all_gather (host memory) are the host collective's.
 */
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"

extern "C" {
#include "model/collective.h"
}

typedef struct {
    int           n;
    ncclComm_t   *comm;           /* [n] */
    sg_backend  **b;              /* [n] */
    sg_coll      *host;           /* barrier, all_gather, aborts */
    size_t       *sizes;          /* per rank: its own [2n] sizes, then
                                     every rank's [n][2n] */
} nccl_impl;

static nccl_impl *
impl(sg_coll *c)
{
    return (nccl_impl *)c->impl;
}

/* The host collective's abort and reason are this one's. */
static void
coll_abort(sg_coll *c, const char *why)
{
    nccl_impl *x = impl(c);

    x->host->ops->abort(x->host, why);
    snprintf(c->why, sizeof(c->why), "%s", x->host->why);
}

static int
failed(sg_coll *c)
{
    snprintf(c->why, sizeof(c->why), "%s", impl(c)->host->why);
    return -1;
}

static int
coll_barrier(sg_coll *c, int rank)
{
    nccl_impl *x = impl(c);

    return x->host->ops->barrier(x->host, rank) == 0 ? 0 : failed(c);
}

static int
coll_all_gather(sg_coll *c, int rank, const void *in, size_t bytes,
    void *out)
{
    nccl_impl *x = impl(c);

    return x->host->ops->all_gather(x->host, rank, in, bytes, out) == 0
           ? 0 : failed(c);
}

static int
coll_all_to_all(sg_coll *c, int rank, const void *send,
    const size_t *send_off, const size_t *send_bytes, void *recv,
    const size_t *recv_off, const size_t *recv_bytes)
{
    nccl_impl   *x = impl(c);
    int          n = x->n;
    size_t      *mine = x->sizes + (size_t)rank * 3 * n * n;
    size_t      *all = mine + 2 * n;
    cuda_impl   *cb = cu(x->b[rank]);
    ncclResult_t r = ncclSuccess;
    char         why[160];

    /* every rank's sends and receives, checked by every rank alike: all
     * go on, or all stop, and none posts a receive nobody answers */
    memcpy(mine, send_bytes, sizeof(size_t) * n);
    memcpy(mine + n, recv_bytes, sizeof(size_t) * n);
    if (x->host->ops->all_gather(x->host, rank, mine, sizeof(size_t) * 2 * n,
                                 all) != 0)
        return failed(c);
    for (int s = 0; s < n; s++) {
        for (int d = 0; d < n; d++) {
            size_t sent = all[(size_t)s * 2 * n + d];
            size_t want = all[(size_t)d * 2 * n + n + s];
            if (sent != want) {
                snprintf(why, sizeof(why), "all_to_all: rank %d sends %zu "
                         "bytes to rank %d, which expects %zu", s, sent, d,
                         want);
                coll_abort(c, why);
                return -1;
            }
        }
    }
    cu_enter(x->b[rank]);
    if ((r = ncclGroupStart()) != ncclSuccess)
        goto fail;
    for (int p = 0; p < x->n && r == ncclSuccess; p++) {
        if (send_bytes[p])
            r = ncclSend((const char *)send + send_off[p], send_bytes[p],
                         ncclUint8, p, x->comm[rank], cb->stream);
        if (r == ncclSuccess && recv_bytes[p])
            r = ncclRecv((char *)recv + recv_off[p], recv_bytes[p],
                         ncclUint8, p, x->comm[rank], cb->stream);
    }
    if (r == ncclSuccess)
        r = ncclGroupEnd();
    else
        ncclGroupEnd();
    if (r == ncclSuccess)
        return 0;
fail:
    snprintf(why, sizeof(why), "nccl: rank %d: %s", rank,
             ncclGetErrorString(r));
    coll_abort(c, why);
    return -1;
}

static void
coll_reset(sg_coll *c)
{
    nccl_impl *x = impl(c);

    x->host->ops->reset(x->host);
    c->why[0] = '\0';
}

static void
coll_destroy(sg_coll *c)
{
    nccl_impl *x;

    if (c == NULL)
        return;
    x = impl(c);
    if (x) {
        for (int r = 0; x->comm && r < x->n; r++) {
            if (x->comm[r]) {
                cu_enter(x->b[r]);
                ncclCommDestroy(x->comm[r]);
            }
        }
        if (x->host)
            x->host->ops->destroy(x->host);
        free(x->comm);
        free(x->b);
        free(x->sizes);
        free(x);
    }
    free(c);
}

static const sg_coll_ops nccl_ops = {
    coll_barrier,
    coll_all_gather,
    coll_all_to_all,
    coll_abort,
    coll_reset,
    coll_destroy,
};

/*
 * The NCCL collective over n CUDA backends (rank r = b[r]'s device), with
 * host (the group's host collective, owned from here on) for what goes
 * through host memory.  NULL with a message.
 */
extern "C" sg_coll *
sg_coll_nccl_new(sg_backend **b, int n, sg_coll *host, char *err,
    int errlen)
{
    sg_coll     *c = (sg_coll *)calloc(1, sizeof(*c));
    nccl_impl   *x = (nccl_impl *)calloc(1, sizeof(*x));
    int         *dev = (int *)calloc(n, sizeof(int));
    ncclResult_t r;

    if (c == NULL || x == NULL || dev == NULL) {
        free(c);
        free(x);
        free(dev);
        if (host)
            host->ops->destroy(host);
        snprintf(err, errlen, "nccl: out of memory");
        return NULL;
    }
    c->ops = &nccl_ops;
    c->name = "nccl";
    c->n_ranks = n;
    c->impl = x;
    x->n = n;
    x->host = host;
    x->comm = (ncclComm_t *)calloc(n, sizeof(ncclComm_t));
    x->b = (sg_backend **)calloc(n, sizeof(sg_backend *));
    x->sizes = (size_t *)calloc((size_t)n * 3 * n * n, sizeof(size_t));
    if (host == NULL || x->comm == NULL || x->b == NULL || x->sizes == NULL) {
        snprintf(err, errlen, "nccl: out of memory");
        free(dev);
        coll_destroy(c);
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        if (b[i] == NULL || strcmp(b[i]->name, "cuda") != 0) {
            snprintf(err, errlen, "nccl: rank %d is not a CUDA backend", i);
            free(dev);
            coll_destroy(c);
            return NULL;
        }
        x->b[i] = b[i];
        dev[i] = cu(b[i])->device;
    }
    r = ncclCommInitAll(x->comm, n, dev);
    free(dev);
    if (r != ncclSuccess) {
        snprintf(err, errlen, "nccl: cannot join %d devices: %s", n,
                 ncclGetErrorString(r));
        memset(x->comm, 0, sizeof(ncclComm_t) * n);
        coll_destroy(c);
        return NULL;
    }
    return c;
}
