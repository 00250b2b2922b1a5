/*
 * GPU benchmarks of the CUDA backend, each against the card's own ceilings
 * measured in the same run:
 *   - ceilings: device-to-device copy bandwidth (bytes read + written), a
 *     bf16 cuBLAS GEMM and an FP8 cuBLASLt GEMM (8192^3, random data);
 *   - indexer logits (index_scores) at 32K/64K/128K context, 64 query
 *     rows, 64 heads x 128: TFLOP/s vs the FP8 rate;
 *   - top-k 2048 of 32K..128K scores, 1 and 64 rows;
 *   - sparse decode attention, k = 2048, 128 heads, latent 512 (FP8 KV)
 *     + RoPE 64, batch 1 and 64: bytes moved vs copy bandwidth;
 *   - one real-shape V3.2 layer's decode step (hidden 7168, 128 heads,
 *     q_lora 1536, indexer 64 x 128, MoE 256 experts top-8 + 1 shared,
 *     FP8 weights) at 32K/64K/96K/128K context, DSA vs dense.
 * Weights and caches hold random values generated on the device.
 *
 * usage: gpu_bench [results.md]   (the markdown table also goes to stdout)
 */
#include <algorithm>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vector>

#include <cublasLt.h>

#include "cuda_internal.h"

#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { \
    fprintf(stderr, "gpu_bench: %s: %s\n", #x, cudaGetErrorString(e_)); \
    exit(1); } } while (0)
#define CKB(x) do { cublasStatus_t s_ = (x); if (s_ != CUBLAS_STATUS_SUCCESS) { \
    fprintf(stderr, "gpu_bench: %s: %s\n", #x, cublasGetStatusString(s_)); \
    exit(1); } } while (0)

static sg_backend  *B;
static cudaStream_t S;
static FILE        *md;
static char         lines[64][256];
static int          n_lines;

/* One result line: stdout now, the markdown table and summary later. */
static void
result(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(lines[n_lines], sizeof(lines[0]), fmt, ap);
    va_end(ap);
    printf("%s\n", lines[n_lines]);
    fflush(stdout);
    if (n_lines < 63)
        n_lines++;
}

static void
check_backend(const char *what)
{
    char err[512];

    if (B->ops->sync(B, err, sizeof(err)) != 0) {
        fprintf(stderr, "gpu_bench: %s: %s\n", what, err);
        exit(1);
    }
}

/* ---- random device data ------------------------------------------------- */

__device__ __forceinline__ uint32_t
hash32(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return (uint32_t)x;
}

/* e4m3 codes of magnitude <= 30 (no NaN), random sign */
__global__ void
k_fill_e4m3(uint8_t *p, size_t n, uint64_t seed)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        uint32_t h = hash32(seed * 0x9e3779b97f4a7c15ull + i);
        p[i] = (uint8_t)((h & 0x80) | ((h >> 8) % 0x5f));
    }
}

__global__ void
k_fill_f32(float *p, size_t n, uint64_t seed, float lo, float hi)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        uint32_t h = hash32(seed * 0x9e3779b97f4a7c15ull + i);
        p[i] = lo + (hi - lo) * (float)(h >> 8) * (1.0f / 16777216.0f);
    }
}

__global__ void
k_fill_bf16(uint16_t *p, size_t n, uint64_t seed, float s)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        uint32_t h = hash32(seed * 0x9e3779b97f4a7c15ull + i);
        float v = s * ((float)(h >> 8) * (2.0f / 16777216.0f) - 1.0f);
        p[i] = (uint16_t)(__float_as_uint(v) >> 16);
    }
}

static uint64_t seed_ctr = 12345;

static void
fill_e4m3(void *p, size_t n)
{
    k_fill_e4m3<<<4096, 256, 0, S>>>((uint8_t *)p, n, seed_ctr++);
    CK(cudaGetLastError());
}

static void
fill_f32(void *p, size_t n, float lo, float hi)
{
    k_fill_f32<<<4096, 256, 0, S>>>((float *)p, n, seed_ctr++, lo, hi);
    CK(cudaGetLastError());
}

static void *
dalloc(size_t bytes)
{
    void *p = B->ops->alloc(B, bytes);

    if (p == NULL) {
        fprintf(stderr, "gpu_bench: out of device memory (%.2f GB)\n",
                bytes / 1e9);
        exit(1);
    }
    return p;
}

/* A weight living only on the device: rows x cols (cols 0 = vector). */
static sg_tensor
dev_weight(const char *name, sg_dtype dt, int64_t rows, int64_t cols)
{
    sg_tensor t;
    int64_t   n = rows * (cols ? cols : 1);

    memset(&t, 0, sizeof(t));
    t.name = name;
    t.dtype = dt;
    t.ndim = cols ? 2 : 1;
    t.shape[0] = rows;
    t.shape[1] = cols;
    t.dev = dalloc(sg_dtype_size(dt) * n);
    if (dt == SG_F8_E4M3) {
        int64_t sr = (rows + 127) / 128, sc = ((cols ? cols : 1) + 127) / 128;
        fill_e4m3(t.dev, n);
        t.scale_cols = sc;
        t.dev_scale = dalloc(sizeof(float) * sr * sc);
        /* scales around 2^-9: products of e4m3 (|v| <= 30) stay O(1) */
        fill_f32(t.dev_scale, sr * sc, 0.0015f, 0.0025f);
    } else if (dt == SG_BF16) {
        k_fill_bf16<<<4096, 256, 0, S>>>((uint16_t *)t.dev, n, seed_ctr++,
                                         cols ? 0.02f : 1.0f);
    } else {
        fill_f32(t.dev, n, cols ? -0.02f : 0.9f, cols ? 0.02f : 1.1f);
    }
    CK(cudaGetLastError());
    return t;
}

static void
free_weight(sg_tensor *t)
{
    B->ops->free(B, t->dev);
    if (t->dev_scale)
        B->ops->free(B, t->dev_scale);
}

/* ---- timing ------------------------------------------------------------- */

/* Written before every timed run, outside the events: without it the
 * working set of a small case (1.6 MB of keys for one decode row, 32 MB
 * of scores for top-k, 17 MB of indexer keys) stays in the 50 MB L2
 * between repetitions, and its "HBM" bytes per second would be L2's. */
static void  *l2_flush;
static size_t l2_flush_bytes;

/* Median device time (ms) of f() over reps runs after 2 warm-ups, each
 * run starting with a cold L2. */
template <class F>
static double
time_ms(F f, int reps)
{
    cudaEvent_t a, b;
    std::vector<float> t;

    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    for (int i = 0; i < 2; i++)
        f();
    for (int i = 0; i < reps; i++) {
        float ms;
        if (l2_flush)
            CK(cudaMemsetAsync(l2_flush, i & 0xff, l2_flush_bytes, S));
        CK(cudaEventRecord(a, S));
        f();
        CK(cudaEventRecord(b, S));
        CK(cudaEventSynchronize(b));
        CK(cudaEventElapsedTime(&ms, a, b));
        t.push_back(ms);
    }
    check_backend("timed op");
    CK(cudaEventDestroy(a));
    CK(cudaEventDestroy(b));
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
}

/* ---- ceilings ----------------------------------------------------------- */

static double copy_gbs, bf16_tflops, fp8_tflops;

static void
ceilings(void)
{
    size_t bytes = (size_t)2 << 30;
    void  *a = dalloc(bytes), *b = dalloc(bytes);

    fill_f32(a, bytes / 4, -1, 1);
    double ms = time_ms([&] {
        CK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, S));
    }, 10);
    copy_gbs = 2.0 * bytes / (ms * 1e-3) / 1e9;
    B->ops->free(B, a);
    B->ops->free(B, b);

    int    M = 8192;
    size_t n = (size_t)M * M;
    uint16_t *x = (uint16_t *)dalloc(2 * n), *y = (uint16_t *)dalloc(2 * n);
    float    *z = (float *)dalloc(4 * n);
    k_fill_bf16<<<4096, 256, 0, S>>>(x, n, seed_ctr++, 1.0f);
    k_fill_bf16<<<4096, 256, 0, S>>>(y, n, seed_ctr++, 1.0f);
    float one = 1.0f, zero = 0.0f;
    cublasHandle_t h = cu(B)->blas;
    /* bf16 out, as the usual measurement of the ceiling (an f32 output
     * writes twice the bytes and may get a slower kernel) */
    ms = time_ms([&] {
        CKB(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, M, M, M, &one, x,
                         CUDA_R_16BF, M, y, CUDA_R_16BF, M, &zero, z,
                         CUDA_R_16BF, M, CUBLAS_COMPUTE_32F,
                         CUBLAS_GEMM_DEFAULT));
    }, 10);
    bf16_tflops = 2.0 * M * M * (double)M / (ms * 1e-3) / 1e12;

    /* FP8 (e4m3 x e4m3 -> bf16, f32 accumulation) through cuBLASLt; the
     * Hopper FP8 layout is "TN" */
    cublasLtHandle_t lt;
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatmulPreference_t pref;
    cublasLtMatmulHeuristicResult_t res;
    int    nres = 0;
    size_t wsb = 64 << 20;
    void  *ws = dalloc(wsb);
    cublasOperation_t tA = CUBLAS_OP_T, tB = CUBLAS_OP_N;
    uint8_t *fa = (uint8_t *)dalloc(n), *fb = (uint8_t *)dalloc(n);
    uint16_t *fc = (uint16_t *)dalloc(2 * n);
    fill_e4m3(fa, n);
    fill_e4m3(fb, n);
    CKB(cublasLtCreate(&lt));
    CKB(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    CKB(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &tA,
                                       sizeof(tA)));
    CKB(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tB,
                                       sizeof(tB)));
    CKB(cublasLtMatrixLayoutCreate(&la, CUDA_R_8F_E4M3, M, M, M));
    CKB(cublasLtMatrixLayoutCreate(&lb, CUDA_R_8F_E4M3, M, M, M));
    CKB(cublasLtMatrixLayoutCreate(&lc, CUDA_R_16BF, M, M, M));
    CKB(cublasLtMatmulPreferenceCreate(&pref));
    CKB(cublasLtMatmulPreferenceSetAttribute(pref,
            CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof(wsb)));
    /* no algorithm for these types is CUBLAS_STATUS_NOT_SUPPORTED, not an
     * error of the run: fall back to the assumed rate below */
    if (cublasLtMatmulAlgoGetHeuristic(lt, op, la, lb, lc, lc, pref, 1, &res,
                                       &nres) != CUBLAS_STATUS_SUCCESS)
        nres = 0;
    if (nres > 0) {
        ms = time_ms([&] {
            CKB(cublasLtMatmul(lt, op, &one, fa, la, fb, lb, &zero, fc, lc,
                               fc, lc, &res.algo, ws, wsb, S));
        }, 10);
        fp8_tflops = 2.0 * M * M * (double)M / (ms * 1e-3) / 1e12;
    }
    cublasLtMatmulPreferenceDestroy(pref);
    cublasLtMatrixLayoutDestroy(la);
    cublasLtMatrixLayoutDestroy(lb);
    cublasLtMatrixLayoutDestroy(lc);
    cublasLtMatmulDescDestroy(op);
    cublasLtDestroy(lt);
    B->ops->free(B, x); B->ops->free(B, y); B->ops->free(B, z);
    B->ops->free(B, fa); B->ops->free(B, fb); B->ops->free(B, fc);
    B->ops->free(B, ws);
    result("| ceiling | copy bandwidth (read+write) | %.0f GB/s | |", copy_gbs);
    result("| ceiling | bf16 GEMM 8192^3 (cuBLAS) | %.0f TFLOP/s | |",
           bf16_tflops);
    if (fp8_tflops > 0) {
        result("| ceiling | fp8 GEMM 8192^3 (cuBLASLt) | %.0f TFLOP/s | |",
               fp8_tflops);
    } else {
        /* no FP8 algorithm here: compare with twice the bf16 rate */
        fp8_tflops = 2 * bf16_tflops;
        result("| ceiling | fp8 GEMM (no cuBLASLt algorithm: 2x bf16 "
               "assumed) | %.0f TFLOP/s | |", fp8_tflops);
    }
}

/* ---- cache pools -------------------------------------------------------- */

static sg_config
v32_config(int layers)
{
    sg_config c;

    memset(&c, 0, sizeof(c));
    c.num_hidden_layers = layers;
    c.kv_lora_rank = 512;
    c.qk_rope_head_dim = 64;
    c.index_head_dim = 128;
    return c;
}

/* A pool of n_blocks blocks with random contents (FP8 latent). */
static sg_kv_pool *
random_pool(int n_blocks)
{
    sg_config   c = v32_config(1);
    sg_kv_pool *p = sg_kv_pool_new(B, &c, n_blocks, 1);
    size_t      slots = (size_t)n_blocks * SG_KV_BLOCK;

    if (p == NULL) {
        fprintf(stderr, "gpu_bench: cannot allocate a pool of %d blocks\n",
                n_blocks);
        exit(1);
    }
    sg_kv_layer *L = &p->layers[0];
    fill_e4m3(L->latent, slots * 512);
    fill_f32(L->latent_scale, slots * 4, 0.01f, 0.02f);
    fill_f32(L->pe, slots * 64, -1, 1);
    fill_e4m3(L->ikey, slots * 128);
    fill_f32(L->ikey_scale, slots, 0.01f, 0.02f);
    return p;
}

/* n sequences of up to len tokens, blocks laid out sequence by sequence */
static int32_t *
linear_tables(int n, int len)
{
    int      mb = (len + SG_KV_BLOCK - 1) / SG_KV_BLOCK;
    int32_t *t = (int32_t *)malloc(sizeof(int32_t) * n * mb);

    for (int i = 0; i < n * mb; i++)
        t[i] = i;
    return t;
}

/* k distinct ascending positions < len per row */
static int32_t *
random_sets(int n, int len, int k)
{
    int32_t *sel = (int32_t *)malloc(sizeof(int32_t) * n * k);
    uint64_t st = 88172645463325252ull;

    for (int i = 0; i < n; i++) {
        int c = 0;
        for (int s = 0; s < len && c < k; s++) {
            st ^= st << 13; st ^= st >> 7; st ^= st << 17;
            if ((int)(st % (uint64_t)(len - s)) < k - c)
                sel[(size_t)i * k + c++] = s;
        }
        for (; c < k; c++)
            sel[(size_t)i * k + c] = -1;
    }
    return sel;
}

/* ---- indexer and top-k -------------------------------------------------- */

/* The last n rows of one sequence of up to 128K tokens: a random FP8 cache,
 * indexer queries (64 heads x 128) and weights, room for their scores and
 * top-k sets (host). */
typedef struct tail_rows {
    int         n, max_len;
    sg_kv_pool *pool;
    int32_t    *table, *pos, *seq, *len, *idx;
    uint8_t    *q8;
    float      *w, *scores;
} tail_rows;

enum { IX_HEADS = 64, TOPK = 2048, MAX_CTX = 131072 };

static void
tail_new(tail_rows *t, int n)
{
    t->n = n;
    t->max_len = MAX_CTX;
    t->pool = random_pool(MAX_CTX / SG_KV_BLOCK);
    t->table = linear_tables(1, MAX_CTX);
    t->pos = (int32_t *)malloc(sizeof(int32_t) * n);
    t->seq = (int32_t *)calloc(n, sizeof(int32_t));
    t->len = (int32_t *)malloc(sizeof(int32_t) * n);
    t->idx = (int32_t *)malloc(sizeof(int32_t) * n * TOPK);
    t->q8 = (uint8_t *)dalloc((size_t)n * IX_HEADS * 128);
    t->w = (float *)dalloc(sizeof(float) * n * IX_HEADS);
    t->scores = (float *)dalloc(sizeof(float) * (size_t)n * MAX_CTX);
    fill_e4m3(t->q8, (size_t)n * IX_HEADS * 128);
    fill_f32(t->w, (size_t)n * IX_HEADS, -0.1f, 0.1f);
}

/* The rows as the context's last n tokens, ctx tokens in all. */
static sg_rows
tail_at(tail_rows *t, int ctx)
{
    for (int i = 0; i < t->n; i++) {
        t->pos[i] = ctx - t->n + i;
        t->len[i] = t->pos[i] + 1;
    }
    sg_rows rows = { t->n, t->pos, t->seq, t->table,
                     t->max_len / SG_KV_BLOCK };
    return rows;
}

static void
tail_free(tail_rows *t)
{
    B->ops->free(B, t->q8);
    B->ops->free(B, t->w);
    B->ops->free(B, t->scores);
    sg_kv_pool_free(t->pool);
    free(t->table); free(t->pos); free(t->seq); free(t->len); free(t->idx);
}

static void
bench_indexer(void)
{
    const int ctx[3] = { 32768, 65536, 131072 };
    int       n = 64;
    tail_rows t;

    tail_new(&t, n);
    for (int c = 0; c < 3; c++) {
        int     L = ctx[c];
        sg_rows rows = tail_at(&t, L);
        double  flop = 2.0 * n * (double)L * IX_HEADS * 128;
        /* the default (bf16 mma), the f32 FMA kernel, the opt-in FP8 one */
        static const char *const kind[3] = { "bf16 mma", "f32 FMA",
                                             "fp8 mma, opt-in" };
        for (int v = 0; v < 3; v++) {
            cu_set_fma_only(v == 1);
            cu(B)->index_fp8 = v == 2;
            double ms = time_ms([&] {
                B->ops->index_scores(B, t.pool, 0, &rows, t.q8, t.w, IX_HEADS,
                                     t.scores, L);
            }, 5);
            double tf = flop / (ms * 1e-3) / 1e12;
            result("| indexer logits (%s) | %dK ctx, %d rows, 64x128 heads | "
                   "%.3f ms, %.1f TFLOP/s | %.1f%% of fp8 GEMM |", kind[v],
                   L / 1024, n, ms, tf, 100.0 * tf / fp8_tflops);
        }
        cu_set_fma_only(0);
        cu(B)->index_fp8 = 0;
        for (int rows_n = 1; rows_n <= 64; rows_n += 63) {
            double tk = time_ms([&] {
                B->ops->topk(B, t.scores, rows_n, L, t.len, TOPK, t.idx);
            }, 5);
            double floor = 4.0 * rows_n * L / (copy_gbs * 1e9) * 1e3;
            result("| top-k 2048 | %dK scores, %d row%s | %.3f ms | "
                   "%.1f%% of one read at copy bw |", L / 1024, rows_n,
                   rows_n > 1 ? "s" : "", tk, 100.0 * floor / tk);
        }
    }
    tail_free(&t);
}

/* ---- sparse decode attention -------------------------------------------- */

static void
bench_decode_attention(void)
{
    int H = 128, K = 2048, ctx = 4096, lora = 512, rope = 64;
    int batches[2] = { 1, 64 };
    sg_kv_pool *pool = random_pool(64 * ctx / SG_KV_BLOCK);
    int32_t *table = linear_tables(64, ctx);

    for (int bi = 0; bi < 2; bi++) {
        int      n = batches[bi];
        int32_t *pos = (int32_t *)malloc(sizeof(int32_t) * n);
        int32_t *seq = (int32_t *)malloc(sizeof(int32_t) * n);
        int32_t *sel = random_sets(n, ctx, K);
        float   *ql = (float *)dalloc(sizeof(float) * n * H * lora);
        float   *qp = (float *)dalloc(sizeof(float) * n * H * rope);
        float   *out = (float *)dalloc(sizeof(float) * n * H * lora);
        for (int i = 0; i < n; i++) {
            pos[i] = ctx - 1;
            seq[i] = i;
        }
        fill_f32(ql, (size_t)n * H * lora, -0.05f, 0.05f);
        fill_f32(qp, (size_t)n * H * rope, -0.05f, 0.05f);
        sg_rows rows = { n, pos, seq, table, ctx / SG_KV_BLOCK };
        /* the fewest bytes: each selected key's FP8 latent + scales + f32
         * RoPE key once, the queries and outputs once */
        double bytes = (double)n * K * (lora + 4 * 4 + rope * 4)
                       + 4.0 * n * H * (2 * lora + rope);
        double flop = 2.0 * n * H * (double)K * (lora + rope + lora);
        for (int fma = 0; fma < 2; fma++) {
            cu_set_fma_only(fma);
            double ms = time_ms([&] {
                B->ops->attn_decode(B, pool, 0, &rows, ql, qp, sel, K, H,
                                    0.07f, out);
            }, 10);
            double gbs = bytes / (ms * 1e-3) / 1e9;
            result("| sparse decode attention (%s) | k=2048, batch %d, 128 "
                   "heads | %.3f ms, %.0f GB/s, %.1f TFLOP/s | %.1f%% of copy "
                   "bw, %.1f%% of bf16 GEMM |", fma ? "f32 FMA" : "bf16 mma",
                   n, ms, gbs, flop / (ms * 1e-3) / 1e12,
                   100.0 * gbs / copy_gbs,
                   100.0 * flop / (ms * 1e-3) / 1e12 / bf16_tflops);
        }
        cu_set_fma_only(0);
        B->ops->free(B, ql); B->ops->free(B, qp); B->ops->free(B, out);
        free(pos); free(seq); free(sel);
    }
    sg_kv_pool_free(pool);
    free(table);
}

/* ---- prefill attention, DSA vs dense ------------------------------------ */

/* A prompt chunk of 256 rows ending at ctx (forward.c's chunk at 128K: its
 * score matrix stays within 32M floats), every row in the absorbed form as
 * the CUDA backend runs prompts: DSA = indexer scores + top-k + attention
 * over 2048 keys per row; dense = attention over every earlier key. */
static void
bench_prefill_attention(void)
{
    const int ctxs[3] = { 32768, 65536, 131072 };
    int       n = 256, H = 128, lora = 512, rope = 64;
    tail_rows t;

    tail_new(&t, n);
    float *ql = (float *)dalloc(sizeof(float) * n * H * lora);
    float *qp = (float *)dalloc(sizeof(float) * n * H * rope);
    float *out = (float *)dalloc(sizeof(float) * n * H * lora);
    fill_f32(ql, (size_t)n * H * lora, -0.05f, 0.05f);
    fill_f32(qp, (size_t)n * H * rope, -0.05f, 0.05f);
    for (int c = 0; c < 3; c++) {
        int     L = ctxs[c];
        sg_rows rows = tail_at(&t, L);
        double dsa = time_ms([&] {
            B->ops->index_scores(B, t.pool, 0, &rows, t.q8, t.w, IX_HEADS,
                                 t.scores, L);
            B->ops->topk(B, t.scores, n, L, t.len, TOPK, t.idx);
            B->ops->attn_decode(B, t.pool, 0, &rows, ql, qp, t.idx, TOPK, H,
                                0.07f, out);
        }, 5);
        double dense = time_ms([&] {
            B->ops->attn_decode(B, t.pool, 0, &rows, ql, qp, NULL, TOPK, H,
                                0.07f, out);
        }, 5);
        /* attention flops per row: q.k over lora + rope, p.v over lora */
        double per_key = 2.0 * H * (lora + rope + lora);
        double f_dsa = n * ((double)TOPK * per_key
                            + 2.0 * L * IX_HEADS * 128);
        double f_dense = n * (L - n / 2.0) * per_key;
        result("| prefill attention, %d-row chunk | %dK ctx, 128 heads "
               "(+ indexer 64x128 for DSA) | DSA %.2f ms, dense %.2f ms "
               "(x%.2f) | DSA %.1f, dense %.1f TFLOP/s (%.1f%% / %.1f%% of "
               "bf16 GEMM) |", n, L / 1024, dsa, dense, dense / dsa,
               f_dsa / (dsa * 1e-3) / 1e12, f_dense / (dense * 1e-3) / 1e12,
               100.0 * f_dsa / (dsa * 1e-3) / 1e12 / bf16_tflops,
               100.0 * f_dense / (dense * 1e-3) / 1e12 / bf16_tflops);
    }
    B->ops->free(B, ql); B->ops->free(B, qp); B->ops->free(B, out);
    tail_free(&t);
}

/* ---- one real-shape V3.2 layer, decode step ----------------------------- */

typedef struct layer_w {
    sg_tensor attn_norm, ffn_norm, q_a, q_a_norm, q_b, kv_a, kv_a_norm, kv_b,
              o, wq_b, wk, k_norm_w, k_norm_b, weights_proj, gate;
    sg_tensor eg[256], eu[256], ed[256], sg, su, sd;
    float     bias[256];
} layer_w;

enum { D_ = 7168, QL = 1536, H_ = 128, NOPE = 128, ROPE = 64, V_ = 128,
       LORA = 512, IH = 64, ID = 128, E_ = 256, TOPK_E = 8, MI = 2048,
       K_ = 2048 };

static double layer_weight_bytes;   /* bytes one decode step must read */

static void
layer_new(layer_w *w)
{
    w->attn_norm = dev_weight("attn_norm", SG_BF16, D_, 0);
    w->ffn_norm = dev_weight("ffn_norm", SG_BF16, D_, 0);
    w->q_a = dev_weight("q_a", SG_F8_E4M3, QL, D_);
    w->q_a_norm = dev_weight("q_a_norm", SG_BF16, QL, 0);
    w->q_b = dev_weight("q_b", SG_F8_E4M3, H_ * (NOPE + ROPE), QL);
    w->kv_a = dev_weight("kv_a", SG_F8_E4M3, LORA + ROPE, D_);
    w->kv_a_norm = dev_weight("kv_a_norm", SG_BF16, LORA, 0);
    w->kv_b = dev_weight("kv_b", SG_F8_E4M3, H_ * (NOPE + V_), LORA);
    w->o = dev_weight("o", SG_F8_E4M3, D_, H_ * V_);
    w->wq_b = dev_weight("wq_b", SG_F8_E4M3, IH * ID, QL);
    w->wk = dev_weight("wk", SG_F8_E4M3, ID, D_);
    w->k_norm_w = dev_weight("k_norm_w", SG_F32, ID, 0);
    w->k_norm_b = dev_weight("k_norm_b", SG_F32, ID, 0);
    w->weights_proj = dev_weight("weights_proj", SG_BF16, IH, D_);
    w->gate = dev_weight("gate", SG_BF16, E_, D_);
    for (int e = 0; e < E_; e++) {
        w->eg[e] = dev_weight("expert.gate", SG_F8_E4M3, MI, D_);
        w->eu[e] = dev_weight("expert.up", SG_F8_E4M3, MI, D_);
        w->ed[e] = dev_weight("expert.down", SG_F8_E4M3, D_, MI);
        w->bias[e] = 0.0f;
    }
    w->sg = dev_weight("shared.gate", SG_F8_E4M3, MI, D_);
    w->su = dev_weight("shared.up", SG_F8_E4M3, MI, D_);
    w->sd = dev_weight("shared.down", SG_F8_E4M3, D_, MI);
    /* attention + indexer + gate + 8 routed and 1 shared expert, FP8 */
    layer_weight_bytes = (double)QL * D_ + (double)H_ * (NOPE + ROPE) * QL
        + (double)(LORA + ROPE) * D_ + (double)H_ * (NOPE + V_) * LORA
        + (double)D_ * H_ * V_ + (double)IH * ID * QL + (double)ID * D_
        + 2.0 * IH * D_ + 2.0 * E_ * D_ + (TOPK_E + 1) * 3.0 * MI * D_;
}

static void
layer_free(layer_w *w)
{
    sg_tensor *all[] = { &w->attn_norm, &w->ffn_norm, &w->q_a, &w->q_a_norm,
                         &w->q_b, &w->kv_a, &w->kv_a_norm, &w->kv_b, &w->o,
                         &w->wq_b, &w->wk, &w->k_norm_w, &w->k_norm_b,
                         &w->weights_proj, &w->gate, &w->sg, &w->su, &w->sd };
    for (size_t i = 0; i < sizeof(all) / sizeof(*all); i++)
        free_weight(all[i]);
    for (int e = 0; e < E_; e++) {
        free_weight(&w->eg[e]);
        free_weight(&w->eu[e]);
        free_weight(&w->ed[e]);
    }
}

typedef struct step_buf {
    float *x, *h, *qa, *qr, *q, *kv, *lat, *pe, *iq, *ik, *ikn, *iqs, *iks,
          *iw, *scores, *qlat, *qpe, *olat, *att, *o, *logits, *g, *u, *a,
          *y, *ye, *xe, *z;
    uint8_t *iq8, *ik8;
} step_buf;

/* One decode token through attention (DSA or dense) and the MoE block,
 * the op sequence of engine/model/forward.c for a batch of one. */
static void
decode_step(layer_w *w, step_buf *s, sg_kv_pool *pool, const sg_rows *rows,
            const sg_rope_table *rt, int dsa, int32_t *sel, float *host_w,
            int32_t *idx32)
{
    sg_backend *b = B;
    const sg_backend_ops *op = b->ops;
    int pos = rows->pos[0], ctx = pos + 1;

    op->rmsnorm(b, s->x, D_, &w->attn_norm, 1e-6f, 1, D_, s->h, D_);
    op->linear(b, &w->q_a, s->h, 1, s->qa, 1, 1);
    op->rmsnorm(b, s->qa, QL, &w->q_a_norm, 1e-6f, 1, QL, s->qr, QL);
    op->linear(b, &w->q_b, s->qr, 1, s->q, 1, 1);
    op->rope(b, s->q, 1, H_, H_ * (NOPE + ROPE), NOPE + ROPE, NOPE, rows->pos,
             rt, 1);
    op->linear(b, &w->kv_a, s->h, 1, s->kv, 1, 1);
    op->rmsnorm(b, s->kv, LORA + ROPE, &w->kv_a_norm, 1e-6f, 1, LORA, s->lat,
                LORA);
    op->rope(b, s->kv, 1, 1, LORA + ROPE, 0, LORA, rows->pos, rt, 1);
    idx32[0] = (LORA) / ROPE;           /* the RoPE part as a 64-wide row */
    op->gather_rows(b, s->kv, idx32, 1, ROPE, s->pe);
    /* indexer projections */
    op->linear(b, &w->wq_b, s->qr, 1, s->iq, 1, 1);
    op->rope(b, s->iq, 1, IH, IH * ID, ID, 0, rows->pos, rt, 0);
    op->linear(b, &w->wk, s->h, 1, s->ik, 1, 1);
    op->layernorm(b, s->ik, &w->k_norm_w, &w->k_norm_b, 1e-6f, 1, ID, s->ikn);
    op->rope(b, s->ikn, 1, 1, ID, ID, 0, rows->pos, rt, 0);
    op->hadamard(b, s->iq, IH, ID);
    op->hadamard(b, s->ikn, 1, ID);
    op->fp8_quant(b, s->iq, IH, ID, s->iq8, s->iqs, 1);
    op->fp8_quant(b, s->ikn, 1, ID, s->ik8, s->iks, 1);
    op->linear(b, &w->weights_proj, s->h, 1, s->iw, 0, 1);
    op->download(b, host_w, s->iw, sizeof(float) * IH);
    op->upload(b, s->iw, host_w, sizeof(float) * IH);
    op->kv_store(b, pool, 0, rows, s->lat, s->pe, s->ik8, s->iks, 1);
    if (dsa) {
        int32_t len = ctx;
        op->index_scores(b, pool, 0, rows, s->iq8, s->iw, IH, s->scores, ctx);
        op->topk(b, s->scores, 1, ctx, &len, K_, sel);
    }
    op->mla_absorb(b, &w->kv_b, s->q, 1, H_, NOPE, ROPE, V_, LORA, s->qlat);
    for (int h = 0; h < H_; h++)
        idx32[h] = h * 3 + 2;           /* q_pe: the last 64 of each 192 */
    op->gather_rows(b, s->q, idx32, H_, ROPE, s->qpe);
    op->attn_decode(b, pool, 0, rows, s->qlat, s->qpe, dsa ? sel : NULL, K_,
                    H_, 0.07f, s->olat);
    op->mla_unabsorb(b, &w->kv_b, s->olat, 1, H_, NOPE, V_, LORA, s->att);
    op->linear(b, &w->o, s->att, 1, s->o, 1, 1);
    op->add(b, s->x, s->o, D_);

    /* MoE: routing, 8 experts over their row, the shared expert */
    int32_t ex[TOPK_E];
    float   ew[TOPK_E];
    op->rmsnorm(b, s->x, D_, &w->ffn_norm, 1e-6f, 1, D_, s->h, D_);
    op->linear(b, &w->gate, s->h, 1, s->logits, 0, 1);
    op->moe_route(b, s->logits, w->bias, 1, E_, 8, 4, TOPK_E, 1, 2.5f, NULL,
                  ex, ew);
    CK(cudaMemsetAsync(s->y, 0, sizeof(float) * D_, S));
    for (int j = 0; j < TOPK_E; j++) {
        int e = ex[j] >= 0 && ex[j] < E_ ? ex[j] : j, r = 0;
        op->gather_rows(b, s->h, &r, 1, D_, s->xe);
        op->linear(b, &w->eg[e], s->xe, 1, s->g, 1, 1);
        op->linear(b, &w->eu[e], s->xe, 1, s->u, 1, 1);
        op->silu_mul(b, s->g, s->u, s->a, MI);
        op->linear(b, &w->ed[e], s->a, 1, s->ye, 1, 1);
        op->scatter_add_rows(b, s->y, &r, &ew[j], 1, D_, s->ye);
    }
    op->linear(b, &w->sg, s->h, 1, s->g, 1, 1);
    op->linear(b, &w->su, s->h, 1, s->u, 1, 1);
    op->silu_mul(b, s->g, s->u, s->a, MI);
    op->linear(b, &w->sd, s->a, 1, s->z, 1, 1);
    op->add(b, s->y, s->z, D_);
    op->add(b, s->x, s->y, D_);
}

static void
bench_layer(void)
{
    const int ctxs[4] = { 32768, 65536, 98304, 131072 };
    int       max_len = 131072;
    layer_w  *w = (layer_w *)calloc(1, sizeof(layer_w));
    step_buf  s;
    float     host_w[IH];
    int32_t   idx32[H_];
    int32_t  *sel = (int32_t *)malloc(sizeof(int32_t) * K_);

    layer_new(w);
    sg_kv_pool *pool = random_pool(max_len / SG_KV_BLOCK);
    int32_t    *table = linear_tables(1, max_len);
    /* RoPE table for every position (values are irrelevant for timing) */
    float *cs = (float *)dalloc(sizeof(float) * (size_t)max_len * ROPE);
    fill_f32(cs, (size_t)max_len * ROPE, -1, 1);
    sg_rope_table rt = { cs, ROPE, max_len };

#define BUF(f, n) s.f = (float *)dalloc(sizeof(float) * (size_t)(n))
    BUF(x, D_); BUF(h, D_); BUF(qa, QL); BUF(qr, QL);
    BUF(q, H_ * (NOPE + ROPE)); BUF(kv, LORA + ROPE); BUF(lat, LORA);
    BUF(pe, ROPE); BUF(iq, IH * ID); BUF(ik, ID); BUF(ikn, ID); BUF(iqs, IH);
    BUF(iks, 1); BUF(iw, IH); BUF(scores, max_len); BUF(qlat, H_ * LORA);
    BUF(qpe, H_ * ROPE); BUF(olat, H_ * LORA); BUF(att, H_ * V_); BUF(o, D_);
    BUF(logits, E_); BUF(g, MI); BUF(u, MI); BUF(a, MI); BUF(y, D_);
    BUF(ye, D_); BUF(xe, D_); BUF(z, D_);
#undef BUF
    s.iq8 = (uint8_t *)dalloc(IH * ID);
    s.ik8 = (uint8_t *)dalloc(ID);
    fill_f32(s.x, D_, -1, 1);
    check_backend("layer setup");

    for (int c = 0; c < 4; c++) {
        int32_t pos = ctxs[c] - 1, seq = 0;
        sg_rows rows = { 1, &pos, &seq, table, max_len / SG_KV_BLOCK };
        double t[2];
        for (int dsa = 1; dsa >= 0; dsa--) {
            t[dsa] = time_ms([&] {
                decode_step(w, &s, pool, &rows, &rt, dsa, sel, host_w, idx32);
            }, 5);
        }
        /* floor: the layer's weights once, the attended keys once */
        double kv_dsa = (double)K_ * (LORA + 16 + ROPE * 4)
                        + (double)ctxs[c] * (ID + 4);
        double kv_dense = (double)ctxs[c] * (LORA + 16 + ROPE * 4);
        double f_dsa = (layer_weight_bytes + kv_dsa) / (copy_gbs * 1e9) * 1e3;
        double f_dense = (layer_weight_bytes + kv_dense) / (copy_gbs * 1e9)
                         * 1e3;
        result("| V3.2 layer decode step | %dK ctx, batch 1 | DSA %.3f ms, "
               "dense %.3f ms (x%.2f) | DSA %.1f%%, dense %.1f%% of the "
               "copy-bw floor |", ctxs[c] / 1024, t[1], t[0], t[0] / t[1],
               100.0 * f_dsa / t[1], 100.0 * f_dense / t[0]);
    }
    step_buf *sp = &s;
    float **bufs = (float **)sp;
    for (size_t i = 0; i < offsetof(step_buf, iq8) / sizeof(float *); i++)
        B->ops->free(B, bufs[i]);
    B->ops->free(B, s.iq8);
    B->ops->free(B, s.ik8);
    B->ops->free(B, cs);
    sg_kv_pool_free(pool);
    layer_free(w);
    free(w);
    free(table);
    free(sel);
}

int
main(int argc, char **argv)
{
    char           err[512];
    cudaDeviceProp prop;

    B = sg_backend_cuda_new(0, err, sizeof(err));
    if (B == NULL) {
        printf("gpu_bench: SKIP: %s\n", err);
        return 0;
    }
    S = cu(B)->stream;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("# device: %s, %d SMs, %.0f GB\n", prop.name,
           prop.multiProcessorCount, prop.totalGlobalMem / 1e9);
    printf("| what | shape | measured | vs ceiling |\n|---|---|---|---|\n");
    l2_flush_bytes = 4 * (size_t)(prop.l2CacheSize > 0 ? prop.l2CacheSize
                                                        : 64 << 20);
    l2_flush = dalloc(l2_flush_bytes);
    ceilings();
    bench_indexer();
    bench_decode_attention();
    bench_prefill_attention();
    bench_layer();

    if (argc > 1 && (md = fopen(argv[1], "w")) != NULL) {
        fprintf(md, "GPU: **%s** (%d SMs, %.0f GB), CUDA backend "
                "(kernels/), medians of timed runs after warm-up; random "
                "data.\n\n| what | shape | measured | vs ceiling |\n"
                "|---|---|---|---|\n", prop.name, prop.multiProcessorCount,
                prop.totalGlobalMem / 1e9);
        for (int i = 0; i < n_lines; i++)
            fprintf(md, "%s\n", lines[i]);
        fclose(md);
    }
    B->ops->free(B, l2_flush);
    B->ops->destroy(B);
    return 0;
}
