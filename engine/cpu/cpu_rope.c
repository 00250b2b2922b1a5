/*
 * Rotary embedding in place, both pair layouts: interleaved (2j, 2j+1) as
 * MLA's complex view, and rotate-half (j, j + rope/2) as the corrected
 * indexer.
 */
#include "cpu_internal.h"

typedef struct {
    float               *x;
    const int32_t       *pos;
    const sg_rope_table *t;
    int                  heads, row_stride, head_stride, offset, interleaved;
} rope_ctx;

static void
rope_range(void *c, int64_t i0, int64_t i1)
{
    rope_ctx *R = c;
    int       half = R->t->rope_dim / 2;

    for (int64_t i = i0; i < i1; i++) {
        const float *cs = R->t->cos_sin + (size_t)R->pos[i] * half * 2;

        for (int h = 0; h < R->heads; h++) {
            float *p = R->x + (size_t)i * R->row_stride
                       + (size_t)h * R->head_stride + R->offset;

            for (int j = 0; j < half; j++) {
                float  co = cs[2 * j], si = cs[2 * j + 1];
                float *a = R->interleaved ? p + 2 * j : p + j;
                float *d = R->interleaved ? p + 2 * j + 1 : p + j + half;
                float  x0 = *a, x1 = *d;

                *a = x0 * co - x1 * si;
                *d = x0 * si + x1 * co;
            }
        }
    }
}

void
cpu_rope(sg_backend *b, float *x, int n, int heads, int row_stride,
         int head_stride, int offset, const int32_t *pos,
         const sg_rope_table *t, int interleaved)
{
    rope_ctx R = { x, pos, t, heads, row_stride, head_stride, offset,
                   interleaved };

    cpu_parallel(b, n, 1, (double)n * heads * t->rope_dim * 2, rope_range, &R);
}
