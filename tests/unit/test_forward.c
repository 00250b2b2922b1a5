/*
 * The forward pass in process (so the sanitizers see it): the fixtures'
 * strict run to 1e-3 with identical top-k sets and routing, an FP8 run with
 * decisions forced, chunked prefill and batching equal to the one-shot run,
 * IndexCache (index_share) equal to forcing the previous layer's top-k,
 * prompt tokens past the MHA memory limit in the absorbed form,
 * and clean errors for bad batches.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "fixture_runs.h"
#include "offline/protocol.h"

static char dir[1024];

static sg_model *
load_shared(const char *variant, int kv_fp8, int dense, int act_quant,
    int index_share)
{
    sg_model_opts o;
    sg_model     *m = NULL;
    char          err[512];

    sg_model_opts_default(&o);
    o.num.kv_fp8 = kv_fp8;
    o.num.dense = dense;
    o.num.act_quant = act_quant;
    o.num.index_share = index_share;
    snprintf(dir, sizeof(dir), "%s/tiny-v32/%s", check_fixtures_dir(), variant);
    if (sg_model_load(dir, &o, &m, err, sizeof(err)) != 0) {
        CHECK(0, "load", "%s: %s", dir, err);
        return NULL;
    }
    return m;
}

static sg_model *
load(const char *variant, int kv_fp8, int dense, int act_quant)
{
    return load_shared(variant, kv_fp8, dense, act_quant, 0);
}

static double
max_abs_rows(const float *a, const float *b, size_t n)
{
    return check_max_abs(a, b, n);
}

/*
 * bf16 fix_nokvq_sparse: the strict class, free running, teacher forced.
 * mha_bytes 1 puts every prompt token in the absorbed form, as the CUDA
 * backend does: the reference's decisions must not depend on the form.
 */
static void
test_strict_run(const char *tag, size_t mha_bytes)
{
    sg_model       *m = load("bf16", 0, 0, 1);
    sg_protocol     p = { 0 };
    sg_protocol_out o;
    size_t          np, nt;
    int32_t        *prompt = fixture_file("bf16", NULL, "prompt.i32.bin", &np);
    int32_t        *tokens = fixture_file("bf16", "fix_nokvq_sparse", "tokens.i32.bin", &nt);
    float          *pl = fixture_file("bf16", "fix_nokvq_sparse", "prefill_logits.f32.bin", NULL);
    float          *dl = fixture_file("bf16", "fix_nokvq_sparse", "decode_logits.f32.bin", NULL);
    int32_t        *ptk = fixture_file("bf16", "fix_nokvq_sparse", "prefill_topk_all.i32.bin", NULL);
    int32_t        *tk = fixture_file("bf16", "fix_nokvq_sparse", "topk.i32.bin", NULL);
    int32_t        *pex = fixture_file("bf16", "fix_nokvq_sparse", "prefill_experts_all.i32.bin", NULL);
    float          *hid = fixture_file("bf16", "fix_nokvq_sparse", "hidden.f32.bin", NULL);
    char            err[512];

    if (!m || !prompt || !tokens || !pl || !dl || !ptk || !tk || !pex || !hid) {
        CHECK(0, check_named(tag, "fixtures"), "missing fixture files under %s",
              check_fixtures_dir());
        goto done;
    }
    const sg_config *c = &m->cfg;
    int V = c->vocab_size, L = c->num_hidden_layers, K = c->index_topk;
    int k = c->num_experts_per_tok, D = c->hidden_size;
    int P = (int)np, N = (int)nt - 1;

    m->num.mha_max_bytes = mha_bytes;
    p.prompt = prompt;
    p.n_prompt = P;
    p.steps = N;
    p.teacher = tokens;
    p.trace = 1;
    if (sg_protocol_run(m, &p, &o, err, sizeof(err)) != 0) {
        CHECK(0, check_named(tag, "run"), "%s", err);
        goto done;
    }
    double dp = max_abs_rows(o.prefill_logits, pl, V);
    double dd = max_abs_rows(o.decode_logits, dl, (size_t)N * V);
    CHECK(dp <= 1e-3, check_named(tag, "prefill-logits"), "max |d| %.3g > 1e-3", dp);
    CHECK(dd <= 1e-3, check_named(tag, "decode-logits"), "max |d| %.3g > 1e-3", dd);
    CHECK(memcmp(o.tokens, tokens, sizeof(int32_t) * (N + 1)) == 0,
          check_named(tag, "argmax"), "argmax differs from the reference tokens");
    CHECK(memcmp(o.prefill_topk_all, ptk, sizeof(int32_t) * L * P * K) == 0,
          check_named(tag, "prefill-topk"), "prefill top-k sets differ");
    CHECK(memcmp(o.topk, tk, sizeof(int32_t) * L * (N + 1) * K) == 0,
          check_named(tag, "query-topk"), "query-row top-k sets differ");
    CHECK(memcmp(o.prefill_experts_all, pex, sizeof(int32_t) * L * P * k) == 0,
          check_named(tag, "routing"), "prefill expert routing differs");
    double dh = check_rel_err(o.hidden, hid, (size_t)(N + 1) * (L + 1) * D);
    CHECK(dh <= 1e-5, check_named(tag, "hidden"), "hidden states rel err %.3g", dh);
    sg_protocol_out_free(&o);
done:
    sg_model_free(m);
    free(prompt); free(tokens); free(pl); free(dl); free(ptk); free(tk);
    free(pex); free(hid);
}

/* fp8 fix_sparse (FP8 KV, activation quantization), decisions forced. */
static void
test_fp8_forced(void)
{
    sg_model *m = load("fp8", 1, 0, 1);

    fixture_check_fp8_forced(m, "fp8-forced", NULL, NULL);
    sg_model_free(m);
}

/* Prefill in chunks and two sequences in one batch give the one-shot
 * logits: the cache of a prefix depends only on the prefix. */
static void
test_chunks_and_batches(void)
{
    sg_model *m = load("bf16", 1, 0, 1);
    size_t    np;
    int32_t  *prompt = fixture_file("bf16", NULL, "prompt.i32.bin", &np);
    char      err[512];

    if (!m || !prompt) {
        CHECK(0, "chunks/fixtures", "missing fixture files");
        goto done;
    }
    int V = m->cfg.vocab_size, P = (int)np, nb = (P + 1 + 63) / 64;
    sg_kv_pool *pool = sg_kv_pool_new(m->backend, &m->cfg, 3 * nb, 1);
    int32_t     b0[8], b1[8], b2[8];
    sg_seq      s0 = { b0, nb, 8, 0 }, s1 = { b1, nb, 8, 0 }, s2 = { b2, nb, 8, 0 };
    float      *ref = malloc(sizeof(float) * V), *out = malloc(sizeof(float) * V);
    float      *out2 = malloc(sizeof(float) * V);

    for (int i = 0; i < nb; i++) {
        b0[i] = i;
        b1[i] = nb + i;
        b2[i] = 2 * nb + i;
    }
    /* one shot */
    sg_batch_item it = { &s0, prompt, P, ref, 1 };
    int rc = sg_forward(m, pool, &it, 1, NULL, err, sizeof(err));
    CHECK(rc == 0, "chunks/one-shot", "%s", err);

    /* chunks of 64, 100, a single prompt token and the rest (boundaries
     * inside a block): bitwise the one-shot logits, since a prompt token's
     * result depends only on its context */
    int cuts[] = { 0, 64, 164, 165, P };
    for (int c = 0; c < 4 && rc == 0; c++) {
        sg_batch_item ci = { &s1, prompt + cuts[c], cuts[c + 1] - cuts[c],
                             c == 3 ? out : NULL, 1 };
        rc = sg_forward(m, pool, &ci, 1, NULL, err, sizeof(err));
    }
    CHECK(rc == 0 && memcmp(out, ref, sizeof(float) * V) == 0, "chunks/equal",
          "chunked prefill differs: rel err %.3g (%s)",
          check_rel_err(out, ref, V), rc ? err : "ok");

    /* a decode step of s0 batched with a full prefill of s2 */
    int32_t       next = 7;
    sg_batch_item two[2] = { { &s2, prompt, P, out2, 1 },
                             { &s0, &next, 1, out, 0 } };
    rc = sg_forward(m, pool, two, 2, NULL, err, sizeof(err));
    CHECK(rc == 0 && memcmp(out2, ref, sizeof(float) * V) == 0,
          "batch/prefill-equal", "batched prefill rel err %.3g",
          check_rel_err(out2, ref, V));
    {
        /* the same decode step alone, on s1 (same prompt, chunked) */
        sg_batch_item one = { &s1, &next, 1, out2, 0 };
        int rc2 = sg_forward(m, pool, &one, 1, NULL, err, sizeof(err));
        CHECK(rc2 == 0 && memcmp(out, out2, sizeof(float) * V) == 0,
              "batch/decode-equal", "batched decode rel err %.3g",
              check_rel_err(out, out2, V));
    }

    /* bad batches fail with a message, never a crash */
    int32_t bad = m->cfg.vocab_size;
    sg_batch_item bi = { &s0, &bad, 1, NULL, 0 };
    rc = sg_forward(m, pool, &bi, 1, NULL, err, sizeof(err));
    CHECK(rc != 0 && strstr(err, "vocabulary"), "errors/token",
          "out-of-vocabulary token: rc %d, '%s'", rc, err);
    sg_seq full = { b0, 1, 8, 64 };
    int32_t ok = 3;
    bi.seq = &full;
    bi.tokens = &ok;
    rc = sg_forward(m, pool, &bi, 1, NULL, err, sizeof(err));
    CHECK(rc != 0 && strstr(err, "blocks"), "errors/blocks",
          "no room in the block table: rc %d, '%s'", rc, err);

    sg_kv_pool_free(pool);
    free(ref);
    free(out);
    free(out2);
done:
    sg_model_free(m);
    free(prompt);
}

/* ---- IndexCache ---- */

typedef struct {
    int32_t *topk;                      /* the trace's out_topk */
    int      T, K;
} reuse_ctx;

/* The emulation the switch must equal: odd layers take the selection the
 * previous layer wrote into the trace. */
static const int32_t *
previous_layer_topk(void *ctx, int layer, int row)
{
    reuse_ctx *c = ctx;

    if (layer % 2 == 0)
        return NULL;
    return c->topk + ((size_t)(layer - 1) * c->T + row) * c->K;
}

static int
prefill(sg_model *m, const int32_t *prompt, int P, int chunk, sg_trace *tr,
    float *logits, char *err, int errlen)
{
    int         nb = (P + 63) / 64, rc = 0;
    sg_kv_pool *pool = sg_kv_pool_new(m->backend, &m->cfg, nb, 1);
    int32_t    *blocks = malloc(sizeof(int32_t) * nb);
    sg_seq      s = { blocks, nb, nb, 0 };

    if (pool == NULL || blocks == NULL) {
        snprintf(err, errlen, "out of memory");
        rc = -1;
    }
    for (int i = 0; rc == 0 && i < nb; i++)
        blocks[i] = i;
    for (int t = 0; rc == 0 && t < P; t += chunk) {
        int           n = P - t < chunk ? P - t : chunk;
        sg_batch_item it = { &s, prompt + t, n, t + n == P ? logits : NULL,
                             1 };
        rc = sg_forward(m, pool, &it, 1, tr, err, errlen);
    }
    sg_kv_pool_free(pool);
    free(blocks);
    return rc;
}

/*
 * index_share = 2: odd layers attend exactly the previous layer's keys,
 * the logits equal (bitwise) those of forcing that selection through the
 * trace with the switch off, chunked prefill still equals one shot, and
 * the output does differ from every layer selecting for itself.
 */
static void
test_index_share(void)
{
    sg_model *on = load_shared("bf16", 1, 0, 1, 2);
    sg_model *off = load("bf16", 1, 0, 1);
    size_t    np;
    int32_t  *prompt = fixture_file("bf16", NULL, "prompt.i32.bin", &np);
    char      err[512];

    if (!on || !off || !prompt) {
        CHECK(0, "index-share/fixtures", "missing fixture files");
        goto done;
    }
    int   P = (int)np, V = on->cfg.vocab_size, L = on->cfg.num_hidden_layers;
    int   K = on->cfg.index_topk;
    size_t nsel = (size_t)L * P * K;
    float *a = malloc(sizeof(float) * V), *b = malloc(sizeof(float) * V);
    float *c = malloc(sizeof(float) * V), *d = malloc(sizeof(float) * V);
    reuse_ctx rc_on = { malloc(sizeof(int32_t) * nsel), P, K };
    reuse_ctx rc_off = { malloc(sizeof(int32_t) * nsel), P, K };
    sg_trace  t_on = { .ctx = &rc_on, .out_topk = rc_on.topk };
    sg_trace  t_emu = { .force_topk = previous_layer_topk, .ctx = &rc_off,
                        .out_topk = rc_off.topk };
    int       ok = prefill(on, prompt, P, P, &t_on, a, err, sizeof(err)) == 0;

    ok = ok && prefill(off, prompt, P, P, &t_emu, b, err, sizeof(err)) == 0;
    ok = ok && prefill(on, prompt, P, 37, NULL, c, err, sizeof(err)) == 0;
    ok = ok && prefill(off, prompt, P, P, NULL, d, err, sizeof(err)) == 0;
    CHECK(ok, "index-share/run", "%s", err);
    if (ok && L >= 3) {
        size_t layer = (size_t)P * K;
        int    own = memcmp(rc_on.topk + 2 * layer, rc_on.topk + layer,
                            sizeof(int32_t) * layer) != 0;

        CHECK(memcmp(rc_on.topk + layer, rc_on.topk,
                     sizeof(int32_t) * layer) == 0,
              "index-share/layer1-reuses-layer0", "top-k sets differ");
        CHECK(own, "index-share/layer2-selects", "layer 2 selected nothing "
              "of its own");
        CHECK(memcmp(rc_on.topk, rc_off.topk, sizeof(int32_t) * nsel) == 0,
              "index-share/sets-equal-emulation", "selections differ");
        CHECK(memcmp(a, b, sizeof(float) * V) == 0,
              "index-share/logits-equal-emulation", "rel err %.3g",
              check_rel_err(a, b, V));
        CHECK(memcmp(a, c, sizeof(float) * V) == 0,
              "index-share/chunked-equal", "rel err %.3g",
              check_rel_err(a, c, V));
        double e = check_rel_err(a, d, V);
        CHECK(e > 0 && e == e, "index-share/changes-output",
              "rel err vs every layer selecting %.3g", e);
    }
    free(a);
    free(b);
    free(c);
    free(d);
    free(rc_on.topk);
    free(rc_off.topk);
done:
    sg_model_free(on);
    sg_model_free(off);
    free(prompt);
}

/* The window a row must attend: its K most recent positions. */
static const int32_t *
window_topk(void *ctx, int layer, int row)
{
    reuse_ctx *c = ctx;
    int32_t   *w = c->topk + ((size_t)layer * c->T + row) * c->K;
    int        first = row + 1 - c->K, n = 0;

    for (int s = first > 0 ? first : 0; s <= row; s++)
        w[n++] = s;
    for (; n < c->K; n++)
        w[n] = -1;
    return w;
}

/*
 * The sliding-window switch: every row's set is its index_topk most recent
 * keys, the logits equal (bitwise) those of forcing those sets through the
 * trace with the switch off, chunked prefill equals one shot, and the
 * output differs from the indexer's selection.
 */
static void
test_window(void)
{
    sg_model *on = load("bf16", 1, 0, 1);
    sg_model *off = load("bf16", 1, 0, 1);
    size_t    np;
    int32_t  *prompt = fixture_file("bf16", NULL, "prompt.i32.bin", &np);
    char      err[512];

    if (!on || !off || !prompt) {
        CHECK(0, "window/fixtures", "missing fixture files");
        goto done;
    }
    on->num.window = 1;
    int    P = (int)np, V = on->cfg.vocab_size, L = on->cfg.num_hidden_layers;
    int    K = on->cfg.index_topk, bad = 0;
    size_t nsel = (size_t)L * P * K;
    float *a = malloc(sizeof(float) * V), *b = malloc(sizeof(float) * V);
    float *c = malloc(sizeof(float) * V), *d = malloc(sizeof(float) * V);
    reuse_ctx got = { malloc(sizeof(int32_t) * nsel), P, K };
    reuse_ctx want = { malloc(sizeof(int32_t) * nsel), P, K };
    sg_trace  t_on = { .out_topk = got.topk };
    sg_trace  t_emu = { .force_topk = window_topk, .ctx = &want };
    int       ok = prefill(on, prompt, P, P, &t_on, a, err, sizeof(err)) == 0;

    ok = ok && prefill(off, prompt, P, P, &t_emu, b, err, sizeof(err)) == 0;
    ok = ok && prefill(on, prompt, P, 37, NULL, c, err, sizeof(err)) == 0;
    ok = ok && prefill(off, prompt, P, P, NULL, d, err, sizeof(err)) == 0;
    CHECK(ok && P > K, "window/run", "%s (prompt %d, top-k %d)",
          ok ? "prompt not longer than top-k" : err, P, K);
    if (ok) {
        for (int l = 0; l < L; l++)
            for (int r = 0; r < P; r++)
                bad += memcmp(got.topk + ((size_t)l * P + r) * K,
                              window_topk(&want, l, r),
                              sizeof(int32_t) * K) != 0;
        CHECK(bad == 0, "window/sets-are-recent-keys", "%d of %d rows differ",
              bad, L * P);
        CHECK(memcmp(a, b, sizeof(float) * V) == 0,
              "window/logits-equal-forced-sets", "rel err %.3g",
              check_rel_err(a, b, V));
        CHECK(memcmp(a, c, sizeof(float) * V) == 0, "window/chunked-equal",
              "rel err %.3g", check_rel_err(a, c, V));
        double e = check_rel_err(a, d, V);
        CHECK(e > 0 && e == e, "window/differs-from-indexer",
              "rel err vs the indexer's sets %.3g", e);
    }
    free(a);
    free(b);
    free(c);
    free(d);
    free(got.topk);
    free(want.topk);
done:
    sg_model_free(on);
    sg_model_free(off);
    free(prompt);
}

/*
 * With the MHA form limited to the first 100 positions, a prompt's later
 * tokens take the absorbed form: chunked prefill (chunks across the limit)
 * still equals one shot bitwise, and the logits stay within rounding of
 * the all-MHA run.
 */
static void
test_mha_limit(void)
{
    sg_model *all = load("bf16", 0, 0, 0);
    sg_model *lim = load("bf16", 0, 0, 0);
    size_t    np;
    int32_t  *prompt = fixture_file("bf16", NULL, "prompt.i32.bin", &np);
    char      err[512];

    if (!all || !lim || !prompt) {
        CHECK(0, "mha-limit/fixtures", "missing fixture files");
        goto done;
    }
    const sg_config *c = &lim->cfg;
    int    P = (int)np, V = c->vocab_size;
    float *a = malloc(sizeof(float) * V), *b = malloc(sizeof(float) * V);
    float *d = malloc(sizeof(float) * V);

    /* set explicitly: every prompt token in the MHA form (the default
     * turns to the absorbed form past index_topk) */
    all->num.mha_max_bytes = (size_t)1 << 40;
    lim->num.mha_max_bytes = (size_t)100 * c->num_attention_heads
                             * (c->qk_nope_head_dim + c->v_head_dim)
                             * sizeof(float);
    int ok = prefill(lim, prompt, P, P, NULL, a, err, sizeof(err)) == 0;
    ok = ok && prefill(lim, prompt, P, 37, NULL, b, err, sizeof(err)) == 0;
    ok = ok && prefill(all, prompt, P, P, NULL, d, err, sizeof(err)) == 0;
    CHECK(ok && P > 120, "mha-limit/run", "%s (prompt %d tokens)",
          ok ? "prompt too short" : err, P);
    if (ok) {
        double e = check_rel_err(a, d, V);

        CHECK(memcmp(a, b, sizeof(float) * V) == 0, "mha-limit/chunked-equal",
              "rel err %.3g", check_rel_err(a, b, V));
        CHECK(e == e && e < 1e-5, "mha-limit/close-to-mha",
              "rel err vs all-MHA %.3g", e);
        printf("# mha-limit: absorbed vs MHA logits rel err %.3g\n", e);
    }
    free(a);
    free(b);
    free(d);
done:
    sg_model_free(all);
    sg_model_free(lim);
    free(prompt);
}

/*
 * The MHA form expanding its keys a range at a time (num.mha_key_range):
 * dense prefill with ranges of 64 keys gives the logits of one range over
 * the whole prompt bitwise, one shot and in chunks of 37; a range that is
 * not a multiple of SG_PREFILL_KEY_ALIGN is refused with its name.
 */
static void
test_mha_ranges(void)
{
    sg_model *m = load("bf16", 0, 1, 0);
    size_t    np;
    int32_t  *prompt = fixture_file("bf16", NULL, "prompt.i32.bin", &np);
    int       V = m ? m->cfg.vocab_size : 0, P = (int)np, ok;
    float    *out[3] = { NULL, NULL, NULL };
    char      err[512] = "";

    CHECK(m && prompt && P > 130, "mha-ranges/fixtures",
          "missing fixture files, or a prompt too short for three ranges");
    if (!m || !prompt || P <= 130)
        goto done;
    for (int i = 0; i < 3; i++)
        out[i] = malloc(sizeof(float) * V);
    /* one range over the prompt, then ranges of 64 one shot and chunked */
    m->num.mha_max_bytes = (size_t)1 << 40;
    ok = prefill(m, prompt, P, P, NULL, out[0], err, sizeof(err)) == 0;
    m->num.mha_key_range = 64;
    ok = ok && prefill(m, prompt, P, P, NULL, out[1], err, sizeof(err)) == 0;
    ok = ok && prefill(m, prompt, P, 37, NULL, out[2], err, sizeof(err)) == 0;
    CHECK(ok, "mha-ranges/run", "%s", err);
    if (ok) {
        CHECK(memcmp(out[0], out[1], sizeof(float) * V) == 0,
              "mha-ranges/one-shot-equal", "rel err %.3g",
              check_rel_err(out[1], out[0], V));
        CHECK(memcmp(out[0], out[2], sizeof(float) * V) == 0,
              "mha-ranges/chunked-equal", "rel err %.3g",
              check_rel_err(out[2], out[0], V));
    }
    m->num.mha_key_range = 100;
    err[0] = '\0';
    ok = prefill(m, prompt, P, P, NULL, out[1], err, sizeof(err)) != 0;
    CHECK(ok && strstr(err, "mha_key_range") != NULL, "mha-ranges/bad-range",
          "rc ok or message '%s'", err);
done:
    for (int i = 0; i < 3; i++)
        free(out[i]);
    sg_model_free(m);
    free(prompt);
}

static void
test_load_errors(void)
{
    sg_model *m = NULL;
    char      err[512] = "";
    int       rc = sg_model_load("/nonexistent/model", NULL, &m, err, sizeof(err));

    CHECK(rc != 0 && m == NULL && strstr(err, "/nonexistent/model"),
          "load/missing-dir", "rc %d, message '%s'", rc, err);
}

int
main(void)
{
    check_seed_from_env();
    test_load_errors();
    test_strict_run("strict", 0);
    test_strict_run("strict-absorbed", 1);
    test_fp8_forced();
    test_chunks_and_batches();
    test_index_share();
    test_window();
    test_mha_limit();
    test_mha_ranges();
    return check_finish();
}
