/*
 * The shipped trained model (models/sparsegate-rag-tiny) against PyTorch's
 * logits for it (training/reference.py fixtures, committed under
 * tests/fixtures/sparsegate-rag-tiny/pN: held-out RAG prompts as the
 * gateway builds them, the answer fed as teacher tokens), without torch:
 *  - dense: prefill and decode logits within 1e-3 of the logits' scale
 *    (max |d| / max |ref|);
 *  - DSA with PyTorch's top-k sets forced (its indexer unquantized vs the
 *    engine's FP8 e4m3 q/k is the one expected difference): the same.
 *    Relative, because both sides round the latent cache to e4m3: an fp32
 *    difference of one ulp (a build with other FMA contraction, as the
 *    sanitizer build) can move a latent element across a rounding boundary,
 *    6% of that element, and the trained copy head's sharp attention
 *    carries it into the logits: 4e-3 absolute on logits of scale ~23
 *    (1.7e-4 of it) under ASan/UBSan, at most 1.2e-5 of it in the
 *    optimized build;
 *  - DSA free running: how many rows' sets, and how many of their keys,
 *    the FP8 indexer picks differently (printed; at most 2% of the keys:
 *    rounding swaps keys at the top-k boundary, a layout or scale bug
 *    changes most of them), and how often the answer's argmax agrees.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "offline/protocol.h"

static char model_dir[1024], ref_dir[1024];

/* The logits' scale: max |ref| (1 for all zeros). */
static double
scale_of(const float *ref, size_t n)
{
    double m = 0;

    for (size_t i = 0; i < n; i++)
        if (ref[i] > m || -ref[i] > m)
            m = ref[i] > 0 ? ref[i] : -ref[i];
    return m > 0 ? m : 1;
}

static void *
ref_file(const char *name, size_t elem, size_t *n)
{
    char   path[1200];
    size_t len = 0;
    void  *p;

    snprintf(path, sizeof(path), "%s/%s", ref_dir, name);
    p = check_read_file(path, &len);
    if (n)
        *n = len / elem;
    return p;
}

static sg_model *
load(int dense)
{
    sg_model_opts o;
    sg_model     *m = NULL;
    char          err[512];

    sg_model_opts_default(&o);
    o.num.dense = dense;
    o.max_pos = 4096;
    if (sg_model_load(model_dir, &o, &m, err, sizeof(err)) != 0) {
        CHECK(0, "trained/load", "%s", err);
        return NULL;
    }
    return m;
}

/* Over rows of [rows][K] sets (-1 padded): rows whose set differs, and
 * keys of a that b lacks, summed. */
static void
sets_differ(const int32_t *a, const int32_t *b, int rows, int K, int *n_rows,
    long *n_keys)
{
    for (int r = 0; r < rows; r++) {
        const int32_t *x = a + (size_t)r * K, *y = b + (size_t)r * K;
        int            miss = 0;

        for (int i = 0; i < K; i++) {
            int found = x[i] < 0;

            for (int j = 0; j < K && !found; j++)
                found = y[j] == x[i];
            miss += !found;
        }
        *n_rows += miss > 0;
        *n_keys += miss;
    }
}

static void
one_prompt(const char *tag, int *diff_rows, int *all_rows, long *diff_keys,
    long *sel_keys)
{
    sg_model       *dm = load(1), *sm = load(0);
    size_t          np, nt;
    int32_t        *prompt = ref_file("prompt.i32.bin", 4, &np);
    int32_t        *teacher = ref_file("teacher.i32.bin", 4, &nt);
    float          *dpl = ref_file("dense_prefill_logits.f32.bin", 4, NULL);
    float          *ddl = ref_file("dense_decode_logits.f32.bin", 4, NULL);
    float          *spl = ref_file("prefill_logits.f32.bin", 4, NULL);
    float          *sdl = ref_file("decode_logits.f32.bin", 4, NULL);
    int32_t        *ptk = ref_file("prefill_topk_all.i32.bin", 4, NULL);
    int32_t        *tk = ref_file("topk.i32.bin", 4, NULL);
    sg_protocol     p = { 0 };
    sg_protocol_out o;
    char            err[512];

    if (!dm || !sm || !prompt || !teacher || !dpl || !ddl || !spl || !sdl
        || !ptk || !tk)
    {
        CHECK(0, check_named(tag, "files"), "model or reference files "
              "missing (%s, %s)", model_dir, ref_dir);
        goto done;
    }
    int V = sm->cfg.vocab_size, L = sm->cfg.num_hidden_layers;
    int K = sm->cfg.index_topk, P = (int)np, N = (int)nt;

    p.prompt = prompt;
    p.n_prompt = P;
    p.steps = N;
    p.teacher = teacher;

    /* dense */
    if (sg_protocol_run(dm, &p, &o, err, sizeof(err)) != 0) {
        CHECK(0, check_named(tag, "dense-run"), "%s", err);
        goto done;
    }
    double a = check_max_abs(o.prefill_logits, dpl, V);
    double b = check_max_abs(o.decode_logits, ddl, (size_t)N * V);
    double ra = a / scale_of(dpl, V);
    double rb = b / scale_of(ddl, (size_t)N * V);
    CHECK(ra <= 1e-3 && rb <= 1e-3, check_named(tag, "dense-logits"),
          "max |d| / scale: prefill %.3g decode %.3g > 1e-3", ra, rb);
    printf("# %s: dense max |d| prefill %.2g decode %.2g (of the scale: "
           "%.2g, %.2g)\n", tag, a, b, ra, rb);
    sg_protocol_out_free(&o);

    /* DSA, PyTorch's sets forced */
    p.force_prefill_topk = ptk;
    p.force_topk = tk;
    p.trace = 1;
    if (sg_protocol_run(sm, &p, &o, err, sizeof(err)) != 0) {
        CHECK(0, check_named(tag, "forced-run"), "%s", err);
        goto done;
    }
    a = check_max_abs(o.prefill_logits, spl, V);
    b = check_max_abs(o.decode_logits, sdl, (size_t)N * V);
    ra = a / scale_of(spl, V);
    rb = b / scale_of(sdl, (size_t)N * V);
    CHECK(ra <= 1e-3 && rb <= 1e-3, check_named(tag, "dsa-forced-logits"),
          "max |d| / scale: prefill %.3g decode %.3g > 1e-3", ra, rb);
    printf("# %s: DSA, sets forced: max |d| prefill %.2g decode %.2g (of the "
           "scale: %.2g, %.2g)\n", tag, a, b, ra, rb);
    sg_protocol_out_free(&o);

    /* DSA free: the engine's FP8 indexer decides */
    p.force_prefill_topk = NULL;
    p.force_topk = NULL;
    if (sg_protocol_run(sm, &p, &o, err, sizeof(err)) != 0) {
        CHECK(0, check_named(tag, "free-run"), "%s", err);
        goto done;
    }
    int  rows = 0, agree = 0;
    long keys = 0, all_keys = (long)L * (P + N + 1) * K;

    sets_differ(o.prefill_topk_all, ptk, L * P, K, &rows, &keys);
    sets_differ(o.topk, tk, L * (N + 1), K, &rows, &keys);
    for (int i = 0; i < N; i++)
        agree += sg_argmax(o.decode_logits + (size_t)i * V, V)
                 == sg_argmax(sdl + (size_t)i * V, V);
    a = check_max_abs(o.prefill_logits, spl, V);
    b = check_max_abs(o.decode_logits, sdl, (size_t)N * V);
    printf("# %s: DSA free: the FP8 indexer's set differs from the "
           "unquantized one in %d of %d rows, by %.2f keys of %d on average "
           "(%.2f%% of all selected keys); answer argmax agrees on %d of %d "
           "steps; max |d| prefill %.2g decode %.2g\n", tag, rows,
           L * (P + N + 1), rows ? (double)keys / rows : 0.0, K,
           100.0 * keys / all_keys, agree, N, a, b);
    *diff_rows += rows;
    *all_rows += L * (P + N + 1);
    *diff_keys += keys;
    *sel_keys += all_keys;
    /* FP8 rounding of q and k swaps keys near the top-k boundary; a wrong
     * layout, scale or rotation changes most of the set */
    CHECK(keys <= all_keys / 50, check_named(tag, "dsa-free-sets-close"),
          "%ld of %ld selected keys differ (> 2%%)", keys, all_keys);
    if (rows == 0)
        CHECK(a <= 1e-3 && b <= 1e-3, check_named(tag, "dsa-free-logits"),
              "same sets, max |d| prefill %.3g decode %.3g", a, b);
    sg_protocol_out_free(&o);
done:
    sg_model_free(dm);
    sg_model_free(sm);
    free(prompt);
    free(teacher);
    free(dpl);
    free(ddl);
    free(spl);
    free(sdl);
    free(ptk);
    free(tk);
}

int
main(void)
{
    int  diff = 0, all = 0;
    long dk = 0, sk = 0;

    check_seed_from_env();
    snprintf(model_dir, sizeof(model_dir),
             "%s/../../models/sparsegate-rag-tiny", check_fixtures_dir());
    for (int i = 0; i < 3; i++) {
        char tag[32];

        snprintf(ref_dir, sizeof(ref_dir), "%s/sparsegate-rag-tiny/p%d",
                 check_fixtures_dir(), i);
        snprintf(tag, sizeof(tag), "trained/p%d", i);
        one_prompt(tag, &diff, &all, &dk, &sk);
    }
    printf("# trained: the FP8 indexer picked a different set than PyTorch's "
           "unquantized one in %d of %d rows (%.1f%%); %.2f%% of the selected "
           "keys differ\n", diff, all, all ? 100.0 * diff / all : 0.0,
           sk ? 100.0 * dk / sk : 0.0);
    return check_finish();
}
