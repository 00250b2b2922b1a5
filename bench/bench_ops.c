/*
 * Micro-benchmark of the CPU backend's hot ops at DeepSeek-V3.2 layer
 * shapes: decode GEMVs over BF16/FP8 weights, prefill GEMMs, indexer
 * scores, top-k and sparse MLA decode attention.
 *
 *   bench_ops [threads] [seconds per op]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model/backend.h"
#include "model/dtype.h"

static double
now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static unsigned rng = 12345;

static float
frand(void)
{
    rng = rng * 1664525u + 1013904223u;
    return (rng >> 8) / 16777216.0f * 2 - 1;
}

static uint8_t
rand_code(void)
{
    uint8_t c;

    do {
        rng = rng * 1664525u + 1013904223u;
        c = (uint8_t)(rng >> 24);
    } while ((c & 0x7f) == 0x7f || (c & 0x78) == 0x78);
    return c;
}

static double budget = 0.5;

/* Runs fn until the budget is spent; returns seconds per call. */
#define TIME(expr) ({                                                 \
        double t0_ = now(), t_;                                       \
        int    it_ = 0;                                               \
        do {                                                          \
            expr;                                                     \
            it_++;                                                    \
        } while ((t_ = now() - t0_) < budget && it_ < 100000);        \
        t_ / it_;                                                     \
    })

static void
make_weight(sg_tensor *t, sg_dtype dt, int rows, int cols)
{
    size_t n = (size_t)rows * cols;

    memset(t, 0, sizeof(*t));
    t->name = "bench";
    t->dtype = dt;
    t->ndim = 2;
    t->shape[0] = rows;
    t->shape[1] = cols;
    if (dt == SG_BF16) {
        uint16_t *d = malloc(2 * n);
        for (size_t i = 0; i < n; i++)
            d[i] = sg_f32_to_bf16(frand() * 0.05f);
        t->data = d;
    } else {
        int      sr = (rows + 127) / 128, sc = (cols + 127) / 128;
        uint8_t *d = malloc(n);
        float   *s = malloc(sizeof(float) * sr * sc);
        for (size_t i = 0; i < n; i++)
            d[i] = rand_code();
        for (int i = 0; i < sr * sc; i++)
            s[i] = 1.0f / 1024;
        t->data = d;
        t->scale = s;
        t->scale_cols = sc;
    }
}

int
main(int argc, char **argv)
{
    int         threads = argc > 1 ? atoi(argv[1]) : 0;
    sg_backend *b;

    if (argc > 2)
        budget = atof(argv[2]);
    b = sg_backend_cpu_new(threads);
    printf("# cpu backend, %d threads, %.2f s per op\n", b->n_threads, budget);

    /* ---- linear ---- */
    {
        int       rows = 2048, cols = 7168;
        sg_tensor wb, w8;
        float    *x = b->ops->alloc(b, sizeof(float) * 128 * cols);
        float    *y = b->ops->alloc(b, sizeof(float) * 128 * rows);

        for (int i = 0; i < 128 * cols; i++)
            x[i] = frand();
        make_weight(&wb, SG_BF16, rows, cols);
        make_weight(&w8, SG_F8_E4M3, rows, cols);
        double t;
        t = TIME(b->ops->linear(b, &wb, x, 1, y, 0, 1));
        printf("linear bf16 %dx%d n=1        %8.3f ms  %6.1f GB/s weights\n",
               rows, cols, t * 1e3, 2.0 * rows * cols / t / 1e9);
        t = TIME(b->ops->linear(b, &w8, x, 1, y, 1, 1));
        printf("linear fp8  %dx%d n=1 aq     %8.3f ms  %6.1f GB/s weights\n",
               rows, cols, t * 1e3, 1.0 * rows * cols / t / 1e9);
        t = TIME(b->ops->linear(b, &w8, x, 8, y, 1, 1));
        printf("linear fp8  %dx%d n=8 aq     %8.3f ms  %6.1f GFLOP/s\n",
               rows, cols, t * 1e3, 2.0 * 8 * rows * cols / t / 1e9);
        t = TIME(b->ops->linear(b, &w8, x, 128, y, 1, 1));
        printf("linear fp8  %dx%d n=128 aq   %8.3f ms  %6.1f GFLOP/s\n",
               rows, cols, t * 1e3, 2.0 * 128 * rows * cols / t / 1e9);
        t = TIME(b->ops->linear(b, &wb, x, 128, y, 0, 1));
        printf("linear bf16 %dx%d n=128      %8.3f ms  %6.1f GFLOP/s\n",
               rows, cols, t * 1e3, 2.0 * 128 * rows * cols / t / 1e9);
        free((void *)wb.data);
        free((void *)w8.data);
        free((void *)w8.scale);
        b->ops->free(b, x);
        b->ops->free(b, y);
    }

    /* ---- indexer, top-k and decode attention over a cache ---- */
    {
        sg_config cfg;
        int       ctx = 16384, K = 2048, IH = 64, H = 128;
        int       nblk = ctx / SG_KV_BLOCK;

        memset(&cfg, 0, sizeof(cfg));
        cfg.num_hidden_layers = 1;
        cfg.kv_lora_rank = 512;
        cfg.qk_rope_head_dim = 64;
        cfg.index_head_dim = 128;
        sg_kv_pool *pool = sg_kv_pool_new(b, &cfg, nblk, 1);
        int32_t    *bt = malloc(sizeof(int32_t) * nblk);
        int32_t     pos = ctx - 1, seq = 0, len = ctx;
        sg_rows     rows = { 1, &pos, &seq, bt, nblk };
        sg_kv_layer *L = &pool->layers[0];

        for (int i = 0; i < nblk; i++)
            bt[i] = (i * 7) % nblk;     /* nblk a power of two: a permutation */
        for (size_t i = 0; i < (size_t)ctx * 512; i++)
            ((uint8_t *)L->latent)[i] = rand_code();
        for (size_t i = 0; i < (size_t)ctx * 4; i++)
            L->latent_scale[i] = 1.0f / 64;
        for (size_t i = 0; i < (size_t)ctx * 64; i++)
            L->pe[i] = frand();
        for (size_t i = 0; i < (size_t)ctx * 128; i++)
            L->ikey[i] = rand_code();
        for (int i = 0; i < ctx; i++)
            L->ikey_scale[i] = 0.01f;

        uint8_t *q8 = malloc((size_t)IH * 128);
        float   *w = malloc(sizeof(float) * IH);
        float   *sc = malloc(sizeof(float) * ctx);
        int32_t *sel = malloc(sizeof(int32_t) * K);
        for (int i = 0; i < IH * 128; i++)
            q8[i] = rand_code();
        for (int i = 0; i < IH; i++)
            w[i] = frand();
        double t = TIME(b->ops->index_scores(b, pool, 0, &rows, q8, w, IH,
                                             sc, ctx));
        printf("index_scores 1 row, %d keys, %d heads %8.3f ms  "
               "%6.1f GFLOP/s\n",
               ctx, IH, t * 1e3, 2.0 * ctx * IH * 128 / t / 1e9);
        t = TIME(b->ops->topk(b, sc, 1, ctx, &len, K, sel));
        printf("topk 1 row, %d of %d             %8.3f ms\n", K, ctx, t * 1e3);

        float *ql = malloc(sizeof(float) * H * 512);
        float *qp = malloc(sizeof(float) * H * 64);
        float *out = malloc(sizeof(float) * H * 512);
        for (int i = 0; i < H * 512; i++)
            ql[i] = frand();
        for (int i = 0; i < H * 64; i++)
            qp[i] = frand();
        t = TIME(b->ops->attn_decode(b, pool, 0, &rows, ql, qp, sel, K, H,
                                     0.07f, out));
        printf("attn_decode %d heads, %d keys, fp8 %8.3f ms  %6.1f GFLOP/s\n",
               H, K, t * 1e3, 2.0 * 2 * H * K * 576 / t / 1e9);
        sg_kv_pool_free(pool);
        free(bt);
        free(q8);
        free(w);
        free(sc);
        free(sel);
        free(ql);
        free(qp);
        free(out);
    }
    /* ---- prefill attention (MHA form) over one chunk ---- */
    {
        int     n = 1024, H = 16, nope = 128, rope = 64, v = 128, K = 256;
        float  *q = malloc(sizeof(float) * n * H * (nope + rope));
        float  *kv = malloc(sizeof(float) * n * H * (nope + v));
        float  *pe = malloc(sizeof(float) * n * rope);
        float  *out = malloc(sizeof(float) * n * H * v);
        int32_t *pos = malloc(sizeof(int32_t) * n), seq = 0;
        int32_t *sel = malloc(sizeof(int32_t) * n * K);
        sg_rows rows = { n, pos, &seq, NULL, 0 };

        for (size_t i = 0; i < (size_t)n * H * (nope + rope); i++)
            q[i] = frand();
        for (size_t i = 0; i < (size_t)n * H * (nope + v); i++)
            kv[i] = frand();
        for (size_t i = 0; i < (size_t)n * rope; i++)
            pe[i] = frand();
        for (int i = 0; i < n; i++) {
            pos[i] = i;
            for (int j = 0; j < K; j++)     /* spread over the causal keys */
                sel[i * K + j] = j <= i ? (int)((long)j * (i + 1) / K) : -1;
        }
        double t = TIME(b->ops->attn_prefill(b, q, kv, pe, n, &rows, NULL, K,
                                             H, nope, rope, v, 0.07f, out));
        printf("attn_prefill dense %d rows, %d heads %8.3f ms  %6.1f GFLOP/s\n",
               n, H, t * 1e3, 2.0 * n * (n + 1) / 2 * H * 320 / t / 1e9);
        t = TIME(b->ops->attn_prefill(b, q, kv, pe, n, &rows, sel, K, H, nope,
                                      rope, v, 0.07f, out));
        printf("attn_prefill top-%d %d rows, %d heads %8.3f ms\n", K, n, H,
               t * 1e3);
        free(q);
        free(kv);
        free(pe);
        free(out);
        free(pos);
        free(sel);
    }
    b->ops->destroy(b);
    return 0;
}
