/*
 * Scheduling over the ranks of a device group: placement, lockstep steps,
 * events gathered per rank and delivered in rank order.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ranks.h"

typedef struct rank_t {
    struct sg_ranks *R;
    int              r;
    sg_sched        *sched;
    void            *step_ctx;
    uint64_t         calls;       /* step function calls */
    int              ran;         /* tokens of the last step */
    sg_event        *ev;          /* events since the last flush */
    size_t           n_ev, cap_ev;
    int              ev_lost;
} rank_t;

struct sg_ranks {
    int         n;
    rank_t     *rk;
    sg_step_fn  step;
    sg_emit_fn  emit;
    void       *emit_ctx;
};

/* A scheduler's events wait in its rank's list: the rank's thread emits
 * them while the other ranks' threads emit theirs. */
static void
rank_emit(void *ctx, const sg_event *ev)
{
    rank_t *k = ctx;

    if (k->n_ev == k->cap_ev) {
        size_t    cap = k->cap_ev ? k->cap_ev * 2 : 64;
        sg_event *p = realloc(k->ev, cap * sizeof(*p));
        if (p == NULL) {
            k->ev_lost++;
            return;
        }
        k->ev = p;
        k->cap_ev = cap;
    }
    k->ev[k->n_ev++] = *ev;
}

static int
rank_step(void *ctx, sg_batch_item *items, int n, char *err, int errlen)
{
    rank_t *k = ctx;

    k->calls++;
    return k->R->step(k->step_ctx, items, n, err, errlen);
}

static void
flush(sg_ranks *R)
{
    for (int r = 0; r < R->n; r++) {
        rank_t *k = &R->rk[r];
        for (size_t i = 0; i < k->n_ev; i++)
            R->emit(R->emit_ctx, &k->ev[i]);
        k->n_ev = 0;
    }
}

sg_ranks *
sg_ranks_new(int n, const sg_sched_opts *o, sg_step_fn step,
    void *const *step_ctx, sg_emit_fn emit, void *emit_ctx, char *err,
    int errlen)
{
    sg_ranks     *R = calloc(1, sizeof(*R));
    sg_sched_opts so = *o;

    if (R == NULL || (R->rk = calloc(n, sizeof(rank_t))) == NULL) {
        free(R);
        snprintf(err, errlen, "ranks: out of memory");
        return NULL;
    }
    R->n = n;
    R->step = step;
    R->emit = emit;
    R->emit_ctx = emit_ctx;
    so.lockstep = n > 1;
    for (int r = 0; r < n; r++) {
        rank_t *k = &R->rk[r];

        k->R = R;
        k->r = r;
        k->step_ctx = step_ctx[r];
        k->sched = sg_sched_new(&so, rank_step, k, rank_emit, k, err, errlen);
        if (k->sched == NULL) {
            sg_ranks_free(R);
            return NULL;
        }
    }
    return R;
}

void
sg_ranks_free(sg_ranks *R)
{
    if (R == NULL)
        return;
    for (int r = 0; r < R->n; r++) {
        sg_sched_free(R->rk[r].sched);
        free(R->rk[r].ev);
    }
    free(R->rk);
    free(R);
}

int
sg_ranks_count(const sg_ranks *R)
{
    return R->n;
}

sg_sched *
sg_ranks_sched(sg_ranks *R, int rank)
{
    return R->rk[rank].sched;
}

int
sg_ranks_place(sg_ranks *R, const int32_t *prompt, int n_prompt,
    const void *salt, size_t salt_len)
{
    int     best = -1;
    int64_t best_cost = 0;

    for (int r = 0; r < R->n; r++) {
        sg_sched *s = R->rk[r].sched;
        int64_t   cost;
        int       shared;

        if (R->n > 1 && sg_sched_queue_full(s))
            continue;
        shared = sg_sched_prefix_blocks(s, prompt, n_prompt, salt, salt_len);
        cost = sg_sched_backlog(s)
               + 2 * (n_prompt - (int64_t)shared * SG_KV_BLOCK);
        if (best < 0 || cost < best_cost) {
            best = r;
            best_cost = cost;
        }
    }
    return best;
}

int
sg_ranks_submit(sg_ranks *R, const sg_request *q, uint64_t id, int *rank,
    char *err, int errlen)
{
    int r = q->prompt && q->n_prompt > 0
            ? sg_ranks_place(R, q->prompt, q->n_prompt, q->cache_salt,
                             q->cache_salt_len) : 0;
    int rc;

    if (r < 0) {
        /* every queue full: the first scheduler says so in its words */
        r = 0;
    }
    if (rank)
        *rank = r;
    rc = sg_sched_submit(R->rk[r].sched, q, id, err, errlen);
    flush(R);
    return rc;
}

int
sg_ranks_cancel(sg_ranks *R, uint64_t id)
{
    int rc = -1;

    for (int r = 0; r < R->n && rc != 0; r++)
        rc = sg_sched_cancel(R->rk[r].sched, id);
    flush(R);
    return rc;
}

void
sg_ranks_cancel_all(sg_ranks *R)
{
    for (int r = 0; r < R->n; r++)
        sg_sched_cancel_all(R->rk[r].sched);
    flush(R);
}

int
sg_ranks_pause(sg_ranks *R, uint64_t id, int paused)
{
    int rc = -1;

    for (int r = 0; r < R->n && rc != 0; r++)
        rc = sg_sched_pause(R->rk[r].sched, id, paused);
    return rc;
}

int
sg_ranks_runnable(const sg_ranks *R)
{
    for (int r = 0; r < R->n; r++) {
        if (sg_sched_runnable(R->rk[r].sched))
            return 1;
    }
    return 0;
}

int
sg_ranks_idle(const sg_ranks *R)
{
    for (int r = 0; r < R->n; r++) {
        if (!sg_sched_idle(R->rk[r].sched))
            return 0;
    }
    return 1;
}

static void
step_one(void *ctx, int r)
{
    sg_ranks *R = ctx;

    R->rk[r].ran = sg_sched_step(R->rk[r].sched);
}

int
sg_ranks_step(sg_ranks *R, sg_ranks_exec_fn exec, void *exec_ctx)
{
    int ran = 0;

    if (sg_ranks_idle(R))
        return 0;
    exec(exec_ctx, step_one, R);
    for (int r = 0; r < R->n; r++)
        ran += R->rk[r].ran;
    flush(R);
    return ran;
}

void
sg_ranks_stats(const sg_ranks *R, sg_engine_stats *st)
{
    memset(st, 0, sizeof(*st));
    for (int r = 0; r < R->n; r++) {
        sg_engine_stats one;

        sg_sched_stats(R->rk[r].sched, &one);
        st->queued += one.queued;
        st->running += one.running;
        st->kv_blocks_total += one.kv_blocks_total;
        st->kv_blocks_used += one.kv_blocks_used;
        st->kv_blocks_cached += one.kv_blocks_cached;
        st->paused += one.paused;
        st->cache_namespaces += one.cache_namespaces;
        st->prompt_tokens += one.prompt_tokens;
        st->cached_tokens += one.cached_tokens;
        st->generated_tokens += one.generated_tokens;
        st->requests_done += one.requests_done;
        st->requests_cancelled += one.requests_cancelled;
        st->requests_refused += one.requests_refused;
        st->kv_blocks_evicted += one.kv_blocks_evicted;
    }
}

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

int
sg_ranks_check(const sg_ranks *R, char *err, int errlen)
{
    uint64_t *ids = NULL;
    size_t    n = 0, cap = 0;
    int       rc = -1;

    for (int r = 0; r < R->n; r++) {
        const rank_t *k = &R->rk[r];
        char          e[200];
        int           m;

        if (sg_sched_check(k->sched, e, sizeof(e)) != 0) {
            snprintf(err, errlen, "rank %d: %s", r, e);
            goto out;
        }
        if (k->calls != R->rk[0].calls) {
            snprintf(err, errlen, "rank %d stepped %llu times, rank 0 %llu: "
                     "not in lockstep", r, (unsigned long long)k->calls,
                     (unsigned long long)R->rk[0].calls);
            goto out;
        }
        if (k->ev_lost) {
            snprintf(err, errlen, "rank %d: %d events lost", r, k->ev_lost);
            goto out;
        }
        m = sg_sched_ids(k->sched, NULL, 0);
        if (n + m > cap) {
            uint64_t *p;
            cap = (n + m) * 2 + 16;
            p = realloc(ids, cap * sizeof(*ids));
            if (p == NULL) {
                snprintf(err, errlen, "check: out of memory");
                goto out;
            }
            ids = p;
        }
        n += sg_sched_ids(k->sched, ids + n, m);
    }
    if (n > 1)
        qsort(ids, n, sizeof(*ids), cmp_u64);
    for (size_t i = 1; i < n; i++) {
        if (ids[i] == ids[i - 1]) {
            snprintf(err, errlen, "request %llu is on two ranks",
                     (unsigned long long)ids[i]);
            goto out;
        }
    }
    rc = 0;
out:
    free(ids);
    return rc;
}

void
sg_ranks_set_logits_hook(sg_ranks *R, sg_logits_fn fn, void *ctx)
{
    for (int r = 0; r < R->n; r++)
        sg_sched_set_logits_hook(R->rk[r].sched, fn, ctx);
}
