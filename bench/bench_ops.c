/*
 * The CPU backend's hot kernels against this machine's own ceilings,
 * measured in the same run: a peak-FMA loop (8-lane AVX2 and, where the
 * CPU has it, 16-lane AVX-512) and memory loops (read and copy over a
 * buffer larger than the caches), each on the backend's thread count.
 *
 *   bench_ops [threads] [seconds per kernel] [linear]
 *
 * Prints a markdown table: per kernel, time per call, its rate (GFLOP/s,
 * a multiply-add counted as 2, or GB/s of weights read) and that rate as a
 * share of the matching ceiling; "cores" is the CPU time the process got
 * per second of wall time over its threads (below 1.00 the machine was
 * busy with other work during that row, and every rate with it).
 */
#include <immintrin.h>
#include <math.h>
#include <pthread.h>
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

static double
cpu_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
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
static int    n_threads;
static double share;          /* cores used / threads, last TIME */

/* Runs expr until the budget is spent (at least twice, the first call
 * untimed); seconds per call. */
#define TIME(expr) ({                                                 \
        double t0_, c0_, t_;                                          \
        int    it_ = 0;                                               \
        expr;                                                         \
        t0_ = now();                                                  \
        c0_ = cpu_now();                                              \
        do {                                                          \
            expr;                                                     \
            it_++;                                                    \
        } while ((t_ = now() - t0_) < budget && it_ < 100000);        \
        share = (cpu_now() - c0_) / t_ / n_threads;                   \
        t_ / it_;                                                     \
    })

/* ---- ceilings --------------------------------------------------------- */

typedef struct {
    int    avx512;
    long   iters;
    float *buf;
    size_t n;             /* floats per thread */
    int    copy;
    double out;
} ceil_arg;

/* 12 independent FMA chains, 8 lanes: two FMA ports x four cycles of
 * latency with room to spare. */
static void *
fma_loop(void *p)
{
    ceil_arg *a = p;
    __m256    acc[12], x = _mm256_set1_ps(0.999f), y = _mm256_set1_ps(1e-7f);

    for (int u = 0; u < 12; u++)
        acc[u] = _mm256_set1_ps((float)u);
    for (long i = 0; i < a->iters; i++)
#pragma GCC unroll 12
        for (int u = 0; u < 12; u++)
            acc[u] = _mm256_fmadd_ps(acc[u], x, y);
    for (int u = 1; u < 12; u++)
        acc[0] = _mm256_add_ps(acc[0], acc[u]);
    a->out = _mm256_cvtss_f32(acc[0]);
    return NULL;
}

__attribute__((target("avx512f"))) static void *
fma_loop512(void *p)
{
    ceil_arg *a = p;
    __m512    acc[12], x = _mm512_set1_ps(0.999f), y = _mm512_set1_ps(1e-7f);

    for (int u = 0; u < 12; u++)
        acc[u] = _mm512_set1_ps((float)u);
    for (long i = 0; i < a->iters; i++)
#pragma GCC unroll 12
        for (int u = 0; u < 12; u++)
            acc[u] = _mm512_fmadd_ps(acc[u], x, y);
    for (int u = 1; u < 12; u++)
        acc[0] = _mm512_add_ps(acc[0], acc[u]);
    a->out = _mm512_reduce_add_ps(acc[0]);
    return NULL;
}

/* Reads (or copies to the second half) this thread's share of a buffer
 * larger than the caches. */
static void *
mem_loop(void *p)
{
    ceil_arg *a = p;
    __m256    s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;

    if (a->copy) {
        memcpy(a->buf + a->n / 2, a->buf, sizeof(float) * (a->n / 2));
        a->out = a->buf[a->n - 1];
        return NULL;
    }
    for (size_t i = 0; i + 32 <= a->n; i += 32) {
        s0 = _mm256_add_ps(s0, _mm256_loadu_ps(a->buf + i));
        s1 = _mm256_add_ps(s1, _mm256_loadu_ps(a->buf + i + 8));
        s2 = _mm256_add_ps(s2, _mm256_loadu_ps(a->buf + i + 16));
        s3 = _mm256_add_ps(s3, _mm256_loadu_ps(a->buf + i + 24));
    }
    a->out = _mm256_cvtss_f32(_mm256_add_ps(_mm256_add_ps(s0, s1),
                                            _mm256_add_ps(s2, s3)));
    return NULL;
}

/* Runs fn on n_threads threads with the same argument shape; seconds. */
static double
on_threads(void *(*fn)(void *), ceil_arg *proto, float *buf, size_t per)
{
    pthread_t th[64];
    ceil_arg  a[64];
    double    t0 = now(), c0 = cpu_now(), t;

    for (int i = 0; i < n_threads && i < 64; i++) {
        a[i] = *proto;
        a[i].buf = buf ? buf + per * i : NULL;
        a[i].n = per;
        pthread_create(&th[i], NULL, fn, &a[i]);
    }
    for (int i = 0; i < n_threads && i < 64; i++)
        pthread_join(th[i], NULL);
    t = now() - t0;
    share = (cpu_now() - c0) / t / n_threads;
    return t;
}

static double peak256, peak512, read_bw, copy_bw;

static void
row(const char *kernel, const char *shape, double sec, double rate,
    const char *unit, double ceiling, const char *cname)
{
    printf("| %s | %s | %.3f | %.1f %s | %.0f%% of %s | %.2f |\n", kernel,
           shape, sec * 1e3, rate, unit, 100 * rate / ceiling, cname, share);
}

static void
ceilings(void)
{
    ceil_arg a = { .iters = 200000000 / 12 };
    double   t;
    size_t   per = ((size_t)256 << 20) / sizeof(float) / n_threads;
    float   *buf = malloc(sizeof(float) * per * n_threads);

    t = on_threads(fma_loop, &a, NULL, 0);
    peak256 = 2.0 * 8 * 12 * a.iters * n_threads / t / 1e9;
    printf("| peak FMA, 8 lanes (AVX2) | 12 chains x %d threads | %.3f | "
           "%.1f GFLOP/s | ceiling | %.2f |\n", n_threads, t * 1e3, peak256,
           share);
    if (__builtin_cpu_supports("avx512f")) {
        t = on_threads(fma_loop512, &a, NULL, 0);
        peak512 = 2.0 * 16 * 12 * a.iters * n_threads / t / 1e9;
        printf("| peak FMA, 16 lanes (AVX-512) | 12 chains x %d threads | "
               "%.3f | %.1f GFLOP/s | ceiling | %.2f |\n", n_threads,
               t * 1e3, peak512, share);
    } else {
        peak512 = peak256;
    }
    for (size_t i = 0; i < per * n_threads; i++)
        buf[i] = 1.0f;
    a.copy = 0;
    on_threads(mem_loop, &a, buf, per);                 /* warm */
    t = on_threads(mem_loop, &a, buf, per);
    read_bw = sizeof(float) * per * n_threads / t / 1e9;
    printf("| memory read | 256 MB x %d threads | %.3f | %.1f GB/s | "
           "ceiling | %.2f |\n", n_threads, t * 1e3, read_bw, share);
    a.copy = 1;
    t = on_threads(mem_loop, &a, buf, per);
    copy_bw = sizeof(float) * per * n_threads / t / 1e9;   /* read + write */
    printf("| memory copy (read + write) | 256 MB x %d threads | %.3f | "
           "%.1f GB/s | ceiling | %.2f |\n", n_threads, t * 1e3, copy_bw,
           share);
    free(buf);
}

/* ---- kernels ---------------------------------------------------------- */

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

static void
free_weight(sg_tensor *t)
{
    free((void *)t->data);
    free((void *)t->scale);
}

/* The vector width the linear kernel and the attention tiles run in. */
static int wide;

static void
bench_linear(sg_backend *b)
{
    struct { sg_dtype dt; int rows, cols, n, aq; const char *what; } c[] = {
        { SG_BF16, 129280, 512, 1, 0, "lm_head GEMV (small model)" },
        { SG_BF16, 2048, 7168, 1, 0, "GEMV" },
        { SG_F8_E4M3, 2048, 7168, 1, 1, "GEMV, act_quant" },
        { SG_BF16, 1024, 512, 2048, 0, "GEMM (small model's MLP)" },
        { SG_BF16, 2048, 7168, 128, 0, "GEMM" },
        { SG_F8_E4M3, 2048, 7168, 128, 1, "GEMM, act_quant" },
    };

    for (size_t k = 0; k < sizeof(c) / sizeof(c[0]); k++) {
        sg_tensor w;
        float    *x = malloc(sizeof(float) * c[k].n * c[k].cols);
        float    *y = malloc(sizeof(float) * c[k].n * c[k].rows);
        char      shape[96], name[64];

        for (size_t i = 0; i < (size_t)c[k].n * c[k].cols; i++)
            x[i] = frand();
        make_weight(&w, c[k].dt, c[k].rows, c[k].cols);
        double t = TIME(b->ops->linear(b, &w, x, c[k].n, y, c[k].aq, 1));
        snprintf(name, sizeof(name), "linear %s %s",
                 c[k].dt == SG_BF16 ? "bf16" : "fp8", c[k].what);
        snprintf(shape, sizeof(shape), "%dx%d, n=%d", c[k].rows, c[k].cols,
                 c[k].n);
        if (c[k].n == 1)
            row(name, shape, t, (double)c[k].rows * c[k].cols
                * sg_dtype_size(c[k].dt) / t / 1e9, "GB/s", read_bw,
                "memory read");
        else
            row(name, shape, t, 2.0 * c[k].n * c[k].rows * c[k].cols / t
                / 1e9, "GFLOP/s", wide ? peak512 : peak256,
                wide ? "AVX-512 peak" : "AVX2 peak");
        free_weight(&w);
        free(x);
        free(y);
    }
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

/*
 * Decode projections below CPU_PAR_WORK (2M multiply-adds) run on the
 * calling thread.  Per shape, calls alternate between the default backend
 * and one that splits every loop (SG_CPU_PAR_WORK=0); the median and the
 * fastest call of each say whether a second thread gains anything on
 * loops of tens of microseconds.
 */
static void
bench_split(sg_backend *b)
{
    int         shapes[][2] = { { 512, 512 }, { 1536, 512 }, { 512, 2048 } };
    sg_backend *all;
    enum { CALLS = 2000 };
    double     *t[2];

    setenv("SG_CPU_PAR_WORK", "0", 1);
    all = sg_backend_cpu_new(n_threads);
    unsetenv("SG_CPU_PAR_WORK");
    t[0] = malloc(sizeof(double) * CALLS);
    t[1] = malloc(sizeof(double) * CALLS);
    for (size_t k = 0; k < sizeof(shapes) / sizeof(shapes[0]); k++) {
        int       rows = shapes[k][0], cols = shapes[k][1];
        sg_tensor w;
        float    *x = malloc(sizeof(float) * cols);
        float    *y = malloc(sizeof(float) * rows);
        char      shape[64], name[96];
        double    c0 = cpu_now(), w0 = now();

        for (int i = 0; i < cols; i++)
            x[i] = frand();
        make_weight(&w, SG_BF16, rows, cols);
        for (int i = 0; i < CALLS; i++)
            for (int v = 0; v < 2; v++) {
                double t0 = now();

                (v ? all : b)->ops->linear(v ? all : b, &w, x, 1, y, 0, 1);
                t[v][i] = now() - t0;
            }
        share = (cpu_now() - c0) / (now() - w0) / n_threads;
        for (int v = 0; v < 2; v++) {
            double gb = (double)rows * cols * 2 / 1e9;

            qsort(t[v], CALLS, sizeof(double), cmp_double);
            snprintf(name, sizeof(name), "linear bf16 decode GEMV, %s",
                     v ? "split (SG_CPU_PAR_WORK=0)" : "serial (below 2M)");
            snprintf(shape, sizeof(shape), "%dx%d, n=1, median (fastest %.1f us)",
                     rows, cols, t[v][0] * 1e6);
            row(name, shape, t[v][CALLS / 2], gb / t[v][CALLS / 2], "GB/s",
                read_bw, "memory read");
        }
        free_weight(&w);
        free(x);
        free(y);
    }
    free(t[0]);
    free(t[1]);
    all->ops->destroy(all);
}

static void
bench_prefill(sg_backend *b, double peak, const char *pname)
{
    int     n = 1024, H = 16, nope = 64, rope = 32, v = 64;
    float  *q = malloc(sizeof(float) * n * H * (nope + rope));
    float  *kv = malloc(sizeof(float) * n * H * (nope + v));
    float  *pe = malloc(sizeof(float) * n * rope);
    float  *out = malloc(sizeof(float) * n * H * v);
    int32_t *pos = malloc(sizeof(int32_t) * n), seq = 0;
    sg_rows rows = { n, pos, &seq, NULL, 0 };
    char    shape[96];

    for (size_t i = 0; i < (size_t)n * H * (nope + rope); i++)
        q[i] = frand();
    for (size_t i = 0; i < (size_t)n * H * (nope + v); i++)
        kv[i] = frand();
    for (size_t i = 0; i < (size_t)n * rope; i++)
        pe[i] = frand();
    for (int i = 0; i < n; i++)
        pos[i] = i;
    double t = TIME(b->ops->attn_prefill(b, q, kv, pe, 0, n, &rows, NULL, 0, H,
                                         nope, rope, v, 0.07f, NULL, out));
    snprintf(shape, sizeof(shape), "%d rows causal, %d heads, %d+%d / %d",
             n, H, nope, rope, v);
    row("attn_prefill dense (flash, MHA)", shape, t,
        2.0 * n * (n + 1) / 2 * H * (nope + rope + v) / t / 1e9, "GFLOP/s",
        peak, pname);
    free(q);
    free(kv);
    free(pe);
    free(out);
    free(pos);
}

/* A synthetic FP8 cache of ctx tokens: latent lora, rope, indexer keys. */
static sg_kv_pool *
make_pool(sg_backend *b, int ctx, int lora, int rope, int32_t **bt)
{
    sg_config cfg;
    int       nblk = ctx / SG_KV_BLOCK;

    memset(&cfg, 0, sizeof(cfg));
    cfg.num_hidden_layers = 1;
    cfg.kv_lora_rank = lora;
    cfg.qk_rope_head_dim = rope;
    cfg.index_head_dim = 128;
    sg_kv_pool  *pool = sg_kv_pool_new(b, &cfg, nblk, 1);
    sg_kv_layer *L = &pool->layers[0];

    *bt = malloc(sizeof(int32_t) * nblk);
    for (int i = 0; i < nblk; i++)
        (*bt)[i] = (i * 7) % nblk;     /* nblk a power of two: a permutation */
    for (size_t i = 0; i < (size_t)ctx * lora; i++)
        ((uint8_t *)L->latent)[i] = rand_code();
    for (size_t i = 0; i < (size_t)ctx * (lora / 128); i++)
        L->latent_scale[i] = 1.0f / 64;
    for (size_t i = 0; i < (size_t)ctx * rope; i++)
        L->pe[i] = frand();
    for (size_t i = 0; i < (size_t)ctx * 128; i++)
        L->ikey[i] = rand_code();
    for (int i = 0; i < ctx; i++)
        L->ikey_scale[i] = 0.01f;
    return pool;
}

/* Indexer scores, top-k and absorbed attention over a 16K cache: one
 * decode row at V3.2's shapes, and a block of prompt rows at the small
 * model's. */
static void
bench_cache_ops(sg_backend *b, double peak, const char *pname)
{
    struct { int rows, IH, H, lora, rope; const char *what; } c[] = {
        { 1, 64, 128, 512, 64, "decode row, V3.2 shapes" },
        { 64, 4, 16, 256, 32, "64 prompt rows, small model" },
    };
    int ctx = 16384, K = 2048;

    for (int k = 0; k < 2; k++) {
        int32_t    *bt;
        sg_kv_pool *pool = make_pool(b, ctx, c[k].lora, c[k].rope, &bt);
        int         n = c[k].rows, IH = c[k].IH, H = c[k].H;
        int         lora = c[k].lora, rope = c[k].rope;
        int32_t    *pos = malloc(sizeof(int32_t) * n);
        int32_t    *seq = calloc(n, sizeof(int32_t));
        int32_t    *len = malloc(sizeof(int32_t) * n);
        sg_rows     rows = { n, pos, seq, bt, ctx / SG_KV_BLOCK };
        uint8_t    *q8 = malloc((size_t)n * IH * 128);
        float      *w = malloc(sizeof(float) * n * IH);
        float      *sc = malloc(sizeof(float) * (size_t)n * ctx);
        int32_t    *sel = malloc(sizeof(int32_t) * (size_t)n * K);
        float      *ql = malloc(sizeof(float) * n * H * lora);
        float      *qp = malloc(sizeof(float) * n * H * rope);
        float      *out = malloc(sizeof(float) * n * H * lora);
        double      span = 0, t;
        char        shape[128], name[96];

        for (int i = 0; i < n; i++) {
            pos[i] = ctx - n + i;
            len[i] = pos[i] + 1;
            span += pos[i] + 1;
        }
        for (int i = 0; i < n * IH * 128; i++)
            q8[i] = rand_code();
        for (int i = 0; i < n * IH; i++)
            w[i] = frand();
        for (int i = 0; i < n * H * lora; i++)
            ql[i] = frand();
        for (int i = 0; i < n * H * rope; i++)
            qp[i] = frand();

        t = TIME(b->ops->index_scores(b, pool, 0, &rows, q8, w, IH, sc, ctx));
        snprintf(name, sizeof(name), "index_scores (%s)", c[k].what);
        snprintf(shape, sizeof(shape), "%d rows x %dK keys, %d heads x 128",
                 n, ctx / 1024, IH);
        row(name, shape, t, 2.0 * span * IH * 128 / t / 1e9, "GFLOP/s",
            peak512, "peak of the widest unit (OpenBLAS)");
        t = TIME(b->ops->topk(b, sc, n, ctx, len, K, sel));
        snprintf(name, sizeof(name), "topk (%s)", c[k].what);
        snprintf(shape, sizeof(shape), "%d rows, %d of %dK", n, K,
                 ctx / 1024);
        row(name, shape, t, 4.0 * span / t / 1e9, "GB/s", read_bw,
            "memory read");
        t = TIME(b->ops->attn_decode(b, pool, 0, &rows, ql, qp, sel, K, H,
                                     0.07f, out));
        snprintf(name, sizeof(name), "attn_decode, absorbed (%s)", c[k].what);
        snprintf(shape, sizeof(shape), "%d rows x %d keys, %d heads, %d+%d "
                 "FP8", n, K, H, lora, rope);
        row(name, shape, t, 2.0 * n * K * H * (2 * lora + rope) / t / 1e9,
            "GFLOP/s", peak, pname);
        sg_kv_pool_free(pool);
        free(bt), free(pos), free(seq), free(len), free(q8), free(w);
        free(sc), free(sel), free(ql), free(qp), free(out);
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
    n_threads = b->n_threads;
    int avx512 = __builtin_cpu_supports("avx512f")
                 && !(getenv("SG_CPU_ISA")
                      && strcmp(getenv("SG_CPU_ISA"), "avx2") == 0);

    wide = avx512;

    printf("CPU backend, %d threads, %.2f s per kernel; linear and attention "
           "kernels use %s.\n\n", n_threads, budget,
           avx512 ? "AVX-512" : "AVX2");
    printf("| kernel | shape | ms per call | rate | vs ceiling | cores |\n");
    printf("|---|---|---:|---:|---:|---:|\n");
    ceilings();
    bench_linear(b);
    bench_split(b);
    /* "linear" as the third argument: the ceilings and linear rows only */
    if (argc > 3 && strcmp(argv[3], "linear") == 0) {
        b->ops->destroy(b);
        return 0;
    }
    bench_prefill(b, avx512 ? peak512 : peak256,
                  avx512 ? "AVX-512 peak" : "AVX2 peak");
    bench_cache_ops(b, avx512 ? peak512 : peak256,
                    avx512 ? "AVX-512 peak" : "AVX2 peak");
    b->ops->destroy(b);
    return 0;
}
