/*
 * The CUDA backend: device memory, errors, weights, and the dense products
 * (embedding, linear layers, the absorbed-MLA per-head products).  The
 * other ops live in cuda_elementwise.cu and cuda_attention.cu.
 *
 * Numerics follow the CPU backend (the reference): activations f32, every
 * product accumulated in f32.  BF16 weights at batch > 8 go through cuBLAS
 * on tensor cores with the activations split into three bf16 parts
 * (x = hi + mid + lo), which keeps all 24 bits of each activation;
 * FP8 weights are dequantized on load (e4m3 times its block scale) into an
 * f32 FMA GEMM, so the result does not depend on the tensor cores' reduced
 * FP8 accumulation.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_bf16.h>

#include "cuda_internal.h"

/* ---- errors ------------------------------------------------------------- */

void
cu_fail(sg_backend *b, const char *fmt, ...)
{
    cuda_impl *c = cu(b);
    va_list    ap;

    if (c->failed)
        return;
    c->failed = 1;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof(c->err), fmt, ap);
    va_end(ap);
}

int
cu_check(sg_backend *b, cudaError_t e, const char *what)
{
    if (e == cudaSuccess)
        return 0;
    cu_fail(b, "cuda: %s: %s", what, cudaGetErrorString(e));
    /* the runtime also keeps it as its last error: consume it, or the
     * next op's launch check reports it again after sync cleared it
     * (a sticky device error comes back from every call anyway) */
    cudaGetLastError();
    return -1;
}

int
cu_check_blas(sg_backend *b, cublasStatus_t s, const char *what)
{
    if (s == CUBLAS_STATUS_SUCCESS)
        return 0;
    cu_fail(b, "cublas: %s: %s", what, cublasGetStatusString(s));
    return -1;
}

int
cu_launched(sg_backend *b, const char *kernel)
{
    return cu_check(b, cudaGetLastError(), kernel);
}

void
cu_enter(sg_backend *b)
{
    static __thread int current = -1;
    cuda_impl *c = cu(b);

    if (current != c->device) {
        if (cudaSetDevice(c->device) == cudaSuccess)
            current = c->device;
        else
            cu_fail(b, "cuda: cannot select device %d", c->device);
    }
}

/* ---- scratch arena ------------------------------------------------------ */

void *
cu_scratch(sg_backend *b, size_t bytes)
{
    cuda_impl *c = cu(b);

    if (c->failed)
        return NULL;
    if (bytes <= c->arena_cap)
        return c->arena;
    /* queued kernels may still read the old arena: wait before freeing */
    if (c->arena) {
        if (cu_check(b, cudaStreamSynchronize(c->stream), "scratch grow"))
            return NULL;
        cudaFree(c->arena);
        c->arena = NULL;
        c->arena_cap = 0;
    }
    size_t cap = bytes + bytes / 2;
    if (cap < (1u << 20))
        cap = 1u << 20;
    if (cu_check(b, cudaMalloc((void **)&c->arena, cap), "scratch arena"))
        return NULL;
    c->arena_cap = cap;
    return c->arena;
}

int
cu_put(sg_backend *b, void *dst, const void *src, size_t bytes)
{
    cuda_impl *c = cu(b);

    if (bytes == 0)
        return 0;
    if (c->pinned == NULL || bytes > c->pinned_cap / 4)
        return cu_check(b, cudaMemcpyAsync(dst, src, bytes,
                                           cudaMemcpyHostToDevice, c->stream),
                        "upload");
    if (c->pinned_head + bytes > c->pinned_cap) {
        /* every copy out of the ring so far is queued before this point */
        if (cu_check(b, cudaStreamSynchronize(c->stream), "staging ring"))
            return -1;
        c->pinned_head = 0;
    }
    char *stage = c->pinned + c->pinned_head;
    memcpy(stage, src, bytes);
    c->pinned_head += cu_al(bytes);
    return cu_check(b, cudaMemcpyAsync(dst, stage, bytes,
                                       cudaMemcpyHostToDevice, c->stream),
                    "upload");
}

int
cu_weight_of(sg_backend *b, const sg_tensor *t, cu_weight *w)
{
    if (t == NULL || t->dev == NULL) {
        cu_fail(b, "cuda: weight %s was not prepared (prepare_weight)",
                t && t->name ? t->name : "(unnamed)");
        return -1;
    }
    if (t->dtype != SG_F32 && t->dtype != SG_BF16 && t->dtype != SG_F8_E4M3) {
        cu_fail(b, "cuda: weight %s: dtype %s is not supported",
                t->name ? t->name : "(unnamed)", sg_dtype_name(t->dtype));
        return -1;
    }
    w->p = t->dev;
    w->scale = (const float *)t->dev_scale;
    w->dtype = t->dtype;
    w->rows = sg_tensor_rows(t);
    w->cols = sg_tensor_cols(t);
    w->scale_cols = t->scale_cols ? t->scale_cols : (w->cols + 127) / 128;
    if (t->dtype == SG_F8_E4M3 && w->scale == NULL) {
        cu_fail(b, "cuda: FP8 weight %s has no block scales",
                t->name ? t->name : "(unnamed)");
        return -1;
    }
    return 0;
}

/* ---- memory ops --------------------------------------------------------- */

static void *
op_alloc(sg_backend *b, size_t bytes)
{
    cu_enter(b);
    cuda_impl *c = cu(b);
    void      *p = NULL;

    if (bytes == 0)
        bytes = 1;
    if (cudaMalloc(&p, bytes) != cudaSuccess) {
        cudaGetLastError();             /* OOM is not sticky: clear it */
        return NULL;
    }
    if (cu_check(b, cudaMemsetAsync(p, 0, bytes, c->stream), "alloc memset")) {
        cudaFree(p);
        return NULL;
    }
    return p;
}

static void
op_free(sg_backend *b, void *p)
{
    cu_enter(b);
    if (p)
        cu_check(b, cudaFree(p), "free");
}

static void
op_upload(sg_backend *b, void *dst, const void *src, size_t bytes)
{
    cu_enter(b);
    if (bytes == 0 || cu(b)->failed)
        return;
    cu_put(b, dst, src, bytes);
}

static void
op_download(sg_backend *b, void *dst, const void *src, size_t bytes)
{
    cu_enter(b);
    cuda_impl *c = cu(b);

    if (bytes == 0)
        return;
    if (c->failed) {
        memset(dst, 0, bytes);          /* defined contents; sync reports */
        return;
    }
    if (cu_check(b, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost,
                                    c->stream), "download") == 0)
        cu_check(b, cudaStreamSynchronize(c->stream), "download sync");
}

static int
keep_weight(sg_backend *b, void *p)
{
    cuda_impl *c = cu(b);

    if (c->n_weights == c->cap_weights) {
        int    cap = c->cap_weights ? c->cap_weights * 2 : 256;
        void **nw = (void **)realloc(c->weights, sizeof(void *) * cap);
        if (nw == NULL)
            return -1;
        c->weights = nw;
        c->cap_weights = cap;
    }
    c->weights[c->n_weights++] = p;
    return 0;
}

static int
op_prepare_weight(sg_backend *b, sg_tensor *t, char *err, int errlen)
{
    cu_enter(b);
    cuda_impl *c = cu(b);
    int64_t    numel = 1;
    size_t     bytes, sbytes = 0;
    void      *d = NULL, *ds = NULL;

    if (t->dev)
        return 0;
    for (int i = 0; i < t->ndim; i++)
        numel *= t->shape[i];
    bytes = (size_t)numel * sg_dtype_size(t->dtype);
    if (t->dtype == SG_F8_E4M3) {
        int64_t sr = (sg_tensor_rows(t) + 127) / 128;
        int64_t sc = t->scale_cols ? t->scale_cols
                                   : (sg_tensor_cols(t) + 127) / 128;
        if (t->scale == NULL) {
            snprintf(err, errlen, "cuda: FP8 weight %s has no "
                     "weight_scale_inv", t->name ? t->name : "(unnamed)");
            return -1;
        }
        sbytes = sizeof(float) * (size_t)(sr * sc);
    }
    if (cudaMalloc(&d, bytes ? bytes : 1) != cudaSuccess
        || (sbytes && cudaMalloc(&ds, sbytes) != cudaSuccess))
    {
        cudaGetLastError();
        snprintf(err, errlen, "cuda: out of device memory for weight %s "
                 "(%zu bytes)", t->name ? t->name : "(unnamed)", bytes + sbytes);
        if (d)
            cudaFree(d);
        return -1;
    }
    /* copied once, on the ops' stream (ordered before any op that reads
     * the weight; a pageable source is staged before the call returns) */
    cudaError_t e = cudaMemcpyAsync(d, t->data, bytes, cudaMemcpyHostToDevice,
                                    c->stream);
    if (e == cudaSuccess && sbytes)
        e = cudaMemcpyAsync(ds, t->scale, sbytes, cudaMemcpyHostToDevice,
                            c->stream);
    /* both kept, or neither: destroy frees exactly what was kept */
    int kept = e == cudaSuccess && keep_weight(b, d) == 0;
    if (kept && ds && keep_weight(b, ds) != 0) {
        c->n_weights--;
        kept = 0;
    }
    if (!kept) {
        snprintf(err, errlen, "cuda: copying weight %s to the device: %s",
                 t->name ? t->name : "(unnamed)",
                 e != cudaSuccess ? cudaGetErrorString(e)
                                  : "out of host memory");
        /* the queued copy may still read d: wait before freeing */
        cudaStreamSynchronize(c->stream);
        cudaGetLastError();
        cudaFree(d);
        if (ds)
            cudaFree(ds);
        return -1;
    }
    t->dev = d;
    t->dev_scale = ds;
    return 0;
}

static int
op_sync(sg_backend *b, char *err, int errlen)
{
    cu_enter(b);
    cuda_impl *c = cu(b);

    if (!c->failed)
        cu_check(b, cudaStreamSynchronize(c->stream), "sync");
    if (!c->failed)
        cu_check(b, cudaGetLastError(), "sync");
    if (c->failed) {
        /* reported once; a sticky device error comes back at the next
         * call by itself, an argument error does not poison later work */
        snprintf(err, errlen, "%s", c->err);
        c->failed = 0;
        c->err[0] = '\0';
        return -1;
    }
    return 0;
}

static void
op_destroy(sg_backend *b)
{
    cuda_impl *c;

    if (b == NULL)
        return;
    c = cu(b);
    if (c) {
        cudaStreamSynchronize(c->stream);
        for (int i = 0; i < c->n_weights; i++)
            cudaFree(c->weights[i]);
        free(c->weights);
        if (c->arena)
            cudaFree(c->arena);
        if (c->pinned)
            cudaFreeHost(c->pinned);
        if (c->blas)
            cublasDestroy(c->blas);
        if (c->stream)
            cudaStreamDestroy(c->stream);
        free(c);
    }
    free(b);
}

/* ---- embedding ---------------------------------------------------------- */

__global__ void
k_embed(cu_weight w, const int32_t *tokens, int n, float *out)
{
    int64_t D = w.cols;

    for (int64_t i = blockIdx.y; i < n; i += gridDim.y)
        for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
             j < D; j += (int64_t)gridDim.x * blockDim.x)
            out[i * D + j] = cu_w_at(w, tokens[i], j);
}

void
cu_embed(sg_backend *b, const sg_tensor *t, const int32_t *tokens, int n,
         float *out)
{
    cu_enter(b);
    cu_weight w;
    int32_t  *dt;

    if (n <= 0 || cu_weight_of(b, t, &w))
        return;
    /* a token past the table would be an illegal address on the device,
     * which poisons the whole context: refuse it here, by name */
    for (int i = 0; i < n; i++) {
        if (tokens[i] < 0 || tokens[i] >= w.rows) {
            cu_fail(b, "cuda: embed: token %d outside %s (%lld rows)",
                    tokens[i], t->name ? t->name : "the table",
                    (long long)w.rows);
            return;
        }
    }
    dt = (int32_t *)cu_scratch(b, sizeof(int32_t) * n);
    if (dt == NULL || cu_put(b, dt, tokens, sizeof(int32_t) * n))
        return;
    k_embed<<<dim3(CU_GRID(w.cols, 256), n < 65535 ? n : 65535), 256, 0,
              cu(b)->stream>>>(
        w, dt, n, out);
    cu_launched(b, "embed");
}

/* ---- linear ------------------------------------------------------------- */

#define GEMV_ROWS 8     /* activation rows per pass of the GEMV kernel */

/* Eight consecutive weight values of row r from column c (in range). */
template <int WT, bool VEC>
__device__ __forceinline__ void
w_load8(const cu_weight &w, int64_t r, int64_t c, float *o)
{
    if (VEC && WT == SG_BF16) {
        uint4 u = *(const uint4 *)((const uint16_t *)w.p + r * w.cols + c);
        uint32_t a[4] = { u.x, u.y, u.z, u.w };
#pragma unroll
        for (int i = 0; i < 4; i++) {
            o[2 * i] = __int_as_float((int)(a[i] << 16));
            o[2 * i + 1] = __int_as_float((int)(a[i] & 0xffff0000u));
        }
    } else if (VEC && WT == SG_F8_E4M3) {
        uint2 u = *(const uint2 *)((const uint8_t *)w.p + r * w.cols + c);
        float s = w.scale[(r >> 7) * w.scale_cols + (c >> 7)];
#pragma unroll
        for (int i = 0; i < 4; i++) {
            o[i] = cu_e4m3((uint8_t)(u.x >> (8 * i))) * s;
            o[4 + i] = cu_e4m3((uint8_t)(u.y >> (8 * i))) * s;
        }
    } else if (VEC && WT == SG_F32) {
        const float4 *p = (const float4 *)((const float *)w.p + r * w.cols + c);
        float4 a = p[0], bb = p[1];
        o[0] = a.x; o[1] = a.y; o[2] = a.z; o[3] = a.w;
        o[4] = bb.x; o[5] = bb.y; o[6] = bb.z; o[7] = bb.w;
    } else {
#pragma unroll
        for (int i = 0; i < 8; i++)
            o[i] = c + i < w.cols ? cu_w_at(w, r, c + i) : 0.0f;
    }
}

/*
 * y[i][r] = x[i] . w[r] for up to GEMV_ROWS rows of x: one warp per weight
 * row, each lane eight columns at a time, so the weight is read once (the
 * memory-bound decode case).
 */
template <int WT, bool VEC>
__global__ void __launch_bounds__(256)
k_gemv(cu_weight w, const float *x, int n, float *y)
{
    int64_t r = (int64_t)blockIdx.x * 8 + threadIdx.x / 32;
    int     lane = threadIdx.x & 31;
    float   acc[GEMV_ROWS];

    if (r >= w.rows)
        return;
#pragma unroll
    for (int i = 0; i < GEMV_ROWS; i++)
        acc[i] = 0.0f;
    for (int64_t c = lane * 8; c < w.cols; c += 256) {
        float wv[8];
        w_load8<WT, VEC>(w, r, c, wv);
#pragma unroll
        for (int i = 0; i < GEMV_ROWS; i++) {
            if (i >= n)
                break;
            const float *xr = x + i * w.cols + c;
            float xv[8];
            if (VEC) {
                float4 a = ((const float4 *)xr)[0], bb = ((const float4 *)xr)[1];
                xv[0] = a.x; xv[1] = a.y; xv[2] = a.z; xv[3] = a.w;
                xv[4] = bb.x; xv[5] = bb.y; xv[6] = bb.z; xv[7] = bb.w;
            } else {
#pragma unroll
                for (int j = 0; j < 8; j++)
                    xv[j] = c + j < w.cols ? xr[j] : 0.0f;
            }
#pragma unroll
            for (int j = 0; j < 8; j++)
                acc[i] = fmaf(xv[j], wv[j], acc[i]);
        }
    }
#pragma unroll
    for (int i = 0; i < GEMV_ROWS; i++) {
        if (i >= n)
            break;
        float s = acc[i];
        for (int o = 16; o > 0; o >>= 1)
            s += __shfl_xor_sync(0xffffffffu, s, o);
        if (lane == 0)
            y[(int64_t)i * w.rows + r] = s;
    }
}

/*
 * y = x . W^T for any n, f32 FMA, 64x64 tiles, 4x4 outputs per thread;
 * the weight is dequantized as it is loaded.
 */
#define TM 64
#define TN 64
#define TK 16
__global__ void __launch_bounds__(256)
k_gemm_tiled(cu_weight w, const float *x, int n, float *y)
{
    __shared__ float xs[TK][TM + 4];
    __shared__ float ws[TK][TN + 4];
    int     tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    int64_t m0 = (int64_t)blockIdx.y * TM, n0 = (int64_t)blockIdx.x * TN;
    int64_t K = w.cols;
    float   acc[4][4] = {};

    for (int64_t k0 = 0; k0 < K; k0 += TK) {
        for (int e = threadIdx.x; e < TM * TK; e += 256) {
            int mm = e / TK, kk = e % TK;
            int64_t gm = m0 + mm, gk = k0 + kk;
            xs[kk][mm] = gm < n && gk < K ? x[gm * K + gk] : 0.0f;
            int64_t gn = n0 + mm;
            ws[kk][mm] = gn < w.rows && gk < K ? cu_w_at(w, gn, gk) : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < TK; kk++) {
            float a[4], bv[4];
#pragma unroll
            for (int i = 0; i < 4; i++) {
                a[i] = xs[kk][ty * 4 + i];
                bv[i] = ws[kk][tx * 4 + i];
            }
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++)
                    acc[i][j] = fmaf(a[i], bv[j], acc[i][j]);
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; i++) {
        int64_t gm = m0 + ty * 4 + i;
        if (gm >= n)
            continue;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            int64_t gn = n0 + tx * 4 + j;
            if (gn < w.rows)
                y[gm * w.rows + gn] = acc[i][j];
        }
    }
}

/*
 * x = hi + mid + lo, each bf16 (RNE), for the three-pass tensor-core
 * product.  Each remainder is exact in f32, so the three parts hold x's 24
 * bits and every product with a bf16 weight is exact in the f32
 * accumulator.  (Two parts kept ~16 bits: a relative error of ~2^-17 in
 * the outputs, enough to flip e4m3 codes of the indexer's query and with
 * them the top-k sets the model checks compare exactly.)
 */
__global__ void
k_split_bf16(const float *x, size_t count, __nv_bfloat16 *hi,
             __nv_bfloat16 *mid, __nv_bfloat16 *lo)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < count;
         i += (size_t)gridDim.x * blockDim.x) {
        float         v = x[i];
        __nv_bfloat16 h = __float2bfloat16_rn(v);
        float         r = v - __bfloat162float(h);
        __nv_bfloat16 m = __float2bfloat16_rn(r);
        hi[i] = h;
        mid[i] = m;
        lo[i] = __float2bfloat16_rn(r - __bfloat162float(m));
    }
}

template <int WT>
static void
launch_gemv(sg_backend *b, const cu_weight &w, const float *x, int n,
            float *y)
{
    bool vec = w.cols % 8 == 0 && ((uintptr_t)x & 15) == 0
               && ((uintptr_t)w.p & 15) == 0;
    unsigned grid = CU_GRID(w.rows, 8);

    for (int i0 = 0; i0 < n; i0 += GEMV_ROWS) {
        int m = n - i0 < GEMV_ROWS ? n - i0 : GEMV_ROWS;
        const float *xi = x + (size_t)i0 * w.cols;
        float       *yi = y + (size_t)i0 * w.rows;
        if (vec)
            k_gemv<WT, true><<<grid, 256, 0, cu(b)->stream>>>(w, xi, m, yi);
        else
            k_gemv<WT, false><<<grid, 256, 0, cu(b)->stream>>>(w, xi, m, yi);
    }
    cu_launched(b, "gemv");
}

static void
gemm_bf16_split(sg_backend *b, const cu_weight &w, const float *x, int n,
                float *y)
{
    cuda_impl *c = cu(b);
    size_t     count = (size_t)n * w.cols, part = cu_al(count * 2);
    char      *s = (char *)cu_scratch(b, 3 * part);
    float      one = 1.0f, zero = 0.0f;
    int        R = (int)w.rows, C = (int)w.cols;

    if (s == NULL)
        return;
    __nv_bfloat16 *xs[3] = { (__nv_bfloat16 *)s, (__nv_bfloat16 *)(s + part),
                             (__nv_bfloat16 *)(s + 2 * part) };
    k_split_bf16<<<CU_GRID(count, 256) < 65535 ? CU_GRID(count, 256) : 65535,
                   256, 0, c->stream>>>(x, count, xs[0], xs[1], xs[2]);
    if (cu_launched(b, "split_bf16"))
        return;
    /* row-major y[n][R] = x[n][C] W[R][C]^T is column-major
     * y(R x n) = W(C x R)^T x(C x n); the largest part first, the others
     * added on (beta = 1) */
    for (int p = 0; p < 3; p++) {
        if (cu_check_blas(b, cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N,
                                          R, n, C, &one, w.p, CUDA_R_16BF, C,
                                          xs[p], CUDA_R_16BF, C,
                                          p ? &one : &zero, y, CUDA_R_32F, R,
                                          CUBLAS_COMPUTE_32F,
                                          CUBLAS_GEMM_DEFAULT),
                          "bf16 gemm"))
            return;
    }
}

void
cu_linear(sg_backend *b, const sg_tensor *t, const float *x, int n, float *y,
          int act_quant, int ue8m0)
{
    cu_enter(b);
    cuda_impl *c = cu(b);
    cu_weight  w;

    if (n <= 0 || c->failed || cu_weight_of(b, t, &w))
        return;
    if (w.dtype == SG_F8_E4M3 && act_quant) {
        /* DeepSeek's fp8_gemm sees the activations through act_quant */
        float *xq = (float *)cu_scratch(b, sizeof(float) * (size_t)n * w.cols);
        if (xq == NULL)
            return;
        cu_act_quant_f32(b, x, n, (int)w.cols, xq, ue8m0);
        x = xq;
    }
    if (n <= GEMV_ROWS) {
        switch (w.dtype) {
        case SG_BF16:    launch_gemv<SG_BF16>(b, w, x, n, y); break;
        case SG_F8_E4M3: launch_gemv<SG_F8_E4M3>(b, w, x, n, y); break;
        default:         launch_gemv<SG_F32>(b, w, x, n, y); break;
        }
        return;
    }
    if (w.dtype == SG_BF16) {
        gemm_bf16_split(b, w, x, n, y);
        return;
    }
    if (w.dtype == SG_F32) {
        float one = 1.0f, zero = 0.0f;
        int   R = (int)w.rows, C = (int)w.cols;
        cu_check_blas(b, cublasSgemm(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, R, n, C,
                                     &one, (const float *)w.p, C, x, C, &zero,
                                     y, R), "sgemm");
        return;
    }
    k_gemm_tiled<<<dim3(CU_GRID(w.rows, TN), CU_GRID(n, TM)), 256, 0,
                   c->stream>>>(w, x, n, y);
    cu_launched(b, "gemm_tiled");
}

/* ---- absorbed MLA products ---------------------------------------------- */

/* q_lat[i][h][c] = sum_d q[i][h][d] * W[h*(nope+v) + d][c] */
__global__ void
k_absorb(cu_weight w, const float *q, int n, int heads, int nope, int rope,
         int v, int kv_lora, float *q_lat)
{
    int h = blockIdx.x, c = blockIdx.y * blockDim.x + threadIdx.x;
    int qk = nope + rope;

    if (c >= kv_lora)
        return;
    for (int i0 = 0; i0 < n; i0 += 8) {
        float acc[8] = {};
        for (int d = 0; d < nope; d++) {
            float wv = cu_w_at(w, (int64_t)h * (nope + v) + d, c);
#pragma unroll
            for (int i = 0; i < 8; i++) {
                if (i0 + i < n)
                    acc[i] = fmaf(q[((int64_t)(i0 + i) * heads + h) * qk + d],
                                  wv, acc[i]);
            }
        }
#pragma unroll
        for (int i = 0; i < 8; i++) {
            if (i0 + i < n)
                q_lat[((int64_t)(i0 + i) * heads + h) * kv_lora + c] = acc[i];
        }
    }
}

/* out[i][h][j] = sum_c W[h*(nope+v) + nope + j][c] * o[i][h][c]: a warp
 * per (h, j) */
__global__ void
k_unabsorb(cu_weight w, const float *o_lat, int n, int heads, int nope, int v,
           int kv_lora, float *out)
{
    int64_t wid = (int64_t)blockIdx.x * 8 + threadIdx.x / 32;
    int     lane = threadIdx.x & 31;

    if (wid >= (int64_t)heads * v)
        return;
    int h = (int)(wid / v), j = (int)(wid % v);
    int64_t r = (int64_t)h * (nope + v) + nope + j;
    for (int i0 = 0; i0 < n; i0 += 8) {
        float acc[8] = {};
        for (int c = lane; c < kv_lora; c += 32) {
            float wv = cu_w_at(w, r, c);
#pragma unroll
            for (int i = 0; i < 8; i++) {
                if (i0 + i < n)
                    acc[i] = fmaf(wv, o_lat[((int64_t)(i0 + i) * heads + h)
                                            * kv_lora + c], acc[i]);
            }
        }
#pragma unroll
        for (int i = 0; i < 8; i++) {
            float s = acc[i];
            for (int o = 16; o > 0; o >>= 1)
                s += __shfl_xor_sync(0xffffffffu, s, o);
            if (lane == 0 && i0 + i < n)
                out[((int64_t)(i0 + i) * heads + h) * v + j] = s;
        }
    }
}

static int
check_kv_b(sg_backend *b, const cu_weight &w, int heads, int nope, int v,
           int kv_lora)
{
    if (w.rows != (int64_t)heads * (nope + v) || w.cols != kv_lora) {
        cu_fail(b, "cuda: kv_b is [%lld, %lld], expected [%d, %d]",
                (long long)w.rows, (long long)w.cols, heads * (nope + v),
                kv_lora);
        return -1;
    }
    return 0;
}

void
cu_mla_absorb(sg_backend *b, const sg_tensor *kv_b, const float *q, int n,
              int heads, int nope, int rope, int v, int kv_lora, float *q_lat)
{
    cu_enter(b);
    cu_weight w;

    if (n <= 0 || cu_weight_of(b, kv_b, &w)
        || check_kv_b(b, w, heads, nope, v, kv_lora))
        return;
    k_absorb<<<dim3(heads, CU_GRID(kv_lora, 128)), 128, 0, cu(b)->stream>>>(
        w, q, n, heads, nope, rope, v, kv_lora, q_lat);
    cu_launched(b, "mla_absorb");
}

void
cu_mla_unabsorb(sg_backend *b, const sg_tensor *kv_b, const float *o_lat,
                int n, int heads, int nope, int v, int kv_lora, float *out)
{
    cu_enter(b);
    cu_weight w;

    if (n <= 0 || cu_weight_of(b, kv_b, &w)
        || check_kv_b(b, w, heads, nope, v, kv_lora))
        return;
    k_unabsorb<<<CU_GRID((int64_t)heads * v, 8), 256, 0, cu(b)->stream>>>(
        w, o_lat, n, heads, nope, v, kv_lora, out);
    cu_launched(b, "mla_unabsorb");
}

/* ---- the backend -------------------------------------------------------- */

static const sg_backend_ops cuda_ops = {
    op_alloc, op_free, op_upload, op_download, op_prepare_weight, op_sync,
    op_destroy,
    cu_embed, cu_rmsnorm, cu_layernorm, cu_linear, cu_add, cu_silu_mul,
    cu_gather_rows, cu_scatter_add_rows,
    cu_rope, cu_hadamard, cu_fp8_quant, cu_fp8_dequant,
    cu_kv_store, cu_kv_gather,
    cu_index_scores, cu_topk,
    cu_attn_prefill, cu_attn_decode, cu_mla_absorb, cu_mla_unabsorb,
    cu_moe_route,
};

extern "C" sg_backend *
sg_backend_cuda_new(int device, char *err, int errlen)
{
    int          count = 0;
    cudaError_t  e = cudaGetDeviceCount(&count);
    sg_backend  *b;
    cuda_impl   *c;
    cudaDeviceProp prop;

    if (e != cudaSuccess || count == 0) {
        snprintf(err, errlen, "no CUDA device: %s",
                 e != cudaSuccess ? cudaGetErrorString(e)
                                  : "the driver reports no devices");
        cudaGetLastError();
        return NULL;
    }
    if (device < 0 || device >= count) {
        snprintf(err, errlen, "CUDA device %d does not exist (%d device%s)",
                 device, count, count == 1 ? "" : "s");
        return NULL;
    }
    b = (sg_backend *)calloc(1, sizeof(*b));
    c = (cuda_impl *)calloc(1, sizeof(*c));
    if (b == NULL || c == NULL) {
        free(b);
        free(c);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    b->ops = &cuda_ops;
    b->name = "cuda";
    b->n_threads = 1;
    b->mha_max_bytes = 0;   /* every prompt token in the absorbed form */
    b->impl = c;
    c->device = device;
    if ((e = cudaSetDevice(device)) != cudaSuccess
        || (e = cudaGetDeviceProperties(&prop, device)) != cudaSuccess
        || (e = cudaStreamCreateWithFlags(&c->stream,
                                          cudaStreamNonBlocking)) != cudaSuccess)
    {
        snprintf(err, errlen, "CUDA device %d: %s", device,
                 cudaGetErrorString(e));
        op_destroy(b);
        return NULL;
    }
    c->n_sm = prop.multiProcessorCount;
    c->pinned_cap = 16u << 20;
    if (cudaMallocHost((void **)&c->pinned, c->pinned_cap) != cudaSuccess) {
        cudaGetLastError();             /* works without, synchronously */
        c->pinned = NULL;
        c->pinned_cap = 0;
    }
    cublasStatus_t s = cublasCreate(&c->blas);
    if (s != CUBLAS_STATUS_SUCCESS
        || (s = cublasSetStream(c->blas, c->stream)) != CUBLAS_STATUS_SUCCESS
        || (s = cublasSetMathMode(c->blas, CUBLAS_DEFAULT_MATH))
           != CUBLAS_STATUS_SUCCESS)
    {
        snprintf(err, errlen, "CUDA device %d: cuBLAS: %s", device,
                 cublasGetStatusString(s));
        op_destroy(b);
        return NULL;
    }
    if (cu_attention_init(b) != 0) {
        snprintf(err, errlen, "CUDA device %d (%s): %s", device, prop.name,
                 c->err);
        op_destroy(b);
        return NULL;
    }
    return b;
}
