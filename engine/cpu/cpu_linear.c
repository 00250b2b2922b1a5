/*
 * y[n][rows] = x[n][cols] . W^T over F32, BF16 and F8_E4M3 (+128x128 block
 * scales) weights, read in their stored dtype.
 *
 * Batch invariant by construction: every output element is summed in the
 * same order whatever n is and whichever rows share a call (one kernel, no
 * sgemm path for large n).  The kernel comes in two vector widths
 * (cpu_linear_kern.h): 16 lanes where the CPU has AVX-512F, else 8; the
 * width sets the order (lane l sums columns l, l + LANES, ...), and one
 * process always uses the same width.  With FP8 rounding downstream (KV cache,
 * activations) a last-bit difference between a token decoded alone and in
 * a batch can flip an e4m3 code; the prefix cache and the batch tests need
 * the cache of a prefix to depend only on the prefix.
 */
#include <stdlib.h>
#include <string.h>

#include "cpu_internal.h"

#define X_TILE 8             /* input rows per work item */
#define W_TILE 36            /* weight rows per work item (3 or 6 at a time) */
#define C_TILE 512           /* columns per pass (a multiple of 128) */

/* Scalar tail of the same (element value, unscaled FP8 codes as value *
 * 2^-8 to match the vector part). */
static inline float
elem_scaled(const void *w, sg_dtype dt, int64_t j)
{
    switch (dt) {
    case SG_F32:
        return ((const float *)w)[j];
    case SG_BF16:
        return sg_bf16_to_f32(((const uint16_t *)w)[j]);
    default:
        return sg_e4m3_to_f32(((const uint8_t *)w)[j]) * (1.0f / 256.0f);
    }
}

/*
 * Accumulation state of one (weight row, input row) pair while the columns
 * go by in tiles: the running 8- or 16-lane sum of the current block
 * (acc), the sum of finished blocks (tot) and the scalar tails.
 */
typedef struct {
    float acc[16], tot[16], tail;          /* 8 or 16 lanes used */
} pair_state;

typedef struct {
    const sg_tensor *w;
    const float     *x;
    float           *y;
    int64_t          rows, cols, n_wt;
    int              n;
} linear_ctx;

/* 8 lanes: AVX2 */
#define LANES 8
#define VEC __m256
#define LK(name) name##_8
#define LK_TARGET
#define VZERO() _mm256_setzero_ps()
#define VLOAD(p) _mm256_loadu_ps(p)
#define VSTORE(p, v) _mm256_storeu_ps((p), (v))
#define VFMA(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define VSET1(s) _mm256_set1_ps(s)
#define HSUM(v) cpu_hsum(v)
#define LOAD_BF16(p) cpu_bf16x8(p)
#define LOAD_E4M3(p) cpu_e4m3x8_scaled(p)
#include "cpu_linear_kern.h"
#undef LANES
#undef VEC
#undef LK
#undef LK_TARGET
#undef VZERO
#undef VLOAD
#undef VSTORE
#undef VFMA
#undef VSET1
#undef HSUM
#undef LOAD_BF16
#undef LOAD_E4M3

/* 16 lanes: AVX-512F */
#define AVX512 __attribute__((target("avx512f")))

static inline __attribute__((always_inline)) AVX512 __m512
bf16x16(const uint16_t *p)
{
    __m256i h = _mm256_loadu_si256((const __m256i *)p);

    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h),
                                                 16));
}

/* 16 e4m3 bytes -> value * 2^-8 (as cpu_e4m3x8_scaled) */
static inline __attribute__((always_inline)) AVX512 __m512
e4m3x16_scaled(const uint8_t *p)
{
    __m256i h = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)p));
    __m256i x = _mm256_slli_epi16(h, 7);

    x = _mm256_add_epi16(x, _mm256_and_si256(x, _mm256_set1_epi16(0x4000)));
    return _mm512_cvtph_ps(x);
}

#define LANES 16
#define VEC __m512
#define LK(name) name##_16
#define LK_TARGET AVX512
#define VZERO() _mm512_setzero_ps()
#define VLOAD(p) _mm512_loadu_ps(p)
#define VSTORE(p, v) _mm512_storeu_ps((p), (v))
#define VFMA(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#define VSET1(s) _mm512_set1_ps(s)
#define HSUM(v) _mm512_reduce_add_ps(v)
#define LOAD_BF16(p) bf16x16(p)
#define LOAD_E4M3(p) e4m3x16_scaled(p)
#include "cpu_linear_kern.h"

void
cpu_linear(sg_backend *b, const sg_tensor *w, const float *x, int n, float *y,
           int act_quant, int ue8m0)
{
    int64_t rows = sg_tensor_rows(w), cols = sg_tensor_cols(w);
    float  *xq = NULL;

    if (n <= 0)
        return;
    /* DeepSeek's fp8_gemm quantizes its input per row and 128 columns */
    if (w->dtype == SG_F8_E4M3 && act_quant) {
        xq = malloc(sizeof(float) * n * cols);
        if (xq == NULL) {
            cpu_backend_oom(b);
            return;
        }
        cpu_act_quant_dequant(b, x, n, cols, xq, ue8m0);
        x = xq;
    }
    linear_ctx L = { w, x, y, rows, cols, (rows + W_TILE - 1) / W_TILE, n };
    int64_t    items = (n + X_TILE - 1) / X_TILE * L.n_wt;

    cpu_parallel(b, items, 1, (double)rows * cols * n,
                 cpu_avx512() ? linear_range_16 : linear_range_8, &L);
    free(xq);
}
