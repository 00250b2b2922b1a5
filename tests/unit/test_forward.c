/*
 * The forward pass in process (so the sanitizers see it): the fixtures'
 * strict run to 1e-3 with identical top-k sets and routing, an FP8 run with
 * decisions forced, chunked prefill and batching equal to the one-shot run,
 * and clean errors for bad batches.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "protocol.h"

static char dir[1024];

static void *
fixture(const char *variant, const char *run, const char *file, size_t *n)
{
    char   path[2048];
    size_t len = 0;
    void  *p;

    if (run)
        snprintf(path, sizeof(path), "%s/tiny-v32/%s/expected/%s/%s",
                 check_fixtures_dir(), variant, run, file);
    else
        snprintf(path, sizeof(path), "%s/tiny-v32/%s/expected/%s",
                 check_fixtures_dir(), variant, file);
    p = check_read_file(path, &len);
    if (n)
        *n = len / 4;
    return p;
}

static sg_model *
load(const char *variant, int kv_fp8, int dense, int act_quant)
{
    sg_model_opts o;
    sg_model     *m = NULL;
    char          err[512];

    sg_model_opts_default(&o);
    o.num.kv_fp8 = kv_fp8;
    o.num.dense = dense;
    o.num.act_quant = act_quant;
    snprintf(dir, sizeof(dir), "%s/tiny-v32/%s", check_fixtures_dir(), variant);
    if (sg_model_load(dir, &o, &m, err, sizeof(err)) != 0) {
        CHECK(0, "load", "%s: %s", dir, err);
        return NULL;
    }
    return m;
}

static double
max_abs_rows(const float *a, const float *b, size_t n)
{
    return check_max_abs(a, b, n);
}

/* bf16 fix_nokvq_sparse: the strict class, free running, teacher forced. */
static void
test_strict_run(void)
{
    sg_model       *m = load("bf16", 0, 0, 1);
    sg_protocol     p = { 0 };
    sg_protocol_out o;
    size_t          np, nt;
    int32_t        *prompt = fixture("bf16", NULL, "prompt.i32.bin", &np);
    int32_t        *tokens = fixture("bf16", "fix_nokvq_sparse", "tokens.i32.bin", &nt);
    float          *pl = fixture("bf16", "fix_nokvq_sparse", "prefill_logits.f32.bin", NULL);
    float          *dl = fixture("bf16", "fix_nokvq_sparse", "decode_logits.f32.bin", NULL);
    int32_t        *ptk = fixture("bf16", "fix_nokvq_sparse", "prefill_topk_all.i32.bin", NULL);
    int32_t        *tk = fixture("bf16", "fix_nokvq_sparse", "topk.i32.bin", NULL);
    int32_t        *pex = fixture("bf16", "fix_nokvq_sparse", "prefill_experts_all.i32.bin", NULL);
    float          *hid = fixture("bf16", "fix_nokvq_sparse", "hidden.f32.bin", NULL);
    char            err[512];

    if (!m || !prompt || !tokens || !pl || !dl || !ptk || !tk || !pex || !hid) {
        CHECK(0, "strict/fixtures", "missing fixture files under %s",
              check_fixtures_dir());
        goto done;
    }
    const sg_config *c = &m->cfg;
    int V = c->vocab_size, L = c->num_hidden_layers, K = c->index_topk;
    int k = c->num_experts_per_tok, D = c->hidden_size;
    int P = (int)np, N = (int)nt - 1;

    p.prompt = prompt;
    p.n_prompt = P;
    p.steps = N;
    p.teacher = tokens;
    p.trace = 1;
    if (sg_protocol_run(m, &p, &o, err, sizeof(err)) != 0) {
        CHECK(0, "strict/run", "%s", err);
        goto done;
    }
    double dp = max_abs_rows(o.prefill_logits, pl, V);
    double dd = max_abs_rows(o.decode_logits, dl, (size_t)N * V);
    CHECK(dp <= 1e-3, "strict/prefill-logits", "max |d| %.3g > 1e-3", dp);
    CHECK(dd <= 1e-3, "strict/decode-logits", "max |d| %.3g > 1e-3", dd);
    CHECK(memcmp(o.tokens, tokens, sizeof(int32_t) * (N + 1)) == 0,
          "strict/argmax", "argmax differs from the reference tokens");
    CHECK(memcmp(o.prefill_topk_all, ptk, sizeof(int32_t) * L * P * K) == 0,
          "strict/prefill-topk", "prefill top-k sets differ");
    CHECK(memcmp(o.topk, tk, sizeof(int32_t) * L * (N + 1) * K) == 0,
          "strict/query-topk", "query-row top-k sets differ");
    CHECK(memcmp(o.prefill_experts_all, pex, sizeof(int32_t) * L * P * k) == 0,
          "strict/routing", "prefill expert routing differs");
    double dh = check_rel_err(o.hidden, hid, (size_t)(N + 1) * (L + 1) * D);
    CHECK(dh <= 1e-5, "strict/hidden", "hidden states rel err %.3g", dh);
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
    sg_model       *m = load("fp8", 1, 0, 1);
    sg_protocol     p = { 0 };
    sg_protocol_out o;
    size_t          np, nt;
    const char     *run = "fix_sparse";
    int32_t        *prompt = fixture("fp8", NULL, "prompt.i32.bin", &np);
    int32_t        *tokens = fixture("fp8", run, "tokens.i32.bin", &nt);
    float          *pl = fixture("fp8", run, "prefill_logits.f32.bin", NULL);
    float          *dl = fixture("fp8", run, "decode_logits.f32.bin", NULL);
    int32_t        *ptk = fixture("fp8", run, "prefill_topk_all.i32.bin", NULL);
    int32_t        *tk = fixture("fp8", run, "topk.i32.bin", NULL);
    int32_t        *pex = fixture("fp8", run, "prefill_experts_all.i32.bin", NULL);
    int32_t        *ex = fixture("fp8", run, "experts.i32.bin", NULL);
    char            err[512];

    if (!m || !prompt || !tokens || !pl || !dl || !ptk || !tk || !pex || !ex) {
        CHECK(0, "fp8-forced/fixtures", "missing fixture files");
        goto done;
    }
    int V = m->cfg.vocab_size, P = (int)np, N = (int)nt - 1;

    p.prompt = prompt;
    p.n_prompt = P;
    p.steps = N;
    p.teacher = tokens;
    p.force_prefill_topk = ptk;
    p.force_topk = tk;
    p.force_prefill_experts = pex;
    p.force_experts = ex;
    if (sg_protocol_run(m, &p, &o, err, sizeof(err)) != 0) {
        CHECK(0, "fp8-forced/run", "%s", err);
        goto done;
    }
    double dp = max_abs_rows(o.prefill_logits, pl, V);
    double dd = max_abs_rows(o.decode_logits, dl, (size_t)N * V);
    CHECK(dp <= 0.5 && dd <= 0.5, "fp8-forced/logits",
          "max |d| prefill %.3g decode %.3g > 0.5", dp, dd);
    CHECK(memcmp(o.tokens, tokens, sizeof(int32_t) * (N + 1)) == 0,
          "fp8-forced/argmax", "argmax differs from the reference tokens");
    sg_protocol_out_free(&o);
done:
    sg_model_free(m);
    free(prompt); free(tokens); free(pl); free(dl); free(ptk); free(tk);
    free(pex); free(ex);
}

/* Prefill in chunks and two sequences in one batch give the one-shot
 * logits: the cache of a prefix depends only on the prefix. */
static void
test_chunks_and_batches(void)
{
    sg_model *m = load("bf16", 1, 0, 1);
    size_t    np;
    int32_t  *prompt = fixture("bf16", NULL, "prompt.i32.bin", &np);
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
    test_strict_run();
    test_fp8_forced();
    test_chunks_and_batches();
    return check_finish();
}
