/*
 * The host collective: the ranks are threads of one process and exchange
 * through memory they can all read.  Each operation posts what this rank
 * offers in its slot, meets the others at a barrier, copies what it is
 * owed straight from the senders' buffers, and meets them again so that no
 * buffer is reused while another rank still reads it.
 *
 * What a slot keeps is the coll's own copy (counts, offsets, gathered
 * bytes), never a pointer to the caller's host arrays: after an abort a
 * rank returns at once and frees its arrays while a slower rank may still
 * be reading the slots.  The all-to-all's send buffer is the model's
 * working memory, alive until the group is freed.
 *
 * The barrier sleeps on a condition variable rather than spinning: ranks
 * share cores with their own worker threads (and, on a test machine, with
 * everything else).
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collective.h"

typedef struct {
    const char *send;           /* backend (= host) memory */
    size_t     *send_off;       /* [n], the coll's copy */
    size_t     *send_bytes;     /* [n] */
    void       *gather;         /* all_gather: this rank's bytes */
    size_t      gather_cap;
} slot_t;

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t  cv;
    int             n;
    int             arrived;
    uint64_t        gen;
    int             aborted;
    slot_t         *slot;       /* [n] */
} host_t;

static int
barrier(sg_coll *c, int rank)
{
    host_t  *h = c->impl;
    uint64_t gen;
    int      rc = 0;

    pthread_mutex_lock(&h->mu);
    if (h->aborted) {
        pthread_mutex_unlock(&h->mu);
        return -1;
    }
    gen = h->gen;
    if (++h->arrived == h->n) {
        h->arrived = 0;
        h->gen++;
        pthread_cond_broadcast(&h->cv);
    } else {
        while (h->gen == gen && !h->aborted)
            pthread_cond_wait(&h->cv, &h->mu);
        rc = h->gen != gen ? 0 : -1;
    }
    pthread_mutex_unlock(&h->mu);
    return rc;
}

static void
coll_abort(sg_coll *c, const char *why)
{
    host_t *h = c->impl;

    pthread_mutex_lock(&h->mu);
    if (!h->aborted && c->why[0] == '\0')
        snprintf(c->why, sizeof(c->why), "%s", why ? why : "aborted");
    h->aborted = 1;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
}

static void
coll_reset(sg_coll *c)
{
    host_t *h = c->impl;

    pthread_mutex_lock(&h->mu);
    h->aborted = 0;
    h->arrived = 0;
    c->why[0] = '\0';
    pthread_mutex_unlock(&h->mu);
}

static int
all_gather(sg_coll *c, int rank, const void *in, size_t bytes, void *out)
{
    host_t *h = c->impl;
    slot_t *s = &h->slot[rank];

    if (bytes > s->gather_cap) {
        void *p = realloc(s->gather, bytes);
        if (p == NULL) {
            coll_abort(c, "host collective: out of memory");
            return -1;
        }
        s->gather = p;
        s->gather_cap = bytes;
    }
    if (bytes)
        memcpy(s->gather, in, bytes);
    if (barrier(c, rank) != 0)
        return -1;
    for (int r = 0; r < h->n; r++) {
        if (bytes)
            memcpy((char *)out + (size_t)r * bytes, h->slot[r].gather, bytes);
    }
    return barrier(c, rank);
}

static int
all_to_all(sg_coll *c, int rank, const void *send, const size_t *send_off,
    const size_t *send_bytes, void *recv, const size_t *recv_off,
    const size_t *recv_bytes)
{
    host_t *h = c->impl;
    slot_t *s = &h->slot[rank];

    s->send = send;
    memcpy(s->send_off, send_off, sizeof(size_t) * h->n);
    memcpy(s->send_bytes, send_bytes, sizeof(size_t) * h->n);
    if (barrier(c, rank) != 0)
        return -1;
    for (int r = 0; r < h->n; r++) {
        const slot_t *from = &h->slot[r];
        size_t        bytes = from->send_bytes[rank];

        if (bytes != recv_bytes[r]) {
            char why[160];
            snprintf(why, sizeof(why), "all_to_all: rank %d sends %zu bytes "
                     "to rank %d, which expects %zu", r, bytes, rank,
                     recv_bytes[r]);
            coll_abort(c, why);
            return -1;
        }
        if (bytes)
            memcpy((char *)recv + recv_off[r],
                   from->send + from->send_off[rank], bytes);
    }
    return barrier(c, rank);
}

static void
coll_destroy(sg_coll *c)
{
    host_t *h;

    if (c == NULL)
        return;
    h = c->impl;
    if (h) {
        for (int r = 0; h->slot && r < h->n; r++) {
            free(h->slot[r].send_off);
            free(h->slot[r].send_bytes);
            free(h->slot[r].gather);
        }
        free(h->slot);
        pthread_cond_destroy(&h->cv);
        pthread_mutex_destroy(&h->mu);
        free(h);
    }
    free(c);
}

static const sg_coll_ops host_ops = {
    .barrier = barrier,
    .all_gather = all_gather,
    .all_to_all = all_to_all,
    .abort = coll_abort,
    .reset = coll_reset,
    .destroy = coll_destroy,
};

sg_coll *
sg_coll_host_new(int n_ranks)
{
    sg_coll *c;
    host_t  *h;

    if (n_ranks < 1)
        return NULL;
    c = calloc(1, sizeof(*c));
    h = calloc(1, sizeof(*h));
    if (c == NULL || h == NULL) {
        free(c);
        free(h);
        return NULL;
    }
    c->ops = &host_ops;
    c->name = "host";
    c->n_ranks = n_ranks;
    c->impl = h;
    h->n = n_ranks;
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->cv, NULL);
    h->slot = calloc(n_ranks, sizeof(slot_t));
    if (h->slot == NULL) {
        coll_destroy(c);
        return NULL;
    }
    for (int r = 0; r < n_ranks; r++) {
        h->slot[r].send_off = calloc(n_ranks, sizeof(size_t));
        h->slot[r].send_bytes = calloc(n_ranks, sizeof(size_t));
        if (h->slot[r].send_off == NULL || h->slot[r].send_bytes == NULL) {
            coll_destroy(c);
            return NULL;
        }
    }
    return c;
}
