/*
 * The CPU backend's internals: the op functions each file implements, and
 * small helpers they share (threads, weight element access, FP8 blocks).
 */
#ifndef SG_CPU_INTERNAL_H
#define SG_CPU_INTERNAL_H

#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

#include "model/backend.h"
#include "model/dtype.h"

/* Whether the kernels that have an AVX-512 form use it: the CPU has
 * AVX-512F and SG_CPU_ISA is not "avx2" (cpu_backend.c, set when a
 * backend is created).  Forms give the same bits where a kernel says so. */
extern int cpu_isa_avx512;

static inline int
cpu_avx512(void)
{
    return cpu_isa_avx512;
}

/* Threads an op may use (the backend's bound). */
static inline int
cpu_threads(const sg_backend *b)
{
    return b->n_threads > 0 ? b->n_threads : 1;
}

/*
 * Parallel loops (cpu_pool.c).  cpu_parallel runs fn over [0, n) in chunks
 * of at least min_chunk on the backend's threads, or serially when the
 * loop is small: about `work` multiply-adds below CPU_PAR_WORK, where
 * waking threads costs more than it gains.  Measured on a 2-core host
 * (bench_ops' "serial / split" rows): a decode GEMV of 0.25-1M
 * multiply-adds takes 12-55 us on the calling thread, a sleeping worker
 * wakes too late to take a chunk of it, and splitting only made the
 * median call 10-40% slower; a small model's 4K decode ran the same at
 * bounds 2e6, 2e5, 5e4 and 0 (within the noise of alternating runs).
 * SG_CPU_PAR_WORK in the environment overrides the bound (tests set 0 to
 * run every loop split).
 */
#define CPU_PAR_WORK 2e6
/*
 * How long (microseconds) a worker that finished a loop watches for the
 * next one before it sleeps (cpu_pool.c); SG_CPU_SPIN_US overrides it, 0
 * sleeps at once.
 */
#define CPU_POOL_SPIN_US 200

typedef struct cpu_pool cpu_pool;
typedef void (*cpu_range_fn)(void *ctx, int64_t i0, int64_t i1);

cpu_pool *cpu_pool_new(int n_threads, double min_work, long spin_us);
void cpu_pool_free(cpu_pool *p);
void cpu_parallel(sg_backend *b, int64_t n, int64_t min_chunk, double work,
                  cpu_range_fn fn, void *ctx);
int cpu_online_cpus(void);

/*
 * Out of memory inside an op (its scratch): the op gives up, leaving
 * outputs safe to read (index outputs in range), and the backend's next
 * sync returns SG_BACKEND_ENOMEM, so the step's results are never used
 * (backend.h).  cpu_oom() from a range function (the loop's backend),
 * cpu_backend_oom(b) from an op's own body.
 */
void cpu_oom(void);
void cpu_backend_oom(sg_backend *b);
/* 1 when an op ran out of memory since the last call (and clears it). */
int cpu_take_oom(sg_backend *b);

/* Element j of a 1-D (or row-major) weight as f32, any stored dtype. */
static inline float
cpu_weight_at(const sg_tensor *t, int64_t i)
{
    switch (t->dtype) {
    case SG_F32:
        return ((const float *)t->data)[i];
    case SG_BF16:
        return sg_bf16_to_f32(((const uint16_t *)t->data)[i]);
    case SG_F8_E4M3: {
        int64_t cols = sg_tensor_cols(t);
        int64_t r = i / cols, c = i % cols;
        float   s = t->scale ? t->scale[(r / SG_FP8_BLOCK) * t->scale_cols
                                        + c / SG_FP8_BLOCK] : 1.0f;
        return sg_e4m3_to_f32(((const uint8_t *)t->data)[i]) * s;
    }
    default:
        return 0.0f;
    }
}

/* Row r of a 2-D weight, dequantized to f32 (out [cols]). */
void cpu_weight_row(const sg_tensor *w, int64_t r, float *out);

/* 8 e4m3 bytes -> 8 floats holding value * 2^-8 (exact, through the f16
 * grid: e4m3's exponent and mantissa bits are a prefix of f16's, and the
 * sign moves from bit 14 to bit 15 by adding it to itself).  The caller
 * folds the 2^8 into a scale. */
static inline __m256
cpu_e4m3x8_scaled(const uint8_t *p)
{
    __m128i h = _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)p));
    __m128i x = _mm_slli_epi16(h, 7);

    x = _mm_add_epi16(x, _mm_and_si128(x, _mm_set1_epi16(0x4000)));
    return _mm256_cvtph_ps(x);
}

/* The same for 16 bytes. */
static inline void
cpu_e4m3x16_scaled(const uint8_t *p, __m256 *lo, __m256 *hi)
{
    __m256i h = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)p));
    __m256i x = _mm256_slli_epi16(h, 7);

    x = _mm256_add_epi16(x, _mm256_and_si256(x, _mm256_set1_epi16(0x4000)));
    *lo = _mm256_cvtph_ps(_mm256_castsi256_si128(x));
    *hi = _mm256_cvtph_ps(_mm256_extracti128_si256(x, 1));
}

/* 8 bf16 -> 8 f32 (exact) */
static inline __m256
cpu_bf16x8(const uint16_t *p)
{
    __m128i h = _mm_loadu_si128((const __m128i *)p);

    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

static inline float
cpu_hsum(__m256 v)
{
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);

    lo = _mm_add_ps(lo, hi);
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}

/* y[0..n) += a * x[0..n) */
static inline void
cpu_axpy(float *y, float a, const float *x, int n)
{
    __m256 va = _mm256_set1_ps(a);
    int    j = 0;

    for (; j + 8 <= n; j += 8)
        _mm256_storeu_ps(y + j, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + j),
                                                _mm256_loadu_ps(y + j)));
    for (; j < n; j++)
        y[j] += a * x[j];
}

/* out[j] = e4m3 q[j] * scale[j / 128], j < len (one rounding, as the
 * scalar product; vectorized through value * 2^-8 times 2^8 * scale) */
void cpu_dequant_row(const uint8_t *q, const float *scale, int len,
                     float *out);

/* DeepSeek's act_quant of one block of len <= 128 values: returns the
 * scale and writes the e4m3 codes. */
float cpu_act_quant_block(const float *x, int len, uint8_t *q, int ue8m0);

/* act_quant then dequantize, row by row in blocks of 128 (what an fp8 GEMM
 * sees of its input). */
void cpu_act_quant_dequant(sg_backend *b, const float *x, int64_t rows,
                           int64_t dim, float *out, int ue8m0);

/* Slot of position p in a block table. */
static inline int64_t
cpu_slot(const int32_t *block_table, int p)
{
    return (int64_t)block_table[p / SG_KV_BLOCK] * SG_KV_BLOCK
           + p % SG_KV_BLOCK;
}

/* ---- ops (one file per concern) ---- */
void cpu_rmsnorm(sg_backend *b, const float *x, int x_stride,
                 const sg_tensor *w, float eps, int n, int dim,
                 float *out, int out_stride);
void cpu_layernorm(sg_backend *b, const float *x, const sg_tensor *w,
                   const sg_tensor *bias, float eps, int n, int dim,
                   float *out);
void cpu_linear(sg_backend *b, const sg_tensor *w, const float *x, int n,
                float *y, int act_quant, int ue8m0);
void cpu_rope(sg_backend *b, float *x, int n, int heads, int row_stride,
              int head_stride, int offset, const int32_t *pos,
              const sg_rope_table *t, int interleaved);
void cpu_hadamard(sg_backend *b, float *x, int rows, int dim);
void cpu_fp8_quant(sg_backend *b, const float *x, int rows, int dim,
                   uint8_t *q, float *scale, int ue8m0);
void cpu_fp8_dequant(sg_backend *b, const uint8_t *q, const float *scale,
                     int rows, int dim, float *out);
void cpu_kv_store(sg_backend *b, sg_kv_pool *pool, int layer,
                  const sg_rows *rows, const float *latent, const float *pe,
                  const uint8_t *ikey, const float *ikey_scale, int ue8m0);
void cpu_kv_gather(sg_backend *b, const sg_kv_pool *pool, int layer,
                   const int32_t *block_table, int n_keys,
                   float *latent, float *pe);
void cpu_index_scores(sg_backend *b, const sg_kv_pool *pool, int layer,
                      const sg_rows *rows, const uint8_t *q8, const float *w,
                      int heads, float *scores, int scores_stride);
void cpu_topk(sg_backend *b, const float *scores, int n, int stride,
              const int32_t *len, int k, int32_t *idx);
void cpu_attn_prefill(sg_backend *b, const float *q, const float *kv,
                      const float *pe, int k0, int n_keys,
                      const sg_rows *rows, const int32_t *sel, int k,
                      int heads, int nope, int rope, int v, float scale,
                      float *ml, float *out);
/* cpu_attn_prefill's rows that attend every key up to their position
 * (cpu_flash.c: tiled, online softmax): the n rows ridx[0..n) of rows
 * (ridx NULL: rows 0..n), over keys [k0, k0 + n_keys) as attn_prefill. */
void cpu_flash_prefill(sg_backend *b, const float *q, const float *kv,
                       const float *pe, int k0, int n_keys,
                       const sg_rows *rows, const int32_t *ridx, int n,
                       int heads, int nope, int rope, int v, float scale,
                       float *ml, float *out);
void cpu_attn_decode(sg_backend *b, const sg_kv_pool *pool, int layer,
                     const sg_rows *rows, const float *q_lat,
                     const float *q_pe, const int32_t *sel, int k,
                     int heads, float scale, float *out);
void cpu_mla_absorb(sg_backend *b, const sg_tensor *kv_b, const float *q,
                    int n, int heads, int nope, int rope, int v,
                    int kv_lora, float *q_lat);
void cpu_mla_unabsorb(sg_backend *b, const sg_tensor *kv_b,
                      const float *o_lat, int n, int heads, int nope,
                      int v, int kv_lora, float *out);
void cpu_moe_route(sg_backend *b, const float *logits, const float *bias,
                   int n, int n_experts, int n_group, int topk_group,
                   int top_k, int norm, float route_scale,
                   const int32_t *forced, int32_t *experts, float *weights);

/* Sorted list of the keys row i attends: s <= pos and s < n_keys, from sel
 * (-1 and out-of-range entries dropped, duplicates once) or all of them
 * when sel is NULL.  Returns the count; keys needs room for
 * max(k, min(pos+1, n_keys)). */
int cpu_key_list(const int32_t *sel, int k, int pos, int n_keys,
                 int32_t *keys);

#endif
