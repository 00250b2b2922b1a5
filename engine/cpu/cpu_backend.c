/*
 * The CPU backend: host memory, the ops table, and the element-wise ops
 * (embedding, add, SwiGLU, row gather/scatter).  Everything else lives in
 * one file per concern (cpu_*.c).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "cpu_internal.h"

static void *
cpu_alloc(sg_backend *b, size_t bytes)
{
    return calloc(1, bytes ? bytes : 1);
}

static void
cpu_free(sg_backend *b, void *p)
{
    free(p);
}

static void
cpu_copy(sg_backend *b, void *dst, const void *src, size_t bytes)
{
    if (bytes)
        memmove(dst, src, bytes);
}

static int
cpu_prepare_weight(sg_backend *b, sg_tensor *t, char *err, int errlen)
{
    switch (t->dtype) {
    case SG_F32:
    case SG_BF16:
        return 0;
    case SG_F8_E4M3:
        if (t->scale == NULL) {
            snprintf(err, errlen, "%s: F8_E4M3 weight without weight_scale_inv",
                     t->name ? t->name : "weight");
            return -1;
        }
        return 0;
    default:
        snprintf(err, errlen, "%s: dtype %s is not supported by the CPU "
                 "backend", t->name ? t->name : "weight",
                 sg_dtype_name(t->dtype));
        return -1;
    }
}

static int
cpu_sync(sg_backend *b, char *err, int errlen)
{
    if (cpu_take_oom(b)) {
        snprintf(err, errlen, "cpu backend: out of memory for an op's "
                 "scratch");
        return SG_BACKEND_ENOMEM;
    }
    return 0;
}

static void
cpu_destroy(sg_backend *b)
{
    cpu_pool_free(b->impl);
    free(b);
}

void
cpu_weight_row(const sg_tensor *w, int64_t r, float *out)
{
    int64_t cols = sg_tensor_cols(w);

    switch (w->dtype) {
    case SG_F32:
        memcpy(out, (const float *)w->data + r * cols, sizeof(float) * cols);
        break;
    case SG_BF16: {
        const uint16_t *p = (const uint16_t *)w->data + r * cols;
        int64_t j = 0;

        for (; j + 8 <= cols; j += 8)
            _mm256_storeu_ps(out + j, cpu_bf16x8(p + j));
        for (; j < cols; j++)
            out[j] = sg_bf16_to_f32(p[j]);
        break;
    }
    case SG_F8_E4M3:
        cpu_dequant_row((const uint8_t *)w->data + r * cols,
                        w->scale + (r / SG_FP8_BLOCK) * w->scale_cols,
                        (int)cols, out);
        break;
    default:
        memset(out, 0, sizeof(float) * cols);
    }
}

static void
cpu_embed(sg_backend *b, const sg_tensor *w, const int32_t *tokens, int n,
          float *out)
{
    int64_t dim = sg_tensor_cols(w);

    for (int i = 0; i < n; i++)
        cpu_weight_row(w, tokens[i], out + (int64_t)i * dim);
}

typedef struct {
    float       *y, *out;
    const float *x, *up;
} ew_ctx;

static void
add_range(void *c, int64_t i0, int64_t i1)
{
    ew_ctx *e = c;

    for (int64_t i = i0; i < i1; i++)
        e->y[i] += e->x[i];
}

static void
cpu_add(sg_backend *b, float *y, const float *x, size_t count)
{
    ew_ctx e = { .y = y, .x = x };

    cpu_parallel(b, count, 4096, count / 2.0, add_range, &e);
}

static void
silu_mul_range(void *c, int64_t i0, int64_t i1)
{
    ew_ctx *e = c;

    for (int64_t i = i0; i < i1; i++) {
        float g = e->x[i];

        e->out[i] = g / (1.0f + expf(-g)) * e->up[i];
    }
}

static void
cpu_silu_mul(sg_backend *b, const float *gate, const float *up, float *out,
             size_t count)
{
    ew_ctx e = { .out = out, .x = gate, .up = up };

    cpu_parallel(b, count, 1024, count * 8.0, silu_mul_range, &e);
}

static void
cpu_gather_rows(sg_backend *b, const float *src, const int32_t *idx, int n,
                int dim, float *dst)
{
    for (int j = 0; j < n; j++)
        memmove(dst + (size_t)j * dim, src + (size_t)idx[j] * dim,
                sizeof(float) * dim);
}

typedef struct {
    float         *dst;
    const int32_t *idx;
    const float   *w, *src;
    int            n, dim;
} scatter_ctx;

/* columns [c0, c1) of every row: each element's additions stay in j order */
static void
scatter_range(void *c, int64_t c0, int64_t c1)
{
    scatter_ctx *s = c;

    for (int j = 0; j < s->n; j++) {
        float       *d = s->dst + (size_t)s->idx[j] * s->dim;
        const float *x = s->src + (size_t)j * s->dim;

        for (int64_t k = c0; k < c1; k++)
            d[k] += s->w[j] * x[k];
    }
}

static void
cpu_scatter_add_rows(sg_backend *b, float *dst, const int32_t *idx,
                     const float *w, int n, int dim, const float *src)
{
    scatter_ctx s = { dst, idx, w, src, n, dim };

    cpu_parallel(b, dim, 64, (double)n * dim, scatter_range, &s);
}

static const sg_backend_ops cpu_ops = {
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_copy,
    .download = cpu_copy,
    .prepare_weight = cpu_prepare_weight,
    .sync = cpu_sync,
    .destroy = cpu_destroy,
    .embed = cpu_embed,
    .rmsnorm = cpu_rmsnorm,
    .layernorm = cpu_layernorm,
    .linear = cpu_linear,
    .add = cpu_add,
    .silu_mul = cpu_silu_mul,
    .gather_rows = cpu_gather_rows,
    .scatter_add_rows = cpu_scatter_add_rows,
    .rope = cpu_rope,
    .hadamard = cpu_hadamard,
    .fp8_quant = cpu_fp8_quant,
    .fp8_dequant = cpu_fp8_dequant,
    .kv_store = cpu_kv_store,
    .kv_gather = cpu_kv_gather,
    .index_scores = cpu_index_scores,
    .topk = cpu_topk,
    .attn_prefill = cpu_attn_prefill,
    .attn_decode = cpu_attn_decode,
    .mla_absorb = cpu_mla_absorb,
    .mla_unabsorb = cpu_mla_unabsorb,
    .moe_route = cpu_moe_route,
};

int cpu_isa_avx512;

sg_backend *
sg_backend_cpu_new(int n_threads)
{
    sg_backend *b = calloc(1, sizeof(*b));
    const char *isa = getenv("SG_CPU_ISA");

    if (b == NULL)
        return NULL;
    __builtin_cpu_init();
    cpu_isa_avx512 = __builtin_cpu_supports("avx512f")
                     && !(isa && strcmp(isa, "avx2") == 0);
    sg_fp8_init();
    /* OpenBLAS's own threads would nest inside ours */
    openblas_set_num_threads(1);
    b->ops = &cpu_ops;
    b->name = "cpu";
    b->n_threads = n_threads > 0 ? n_threads : cpu_online_cpus();
    b->mha_max_bytes = (size_t)256 << 20;
    const char *mw = getenv("SG_CPU_PAR_WORK");
    const char *spin = getenv("SG_CPU_SPIN_US");
    b->impl = cpu_pool_new(b->n_threads, mw ? atof(mw) : CPU_PAR_WORK,
                           spin ? atol(spin) : CPU_POOL_SPIN_US);
    if (b->impl == NULL) {
        free(b);
        return NULL;
    }
    return b;
}
