/*
 * The engine: a thread that owns the model, the cache pool and the
 * scheduler.  Hosts talk to it through two mutex-guarded queues: requests
 * and cancellations in, events out.  After it queues events it writes the
 * eventfd, which stays readable until the host has drained every event,
 * so a host can sleep in its own event loop (epoll, nginx) and never
 * blocks on the engine.
 */
#define _GNU_SOURCE             /* pthread_setname_np */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "engine_opts.h"
#include "grammar.h"
#include "model/group.h"
#include "model/kv.h"
#include "ranks.h"
#include "sparsegate.h"
#include "util/mem.h"

typedef struct inbox_req {
    sg_request        r;          /* its arrays owned here, and a
                                     reference to its grammar */
    uint64_t          id;
    struct inbox_req *next;
} inbox_req;

/* One rank's model and cache pool, its step function's context. */
typedef struct rank_model {
    sg_model        *m;
    sg_kv_pool      *pool;
} rank_model;

struct sg_engine {
    sg_engine_opts   o;
    char            *model_dir;
    char            *devices;
    sg_group        *group;       /* the model on its devices (1 or more) */
    rank_model      *rank;        /* [n_ranks] */
    int              n_ranks;
    sg_model_info    info;
    sg_ranks        *ranks;       /* a scheduler per rank */
    sg_sched_opts    so;
    size_t           kv_block_bytes;

    pthread_t        thread;
    pthread_mutex_t  mu;
    pthread_cond_t   wake;        /* work for the engine thread */
    pthread_cond_t   ready;       /* start finished (started != 0) */
    int              started;     /* 1 running, -1 failed */
    char             start_err[256];
    int              stop;
    int              efd;

    /* in (under mu) */
    inbox_req       *in_head, *in_tail;
    int              n_inbox;
    uint64_t        *cancels;
    int              n_cancels, cap_cancels;
    uint64_t         next_id;
    uint64_t         refused;     /* refused at submit */

    /* out (under mu): a ring of events */
    sg_event        *out;
    size_t           out_head, out_n, out_cap;

    /* the engine thread's own */
    sg_event        *pending;
    size_t           pending_n, pending_cap;

    /* snapshot for submit and stats (under mu) */
    sg_engine_stats  snap;
    int              sched_busy;
};

/* Scheduler events go to a thread-local list first and are published in
 * one go after each step (one lock, one eventfd write). */
static void
collect_event(void *ctx, const sg_event *ev)
{
    sg_engine *e = ctx;

    if (e->pending_n == e->pending_cap) {
        size_t    cap = e->pending_cap ? e->pending_cap * 2 : 256;
        sg_event *p = realloc(e->pending, cap * sizeof(*p));
        if (p == NULL)
            return;           /* out of memory: the event is lost */
        e->pending = p;
        e->pending_cap = cap;
    }
    e->pending[e->pending_n++] = *ev;
}

static int
out_reserve(sg_engine *e, size_t extra)
{
    size_t    cap;
    sg_event *p;

    if (e->out_n + extra <= e->out_cap)
        return 0;
    cap = e->out_cap ? e->out_cap : 256;
    while (cap < e->out_n + extra)
        cap *= 2;
    p = malloc(cap * sizeof(*p));
    if (p == NULL)
        return -1;
    for (size_t i = 0; i < e->out_n; i++)
        p[i] = e->out[(e->out_head + i) % e->out_cap];
    free(e->out);
    e->out = p;
    e->out_cap = cap;
    e->out_head = 0;
    return 0;
}

/* Under mu: moves pending events to the ring and signals the fd. */
static void
publish(sg_engine *e)
{
    uint64_t one = 1;

    if (e->pending_n == 0 || out_reserve(e, e->pending_n) != 0)
        return;
    for (size_t i = 0; i < e->pending_n; i++)
        e->out[(e->out_head + e->out_n + i) % e->out_cap] = e->pending[i];
    e->out_n += e->pending_n;
    e->pending_n = 0;
    /* Cannot fail short of a counter overflow (2^64 - 1 writes). */
    if (write(e->efd, &one, sizeof(one)) != sizeof(one))
        return;
}

static void
free_inbox_req(inbox_req *q)
{
    free((void *)q->r.prompt);
    free((void *)q->r.stop_ids);
    free((void *)q->r.bias_ids);
    free((void *)q->r.bias_values);
    free((void *)q->r.script);
    sg_grammar_unref(q->r.grammar);
    free(q);
}

static int
step_model(void *ctx, sg_batch_item *items, int n, char *err, int errlen)
{
    rank_model *rm = ctx;

    return sg_forward(rm->m, rm->pool, items, n, NULL, err, errlen);
}

/* The ranks' steps on the group's rank threads (the MoE exchanges need
 * them all at once). */
static void
run_on_group(void *group, sg_rank_fn fn, void *ctx)
{
    sg_group_run(group, fn, ctx);
}

typedef struct {
    sg_engine *e;
    int        n_blocks;
} pool_ctx;

/* Each rank's pool is allocated on its own thread (a NUMA rank's memory
 * lands on its node). */
static void
alloc_pool(void *p, int r)
{
    pool_ctx   *pc = p;
    rank_model *rm = &pc->e->rank[r];

    rm->pool = sg_kv_pool_new(rm->m->backend, &rm->m->cfg, pc->n_blocks,
                              rm->m->num.kv_fp8);
}

static void
free_pool(void *p, int r)
{
    sg_engine *e = p;

    sg_kv_pool_free(e->rank[r].pool);
    e->rank[r].pool = NULL;
}

static int
load(sg_engine *e, char *err, int errlen)
{
    const sg_config *cfg;
    sg_model_opts    mo;
    size_t           per_block;
    size_t           n_blocks;
    int              dev[SG_MAX_RANKS], n = 1;
    void            *ctx[SG_MAX_RANKS];
    pool_ctx         pc;
    sg_model        *m0;

    sg_engine_model_opts(&e->o, &mo);
    dev[0] = e->o.device;
    if (e->devices
        && (n = sg_devices_parse(e->devices, dev, SG_MAX_RANKS, err,
                                 errlen)) < 0)
    {
        return -1;
    }
    if (sg_group_load(e->model_dir, &mo, dev, n, &e->group, err, errlen) != 0)
        return -1;
    e->n_ranks = n;
    e->rank = calloc(n, sizeof(*e->rank));
    if (e->rank == NULL) {
        snprintf(err, errlen, "engine: out of memory");
        return -1;
    }
    for (int r = 0; r < n; r++) {
        e->rank[r].m = sg_group_model(e->group, r);
        ctx[r] = &e->rank[r];
    }
    m0 = e->rank[0].m;
    cfg = &m0->cfg;
    sg_model_info_of(cfg, &e->info);
    per_block = sg_kv_bytes_per_token_layer(cfg, m0->num.kv_fp8)
                * (size_t)cfg->num_hidden_layers * SG_KV_BLOCK;
    n_blocks = e->o.kv_bytes / per_block;
    if (n_blocks < 1) {
        snprintf(err, errlen, "kv cache budget of %zu bytes holds no block "
                 "(one block of %d tokens takes %zu bytes)", e->o.kv_bytes,
                 SG_KV_BLOCK, per_block);
        return -1;
    }
    if (n_blocks > (1u << 30))
        n_blocks = 1u << 30;
    pc.e = e;
    pc.n_blocks = (int)n_blocks;
    sg_group_run(e->group, alloc_pool, &pc);
    for (int r = 0; r < n; r++) {
        if (e->rank[r].pool == NULL) {
            snprintf(err, errlen, "kv cache: cannot allocate %zu blocks (%zu "
                     "bytes) on the %s backend%s", n_blocks,
                     n_blocks * per_block, m0->backend->name,
                     n > 1 ? " of every rank" : "");
            return -1;
        }
    }
    e->kv_block_bytes = e->rank[0].pool->bytes_per_token * SG_KV_BLOCK;

    memset(&e->so, 0, sizeof(e->so));
    e->so.n_blocks = (int)n_blocks;
    e->so.max_running = e->o.max_running;
    e->so.max_queue = e->o.max_queue;
    e->so.max_context = m0->max_pos;
    if (e->o.max_context > 0 && e->o.max_context < e->so.max_context)
        e->so.max_context = e->o.max_context;
    e->so.step_tokens = e->o.step_tokens;
    e->so.prefill_chunk = e->o.prefill_chunk;
    e->so.prefix_cache = e->o.prefix_cache;
    e->so.vocab = cfg->vocab_size;
    e->so.eos_id = cfg->eos_token_id;
    sg_sched_opts_normalize(&e->so);
    e->ranks = sg_ranks_new(n, &e->so, step_model, ctx, collect_event, e,
                            err, errlen);
    return e->ranks ? 0 : -1;
}

static void
update_snapshot(sg_engine *e)
{
    sg_ranks_stats(e->ranks, &e->snap);
    e->snap.kv_block_bytes = e->kv_block_bytes;
    e->sched_busy = !sg_ranks_idle(e->ranks);
}

static void *
engine_main(void *arg)
{
    sg_engine *e = arg;
    char       err[256];
    int        ok = load(e, err, sizeof(err)) == 0;

    pthread_mutex_lock(&e->mu);
    if (!ok) {
        snprintf(e->start_err, sizeof(e->start_err), "%s", err);
        e->started = -1;
        pthread_cond_broadcast(&e->ready);
        pthread_mutex_unlock(&e->mu);
        return NULL;
    }
    update_snapshot(e);
    e->started = 1;
    pthread_cond_broadcast(&e->ready);

    for (;;) {
        inbox_req *in;
        uint64_t  *cancels;
        int        n_cancels, ran;

        while (!e->stop && e->n_inbox == 0 && e->n_cancels == 0
               && !e->sched_busy)
        {
            pthread_cond_wait(&e->wake, &e->mu);
        }
        if (e->stop)
            break;
        in = e->in_head;
        e->in_head = e->in_tail = NULL;
        /* Still counted as queued until the snapshot after the step. */
        e->snap.queued += e->n_inbox;
        e->n_inbox = 0;
        cancels = e->cancels;
        n_cancels = e->n_cancels;
        e->cancels = NULL;
        e->n_cancels = e->cap_cancels = 0;
        pthread_mutex_unlock(&e->mu);

        while (in) {
            inbox_req *next = in->next;
            if (sg_ranks_submit(e->ranks, &in->r, in->id, NULL, err,
                                sizeof(err)) != SG_OK)
            {
                sg_event ev;
                memset(&ev, 0, sizeof(ev));
                ev.kind = SG_EV_ERROR;
                ev.id = in->id;
                ev.user = in->r.user;
                ev.token = -1;
                ev.prompt_tokens = in->r.n_prompt;
                snprintf(ev.message, sizeof(ev.message), "%.*s",
                         (int)sizeof(ev.message) - 1, err);
                collect_event(e, &ev);
            }
            free_inbox_req(in);
            in = next;
        }
        for (int i = 0; i < n_cancels; i++)
            sg_ranks_cancel(e->ranks, cancels[i]);
        free(cancels);

        ran = sg_ranks_step(e->ranks, run_on_group, e->group);

        pthread_mutex_lock(&e->mu);
        publish(e);
        update_snapshot(e);
        if (ran == 0 && e->sched_busy && e->n_inbox == 0
            && e->n_cancels == 0 && !e->stop)
        {
            /* Requests wait for room that only a finishing request can
             * make; nothing runs, so no step can change that: sleep a
             * little rather than spin (should not happen: an idle pool
             * holds any admitted request). */
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 10 * 1000 * 1000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&e->wake, &e->mu, &ts);
        }
    }
    pthread_mutex_unlock(&e->mu);

    sg_ranks_cancel_all(e->ranks);
    pthread_mutex_lock(&e->mu);
    publish(e);
    update_snapshot(e);
    pthread_mutex_unlock(&e->mu);
    return NULL;
}

static void
engine_free(sg_engine *e)
{
    inbox_req *q;

    sg_ranks_free(e->ranks);
    if (e->group && e->rank)
        sg_group_run(e->group, free_pool, e);
    free(e->rank);
    sg_group_free(e->group);
    while ((q = e->in_head) != NULL) {
        e->in_head = q->next;
        free_inbox_req(q);
    }
    if (e->efd >= 0)
        close(e->efd);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->wake);
    pthread_cond_destroy(&e->ready);
    free(e->cancels);
    free(e->out);
    free(e->pending);
    free(e->model_dir);
    free(e->devices);
    free(e);
}

int
sg_engine_start(const sg_engine_opts *o, sg_engine **out, char *err,
    int errlen)
{
    sg_engine *e;
    sigset_t   all, old;
    int        rc;

    *out = NULL;
    if (o == NULL || o->model_dir == NULL) {
        snprintf(err, errlen, "engine: no model directory given");
        return -1;
    }
    e = calloc(1, sizeof(*e));
    if (e == NULL) {
        snprintf(err, errlen, "engine: out of memory");
        return -1;
    }
    e->o = *o;
    if (e->o.kv_bytes == 0)
        e->o.kv_bytes = SG_DEFAULT_KV_BYTES;
    e->model_dir = strdup(o->model_dir);
    e->o.model_dir = e->model_dir;
    e->devices = o->devices ? strdup(o->devices) : NULL;
    e->o.devices = e->devices;
    e->next_id = 1;
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->wake, NULL);
    pthread_cond_init(&e->ready, NULL);
    e->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (e->efd < 0 || e->model_dir == NULL) {
        snprintf(err, errlen, "engine: eventfd: %s", strerror(errno));
        engine_free(e);
        return -1;
    }
    /* The thread starts with every signal blocked: a signal meant for the
     * host (nginx's SIGTERM, SIGHUP, SIGCHLD...) must reach the host's
     * thread and interrupt its event loop, not land on the engine. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&e->thread, NULL, engine_main, e);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc == 0)
        pthread_setname_np(e->thread, "sg-engine");  /* for top -H, gdb */
    if (rc != 0) {
        snprintf(err, errlen, "engine: cannot start its thread: %s",
                 strerror(rc));
        engine_free(e);
        return -1;
    }
    pthread_mutex_lock(&e->mu);
    while (e->started == 0)
        pthread_cond_wait(&e->ready, &e->mu);
    pthread_mutex_unlock(&e->mu);
    if (e->started < 0) {
        pthread_join(e->thread, NULL);
        snprintf(err, errlen, "%s", e->start_err);
        engine_free(e);
        return -1;
    }
    *out = e;
    return 0;
}

int
sg_engine_fd(const sg_engine *e)
{
    return e->efd;
}

const sg_model_info *
sg_engine_model_info(const sg_engine *e)
{
    return &e->info;
}

int
sg_engine_submit(sg_engine *e, const sg_request *r, uint64_t *id, char *err,
    int errlen)
{
    inbox_req *q;
    int        rc;

    /* The limits are fixed after start: check on the caller's thread so
     * that a bad request gets its answer at once. */
    rc = sg_sched_validate(&e->so, r, err, errlen);
    if (rc != SG_OK) {
        pthread_mutex_lock(&e->mu);
        e->refused++;
        pthread_mutex_unlock(&e->mu);
        return rc;
    }
    q = calloc(1, sizeof(*q));
    if (q == NULL)
        goto oom;
    q->r = *r;
    q->r.grammar = sg_grammar_ref(r->grammar);
    if (sg_memdup(&q->r.prompt, r->prompt, r->n_prompt,
                   sizeof(int32_t))
        || sg_memdup(&q->r.stop_ids, r->stop_ids,
                      r->n_stop_ids, sizeof(int32_t))
        || sg_memdup(&q->r.bias_ids, r->bias_ids, r->n_bias,
                      sizeof(int32_t))
        || sg_memdup(&q->r.bias_values, r->bias_values,
                      r->n_bias, sizeof(float))
        || sg_memdup(&q->r.script, r->script, r->n_script,
                      sizeof(int32_t)))
        goto oom;

    pthread_mutex_lock(&e->mu);
    if (e->stop || e->n_inbox + e->snap.queued >= e->so.max_queue) {
        e->refused++;
        snprintf(err, errlen, e->stop ? "the engine is stopping"
                 : "the queue is full (%d requests waiting)",
                 e->n_inbox + e->snap.queued);
        pthread_mutex_unlock(&e->mu);
        free_inbox_req(q);
        return SG_EBUSY;
    }
    q->id = e->next_id++;
    if (e->in_tail)
        e->in_tail->next = q;
    else
        e->in_head = q;
    e->in_tail = q;
    e->n_inbox++;
    if (id)
        *id = q->id;
    pthread_cond_signal(&e->wake);
    pthread_mutex_unlock(&e->mu);
    return SG_OK;

oom:
    if (q)
        free_inbox_req(q);
    snprintf(err, errlen, "engine: out of memory");
    return SG_EINVAL;
}

void
sg_engine_cancel(sg_engine *e, uint64_t id)
{
    pthread_mutex_lock(&e->mu);
    if (e->n_cancels == e->cap_cancels) {
        int       cap = e->cap_cancels ? e->cap_cancels * 2 : 16;
        uint64_t *p = realloc(e->cancels, sizeof(uint64_t) * cap);
        if (p == NULL) {
            pthread_mutex_unlock(&e->mu);
            return;
        }
        e->cancels = p;
        e->cap_cancels = cap;
    }
    e->cancels[e->n_cancels++] = id;
    pthread_cond_signal(&e->wake);
    pthread_mutex_unlock(&e->mu);
}

int
sg_engine_drain(sg_engine *e, sg_event *ev, int max)
{
    int      n = 0;
    uint64_t v;

    pthread_mutex_lock(&e->mu);
    while (n < max && e->out_n > 0) {
        ev[n++] = e->out[e->out_head];
        e->out_head = (e->out_head + 1) % e->out_cap;
        e->out_n--;
    }
    /* Readable exactly while events wait: clear the counter only once
     * the ring is empty (the engine writes it under the same lock). */
    if (e->out_n == 0 && read(e->efd, &v, sizeof(v)) < 0) {
        /* EAGAIN: already clear */
    }
    pthread_mutex_unlock(&e->mu);
    return n;
}

void
sg_engine_get_stats(sg_engine *e, sg_engine_stats *st)
{
    pthread_mutex_lock(&e->mu);
    *st = e->snap;
    st->queued += e->n_inbox;
    st->requests_refused += e->refused;
    pthread_mutex_unlock(&e->mu);
}

void
sg_engine_stop(sg_engine *e)
{
    if (e == NULL)
        return;
    pthread_mutex_lock(&e->mu);
    e->stop = 1;
    pthread_cond_signal(&e->wake);
    pthread_mutex_unlock(&e->mu);
    pthread_join(e->thread, NULL);
    engine_free(e);
}
