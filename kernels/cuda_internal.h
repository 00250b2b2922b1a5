/*
 * Shared between the CUDA backend's translation units: the backend's
 * state, error recording, the scratch arena and the op entry points each
 * .cu file defines.  C++ (nvcc) only.
 */
#ifndef SG_CUDA_INTERNAL_H
#define SG_CUDA_INTERNAL_H

#include <cuda_runtime.h>
#include <cublas_v2.h>
#include <cuda_fp8.h>
#include <stddef.h>
#include <stdint.h>

extern "C" {
#include "model/backend.h"
}

typedef struct cuda_impl {
    int             device;
    cudaStream_t    stream;
    cublasHandle_t  blas;
    int             n_sm;
    /* scratch arena: one device buffer, carved per op (ops run in stream
     * order, so the next op may reuse it), grown only when too small */
    char           *arena;
    size_t          arena_cap;
    /* pinned staging ring for small host -> device copies, so they stay
     * asynchronous (a pageable source makes the copy wait for the
     * stream); wrapping around waits for the stream once */
    char           *pinned;
    size_t          pinned_cap, pinned_head;
    /* weights copied by prepare_weight, freed by destroy */
    void          **weights;
    int             n_weights, cap_weights;
    int             failed;
    char            err[512];
    /* 1: the indexer's scores on the FP8 tensor cores (m16n8k32 e4m3),
     * from SG_CUDA_INDEX_FP8=1 at creation; opt-in, cuda_attention.cu
     * says why */
    int             index_fp8;
} cuda_impl;

static inline cuda_impl *
cu(sg_backend *b)
{
    return (cuda_impl *)b->impl;
}

/* Makes the backend's device current on the calling thread (the engine
 * thread may not be the one that created the backend). */
void cu_enter(sg_backend *b);

/* Records the first error; returns 0 when `e` is cudaSuccess. */
int cu_check(sg_backend *b, cudaError_t e, const char *what);
int cu_check_blas(sg_backend *b, cublasStatus_t s, const char *what);
/* After a kernel launch: records launch errors (bad configuration). */
int cu_launched(sg_backend *b, const char *kernel);
void cu_fail(sg_backend *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Device scratch of `bytes`, valid until the next op; NULL on failure
 * (recorded).  An op asks once and carves the buffer itself. */
void *cu_scratch(sg_backend *b, size_t bytes);
/* Host -> device copy of op metadata into `dst` (inside the arena), or of
 * any small upload: staged through the pinned ring when it fits. */
int cu_put(sg_backend *b, void *dst, const void *src, size_t bytes);

/* Rounds a byte count up so the next carve stays 256-byte aligned. */
static inline size_t
cu_al(size_t n)
{
    return (n + 255) & ~(size_t)255;
}

/* A weight as a kernel sees it: device data, dtype, shape, block scales. */
typedef struct cu_weight {
    const void  *p;
    const float *scale;
    int          dtype;      /* sg_dtype */
    int64_t      rows, cols, scale_cols;
} cu_weight;

/* Fills `w` from a prepared tensor; -1 (recorded) when not prepared. */
int cu_weight_of(sg_backend *b, const sg_tensor *t, cu_weight *w);

/* ---- ops, by file ---- */
/* cuda_backend.cu: embed, linear, absorbed-MLA products */
void cu_embed(sg_backend *b, const sg_tensor *w, const int32_t *tokens, int n,
              float *out);
void cu_linear(sg_backend *b, const sg_tensor *w, const float *x, int n,
               float *y, int act_quant, int ue8m0);
void cu_mla_absorb(sg_backend *b, const sg_tensor *kv_b, const float *q,
                   int n, int heads, int nope, int rope, int v, int kv_lora,
                   float *q_lat);
void cu_mla_unabsorb(sg_backend *b, const sg_tensor *kv_b, const float *o_lat,
                     int n, int heads, int nope, int v, int kv_lora,
                     float *out);

/* cuda_elementwise.cu */
void cu_rmsnorm(sg_backend *b, const float *x, int x_stride,
                const sg_tensor *w, float eps, int n, int dim, float *out,
                int out_stride);
void cu_layernorm(sg_backend *b, const float *x, const sg_tensor *w,
                  const sg_tensor *bias, float eps, int n, int dim,
                  float *out);
void cu_add(sg_backend *b, float *y, const float *x, size_t count);
void cu_silu_mul(sg_backend *b, const float *gate, const float *up, float *out,
                 size_t count);
void cu_gather_rows(sg_backend *b, const float *src, const int32_t *idx, int n,
                    int dim, float *dst);
void cu_scatter_add_rows(sg_backend *b, float *dst, const int32_t *idx,
                         const float *w, int n, int dim, const float *src);
void cu_rope(sg_backend *b, float *x, int n, int heads, int row_stride,
             int head_stride, int offset, const int32_t *pos,
             const sg_rope_table *t, int interleaved);
void cu_hadamard(sg_backend *b, float *x, int rows, int dim);
void cu_fp8_quant(sg_backend *b, const float *x, int rows, int dim,
                  uint8_t *q, float *scale, int ue8m0);
void cu_fp8_dequant(sg_backend *b, const uint8_t *q, const float *scale,
                    int rows, int dim, float *out);
/* act_quant then back to f32 (x' = q * scale), for FP8 GEMMs; on stream */
void cu_act_quant_f32(sg_backend *b, const float *x, int rows, int dim,
                      float *out, int ue8m0);
void cu_kv_store(sg_backend *b, sg_kv_pool *pool, int layer,
                 const sg_rows *rows, const float *latent, const float *pe,
                 const uint8_t *ikey, const float *ikey_scale, int ue8m0);
void cu_kv_gather(sg_backend *b, const sg_kv_pool *pool, int layer,
                  const int32_t *block_table, int n_keys, float *latent,
                  float *pe);
void cu_moe_route(sg_backend *b, const float *logits, const float *bias, int n,
                  int n_experts, int n_group, int topk_group, int top_k,
                  int norm, float route_scale, const int32_t *forced,
                  int32_t *experts, float *weights);

/* cuda_attention.cu */
void cu_index_scores(sg_backend *b, const sg_kv_pool *pool, int layer,
                     const sg_rows *rows, const uint8_t *q8, const float *w,
                     int heads, float *scores, int scores_stride);
void cu_topk(sg_backend *b, const float *scores, int n, int stride,
             const int32_t *len, int k, int32_t *idx);
void cu_attn_prefill(sg_backend *b, const float *q, const float *kv,
                     const float *pe, int k0, int n_keys, const sg_rows *rows,
                     const int32_t *sel, int k, int heads, int nope, int rope,
                     int v, float scale, float *ml, float *out);
void cu_attn_decode(sg_backend *b, const sg_kv_pool *pool, int layer,
                    const sg_rows *rows, const float *q_lat, const float *q_pe,
                    const int32_t *sel, int k, int heads, float scale,
                    float *out);
/* 1: the indexer and decode attention use their f32 FMA kernels instead
 * of the tensor cores (also SG_CUDA_FMA=1 at backend creation); for tests
 * and benchmarks. */
void cu_set_fma_only(int on);
/* One-time kernel attributes (large shared memory); 0 or -1 recorded. */
int cu_attention_init(sg_backend *b);

/* Sum and max over a warp's 32 lanes, every lane gets the result. */
__device__ __forceinline__ float
warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float
warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* e4m3fn byte -> f32, exact */
__device__ __forceinline__ float
cu_e4m3(uint8_t v)
{
    uint32_t s = (uint32_t)(v >> 7) << 31, e = (v >> 3) & 15, m = v & 7;
    float f;

    if (e == 0)                       /* subnormal: m * 2^-9 */
        f = (float)m * 0.001953125f;
    else if (e == 15 && m == 7)
        return __int_as_float(0x7fc00000);
    else
        f = __int_as_float((int)(((e + 120) << 23) | (m << 20)));
    return __int_as_float(__float_as_int(f) | (int)s);
}

/* f32 -> e4m3fn, round to nearest even, saturating at 448 */
__device__ __forceinline__ uint8_t
cu_to_e4m3(float x)
{
    return (uint8_t)__nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3);
}

/* act_quant's code of x in a block of scale s.  The clamp is written as the
 * CPU's comparisons so a NaN stays NaN (fminf/fmaxf would turn it into
 * -448) and converts to 0x7f, as engine/cpu/cpu_fp8.c's e4m3_rne does. */
__device__ __forceinline__ uint8_t
cu_act_code(float x, float s)
{
    float v = x / s;

    v = v < -448.0f ? -448.0f : v > 448.0f ? 448.0f : v;
    return cu_to_e4m3(v);
}

/* The scale of a block holding a NaN: the CPU's NAN * (1/448) keeps the
 * quiet NaN 0x7fc00000 and skips the ue8m0 rounding (which would turn the
 * NaN's bits into -0); the GPU's own arithmetic gives 0x7fffffff. */
#define CU_NAN_SCALE __int_as_float(0x7fc00000)

/* The act_quant scale of a block whose max |x| is amax. */
__device__ __forceinline__ float
cu_act_scale(float amax, int ue8m0)
{
    float s = fmaxf(amax, 1e-4f) * (1.0f / 448.0f);

    if (ue8m0) {
        uint32_t u = (uint32_t)__float_as_int(s);
        if (u & 0x7fffffu)
            u = (u & 0xff800000u) + 0x800000u;
        s = __int_as_float((int)u);
    }
    return s;
}

/* Weight element (r, c) as f32, any stored dtype (FP8 with block scale). */
__device__ __forceinline__ float
cu_w_at(const cu_weight &w, int64_t r, int64_t c)
{
    int64_t i = r * w.cols + c;

    switch (w.dtype) {
    case SG_BF16:
        return __int_as_float((int)((uint32_t)((const uint16_t *)w.p)[i] << 16));
    case SG_F8_E4M3:
        return cu_e4m3(((const uint8_t *)w.p)[i])
               * w.scale[(r >> 7) * w.scale_cols + (c >> 7)];
    default:
        return ((const float *)w.p)[i];
    }
}

#define CU_GRID(n, t) ((unsigned)(((size_t)(n) + (t) - 1) / (t)))

#endif
