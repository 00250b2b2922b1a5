/*
 * RMSNorm and LayerNorm over rows, all in f32 as the reference (torch,
 * float32) computes them.  The last bits matter: the normed MLA latent is
 * rounded to e4m3 for the FP8 KV cache, and sums of squares in double
 * flipped enough codes to move the fixture logits by 1e-2 (f32: 4e-6).
 */
#include <math.h>
#include <stdlib.h>

#include "cpu_internal.h"

/* The norm's weight (or bias) as an f32 vector; ones (zeros for a bias)
 * when the tensor is absent. */
static float *
norm_vector(sg_backend *b, const sg_tensor *t, int dim, float absent)
{
    float *v = malloc(sizeof(float) * (dim > 0 ? dim : 1));

    if (v == NULL) {
        cpu_backend_oom(b);
        return NULL;
    }
    for (int j = 0; j < dim; j++)
        v[j] = t && t->data ? cpu_weight_at(t, j) : absent;
    return v;
}

typedef struct {
    const float *x, *w, *bias;
    float       *out;
    float        eps;
    int          dim, x_stride, out_stride;
} norm_ctx;

static void
rms_range(void *c, int64_t i0, int64_t i1)
{
    norm_ctx *N = c;

    for (int64_t i = i0; i < i1; i++) {
        const float *xi = N->x + (size_t)i * N->x_stride;
        float       *oi = N->out + (size_t)i * N->out_stride;
        float        ss = 0.0f;

        for (int j = 0; j < N->dim; j++)
            ss += xi[j] * xi[j];
        float r = 1.0f / sqrtf(ss / N->dim + N->eps);

        for (int j = 0; j < N->dim; j++)
            oi[j] = xi[j] * r * N->w[j];
    }
}

void
cpu_rmsnorm(sg_backend *b, const float *x, int x_stride, const sg_tensor *w,
            float eps, int n, int dim, float *out, int out_stride)
{
    float   *wv = norm_vector(b, w, dim, 1.0f);
    norm_ctx N = { x, wv, NULL, out, eps, dim, x_stride, out_stride };

    if (wv != NULL)
        cpu_parallel(b, n, 1, (double)n * dim * 4, rms_range, &N);
    free(wv);
}

static void
ln_range(void *c, int64_t i0, int64_t i1)
{
    norm_ctx *N = c;
    int       dim = N->dim;

    for (int64_t i = i0; i < i1; i++) {
        const float *xi = N->x + (size_t)i * dim;
        float       *oi = N->out + (size_t)i * dim;
        float        s = 0.0f, ss = 0.0f;

        for (int j = 0; j < dim; j++)
            s += xi[j];
        float mean = s / dim;

        for (int j = 0; j < dim; j++) {
            float d = xi[j] - mean;
            ss += d * d;                   /* biased variance, as torch */
        }
        float r = 1.0f / sqrtf(ss / dim + N->eps);

        for (int j = 0; j < dim; j++)
            oi[j] = (xi[j] - mean) * r * N->w[j] + N->bias[j];
    }
}

void
cpu_layernorm(sg_backend *b, const float *x, const sg_tensor *w,
              const sg_tensor *bias, float eps, int n, int dim, float *out)
{
    float   *wv = norm_vector(b, w, dim, 1.0f);
    float   *bv = norm_vector(b, bias, dim, 0.0f);
    norm_ctx N = { x, wv, bv, out, eps, dim, dim, dim };

    if (wv != NULL && bv != NULL)
        cpu_parallel(b, n, 1, (double)n * dim * 4, ln_range, &N);
    free(wv);
    free(bv);
}
