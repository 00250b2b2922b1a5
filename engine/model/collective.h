/*
 * Collective operations between the ranks of a device group: the MoE
 * layer's dispatch and combine (all-to-all), the exchange of routing
 * decisions (all-gather) and a barrier.
 *
 * SPMD, as NCCL and MPI: every rank's thread calls every operation of a
 * step in the same order; a call returns once this rank's part is done.
 * Two implementations:
 *   coll_host.c      ranks are threads of one process on host memory (CPU
 *                    backends: the tests, and the NUMA nodes of a server);
 *   kernels/         NCCL between the GPUs of one process (CUDA backends),
 *                    opened at run time with the CUDA backend.
 * all_gather works on HOST memory (small metadata: row counts, expert
 * ids); all_to_all on BACKEND memory (the hidden states).
 *
 * A rank that fails mid-step (a backend error, out of memory) calls abort:
 * every rank blocked in, or later entering, an operation gets -1 until the
 * group driver calls reset between steps, so an error never leaves the
 * other ranks waiting for a partner that will not come.
 */
#ifndef SG_COLLECTIVE_H
#define SG_COLLECTIVE_H

#include <stddef.h>

typedef struct sg_coll sg_coll;

typedef struct sg_coll_ops {
    /* Returns once every rank has called it; 0, or -1 when aborted. */
    int  (*barrier)(sg_coll *c, int rank);
    /* out[r * bytes .. (r + 1) * bytes) = rank r's in, for every rank r
     * (host memory; bytes equal on every rank). */
    int  (*all_gather)(sg_coll *c, int rank, const void *in, size_t bytes,
                       void *out);
    /* Backend memory.  For every rank r: send_bytes[r] bytes at
     * send + send_off[r] go to rank r, and recv_bytes[r] bytes from rank r
     * land at recv + recv_off[r].  What r sends to this rank must be what
     * this rank expects from r (the caller derives both sides from the
     * same all_gathered counts); a mismatch aborts the group. */
    int  (*all_to_all)(sg_coll *c, int rank, const void *send,
                       const size_t *send_off, const size_t *send_bytes,
                       void *recv, const size_t *recv_off,
                       const size_t *recv_bytes);
    /* Fails the current step on every rank (any thread; the first reason
     * is kept in c->why). */
    void (*abort)(sg_coll *c, const char *why);
    /* Clears an abort; called between steps, while no rank is inside. */
    void (*reset)(sg_coll *c);
    void (*destroy)(sg_coll *c);
} sg_coll_ops;

struct sg_coll {
    const sg_coll_ops *ops;
    const char        *name;      /* "host", "nccl" */
    int                n_ranks;
    char               why[160];  /* the first abort's reason */
    void              *impl;
};

/* N ranks as threads of this process, exchanging through host memory;
 * NULL when out of memory. */
sg_coll *sg_coll_host_new(int n_ranks);

#endif
