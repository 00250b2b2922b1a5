/*
 * The sampling pipeline against its plain definitions:
 *  - top_k, min_p and their mix with top_p: the empirical frequencies of
 *    the draws match the softmax restricted to the set the definitions
 *    keep (total variation), and the kept set never depends on the order
 *    of equal logits;
 *  - penalties (repetition: HF/vLLM's rule; frequency and presence:
 *    OpenAI's) and logit_bias on a known vector;
 *  - logprobs equal log softmax(logits / T) computed in doubles, the top
 *    ones largest first, ties by id, -inf never listed;
 *  - through the scheduler (a fake model): a script is emitted as given
 *    and its tokens carry logprobs; logit_bias of +100 makes a token the
 *    greedy choice; a grammar on DeepSeek's real vocabulary makes every
 *    output complete JSON and ends the request when it is complete.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "check.h"
#include "grammar.h"
#include "serve/sampling.h"
#include "serve/scheduler.h"

/* ------------------------------------------------------------ draws */

static double
tv_distance(const double *cnt, int draws, const double *want, int v)
{
    double tv = 0;

    for (int i = 0; i < v; i++)
        tv += fabs(cnt[i] / draws - want[i]);
    return tv / 2;
}

static void
test_truncations(void)
{
    enum { V = 16, DRAWS = 60000 };
    float      logits[V], p[V];
    int32_t    idx[V];
    double     ref[V], mx = -1e30;
    sg_sampler sm;

    for (int i = 0; i < V; i++) {
        logits[i] = check_randn() * 1.5f;
        mx = logits[i] > mx ? logits[i] : mx;
    }
    for (int i = 0; i < V; i++)
        ref[i] = exp((logits[i] - mx) / 0.8);

    for (int c = 0; c < 4; c++) {
        int    top_k = c == 0 || c == 2 ? 5 : 0;
        float  min_p = c == 1 || c == 2 ? 0.2f : 0, top_p = c >= 2 ? 0.7f : 1;
        double want[V], cnt[V] = {0}, kept = 0, mass = 0, sum = 0;
        int    in[V], order[V];
        char   nm[80];

        for (int i = 0; i < V; i++) {
            order[i] = i;
            in[i] = 1;
        }
        for (int i = 0; i < V; i++)      /* by probability, largest first */
            for (int j = i + 1; j < V; j++)
                if (ref[order[j]] > ref[order[i]]) {
                    int t = order[i];
                    order[i] = order[j];
                    order[j] = t;
                }
        for (int r = 0; r < V; r++) {
            if (top_k && r >= top_k)
                in[order[r]] = 0;
            if (ref[order[r]] < min_p)   /* ref is relative to the max */
                in[order[r]] = 0;
        }
        for (int i = 0; i < V; i++)
            sum += in[i] ? ref[i] : 0;
        if (top_p < 1) {
            int stop = 0;
            for (int r = 0; r < V; r++) {
                if (!in[order[r]])
                    continue;
                if (stop)
                    in[order[r]] = 0;
                mass += ref[order[r]];
                if (mass >= top_p * sum)
                    stop = 1;
            }
        }
        for (int i = 0; i < V; i++)
            kept += in[i] ? ref[i] : 0;
        for (int i = 0; i < V; i++)
            want[i] = in[i] ? ref[i] / kept : 0;
        sg_sampler_init(&sm, 0.8f, top_p, check_rand32());
        sm.top_k = top_k;
        sm.min_p = min_p;
        for (int d = 0; d < DRAWS; d++)
            cnt[sg_sample(&sm, logits, V, p, idx)]++;
        snprintf(nm, sizeof(nm), "truncation_k%d_minp%.1f_topp%.1f", top_k,
                 min_p, top_p);
        CHECK(tv_distance(cnt, DRAWS, want, V) < 0.02, nm,
              "total variation %.4f", tv_distance(cnt, DRAWS, want, V));
    }

    /* equal logits: top_k keeps the lowest ids, whatever the layout */
    {
        float   flat[40];
        int     bad = 0;
        for (int i = 0; i < 40; i++)
            flat[i] = 1.0f;
        sg_sampler_init(&sm, 1.0f, 1.0f, 7);
        sm.top_k = 3;
        for (int d = 0; d < 2000; d++) {
            float   pp[40];
            int32_t ii[40];
            bad += sg_sample(&sm, flat, 40, pp, ii) >= 3;
        }
        CHECK(bad == 0, "top_k_ties_by_id", "%d draws past id 2", bad);
    }
}

static void
test_penalties(void)
{
    float     l[6] = { 2, -2, 1, 0.5f, -1, 3 };
    sg_counts c = { 0 };
    int       ok;

    /* prompt: 0, 1; generated: 2 twice, 0 once */
    sg_counts_add(&c, 0, 0);
    sg_counts_add(&c, 1, 0);
    sg_counts_add(&c, 2, 1);
    sg_counts_add(&c, 2, 1);
    sg_counts_add(&c, 0, 1);
    sg_penalize(l, &c, 2.0f, 0.5f, 0.25f);
    /* 0: 2/2 - (0.5*1 + 0.25) = 0.25; 1: -2*2 = -4; 2: 1/2 - (1 + 0.25)
     * = -0.75; the rest untouched */
    ok = fabsf(l[0] - 0.25f) < 1e-6 && fabsf(l[1] + 4) < 1e-6
         && fabsf(l[2] + 0.75f) < 1e-6 && l[3] == 0.5f && l[4] == -1
         && l[5] == 3;
    CHECK(ok, "penalties_rules", "got %g %g %g %g %g %g", l[0], l[1], l[2],
          l[3], l[4], l[5]);
    sg_counts_free(&c);
}

static void
test_logprobs(void)
{
    enum { V = 50 };
    float   l[V], lp, top_lp[8];
    int32_t top[8];
    double  mx = -1e30, sum = 0, err = 0;
    int     n, order_ok = 1;

    for (int i = 0; i < V; i++) {
        l[i] = check_randn() * 3;
        mx = l[i] > mx ? l[i] : mx;
    }
    /* a tie at the top: above every draw, which a fixed value is not (one
     * normal draw in ~600 passes 3 sigma) */
    mx = (float)mx + 1.0f;
    l[7] = l[8] = (float)mx;
    l[20] = -INFINITY;
    for (int i = 0; i < V; i++)
        sum += isinf(l[i]) ? 0 : exp((l[i] - mx) / 0.7);
    n = sg_logprobs(l, V, 0.7f, 3, &lp, 8, top, top_lp);
    err = fabs(lp - ((l[3] - mx) / 0.7 - log(sum)));
    for (int j = 0; j < n; j++) {
        double want = (l[top[j]] - mx) / 0.7 - log(sum);
        err = fmax(err, fabs(top_lp[j] - want));
        if (j > 0 && (l[top[j]] > l[top[j - 1]]
                      || (l[top[j]] == l[top[j - 1]] && top[j] < top[j - 1])))
            order_ok = 0;
    }
    CHECK(n == 8 && err < 1e-5 && order_ok && top[0] == 7 && top[1] == 8,
          "logprobs_exact", "n %d, err %g, order %d, top %d %d", n, err,
          order_ok, top[0], top[1]);
    n = sg_logprobs(l, 3, 0.0f, 0, &lp, 8, top, top_lp);
    CHECK(n == 3, "logprobs_few_tokens", "found %d of 3", n);
}

/* ------------------------------------------------ through the scheduler */

typedef struct fake {
    int vocab;
} fake;

/* Logits drawn from the position and the last token: a model enough for
 * sampling. */
static int
fake_step(void *ctx, sg_batch_item *items, int n, char *err, int errlen)
{
    fake *f = ctx;

    for (int i = 0; i < n; i++) {
        uint32_t h = (uint32_t)(items[i].seq->n_tokens * 2654435761u)
                     ^ (uint32_t)items[i].tokens[items[i].n_tokens - 1];
        items[i].seq->n_tokens += items[i].n_tokens;
        if (items[i].logits == NULL)
            continue;
        for (int t = 0; t < f->vocab; t++) {
            h = h * 1664525u + 1013904223u;
            items[i].logits[t] = (float)(h >> 8) / (float)(1 << 24) * 4.0f;
        }
    }
    return 0;
}

typedef struct got {
    int32_t tok[256];
    float   lp[256];
    int     n_top[256];
    int     n, done, finish, errors;
    char    message[160];
} got;

static void
on_event(void *ctx, const sg_event *ev)
{
    got *g = ctx;

    if (ev->kind == SG_EV_TOKEN && g->n < 256) {
        g->tok[g->n] = ev->token;
        g->lp[g->n] = ev->logprob;
        g->n_top[g->n] = ev->n_top;
        g->n++;
    } else if (ev->kind == SG_EV_DONE) {
        g->done = 1;
        g->finish = ev->finish;
    } else if (ev->kind == SG_EV_ERROR) {
        g->errors++;
        snprintf(g->message, sizeof(g->message), "%s", ev->message);
    }
}

static int
run(int vocab, const sg_request *q, got *out)
{
    fake          f = { vocab };
    sg_sched_opts o = {
        .n_blocks = 64, .max_running = 2, .max_queue = 4,
        .max_context = 4096, .step_tokens = 256, .prefill_chunk = 64,
        .prefix_cache = 0, .vocab = vocab, .eos_id = 1,
    };
    char          err[160];
    sg_sched     *s = sg_sched_new(&o, fake_step, &f, on_event, out, err,
                                   sizeof(err));
    int           rc;

    memset(out, 0, sizeof(*out));
    if (s == NULL)
        return -1;
    rc = sg_sched_submit(s, q, 0, err, sizeof(err));
    if (rc != SG_OK) {
        printf("# submit: %s\n", err);
        sg_sched_free(s);
        return -1;
    }
    for (int i = 0; i < 1000 && !sg_sched_idle(s); i++)
        sg_sched_step(s);
    sg_sched_free(s);
    return 0;
}

static void
test_scheduler(void)
{
    int32_t    prompt[5] = { 3, 4, 5, 6, 7 }, script[4] = { 9, 8, 1, 2 };
    int32_t    bias_id = 42;
    float      bias = 100;
    got        g;
    sg_request q = { .prompt = prompt, .n_prompt = 5, .max_tokens = 6,
                     .temperature = 0.9f, .top_p = 1, .seed = 5,
                     .script = script, .n_script = 3, .logprobs = 1,
                     .top_logprobs = 4 };
    int        ok;

    ok = run(64, &q, &g) == 0 && g.n == 3 && g.tok[0] == 9 && g.tok[1] == 8
         && g.tok[2] == 1 && g.done && g.finish == SG_FINISH_STOP;
    CHECK(ok, "script_is_emitted", "%d tokens: %d %d %d, finish %d", g.n,
          g.tok[0], g.tok[1], g.tok[2], g.finish);
    CHECK(g.n == 3 && g.lp[0] < 0 && g.n_top[0] == 4 && g.n_top[2] == 4,
          "script_tokens_have_logprobs", "logprob %g, %d top", g.lp[0],
          g.n_top[0]);

    memset(&q, 0, sizeof(q));
    q.prompt = prompt;
    q.n_prompt = 5;
    q.max_tokens = 5;
    q.ignore_eos = 1;
    q.bias_ids = &bias_id;
    q.bias_values = &bias;
    q.n_bias = 1;
    ok = run(64, &q, &g) == 0 && g.n == 5;
    for (int i = 0; ok && i < g.n; i++)
        ok = g.tok[i] == 42;
    CHECK(ok, "logit_bias_forces_greedy", "%d tokens, first %d", g.n,
          g.tok[0]);

    /* repetition penalty 1e6: a greedy run never repeats a token */
    q.n_bias = 0;
    q.max_tokens = 20;
    q.repetition_penalty = 1e6f;
    ok = run(64, &q, &g) == 0 && g.n == 20;
    for (int i = 0; ok && i < g.n; i++) {
        for (int j = 0; j < i; j++)
            ok &= g.tok[i] != g.tok[j];
        for (int j = 0; j < 5; j++)
            ok &= g.tok[i] != prompt[j];
    }
    CHECK(ok, "repetition_penalty_applies", "a token repeats");
}

static void
test_scheduler_grammar(void)
{
    char          err[256];
    sg_tokenizer *t = NULL;
    sg_vocab     *v;
    sg_grammar   *gr;
    int32_t       prompt[3] = { 100, 200, 300 };
    int           bad = 0, runs = getenv("SG_SANITIZED") ? 3 : 12;
    char          first[300] = "";

    if (sg_tokenizer_load(check_npm_tokenizer(), &t, err, sizeof(err))
        != 0) {
        CHECK(0, "grammar_in_scheduler", "%s", err);
        return;
    }
    v = sg_vocab_new(t, 129280, err, sizeof(err));
    gr = v ? sg_grammar_json(v, NULL, 0, NULL, err, sizeof(err)) : NULL;
    if (gr == NULL) {
        CHECK(0, "grammar_in_scheduler", "%s", err);
        sg_tokenizer_free(t);
        sg_vocab_free(v);
        return;
    }
    for (int r = 0; r < runs; r++) {
        got       *g = malloc(sizeof(got));
        sg_request q = { .prompt = prompt, .n_prompt = 3,
                         .max_tokens = 4 + r * 3, .temperature = 1,
                         .top_p = 1, .seed = (uint64_t)r, .grammar = gr };
        char      *text;
        size_t     len;
        cJSON     *j;

        if (run(129280, &q, g) != 0 || g->errors) {
            bad++;
            snprintf(first, sizeof(first), "run failed: %s", g->message);
            free(g);
            continue;
        }
        /* the EOS that ends it is no text */
        if (g->n > 0 && g->tok[g->n - 1] == sg_tokenizer_eos(t))
            g->n--;
        sg_tokenizer_decode(t, g->tok, g->n, &text, &len);
        j = cJSON_ParseWithLengthOpts(text, len + 1, NULL, 1);
        if (!cJSON_IsObject(j) || !g->done) {
            if (!bad)
                snprintf(first, sizeof(first), "%.200s", text);
            bad++;
        }
        cJSON_Delete(j);
        free(text);
        free(g);
    }
    CHECK(bad == 0, "grammar_in_scheduler", "%d of %d outputs not complete "
          "JSON objects: %s", bad, runs, first);
    sg_grammar_unref(gr);
    sg_vocab_free(v);
    sg_tokenizer_free(t);
}

int
main(void)
{
    check_seed_from_env();
    test_truncations();
    test_penalties();
    test_logprobs();
    test_scheduler();
    test_scheduler_grammar();
    return check_finish();
}
