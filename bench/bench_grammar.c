/*
 * Constrained decoding's cost per token at DeepSeek's real vocabulary
 * (129,280 ids), next to a decode step of a model, in the same run:
 *
 *   bench_grammar TOKENIZER_JSON [MODEL_DIR [RUNS]]
 *
 * For json_object, three JSON Schemas and DSML tool calls: RUNS
 * generations that draw uniformly among the allowed tokens (what a
 * random-weight model does, and the hardest case for the mask cache: it
 * wanders into every state), 16 to 64 tokens each.  Timed: each step's
 * sg_grammar_mask (over the whole logits row) and sg_grammar_advance;
 * counted: masks, cache misses (a walk of the vocabulary; their masks
 * timed apart).  With
 * MODEL_DIR, the engine decodes 64 tokens of one greedy request there and
 * its mean time per token is the step the grammar is compared with.
 * Prints one JSON object per line.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <poll.h>

#include "bench_clock.h"
#include "grammar.h"
#include "sparsegate.h"
#include "tokenizer.h"

#define VOCAB 129280

static unsigned rng = 12345;

static unsigned
next_rand(void)
{
    rng = rng * 1664525u + 1013904223u;
    return rng >> 8;
}

static const char tools[] =
    "[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
    "\"parameters\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":"
    "\"string\"},\"days\":{\"type\":\"integer\"},\"unit\":{\"enum\":[\"c\","
    "\"f\"]}},\"required\":[\"city\"]}}},{\"type\":\"function\",\"function\":"
    "{\"name\":\"get_time\",\"parameters\":{\"type\":\"object\","
    "\"properties\":{\"zone\":{\"type\":\"string\"}}}}}]";

static const char *const schemas[] = {
    NULL,
    "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"},"
    "\"age\":{\"type\":\"integer\"},\"ok\":{\"type\":\"boolean\"}},"
    "\"required\":[\"name\",\"age\",\"ok\"]}",
    "{\"type\":\"object\",\"properties\":{\"items\":{\"type\":\"array\","
    "\"items\":{\"type\":\"object\",\"properties\":{\"id\":{\"type\":"
    "\"integer\"},\"tag\":{\"enum\":[\"red\",\"green\",null]}},"
    "\"required\":[\"id\",\"tag\"]},\"maxItems\":3}},"
    "\"required\":[\"items\"]}",
    "{\"type\":\"array\",\"items\":{\"type\":[\"number\",\"string\"]}}",
};
static const char *const names[] = { "json_object", "schema_flat",
                                     "schema_nested", "schema_array",
                                     "dsml_tools" };

static void
run(const sg_vocab *v, const sg_tokenizer *t, int which, int runs,
    float *logits)
{
    char              err[256];
    sg_grammar       *g;
    sg_grammar_stats  st;
    double            t_mask = 0, t_adv = 0, t_miss = 0, t0, t1, hot;
    uint64_t          before;
    long              tokens = 0;

    g = which < 4 ? sg_grammar_json(v, schemas[which],
                                    schemas[which] ? strlen(schemas[which])
                                                   : 0, NULL, err,
                                    sizeof(err))
                  : sg_grammar_tool_calls(v, tools, strlen(tools), NULL, 1,
                                          NULL, err, sizeof(err));
    if (g == NULL) {
        fprintf(stderr, "%s: %s\n", names[which], err);
        return;
    }
    for (int r = 0; r < runs; r++) {
        sg_grammar_state *s = sg_grammar_state_new(g);
        int budget = sg_grammar_min_bytes(g) + 16 + (int)(next_rand() % 48);

        for (int left = budget; left > 0; left--) {
            int n, pick, k = 0;
            int32_t id = -1;

            memset(logits, 0, sizeof(float) * VOCAB);
            sg_grammar_get_stats(g, &st);
            before = st.misses;
            t0 = now();
            n = sg_grammar_mask(s, left, logits, VOCAB);
            t1 = now() - t0;
            t_mask += t1;
            sg_grammar_get_stats(g, &st);
            if (st.misses > before)
                t_miss += t1;
            if (n <= 0)
                break;
            pick = (int)(next_rand() % (unsigned)n);
            for (int i = 0; i < VOCAB; i++) {
                if (logits[i] == 0 && k++ == pick) {
                    id = i;
                    break;
                }
            }
            t0 = now();
            n = sg_grammar_advance(s, id);
            t_adv += now() - t0;
            tokens++;
            if (n != 0)
                break;
        }
        sg_grammar_state_free(s);
    }
    sg_grammar_get_stats(g, &st);

    /* a cached state's mask alone: the same state again and again */
    {
        sg_grammar_state *s = sg_grammar_state_new(g);
        int reps = 2000;
        sg_grammar_mask(s, 1000, logits, VOCAB);
        t0 = now();
        for (int i = 0; i < reps; i++)
            sg_grammar_mask(s, 1000, logits, VOCAB);
        hot = (now() - t0) / reps;
        sg_grammar_state_free(s);
    }
    printf("{\"grammar\": \"%s\", \"runs\": %d, \"tokens\": %ld, "
           "\"masks\": %llu, \"misses\": %llu, \"us_per_token\": %.1f, "
           "\"us_mask_cached\": %.1f, \"ms_per_miss\": %.2f, "
           "\"us_advance\": %.2f}\n", names[which], runs, tokens,
           (unsigned long long)st.masks, (unsigned long long)st.misses,
           (t_mask + t_adv) / tokens * 1e6, hot * 1e6,
           st.misses ? t_miss / st.misses * 1e3 : 0.0,
           t_adv / tokens * 1e6);
    fflush(stdout);
    (void)t;
    sg_grammar_unref(g);
}

/* The engine's mean time per decoded token, one greedy request. */
static double
decode_step(const char *dir)
{
    sg_engine_opts o;
    sg_engine     *e;
    sg_request     q;
    sg_event       ev[64];
    int32_t        prompt[256];
    char           err[256];
    double         first = 0, last = 0;
    int            n_tok = 0, done = 0;

    sg_engine_opts_default(&o);
    o.model_dir = dir;
    if (sg_engine_start(&o, &e, err, sizeof(err)) != 0) {
        fprintf(stderr, "engine: %s\n", err);
        return 0;
    }
    for (int i = 0; i < 256; i++)
        prompt[i] = 100 + (int32_t)(next_rand() % 100000);
    memset(&q, 0, sizeof(q));
    q.prompt = prompt;
    q.n_prompt = 256;
    q.max_tokens = 65;
    q.top_p = 1;
    q.ignore_eos = 1;
    if (sg_engine_submit(e, &q, NULL, err, sizeof(err)) != SG_OK) {
        fprintf(stderr, "submit: %s\n", err);
        sg_engine_stop(e);
        return 0;
    }
    while (!done) {
        struct pollfd p = { sg_engine_fd(e), POLLIN, 0 };
        int n;
        poll(&p, 1, 1000);
        n = sg_engine_drain(e, ev, 64);
        for (int i = 0; i < n; i++) {
            if (ev[i].kind == SG_EV_TOKEN) {
                if (n_tok++ == 0)
                    first = now();
                last = now();
            } else {
                done = 1;
            }
        }
    }
    sg_engine_stop(e);
    return n_tok > 1 ? (last - first) / (n_tok - 1) : 0;
}

int
main(int argc, char **argv)
{
    char          err[256];
    sg_tokenizer *t;
    sg_vocab     *v;
    float        *logits = malloc(sizeof(float) * VOCAB);
    int           runs = argc > 3 ? atoi(argv[3]) : 200;
    double        t0, step;

    if (argc < 2) {
        fprintf(stderr, "usage: bench_grammar TOKENIZER_JSON [MODEL_DIR "
                "[RUNS]]\n");
        return 2;
    }
    if (sg_tokenizer_load(argv[1], &t, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    t0 = now();
    v = sg_vocab_new(t, VOCAB, err, sizeof(err));
    if (v == NULL) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    printf("{\"vocab_sort_ms\": %.1f}\n", (now() - t0) * 1e3);
    if (argc > 2) {
        step = decode_step(argv[2]);
        printf("{\"decode_step_ms\": %.2f}\n", step * 1e3);
    }
    for (int w = 0; w < 5; w++)
        run(v, t, w, runs, logits);
    sg_vocab_free(v);
    sg_tokenizer_free(t);
    free(logits);
    return 0;
}
