/*
 * The serving core with a real tiny model (the tiny-v32 fixture):
 *  - prefix hits (whole, partial, and a prompt of whole blocks) give the
 *    same logits as a run without the cache;
 *  - under cache pressure, with sequences in flight and eviction going on,
 *    every invariant holds after every step and each request's tokens
 *    equal those of the same request run alone;
 *  - the threaded engine: interleaved requests give the same tokens as
 *    each alone, the eventfd is readable exactly while events wait,
 *    cancellation frees every block, stop with work in flight is clean.
 */
#include <dirent.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "model/kv.h"
#include "serve/scheduler.h"
#include "sparsegate.h"

static char model_dir[1024];

/* Under the sanitizers (tests/run.sh sets SG_SANITIZED) the forward pass
 * runs ~15x slower: the same checks on fewer requests. */
static int sanitized;

static double
seconds(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

typedef struct model_ctx {
    sg_model   *m;
    sg_kv_pool *pool;
} model_ctx;

static int
real_step(void *ctx, sg_batch_item *items, int n, char *err, int errlen)
{
    model_ctx *mc = ctx;

    return sg_forward(mc->m, mc->pool, items, n, NULL, err, errlen);
}

/* ---- scheduler + model, with the logits of each request's first token */

#define MAXR 64
#define MAXT 48

typedef struct run_log {
    float   *first_logits[MAXR];
    float   *step_logits[MAXR][MAXT];
    int32_t  tok[MAXR][MAXT];
    int      n_tok[MAXR];
    int      done[MAXR];
    int      finish[MAXR];
    int      cached[MAXR];
    int      vocab;
} run_log;

static void
log_logits(void *ctx, uint64_t id, int n_gen, const float *logits, int vocab)
{
    run_log *l = ctx;

    if (id >= MAXR || n_gen >= MAXT)
        return;
    if (n_gen == 0 && l->first_logits[id] == NULL) {
        l->first_logits[id] = malloc(sizeof(float) * vocab);
        memcpy(l->first_logits[id], logits, sizeof(float) * vocab);
    }
    if (l->step_logits[id][n_gen] == NULL) {
        l->step_logits[id][n_gen] = malloc(sizeof(float) * vocab);
        memcpy(l->step_logits[id][n_gen], logits, sizeof(float) * vocab);
    }
    l->vocab = vocab;
}

static void
log_event(void *ctx, const sg_event *ev)
{
    run_log *l = ctx;

    if (ev->id >= MAXR)
        return;
    if (ev->kind == SG_EV_TOKEN) {
        if (l->n_tok[ev->id] < MAXT)
            l->tok[ev->id][l->n_tok[ev->id]] = ev->token;
        l->n_tok[ev->id]++;
    } else {
        l->done[ev->id] = ev->kind;
        l->finish[ev->id] = ev->finish;
        l->cached[ev->id] = ev->cached_tokens;
    }
}

static void
free_log(run_log *l)
{
    for (int i = 0; i < MAXR; i++) {
        free(l->first_logits[i]);
        for (int k = 0; k < MAXT; k++)
            free(l->step_logits[i][k]);
    }
    memset(l, 0, sizeof(*l));
}

static sg_sched *
make_sched(model_ctx *mc, int n_blocks, int prefix_cache, int chunk,
    int max_running, run_log *l)
{
    sg_sched_opts o = {
        .n_blocks = n_blocks, .max_running = max_running, .max_queue = 64,
        .max_context = mc->m->max_pos, .step_tokens = 512,
        .prefill_chunk = chunk, .prefix_cache = prefix_cache,
        .vocab = mc->m->cfg.vocab_size, .eos_id = -1,
    };
    char      err[200];
    sg_sched *s;

    mc->pool = sg_kv_pool_new(mc->m->backend, &mc->m->cfg, n_blocks,
                              mc->m->num.kv_fp8);
    s = sg_sched_new(&o, real_step, mc, log_event, l, err, sizeof(err));
    if (s)
        sg_sched_set_logits_hook(s, log_logits, l);
    return s;
}

static void
free_sched(model_ctx *mc, sg_sched *s)
{
    sg_sched_free(s);
    sg_kv_pool_free(mc->pool);
    mc->pool = NULL;
}

static int
run_until_done(sg_sched *s, run_log *l, int id, int *inv_ok, char *err,
    int errlen)
{
    for (int i = 0; i < 2000 && !l->done[id]; i++) {
        sg_sched_step(s);
        if (inv_ok && sg_sched_check(s, err, errlen) != 0)
            *inv_ok = 0;
    }
    return l->done[id] != 0;
}

/* The first-token logits of one prompt, run alone without a cache. */
static float *
cold_logits(model_ctx *outer, const int32_t *t, int n, int chunk)
{
    model_ctx  own = {.m = outer->m}, *mc = &own;
    run_log    l = {0};
    sg_sched  *s = make_sched(mc, 16, 0, chunk, 4, &l);
    sg_request q = {.prompt = t, .n_prompt = n, .max_tokens = 1};
    char       err[200];
    float     *out;

    sg_sched_submit(s, &q, 0, err, sizeof(err));
    run_until_done(s, &l, 0, NULL, err, sizeof(err));
    out = l.first_logits[0];
    l.first_logits[0] = NULL;
    free_sched(mc, s);
    free_log(&l);
    return out;
}

static void
test_prefix_hits(model_ctx *mc)
{
    int        V = mc->m->cfg.vocab_size;
    int32_t    p[140], q[130], w[128];
    run_log    l = {0};
    sg_sched  *s = make_sched(mc, 40, 1, 64, 4, &l);
    char       err[200] = "";
    int        inv_ok = 1;

    for (int i = 0; i < 140; i++)
        p[i] = check_rand32() % V;
    for (int i = 0; i < 130; i++)
        q[i] = i < 100 ? p[i] : (int32_t)(check_rand32() % V);
    memcpy(w, p, sizeof(w));

    /* a miss, a hit, a partial hit (100 shared tokens: 1 whole block),
     * a prompt of whole blocks (its last block is recomputed); all longer
     * than index_topk (32), so the indexer selects */
    const int32_t *prompts[4] = {p, p, q, w};
    int            lens[4] = {140, 140, 130, 128};
    for (int k = 0; k < 4; k++) {
        sg_request r = {.prompt = prompts[k], .n_prompt = lens[k],
                        .max_tokens = 1};
        sg_sched_submit(s, &r, k, err, sizeof(err));
        run_until_done(s, &l, k, &inv_ok, err, sizeof(err));
    }
    CHECK(inv_ok, "engine_hits_invariants", "%s", err);
    CHECK(l.cached[0] == 0 && l.cached[1] == 128 && l.cached[2] == 64
          && l.cached[3] == 64, "engine_hit_cached_tokens",
          "cached %d %d %d %d (want 0 128 64 64)", l.cached[0], l.cached[1],
          l.cached[2], l.cached[3]);

    /* Chunks of one block: a hit computes the same chunks as a cold run,
     * so the logits must agree to the last bit (or fp32 rounding). */
    float *cold_p = cold_logits(mc, p, 140, 64);
    float *cold_q = cold_logits(mc, q, 130, 64);
    float *cold_w = cold_logits(mc, w, 128, 64);
    double e_miss = check_rel_err(l.first_logits[0], cold_p, V);
    double e_hit = check_rel_err(l.first_logits[1], cold_p, V);
    double e_part = check_rel_err(l.first_logits[2], cold_q, V);
    double e_whole = check_rel_err(l.first_logits[3], cold_w, V);
    printf("# rel err vs no-cache run: miss %.2e, hit %.2e, partial hit "
           "%.2e, whole-block prompt %.2e\n", e_miss, e_hit, e_part, e_whole);
    CHECK(e_miss <= 1e-6, "engine_miss_logits_equal", "%.3e", e_miss);
    CHECK(e_hit <= 1e-6, "engine_hit_logits_equal", "%.3e", e_hit);
    CHECK(e_part <= 1e-6, "engine_partial_hit_logits_equal", "%.3e", e_part);
    CHECK(e_whole <= 1e-6, "engine_whole_block_hit_logits_equal", "%.3e",
          e_whole);

    /* A cold run in other chunks (100 tokens, not block aligned): not
     * asserted, as with FP8 caches and the FP8 indexer a rounding change
     * can flip a quantized value or a top-k member (measured only). */
    if (!sanitized) {
        float *cold_p100 = cold_logits(mc, p, 140, 100);
        printf("# hit vs cold run in 100-token chunks: rel err %.2e\n",
               check_rel_err(l.first_logits[1], cold_p100, V));
        free(cold_p100);
    }
    free(cold_p);
    free(cold_q);
    free(cold_w);
    free_sched(mc, s);
    free_log(&l);
}

/* One request alone, without cache: its tokens and logits in slot 0 of
 * out (the caller frees it with free_log). */
static void
alone_run(model_ctx *outer, const int32_t *t, int n, int max_tokens,
    float temp, uint64_t seed, run_log *out)
{
    model_ctx  own = {.m = outer->m}, *mc = &own;
    sg_sched  *s;
    sg_request q = {.prompt = t, .n_prompt = n, .max_tokens = max_tokens,
                    .temperature = temp, .top_p = 0.9f, .seed = seed,
                    .ignore_eos = 1};
    char       err[200];

    memset(out, 0, sizeof(*out));
    s = make_sched(mc, 16, 0, 64, 1, out);
    sg_sched_submit(s, &q, 0, err, sizeof(err));
    run_until_done(s, out, 0, NULL, err, sizeof(err));
    free_sched(mc, s);
}

/*
 * Compares request a of log A with request b of log B.  The backend's
 * GEMMs round differently for different batch sizes, so two runs may
 * part where a decision is a tie to rounding; what must hold is that
 * up to and at the first differing token the logits agree to rounding.
 * Returns 1 when the tokens are identical, 0 when they part legitimately,
 * -1 when logits disagree (a real error).
 */
static int
compare_runs(const run_log *A, int a, const run_log *B, int b,
    double *worst)
{
    int n = A->n_tok[a] < B->n_tok[b] ? A->n_tok[a] : B->n_tok[b];

    if (n > MAXT)
        n = MAXT;
    for (int k = 0; k < n; k++) {
        double e;
        if (A->step_logits[a][k] == NULL || B->step_logits[b][k] == NULL)
            return -1;
        e = check_rel_err(A->step_logits[a][k], B->step_logits[b][k],
                          A->vocab);
        if (e > *worst)
            *worst = e;
        if (e > 1e-4)
            return -1;
        if (A->tok[a][k] != B->tok[b][k])
            return 0;
    }
    return A->n_tok[a] == B->n_tok[b] ? 1 : -1;
}

static void
test_pressure(model_ctx *mc)
{
    /* Six blocks hold any one request (at most 3 blocks) but not three
     * documents' prefixes (2 cached blocks each, and a request needs 3):
     * the third document's request must evict. */
    enum { BLOCKS = 6 };
    const int  N = sanitized ? 4 : 5;
    static const int family[5] = {0, 0, 1, 2, 1};
    int        V = mc->m->cfg.vocab_size;
    int32_t    doc[3][320], t[5][400];
    int        len[5], maxt[5];
    float      temp[5];
    run_log    l = {0};
    sg_sched  *s = make_sched(mc, BLOCKS, 1, 64, 4, &l);
    char       err[200] = "";
    int        inv_ok = 1, same = 1, hits = 0, evicted_seen = 0, steps = 0;

    for (int d = 0; d < 3; d++)
        for (int i = 0; i < 320; i++)
            doc[d][i] = check_rand32() % V;
    for (int r = 0; r < N; r++) {
        int shared = 128 + check_rand32() % 32;
        len[r] = shared + 1 + check_rand32() % 20;
        maxt[r] = 4 + check_rand32() % 8;
        temp[r] = r % 3 == 0 ? 0.8f : 0.0f;
        for (int i = 0; i < len[r]; i++)
            t[r][i] = i < shared ? doc[family[r]][i]
                                 : (int32_t)(check_rand32() % V);
    }
    /* Submitted in waves so that later ones meet earlier ones' blocks
     * cached, in use, or evicted. */
    for (int r = 0; r < N; r++) {
        sg_request q = {.prompt = t[r], .n_prompt = len[r],
                        .max_tokens = maxt[r], .temperature = temp[r],
                        .top_p = 0.9f, .seed = 1000 + r};
        if (sg_sched_submit(s, &q, r, err, sizeof(err)) != SG_OK)
            inv_ok = 0;
        for (int k = 0; k < 3; k++) {
            sg_sched_step(s);
            steps++;
            if (sg_sched_check(s, err, sizeof(err)) != 0)
                inv_ok = 0;
        }
    }
    for (int i = 0; i < 3000 && !sg_sched_idle(s); i++) {
        sg_sched_step(s);
        steps++;
        if (sg_sched_check(s, err, sizeof(err)) != 0)
            inv_ok = 0;
    }
    CHECK(inv_ok && sg_sched_idle(s), "pressure_invariants_every_step", "%s",
          err);
    sg_engine_stats st;
    sg_sched_stats(s, &st);
    evicted_seen = st.kv_blocks_evicted > 0;
    CHECK(evicted_seen, "pressure_eviction_happened",
          "the cache never evicted (%d steps)", steps);
    int identical = 0, parted = 0;
    double worst = 0;
    for (int r = 0; r < N; r++) {
        run_log ref;
        int     c;
        alone_run(mc, t[r], len[r], maxt[r], temp[r], 1000 + r, &ref);
        hits += l.cached[r] > 0;
        c = l.done[r] == SG_EV_DONE ? compare_runs(&l, r, &ref, 0, &worst)
                                    : -1;
        identical += c == 1;
        parted += c == 0;
        if (c < 0) {
            same = 0;
            printf("# request %d: %d tokens, alone %d\n", r, l.n_tok[r],
                   ref.n_tok[0]);
        }
        free_log(&ref);
    }
    printf("# pressure: %d of %d requests token-identical to their solo "
           "run, %d parted at a rounding tie; worst logits rel err %.2e\n",
           identical, N, parted, worst);
    CHECK(same, "pressure_logits_same_as_alone", "a request's logits "
          "changed under pressure (worst %.2e)", worst);
    CHECK(identical >= N / 2, "pressure_tokens_same_as_alone",
          "only %d of %d identical", identical, N);
    CHECK(hits > 0, "pressure_prefix_hits", "no request hit the cache");
    while (sg_prefix_cache_evict_one(sg_sched_cache(s)))
        ;
    CHECK(sg_sched_pool(s)->n_free == BLOCKS, "pressure_pool_back_to_start",
          "%d of %d blocks free", sg_sched_pool(s)->n_free, BLOCKS);
    free_sched(mc, s);
    free_log(&l);
}

/* ---- the threaded engine ---- */

typedef struct host_log {
    int32_t tok[MAXR][MAXT];
    int     n_tok[MAXR];
    int     done[MAXR], finish[MAXR], cached[MAXR], error[MAXR], n_events;
    char    msg[160];
} host_log;

static int
wait_readable(int fd, int ms)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};

    return poll(&pfd, 1, ms) == 1 && (pfd.revents & POLLIN);
}

/* Drains until request `until` (or all of n) is done; ids map to slots
 * through user = slot. */
static int
pump(sg_engine *e, host_log *h, int n, int until)
{
    sg_event ev[16];
    time_t   t0 = time(NULL);

    for (;;) {
        int all = 1;
        for (int i = 0; i < n; i++)
            all &= h->done[i] != 0;
        if ((until >= 0 && h->done[until]) || (until < 0 && all))
            return 1;
        if (time(NULL) - t0 > 120)
            return 0;
        if (!wait_readable(sg_engine_fd(e), 1000))
            continue;
        int k;
        while ((k = sg_engine_drain(e, ev, 16)) > 0) {
            for (int j = 0; j < k; j++) {
                int s = (int)(intptr_t)ev[j].user;
                h->n_events++;
                if (ev[j].kind == SG_EV_TOKEN) {
                    if (h->n_tok[s] < MAXT)
                        h->tok[s][h->n_tok[s]] = ev[j].token;
                    h->n_tok[s]++;
                } else {
                    h->done[s] = ev[j].kind;
                    h->finish[s] = ev[j].finish;
                    h->cached[s] = ev[j].cached_tokens;
                    h->error[s] = ev[j].error;
                    memcpy(h->msg, ev[j].message, sizeof(h->msg));
                }
            }
        }
    }
}

/* The engine thread (named sg-engine) must block the host's signals, so
 * that e.g. nginx's SIGTERM interrupts nginx's own event loop. */
static int
engine_thread_blocks_signals(void)
{
    DIR           *d = opendir("/proc/self/task");
    struct dirent *de;
    int            found = 0, ok = 1;

    if (d == NULL)
        return 0;
    while ((de = readdir(d)) != NULL) {
        char  path[512], line[256];
        FILE *f;

        if (de->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "/proc/self/task/%s/comm", de->d_name);
        f = fopen(path, "r");
        if (f == NULL)
            continue;
        if (fgets(line, sizeof(line), f) == NULL
            || strncmp(line, "sg-engine", 9) != 0)
        {
            fclose(f);
            continue;
        }
        fclose(f);
        snprintf(path, sizeof(path), "/proc/self/task/%s/status", de->d_name);
        f = fopen(path, "r");
        while (f && fgets(line, sizeof(line), f)) {
            unsigned long long mask;
            if (sscanf(line, "SigBlk: %llx", &mask) == 1) {
                found = 1;
                ok &= (mask >> (SIGTERM - 1) & 1) && (mask >> (SIGHUP - 1) & 1)
                      && (mask >> (SIGINT - 1) & 1)
                      && (mask >> (SIGCHLD - 1) & 1);
            }
        }
        if (f)
            fclose(f);
    }
    closedir(d);
    return found && ok;
}

static void
test_engine_api(model_ctx *mc)
{
    enum { GEN = 8 };
    const int      N = sanitized ? 2 : 4;
    sg_engine_opts o;
    sg_engine     *e = NULL;
    char           err[256];
    host_log       h, solo, solo2;
    int32_t        t[4][200];
    int            len[4], ok;
    uint64_t       ids[4];

    sg_engine_opts_default(&o);
    o.model_dir = model_dir;
    o.n_threads = 1;
    o.dense = mc->m->num.dense;
    o.kv_fp8 = mc->m->num.kv_fp8;
    o.kv_bytes = 200 * 64 * 3 * 1000;       /* a few hundred blocks */
    o.max_running = 8;
    o.prefill_chunk = 64;
    if (sg_engine_start(&o, &e, err, sizeof(err)) != 0) {
        CHECK(0, "api_start", "%s", err);
        return;
    }
    int V = sg_engine_model_info(e)->vocab_size;
    CHECK(engine_thread_blocks_signals(), "api_engine_thread_blocks_signals",
          "the sg-engine thread would take the host's signals");
    CHECK(!wait_readable(sg_engine_fd(e), 0), "api_fd_idle_not_readable",
          "readable with no events");

    /* Bad requests are answered at once, with a reason. */
    {
        int32_t    bad = V + 3;
        sg_request q = {.prompt = &bad, .n_prompt = 1, .max_tokens = 4};
        ok = sg_engine_submit(e, &q, NULL, err, sizeof(err)) == SG_EINVAL;
        int32_t   *longp = calloc(600, sizeof(int32_t));
        sg_request q2 = {.prompt = longp, .n_prompt = 600, .max_tokens = 4};
        ok &= sg_engine_submit(e, &q2, NULL, err, sizeof(err)) == SG_ETOOLONG;
        printf("# too long: %s\n", err);
        free(longp);
        CHECK(ok, "api_refuses_bad_requests", "accepted a bad request");
    }

    /* Interleaved: all at once, greedy and seeded sampling. */
    memset(&h, 0, sizeof(h));
    for (int r = 0; r < N; r++) {
        len[r] = 70 + check_rand32() % 60;
        for (int i = 0; i < len[r]; i++)
            t[r][i] = check_rand32() % V;
        sg_request q = {.prompt = t[r], .n_prompt = len[r], .max_tokens = GEN,
                        .temperature = r % 2 ? 0.7f : 0.0f, .top_p = 0.95f,
                        .seed = 77 + r, .user = (void *)(intptr_t)r,
                        .ignore_eos = 1};
        if (sg_engine_submit(e, &q, &ids[r], err, sizeof(err)) != SG_OK)
            CHECK(0, "api_submit", "%s", err);
    }
    ok = pump(e, &h, N, -1);
    CHECK(ok, "api_all_finish", "timed out");
    /* Each alone, one after another, twice (the cache now warm). */
    memset(&solo, 0, sizeof(solo));
    memset(&solo2, 0, sizeof(solo2));
    for (int pass = 0; pass < 2; pass++) {
        for (int r = 0; r < N; r++) {
            sg_request q = {.prompt = t[r], .n_prompt = len[r],
                            .max_tokens = GEN,
                            .temperature = r % 2 ? 0.7f : 0.0f,
                            .top_p = 0.95f, .seed = 77 + r,
                            .user = (void *)(intptr_t)r, .ignore_eos = 1};
            sg_engine_submit(e, &q, NULL, err, sizeof(err));
            pump(e, pass ? &solo2 : &solo, N, r);
        }
    }
    int same = 1, identical = 0, seeded = 1;
    for (int r = 0; r < N; r++) {
        run_log ref;
        int     d = 0;
        /* Seeded requests repeat exactly under the same conditions. */
        seeded &= solo.n_tok[r] == GEN && solo2.n_tok[r] == GEN
            && memcmp(solo.tok[r], solo2.tok[r], sizeof(int32_t) * GEN) == 0;
        if (r % 2)
            continue;
        /* Greedy ones match a solo run without cache, or part only where
         * the solo run's two candidates tie to rounding. */
        alone_run(mc, t[r], len[r], GEN, 0.0f, 77 + r, &ref);
        while (d < GEN && h.tok[r][d] == ref.tok[0][d])
            d++;
        if (d == GEN && h.n_tok[r] == GEN) {
            identical++;
        } else if (d < GEN && ref.step_logits[0][d] != NULL) {
            const float *lg = ref.step_logits[0][d];
            float        mx = 0;
            for (int v = 0; v < V; v++)
                mx = fabsf(lg[v]) > mx ? fabsf(lg[v]) : mx;
            float gap = fabsf(lg[ref.tok[0][d]] - lg[h.tok[r][d]]);
            printf("# request %d parts at token %d: logits gap %.2e of %.2e\n",
                   r, d, gap, mx);
            same &= gap <= 1e-4f * mx;
        } else {
            same = 0;
        }
        free_log(&ref);
    }
    CHECK(same && identical >= N / 4, "api_interleaved_same_as_alone",
          "tokens differ beyond a rounding tie (%d of %d greedy identical)",
          identical, N / 2);
    CHECK(seeded, "api_seeded_sampling_repeats", "a seeded request changed");
    for (int r = 0; r < N; r++)
        same &= h.finish[r] == SG_FINISH_LENGTH && h.n_tok[r] == GEN;
    CHECK(same, "api_finish_length", "a request ended early");

    /* The fd: readable while events wait, not after a full drain. */
    {
        sg_request q = {.prompt = t[0], .n_prompt = len[0], .max_tokens = 3,
                        .user = (void *)(intptr_t)0, .ignore_eos = 1};
        sg_event   ev;
        sg_engine_stats st;
        sg_engine_submit(e, &q, NULL, err, sizeof(err));
        /* Wait for the whole request to be done engine-side. */
        for (int i = 0; i < 2000; i++) {
            sg_engine_get_stats(e, &st);
            if (st.running == 0 && st.queued == 0)
                break;
            struct timespec ts = {0, 5 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        ok = wait_readable(sg_engine_fd(e), 1000);
        ok &= sg_engine_drain(e, &ev, 1) == 1;
        ok &= wait_readable(sg_engine_fd(e), 0);   /* 3 tokens + done left */
        int left = 0;
        sg_event evs[16];
        int k;
        while ((k = sg_engine_drain(e, evs, 16)) > 0)
            left += k;
        ok &= left == 3 && !wait_readable(sg_engine_fd(e), 0);
        ok &= sg_engine_drain(e, evs, 16) == 0;
        CHECK(ok, "api_fd_readable_exactly_while_events_wait",
              "left %d events", left);
    }

    /* Cancellation frees every block: only the cache holds any after. */
    {
        sg_engine_stats st0, st;
        host_log        c;
        int32_t         lp[400];
        for (int i = 0; i < 400; i++)
            lp[i] = check_rand32() % V;
        sg_request q = {.prompt = lp, .n_prompt = 400, .max_tokens = 100,
                        .user = (void *)(intptr_t)0, .ignore_eos = 1};
        uint64_t id;
        memset(&c, 0, sizeof(c));
        sg_engine_get_stats(e, &st0);
        sg_engine_submit(e, &q, &id, err, sizeof(err));
        /* Cancel during prefill or early decode. */
        wait_readable(sg_engine_fd(e), 5000);
        sg_engine_cancel(e, id);
        sg_engine_cancel(e, id + 1000);          /* unknown: ignored */
        pump(e, &c, 1, 0);
        sg_engine_get_stats(e, &st);
        CHECK(c.done[0] == SG_EV_DONE && c.finish[0] == SG_FINISH_CANCELLED,
              "api_cancel_done_event", "kind %d finish %d", c.done[0],
              c.finish[0]);
        CHECK(st.running == 0 && st.kv_blocks_used == st.kv_blocks_cached
              && st.requests_cancelled == st0.requests_cancelled + 1,
              "api_cancel_frees_blocks", "%d used, %d cached, %d running",
              st.kv_blocks_used, st.kv_blocks_cached, st.running);
        printf("# stats: %d blocks, %d used, %d cached; prompt %llu, cached "
               "%llu, generated %llu tokens; %llu done, %llu refused\n",
               st.kv_blocks_total, st.kv_blocks_used, st.kv_blocks_cached,
               (unsigned long long)st.prompt_tokens,
               (unsigned long long)st.cached_tokens,
               (unsigned long long)st.generated_tokens,
               (unsigned long long)st.requests_done,
               (unsigned long long)st.requests_refused);
        CHECK(st.kv_block_bytes == (size_t)SG_KV_BLOCK
                  * sg_engine_model_info(e)->num_hidden_layers
                  * sg_kv_bytes_per_token_layer(&mc->m->cfg,
                                                mc->m->num.kv_fp8)
              && st.requests_refused == 2 && st.requests_done == (uint64_t)(3 * N + 1)
              && st.cached_tokens > 0 && st.generated_tokens >= (uint64_t)(3 * GEN * N),
              "api_stats_counters", "counters off");
    }

    /* Stop with work in flight and events undrained. */
    for (int r = 0; r < 4; r++) {
        sg_request q = {.prompt = t[r], .n_prompt = len[r], .max_tokens = 40,
                        .ignore_eos = 1};
        sg_engine_submit(e, &q, NULL, err, sizeof(err));
    }
    time_t t_stop = time(NULL);
    sg_engine_stop(e);
    CHECK(time(NULL) - t_stop < 20, "api_stop_in_flight",
          "stop took %lld s", (long long)(time(NULL) - t_stop));

    /* A start that fails says why. */
    o.model_dir = "/nonexistent/model";
    CHECK(sg_engine_start(&o, &e, err, sizeof(err)) != 0
          && strstr(err, "/nonexistent/model") != NULL, "api_start_bad_dir",
          "got '%s'", err);
}

/* Drains what comes within ms milliseconds; returns the events seen. */
static int
drain_for(sg_engine *e, host_log *h, int ms)
{
    double end = seconds() + ms / 1000.0;
    int    before = h->n_events;

    while (seconds() < end) {
        sg_event ev[16];
        int      k;

        if (!wait_readable(sg_engine_fd(e), 20))
            continue;
        while ((k = sg_engine_drain(e, ev, 16)) > 0) {
            for (int j = 0; j < k; j++) {
                int s = (int)(intptr_t)ev[j].user;
                h->n_events++;
                if (ev[j].kind == SG_EV_TOKEN) {
                    h->n_tok[s]++;
                } else {
                    h->done[s] = ev[j].kind;
                    h->finish[s] = ev[j].finish;
                }
            }
        }
    }
    return h->n_events - before;
}

/*
 * The host's controls: the prefix cache's namespaces (one tenant's prompt
 * is never another's hit: before, a second tenant sending the same prompt
 * got 192 cached tokens and could so confirm its content), pause and
 * resume (a host whose client stops reading stops the generation), cancel
 * of a paused request.
 */
static void
test_engine_controls(void)
{
    sg_engine_opts  o;
    sg_engine      *e = NULL;
    sg_engine_stats st;
    char            err[256];
    host_log        h;
    int32_t         t[200];
    uint64_t        id;
    const char     *salts[] = { "tenant-a", "tenant-b", NULL, "tenant-a" };

    sg_engine_opts_default(&o);
    o.model_dir = model_dir;
    o.n_threads = 1;
    o.kv_bytes = 200 * 64 * 3 * 1000;
    o.prefill_chunk = 64;
    if (sg_engine_start(&o, &e, err, sizeof(err)) != 0) {
        CHECK(0, "controls_start", "%s", err);
        return;
    }
    for (int i = 0; i < 200; i++)
        t[i] = check_rand32() % sg_engine_model_info(e)->vocab_size;

    memset(&h, 0, sizeof(h));
    for (int r = 0; r < 4; r++) {
        sg_request q = {.prompt = t, .n_prompt = 200, .max_tokens = 2,
                        .user = (void *)(intptr_t)r, .ignore_eos = 1,
                        .cache_salt = salts[r],
                        .cache_salt_len = salts[r] ? strlen(salts[r]) : 0};
        sg_engine_submit(e, &q, NULL, err, sizeof(err));
        pump(e, &h, 4, r);
    }
    sg_engine_get_stats(e, &st);
    CHECK(h.cached[0] == 0 && h.cached[1] == 0 && h.cached[2] == 0
          && h.cached[3] == 192 && st.cache_namespaces == 2,
          "controls_cache_isolated_per_salt",
          "cached tokens %d (a), %d (b), %d (none), %d (a again), want 0 0 "
          "0 192; %d namespaces", h.cached[0], h.cached[1], h.cached[2],
          h.cached[3], st.cache_namespaces);

    /* pause after the first tokens: nothing comes until resumed */
    {
        sg_request q = {.prompt = t, .n_prompt = 100, .max_tokens = 400,
                        .user = (void *)(intptr_t)0, .ignore_eos = 1};
        int quiet, before;

        memset(&h, 0, sizeof(h));
        sg_engine_submit(e, &q, &id, err, sizeof(err));
        while (h.n_tok[0] < 2 && drain_for(e, &h, 50) >= 0
               && !h.done[0]) {
        }
        sg_engine_pause(e, id, 1);
        drain_for(e, &h, 200);        /* a step in flight may still land */
        before = h.n_tok[0];
        quiet = drain_for(e, &h, 500);
        sg_engine_get_stats(e, &st);
        CHECK(quiet == 0 && st.paused == 1 && st.running == 1 && !h.done[0]
              && before < 400, "controls_pause_stops_tokens",
              "%d events in 0.5 s while paused (%d tokens before), %d "
              "paused, %d running", quiet, before, st.paused, st.running);
        sg_engine_pause(e, id, 0);
        pump(e, &h, 1, 0);
        CHECK(h.done[0] == SG_EV_DONE && h.n_tok[0] == 400,
              "controls_resume_finishes", "done %d with %d tokens",
              h.done[0], h.n_tok[0]);
    }
    /* a paused request is cancelled like any other */
    {
        /* room for far more tokens than come before the pause lands: a
         * request that ran out first would end by length, not be cancelled */
        sg_request q = {.prompt = t, .n_prompt = 100, .max_tokens = 400,
                        .user = (void *)(intptr_t)0, .ignore_eos = 1};

        memset(&h, 0, sizeof(h));
        sg_engine_submit(e, &q, &id, err, sizeof(err));
        while (h.n_tok[0] < 1 && !h.done[0])
            drain_for(e, &h, 50);
        sg_engine_pause(e, id, 1);
        drain_for(e, &h, 100);
        sg_engine_cancel(e, id);
        sg_engine_cancel(e, id);            /* twice: one done */
        pump(e, &h, 1, 0);
        drain_for(e, &h, 100);
        sg_engine_get_stats(e, &st);
        CHECK(h.done[0] == SG_EV_DONE && h.finish[0] == SG_FINISH_CANCELLED
              && st.running == 0 && st.paused == 0
              && st.kv_blocks_used == st.kv_blocks_cached,
              "controls_cancel_paused", "done %d finish %d, %d running, %d "
              "used, %d cached", h.done[0], h.finish[0], st.running,
              st.kv_blocks_used, st.kv_blocks_cached);
        sg_engine_pause(e, id, 0);          /* finished: ignored */
        sg_engine_cancel(e, id);
    }
    sg_engine_stop(e);
}

int
main(void)
{
    sg_model_opts mo;
    model_ctx     mc = {0};
    char          err[512];

    check_seed_from_env();
    sanitized = getenv("SG_SANITIZED") != NULL;
    snprintf(model_dir, sizeof(model_dir), "%s/tiny-v32/bf16",
             check_fixtures_dir());
    sg_model_opts_default(&mo);
    mo.n_threads = 1;
    if (sg_model_load(model_dir, &mo, &mc.m, err, sizeof(err)) != 0) {
        CHECK(0, "load_fixture", "%s", err);
        return check_finish();
    }
    double t0 = seconds();
    test_prefix_hits(&mc);
    sg_model_free(mc.m);
    test_engine_controls();
    printf("# prefix hits: %.1f s\n", seconds() - t0);

    /* Batches change the GEMM shapes and so the rounding (this backend is
     * not batch-invariant), and FP8 caches and the FP8 indexer's top-k
     * turn rounding into visible changes.  The interleaving tests compare
     * tokens with dense attention and an exact cache, where a difference
     * stays at rounding size and tokens part only at a tie. */
    mo.num.dense = 1;
    mo.num.kv_fp8 = 0;
    if (sg_model_load(model_dir, &mo, &mc.m, err, sizeof(err)) != 0) {
        CHECK(0, "load_fixture_dense", "%s", err);
        return check_finish();
    }
    t0 = seconds();
    test_pressure(&mc);
    printf("# pressure: %.1f s\n", seconds() - t0);
    t0 = seconds();
    test_engine_api(&mc);
    printf("# engine api: %.1f s\n", seconds() - t0);
    sg_model_free(mc.m);
    return check_finish();
}
