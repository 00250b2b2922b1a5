/*
 * DeepSeek's FP8 activation quantization (act_quant), its inverse, and the
 * Walsh-Hadamard rotation the indexer applies before quantizing.
 */
#include <math.h>
#include <string.h>

#include "cpu_internal.h"

/* Rounds a positive scale up to a power of two through its f32 bits
 * (exact powers of two stay), as DeepSeek's fast_round_scale. */
static float
ue8m0_round_up(float s)
{
    uint32_t u;

    memcpy(&u, &s, 4);
    if (u & 0x7fffffu)
        u = (u & 0xff800000u) + 0x800000u;
    memcpy(&s, &u, 4);
    return s;
}

/*
 * f32 -> e4m3fn code, round to nearest even, for |x| <= 448 (act_quant
 * clamps first; larger magnitudes saturate).  Bit arithmetic instead of
 * sg_f32_to_e4m3's libm calls: this runs on every activation entering an
 * fp8 GEMM.  tests/unit/test_fp8.c checks both against a brute-force search.
 */
static inline uint8_t
e4m3_rne(float x)
{
    uint32_t u, ua, r, code;
    float    t;

    memcpy(&u, &x, 4);
    ua = u & 0x7fffffffu;
    if (ua > 0x7f800000u)
        return 0x7f;                                  /* NaN */
    if (ua < 0x3c800000u) {
        /* below 2^-6: multiples of 2^-9; adding 2^23 rounds to an integer
         * (ties to even) and leaves it in the mantissa bits */
        t = fabsf(x) * 512.0f + 8388608.0f;
        memcpy(&r, &t, 4);
        code = r & 0x7fffffu;                         /* 0..8; 8 = 2^-6 */
    } else {
        /* keep 3 mantissa bits, ties to even; a carry bumps the exponent */
        r = ua + 0x7ffffu + ((ua >> 20) & 1);
        code = ((r >> 23) - 120) << 3 | ((r >> 20) & 7);
        if (ua >= 0x43e00000u || code > 0x7e)
            code = 0x7e;                              /* saturate to 448 */
    }
    return (uint8_t)(code | (u >> 24 & 0x80));
}

float
cpu_act_quant_block(const float *x, int len, uint8_t *q, int ue8m0)
{
    float amax = 0.0f;
    int   nan = 0;

    for (int j = 0; j < len; j++) {
        float a = fabsf(x[j]);
        nan |= a != a;
        amax = a > amax ? a : amax;
    }
    if (nan)
        amax = NAN;
    else if (amax < 1e-4f)
        amax = 1e-4f;
    float scale = amax * (1.0f / 448.0f);
    if (ue8m0 && !nan)
        scale = ue8m0_round_up(scale);
    for (int j = 0; j < len; j++) {
        float v = x[j] / scale;
        v = v < -448.0f ? -448.0f : v > 448.0f ? 448.0f : v;
        q[j] = e4m3_rne(v);
    }
    return scale;
}

void
cpu_dequant_row(const uint8_t *q, const float *scale, int len, float *out)
{
    for (int j0 = 0; j0 < len; j0 += SG_FP8_BLOCK) {
        int   j1 = j0 + SG_FP8_BLOCK < len ? j0 + SG_FP8_BLOCK : len;
        float s = scale[j0 / SG_FP8_BLOCK];
        int   j = j0;

        if (isfinite(s * 256.0f)) {
            __m256 vs = _mm256_set1_ps(s * 256.0f);
            for (; j + 8 <= j1; j += 8)
                _mm256_storeu_ps(out + j, _mm256_mul_ps(
                    cpu_e4m3x8_scaled(q + j), vs));
        }
        for (; j < j1; j++)
            out[j] = sg_e4m3_to_f32(q[j]) * s;
    }
}

typedef struct {
    const float   *x;
    float         *out, *scale;
    const uint8_t *qin;
    uint8_t       *q;
    int64_t        dim;
    int            ue8m0;
} fp8_ctx;

static void
quant_dequant_range(void *c, int64_t r0, int64_t r1)
{
    fp8_ctx *f = c;
    uint8_t  q[SG_FP8_BLOCK];

    for (int64_t r = r0; r < r1; r++) {
        for (int64_t j0 = 0; j0 < f->dim; j0 += SG_FP8_BLOCK) {
            int    len = f->dim - j0 < SG_FP8_BLOCK ? (int)(f->dim - j0)
                                                    : SG_FP8_BLOCK;
            size_t o = (size_t)r * f->dim + j0;
            float  s = cpu_act_quant_block(f->x + o, len, q, f->ue8m0);

            for (int j = 0; j < len; j++)
                f->out[o + j] = sg_e4m3_to_f32(q[j]) * s;
        }
    }
}

void
cpu_act_quant_dequant(sg_backend *b, const float *x, int64_t rows,
                      int64_t dim, float *out, int ue8m0)
{
    fp8_ctx f = { .x = x, .out = out, .dim = dim, .ue8m0 = ue8m0 };

    cpu_parallel(b, rows, 1, (double)rows * dim * 8, quant_dequant_range, &f);
}

static void
quant_range(void *c, int64_t r0, int64_t r1)
{
    fp8_ctx *f = c;
    int64_t  nb = (f->dim + SG_FP8_BLOCK - 1) / SG_FP8_BLOCK;

    for (int64_t r = r0; r < r1; r++) {
        for (int64_t k = 0; k < nb; k++) {
            int64_t j0 = k * SG_FP8_BLOCK;
            int     len = f->dim - j0 < SG_FP8_BLOCK ? (int)(f->dim - j0)
                                                     : SG_FP8_BLOCK;
            size_t  o = (size_t)r * f->dim + j0;

            f->scale[r * nb + k] = cpu_act_quant_block(f->x + o, len,
                                                       f->q + o, f->ue8m0);
        }
    }
}

void
cpu_fp8_quant(sg_backend *b, const float *x, int rows, int dim, uint8_t *q,
              float *scale, int ue8m0)
{
    fp8_ctx f = { .x = x, .q = q, .scale = scale, .dim = dim, .ue8m0 = ue8m0 };

    cpu_parallel(b, rows, 1, (double)rows * dim * 8, quant_range, &f);
}

static void
dequant_range(void *c, int64_t r0, int64_t r1)
{
    fp8_ctx *f = c;
    int64_t  nb = (f->dim + SG_FP8_BLOCK - 1) / SG_FP8_BLOCK;

    for (int64_t r = r0; r < r1; r++)
        cpu_dequant_row(f->qin + r * f->dim, f->scale + r * nb, (int)f->dim,
                        f->out + r * f->dim);
}

void
cpu_fp8_dequant(sg_backend *b, const uint8_t *q, const float *scale, int rows,
                int dim, float *out)
{
    fp8_ctx f = { .qin = q, .scale = (float *)scale, .out = out, .dim = dim };

    cpu_parallel(b, rows, 1, (double)rows * dim, dequant_range, &f);
}

/* Sylvester-ordered fast Walsh-Hadamard transform: the butterflies compute
 * x @ H (H symmetric), then the dim^-0.5 normalization. */
static void
hadamard_range(void *c, int64_t r0, int64_t r1)
{
    fp8_ctx *f = c;
    int64_t  dim = f->dim;
    float    norm = (float)pow((double)dim, -0.5);   /* python's d ** -0.5 */

    for (int64_t r = r0; r < r1; r++) {
        float *p = f->out + r * dim;

        for (int64_t h = 1; h < dim; h *= 2)
            for (int64_t i = 0; i < dim; i += 2 * h)
                for (int64_t j = i; j < i + h; j++) {
                    float a = p[j], d = p[j + h];
                    p[j] = a + d;
                    p[j + h] = a - d;
                }
        for (int64_t j = 0; j < dim; j++)
            p[j] *= norm;
    }
}

void
cpu_hadamard(sg_backend *b, float *x, int rows, int dim)
{
    fp8_ctx f = { .out = x, .dim = dim };

    cpu_parallel(b, rows, 1, (double)rows * dim * log2(dim + 1),
                 hadamard_range, &f);
}
