/*
 * The tile kernels of the attention ops (cpu_flash.c, cpu_mqa.c): scores
 * of up to four query rows against a tile of keys packed transposed,
 * their online-softmax step, and the probability-weighted sum of the
 * tile's values.  Each output is one FMA chain in a fixed order (over the
 * dimensions for a score, over the keys for a value), so grouping rows
 * four at a time, or the vector width (AVX2 or AVX-512, chosen at run
 * time in cpu_tile.c), changes no bit of a row's result.
 */
#ifndef SG_CPU_TILE_H
#define SG_CPU_TILE_H

#include <math.h>

#include "cpu_internal.h"
#include "cpu_simd.h"

/* s[t][j] = q[t] . key j for j < nk rounded up to 16 (kt zero up to
 * there), nr = 1..4 rows, keys packed transposed (kt[d * ld + j]): one
 * FMA chain per (row, key) over d. */
void cpu_tile_scores(const float *const *q, int nr, const float *kt, int ld,
                     int dk, int nk, float *const *s);

/* o[t][0..v) += sum_{j < nk} p[t][j] * V[j] in j order (one FMA chain per
 * element), nr = 1..4 rows; V[j] = vb + j * vstride. */
void cpu_tile_values(float *const *o, const float *const *p, int nr,
                     const float *vb, size_t vstride, int nk, int v);

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
