/*
 * The attention tile kernels (cpu_tile.h) for AVX2 and AVX-512, chosen at
 * run time.  Both compute every output as the same FMA chain: a lane is
 * one (row, key) score or one output element, so the 16-lane kernels give
 * the 8-lane kernels' bits (tests/unit/test_attn.c checks it).
 */
#include <stdlib.h>
#include <string.h>

#include "cpu_tile.h"

/* s[t][j] = q[t] . key j for j < nk16 (a multiple of 16), nr = 1..4 rows
 * (a constant after inlining), keys packed transposed (kt[d * ld + j]):
 * one FMA chain per (row, key) over d. */
static inline __attribute__((always_inline)) void
scores_avx2(const float *const *q, const int nr, const float *kt, int ld,
            int dk, int nk16, float *const *s)
{
    for (int j = 0; j < nk16; j += 16) {
        __m256 acc[4][2];

#pragma GCC unroll 4
        for (int t = 0; t < nr; t++)
            acc[t][0] = acc[t][1] = _mm256_setzero_ps();
        for (int d = 0; d < dk; d++) {
            __m256 k0 = _mm256_loadu_ps(kt + (size_t)d * ld + j);
            __m256 k1 = _mm256_loadu_ps(kt + (size_t)d * ld + j + 8);
#pragma GCC unroll 4
            for (int t = 0; t < nr; t++) {
                __m256 qb = _mm256_broadcast_ss(q[t] + d);
                acc[t][0] = _mm256_fmadd_ps(qb, k0, acc[t][0]);
                acc[t][1] = _mm256_fmadd_ps(qb, k1, acc[t][1]);
            }
        }
#pragma GCC unroll 4
        for (int t = 0; t < nr; t++) {
            _mm256_storeu_ps(s[t] + j, acc[t][0]);
            _mm256_storeu_ps(s[t] + j + 8, acc[t][1]);
        }
    }
}

/* o[t][0..v) += sum_{j < nk} p[t][j] * V[j] in j order (one FMA chain per
 * element), nr = 1..4 rows; V[j] = vb + j * vstride. */
static inline __attribute__((always_inline)) void
values_avx2(float *const *o, const float *const *p, const int nr,
            const float *vb, size_t vstride, int nk, int v)
{
    int d = 0;

    for (; d + 16 <= v; d += 16) {
        __m256 acc[4][2];

#pragma GCC unroll 4
        for (int t = 0; t < nr; t++) {
            acc[t][0] = _mm256_loadu_ps(o[t] + d);
            acc[t][1] = _mm256_loadu_ps(o[t] + d + 8);
        }
        for (int j = 0; j < nk; j++) {
            const float *vr = vb + (size_t)j * vstride + d;
            __m256 v0 = _mm256_loadu_ps(vr), v1 = _mm256_loadu_ps(vr + 8);
#pragma GCC unroll 4
            for (int t = 0; t < nr; t++) {
                __m256 pb = _mm256_broadcast_ss(p[t] + j);
                acc[t][0] = _mm256_fmadd_ps(pb, v0, acc[t][0]);
                acc[t][1] = _mm256_fmadd_ps(pb, v1, acc[t][1]);
            }
        }
#pragma GCC unroll 4
        for (int t = 0; t < nr; t++) {
            _mm256_storeu_ps(o[t] + d, acc[t][0]);
            _mm256_storeu_ps(o[t] + d + 8, acc[t][1]);
        }
    }
    for (; d + 8 <= v; d += 8) {
        __m256 acc[4];

#pragma GCC unroll 4
        for (int t = 0; t < nr; t++)
            acc[t] = _mm256_loadu_ps(o[t] + d);
        for (int j = 0; j < nk; j++) {
            __m256 v0 = _mm256_loadu_ps(vb + (size_t)j * vstride + d);
#pragma GCC unroll 4
            for (int t = 0; t < nr; t++)
                acc[t] = _mm256_fmadd_ps(_mm256_broadcast_ss(p[t] + j), v0,
                                         acc[t]);
        }
#pragma GCC unroll 4
        for (int t = 0; t < nr; t++)
            _mm256_storeu_ps(o[t] + d, acc[t]);
    }
    for (; d < v; d++)
        for (int t = 0; t < nr; t++) {
            float a = o[t][d];
            for (int j = 0; j < nk; j++)
                a = fmaf(p[t][j], vb[(size_t)j * vstride + d], a);
            o[t][d] = a;
        }
}

#define AVX512 __attribute__((target("avx512f")))

static inline __attribute__((always_inline)) AVX512 void
scores_avx512(const float *const *q, const int nr, const float *kt, int ld,
              int dk, int nk16, float *const *s)
{
    int j = 0;

    for (; j + 32 <= nk16; j += 32) {
        __m512 acc[4][2];

#pragma GCC unroll 4
        for (int t = 0; t < nr; t++)
            acc[t][0] = acc[t][1] = _mm512_setzero_ps();
        for (int d = 0; d < dk; d++) {
            __m512 k0 = _mm512_loadu_ps(kt + (size_t)d * ld + j);
            __m512 k1 = _mm512_loadu_ps(kt + (size_t)d * ld + j + 16);
#pragma GCC unroll 4
            for (int t = 0; t < nr; t++) {
                __m512 qb = _mm512_set1_ps(q[t][d]);
                acc[t][0] = _mm512_fmadd_ps(qb, k0, acc[t][0]);
                acc[t][1] = _mm512_fmadd_ps(qb, k1, acc[t][1]);
            }
        }
#pragma GCC unroll 4
        for (int t = 0; t < nr; t++) {
            _mm512_storeu_ps(s[t] + j, acc[t][0]);
            _mm512_storeu_ps(s[t] + j + 16, acc[t][1]);
        }
    }
    for (; j < nk16; j += 16) {
        __m512 acc[4];

#pragma GCC unroll 4
        for (int t = 0; t < nr; t++)
            acc[t] = _mm512_setzero_ps();
        for (int d = 0; d < dk; d++) {
            __m512 k0 = _mm512_loadu_ps(kt + (size_t)d * ld + j);
#pragma GCC unroll 4
            for (int t = 0; t < nr; t++)
                acc[t] = _mm512_fmadd_ps(_mm512_set1_ps(q[t][d]), k0, acc[t]);
        }
#pragma GCC unroll 4
        for (int t = 0; t < nr; t++)
            _mm512_storeu_ps(s[t] + j, acc[t]);
    }
}

static inline __attribute__((always_inline)) AVX512 void
values_avx512(float *const *o, const float *const *p, const int nr,
              const float *vb, size_t vstride, int nk, int v)
{
    int d = 0;

    for (; d + 32 <= v; d += 32) {
        __m512 acc[4][2];

#pragma GCC unroll 4
        for (int t = 0; t < nr; t++) {
            acc[t][0] = _mm512_loadu_ps(o[t] + d);
            acc[t][1] = _mm512_loadu_ps(o[t] + d + 16);
        }
        for (int j = 0; j < nk; j++) {
            const float *vr = vb + (size_t)j * vstride + d;
            __m512 v0 = _mm512_loadu_ps(vr), v1 = _mm512_loadu_ps(vr + 16);
#pragma GCC unroll 4
            for (int t = 0; t < nr; t++) {
                __m512 pb = _mm512_set1_ps(p[t][j]);
                acc[t][0] = _mm512_fmadd_ps(pb, v0, acc[t][0]);
                acc[t][1] = _mm512_fmadd_ps(pb, v1, acc[t][1]);
            }
        }
#pragma GCC unroll 4
        for (int t = 0; t < nr; t++) {
            _mm512_storeu_ps(o[t] + d, acc[t][0]);
            _mm512_storeu_ps(o[t] + d + 16, acc[t][1]);
        }
    }
    for (; d + 16 <= v; d += 16) {
        __m512 acc[4];

#pragma GCC unroll 4
        for (int t = 0; t < nr; t++)
            acc[t] = _mm512_loadu_ps(o[t] + d);
        for (int j = 0; j < nk; j++) {
            __m512 v0 = _mm512_loadu_ps(vb + (size_t)j * vstride + d);
#pragma GCC unroll 4
            for (int t = 0; t < nr; t++)
                acc[t] = _mm512_fmadd_ps(_mm512_set1_ps(p[t][j]), v0, acc[t]);
        }
#pragma GCC unroll 4
        for (int t = 0; t < nr; t++)
            _mm512_storeu_ps(o[t] + d, acc[t]);
    }
    if (d < v) {
        /* the last columns as the 8-lane kernel does them */
        float       *ot[4];
        int          rest = v - d;

        for (int t = 0; t < nr; t++)
            ot[t] = o[t] + d;
        values_avx2(ot, p, nr, vb + d, vstride, nk, rest);
    }
}

static AVX512 void
scores512(const float *const *q, int nr, const float *kt, int ld, int dk,
          int nk16, float *const *s)
{
    if (nr == 4)
        scores_avx512(q, 4, kt, ld, dk, nk16, s);
    else
        for (int t = 0; t < nr; t++)
            scores_avx512(q + t, 1, kt, ld, dk, nk16, s + t);
}

static AVX512 void
values512(float *const *o, const float *const *p, int nr, const float *vb,
          size_t vstride, int nk, int v)
{
    if (nr == 4)
        values_avx512(o, p, 4, vb, vstride, nk, v);
    else
        for (int t = 0; t < nr; t++)
            values_avx512(o + t, p + t, 1, vb, vstride, nk, v);
}

static void
scores256(const float *const *q, int nr, const float *kt, int ld, int dk,
          int nk16, float *const *s)
{
    if (nr == 4)
        scores_avx2(q, 4, kt, ld, dk, nk16, s);
    else
        for (int t = 0; t < nr; t++)
            scores_avx2(q + t, 1, kt, ld, dk, nk16, s + t);
}

static void
values256(float *const *o, const float *const *p, int nr, const float *vb,
          size_t vstride, int nk, int v)
{
    if (nr == 4)
        values_avx2(o, p, 4, vb, vstride, nk, v);
    else
        for (int t = 0; t < nr; t++)
            values_avx2(o + t, p + t, 1, vb, vstride, nk, v);
}

void
cpu_tile_scores(const float *const *q, int nr, const float *kt, int ld,
                int dk, int nk, float *const *s)
{
    int nk16 = (nk + 15) & ~15;

    if (cpu_avx512())
        scores512(q, nr, kt, ld, dk, nk16, s);
    else
        scores256(q, nr, kt, ld, dk, nk16, s);
}

void
cpu_tile_values(float *const *o, const float *const *p, int nr,
                const float *vb, size_t vstride, int nk, int v)
{
    if (cpu_avx512())
        values512(o, p, nr, vb, vstride, nk, v);
    else
        values256(o, p, nr, vb, vstride, nk, v);
}
