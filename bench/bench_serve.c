/*
 * Serving benchmark, through the public engine API (sparsegate.h), on a
 * small model (`sparsegate mkmodel --preset small`):
 *  1. time to first token of a long prompt, cold and with all but its last
 *     part served from the prefix cache (the ratio is the point);
 *  2. decode tokens/s with 1, 4 and 16 sequences at once;
 *  3. the prefix-cache hit rate of a replayed RAG workload: many questions
 *     over a few document collections behind one system prompt.
 * Prints a Markdown section on stdout.
 *
 * usage: bench_serve MODEL_DIR [--prompt N] [--prefix N] [--threads N]
 *                    [--decode-tokens N] [--rag-requests N] [--rag-doc N]
 *        bench_serve MODEL_DIR --index-cache N [--threads N]
 *
 * --index-cache measures, instead, what "IndexCache" (index_share 2: odd
 * layers reuse the previous layer's indexer top-k instead of running their
 * own indexer) does to the outputs of one long prefill.  The TTFT runs are
 * also repeated with it on; it runs the model directly (model/model.h),
 * and the work model reads the whole configuration (model/config.h).
 */
#include <math.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "model/model.h"
#include "bench_clock.h"
#include "serve_work.h"
#include "sparsegate.h"

static uint64_t rng = 0x243f6a8885a308d3ull;

static int32_t
rand_token(int vocab)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    /* Skip the low ids (specials in DeepSeek's vocabulary). */
    return 1000 + (int32_t)((rng * 0x2545f4914f6cdd1dull >> 33)
                            % (uint64_t)(vocab - 1000));
}

/* What the bench tracks per request: indexed by user = slot. */
#define MAXS 64
typedef struct slot {
    double t_submit, t_first, t_done;
    int    n_tok, done, cached, prompt;
    char   msg[160];
} slot;

static slot slots[MAXS];

static void
submit(sg_engine *e, int s, const int32_t *t, int n, int max_tokens)
{
    char       err[256];
    sg_request q = {.prompt = t, .n_prompt = n, .max_tokens = max_tokens,
                    .ignore_eos = 1, .user = (void *)(intptr_t)s};

    memset(&slots[s], 0, sizeof(slots[s]));
    slots[s].t_submit = now();
    if (sg_engine_submit(e, &q, NULL, err, sizeof(err)) != SG_OK) {
        fprintf(stderr, "bench_serve: submit: %s\n", err);
        exit(1);
    }
}

/* Waits for events (up to a second) and records them. */
static void
pump_once(sg_engine *e)
{
    sg_event      ev[64];
    struct pollfd pfd = {.fd = sg_engine_fd(e), .events = POLLIN};
    int           k;

    poll(&pfd, 1, 1000);
    while ((k = sg_engine_drain(e, ev, 64)) > 0) {
        double t = now();
        for (int j = 0; j < k; j++) {
            slot *sl = &slots[(intptr_t)ev[j].user];
            if (ev[j].kind == SG_EV_TOKEN) {
                if (sl->n_tok++ == 0)
                    sl->t_first = t;
                continue;
            }
            sl->done = 1;
            sl->t_done = t;
            sl->cached = ev[j].cached_tokens;
            sl->prompt = ev[j].prompt_tokens;
            if (ev[j].kind == SG_EV_ERROR) {
                fprintf(stderr, "bench_serve: request failed: %s\n",
                        ev[j].message);
                exit(1);
            }
        }
    }
}

static int
count_done(int lo, int hi)
{
    int n = 0;

    for (int s = lo; s < hi; s++)
        n += slots[s].done;
    return n;
}

/* Pumps events until every slot in [lo, hi) is done. */
static void
wait_all(sg_engine *e, int lo, int hi)
{
    while (count_done(lo, hi) < hi - lo)
        pump_once(e);
}

/* ---- IndexCache: output effect ---- */

/* Prefills n tokens in one call; last-token logits to out, the top-k sets
 * to topk when not NULL. */
static int
ic_run(sg_model *m, const int32_t *t, int n, int32_t *topk, float *out)
{
    int         nb = (n + SG_KV_BLOCK - 1) / SG_KV_BLOCK, rc;
    sg_kv_pool *pool = sg_kv_pool_new(m->backend, &m->cfg, nb,
                                      m->num.kv_fp8);
    int32_t    *blocks = malloc(sizeof(int32_t) * nb);
    sg_seq      seq = {.blocks = blocks, .n_blocks = nb, .cap_blocks = nb};
    sg_batch_item it = {.seq = &seq, .tokens = t, .n_tokens = n,
                        .logits = out, .prompt = 1};
    sg_trace    tr = {.out_topk = topk};
    char        err[256];

    if (pool == NULL || blocks == NULL) {
        fprintf(stderr, "bench_serve: out of memory\n");
        exit(1);
    }
    for (int i = 0; i < nb; i++)
        blocks[i] = i;
    rc = sg_forward(m, pool, &it, 1, topk ? &tr : NULL, err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "bench_serve: forward: %s\n", err);
    sg_kv_pool_free(pool);
    free(blocks);
    return rc;
}

static sg_model *
ic_load(const char *dir, int threads, int share)
{
    sg_model_opts mo;
    sg_model     *m;
    char          err[512];

    sg_model_opts_default(&mo);
    mo.n_threads = threads;
    mo.num.index_share = share;
    if (sg_model_load(dir, &mo, &m, err, sizeof(err)) != 0) {
        fprintf(stderr, "bench_serve: %s\n", err);
        exit(1);
    }
    return m;
}

/*
 * One n-token prefill with every layer selecting and one with index_share
 * 2 (the real switch): how much adjacent layers' selections overlap, how
 * far the last token's logits move, and the time of each.
 */
static int
index_cache_bench(const char *dir, int n, int threads)
{
    sg_model *m = ic_load(dir, threads, 0), *mi = ic_load(dir, threads, 2);
    int       L = m->cfg.num_hidden_layers, K = m->cfg.index_topk;
    int       V = m->cfg.vocab_size;
    int32_t  *t = malloc(sizeof(int32_t) * n);
    int32_t  *topk = malloc(sizeof(int32_t) * (size_t)L * n * K);
    float    *base = malloc(sizeof(float) * V), *ic = malloc(sizeof(float) * V);
    double    overlap = 0, num = 0, den = 0;
    long      rows = 0;

    if (n > m->max_pos || topk == NULL || t == NULL) {
        fprintf(stderr, "bench_serve: --index-cache %d: too long or out of "
                "memory\n", n);
        return 1;
    }
    for (int i = 0; i < n; i++)
        t[i] = rand_token(V);
    double t0 = now();
    if (ic_run(m, t, n, topk, base) != 0)
        return 1;
    double t_base = now() - t0;
    /* How much adjacent layers' selections agree (rows with more keys
     * than K, where the indexer really selects). */
    char *mark = calloc(n, 1);
    for (int l = 1; l < L; l++) {
        for (int r = K; r < n; r++) {
            const int32_t *a = topk + ((size_t)(l - 1) * n + r) * K;
            const int32_t *b = topk + ((size_t)l * n + r) * K;
            int            same = 0;
            for (int k = 0; k < K; k++)
                if (a[k] >= 0)
                    mark[a[k]] = 1;
            for (int k = 0; k < K; k++)
                same += b[k] >= 0 && mark[b[k]];
            for (int k = 0; k < K; k++)
                if (a[k] >= 0)
                    mark[a[k]] = 0;
            overlap += (double)same / K;
            rows++;
        }
    }
    t0 = now();
    if (ic_run(mi, t, n, NULL, ic) != 0)
        return 1;
    double t_ic = now() - t0;
    for (int i = 0; i < V; i++) {
        num += ((double)ic[i] - base[i]) * ((double)ic[i] - base[i]);
        den += (double)base[i] * base[i];
    }
    int a1 = 0, a2 = 0;
    for (int i = 1; i < V; i++) {
        a1 = base[i] > base[a1] ? i : a1;
        a2 = ic[i] > ic[a2] ? i : a2;
    }
    printf("### IndexCache: effect on outputs\n\n");
    printf("%d-token prompt on `%s` (%d layers, top-k %d), random weights, "
           "one prefill each. Mean top-k overlap of adjacent layers: "
           "**%.1f%%** (rows past %d keys). Last-token logits with "
           "index_share 2 vs without: rel err **%.3g**, argmax %s. Prefill "
           "%.1f s vs %.1f s (%.2fx).\n", n, dir, L, K,
           rows ? 100 * overlap / rows : 0, K, sqrt(num / den),
           a1 == a2 ? "unchanged" : "changed", t_ic, t_base, t_base / t_ic);
    free(mark);
    free(t);
    free(topk);
    free(base);
    free(ic);
    sg_model_free(m);
    sg_model_free(mi);
    return 0;
}

/* ---- time to first token ---- */

#define SHORT_TAIL 128

/* Run 0 is the cold prompt, runs 1 and 2 the ones with a cached prefix. */
typedef struct {
    double wall[3], cpu[3];     /* TTFT wall seconds, process CPU seconds */
    int    cached[3];           /* prompt tokens served from the cache */
} ttft_result;

/* The cold prompt p, then p2 (p's prefix, a new tail) and p3 (p but its
 * last SHORT_TAIL tokens), one at a time, one new token each. */
static void
ttft_run(sg_engine *e, const int32_t *p, const int32_t *p2, const int32_t *p3,
    int n, ttft_result *r)
{
    const int32_t *in[3] = {p, p2, p3};

    for (int i = 0; i < 3; i++) {
        double c0 = cpu_seconds();
        submit(e, i, in[i], n, 1);
        wait_all(e, i, i + 1);
        r->wall[i] = slots[i].t_first - slots[i].t_submit;
        r->cpu[i] = cpu_seconds() - c0;
        r->cached[i] = slots[i].cached;
    }
}

/* The measured ratios next to the work ratio the model's shapes give (and
 * the engine's chunking); with `base`, the speed-up over it too. */
static void
ttft_table(const sg_config *cfg, const sg_engine_opts *o, int n, int prefix,
    const ttft_result *r, const ttft_result *base)
{
    int    chunk = o->prefill_chunk, share = o->index_share;
    prefill_work cold = work_of_prefill(cfg, 0, n, chunk, share);

    printf("| prompt | cached prefix | computed | TTFT (wall) | speed-up | "
           "CPU time | speed-up (CPU) | work ratio | bound n/tail |\n");
    printf("|---|---|---|---|---|---|---|---|---|\n");
    printf("| cold | 0 | %d | %.2f s | 1x | %.1f s | 1x | 1x | 1x |\n", n,
           r->wall[0], r->cpu[0]);
    for (int i = 1; i < 3; i++) {
        prefill_work w = work_of_prefill(cfg, r->cached[i], n, chunk, share);
        const char  *bold = i == 1 ? "**" : "";

        printf("| same %d-token prefix, new %d-token tail | %d | %d | %.3f s "
               "| %s%.1fx%s | %.2f s | %s%.1fx%s | %.1fx | %.0fx |\n",
               i == 1 ? prefix : n - SHORT_TAIL,
               i == 1 ? n - prefix : SHORT_TAIL, r->cached[i],
               n - r->cached[i], r->wall[i], bold, r->wall[0] / r->wall[i],
               bold, r->cpu[i], bold, r->cpu[0] / r->cpu[i], bold,
               work_total(&cold) / work_total(&w),
               (double)n / (n - r->cached[i]));
    }
    {
        prefill_work w = work_of_prefill(cfg, r->cached[1], n, chunk, share);
        double       tw = work_total(&w), cw = work_total(&cold);

        printf("\nWork (multiply-adds counted from the shapes, chunks of %d): "
               "cold %.0f G = projections+FFN %.0f%%, kv_b %.0f%%, indexer "
               "%.0f%%, attention %.0f%%; the %d-token tail %.1f G = %.0f%% / "
               "%.0f%% / %.0f%% / %.0f%%.\n", chunk, cw / 1e9,
               100 * cold.proj / cw, 100 * cold.kv_b / cw,
               100 * cold.indexer / cw, 100 * cold.attention / cw,
               n - r->cached[1], tw / 1e9, 100 * w.proj / tw, 100 * w.kv_b / tw,
               100 * w.indexer / tw, 100 * w.attention / tw);
    }
    if (base == NULL) {
        printf("\nThe bound: a prompt token's work never falls with its "
               "position (its indexer scores every key before it, its "
               "attention reads min(position, top-k) keys), so the last %d "
               "tokens cost at least %d/%d of the cold prompt and no engine "
               "that computes them can beat %.0fx here. The work ratio is "
               "what this engine's own work allows (its tail also applies "
               "kv_b to the whole cached context, the MHA form).\n",
               n - r->cached[1], n - r->cached[1], n,
               (double)n / (n - r->cached[1]));
    } else {
        printf("\nIndexCache vs every layer selecting: cold TTFT %.2fx, "
               "tail TTFT %.2fx faster (wall); CPU %.2fx / %.2fx.\n",
               base->wall[0] / r->wall[0], base->wall[1] / r->wall[1],
               base->cpu[0] / r->cpu[0], base->cpu[1] / r->cpu[1]);
    }
    printf("\n");
}

int
main(int argc, char **argv)
{
    int            n_prompt = 16384, n_prefix = 15360, threads = 0;
    int            decode_tokens = 32, rag_requests = 48, rag_doc = 2048;
    int            index_cache = 0;
    sg_engine_opts o;
    sg_engine     *e;
    char           err[512];

    if (argc < 2) {
        fprintf(stderr, "usage: bench_serve MODEL_DIR [--prompt N] "
                "[--prefix N] [--threads N] [--decode-tokens N] "
                "[--rag-requests N] [--rag-doc N]\n");
        return 2;
    }
    for (int i = 2; i + 1 < argc; i += 2) {
        int v = atoi(argv[i + 1]);
        if (strcmp(argv[i], "--prompt") == 0)
            n_prompt = v;
        else if (strcmp(argv[i], "--prefix") == 0)
            n_prefix = v;
        else if (strcmp(argv[i], "--threads") == 0)
            threads = v;
        else if (strcmp(argv[i], "--decode-tokens") == 0)
            decode_tokens = v;
        else if (strcmp(argv[i], "--rag-requests") == 0)
            rag_requests = v;
        else if (strcmp(argv[i], "--rag-doc") == 0)
            rag_doc = v;
        else if (strcmp(argv[i], "--index-cache") == 0)
            index_cache = v;
        else {
            fprintf(stderr, "bench_serve: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (index_cache > 0)
        return index_cache_bench(argv[1], index_cache, threads);
    if (n_prefix >= n_prompt || n_prompt < 2 || rag_requests > MAXS) {
        fprintf(stderr, "bench_serve: need prefix < prompt, at most %d RAG "
                "requests\n", MAXS);
        return 2;
    }

    sg_engine_opts_default(&o);
    o.model_dir = argv[1];
    o.n_threads = threads;
    o.kv_bytes = (size_t)512 << 20;
    o.max_running = 16;
    o.step_tokens = 2048;
    o.prefill_chunk = 1024;
    double t0 = now();
    if (sg_engine_start(&o, &e, err, sizeof(err)) != 0) {
        fprintf(stderr, "bench_serve: %s\n", err);
        return 1;
    }
    /* the whole configuration, for the work model (serve_work.h) */
    char             path[4096];
    sg_config        cfg_copy;
    const sg_config *cfg = &cfg_copy;
    snprintf(path, sizeof(path), "%s/config.json", argv[1]);
    if (sg_config_load(path, &cfg_copy, err, sizeof(err)) != 0) {
        fprintf(stderr, "bench_serve: %s\n", err);
        return 1;
    }
    int              V = cfg->vocab_size;
    sg_engine_stats  st;
    sg_engine_get_stats(e, &st);
    printf("Model `%s`: %d layers, hidden %d, vocab %d, index_topk %d, %s "
           "latent cache, %s attention; cache pool %d blocks of 64 tokens; "
           "%s backend, %d threads (0 = all cores); engine start %.1f s.\n\n",
           argv[1], cfg->num_hidden_layers, cfg->hidden_size, V,
           cfg->index_topk, o.kv_fp8 ? "FP8" : "exact",
           o.dense ? "dense" : "DSA",
           st.kv_blocks_total, o.backend ? o.backend : "cpu",
           threads, now() - t0);
    fflush(stdout);

    /* 1. TTFT cold vs cached prefix. */
    int32_t *p = malloc(sizeof(int32_t) * n_prompt);
    int32_t *p2 = malloc(sizeof(int32_t) * n_prompt);
    int32_t *p3 = malloc(sizeof(int32_t) * n_prompt);
    ttft_result base;
    for (int i = 0; i < n_prompt; i++)
        p[i] = rand_token(V);
    memcpy(p2, p, sizeof(int32_t) * n_prefix);
    for (int i = n_prefix; i < n_prompt; i++)
        p2[i] = rand_token(V);
    memcpy(p3, p, sizeof(int32_t) * (n_prompt - SHORT_TAIL));
    for (int i = n_prompt - SHORT_TAIL; i < n_prompt; i++)
        p3[i] = rand_token(V);
    ttft_run(e, p, p2, p3, n_prompt, &base);
    printf("### Time to first token, %d-token prompt\n\n", n_prompt);
    ttft_table(cfg, &o, n_prompt, n_prefix, &base, NULL);
    fflush(stdout);

    /* 2. Decode throughput with 1, 4, 16 sequences. */
    int conc[3] = {1, 4, 16};
    printf("### Decode throughput (256-token prompts, %d new tokens each)\n\n",
           decode_tokens);
    printf("| sequences | tokens/s (all) | tokens/s per sequence | "
           "ms per step |\n|---|---|---|---|\n");
    for (int c = 0; c < 3; c++) {
        int      n = conc[c];
        int32_t *dp = malloc(sizeof(int32_t) * 256 * n);
        for (int i = 0; i < 256 * n; i++)
            dp[i] = rand_token(V);
        for (int s = 0; s < n; s++)
            submit(e, s, dp + 256 * s, 256, decode_tokens);
        wait_all(e, 0, n);
        /* From the moment the last sequence had its first token (all
         * decoding) to the end: the tokens after the first of each. */
        double start = 0, end = 0;
        int    toks = 0;
        for (int s = 0; s < n; s++) {
            if (slots[s].t_first > start)
                start = slots[s].t_first;
            if (slots[s].t_done > end)
                end = slots[s].t_done;
            toks += slots[s].n_tok - 1;
        }
        /* Tokens made before `start` by the early ones are counted
         * approximately: with one prefill step for all, start ~ first. */
        double tps = toks / (end - start);
        printf("| %d | %.1f | %.1f | %.1f |\n", n, tps, tps / n,
               1000.0 * (end - start) / (decode_tokens - 1));
        fflush(stdout);
        free(dp);
    }
    printf("\n");

    /* 3. RAG replay: one system prompt, 3 collections, many questions. */
    {
        enum { COLL = 3, SYS = 256, QMAX = 96 };
        int32_t  sys[SYS], *docs[COLL], *q;
        int      len_max = SYS + rag_doc + QMAX;
        uint64_t cached0, prompt0;
        double   t_hit = 0, t_miss = 0;
        int      n_hit = 0, n_miss = 0;

        for (int i = 0; i < SYS; i++)
            sys[i] = rand_token(V);
        for (int c = 0; c < COLL; c++) {
            docs[c] = malloc(sizeof(int32_t) * rag_doc);
            for (int i = 0; i < rag_doc; i++)
                docs[c][i] = rand_token(V);
        }
        q = malloc(sizeof(int32_t) * len_max * rag_requests);
        sg_engine_get_stats(e, &st);
        cached0 = st.cached_tokens;
        prompt0 = st.prompt_tokens;
        /* Four clients, each sending its next question when the last is
         * answered (arrival order mixes the collections). */
        int next = 0, active[4] = {-1, -1, -1, -1};
        double t_start = now();
        while (next < rag_requests || active[0] >= 0 || active[1] >= 0
               || active[2] >= 0 || active[3] >= 0)
        {
            for (int c = 0; c < 4; c++) {
                if (active[c] >= 0 && slots[active[c]].done) {
                    slot *sl = &slots[active[c]];
                    double ttft = sl->t_first - sl->t_submit;
                    if (sl->cached > 0)
                        t_hit += ttft, n_hit++;
                    else
                        t_miss += ttft, n_miss++;
                    active[c] = -1;
                }
                if (active[c] < 0 && next < rag_requests) {
                    int32_t *t = q + (size_t)len_max * next;
                    int      coll = (int)(rng % COLL), n = 0;
                    int      qlen = 32 + (int)(rng % (QMAX - 32));
                    rand_token(V);
                    memcpy(t, sys, sizeof(sys));
                    n += SYS;
                    memcpy(t + n, docs[coll], sizeof(int32_t) * rag_doc);
                    n += rag_doc;
                    for (int i = 0; i < qlen; i++)
                        t[n++] = rand_token(V);
                    submit(e, next, t, n, 8);
                    active[c] = next++;
                }
            }
            int lo = MAXS, hi = 0;
            for (int c = 0; c < 4; c++) {
                if (active[c] >= 0) {
                    lo = active[c] < lo ? active[c] : lo;
                    hi = active[c] + 1 > hi ? active[c] + 1 : hi;
                }
            }
            /* Wait until one of them finishes. */
            if (hi > 0) {
                int before = count_done(lo, hi);
                while (count_done(lo, hi) == before)
                    pump_once(e);
            }
        }
        double wall = now() - t_start;
        sg_engine_get_stats(e, &st);
        double rate = (double)(st.cached_tokens - cached0)
                      / (double)(st.prompt_tokens - prompt0);
        printf("### Replayed RAG workload\n\n");
        printf("%d requests from 4 concurrent clients: a %d-token system "
               "prompt, one of %d collections of %d tokens, a 32-95-token "
               "question, 8 answer tokens.\n\n", rag_requests, SYS, COLL,
               rag_doc);
        printf("| prompt tokens | served from cache | hit rate | mean TTFT "
               "hit | mean TTFT miss | wall |\n|---|---|---|---|---|---|\n");
        printf("| %llu | %llu | **%.1f%%** | %.3f s (%d) | %.3f s (%d) | "
               "%.1f s |\n\n",
               (unsigned long long)(st.prompt_tokens - prompt0),
               (unsigned long long)(st.cached_tokens - cached0), 100 * rate,
               n_hit ? t_hit / n_hit : 0, n_hit, n_miss ? t_miss / n_miss : 0,
               n_miss, wall);
        printf("Pool after the run: %d blocks, %d in use, %d held only by "
               "the prefix cache; %llu requests done.\n",
               st.kv_blocks_total, st.kv_blocks_used, st.kv_blocks_cached,
               (unsigned long long)st.requests_done);
        for (int c = 0; c < COLL; c++)
            free(docs[c]);
        free(q);
    }
    sg_engine_stop(e);

    /* 4. The same TTFT runs with IndexCache on, in a fresh engine. */
    o.index_share = 2;
    if (sg_engine_start(&o, &e, err, sizeof(err)) != 0) {
        fprintf(stderr, "bench_serve: %s\n", err);
        return 1;
    }
    ttft_result ic;
    ttft_run(e, p, p2, p3, n_prompt, &ic);
    sg_engine_stop(e);
    printf("\n### Time to first token with IndexCache (index_share 2: "
           "layers 1, 3 reuse the top-k of layers 0, 2)\n\n");
    ttft_table(cfg, &o, n_prompt, n_prefix, &ic, &base);
    free(p);
    free(p2);
    free(p3);
    return 0;
}
