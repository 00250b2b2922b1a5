/*
 * Vector helpers shared by the CPU kernels: an 8-lane exp that the
 * attention softmax runs on every score, and an 8x8 transpose that packs
 * key tiles.
 */
#ifndef SG_CPU_SIMD_H
#define SG_CPU_SIMD_H

#include <immintrin.h>

/*
 * exp(x) for 8 floats: x = n ln2 + r (|r| <= ln2/2, ln2 in two parts),
 * exp(r) by a degree-6 polynomial, times 2^n through the exponent bits.
 * Within 2 ulp of expf on [-87, 88]; exactly 0 below -87.3 (so a masked
 * score of -inf gives 0, as the reference's additive mask), +inf above
 * 88.7, NaN stays NaN.  The same lanes give the same bits whatever else
 * is in the vector.
 */
static inline __m256
cpu_exp8(__m256 x)
{
    const __m256 hi = _mm256_set1_ps(88.7f), lo = _mm256_set1_ps(-87.3f);
    __m256 xc = _mm256_min_ps(hi, _mm256_max_ps(lo, x));   /* NaN stays */
    __m256 n = _mm256_round_ps(_mm256_mul_ps(xc,
                                   _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), xc);
    __m256 p;
    __m256i e;

    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606765330187045e-06f), r);
    p = _mm256_set1_ps(1.0f / 720);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    /* 2^n in two halves so that n = 128 (x near 88.7) stays finite until
     * the last multiply */
    e = _mm256_cvtps_epi32(n);
    {
        __m256i h = _mm256_srai_epi32(e, 1);
        __m256  s1 = _mm256_castsi256_ps(_mm256_slli_epi32(
                         _mm256_add_epi32(h, _mm256_set1_epi32(127)), 23));
        __m256  s2 = _mm256_castsi256_ps(_mm256_slli_epi32(
                         _mm256_add_epi32(_mm256_sub_epi32(e, h),
                                          _mm256_set1_epi32(127)), 23));
        p = _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
    }
    /* below the clamp: exactly 0 (NaN compares false and stays) */
    p = _mm256_andnot_ps(_mm256_cmp_ps(x, lo, _CMP_LT_OQ), p);
    /* above it: +inf */
    return _mm256_blendv_ps(p, _mm256_set1_ps(__builtin_inff()),
                            _mm256_cmp_ps(x, hi, _CMP_GT_OQ));
}

/* The 8x8 transpose of rows r[0..8) (in registers). */
static inline void
cpu_transpose8(__m256 r[8])
{
    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xee);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xee);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xee);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xee);

    r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
    r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
    r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
    r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
    r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

#endif
