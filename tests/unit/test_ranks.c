/*
 * Scheduling over the ranks of a device group (serve/ranks.c):
 *  - placement: a request follows the rank that caches or is computing its
 *    prefix, else goes to the least loaded rank, and leaves a prefix rank
 *    that is too far behind;
 *  - fuzzed with the fake model (fake_model.h) on 1-4 ranks: random
 *    submits, cancels and steps, every invariant checked after every step
 *    (each scheduler's, lockstep: every rank called its step function as
 *    often as the others, idle ones with empty batches; no request on two
 *    ranks), and each finished request gives the tokens of the same
 *    request alone;
 *  - a real model on 2 and 3 host ranks (the device group and its
 *    collective) with prompts over shared documents, chunked prefill,
 *    prefix hits on several ranks and cancellations: every token and every
 *    logit of every request equal to the request alone on one device;
 *  - the engine (sparsegate.h) started on devices "0-2": requests through
 *    the public API give the single-device engine's tokens, a cancelled
 *    request frees its blocks, bad device lists are refused with a
 *    message.
 */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "fake_model.h"
#include "model/group.h"
#include "model/kv.h"
#include "serve/ranks.h"

#define MAXN    4
#define MAXREQ  FAKE_MAXREQ
#define MAXGEN  FAKE_MAXGEN
#define GEN     24               /* at most, per request here */

static int sanitized;

static void
exec_in_turn(void *unused, sg_rank_fn fn, void *ctx)
{
    (void)unused;
    /* the fake model needs no partner: the ranks may run one after the
     * other (a real group runs them at once, below) */
    for (int r = 0; r < MAXN; r++) {
        if (r < *(int *)unused)
            fn(ctx, r);
    }
}

static sg_sched_opts
fake_opts(int n_blocks)
{
    sg_sched_opts o = {
        .n_blocks = n_blocks, .max_running = 5, .max_queue = 10,
        .max_context = 4096, .step_tokens = 128, .prefill_chunk = 64,
        .prefix_cache = 1, .vocab = FAKE_VOCAB, .eos_id = 0,
    };
    return o;
}

static sg_ranks *
fake_ranks(int n, fake *f, sg_sched_opts *o, sg_emit_fn emit, void *ectx)
{
    void     *ctx[MAXN] = { 0 };
    char      err[200];
    sg_ranks *R;

    for (int r = 0; r < n; r++) {
        memset(&f[r], 0, sizeof(f[r]));
        f[r].n_blocks = o->n_blocks;
        f[r].kv = calloc((size_t)o->n_blocks * SG_KV_BLOCK, sizeof(uint64_t));
        ctx[r] = &f[r];
    }
    R = sg_ranks_new(n, o, fake_step, ctx, emit, ectx, err, sizeof(err));
    if (R == NULL) {
        CHECK(0, "ranks/new", "%s", err);
        return NULL;
    }
    for (int r = 0; r < n; r++)
        f[r].s = sg_ranks_sched(R, r);
    return R;
}

static void
fake_free(sg_ranks *R, fake *f, int n)
{
    sg_ranks_free(R);
    for (int r = 0; r < n; r++)
        free(f[r].kv);
}

static int32_t docs[4][400];

static void
fill(int32_t *t, int n)
{
    for (int i = 0; i < n; i++)
        t[i] = 1 + check_rand32() % (FAKE_VOCAB - 1);
}

/* ---- placement ---------------------------------------------------------- */

static int
submit_doc(sg_ranks *R, int id, int doc, int n_doc, int max_tokens)
{
    int32_t    t[600];
    sg_request q = { 0 };
    char       err[200];
    int        rank = -1;

    memcpy(t, docs[doc], sizeof(int32_t) * n_doc);
    fill(t + n_doc, 20);
    q.prompt = t;
    q.n_prompt = n_doc + 20;
    q.max_tokens = max_tokens;
    q.ignore_eos = 1;
    if (sg_ranks_submit(R, &q, id, &rank, err, sizeof(err)) != SG_OK)
        return -1;
    return rank;
}

static void
test_placement(void)
{
    fake          f[MAXN];
    sg_sched_opts o = fake_opts(200);
    int           n = 3, a, b, c, d;
    sg_ranks     *R = fake_ranks(n, f, &o, fake_record, NULL);

    if (R == NULL)
        return;
    memset(fake_reqs, 0, sizeof(fake_reqs));
    /* idle group: the first rank */
    a = submit_doc(R, 0, 0, 300, 4);
    CHECK(a == 0, "place/idle-first-rank", "went to rank %d", a);
    /* while doc 0 is being computed on rank 0, another doc goes to the
     * least loaded rank, and a second question on doc 0 follows doc 0 */
    b = submit_doc(R, 1, 1, 300, 4);
    c = submit_doc(R, 2, 0, 300, 4);
    d = submit_doc(R, 3, 2, 300, 4);
    CHECK(b == 1 && c == 0 && d == 2, "place/least-loaded-and-pending-prefix",
          "doc 1 on %d (want 1), doc 0 again on %d (want 0), doc 2 on %d "
          "(want 2)", b, c, d);
    while (!sg_ranks_idle(R))
        sg_ranks_step(R, exec_in_turn, &n);
    /* cached now: each doc follows its rank */
    a = submit_doc(R, 4, 2, 300, 4);
    b = submit_doc(R, 5, 1, 300, 4);
    CHECK(a == 2 && b == 1, "place/cached-prefix", "doc 2 on %d, doc 1 on %d",
          a, b);
    while (!sg_ranks_idle(R))
        sg_ranks_step(R, exec_in_turn, &n);
    /* a prefix rank far behind loses the request: rank 1 holds doc 1 but
     * has 5 long generations queued */
    for (int i = 0; i < 5; i++) {
        int32_t    t[8];
        sg_request q = { 0 };
        char       err[200];
        fill(t, 8);
        q.prompt = t;
        q.n_prompt = 8;
        q.max_tokens = 400;
        q.ignore_eos = 1;
        sg_sched_submit(sg_ranks_sched(R, 1), &q, 10 + i, err, sizeof(err));
    }
    a = submit_doc(R, 20, 1, 300, 4);
    CHECK(a != 1, "place/overloaded-prefix-rank-skipped",
          "went to rank %d, behind by %lld tokens", a,
          (long long)sg_sched_backlog(sg_ranks_sched(R, 1)));
    sg_ranks_cancel_all(R);
    char err[200];
    CHECK(sg_ranks_check(R, err, sizeof(err)) == 0, "place/check", "%s", err);
    fake_free(R, f, n);
}

/* ---- fuzz with the fake model ------------------------------------------ */

/* A request alone on one fake device, no cache: its tokens. */
static int
alone_tokens(const fake_seen *r, int32_t *tok)
{
    fake          f;
    sg_sched_opts o = fake_opts(200);
    sg_ranks     *R;
    sg_request    q = { 0 };
    char          err[200];
    int           one = 1, n = 0;
    fake_seen     save = fake_reqs[MAXREQ - 1];

    o.prefix_cache = 0;
    R = fake_ranks(1, &f, &o, fake_record, NULL);
    memset(&fake_reqs[MAXREQ - 1], 0, sizeof(fake_seen));
    q.prompt = r->prompt_ids;
    q.n_prompt = r->n_prompt;
    q.max_tokens = r->max_tokens;
    q.temperature = r->temperature;
    q.seed = r->seed;
    q.top_p = 1;
    sg_ranks_submit(R, &q, MAXREQ - 1, NULL, err, sizeof(err));
    for (int i = 0; i < 10000 && !sg_ranks_idle(R); i++)
        sg_ranks_step(R, exec_in_turn, &one);
    n = fake_reqs[MAXREQ - 1].n_tok;
    memcpy(tok, fake_reqs[MAXREQ - 1].tok, sizeof(int32_t) * MAXGEN);
    fake_reqs[MAXREQ - 1] = save;
    fake_free(R, &f, 1);
    return n;
}

static void
fuzz_fake(int n, int ops)
{
    fake          f[MAXN];
    sg_sched_opts o = fake_opts(40);
    sg_ranks     *R = fake_ranks(n, f, &o, fake_record, NULL);
    int           n_req = 0, inv_ok = 1, steps = 0, cancels = 0;
    int           used[MAXN] = { 0 }, hits_on[MAXN] = { 0 };
    char          err[240] = "", name[64];

    if (R == NULL)
        return;
    memset(fake_reqs, 0, sizeof(fake_reqs));
    for (int r = 0; r < n; r++)
        f[r].fail_percent = 2;
    for (int op = 0; op < ops && inv_ok; op++) {
        unsigned a = check_rand32() % 100;

        if (a < 30 && n_req < MAXREQ - 1) {
            fake_seen *r = &fake_reqs[n_req];
            int32_t    t[600];
            int        doc = check_rand32() % 4;
            int        shared = check_rand32() % 400;
            int        len = shared + 1 + check_rand32() % 60;
            sg_request q = { 0 };

            memcpy(t, docs[doc], sizeof(int32_t) * shared);
            fill(t + shared, len - shared);
            r->prompt_ids = malloc(sizeof(int32_t) * len);
            memcpy(r->prompt_ids, t, sizeof(int32_t) * len);
            r->n_prompt = len;
            r->max_tokens = 1 + check_rand32() % GEN;
            r->temperature = check_rand32() % 2 ? 0.0f : 0.8f;
            r->seed = check_rand32();
            q.prompt = t;
            q.n_prompt = len;
            q.max_tokens = r->max_tokens;
            q.temperature = r->temperature;
            q.top_p = 1;
            q.seed = r->seed;
            r->accepted = sg_ranks_submit(R, &q, n_req, &r->rank, err,
                                          sizeof(err)) == SG_OK;
            n_req++;
        } else if (a < 36 && n_req > 0) {
            cancels += sg_ranks_cancel(R, n_req - 1 - check_rand32()
                                       % (n_req < 12 ? n_req : 12)) == 0;
        } else {
            sg_ranks_step(R, exec_in_turn, &n);
            steps++;
            if (sg_ranks_check(R, err, sizeof(err)) != 0)
                inv_ok = 0;
        }
    }
    for (int i = 0; i < 100000 && inv_ok && !sg_ranks_idle(R); i++) {
        sg_ranks_step(R, exec_in_turn, &n);
        if (sg_ranks_check(R, err, sizeof(err)) != 0)
            inv_ok = 0;
    }
    int viol = 0, empty = 0;
    for (int r = 0; r < n; r++) {
        viol += f[r].violations;
        empty += f[r].empty_calls;
    }
    snprintf(name, sizeof(name), "fuzz/N%d-invariants", n);
    CHECK(inv_ok && viol == 0, name, "%s (%d bad writes)", err, viol);
    snprintf(name, sizeof(name), "fuzz/N%d-lockstep-empty-steps", n);
    CHECK(n == 1 ? empty == 0 : empty > 0, name, "%d empty rank steps", empty);

    int events_ok = 1, alone_ok = 1, compared = 0;
    for (int i = 0; i < n_req; i++) {
        fake_seen *r = &fake_reqs[i];
        if (!r->accepted)
            continue;
        used[r->rank]++;
        hits_on[r->rank] += r->cached > 0;
        events_ok &= r->terminal == 1 && r->after_terminal == 0;
        if (r->kind == SG_EV_DONE && r->finish != SG_FINISH_CANCELLED
            && r->n_tok <= MAXGEN)
        {
            int32_t tok[MAXGEN];
            int     m = alone_tokens(r, tok);
            int     same = m == r->n_tok
                           && memcmp(tok, r->tok, 4 * (size_t)m) == 0;
            if (!same && alone_ok)
                printf("# request %d on rank %d: %d tokens, alone %d\n", i,
                       r->rank, r->n_tok, m);
            alone_ok &= same;
            compared++;
        }
    }
    int ranks_used = 0, ranks_hit = 0;
    for (int r = 0; r < n; r++) {
        ranks_used += used[r] > 0;
        ranks_hit += hits_on[r] > 0;
    }
    snprintf(name, sizeof(name), "fuzz/N%d-events", n);
    CHECK(events_ok, name, "a request without exactly one final event");
    snprintf(name, sizeof(name), "fuzz/N%d-same-as-alone", n);
    CHECK(alone_ok && compared > 10, name, "%d compared", compared);
    snprintf(name, sizeof(name), "fuzz/N%d-spread", n);
    CHECK(ranks_used == n && ranks_hit == n, name, "%d of %d ranks used, %d "
          "with prefix hits", ranks_used, n, ranks_hit);
    printf("# N=%d: %d requests, %d steps, %d cancelled, %d empty rank "
           "steps\n", n, n_req, steps, cancels, empty);
    for (int i = 0; i < n_req; i++)
        free(fake_reqs[i].prompt_ids);
    fake_free(R, f, n);
}

/* ---- a real model on host ranks ---------------------------------------- */

typedef struct rank_model {
    sg_model   *m;
    sg_kv_pool *pool;
} rank_model;

static int
model_step(void *ctx, sg_batch_item *items, int n, char *err, int errlen)
{
    rank_model *rm = ctx;

    return sg_forward(rm->m, rm->pool, items, n, NULL, err, errlen);
}

static void
exec_group(void *g, sg_rank_fn fn, void *ctx)
{
    sg_group_run(g, fn, ctx);
}

/* logits of every generated token, per request (written on the rank's
 * thread; each request lives on one rank) */
static float *logit_log[MAXREQ][MAXGEN];
static int    vocab;

static void
log_logits(void *ctx, uint64_t id, int n_gen, const float *logits, int V)
{
    float *(*log)[MAXGEN] = ctx;

    if (id >= MAXREQ || n_gen >= MAXGEN)
        return;
    if (log[id][n_gen] == NULL)
        log[id][n_gen] = malloc(sizeof(float) * V);
    memcpy(log[id][n_gen], logits, sizeof(float) * V);
}

typedef struct served {
    sg_group   *g;
    rank_model  rm[MAXN];
    sg_ranks   *R;
} served;

static int
serve_new(served *s, const char *dir, int n, sg_sched_opts *o,
    float *(*log)[MAXGEN])
{
    int           dev[MAXN] = { 0, 1, 2, 3 };
    void         *ctx[MAXN];
    sg_model_opts mo;
    char          err[300];

    memset(s, 0, sizeof(*s));
    sg_model_opts_default(&mo);
    mo.n_threads = 1;
    if (sg_group_load(dir, &mo, dev, n, &s->g, err, sizeof(err)) != 0) {
        CHECK(0, "model/load", "%s", err);
        return -1;
    }
    for (int r = 0; r < n; r++) {
        s->rm[r].m = sg_group_model(s->g, r);
        s->rm[r].pool = sg_kv_pool_new(s->rm[r].m->backend, &s->rm[r].m->cfg,
                                       o->n_blocks, 1);
        ctx[r] = &s->rm[r];
    }
    s->R = sg_ranks_new(n, o, model_step, ctx, fake_record, NULL, err,
                        sizeof(err));
    if (s->R == NULL) {
        CHECK(0, "model/ranks", "%s", err);
        return -1;
    }
    sg_ranks_set_logits_hook(s->R, log_logits, log);
    return 0;
}

static void
serve_free(served *s, int n)
{
    sg_ranks_free(s->R);
    for (int r = 0; r < n; r++)
        sg_kv_pool_free(s->rm[r].pool);
    sg_group_free(s->g);
}

/* Request i: a prompt opening with part of doc, random after. */
static void
model_submit(served *s, int i, const int32_t *doc)
{
    fake_seen *r = &fake_reqs[i];
    int        sh = 128 + check_rand32() % 128;
    int        len = sh + 1 + check_rand32() % 40;
    sg_request q = { 0 };
    char       err[300];

    r->prompt_ids = malloc(sizeof(int32_t) * len);
    memcpy(r->prompt_ids, doc, sizeof(int32_t) * sh);
    for (int t = sh; t < len; t++)
        r->prompt_ids[t] = check_rand32() % vocab;
    r->n_prompt = len;
    r->max_tokens = 1 + check_rand32() % 6;
    r->temperature = check_rand32() % 2 ? 0.0f : 0.7f;
    r->seed = check_rand32();
    q.prompt = r->prompt_ids;
    q.n_prompt = len;
    q.max_tokens = r->max_tokens;
    q.temperature = r->temperature;
    q.top_p = 1;
    q.seed = r->seed;
    q.ignore_eos = 1;
    r->accepted = sg_ranks_submit(s->R, &q, i, &r->rank, err,
                                  sizeof(err)) == SG_OK;
}

static void
test_model(const char *dir, int n, int n_req)
{
    static float *alone_log[MAXREQ][MAXGEN];
    sg_sched_opts o = {
        .n_blocks = 48, .max_running = 4, .max_queue = 64,
        .max_context = 512, .step_tokens = 96, .prefill_chunk = 64,
        .prefix_cache = 1, .vocab = 0, .eos_id = -1,
    };
    served        s;
    int32_t       mdocs[3][256];
    int           inv_ok = 1, steps = 0, hit_ranks[MAXN] = { 0 };
    int           same = 1, compared = 0, cancelled = 0;
    char          err[300] = "", name[64];

    memset(fake_reqs, 0, sizeof(fake_reqs));
    memset(logit_log, 0, sizeof(logit_log));
    o.vocab = vocab;
    if (serve_new(&s, dir, n, &o, logit_log) != 0)
        return;
    for (int d = 0; d < 3; d++)
        for (int i = 0; i < 256; i++)
            mdocs[d][i] = check_rand32() % vocab;
    /* first one request per document (as many as ranks) at once: they
     * spread over the ranks; then one more each, which follows its
     * cached document: hits on several ranks, whatever comes after */
    int i = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (int d = 0; d < n && d < 3; d++, i++)
            model_submit(&s, i, mdocs[d]);
        while (!sg_ranks_idle(s.R))
            sg_ranks_step(s.R, exec_group, s.g);
    }
    /* then requests arrive over time: a few per step */
    n_req += i;
    while (i < n_req || !sg_ranks_idle(s.R)) {
        if (i < n_req && check_rand32() % 2) {
            model_submit(&s, i, mdocs[check_rand32() % 3]);
            i++;
            continue;
        }
        if (i > 2 && check_rand32() % 12 == 0)
            cancelled += sg_ranks_cancel(s.R, i - 1 - check_rand32() % 3) == 0;
        sg_ranks_step(s.R, exec_group, s.g);
        steps++;
        if (sg_ranks_check(s.R, err, sizeof(err)) != 0) {
            inv_ok = 0;
            break;
        }
    }
    snprintf(name, sizeof(name), "model/N%d-invariants", n);
    CHECK(inv_ok, name, "%s", err);
    serve_free(&s, n);

    /* each request alone on one device, no cache */
    o.prefix_cache = 0;
    memset(alone_log, 0, sizeof(alone_log));
    if (serve_new(&s, dir, 1, &o, alone_log) != 0)
        return;
    for (int i = 0; i < n_req; i++) {
        fake_seen *r = &fake_reqs[i];
        fake_seen  keep = *r;
        sg_request q = { 0 };

        if (!r->accepted || r->kind != SG_EV_DONE
            || r->finish == SG_FINISH_CANCELLED)
            continue;
        hit_ranks[r->rank] += r->cached > 0;
        q.prompt = r->prompt_ids;
        q.n_prompt = r->n_prompt;
        q.max_tokens = r->max_tokens;
        q.temperature = r->temperature;
        q.top_p = 1;
        q.seed = r->seed;
        q.ignore_eos = 1;
        memset(r, 0, sizeof(*r));
        sg_ranks_submit(s.R, &q, i, NULL, err, sizeof(err));
        while (!sg_ranks_idle(s.R))
            sg_ranks_step(s.R, exec_group, s.g);
        int ok = r->n_tok == keep.n_tok
                 && memcmp(r->tok, keep.tok, 4 * (size_t)keep.n_tok) == 0;
        for (int t = 0; ok && t < keep.n_tok; t++)
            ok = logit_log[i][t] && alone_log[i][t]
                 && memcmp(logit_log[i][t], alone_log[i][t],
                           sizeof(float) * vocab) == 0;
        if (!ok && same)
            printf("# request %d (rank %d, %d cached): differs from alone\n",
                   i, keep.rank, keep.cached);
        same &= ok;
        compared++;
        *r = keep;
    }
    serve_free(&s, 1);
    int ranks_hit = 0;
    for (int r = 0; r < n; r++)
        ranks_hit += hit_ranks[r] > 0;
    snprintf(name, sizeof(name), "model/N%d-bitwise-as-alone", n);
    CHECK(same && compared >= n_req / 2, name, "%d compared", compared);
    snprintf(name, sizeof(name), "model/N%d-hits-on-several-ranks", n);
    CHECK(ranks_hit >= 2, name, "prefix hits on %d ranks", ranks_hit);
    printf("# model N=%d: %d requests (%d compared, %d cancelled), %d "
           "lockstep steps, hits on %d ranks\n", n, n_req, compared,
           cancelled, steps, ranks_hit);
    for (int i = 0; i < MAXREQ; i++) {
        free(fake_reqs[i].prompt_ids);
        for (int t = 0; t < MAXGEN; t++) {
            free(logit_log[i][t]);
            free(alone_log[i][t]);
        }
    }
    memset(fake_reqs, 0, sizeof(fake_reqs));
}

/* ---- the engine on a device group -------------------------------------- */

#define EREQ 8

typedef struct {
    int32_t tok[EREQ][MAXGEN];
    int     n[EREQ], done[EREQ], finish[EREQ], cached[EREQ];
} elog;

/* Drains events until `want` requests are done (or 60 s pass). */
static int
pump(sg_engine *e, elog *l, int want)
{
    int done = 0;

    for (int i = 0; i < EREQ; i++)
        done += l->done[i] != 0;
    for (int spins = 0; done < want && spins < 6000; spins++) {
        struct pollfd p = { sg_engine_fd(e), POLLIN, 0 };
        sg_event      ev[32];
        int           k;

        poll(&p, 1, 10);
        while ((k = sg_engine_drain(e, ev, 32)) > 0) {
            for (int j = 0; j < k; j++) {
                int r = (int)(intptr_t)ev[j].user;
                if (ev[j].kind == SG_EV_TOKEN) {
                    if (l->n[r] < MAXGEN)
                        l->tok[r][l->n[r]] = ev[j].token;
                    l->n[r]++;
                } else {
                    l->done[r] = ev[j].kind;
                    l->finish[r] = ev[j].finish;
                    l->cached[r] = ev[j].cached_tokens;
                    done++;
                }
            }
        }
    }
    return done >= want;
}

static sg_engine *
engine_on(const char *dir, const char *devices, char *err, int errlen)
{
    sg_engine_opts o;
    sg_engine     *e = NULL;

    sg_engine_opts_default(&o);
    o.model_dir = dir;
    o.devices = devices;
    o.n_threads = 2;
    o.kv_bytes = (size_t)64 << 20;
    o.max_running = 4;
    o.prefill_chunk = 64;
    o.step_tokens = 128;
    if (sg_engine_start(&o, &e, err, errlen) != 0)
        return NULL;
    return e;
}

static void
test_engine_devices(const char *dir)
{
    int32_t    doc[2][300], t[EREQ][360];
    int        len[EREQ], ok;
    elog       grp, one;
    char       err[300];
    sg_engine *e = engine_on(dir, "0-2", err, sizeof(err));
    sg_engine_stats st;

    if (e == NULL) {
        CHECK(0, "engine/start-0-2", "%s", err);
        return;
    }
    for (int d = 0; d < 2; d++)
        for (int i = 0; i < 300; i++)
            doc[d][i] = check_rand32() % vocab;
    for (int r = 0; r < EREQ; r++) {
        len[r] = 300 + 1 + check_rand32() % 50;
        memcpy(t[r], doc[r % 2], sizeof(doc[0]));
        for (int i = 300; i < len[r]; i++)
            t[r][i] = check_rand32() % vocab;
    }
    /* all at once on the group */
    memset(&grp, 0, sizeof(grp));
    for (int r = 0; r < EREQ; r++) {
        sg_request q = { .prompt = t[r], .n_prompt = len[r],
                         .max_tokens = 6, .temperature = r % 3 ? 0.0f : 0.8f,
                         .top_p = 1, .seed = 5 + r, .ignore_eos = 1,
                         .user = (void *)(intptr_t)r };
        if (sg_engine_submit(e, &q, NULL, err, sizeof(err)) != SG_OK)
            CHECK(0, "engine/submit", "%s", err);
    }
    ok = pump(e, &grp, EREQ);
    sg_engine_get_stats(e, &st);
    CHECK(ok && st.requests_done == EREQ && st.cached_tokens > 0
          && st.kv_blocks_total > 0, "engine/group-serves",
          "%llu done, %llu cached tokens", (unsigned long long)st.requests_done,
          (unsigned long long)st.cached_tokens);

    /* a cancelled request on the group frees its blocks */
    {
        sg_engine_stats st0;
        uint64_t        id;
        elog            c;
        sg_request q = { .prompt = t[0], .n_prompt = len[0],
                         .max_tokens = 100, .ignore_eos = 1,
                         .user = (void *)(intptr_t)0 };

        memset(&c, 0, sizeof(c));
        sg_engine_get_stats(e, &st0);
        if (sg_engine_submit(e, &q, &id, err, sizeof(err)) != SG_OK)
            CHECK(0, "engine/group-cancel-submit", "%s", err);
        struct pollfd p = { sg_engine_fd(e), POLLIN, 0 };
        poll(&p, 1, 5000);
        sg_engine_cancel(e, id);
        pump(e, &c, 1);
        sg_engine_get_stats(e, &st);
        CHECK(c.finish[0] == SG_FINISH_CANCELLED && st.running == 0
              && st.kv_blocks_used == st.kv_blocks_cached
              && st.requests_cancelled == st0.requests_cancelled + 1,
              "engine/group-cancel", "kind %d finish %d (%d tokens), %d "
              "used, %d cached, %d running", c.done[0], c.finish[0], c.n[0],
              st.kv_blocks_used, st.kv_blocks_cached, st.running);
    }
    sg_engine_stop(e);

    /* each alone on one device */
    e = engine_on(dir, NULL, err, sizeof(err));
    if (e == NULL) {
        CHECK(0, "engine/start-one", "%s", err);
        return;
    }
    memset(&one, 0, sizeof(one));
    for (int r = 0; r < EREQ; r++) {
        sg_request q = { .prompt = t[r], .n_prompt = len[r],
                         .max_tokens = 6, .temperature = r % 3 ? 0.0f : 0.8f,
                         .top_p = 1, .seed = 5 + r, .ignore_eos = 1,
                         .user = (void *)(intptr_t)r };
        sg_engine_submit(e, &q, NULL, err, sizeof(err));
        pump(e, &one, r + 1);
    }
    sg_engine_stop(e);
    ok = 1;
    for (int r = 0; r < EREQ; r++)
        ok &= grp.n[r] == 6 && one.n[r] == 6
              && memcmp(grp.tok[r], one.tok[r], sizeof(int32_t) * 6) == 0;
    CHECK(ok, "engine/group-tokens-as-one-device", "a request's tokens "
          "differ between devices 0-2 and one device");

    /* device lists the engine refuses */
    e = engine_on(dir, "0-40", err, sizeof(err));
    CHECK(e == NULL && strstr(err, "16 routed experts"), "engine/too-many-ranks",
          "'%s'", err);
    sg_engine_stop(e);
    e = engine_on(dir, "2-1", err, sizeof(err));
    CHECK(e == NULL && strstr(err, "device list \"2-1\""),
          "engine/bad-device-list", "'%s'", err);
    sg_engine_stop(e);
}

int
main(void)
{
    char dir[1024];

    check_seed_from_env();
    sanitized = getenv("SG_SANITIZED") != NULL;
    for (int d = 0; d < 4; d++)
        fill(docs[d], 400);
    test_placement();
    for (int n = 1; n <= MAXN; n++)
        fuzz_fake(n, sanitized ? 1500 : 4000);
    snprintf(dir, sizeof(dir), "%s/tiny-v32/fp8", check_fixtures_dir());
    vocab = 1024;
    test_model(dir, 2, sanitized ? 6 : 14);
    test_model(dir, 3, sanitized ? 6 : 14);
    test_engine_devices(dir);
    return check_finish();
}
