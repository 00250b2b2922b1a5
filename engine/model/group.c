/*
 * The device group: its ranks' threads, the models they load, the
 * collective they share, and the NUMA placement of host ranks.
 */
#define _GNU_SOURCE             /* pthread_setname_np */
#include <errno.h>
#include <numa.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sg_fault.h"
#include "group.h"

struct sg_group {
    int         n;
    sg_model  **m;                 /* [n] */
    sg_coll    *coll;
    int        *node;              /* [n] NUMA node or -1 */

    /* rank threads (n > 1) */
    pthread_t      *threads;
    int             n_threads;
    pthread_mutex_t mu;
    pthread_cond_t  work, done;
    uint64_t        gen;
    int             busy;
    int             stop;
    sg_rank_fn      fn;
    void           *ctx;
};

typedef struct {
    sg_group *g;
    int       rank;
} rank_arg;

int
sg_devices_parse(const char *s, int *ids, int max, char *err, int errlen)
{
    const char *p = s;
    int         n = 0, last = -1;

    if (s == NULL || *s == '\0') {
        snprintf(err, errlen, "device list: empty");
        return -1;
    }
    while (*p) {
        char *end;
        long  a, b;

        errno = 0;
        a = strtol(p, &end, 10);
        if (end == p || errno || a < 0 || a > 1023 || *p == '-' || *p == '+')
            goto bad;
        b = a;
        p = end;
        if (*p == '-') {
            p++;
            b = strtol(p, &end, 10);
            if (end == p || errno || b < a || b > 1023 || *p == '-'
                || *p == '+')
            {
                goto bad;
            }
            p = end;
        }
        if (a <= last)
            goto bad;
        for (long d = a; d <= b; d++) {
            if (n == max) {
                snprintf(err, errlen, "device list \"%s\": more than %d "
                         "devices", s, max);
                return -1;
            }
            ids[n++] = (int)d;
        }
        last = (int)b;
        if (*p == ',')
            p++;
        else if (*p != '\0')
            goto bad;
    }
    return n;
bad:
    snprintf(err, errlen, "device list \"%s\": expected ascending ids or "
             "ranges such as 0-7 or 0,2,4-5", s);
    return -1;
}

int
sg_group_size(const sg_group *g)
{
    return g->n;
}

sg_model *
sg_group_model(sg_group *g, int rank)
{
    return g->m[rank];
}

sg_coll *
sg_group_coll(sg_group *g)
{
    return g->coll;
}

int
sg_group_node(const sg_group *g, int rank)
{
    return g->node[rank];
}

static void *
rank_main(void *p)
{
    rank_arg *a = p;
    sg_group *g = a->g;
    int       rank = a->rank;
    uint64_t  seen = 0;

    free(a);
    sg_fault_engine_thread();
    pthread_mutex_lock(&g->mu);
    for (;;) {
        while (!g->stop && g->gen == seen)
            pthread_cond_wait(&g->work, &g->mu);
        if (g->stop)
            break;
        seen = g->gen;
        pthread_mutex_unlock(&g->mu);
        g->fn(g->ctx, rank);
        pthread_mutex_lock(&g->mu);
        if (--g->busy == 0)
            pthread_cond_signal(&g->done);
    }
    pthread_mutex_unlock(&g->mu);
    return NULL;
}

void
sg_group_run(sg_group *g, sg_rank_fn fn, void *ctx)
{
    if (g->n_threads == 0) {
        fn(ctx, 0);
        return;
    }
    pthread_mutex_lock(&g->mu);
    g->fn = fn;
    g->ctx = ctx;
    g->busy = g->n_threads;
    g->gen++;
    pthread_cond_broadcast(&g->work);
    while (g->busy > 0)
        pthread_cond_wait(&g->done, &g->mu);
    pthread_mutex_unlock(&g->mu);
    if (g->coll)
        g->coll->ops->reset(g->coll);
}

static int
start_threads(sg_group *g, char *err, int errlen)
{
    sigset_t all, old;

    g->threads = calloc(g->n, sizeof(pthread_t));
    if (g->threads == NULL) {
        snprintf(err, errlen, "device group: out of memory");
        return -1;
    }
    /* like the engine's own thread: a host's signals stay with the host */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    for (int r = 0; r < g->n; r++) {
        rank_arg *a = malloc(sizeof(*a));
        int       rc = a ? 0 : ENOMEM;
        char      name[32];

        if (a) {
            a->g = g;
            a->rank = r;
            rc = pthread_create(&g->threads[r], NULL, rank_main, a);
            if (rc != 0)
                free(a);
        }
        if (rc != 0) {
            pthread_sigmask(SIG_SETMASK, &old, NULL);
            snprintf(err, errlen, "device group: cannot start the thread of "
                     "rank %d: %s", r, strerror(rc));
            return -1;
        }
        snprintf(name, sizeof(name), "sg-rank%d", r);
        pthread_setname_np(g->threads[r], name);
        g->n_threads++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return 0;
}

/*
 * NUMA: on a machine with several nodes, host rank r runs on node
 * devices[r] % nodes; its thread binds itself before it loads, so the
 * backend's worker threads (created by it) inherit the binding and its
 * allocations (cache pool, working memory) are node-local by first touch,
 * and so are its experts' pages of the checkpoint's file mapping when it
 * is the first to read them.  One node: nothing is bound.
 */
static void
numa_place(sg_group *g, const char *backend, const int *devices)
{
    int nodes;

    for (int r = 0; r < g->n; r++)
        g->node[r] = -1;
    if (g->n < 2 || (backend && strcmp(backend, "cpu") != 0)
        || numa_available() < 0)
    {
        return;
    }
    nodes = numa_num_configured_nodes();
    if (nodes < 2)
        return;
    for (int r = 0; r < g->n; r++)
        g->node[r] = devices[r] % nodes;
}

/* Reads one byte of every page of the rank's experts from its own node:
 * the file's pages that are not cached yet are read into that node's
 * memory (first touch under the local policy); pages another rank or an
 * earlier run brought in stay where they are (best effort). */
static void
touch_expert(void *ctx, sg_tensor *t, int expert)
{
    long          page = sysconf(_SC_PAGESIZE);
    const char   *p = t->data;
    size_t        bytes = sg_tensor_bytes(t);
    volatile char sink = 0;

    (void)ctx;
    if (expert < 0 || p == NULL)
        return;
    for (size_t off = 0; off < bytes; off += (size_t)page)
        sink += p[off];
    (void)sink;
}

typedef struct {
    sg_group            *g;
    const char          *dir;
    const sg_model_opts *o;
    const int           *devices;
    int                  threads_per_rank;
    char               (*err)[256];
} load_ctx;

static void
load_rank(void *p, int r)
{
    load_ctx     *lc = p;
    sg_group     *g = lc->g;
    sg_model_opts o = *lc->o;

    if (g->node[r] >= 0) {
        numa_run_on_node(g->node[r]);
        numa_set_localalloc();
    }
    o.rank = r;
    o.n_ranks = g->n;
    o.device = lc->devices[r];
    o.n_threads = lc->threads_per_rank;
    if (sg_model_load(lc->dir, &o, &g->m[r], lc->err[r],
                      sizeof(lc->err[r])) != 0)
    {
        g->m[r] = NULL;
        return;
    }
    if (g->node[r] >= 0)
        sg_weights_visit(&g->m[r]->w, &g->m[r]->cfg, touch_expert, NULL);
}

/* The collective of a group of CUDA backends (kernels/cuda_nccl.cu,
 * opened with the CUDA backend: model/cuda_loader.c); host goes with it
 * for what the ranks exchange in host memory. */
sg_coll *sg_coll_nccl_new(sg_backend **b, int n, sg_coll *host, char *err,
    int errlen);

int
sg_group_load(const char *dir, const sg_model_opts *o, const int *devices,
    int n, sg_group **out, char *err, int errlen)
{
    sg_group *g;
    load_ctx  lc;
    int       total;

    *out = NULL;
    if (n < 1 || n > SG_MAX_RANKS) {
        snprintf(err, errlen, "device group: %d devices (1 to %d)", n,
                 SG_MAX_RANKS);
        return -1;
    }
    if (n > 1) {
        char      path[4200];
        sg_config c;

        /* one rank per expert at most: say so once, before any loading */
        snprintf(path, sizeof(path), "%s/config.json", dir);
        if (sg_config_load(path, &c, err, errlen) != 0)
            return -1;
        if (n > c.n_routed_experts) {
            snprintf(err, errlen, "a device group of %d: %s has %d routed "
                     "experts, at most one rank per expert", n, path,
                     c.n_routed_experts);
            return -1;
        }
    }
    g = calloc(1, sizeof(*g));
    if (g == NULL) {
        snprintf(err, errlen, "device group: out of memory");
        return -1;
    }
    g->n = n;
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->work, NULL);
    pthread_cond_init(&g->done, NULL);
    g->m = calloc(n, sizeof(*g->m));
    g->node = calloc(n, sizeof(int));
    memset(&lc, 0, sizeof(lc));
    lc.err = calloc(n, sizeof(*lc.err));
    if (g->m == NULL || g->node == NULL || lc.err == NULL) {
        snprintf(err, errlen, "device group: out of memory");
        goto fail;
    }
    numa_place(g, o->backend, devices);
    if (n > 1 && start_threads(g, err, errlen) != 0)
        goto fail;

    total = o->n_threads;
    if (total <= 0)
        total = (int)sysconf(_SC_NPROCESSORS_ONLN);
    lc.g = g;
    lc.dir = dir;
    lc.o = o;
    lc.devices = devices;
    lc.threads_per_rank = n > 1 ? (total / n > 0 ? total / n : 1)
                                : o->n_threads;
    sg_group_run(g, load_rank, &lc);
    for (int r = 0; r < n; r++) {
        if (g->m[r] == NULL) {
            if (n == 1)
                snprintf(err, errlen, "%s", lc.err[r]);
            else
                snprintf(err, errlen, "rank %d (device %d): %s", r,
                         devices[r], lc.err[r]);
            goto fail;
        }
    }

    if (n > 1) {
        const char *be = g->m[0]->backend->name;
        sg_coll    *host = sg_coll_host_new(n);

        if (host == NULL) {
            snprintf(err, errlen, "device group: out of memory");
            goto fail;
        }
        if (strcmp(be, "cpu") == 0) {
            g->coll = host;
        } else {
            sg_backend *b[SG_MAX_RANKS];
            for (int r = 0; r < n; r++)
                b[r] = g->m[r]->backend;
            /* takes host, also when it fails */
            g->coll = sg_coll_nccl_new(b, n, host, err, errlen);
            if (g->coll == NULL)
                goto fail;
        }
        for (int r = 0; r < n; r++)
            g->m[r]->coll = g->coll;
    }
    free(lc.err);
    *out = g;
    return 0;

fail:
    free(lc.err);
    sg_group_free(g);
    return -1;
}

static void
free_rank(void *p, int r)
{
    sg_group *g = p;

    sg_model_free(g->m[r]);
    g->m[r] = NULL;
}

void
sg_group_free(sg_group *g)
{
    if (g == NULL)
        return;
    /* each model is freed on the thread that made it (a CUDA backend's
     * device is current there) */
    if (g->coll)
        g->coll->ops->destroy(g->coll);
    g->coll = NULL;
    if (g->m)
        sg_group_run(g, free_rank, g);
    if (g->n_threads > 0) {
        pthread_mutex_lock(&g->mu);
        g->stop = 1;
        pthread_cond_broadcast(&g->work);
        pthread_mutex_unlock(&g->mu);
        for (int r = 0; r < g->n_threads; r++)
            pthread_join(g->threads[r], NULL);
    }
    free(g->threads);
    free(g->m);
    free(g->node);
    pthread_cond_destroy(&g->work);
    pthread_cond_destroy(&g->done);
    pthread_mutex_destroy(&g->mu);
    free(g);
}
