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
#include "sg_fault.h"
#include "sparsegate.h"
#include "util/mem.h"

/*
 * A request from submit until the host has drained its last event.  It is
 * allocated whole at submit, with room for that last event, so a DONE or
 * ERROR can always be delivered: nothing the engine must allocate later
 * stands between a request and its end.  It is on one of the lists below
 * at a time (inbox, then the scheduler, then pending finals, then the out
 * queue), and on the live list throughout, where cancel and pause find it
 * without allocating.
 */
typedef struct job job;
struct job {
    uint64_t      id;
    void         *user;          /* the host's, in every event */
    sg_request    r;             /* its arrays and salt owned here, and a
                                    reference to its grammar, until the
                                    scheduler has its copies */
    sg_event      last;          /* its DONE or ERROR */
    uint64_t      after;         /* pending: tokens before it; out: ring
                                    events that go out before it */
    unsigned      submitted:1;   /* the scheduler has it (or refused it) */
    unsigned      cancel:1;      /* the host asked (under mu) */
    unsigned      paused:1;      /* the host's wish (under mu) */
    unsigned      in_ctl:1;      /* on the control list */
    unsigned      oom:1;         /* a token could not be queued */
    unsigned      out:1;         /* its last event is in the out queue */
    job          *next;          /* inbox / pending finals / out queue */
    job          *ctl_next;      /* control list (under mu) */
    job          *oom_next;      /* the engine thread's */
    job          *live_prev, *live_next;
};

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
    job             *in_head, *in_tail;
    int              n_inbox;
    job             *ctl;         /* jobs to cancel, pause or resume */
    job             *live;        /* every job not yet drained */
    uint64_t         next_id;
    uint64_t         refused;     /* refused at submit */

    /* out (under mu): a ring of token events, and the last events of
     * requests, each after the ring events that precede it */
    sg_event        *out;
    size_t           out_head, out_n, out_cap;
    uint64_t         out_pushed, out_popped;
    job             *fin_head, *fin_tail;

    /* the engine thread's own: events of the step, published at its end */
    sg_event        *pending;
    size_t           pending_n, pending_cap;
    job             *pfin_head, *pfin_tail;
    job             *oom;         /* jobs whose tokens could not be queued */

    /* snapshot for submit and stats (under mu) */
    sg_engine_stats  snap;
    int              runnable;    /* the scheduler has work it can step */
    int              stalled;     /* the last step ran nothing */
};

static void
fin_append(job **head, job **tail, job *j)
{
    j->next = NULL;
    if (*tail)
        (*tail)->next = j;
    else
        *head = j;
    *tail = j;
}

/* The request's last event, kept in its job (its room was reserved at
 * submit) until the step's events are published. */
static void
collect_last(sg_engine *e, job *j, const sg_event *ev)
{
    j->last = *ev;
    j->last.user = j->user;
    if (j->oom) {
        /* tokens were lost: the request fails, and says why */
        j->last.kind = SG_EV_ERROR;
        j->last.error = SG_ENOMEM;
        snprintf(j->last.message, sizeof(j->last.message),
                 "out of memory: the engine could not queue this request's "
                 "tokens");
    }
    j->after = e->pending_n;
    fin_append(&e->pfin_head, &e->pfin_tail, j);
}

/* Scheduler events go to the engine thread's lists first and are published
 * in one go after each step (one lock, one eventfd write).  A token that
 * cannot be queued fails its request (cancelled after the step, its last
 * event an out-of-memory error), rather than going missing. */
static void
collect_event(void *ctx, const sg_event *ev)
{
    sg_engine *e = ctx;
    job       *j = ev->user;

    if (ev->kind != SG_EV_TOKEN) {
        collect_last(e, j, ev);
        return;
    }
    if (j->oom)
        return;
    if (e->pending_n == e->pending_cap) {
        size_t    cap = e->pending_cap ? e->pending_cap * 2 : 256;
        sg_event *p = realloc(e->pending, cap * sizeof(*p));
        if (p == NULL) {
            j->oom = 1;
            j->oom_next = e->oom;
            e->oom = j;
            return;
        }
        e->pending = p;
        e->pending_cap = cap;
    }
    e->pending[e->pending_n] = *ev;
    e->pending[e->pending_n].user = j->user;
    e->pending_n++;
}

/* Room in the ring for extra more events, as much as memory allows. */
static void
out_reserve(sg_engine *e, size_t extra)
{
    size_t    cap;
    sg_event *p;

    if (e->out_n + extra <= e->out_cap)
        return;
    cap = e->out_cap ? e->out_cap : 256;
    while (cap < e->out_n + extra)
        cap *= 2;
    p = malloc(cap * sizeof(*p));
    if (p == NULL)
        return;
    for (size_t i = 0; i < e->out_n; i++)
        p[i] = e->out[(e->out_head + i) % e->out_cap];
    free(e->out);
    e->out = p;
    e->out_cap = cap;
    e->out_head = 0;
}

/* Under mu: moves the step's events to the out queue and signals the fd.
 * What the ring has no room for stays pending (with the last events that
 * follow it) and goes at the next publish: late, never lost. */
static void
publish(sg_engine *e)
{
    uint64_t one = 1, before = e->out_pushed;
    size_t   moved;
    int      any = 0;

    out_reserve(e, e->pending_n);
    moved = e->out_cap - e->out_n;
    if (moved > e->pending_n)
        moved = e->pending_n;
    for (size_t i = 0; i < moved; i++)
        e->out[(e->out_head + e->out_n + i) % e->out_cap] = e->pending[i];
    e->out_n += moved;
    e->out_pushed += moved;
    e->pending_n -= moved;
    if (e->pending_n > 0)
        memmove(e->pending, e->pending + moved,
                e->pending_n * sizeof(*e->pending));
    while (e->pfin_head != NULL && e->pfin_head->after <= moved) {
        job *j = e->pfin_head;

        e->pfin_head = j->next;
        if (e->pfin_head == NULL)
            e->pfin_tail = NULL;
        j->after += before;
        j->out = 1;
        fin_append(&e->fin_head, &e->fin_tail, j);
        any = 1;
    }
    for (job *j = e->pfin_head; j; j = j->next)
        j->after -= moved;
    /* Cannot fail short of a counter overflow (2^64 - 1 writes). */
    if ((moved > 0 || any) && write(e->efd, &one, sizeof(one)) != sizeof(one))
        return;
}

static void
free_job_request(job *j)
{
    free((void *)j->r.prompt);
    free((void *)j->r.stop_ids);
    free((void *)j->r.bias_ids);
    free((void *)j->r.bias_values);
    free((void *)j->r.script);
    free((void *)j->r.cache_salt);
    sg_grammar_unref(j->r.grammar);
    j->r.prompt = NULL;
    j->r.stop_ids = NULL;
    j->r.bias_ids = NULL;
    j->r.bias_values = NULL;
    j->r.script = NULL;
    j->r.cache_salt = NULL;
    j->r.grammar = NULL;
}

static void
free_job(job *j)
{
    free_job_request(j);
    free(j);
}

/* Under mu. */
static void
live_remove(sg_engine *e, job *j)
{
    if (j->live_prev)
        j->live_prev->live_next = j->live_next;
    else
        e->live = j->live_next;
    if (j->live_next)
        j->live_next->live_prev = j->live_prev;
    if (j->in_ctl) {
        job **l = &e->ctl;
        while (*l != j)
            l = &(*l)->ctl_next;
        *l = j->ctl_next;
        j->in_ctl = 0;
    }
}

/* Under mu: the job of a request whose last event is not out yet. */
static job *
live_find(sg_engine *e, uint64_t id)
{
    for (job *j = e->live; j; j = j->live_next)
        if (j->id == id)
            return j->out ? NULL : j;
    return NULL;
}

static int
step_model(void *ctx, sg_batch_item *items, int n, char *err, int errlen)
{
    rank_model *rm = ctx;
    int         rc = sg_forward(rm->m, rm->pool, items, n, NULL, err, errlen);

    return rc == SG_FORWARD_ENOMEM ? SG_ENOMEM : rc;
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
    e->runnable = sg_ranks_runnable(e->ranks);
}

/* Hands the taken inbox to the scheduler; a request it refuses (out of
 * memory) ends at once with an error. */
static void
submit_inbox(sg_engine *e, job *in)
{
    char err[160];

    while (in) {
        job *next = in->next;
        int  rc;

        in->r.user = in;
        rc = sg_ranks_submit(e->ranks, &in->r, in->id, NULL, err,
                             sizeof(err));
        in->submitted = 1;
        free_job_request(in);
        if (rc != SG_OK) {
            sg_event ev;
            memset(&ev, 0, sizeof(ev));
            ev.kind = SG_EV_ERROR;
            ev.id = in->id;
            ev.token = -1;
            ev.prompt_tokens = in->r.n_prompt;
            ev.error = rc == SG_ENOMEM ? SG_ENOMEM : SG_EENGINE;
            snprintf(ev.message, sizeof(ev.message), "%.*s",
                     (int)sizeof(ev.message) - 1, err);
            collect_last(e, in, &ev);
        }
        in = next;
    }
}

/* Under mu: the host's cancels, pauses and resumes of submitted requests
 * (one still in the inbox keeps its place on the list for the next
 * round). */
static void
apply_controls(sg_engine *e)
{
    job **l = &e->ctl;

    while (*l != NULL) {
        job *j = *l;
        if (!j->submitted) {
            l = &j->ctl_next;
            continue;
        }
        *l = j->ctl_next;
        j->in_ctl = 0;
        if (j->cancel)
            sg_ranks_cancel(e->ranks, j->id);
        else
            sg_ranks_pause(e->ranks, j->id, j->paused);
    }
}

/* After a step: requests whose tokens could not be queued are cancelled;
 * their last event says out of memory (collect_last). */
static void
fail_lost_tokens(sg_engine *e)
{
    while (e->oom) {
        job *j = e->oom;
        e->oom = j->oom_next;
        sg_ranks_cancel(e->ranks, j->id);
    }
}

static void *
engine_main(void *arg)
{
    sg_engine *e = arg;
    char       err[256];
    int        ok;

    sg_fault_engine_thread();
    ok = load(e, err, sizeof(err)) == 0;

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
        job *in;
        int  ran;

        for (;;) {
            if (e->stop || e->in_head || e->ctl
                || (e->runnable && !e->stalled))
                break;
            if (e->pending_n > 0 || e->pfin_head) {
                /* the ring had no room: try again soon (the host drains) */
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                ts.tv_nsec += 10 * 1000 * 1000;
                if (ts.tv_nsec >= 1000000000) {
                    ts.tv_sec++;
                    ts.tv_nsec -= 1000000000;
                }
                pthread_cond_timedwait(&e->wake, &e->mu, &ts);
                break;
            }
            /* nothing runs and nothing can change that but the host (a
             * request, a cancel, a resume): requests may wait for blocks
             * that paused sequences hold */
            pthread_cond_wait(&e->wake, &e->mu);
        }
        if (e->stop)
            break;
        in = e->in_head;
        e->in_head = e->in_tail = NULL;
        /* Still counted as queued until the snapshot after the step. */
        e->snap.queued += e->n_inbox;
        e->n_inbox = 0;
        pthread_mutex_unlock(&e->mu);

        submit_inbox(e, in);

        pthread_mutex_lock(&e->mu);
        apply_controls(e);
        pthread_mutex_unlock(&e->mu);

        ran = sg_ranks_step(e->ranks, run_on_group, e->group);
        fail_lost_tokens(e);

        pthread_mutex_lock(&e->mu);
        publish(e);
        update_snapshot(e);
        e->stalled = ran == 0;
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
    job *j;

    sg_ranks_free(e->ranks);
    if (e->group && e->rank)
        sg_group_run(e->group, free_pool, e);
    free(e->rank);
    sg_group_free(e->group);
    /* every job not drained, wherever it is */
    while ((j = e->live) != NULL) {
        e->live = j->live_next;
        free_job(j);
    }
    if (e->efd >= 0)
        close(e->efd);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->wake);
    pthread_cond_destroy(&e->ready);
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
    job    *j;
    int     rc;
    size_t  salt = r->cache_salt ? r->cache_salt_len : 0;

    /* The limits are fixed after start: check on the caller's thread so
     * that a bad request gets its answer at once. */
    rc = sg_sched_validate(&e->so, r, err, errlen);
    if (rc != SG_OK) {
        pthread_mutex_lock(&e->mu);
        e->refused++;
        pthread_mutex_unlock(&e->mu);
        return rc;
    }
    /* Everything the request will need from here to its last event. */
    j = calloc(1, sizeof(*j));
    if (j == NULL)
        goto oom;
    j->r = *r;
    j->user = r->user;
    /* no array of the caller's is kept: each one copied, or NULL */
    j->r.prompt = j->r.stop_ids = j->r.bias_ids = j->r.script = NULL;
    j->r.bias_values = NULL;
    j->r.cache_salt = NULL;
    j->r.cache_salt_len = salt;
    j->r.grammar = sg_grammar_ref(r->grammar);
    if (sg_memdup(&j->r.prompt, r->prompt, r->n_prompt, sizeof(int32_t))
        || sg_memdup(&j->r.stop_ids, r->stop_ids, r->n_stop_ids,
                     sizeof(int32_t))
        || sg_memdup(&j->r.bias_ids, r->bias_ids, r->n_bias,
                     sizeof(int32_t))
        || sg_memdup(&j->r.bias_values, r->bias_values, r->n_bias,
                     sizeof(float))
        || sg_memdup(&j->r.script, r->script, r->n_script, sizeof(int32_t))
        || sg_memdup(&j->r.cache_salt, r->cache_salt, (int)salt, 1))
        goto oom;

    pthread_mutex_lock(&e->mu);
    if (e->stop || e->n_inbox + e->snap.queued >= e->so.max_queue) {
        e->refused++;
        snprintf(err, errlen, e->stop ? "the engine is stopping"
                 : "the queue is full (%d requests waiting)",
                 e->n_inbox + e->snap.queued);
        pthread_mutex_unlock(&e->mu);
        free_job(j);
        return SG_EBUSY;
    }
    j->id = e->next_id++;
    fin_append(&e->in_head, &e->in_tail, j);
    e->n_inbox++;
    j->live_next = e->live;
    if (e->live)
        e->live->live_prev = j;
    e->live = j;
    if (id)
        *id = j->id;
    pthread_cond_signal(&e->wake);
    pthread_mutex_unlock(&e->mu);
    return SG_OK;

oom:
    if (j)
        free_job(j);
    pthread_mutex_lock(&e->mu);
    e->refused++;
    pthread_mutex_unlock(&e->mu);
    snprintf(err, errlen, "engine: out of memory for a request of %d prompt "
             "tokens", r->n_prompt);
    return SG_ENOMEM;
}

/* Under mu: puts a job on the control list (no allocation: the list runs
 * through the jobs). */
static void
control(sg_engine *e, job *j)
{
    if (!j->in_ctl) {
        j->in_ctl = 1;
        j->ctl_next = e->ctl;
        e->ctl = j;
    }
    pthread_cond_signal(&e->wake);
}

void
sg_engine_cancel(sg_engine *e, uint64_t id)
{
    job *j;

    pthread_mutex_lock(&e->mu);
    j = live_find(e, id);
    if (j != NULL && !j->cancel) {
        j->cancel = 1;
        control(e, j);
    }
    pthread_mutex_unlock(&e->mu);
}

void
sg_engine_pause(sg_engine *e, uint64_t id, int paused)
{
    job *j;

    pthread_mutex_lock(&e->mu);
    j = live_find(e, id);
    if (j != NULL && !j->cancel && j->paused != (paused != 0)) {
        j->paused = paused != 0;
        control(e, j);
    }
    pthread_mutex_unlock(&e->mu);
}

int
sg_engine_drain(sg_engine *e, sg_event *ev, int max)
{
    int      n = 0;
    uint64_t v;

    pthread_mutex_lock(&e->mu);
    while (n < max) {
        job *j = e->fin_head;

        if (j != NULL && j->after <= e->out_popped) {
            /* a request's last event, after all of its tokens */
            ev[n++] = j->last;
            e->fin_head = j->next;
            if (e->fin_head == NULL)
                e->fin_tail = NULL;
            live_remove(e, j);
            free_job(j);
        } else if (e->out_n > 0) {
            ev[n++] = e->out[e->out_head];
            e->out_head = (e->out_head + 1) % e->out_cap;
            e->out_n--;
            e->out_popped++;
        } else {
            break;
        }
    }
    /* Readable exactly while events wait: clear the counter only once
     * the queue is empty (the engine writes it under the same lock). */
    if (e->out_n == 0 && e->fin_head == NULL
        && read(e->efd, &v, sizeof(v)) < 0) {
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
