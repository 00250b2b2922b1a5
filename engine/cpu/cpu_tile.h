/*
 * The tile kernels of the attention ops (cpu_flash.c, cpu_mqa.c): scores
 * of up to four query rows against a tile of keys packed transposed,
 * their online-softmax step, and the probability-weighted sum of the
 * tile's values.  Each output is one FMA chain in a fixed order (over the
 * dimensions for a score, over the keys for a value), so grouping rows
 * four at a time, or the vector width, changes no bit of a row's result.
 */
#ifndef SG_CPU_TILE_H
#define SG_CPU_TILE_H

#include <math.h>

#include "cpu_internal.h"
#include "cpu_simd.h"

/* s[t][j] = q[t] . key j for j < nk16 (a multiple of 16), nr = 1..4 rows
 * (a constant after inlining), keys packed transposed (kt[d * ld + j]):
 * one FMA chain per (row, key) over d. */
static inline __attribute__((always_inline)) void
scores_tile(const float *const *q, const int nr, const float *kt, int ld,
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
values_tile(float *const *o, const float *const *p, const int nr,
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

/*
 * One row's softmax step over its c valid scores of the tile (c >= 1):
 * scaled scores become probabilities against the new running max, the
 * denominator and output are rescaled by exp(old max - new max).
 */
static inline void
online_softmax(float *s, int c, float scale, float *m, float *l, float *o,
               int v)
{
    __m256 vs = _mm256_set1_ps(scale), vmax = _mm256_set1_ps(-INFINITY);
    float  mt, mn, alpha, sum;
    int    j = 0;

    for (; j + 8 <= c; j += 8) {
        __m256 x = _mm256_mul_ps(_mm256_loadu_ps(s + j), vs);
        _mm256_storeu_ps(s + j, x);
        vmax = _mm256_max_ps(x, vmax);        /* a NaN score is caught below */
    }
    {
        float t[8];
        _mm256_storeu_ps(t, vmax);
        mt = t[0];
        for (int u = 1; u < 8; u++)
            mt = t[u] > mt ? t[u] : mt;
    }
    for (; j < c; j++) {
        s[j] *= scale;
        mt = s[j] > mt ? s[j] : mt;
    }
    mn = mt > *m ? mt : *m;
    alpha = expf(*m - mn);
    /* p = exp(s - mn); lanes past c are zero */
    __m256 vm = _mm256_set1_ps(mn), acc = _mm256_setzero_ps();
    for (j = 0; j + 8 <= c; j += 8) {
        __m256 p = cpu_exp8(_mm256_sub_ps(_mm256_loadu_ps(s + j), vm));
        _mm256_storeu_ps(s + j, p);
        acc = _mm256_add_ps(acc, p);
    }
    if (j < c) {
        float  t[8];
        int    r = c - j;

        for (int u = 0; u < 8; u++)
            t[u] = u < r ? s[j + u] - mn : -INFINITY;
        __m256 p = cpu_exp8(_mm256_loadu_ps(t));
        _mm256_storeu_ps(t, p);
        for (int u = 0; u < r; u++)
            s[j + u] = t[u];
        acc = _mm256_add_ps(acc, p);
    }
    sum = cpu_hsum(acc);
    *l = *l * alpha + sum;
    if (alpha != 1.0f) {
        __m256 va = _mm256_set1_ps(alpha);
        int    d = 0;
        for (; d + 8 <= v; d += 8)
            _mm256_storeu_ps(o + d, _mm256_mul_ps(_mm256_loadu_ps(o + d), va));
        for (; d < v; d++)
            o[d] *= alpha;
    }
    *m = mn;
}

#endif
