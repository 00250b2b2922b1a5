/*
 * The scheduler with a fake model (fake_model.h: a token depends on its
 * whole prefix through the cache blocks, so a wrong reuse shows).
 *
 * Fuzzed random schedules of submits, cancels and steps check every
 * invariant after every step; each finished request is then rerun alone
 * (no cache, no company) and must give the same tokens.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "fake_model.h"
#include "model/kv.h"
#include "serve/sampling.h"
#include "serve/scheduler.h"

#define VOCAB FAKE_VOCAB

#define MAXREQ FAKE_MAXREQ
#define MAXGEN FAKE_MAXGEN

/* Collects the tokens of one request run alone. */
typedef struct solo {
    int32_t tok[MAXGEN];
    int     n;
    int     done;
} solo;

static void
solo_event(void *ctx, const sg_event *ev)
{
    solo *s = ctx;

    if (ev->kind == SG_EV_TOKEN && s->n < MAXGEN)
        s->tok[s->n++] = ev->token;
    else if (ev->kind != SG_EV_TOKEN)
        s->done = 1;
}

static sg_sched_opts
small_opts(int n_blocks, int prefix_cache)
{
    sg_sched_opts o = {
        .n_blocks = n_blocks, .max_running = 6, .max_queue = 12,
        .max_context = 4096, .step_tokens = 160, .prefill_chunk = 96,
        .prefix_cache = prefix_cache, .vocab = VOCAB, .eos_id = 0,
    };
    return o;
}

static sg_sched *
new_sched(fake *f, sg_sched_opts *o, sg_emit_fn emit, void *emit_ctx)
{
    char err[160];

    memset(f, 0, sizeof(*f));
    f->n_blocks = o->n_blocks;
    f->kv = calloc((size_t)o->n_blocks * SG_KV_BLOCK, sizeof(uint64_t));
    f->s = sg_sched_new(o, fake_step, f, emit, emit_ctx, err, sizeof(err));
    if (f->s == NULL)
        printf("# %s\n", err);
    return f->s;
}

static void
free_fake(fake *f)
{
    sg_sched_free(f->s);
    free(f->kv);
}

/* Runs a request alone, without cache, and compares its tokens. */
static int
same_as_alone(const fake_seen *r)
{
    fake          f;
    solo          out = {0};
    sg_sched_opts o = small_opts(200, 0);
    sg_request    q = {
        .prompt = r->prompt_ids, .n_prompt = r->n_prompt,
        .max_tokens = r->max_tokens, .temperature = r->temperature,
        .top_p = r->top_p, .seed = r->seed,
    };
    char          err[160];
    int           same;

    new_sched(&f, &o, solo_event, &out);
    sg_sched_submit(f.s, &q, 0, err, sizeof(err));
    for (int i = 0; i < 1000 && !out.done; i++)
        sg_sched_step(f.s);
    same = out.done && out.n == r->n_tok
        && memcmp(out.tok, r->tok, sizeof(int32_t) * out.n) == 0;
    free_fake(&f);
    return same;
}

/* Prompts over a few shared "documents" so that prefixes repeat. */
static int32_t docs[3][400];

static int
make_prompt(int32_t *t, int max)
{
    int d = check_rand32() % 3, shared = check_rand32() % 400;
    int n = shared + 1 + check_rand32() % 100;

    if (n > max)
        n = max;
    for (int i = 0; i < n; i++)
        t[i] = i < shared ? docs[d][i]
                          : (int32_t)(1 + check_rand32() % (VOCAB - 1));
    return n;
}

static void
fuzz(const char *name, int n_blocks, int fail_percent, int ops)
{
    fake          f;
    sg_sched_opts o = small_opts(n_blocks, 1);
    int           n_req = 0, inv_ok = 1, steps = 0, refused_ok = 1;
    int           busy = 0, toolong = 0, cancels = 0, hits = 0, errors = 0;
    char          err[200] = "", nm[96];

    memset(fake_reqs, 0, sizeof(fake_reqs));
    if (new_sched(&f, &o, fake_record, NULL) == NULL)
        return;
    f.fail_percent = fail_percent;

    for (int op = 0; op < ops && inv_ok; op++) {
        unsigned a = check_rand32() % 100;
        if (a < 25 && n_req < MAXREQ) {
            fake_seen *r = &fake_reqs[n_req];
            int32_t    t[600];
            int        n = make_prompt(t, 500);
            sg_request q;
            int        rc, want;

            /* Now and then a request the pool can never hold. */
            if (check_rand32() % 20 == 0) {
                for (int i = n; i < 500; i++)
                    t[i] = 1 + i % (VOCAB - 1);
                n = 500;
                r->max_tokens = n_blocks * SG_KV_BLOCK;
            }
            else
                r->max_tokens = 1 + check_rand32() % MAXGEN;
            r->prompt_ids = malloc(sizeof(int32_t) * n);
            memcpy(r->prompt_ids, t, sizeof(int32_t) * n);
            r->n_prompt = n;
            r->temperature = check_rand32() % 2 ? 0.0f : 0.9f;
            r->top_p = check_rand32() % 2 ? 1.0f : 0.7f;
            r->seed = check_rand32();
            q = (sg_request){
                .prompt = t, .n_prompt = n, .max_tokens = r->max_tokens,
                .temperature = r->temperature, .top_p = r->top_p,
                .seed = r->seed,
            };
            want = sg_sched_waiting(f.s) >= o.max_queue ? SG_EBUSY : SG_OK;
            if ((n + r->max_tokens - 1 + SG_KV_BLOCK - 1) / SG_KV_BLOCK
                > n_blocks)
            {
                want = SG_ETOOLONG;
            }
            rc = sg_sched_submit(f.s, &q, n_req, err, sizeof(err));
            if (rc != want && refused_ok)
                printf("# submit %d: got %d, want %d (n %d, max %d): %s\n",
                       n_req, rc, want, n, r->max_tokens, err);
            refused_ok &= rc == want;
            busy += rc == SG_EBUSY;
            toolong += rc == SG_ETOOLONG;
            r->accepted = rc == SG_OK;
            n_req++;
        } else if (a < 33 && n_req > 0) {
            cancels += sg_sched_cancel(f.s, check_rand32() % n_req) == 0;
        } else {
            sg_sched_step(f.s);
            steps++;
            if (sg_sched_check(f.s, err, sizeof(err)) != 0)
                inv_ok = 0;
        }
    }
    for (int i = 0; i < 100000 && inv_ok && !sg_sched_idle(f.s); i++) {
        sg_sched_step(f.s);
        if (sg_sched_check(f.s, err, sizeof(err)) != 0)
            inv_ok = 0;
    }

    snprintf(nm, sizeof(nm), "%s_invariants_every_step", name);
    CHECK(inv_ok && f.violations == 0, nm, "%s (%d bad writes/tables)", err,
          f.violations);
    snprintf(nm, sizeof(nm), "%s_refusals_as_expected", name);
    CHECK(refused_ok && toolong > 0, nm, "a submit result differed (%d "
          "too long, %d busy)", toolong, busy);
    snprintf(nm, sizeof(nm), "%s_drains_to_idle", name);
    CHECK(sg_sched_idle(f.s), nm, "requests left after the run");
    snprintf(nm, sizeof(nm), "%s_budget_respected", name);
    CHECK(f.max_batch_tokens <= o.step_tokens, nm, "a batch of %d tokens",
          f.max_batch_tokens);

    int events_ok = 1, alone_ok = 1, compared = 0, finished = 0;
    for (int i = 0; i < n_req; i++) {
        fake_seen *r = &fake_reqs[i];
        if (!r->accepted) {
            events_ok &= r->terminal == 0 && r->n_tok == 0;
            continue;
        }
        events_ok &= r->terminal == 1 && r->after_terminal == 0
            && r->n_tok == r->completion && r->prompt == r->n_prompt
            && r->n_tok <= r->max_tokens
            && r->cached <= r->n_prompt - 1;
        hits += r->cached > 0;
        errors += r->kind == SG_EV_ERROR;
        if (r->kind == SG_EV_DONE && r->finish != SG_FINISH_CANCELLED) {
            finished++;
            events_ok &= r->finish == SG_FINISH_STOP
                ? r->tok[r->n_tok - 1] == 0 : r->n_tok == r->max_tokens;
            if (compared < 60) {
                alone_ok &= same_as_alone(r);
                compared++;
            }
        }
    }
    snprintf(nm, sizeof(nm), "%s_one_terminal_event_each", name);
    CHECK(events_ok, nm, "event stream broken");
    snprintf(nm, sizeof(nm), "%s_same_tokens_as_alone", name);
    CHECK(alone_ok && compared > 5, nm, "a request's tokens changed with "
          "company or cache (%d compared)", compared);
    snprintf(nm, sizeof(nm), "%s_prefix_hits_happen", name);
    CHECK(hits > 0, nm, "no prefix hit");
    if (fail_percent) {
        snprintf(nm, sizeof(nm), "%s_model_errors_fail_requests", name);
        CHECK(errors > 0, nm, "no request saw the injected errors");
    }
    printf("# %s: %d requests, %d finished, %d cancelled by id, %d hits, "
           "%d errors, %d busy, %d steps\n", name, n_req, finished, cancels,
           hits, errors, busy, steps);

    sg_block_pool *p = sg_sched_pool(f.s);
    sg_prefix_cache *pc = sg_sched_cache(f.s);
    sg_engine_stats st;
    sg_sched_stats(f.s, &st);
    printf("# %s: %llu blocks evicted\n", name,
           (unsigned long long)st.kv_blocks_evicted);
    snprintf(nm, sizeof(nm), "%s_pool_back_to_start", name);
    CHECK(sg_block_pool_used(p) == sg_prefix_cache_nodes(pc)
          && sg_prefix_cache_evictable(pc) == sg_prefix_cache_nodes(pc), nm,
          "%d used, %d cached", sg_block_pool_used(p),
          sg_prefix_cache_nodes(pc));
    while (sg_prefix_cache_evict_one(pc))
        ;
    snprintf(nm, sizeof(nm), "%s_pool_empty_after_eviction", name);
    CHECK(p->n_free == n_blocks, nm, "%d of %d free", p->n_free, n_blocks);

    for (int i = 0; i < n_req; i++)
        free(fake_reqs[i].prompt_ids);
    free_fake(&f);
}

/* Scripted admission: waits while the pool is taken, refuses what can
 * never fit, a full queue answers busy; cancellation frees at once. */
static void
test_admission(void)
{
    fake          f;
    sg_sched_opts o = small_opts(10, 0);
    int32_t       t[400];
    char          err[200] = "";
    sg_request    q = {.prompt = t, .n_prompt = 400, .max_tokens = 100,
                       .ignore_eos = 1};

    o.max_queue = 2;
    o.max_running = 4;
    memset(fake_reqs, 0, sizeof(fake_reqs));
    new_sched(&f, &o, fake_record, NULL);
    for (int i = 0; i < 400; i++)
        t[i] = 1 + i % 60;
    /* 499 tokens of KV: 8 blocks; two cannot run at once in 10. */
    CHECK(sg_sched_submit(f.s, &q, 0, err, sizeof(err)) == SG_OK
          && sg_sched_submit(f.s, &q, 1, err, sizeof(err)) == SG_OK,
          "admit_two_submitted", "%s", err);
    CHECK(sg_sched_submit(f.s, &q, 2, err, sizeof(err)) == SG_EBUSY,
          "admit_queue_full_is_busy", "third submit not refused");
    sg_sched_step(f.s);
    sg_engine_stats st;
    sg_sched_stats(f.s, &st);
    CHECK(st.running == 1 && st.queued == 1, "admit_second_waits_for_blocks",
          "%d running, %d queued", st.running, st.queued);
    q.max_tokens = 300;
    CHECK(sg_sched_submit(f.s, &q, 3, err, sizeof(err)) == SG_ETOOLONG
          && strstr(err, "pool") != NULL, "admit_never_fits_clear_error",
          "got '%s'", err);
    printf("# refusal: %s\n", err);
    q.max_tokens = 100;
    t[0] = VOCAB + 5;
    CHECK(sg_sched_submit(f.s, &q, 3, err, sizeof(err)) == SG_EINVAL
          && strstr(err, "vocabulary") != NULL, "admit_bad_token_clear_error",
          "got '%s'", err);
    t[0] = 1;

    sg_sched_cancel(f.s, 0);
    CHECK(fake_reqs[0].terminal && fake_reqs[0].finish == SG_FINISH_CANCELLED
          && sg_block_pool_used(sg_sched_pool(f.s)) == 0,
          "cancel_frees_blocks_at_once", "%d blocks used",
          sg_block_pool_used(sg_sched_pool(f.s)));
    sg_sched_step(f.s);
    sg_sched_stats(f.s, &st);
    CHECK(st.running == 1 && st.queued == 0, "admit_waiting_runs_after_cancel",
          "%d running, %d queued", st.running, st.queued);
    sg_sched_step(f.s);
    sg_sched_cancel_all(f.s);
    CHECK(sg_sched_idle(f.s) && sg_sched_pool(f.s)->n_free == 10
          && fake_reqs[1].finish == SG_FINISH_CANCELLED,
          "cancel_all_returns_pool", "%d free",
          sg_sched_pool(f.s)->n_free);
    sg_sched_stats(f.s, &st);
    CHECK(st.requests_cancelled == 2 && st.requests_refused == 3,
          "admit_stats_count", "%llu cancelled, %llu refused",
          (unsigned long long)st.requests_cancelled,
          (unsigned long long)st.requests_refused);
    free_fake(&f);
}

/* Chunked prefill keeps decodes flowing: while a long prompt is being
 * prefilled, a running request gets a token every step. */
static void
test_chunked_prefill(void)
{
    fake          f;
    sg_sched_opts o = small_opts(100, 0);
    int32_t       a[10], b[2000];
    char          err[160];
    int           steps = 0, ok = 1;

    memset(fake_reqs, 0, sizeof(fake_reqs));
    new_sched(&f, &o, fake_record, NULL);
    for (int i = 0; i < 2000; i++)
        b[i] = 1 + i % 50;
    for (int i = 0; i < 10; i++)
        a[i] = 1 + i;
    sg_request qa = {.prompt = a, .n_prompt = 10, .max_tokens = 40,
                     .ignore_eos = 1};
    sg_request qb = {.prompt = b, .n_prompt = 2000, .max_tokens = 2,
                     .ignore_eos = 1};
    sg_sched_submit(f.s, &qa, 0, err, sizeof(err));
    sg_sched_step(f.s);                  /* a prefilled, first token */
    sg_sched_submit(f.s, &qb, 1, err, sizeof(err));
    while (fake_reqs[1].n_tok == 0 && steps < 100) {
        int before = fake_reqs[0].n_tok;
        sg_sched_step(f.s);
        steps++;
        if (fake_reqs[0].n_tok < 40)
            ok &= fake_reqs[0].n_tok == before + 1;
    }
    CHECK(ok && steps >= 2000 / 160, "chunked_prefill_decodes_flow",
          "decode stalled during a %d-step prefill", steps);
    CHECK(f.max_batch_tokens <= o.step_tokens, "chunked_prefill_budget",
          "%d tokens in a step", f.max_batch_tokens);
    free_fake(&f);
}

/* A prefix hit: same tokens, cached tokens reported, whole-block reuse,
 * at least the last prompt token computed. */
static void
test_prefix_hit(void)
{
    fake          f;
    sg_sched_opts o = small_opts(40, 1);
    int32_t       t[256];
    char          err[160];

    memset(fake_reqs, 0, sizeof(fake_reqs));
    new_sched(&f, &o, fake_record, NULL);
    for (int i = 0; i < 256; i++)
        t[i] = 1 + check_rand32() % (VOCAB - 1);
    for (int k = 0; k < 3; k++) {
        /* 256 tokens (4 full blocks: only 3 may be reused), then 200. */
        sg_request q = {.prompt = t, .n_prompt = k < 2 ? 256 : 200,
                        .max_tokens = 8, .ignore_eos = 1};
        sg_sched_submit(f.s, &q, k, err, sizeof(err));
        for (int i = 0; i < 100 && !fake_reqs[k].terminal; i++)
            sg_sched_step(f.s);
    }
    CHECK(fake_reqs[0].cached == 0 && fake_reqs[1].cached == 192
          && fake_reqs[2].cached == 192, "prefix_hit_cached_tokens",
          "cached %d, %d, %d", fake_reqs[0].cached, fake_reqs[1].cached,
          fake_reqs[2].cached);
    CHECK(fake_reqs[1].n_tok == 8
          && memcmp(fake_reqs[0].tok, fake_reqs[1].tok, sizeof(int32_t) * 8) == 0,
          "prefix_hit_same_tokens", "tokens differ after a hit");
    CHECK(f.violations == 0, "prefix_hit_no_shared_writes", "%d",
          f.violations);
    free_fake(&f);
}

/* Sampling against the plain definition: greedy is the argmax, and the
 * empirical frequencies of temperature / top_p draws match the softmax of
 * logits / T restricted to the nucleus (total variation distance). */
static void
test_sampling(void)
{
    enum { V = 12, DRAWS = 60000 };
    float      logits[V], p[V], work[V];
    int32_t    idx[V];
    sg_sampler sm;
    int        ok_greedy;
    char       nm[80];

    for (int i = 0; i < V; i++)
        logits[i] = check_randn() * 2;
    for (int set = 0; set < 2; set++) {
        /* The second set spans many orders of magnitude, so that the
         * nucleus reaches tokens far below the likeliest one. */
        if (set == 1)
            for (int i = 0; i < V; i++)
                logits[i] = -1.7f * (float)((i * 5) % V);
        sg_sampler_init(&sm, 0.0f, 1.0f, 1);
        ok_greedy = sg_sample(&sm, logits, V, work, idx)
                    == sg_sample_argmax(logits, V);
        sg_sampler_init(&sm, 1.0f, 0.0f, 1);
        ok_greedy &= sg_sample(&sm, logits, V, work, idx)
                     == sg_sample_argmax(logits, V);
        snprintf(nm, sizeof(nm), "sampling_%d_greedy_and_top_p_zero_are_argmax",
                 set);
        CHECK(ok_greedy, nm, "not the argmax");

        float temps[2] = {0.7f, 1.5f}, tops[2] = {1.0f, set ? 0.99999f : 0.8f};
        for (int a = 0; a < 2; a++) {
            for (int b = 0; b < 2; b++) {
                double ref[V], cnt[V] = {0}, sum = 0, mx = -1e30, tv = 0;
                int    order[V];
                for (int i = 0; i < V; i++)
                    mx = logits[i] > mx ? logits[i] : mx;
                for (int i = 0; i < V; i++) {
                    ref[i] = exp((logits[i] - mx) / temps[a]);
                    sum += ref[i];
                    order[i] = i;
                }
                /* nucleus: the most likely tokens until top_p of the mass */
                for (int i = 0; i < V; i++)
                    for (int j = i + 1; j < V; j++)
                        if (ref[order[j]] > ref[order[i]]) {
                            int t = order[i];
                            order[i] = order[j];
                            order[j] = t;
                        }
                double acc = 0, kept = 0;
                int    in[V] = {0};
                for (int i = 0; i < V; i++) {
                    in[order[i]] = 1;
                    acc += ref[order[i]];
                    if (tops[b] < 1 && acc >= tops[b] * sum)
                        break;
                }
                for (int i = 0; i < V; i++)
                    kept += in[i] ? ref[i] : 0;
                sg_sampler_init(&sm, temps[a], tops[b], check_rand32());
                for (int d = 0; d < DRAWS; d++)
                    cnt[sg_sample(&sm, logits, V, p, idx)]++;
                for (int i = 0; i < V; i++)
                    tv += fabs(cnt[i] / DRAWS - (in[i] ? ref[i] / kept : 0));
                tv /= 2;
                snprintf(nm, sizeof(nm),
                         "sampling_distribution_%d_T%.1f_top_p%g", set,
                         temps[a], tops[b]);
                /* 60000 draws over 12 outcomes: sampling noise ~0.005 */
                CHECK(tv < 0.02, nm, "total variation %.4f", tv);
            }
        }
    }

    /* The same seed gives the same draws; another seed others. */
    sg_sampler s1, s2, s3;
    int        same = 1, differ = 0;
    sg_sampler_init(&s1, 1.0f, 0.9f, 42);
    sg_sampler_init(&s2, 1.0f, 0.9f, 42);
    sg_sampler_init(&s3, 1.0f, 0.9f, 43);
    for (int d = 0; d < 200; d++) {
        int32_t x = sg_sample(&s1, logits, V, p, idx);
        same &= x == sg_sample(&s2, logits, V, p, idx);
        differ += x != sg_sample(&s3, logits, V, p, idx);
    }
    CHECK(same && differ > 0, "sampling_seeded", "same %d, differ %d", same,
          differ);
}

/* A burst of requests over one long document: the later ones wait for
 * the first to cache it instead of computing it again; a short prompt
 * that shares little does not wait. */
static void
test_burst(void)
{
    fake          f;
    sg_sched_opts o = small_opts(100, 1);
    int32_t       doc[640], other[300];
    char          err[160];

    memset(fake_reqs, 0, sizeof(fake_reqs));
    new_sched(&f, &o, fake_record, NULL);
    for (int i = 0; i < 640; i++)
        doc[i] = 1 + check_rand32() % (VOCAB - 1);
    for (int i = 0; i < 300; i++)
        other[i] = i < 64 ? doc[i] : 1 + (int32_t)(check_rand32() % 60);
    sg_request q = {.prompt = doc, .n_prompt = 640, .max_tokens = 4,
                    .ignore_eos = 1};
    sg_request q2 = {.prompt = other, .n_prompt = 300, .max_tokens = 4,
                     .ignore_eos = 1};
    sg_sched_submit(f.s, &q, 0, err, sizeof(err));
    sg_sched_submit(f.s, &q, 1, err, sizeof(err));
    sg_sched_submit(f.s, &q, 2, err, sizeof(err));
    for (int i = 0; i < 200 && !sg_sched_idle(f.s); i++) {
        sg_sched_step(f.s);
        if (i == 0)
            sg_sched_submit(f.s, &q2, 3, err, sizeof(err));
    }
    CHECK(fake_reqs[1].cached == 576 && fake_reqs[2].cached == 576,
          "burst_waits_for_shared_prefix", "cached %d and %d (want 576)",
          fake_reqs[1].cached, fake_reqs[2].cached);
    CHECK(f.total_tokens <= 640 + 2 * 64 + 300 + 4 * 3, "burst_computes_once",
          "%ld tokens computed", f.total_tokens);
    CHECK(memcmp(fake_reqs[0].tok, fake_reqs[1].tok, sizeof(int32_t) * 4) == 0
          && memcmp(fake_reqs[0].tok, fake_reqs[2].tok, sizeof(int32_t) * 4) == 0
          && fake_reqs[3].terminal, "burst_same_tokens", "tokens differ");
    free_fake(&f);
}

int
main(void)
{
    check_seed_from_env();
    for (int d = 0; d < 3; d++)
        for (int i = 0; i < 400; i++)
            docs[d][i] = 1 + check_rand32() % (VOCAB - 1);
    test_sampling();
    test_admission();
    test_chunked_prefill();
    test_prefix_hit();
    test_burst();
    fuzz("fuzz_roomy", 120, 0, 3000);
    fuzz("fuzz_tight", 24, 0, 3000);
    fuzz("fuzz_errors", 40, 3, 2000);
    return check_finish();
}
