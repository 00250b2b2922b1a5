/*
 * The CUDA backend against the CPU backend (the reference), op by op on
 * fresh random inputs, then the whole model on the shared fixtures.
 *
 * Without a device (or under the sanitizers, whose shadow memory the CUDA
 * driver cannot share) it checks that sg_backend_cuda_new fails cleanly
 * with a message and reports the device checks as SKIP lines.
 *
 * Tolerances (relative error ||gpu - cpu|| / ||cpu||), derived from what
 * each op computes:
 *  - pure data movement and one rounding per element (add, gather/scatter,
 *    embed, RoPE, dequant, KV store/gather): 1e-6, a few f32 ulps;
 *  - reductions in another order (norms, Hadamard, f32 dot products in
 *    linear/absorb, indexer scores, attention softmax): 1e-5: an f32 sum of
 *    n terms in any order is within ~n * 2^-24 of the exact one relative
 *    to the sum of magnitudes, and our inputs keep that ratio small;
 *  - BF16 weights at batch > 8 (cuBLAS, activations split into two bf16
 *    halves, ~2^-17 each): 5e-5;
 *  - decode attention on the tensor cores (FP8 pool: codes exact in bf16,
 *    q and p * scale as two bf16 halves, ~2^-17 each, then a softmax):
 *    2e-5;
 *  - bit-exact: FP8 codes and scales of act_quant (the same IEEE division
 *    and RNE), top-k sets on identical scores, routing decisions;
 *  - whole model: logits within the fixtures' strict class (1e-3 max
 *    |diff|), identical argmax, top-k sets and routing; FP8 with
 *    act_quant within the FP8 class (0.5 max |diff|, same argmax), FP8
 *    without it against the CPU at 1e-3 (test_model_fp8 says why);
 *    random V3.2-shaped weights against the CPU with its decisions
 *    forced (test_model_random_vs_cpu).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/backend.h"
#include "check.h"
#include "fixture_runs.h"
#include "model/dtype.h"
#include "offline/mkmodel.h"
#include "offline/protocol.h"

static sg_backend *cpu, *gpu;

/* ---- helpers ------------------------------------------------------------ */

static void *
dev_copy(sg_backend *b, const void *h, size_t bytes)
{
    void *d = b->ops->alloc(b, bytes ? bytes : 1);

    if (d && bytes)
        b->ops->upload(b, d, h, bytes);
    return d;
}

/* A device buffer of n floats holding NaN, so unwritten outputs fail. */
static float *
dev_poison(sg_backend *b, size_t n)
{
    float *h = malloc(sizeof(float) * (n ? n : 1)), *d;

    for (size_t i = 0; i < n; i++)
        h[i] = NAN;
    d = dev_copy(b, h, sizeof(float) * n);
    free(h);
    return d;
}

static void *
host_of(sg_backend *b, const void *d, size_t bytes)
{
    void *h = malloc(bytes ? bytes : 1);

    b->ops->download(b, h, d, bytes);
    return h;
}

static float *
randn(size_t n, float s)
{
    float *v = malloc(sizeof(float) * (n ? n : 1));

    for (size_t i = 0; i < n; i++)
        v[i] = check_randn() * s;
    return v;
}

static int32_t *
randi(size_t n, int lo, int hi)
{
    int32_t *v = malloc(sizeof(int32_t) * (n ? n : 1));

    for (size_t i = 0; i < n; i++)
        v[i] = lo + (int)(check_rand32() % (unsigned)(hi - lo));
    return v;
}

/* Runs the same op on both backends: *out_cpu/out_gpu are host copies. */
static void
compare(const char *name, const float *g, const float *c, size_t n,
        double tol)
{
    double e = check_rel_err(g, c, n);

    CHECK(e <= tol, name, "rel err %.3g > %.1g", e, tol);
}

static int
sync_ok(const char *name)
{
    char err[512];

    if (gpu->ops->sync(gpu, err, sizeof(err)) != 0) {
        CHECK(0, name, "device error: %s", err);
        return 0;
    }
    return 1;
}

/* A weight of dtype dt, rows x cols (cols 0: a vector), random values;
 * FP8 with random block scales (powers of two when pow2). */
typedef struct wpair {
    sg_tensor c, g;
    void     *data;
    float    *scale;
} wpair;

static void
weight_new(wpair *w, sg_dtype dt, int64_t rows, int64_t cols, float s,
           int pow2)
{
    int64_t n = rows * (cols ? cols : 1);
    char    err[256];

    memset(w, 0, sizeof(*w));
    w->c.name = "test.weight";
    w->c.dtype = dt;
    w->c.ndim = cols ? 2 : 1;
    w->c.shape[0] = rows;
    w->c.shape[1] = cols;
    w->data = malloc(sg_dtype_size(dt) * n);
    for (int64_t i = 0; i < n; i++) {
        float v = check_randn() * s;
        if (dt == SG_F32)
            ((float *)w->data)[i] = v;
        else if (dt == SG_BF16)
            ((uint16_t *)w->data)[i] = sg_f32_to_bf16(v);
        else
            ((uint8_t *)w->data)[i] = sg_f32_to_e4m3(check_randn() * 100);
    }
    if (dt == SG_F8_E4M3) {
        int64_t sr = (rows + 127) / 128, sc = ((cols ? cols : 1) + 127) / 128;
        w->scale = malloc(sizeof(float) * sr * sc);
        for (int64_t i = 0; i < sr * sc; i++)
            w->scale[i] = pow2 ? ldexpf(1.0f, -8 - (int)(check_rand32() % 4))
                               : s * check_randu(0.002f, 0.02f);
        w->c.scale = w->scale;
        w->c.scale_cols = sc;
    }
    w->c.data = w->data;
    w->g = w->c;
    if (cpu->ops->prepare_weight(cpu, &w->c, err, sizeof(err)) != 0
        || gpu->ops->prepare_weight(gpu, &w->g, err, sizeof(err)) != 0)
        CHECK(0, "prepare_weight", "%s", err);
}

static void
weight_free(wpair *w)
{
    free(w->data);
    free(w->scale);
}

static const char *
dt_name(sg_dtype dt)
{
    return dt == SG_F32 ? "f32" : dt == SG_BF16 ? "bf16" : "fp8";
}

/* ---- dense ops ---------------------------------------------------------- */

static void
test_embed_norms(void)
{
    int    n = 5, D = 384, V = 50;
    int32_t *tok = randi(n, 0, V);
    wpair  emb, nw, nb;

    weight_new(&emb, SG_BF16, V, D, 1.0f, 0);
    weight_new(&nw, SG_BF16, D, 0, 1.0f, 0);
    weight_new(&nb, SG_F32, D, 0, 1.0f, 0);

    float *xc = cpu->ops->alloc(cpu, sizeof(float) * n * D);
    float *xg = dev_poison(gpu, (size_t)n * D);
    cpu->ops->embed(cpu, &emb.c, tok, n, xc);
    gpu->ops->embed(gpu, &emb.g, tok, n, xg);
    float *hc = host_of(cpu, xc, sizeof(float) * n * D);
    float *hg = host_of(gpu, xg, sizeof(float) * n * D);
    if (sync_ok("embed"))
        compare("embed", hg, hc, (size_t)n * D, 1e-6);

    /* rmsnorm over a strided view (the kv_a layout) and layernorm */
    float *x = randn((size_t)n * D, 2.0f);
    float *dxc = dev_copy(cpu, x, sizeof(float) * n * D);
    float *dxg = dev_copy(gpu, x, sizeof(float) * n * D);
    int    dim = D - 128;
    float *oc = cpu->ops->alloc(cpu, sizeof(float) * n * dim);
    float *og = dev_poison(gpu, (size_t)n * dim);
    wpair  rw;
    weight_new(&rw, SG_BF16, dim, 0, 1.0f, 0);
    cpu->ops->rmsnorm(cpu, dxc, D, &rw.c, 1e-6f, n, dim, oc, dim);
    gpu->ops->rmsnorm(gpu, dxg, D, &rw.g, 1e-6f, n, dim, og, dim);
    float *rc = host_of(cpu, oc, sizeof(float) * n * dim);
    float *rg = host_of(gpu, og, sizeof(float) * n * dim);
    if (sync_ok("rmsnorm"))
        compare("rmsnorm", rg, rc, (size_t)n * dim, 1e-5);

    float *lc = cpu->ops->alloc(cpu, sizeof(float) * n * D);
    float *lg = dev_poison(gpu, (size_t)n * D);
    cpu->ops->layernorm(cpu, dxc, &nw.c, &nb.c, 1e-6f, n, D, lc);
    gpu->ops->layernorm(gpu, dxg, &nw.g, &nb.g, 1e-6f, n, D, lg);
    float *l1 = host_of(cpu, lc, sizeof(float) * n * D);
    float *l2 = host_of(gpu, lg, sizeof(float) * n * D);
    if (sync_ok("layernorm"))
        compare("layernorm", l2, l1, (size_t)n * D, 1e-5);

    cpu->ops->free(cpu, xc); gpu->ops->free(gpu, xg);
    cpu->ops->free(cpu, dxc); gpu->ops->free(gpu, dxg);
    cpu->ops->free(cpu, oc); gpu->ops->free(gpu, og);
    cpu->ops->free(cpu, lc); gpu->ops->free(gpu, lg);
    free(tok); free(hc); free(hg); free(x); free(rc); free(rg); free(l1);
    free(l2);
    weight_free(&emb); weight_free(&nw); weight_free(&nb); weight_free(&rw);
}

static void
test_linear_one(sg_dtype dt, int n, int rows, int cols, int aq, int ue8m0,
                double tol)
{
    wpair  w;
    char   name[96];
    float *x = randn((size_t)n * cols, 1.0f);

    snprintf(name, sizeof(name), "linear/%s/n%d/%dx%d%s%s", dt_name(dt), n,
             rows, cols, aq ? "/act_quant" : "", aq && ue8m0 ? "/ue8m0" : "");
    weight_new(&w, dt, rows, cols, 0.05f, ue8m0);
    float *xc = dev_copy(cpu, x, sizeof(float) * n * cols);
    float *xg = dev_copy(gpu, x, sizeof(float) * n * cols);
    float *yc = cpu->ops->alloc(cpu, sizeof(float) * n * rows);
    float *yg = dev_poison(gpu, (size_t)n * rows);
    cpu->ops->linear(cpu, &w.c, xc, n, yc, aq, ue8m0);
    gpu->ops->linear(gpu, &w.g, xg, n, yg, aq, ue8m0);
    float *hc = host_of(cpu, yc, sizeof(float) * n * rows);
    float *hg = host_of(gpu, yg, sizeof(float) * n * rows);
    if (sync_ok(name))
        compare(name, hg, hc, (size_t)n * rows, tol);
    cpu->ops->free(cpu, xc); cpu->ops->free(cpu, yc);
    gpu->ops->free(gpu, xg); gpu->ops->free(gpu, yg);
    free(x); free(hc); free(hg);
    weight_free(&w);
}

static void
test_linear(void)
{
    /* decode-sized (GEMV path) and prefill-sized (GEMM path), odd shapes */
    test_linear_one(SG_F32, 3, 200, 136, 0, 0, 1e-5);
    test_linear_one(SG_F32, 70, 200, 136, 0, 0, 1e-5);
    test_linear_one(SG_BF16, 1, 512, 384, 0, 0, 1e-5);
    test_linear_one(SG_BF16, 8, 300, 256, 0, 0, 1e-5);
    test_linear_one(SG_BF16, 9, 300, 256, 0, 0, 5e-5);
    test_linear_one(SG_BF16, 130, 520, 384, 0, 0, 5e-5);
    test_linear_one(SG_BF16, 5, 100, 100, 0, 0, 1e-5);     /* unaligned */
    test_linear_one(SG_F8_E4M3, 4, 384, 256, 0, 0, 1e-5);
    test_linear_one(SG_F8_E4M3, 4, 384, 256, 1, 1, 1e-5);
    test_linear_one(SG_F8_E4M3, 77, 300, 384, 1, 0, 1e-5);
    test_linear_one(SG_F8_E4M3, 77, 300, 384, 1, 1, 1e-5);
}

static void
test_elementwise(void)
{
    size_t cnt = 100003;
    int    n = 7, dim = 200, m = 12;
    float *a = randn(cnt, 1), *bv = randn(cnt, 3);
    float *ac = dev_copy(cpu, a, sizeof(float) * cnt);
    float *ag = dev_copy(gpu, a, sizeof(float) * cnt);
    float *bc = dev_copy(cpu, bv, sizeof(float) * cnt);
    float *bg = dev_copy(gpu, bv, sizeof(float) * cnt);
    float *oc = cpu->ops->alloc(cpu, sizeof(float) * cnt);
    float *og = dev_poison(gpu, cnt);

    cpu->ops->silu_mul(cpu, ac, bc, oc, cnt);
    gpu->ops->silu_mul(gpu, ag, bg, og, cnt);
    cpu->ops->add(cpu, ac, bc, cnt);
    gpu->ops->add(gpu, ag, bg, cnt);
    float *h1 = host_of(cpu, oc, sizeof(float) * cnt);
    float *h2 = host_of(gpu, og, sizeof(float) * cnt);
    float *h3 = host_of(cpu, ac, sizeof(float) * cnt);
    float *h4 = host_of(gpu, ag, sizeof(float) * cnt);
    if (sync_ok("silu_mul")) {
        compare("silu_mul", h2, h1, cnt, 1e-6);
        compare("add", h4, h3, cnt, 1e-6);
    }

    /* gather, then scatter-add with repeated targets (order matters) */
    int32_t *gi = randi(m, 0, n);
    float   *w = randn(m, 1);
    float   *src = randn((size_t)n * dim, 1), *rows = randn((size_t)m * dim, 1);
    float   *sc = dev_copy(cpu, src, sizeof(float) * n * dim);
    float   *sg = dev_copy(gpu, src, sizeof(float) * n * dim);
    float   *rc = dev_copy(cpu, rows, sizeof(float) * m * dim);
    float   *rg = dev_copy(gpu, rows, sizeof(float) * m * dim);
    float   *gc = cpu->ops->alloc(cpu, sizeof(float) * m * dim);
    float   *gg = dev_poison(gpu, (size_t)m * dim);
    cpu->ops->gather_rows(cpu, sc, gi, m, dim, gc);
    gpu->ops->gather_rows(gpu, sg, gi, m, dim, gg);
    cpu->ops->scatter_add_rows(cpu, sc, gi, w, m, dim, rc);
    gpu->ops->scatter_add_rows(gpu, sg, gi, w, m, dim, rg);
    float *g1 = host_of(cpu, gc, sizeof(float) * m * dim);
    float *g2 = host_of(gpu, gg, sizeof(float) * m * dim);
    float *s1 = host_of(cpu, sc, sizeof(float) * n * dim);
    float *s2 = host_of(gpu, sg, sizeof(float) * n * dim);
    if (sync_ok("gather_rows")) {
        compare("gather_rows", g2, g1, (size_t)m * dim, 0);
        compare("scatter_add_rows", s2, s1, (size_t)n * dim, 1e-6);
    }

    cpu->ops->free(cpu, ac); cpu->ops->free(cpu, bc); cpu->ops->free(cpu, oc);
    gpu->ops->free(gpu, ag); gpu->ops->free(gpu, bg); gpu->ops->free(gpu, og);
    cpu->ops->free(cpu, sc); cpu->ops->free(cpu, rc); cpu->ops->free(cpu, gc);
    gpu->ops->free(gpu, sg); gpu->ops->free(gpu, rg); gpu->ops->free(gpu, gg);
    free(a); free(bv); free(h1); free(h2); free(h3); free(h4); free(gi);
    free(w); free(src); free(rows); free(g1); free(g2); free(s1); free(s2);
}

static void
test_rope_hadamard_fp8(void)
{
    int    n = 6, H = 3, rd = 64, hs = 96, max_pos = 300;
    int    half = rd / 2;
    float *tab = malloc(sizeof(float) * max_pos * half * 2);

    for (int p = 0; p < max_pos; p++)
        for (int i = 0; i < half; i++) {
            double a = p * pow(10000.0, -2.0 * i / rd);
            tab[(p * half + i) * 2] = (float)cos(a);
            tab[(p * half + i) * 2 + 1] = (float)sin(a);
        }
    sg_rope_table tc = { dev_copy(cpu, tab, sizeof(float) * max_pos * half * 2),
                         rd, max_pos };
    sg_rope_table tg = { dev_copy(gpu, tab, sizeof(float) * max_pos * half * 2),
                         rd, max_pos };
    int32_t *pos = randi(n, 0, max_pos);
    size_t   cnt = (size_t)n * H * hs;
    for (int inter = 0; inter < 2; inter++) {
        float *x = randn(cnt, 1);
        float *xc = dev_copy(cpu, x, sizeof(float) * cnt);
        float *xg = dev_copy(gpu, x, sizeof(float) * cnt);
        cpu->ops->rope(cpu, xc, n, H, H * hs, hs, hs - rd, pos, &tc, inter);
        gpu->ops->rope(gpu, xg, n, H, H * hs, hs, hs - rd, pos, &tg, inter);
        float *h1 = host_of(cpu, xc, sizeof(float) * cnt);
        float *h2 = host_of(gpu, xg, sizeof(float) * cnt);
        if (sync_ok("rope"))
            compare(inter ? "rope/interleaved" : "rope/rotate-half", h2, h1,
                    cnt, 1e-6);
        cpu->ops->free(cpu, xc); gpu->ops->free(gpu, xg);
        free(x); free(h1); free(h2);
    }

    /* hadamard then act_quant (the indexer's path), both scale formats */
    int    rows = 33, dim = 256;
    float *x = randn((size_t)rows * dim, 3);
    for (int i = 0; i < dim; i++)
        x[i] = 0.0f;                    /* an all-zero row: the 1e-4 clamp */
    float *xc = dev_copy(cpu, x, sizeof(float) * rows * dim);
    float *xg = dev_copy(gpu, x, sizeof(float) * rows * dim);
    cpu->ops->hadamard(cpu, xc, rows, dim);
    gpu->ops->hadamard(gpu, xg, rows, dim);
    float *h1 = host_of(cpu, xc, sizeof(float) * rows * dim);
    float *h2 = host_of(gpu, xg, sizeof(float) * rows * dim);
    if (sync_ok("hadamard"))
        compare("hadamard", h2, h1, (size_t)rows * dim, 1e-6);
    /* quantize the same input on both (the CPU's rotated rows) */
    gpu->ops->upload(gpu, xg, h1, sizeof(float) * rows * dim);
    for (int ue = 0; ue < 2; ue++) {
        size_t   nq = (size_t)rows * dim, ns = (size_t)rows * (dim / 128);
        uint8_t *qc = cpu->ops->alloc(cpu, nq), *qg = gpu->ops->alloc(gpu, nq);
        float   *scc = cpu->ops->alloc(cpu, sizeof(float) * ns);
        float   *scg = dev_poison(gpu, ns);
        cpu->ops->fp8_quant(cpu, xc, rows, dim, qc, scc, ue);
        gpu->ops->fp8_quant(gpu, xg, rows, dim, qg, scg, ue);
        uint8_t *b1 = host_of(cpu, qc, nq), *b2 = host_of(gpu, qg, nq);
        float   *s1 = host_of(cpu, scc, sizeof(float) * ns);
        float   *s2 = host_of(gpu, scg, sizeof(float) * ns);
        if (sync_ok("fp8_quant")) {
            size_t diff = 0;
            for (size_t i = 0; i < nq; i++)
                diff += b1[i] != b2[i];
            CHECK(diff == 0 && memcmp(s1, s2, sizeof(float) * ns) == 0,
                  ue ? "fp8_quant/ue8m0" : "fp8_quant/f32-scale",
                  "%zu of %zu codes differ, scales %s", diff, nq,
                  memcmp(s1, s2, sizeof(float) * ns) ? "differ" : "equal");
        }
        float *dc = cpu->ops->alloc(cpu, sizeof(float) * nq);
        float *dg = dev_poison(gpu, nq);
        cpu->ops->fp8_dequant(cpu, qc, scc, rows, dim, dc);
        gpu->ops->fp8_dequant(gpu, qg, scg, rows, dim, dg);
        float *d1 = host_of(cpu, dc, sizeof(float) * nq);
        float *d2 = host_of(gpu, dg, sizeof(float) * nq);
        if (sync_ok("fp8_dequant"))
            compare("fp8_dequant", d2, d1, nq, 0);
        cpu->ops->free(cpu, qc); gpu->ops->free(gpu, qg);
        cpu->ops->free(cpu, scc); gpu->ops->free(gpu, scg);
        cpu->ops->free(cpu, dc); gpu->ops->free(gpu, dg);
        free(b1); free(b2); free(s1); free(s2); free(d1); free(d2);
    }
    cpu->ops->free(cpu, xc); gpu->ops->free(gpu, xg);
    cpu->ops->free(cpu, (void *)tc.cos_sin);
    gpu->ops->free(gpu, (void *)tg.cos_sin);
    free(x); free(h1); free(h2); free(tab); free(pos);
}

/* ---- cache, indexer, attention ------------------------------------------ */

typedef struct att_setup {
    sg_config   cfg;
    sg_kv_pool *pc, *pg;
    int         n_seqs, max_blocks, n_blocks;
    int32_t    *table;          /* [n_seqs][max_blocks] */
    int32_t    *len;            /* tokens stored per sequence */
} att_setup;

/* Two pools (CPU, GPU) filled identically through kv_store with random
 * latents, RoPE keys and indexer keys: seqs of random lengths, blocks
 * shuffled over the pool. */
static void
att_new(att_setup *a, int fp8, int lora, int rope, int n_seqs, int max_len)
{
    memset(a, 0, sizeof(*a));
    a->cfg.num_hidden_layers = 2;
    a->cfg.kv_lora_rank = lora;
    a->cfg.qk_rope_head_dim = rope;
    a->cfg.index_head_dim = 128;
    a->n_seqs = n_seqs;
    a->max_blocks = (max_len + SG_KV_BLOCK - 1) / SG_KV_BLOCK;
    a->n_blocks = n_seqs * a->max_blocks + 3;
    a->pc = sg_kv_pool_new(cpu, &a->cfg, a->n_blocks, fp8);
    a->pg = sg_kv_pool_new(gpu, &a->cfg, a->n_blocks, fp8);
    a->table = malloc(sizeof(int32_t) * n_seqs * a->max_blocks);
    a->len = malloc(sizeof(int32_t) * n_seqs);
    int32_t *perm = malloc(sizeof(int32_t) * a->n_blocks);
    for (int i = 0; i < a->n_blocks; i++)
        perm[i] = i;
    for (int i = a->n_blocks - 1; i > 0; i--) {
        int j = (int)(check_rand32() % (unsigned)(i + 1)), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    for (int i = 0; i < n_seqs * a->max_blocks; i++)
        a->table[i] = perm[i];
    free(perm);
    for (int s = 0; s < n_seqs; s++)
        a->len[s] = max_len / 2 + (int)(check_rand32() % (unsigned)(max_len / 2));
    a->len[0] = max_len;

    /* store every token of every sequence, layer 1, in one batch */
    int T = 0;
    for (int s = 0; s < n_seqs; s++)
        T += a->len[s];
    int32_t *pos = malloc(sizeof(int32_t) * T), *seq = malloc(sizeof(int32_t) * T);
    for (int s = 0, r = 0; s < n_seqs; s++)
        for (int p = 0; p < a->len[s]; p++, r++) {
            pos[r] = p;
            seq[r] = s;
        }
    sg_rows rows = { T, pos, seq, a->table, a->max_blocks };
    float   *lat = randn((size_t)T * lora, 1), *pe = randn((size_t)T * rope, 1);
    uint8_t *ik = malloc((size_t)T * 128);
    float   *iks = malloc(sizeof(float) * T);
    for (size_t i = 0; i < (size_t)T * 128; i++)
        ik[i] = sg_f32_to_e4m3(check_randn() * 60);
    for (int i = 0; i < T; i++)
        iks[i] = check_randu(0.001f, 0.01f);
    for (int side = 0; side < 2; side++) {
        sg_backend *b = side ? gpu : cpu;
        sg_kv_pool *p = side ? a->pg : a->pc;
        float   *dl = dev_copy(b, lat, sizeof(float) * T * lora);
        float   *dp = dev_copy(b, pe, sizeof(float) * T * rope);
        uint8_t *dk = dev_copy(b, ik, (size_t)T * 128);
        float   *ds = dev_copy(b, iks, sizeof(float) * T);
        b->ops->kv_store(b, p, 1, &rows, dl, dp, dk, ds, 1);
        b->ops->free(b, dl); b->ops->free(b, dp); b->ops->free(b, dk);
        b->ops->free(b, ds);
    }
    free(lat); free(pe); free(ik); free(iks); free(pos); free(seq);
}

static void
att_free(att_setup *a)
{
    sg_kv_pool_free(a->pc);
    sg_kv_pool_free(a->pg);
    free(a->table);
    free(a->len);
}

static void
test_kv(int fp8)
{
    att_setup a;
    int       lora = 256, rope = 64;
    char      name[64];

    att_new(&a, fp8, lora, rope, 3, 150);
    snprintf(name, sizeof(name), "kv_store+gather/%s", fp8 ? "fp8" : "f32");
    int    S = a.len[0];
    float *lc = cpu->ops->alloc(cpu, sizeof(float) * S * lora);
    float *pc = cpu->ops->alloc(cpu, sizeof(float) * S * rope);
    float *lg = dev_poison(gpu, (size_t)S * lora);
    float *pg = dev_poison(gpu, (size_t)S * rope);
    cpu->ops->kv_gather(cpu, a.pc, 1, a.table, S, lc, pc);
    gpu->ops->kv_gather(gpu, a.pg, 1, a.table, S, lg, pg);
    float *h1 = host_of(cpu, lc, sizeof(float) * S * lora);
    float *h2 = host_of(gpu, lg, sizeof(float) * S * lora);
    float *h3 = host_of(cpu, pc, sizeof(float) * S * rope);
    float *h4 = host_of(gpu, pg, sizeof(float) * S * rope);
    if (sync_ok(name)) {
        compare(name, h2, h1, (size_t)S * lora, 0);
        compare("kv_gather/pe", h4, h3, (size_t)S * rope, 0);
    }
    cpu->ops->free(cpu, lc); cpu->ops->free(cpu, pc);
    gpu->ops->free(gpu, lg); gpu->ops->free(gpu, pg);
    free(h1); free(h2); free(h3); free(h4);
    att_free(&a);
}

/* Query rows: the last `per` positions of each sequence. */
static sg_rows
query_rows(const att_setup *a, int per, int32_t **pos, int32_t **seq)
{
    int n = a->n_seqs * per;

    *pos = malloc(sizeof(int32_t) * n);
    *seq = malloc(sizeof(int32_t) * n);
    for (int s = 0, r = 0; s < a->n_seqs; s++)
        for (int j = 0; j < per; j++, r++) {
            (*pos)[r] = a->len[s] - per + j;
            (*seq)[r] = s;
        }
    sg_rows rows = { n, *pos, *seq, a->table, a->max_blocks };
    return rows;
}

/*
 * Indexer scores of backend g (gpu, or a second CUDA backend with another
 * kernel) against the CPU's within tol, under the name `name`; then, with
 * topk set, top-k on identical scores.
 */
static void
test_indexer_topk(sg_backend *g, const char *name, double tol, int topk)
{
    att_setup a;
    int32_t  *pos, *seq;
    int       H = 70, per = 2, K = 48;      /* H > 64: two head passes */
    char      err[512];

    att_new(&a, 1, 256, 64, 3, 700);
    sg_rows rows = query_rows(&a, per, &pos, &seq);
    int     n = rows.n, stride = 700 + 5;
    uint8_t *q8 = malloc((size_t)n * H * 128);
    float   *w = randn((size_t)n * H, 0.1f);
    for (size_t i = 0; i < (size_t)n * H * 128; i++)
        q8[i] = sg_f32_to_e4m3(check_randn() * 60);
    uint8_t *qc = dev_copy(cpu, q8, (size_t)n * H * 128);
    uint8_t *qg = dev_copy(g, q8, (size_t)n * H * 128);
    float   *wc = dev_copy(cpu, w, sizeof(float) * n * H);
    float   *wg = dev_copy(g, w, sizeof(float) * n * H);
    float   *sc = cpu->ops->alloc(cpu, sizeof(float) * n * stride);
    float   *sg = dev_poison(g, (size_t)n * stride);
    cpu->ops->index_scores(cpu, a.pc, 1, &rows, qc, wc, H, sc, stride);
    g->ops->index_scores(g, a.pg, 1, &rows, qg, wg, H, sg, stride);
    float *h1 = host_of(cpu, sc, sizeof(float) * n * stride);
    float *h2 = host_of(g, sg, sizeof(float) * n * stride);
    char   mask_name[64];

    snprintf(mask_name, sizeof(mask_name), "%s/mask", name);
    if (g->ops->sync(g, err, sizeof(err)) != 0) {
        CHECK(0, name, "device error: %s", err);
    } else {
        /* -inf exactly past each row's position, then the finite part */
        size_t bad = 0, m = 0;
        float *f1 = malloc(sizeof(float) * n * stride);
        float *f2 = malloc(sizeof(float) * n * stride);
        for (int i = 0; i < n; i++)
            for (int s = 0; s < stride; s++) {
                float x = h1[(size_t)i * stride + s], y = h2[(size_t)i * stride + s];
                if (s > pos[i]) {
                    bad += !(isinf(y) && y < 0);
                } else {
                    f1[m] = x;
                    f2[m++] = y;
                }
            }
        CHECK(bad == 0, mask_name, "%zu entries past the position "
              "are not -inf", bad);
        compare(name, f2, f1, m, tol);
        printf("# %s: rel err %.3g\n", name, check_rel_err(f2, f1, m));
        free(f1);
        free(f2);
    }

    /* top-k on identical scores, with ties (coarse values) and short rows */
    float   *ts = NULL;
    int32_t *len = NULL, *k1 = NULL, *k2 = NULL;
    if (!topk)
        goto done;
    ts = malloc(sizeof(float) * n * stride);
    len = malloc(sizeof(int32_t) * n);
    for (int i = 0; i < n; i++) {
        len[i] = i == 0 ? K / 2 : pos[i] + 1;
        for (int s = 0; s < stride; s++)
            ts[(size_t)i * stride + s] = s < len[i]
                ? (i % 2 ? roundf(check_randn() * 4) : h1[(size_t)i * stride + s])
                : -INFINITY;
    }
    g->ops->upload(g, sg, ts, sizeof(float) * n * stride);
    cpu->ops->upload(cpu, sc, ts, sizeof(float) * n * stride);
    k1 = malloc(sizeof(int32_t) * n * K);
    k2 = malloc(sizeof(int32_t) * n * K);
    cpu->ops->topk(cpu, sc, n, stride, len, K, k1);
    g->ops->topk(g, sg, n, stride, len, K, k2);
    if (sync_ok("topk"))
        CHECK(memcmp(k1, k2, sizeof(int32_t) * n * K) == 0, "topk",
              "top-k sets differ from the CPU's");

done:
    cpu->ops->free(cpu, qc); g->ops->free(g, qg);
    cpu->ops->free(cpu, wc); g->ops->free(g, wg);
    cpu->ops->free(cpu, sc); g->ops->free(g, sg);
    free(q8); free(w); free(h1); free(h2); free(ts); free(len); free(k1);
    free(k2); free(pos); free(seq);
    att_free(&a);
}

/*
 * The opt-in FP8 tensor-core indexer (SG_CUDA_INDEX_FP8=1, read when a
 * backend is made): e4m3 products are exact, but Hopper's FP8 tensor cores
 * keep about 14 accumulator bits (DeepSeek-V3, section 3.3.2), so a dot
 * product of 128 terms may be off by ~2^-13 of its magnitude sum; over 70
 * heads with relu and weights that stays below 1e-3 of the scores' norm.
 * The measured error is printed: it says what this card keeps.
 */
static void
test_index_fp8(void)
{
    char        err[512];
    sg_backend *g8;

    setenv("SG_CUDA_INDEX_FP8", "1", 1);
    g8 = sg_backend_cuda_new(0, err, sizeof(err));
    unsetenv("SG_CUDA_INDEX_FP8");
    if (g8 == NULL) {
        CHECK(0, "index_scores/fp8", "second backend: %s", err);
        return;
    }
    test_indexer_topk(g8, "index_scores/fp8", 1e-3, 0);
    g8->ops->destroy(g8);
}

/*
 * Top-k 2048 on rows the indexer can hand over at the edges: NaN and +-inf
 * scores, +0 and -0 ties, a row of -inf, rows shorter than, equal to and
 * longer than k, coarse values with many ties.  The sets must be the
 * CPU's, bit for bit (NaN ranks as -inf, -0 as +0, ties to the lower
 * index).
 */
static void
test_topk_edges(void)
{
    enum { N = 7, STRIDE = 5000, K = 2048 };
    float   *ts = malloc(sizeof(float) * N * STRIDE);
    int32_t  len[N] = { STRIDE, STRIDE, 1, 3000, STRIDE, K, 777 };
    int32_t *k1 = malloc(sizeof(int32_t) * N * K);
    int32_t *k2 = malloc(sizeof(int32_t) * N * K);

    for (int i = 0; i < N; i++)
        for (int s = 0; s < STRIDE; s++) {
            float  x = check_randn(), *d = &ts[(size_t)i * STRIDE + s];
            unsigned r = check_rand32() % 16;

            switch (i) {
            case 0:             /* specials among random values */
                *d = r == 0 ? NAN : r == 1 ? INFINITY : r == 2 ? -INFINITY : x;
                break;
            case 1:             /* only zeros, both signs */
                *d = r % 2 ? 0.0f : -0.0f;
                break;
            case 3:
                *d = -INFINITY;
                break;
            case 4:             /* coarse: ~9 distinct values */
                *d = roundf(x * 2);
                break;
            default:
                *d = x;
            }
            if (s >= len[i])
                *d = -INFINITY;
        }
    float *sc = dev_copy(cpu, ts, sizeof(float) * N * STRIDE);
    float *sg = dev_copy(gpu, ts, sizeof(float) * N * STRIDE);
    cpu->ops->topk(cpu, sc, N, STRIDE, len, K, k1);
    gpu->ops->topk(gpu, sg, N, STRIDE, len, K, k2);
    if (sync_ok("topk/edges")) {
        int first = -1;
        for (int i = 0; i < N * K && first < 0; i++)
            if (k1[i] != k2[i])
                first = i;
        CHECK(first < 0, "topk/edges", "row %d entry %d: gpu %d, cpu %d",
              first / K, first % K, first < 0 ? 0 : k2[first],
              first < 0 ? 0 : k1[first]);
    }
    cpu->ops->free(cpu, sc);
    gpu->ops->free(gpu, sg);
    free(ts); free(k1); free(k2);
}

/* A random top-k set per row: k distinct keys <= pos, ascending, -1 padded. */
static int32_t *
random_sets(const int32_t *pos, int n, int k)
{
    int32_t *sel = malloc(sizeof(int32_t) * n * k);

    for (int i = 0; i < n; i++) {
        int32_t *r = sel + (size_t)i * k, c = 0;
        int      avail = pos[i] + 1;
        for (int s = 0; s < avail && c < k; s++) {
            /* selection sampling: each key with probability left/avail */
            if ((int)(check_rand32() % (unsigned)(avail - s)) < k - c)
                r[c++] = s;
        }
        for (; c < k; c++)
            r[c] = -1;
    }
    return sel;
}

/* per: query rows per sequence (many rows make one split per block) */
static void
test_attn_decode(int fp8, int dense, int H, int per, int lora)
{
    att_setup a;
    int32_t  *pos, *seq;
    int       rope = 64, K = 64;
    char      name[64];

    snprintf(name, sizeof(name), "attn_decode/%s/%s/h%d/rows%d/lora%d",
             fp8 ? "fp8" : "f32", dense ? "dense" : "sparse", H, 4 * per,
             lora);
    att_new(&a, fp8, lora, rope, 4, 300);
    sg_rows  rows = query_rows(&a, per, &pos, &seq);
    int      n = rows.n;
    int32_t *sel = dense ? NULL : random_sets(pos, n, K);
    float   *ql = randn((size_t)n * H * lora, 0.05f);
    float   *qp = randn((size_t)n * H * rope, 0.05f);
    float   *qlc = dev_copy(cpu, ql, sizeof(float) * n * H * lora);
    float   *qlg = dev_copy(gpu, ql, sizeof(float) * n * H * lora);
    float   *qpc = dev_copy(cpu, qp, sizeof(float) * n * H * rope);
    float   *qpg = dev_copy(gpu, qp, sizeof(float) * n * H * rope);
    float   *oc = cpu->ops->alloc(cpu, sizeof(float) * n * H * lora);
    float   *og = dev_poison(gpu, (size_t)n * H * lora);
    cpu->ops->attn_decode(cpu, a.pc, 1, &rows, qlc, qpc, sel, K, H, 0.1f, oc);
    gpu->ops->attn_decode(gpu, a.pg, 1, &rows, qlg, qpg, sel, K, H, 0.1f, og);
    float *h1 = host_of(cpu, oc, sizeof(float) * n * H * lora);
    float *h2 = host_of(gpu, og, sizeof(float) * n * H * lora);
    if (sync_ok(name))
        compare(name, h2, h1, (size_t)n * H * lora, 2e-5);
    cpu->ops->free(cpu, qlc); cpu->ops->free(cpu, qpc); cpu->ops->free(cpu, oc);
    gpu->ops->free(gpu, qlg); gpu->ops->free(gpu, qpg); gpu->ops->free(gpu, og);
    free(sel); free(ql); free(qp); free(h1); free(h2); free(pos); free(seq);
    att_free(&a);
}

static void
test_attn_prefill(int dense)
{
    int    n = 40, S = 90, H = 3, nope = 32, rope = 16, v = 24, K = 20;
    int32_t *pos = malloc(sizeof(int32_t) * n);
    char   name[64];

    snprintf(name, sizeof(name), "attn_prefill/%s", dense ? "dense" : "sparse");
    for (int i = 0; i < n; i++)
        pos[i] = S - n + i;
    int32_t *seq = calloc(n, sizeof(int32_t));
    int32_t  table[2] = { 0, 1 };
    sg_rows rows = { n, pos, seq, table, 2 };
    int32_t *sel = dense ? NULL : random_sets(pos, n, K);
    size_t nq = (size_t)n * H * (nope + rope), nkv = (size_t)S * H * (nope + v);
    float *q = randn(nq, 0.3f), *kv = randn(nkv, 1), *pe = randn((size_t)S * rope, 1);
    float *qc = dev_copy(cpu, q, sizeof(float) * nq), *qg = dev_copy(gpu, q, sizeof(float) * nq);
    float *kc = dev_copy(cpu, kv, sizeof(float) * nkv), *kg = dev_copy(gpu, kv, sizeof(float) * nkv);
    float *pc = dev_copy(cpu, pe, sizeof(float) * S * rope);
    float *pg = dev_copy(gpu, pe, sizeof(float) * S * rope);
    float *oc = cpu->ops->alloc(cpu, sizeof(float) * n * H * v);
    float *og = dev_poison(gpu, (size_t)n * H * v);
    cpu->ops->attn_prefill(cpu, qc, kc, pc, 0, S, &rows, sel, K, H, nope, rope, v,
                           0.15f, NULL, oc);
    gpu->ops->attn_prefill(gpu, qg, kg, pg, 0, S, &rows, sel, K, H, nope, rope, v,
                           0.15f, NULL, og);
    float *h1 = host_of(cpu, oc, sizeof(float) * n * H * v);
    float *h2 = host_of(gpu, og, sizeof(float) * n * H * v);
    if (sync_ok(name))
        compare(name, h2, h1, (size_t)n * H * v, 1e-5);
    if (dense) {
        /* keys in ranges of 64 (rows end in the first range and in the
         * second): bitwise the one call's output */
        float *ml = gpu->ops->alloc(gpu, sizeof(float) * n * H * 2);
        float *o2 = dev_poison(gpu, (size_t)n * H * v);
        for (int k0 = 0; k0 < S; k0 += SG_PREFILL_KEY_ALIGN)
            gpu->ops->attn_prefill(gpu, qg, kg + (size_t)k0 * H * (nope + v),
                                   pg + (size_t)k0 * rope, k0,
                                   S - k0 < SG_PREFILL_KEY_ALIGN ? S - k0 : SG_PREFILL_KEY_ALIGN,
                                   &rows, NULL, K, H, nope, rope, v, 0.15f, ml, o2);
        float *h3 = host_of(gpu, o2, sizeof(float) * n * H * v);
        if (sync_ok("attn_prefill/dense key ranges"))
            CHECK(memcmp(h3, h2, sizeof(float) * n * H * v) == 0,
                  "attn_prefill/dense key ranges", "differs from one call: rel err %.3g",
                  check_rel_err(h3, h2, (size_t)n * H * v));
        gpu->ops->free(gpu, ml); gpu->ops->free(gpu, o2);
        free(h3);
    }
    cpu->ops->free(cpu, qc); cpu->ops->free(cpu, kc); cpu->ops->free(cpu, pc);
    cpu->ops->free(cpu, oc);
    gpu->ops->free(gpu, qg); gpu->ops->free(gpu, kg); gpu->ops->free(gpu, pg);
    gpu->ops->free(gpu, og);
    free(pos); free(seq); free(sel); free(q); free(kv); free(pe); free(h1); free(h2);
}

static void
test_absorb(sg_dtype dt)
{
    int   n = 11, H = 4, nope = 32, rope = 16, v = 24, lora = 256;
    wpair w;
    char  name[64];

    weight_new(&w, dt, (int64_t)H * (nope + v), lora, 0.05f, 1);
    size_t nq = (size_t)n * H * (nope + rope), no = (size_t)n * H * lora;
    float *q = randn(nq, 1), *o = randn(no, 1);
    float *qc = dev_copy(cpu, q, sizeof(float) * nq), *qg = dev_copy(gpu, q, sizeof(float) * nq);
    float *oc = dev_copy(cpu, o, sizeof(float) * no), *og = dev_copy(gpu, o, sizeof(float) * no);
    float *lc = cpu->ops->alloc(cpu, sizeof(float) * no);
    float *lg = dev_poison(gpu, no);
    float *uc = cpu->ops->alloc(cpu, sizeof(float) * n * H * v);
    float *ug = dev_poison(gpu, (size_t)n * H * v);
    cpu->ops->mla_absorb(cpu, &w.c, qc, n, H, nope, rope, v, lora, lc);
    gpu->ops->mla_absorb(gpu, &w.g, qg, n, H, nope, rope, v, lora, lg);
    cpu->ops->mla_unabsorb(cpu, &w.c, oc, n, H, nope, v, lora, uc);
    gpu->ops->mla_unabsorb(gpu, &w.g, og, n, H, nope, v, lora, ug);
    float *h1 = host_of(cpu, lc, sizeof(float) * no);
    float *h2 = host_of(gpu, lg, sizeof(float) * no);
    float *h3 = host_of(cpu, uc, sizeof(float) * n * H * v);
    float *h4 = host_of(gpu, ug, sizeof(float) * n * H * v);
    if (sync_ok("mla_absorb")) {
        snprintf(name, sizeof(name), "mla_absorb/%s", dt_name(dt));
        compare(name, h2, h1, no, 1e-5);
        snprintf(name, sizeof(name), "mla_unabsorb/%s", dt_name(dt));
        compare(name, h4, h3, (size_t)n * H * v, 1e-5);
    }
    cpu->ops->free(cpu, qc); cpu->ops->free(cpu, oc); cpu->ops->free(cpu, lc);
    cpu->ops->free(cpu, uc);
    gpu->ops->free(gpu, qg); gpu->ops->free(gpu, og); gpu->ops->free(gpu, lg);
    gpu->ops->free(gpu, ug);
    free(q); free(o); free(h1); free(h2); free(h3); free(h4);
    weight_free(&w);
}

static void
test_moe_route(int use_bias, int n_group, int forced)
{
    int    n = 37, E = 64, topk_group = n_group > 1 ? 2 : 1, k = 6;
    float *logits = randn((size_t)n * E, 2), *bias = randn(E, 0.3f);
    char   name[64];

    snprintf(name, sizeof(name), "moe_route/g%d%s%s", n_group,
             use_bias ? "/bias" : "", forced ? "/forced" : "");
    int32_t *fx = NULL;
    if (forced) {
        fx = malloc(sizeof(int32_t) * n * k);
        for (int i = 0; i < n; i++)
            for (int j = 0; j < k; j++)
                fx[i * k + j] = (i + 7 * j) % E;
    }
    float   *lc = dev_copy(cpu, logits, sizeof(float) * n * E);
    float   *lg = dev_copy(gpu, logits, sizeof(float) * n * E);
    int32_t *e1 = malloc(sizeof(int32_t) * n * k), *e2 = malloc(sizeof(int32_t) * n * k);
    float   *w1 = malloc(sizeof(float) * n * k), *w2 = malloc(sizeof(float) * n * k);
    cpu->ops->moe_route(cpu, lc, use_bias ? bias : NULL, n, E, n_group,
                        topk_group, k, 1, 2.5f, fx, e1, w1);
    gpu->ops->moe_route(gpu, lg, use_bias ? bias : NULL, n, E, n_group,
                        topk_group, k, 1, 2.5f, fx, e2, w2);
    if (sync_ok(name)) {
        CHECK(memcmp(e1, e2, sizeof(int32_t) * n * k) == 0, name,
              "experts differ from the CPU's");
        compare(name, w2, w1, (size_t)n * k, 1e-6);
    }
    cpu->ops->free(cpu, lc); gpu->ops->free(gpu, lg);
    free(logits); free(bias); free(fx); free(e1); free(e2); free(w1); free(w2);
}

/* Device-side argument errors come back from sync, once, naming the op
 * or the weight; the backend keeps working afterwards. */
static void
test_errors(void)
{
    float    *x = dev_poison(gpu, 300);
    char      err[512] = "";
    sg_tensor t;

    gpu->ops->hadamard(gpu, x, 1, 300);
    int rc = gpu->ops->sync(gpu, err, sizeof(err));
    CHECK(rc != 0 && strstr(err, "hadamard"), "errors/reported",
          "rc %d, message '%s'", rc, err);
    rc = gpu->ops->sync(gpu, err, sizeof(err));
    CHECK(rc == 0, "errors/cleared", "second sync: %s", err);
    memset(&t, 0, sizeof(t));
    t.name = "unprepared.weight";
    t.dtype = SG_BF16;
    t.ndim = 2;
    t.shape[0] = t.shape[1] = 4;
    gpu->ops->linear(gpu, &t, x, 1, x + 100, 0, 0);
    rc = gpu->ops->sync(gpu, err, sizeof(err));
    CHECK(rc != 0 && strstr(err, "unprepared.weight"), "errors/weight",
          "rc %d, message '%s'", rc, err);
    gpu->ops->free(gpu, x);
}

/* ---- whole model -------------------------------------------------------- */

/* 1 when the shared fixtures are here (a device machine may lack them). */
static int
have_fixtures(const char *what)
{
    char path[2048];

    snprintf(path, sizeof(path), "%s/tiny-v32", check_fixtures_dir());
    if (access(path, R_OK) == 0)
        return 1;
    printf("SKIP %s: no fixtures at %s (set SG_FIXTURES)\n", what, path);
    return 0;
}

/* The fixtures' strict run (bf16, exact KV, sparse) on the GPU: logits
 * within the strict class of the reference, and the same decisions. */
static void
test_model_strict(void)
{
    sg_model_opts   o;
    sg_model       *m = NULL;
    sg_protocol     p = { 0 };
    sg_protocol_out out;
    char            dir[1024], err[512];
    size_t          np, nt;
    const char     *run = "fix_nokvq_sparse";
    int32_t *prompt = fixture_file("bf16", NULL, "prompt.i32.bin", &np);
    int32_t *tokens = fixture_file("bf16", run, "tokens.i32.bin", &nt);
    float   *pl = fixture_file("bf16", run, "prefill_logits.f32.bin", NULL);
    float   *dl = fixture_file("bf16", run, "decode_logits.f32.bin", NULL);
    int32_t *ptk = fixture_file("bf16", run, "prefill_topk_all.i32.bin", NULL);
    int32_t *tk = fixture_file("bf16", run, "topk.i32.bin", NULL);
    int32_t *pex = fixture_file("bf16", run, "prefill_experts_all.i32.bin", NULL);

    if (!prompt || !tokens || !pl || !dl || !ptk || !tk || !pex) {
        CHECK(0, "model/fixtures", "missing fixture files under %s",
              check_fixtures_dir());
        goto done;
    }
    sg_model_opts_default(&o);
    o.backend = "cuda";
    o.num.kv_fp8 = 0;
    o.num.dense = 0;
    o.num.act_quant = 1;
    snprintf(dir, sizeof(dir), "%s/tiny-v32/bf16", check_fixtures_dir());
    if (sg_model_load(dir, &o, &m, err, sizeof(err)) != 0) {
        CHECK(0, "model/load", "%s", err);
        goto done;
    }
    const sg_config *c = &m->cfg;
    int V = c->vocab_size, L = c->num_hidden_layers, K = c->index_topk;
    int k = c->num_experts_per_tok, P = (int)np, N = (int)nt - 1;
    p.prompt = prompt;
    p.n_prompt = P;
    p.steps = N;
    p.teacher = tokens;
    p.trace = 1;
    if (sg_protocol_run(m, &p, &out, err, sizeof(err)) != 0) {
        CHECK(0, "model/run", "%s", err);
        goto done;
    }
    double dp = check_max_abs(out.prefill_logits, pl, V);
    double dd = check_max_abs(out.decode_logits, dl, (size_t)N * V);
    CHECK(dp <= 1e-3 && dd <= 1e-3, "model/strict-logits",
          "max |d| prefill %.3g decode %.3g > 1e-3", dp, dd);
    CHECK(memcmp(out.tokens, tokens, sizeof(int32_t) * (N + 1)) == 0,
          "model/argmax", "argmax differs from the reference tokens");
    CHECK(memcmp(out.prefill_topk_all, ptk, sizeof(int32_t) * L * P * K) == 0
          && memcmp(out.topk, tk, sizeof(int32_t) * L * (N + 1) * K) == 0,
          "model/topk", "top-k sets differ from the reference");
    CHECK(memcmp(out.prefill_experts_all, pex, sizeof(int32_t) * L * P * k)
          == 0, "model/routing", "routing differs from the reference");
    printf("# model: GPU vs reference max |d| prefill %.3g decode %.3g "
           "(%.1f ms prefill, %.1f ms for %d decode steps)\n", dp, dd,
           out.prefill_seconds * 1e3, out.decode_seconds * 1e3, N);
    sg_protocol_out_free(&out);
done:
    sg_model_free(m);
    free(prompt); free(tokens); free(pl); free(dl); free(ptk); free(tk);
    free(pex);
}

/*
 * The FP8 fixture (FP8 weights and KV) on the GPU, two ways.
 *
 * act_quant off, decisions free: the GPU's logits against the CPU's, 1e-3
 * (an e4m3 KV code may round the other way on each side, see
 * model-random; the emulated kernels measured 2e-6 prefill, 4e-5 decode).
 *
 * act_quant on (the reference's FP8 run, fix_sparse, decisions forced):
 * within the class the CPU is held to against DeepSeek's reference
 * (test_forward fp8-forced: max |d| <= 0.5, same argmax).  Not against the
 * CPU at 1e-4: with act_quant a rounding-level difference can flip a
 * block's ue8m0 scale and random weights grow it (kernels/NOTES.md); the
 * GPU's prompt rows take the absorbed tensor-core kernel, the CPU's the
 * MHA form, and host emulation measured 0.04 between them here.
 */
static void
test_model_fp8(void)
{
    sg_model       *mc = NULL, *mg = NULL, *mr = NULL;
    sg_model_opts   o;
    sg_protocol     p = { 0 };
    sg_protocol_out a, b;
    char            dir[1024], err[512];
    size_t          np;
    int32_t        *prompt = fixture_file("fp8", NULL, "prompt.i32.bin", &np);
    int             ra = -1, rb = -1;
    double          dp, dd;

    if (prompt == NULL) {
        CHECK(0, "model-fp8/fixtures", "missing fixture files");
        return;
    }
    snprintf(dir, sizeof(dir), "%s/tiny-v32/fp8", check_fixtures_dir());
    sg_model_opts_default(&o);
    o.num.kv_fp8 = 1;
    o.num.act_quant = 0;
    if (sg_model_load(dir, &o, &mc, err, sizeof(err)) != 0) {
        CHECK(0, "model-fp8/load-cpu", "%s", err);
        goto done;
    }
    o.backend = "cuda";
    if (sg_model_load(dir, &o, &mg, err, sizeof(err)) != 0) {
        CHECK(0, "model-fp8/load-cuda", "%s", err);
        goto done;
    }
    p.prompt = prompt;
    p.n_prompt = (int)np;
    p.steps = 4;
    ra = sg_protocol_run(mc, &p, &a, err, sizeof(err));
    rb = ra == 0 ? sg_protocol_run(mg, &p, &b, err, sizeof(err)) : -1;
    if (ra != 0 || rb != 0) {
        CHECK(0, "model-fp8/run", "%s", err);
        goto done;
    }
    int V = mc->cfg.vocab_size;
    double ep = check_rel_err(b.prefill_logits, a.prefill_logits, V);
    double ed = check_rel_err(b.decode_logits, a.decode_logits, (size_t)4 * V);
    CHECK(ep <= 1e-3 && ed <= 1e-3, "model-fp8/gpu-vs-cpu",
          "logits rel err prefill %.3g decode %.3g > 1e-3", ep, ed);
    CHECK(memcmp(a.tokens, b.tokens, sizeof(int32_t) * 5) == 0,
          "model-fp8/argmax", "greedy tokens differ between CPU and GPU");

    o.num.act_quant = 1;
    if (sg_model_load(dir, &o, &mr, err, sizeof(err)) != 0) {
        CHECK(0, "model-fp8/load-cuda-aq", "%s", err);
        goto done;
    }
    fixture_check_fp8_forced(mr, "model-fp8/reference", &dp, &dd);
    printf("# model-fp8: act_quant off GPU vs CPU rel err %.3g / %.3g; "
           "act_quant on vs the reference max |d| %.3g / %.3g\n", ep, ed,
           dp, dd);
done:
    if (ra == 0)
        sg_protocol_out_free(&a);
    if (rb == 0)
        sg_protocol_out_free(&b);
    sg_model_free(mc);
    sg_model_free(mg);
    sg_model_free(mr);
    free(prompt);
}

/*
 * A random-weight model with V3.2's attention and indexer shapes (128 heads
 * shrunk to 32, latent 512 + RoPE 64, indexer 64 x 128, top-k 2048; MoE
 * and hidden size shrunk) on a prompt longer than top-k, so every row past
 * 2048 attends a real subset.  The CPU decides (top-k sets, experts,
 * tokens); the GPU runs with those decisions forced, so what is compared is
 * the arithmetic of every op in sequence, prefill in the GPU's absorbed
 * form against the CPU's MHA form.  Tolerances on logits and hidden
 * states: fp8 0 (bf16 weights, f32 KV): f32 sums in other orders, 1e-4
 * (the CPU's own MHA vs absorbed forms: 5e-7).  fp8 1 (FP8 weights, FP8 KV:
 * the tensor-core decode kernel): a latent element whose f32 value lies
 * within rounding of an e4m3 boundary can take the other code on each
 * side, one e4m3 step (1/16) on one element of one key; 1e-3 (the CPU's
 * own two forms: 3e-5).  Activation quantization (act_quant) stays off
 * here: there one flipped ue8m0 block scale moves a whole row by ~1e-2 and
 * random weights amplify it layer by layer (op tests check act_quant bit
 * for bit; the fixture runs check it on a trained-like scale).
 */
static void
test_model_random_vs_cpu(int fp8)
{
    char            dir[] = "/tmp/sg_cuda_model.XXXXXX", err[512], name[64];
    const char     *sets[] = { "num_hidden_layers=2", "hidden_size=1024",
                               "q_lora_rank=512", "num_attention_heads=32",
                               "num_key_value_heads=32",
                               "max_position_embeddings=4096" };
    sg_mkmodel_opts mo;
    sg_model_opts   o;
    sg_model       *mc = NULL, *mg = NULL;
    sg_protocol     p = { 0 };
    sg_protocol_out a, b;
    int             ra = -1, rb = -1, P = 2600, N = 3;
    int32_t        *prompt = NULL;

    snprintf(name, sizeof(name), "model-random/%s", fp8 ? "fp8" : "bf16");
    if (mkdtemp(dir) == NULL) {
        CHECK(0, name, "cannot make a temp dir");
        return;
    }
    memset(&mo, 0, sizeof(mo));
    mo.out_dir = dir;
    mo.preset = "v32-attn";
    mo.sets = sets;
    mo.n_sets = (int)(sizeof(sets) / sizeof(*sets));
    mo.fp8 = fp8;
    mo.seed = check_rand32();
    if (sg_mkmodel(&mo, err, sizeof(err)) != 0) {
        CHECK(0, name, "mkmodel: %s", err);
        goto done;
    }
    sg_model_opts_default(&o);
    o.num.kv_fp8 = fp8;
    o.num.act_quant = 0;
    if (sg_model_load(dir, &o, &mc, err, sizeof(err)) != 0) {
        CHECK(0, name, "load on the CPU: %s", err);
        goto done;
    }
    o.backend = "cuda";
    if (sg_model_load(dir, &o, &mg, err, sizeof(err)) != 0) {
        CHECK(0, name, "load on the GPU: %s", err);
        goto done;
    }
    prompt = randi(P, 2, mc->cfg.vocab_size);
    p.prompt = prompt;
    p.n_prompt = P;
    p.steps = N;
    p.trace = 1;
    ra = sg_protocol_run(mc, &p, &a, err, sizeof(err));
    if (ra != 0) {
        CHECK(0, name, "CPU run: %s", err);
        goto done;
    }
    p.teacher = a.tokens;
    p.force_prefill_topk = a.prefill_topk_all;
    p.force_topk = a.topk;
    p.force_prefill_experts = a.prefill_experts_all;
    p.force_experts = a.experts;
    rb = sg_protocol_run(mg, &p, &b, err, sizeof(err));
    if (rb != 0) {
        CHECK(0, name, "GPU run: %s", err);
        goto done;
    }
    int    V = mc->cfg.vocab_size, L = mc->cfg.num_hidden_layers;
    int    D = mc->cfg.hidden_size;
    double tol = fp8 ? 1e-3 : 1e-4;
    double ep = check_rel_err(b.prefill_logits, a.prefill_logits, V);
    double ed = check_rel_err(b.decode_logits, a.decode_logits,
                              (size_t)N * V);
    double eh = check_rel_err(b.hidden, a.hidden, (size_t)(N + 1) * (L + 1)
                                                  * D);
    CHECK(ep <= tol && ed <= tol && eh <= tol, name, "rel err logits "
          "prefill %.3g decode %.3g, hidden %.3g > %.0e", ep, ed, eh, tol);
    printf("# %s: %d-token prompt, %d steps: rel err prefill %.3g, decode "
           "%.3g, hidden %.3g; GPU prefill %.1f ms (CPU %.1f ms)\n", name,
           P, N, ep, ed, eh, b.prefill_seconds * 1e3,
           a.prefill_seconds * 1e3);
done:
    if (ra == 0)
        sg_protocol_out_free(&a);
    if (rb == 0)
        sg_protocol_out_free(&b);
    sg_model_free(mc);
    sg_model_free(mg);
    free(prompt);
    check_rm_rf(dir);
}

static const char *const device_tests[] = {
    "embed", "rmsnorm", "layernorm", "linear", "add", "silu_mul",
    "gather_rows", "scatter_add_rows", "rope", "hadamard", "fp8_quant",
    "fp8_dequant", "kv_store+gather", "index_scores", "topk", "attn_decode",
    "attn_prefill", "mla_absorb", "mla_unabsorb", "moe_route", "errors",
    "model", "model-random",
};

int
main(void)
{
    char err[512] = "";

    check_seed_from_env();
    sg_fp8_init();
    gpu = sg_backend_cuda_new(0, err, sizeof(err));
    if (gpu == NULL) {
        CHECK(err[0] != '\0' && (strstr(err, "no CUDA device")
                                 || strstr(err, "built without CUDA")),
              "cuda/no-device-message", "unexpected message '%s'", err);
        char err2[512] = "";
        CHECK(sg_backend_cuda_new(5, err2, sizeof(err2)) == NULL
              && err2[0] != '\0', "cuda/no-device-again",
              "a second attempt did not fail cleanly");
        printf("# %s\n", err);
        for (size_t i = 0; i < sizeof(device_tests) / sizeof(*device_tests); i++)
            printf("SKIP cuda/%s: %s\n", device_tests[i], err);
        return check_finish();
    }
    CHECK(strcmp(gpu->name, "cuda") == 0, "cuda/new", "name %s", gpu->name);
    if (getenv("SG_SANITIZED")) {
        /* ASan's shadow memory and the CUDA driver's mappings collide; the
         * plain build runs the device checks */
        gpu->ops->destroy(gpu);
        for (size_t i = 0; i < sizeof(device_tests) / sizeof(*device_tests); i++)
            printf("SKIP cuda/%s: not under the sanitizers\n", device_tests[i]);
        return check_finish();
    }
    {
        char e2[256] = "";
        CHECK(sg_backend_cuda_new(1 << 20, e2, sizeof(e2)) == NULL && e2[0],
              "cuda/bad-device", "device 2^20 did not fail with a message");
    }
    cpu = sg_backend_cpu_new(0);

    test_embed_norms();
    test_linear();
    test_elementwise();
    test_rope_hadamard_fp8();
    test_kv(0);
    test_kv(1);
    test_indexer_topk(gpu, "index_scores", 1e-5, 1);
    test_index_fp8();
    test_topk_edges();
    test_attn_decode(1, 0, 128, 1, 512);
    test_attn_decode(1, 0, 128, 17, 512);
    test_attn_decode(0, 0, 128, 17, 512);
    test_attn_decode(0, 0, 5, 1, 512);
    test_attn_decode(1, 1, 33, 1, 512);
    test_attn_decode(1, 0, 20, 2, 128);
    test_attn_decode(1, 1, 7, 1, 384);
    test_attn_prefill(0);
    test_attn_prefill(1);
    test_absorb(SG_BF16);
    test_absorb(SG_F8_E4M3);
    test_moe_route(1, 8, 0);
    test_moe_route(0, 4, 0);
    test_moe_route(1, 1, 0);
    test_moe_route(1, 8, 1);
    test_errors();

    gpu->ops->destroy(gpu);
    cpu->ops->destroy(cpu);
    gpu = cpu = NULL;
    if (have_fixtures("model")) {
        test_model_strict();
        test_model_fp8();
    }
    test_model_random_vs_cpu(0);
    test_model_random_vs_cpu(1);
    return check_finish();
}
