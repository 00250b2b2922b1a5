/*
 * The CUDA backend's row-wise and element-wise ops: norms, activations,
 * row gathers, RoPE, Hadamard, FP8 act_quant, the KV cache store/gather and
 * MoE routing.  Memory-bound kernels: one pass over the data each.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"
#include "model/moe_route.h"

/* ---- reductions --------------------------------------------------------- */

/* Sum over the block (blockDim a multiple of 32, at most 1024). */
__device__ float
block_sum(float v)
{
    __shared__ float part[32];
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;

    v = warp_sum(v);
    __syncthreads();                    /* part[] may hold a previous sum */
    if (lane == 0)
        part[wid] = v;
    __syncthreads();
    v = lane < (int)(blockDim.x >> 5) ? part[lane] : 0.0f;
    return warp_sum(v);
}

/* ---- norms -------------------------------------------------------------- */

__global__ void
k_rmsnorm(const float *x, int x_stride, cu_weight w, float eps, int dim,
          float *out, int out_stride)
{
    const float *xr = x + (int64_t)blockIdx.x * x_stride;
    float       *o = out + (int64_t)blockIdx.x * out_stride;
    float        ss = 0.0f;

    for (int j = threadIdx.x; j < dim; j += blockDim.x)
        ss = fmaf(xr[j], xr[j], ss);
    ss = block_sum(ss);
    float r = 1.0f / sqrtf(ss / (float)dim + eps);
    for (int j = threadIdx.x; j < dim; j += blockDim.x)
        o[j] = xr[j] * r * cu_w_at(w, j, 0);
}

void
cu_rmsnorm(sg_backend *b, const float *x, int x_stride, const sg_tensor *t,
           float eps, int n, int dim, float *out, int out_stride)
{
    cu_enter(b);
    cu_weight w;

    if (n <= 0 || cu_weight_of(b, t, &w))
        return;
    w.cols = 1;                         /* a vector: element j is (j, 0) */
    k_rmsnorm<<<n, 256, 0, cu(b)->stream>>>(x, x_stride, w, eps, dim, out,
                                           out_stride);
    cu_launched(b, "rmsnorm");
}

__global__ void
k_layernorm(const float *x, cu_weight w, cu_weight bias, int has_bias,
            float eps, int dim, float *out)
{
    const float *xr = x + (int64_t)blockIdx.x * dim;
    float       *o = out + (int64_t)blockIdx.x * dim;
    float        s = 0.0f, v = 0.0f;

    for (int j = threadIdx.x; j < dim; j += blockDim.x)
        s += xr[j];
    float mean = block_sum(s) / (float)dim;
    for (int j = threadIdx.x; j < dim; j += blockDim.x) {
        float d = xr[j] - mean;
        v = fmaf(d, d, v);
    }
    float r = 1.0f / sqrtf(block_sum(v) / (float)dim + eps);
    for (int j = threadIdx.x; j < dim; j += blockDim.x) {
        float y = (xr[j] - mean) * r * cu_w_at(w, j, 0);
        o[j] = has_bias ? y + cu_w_at(bias, j, 0) : y;
    }
}

void
cu_layernorm(sg_backend *b, const float *x, const sg_tensor *t,
             const sg_tensor *bias, float eps, int n, int dim, float *out)
{
    cu_enter(b);
    cu_weight w, bw;
    int       has_bias = bias != NULL && bias->data != NULL;

    memset(&bw, 0, sizeof(bw));
    if (n <= 0 || cu_weight_of(b, t, &w)
        || (has_bias && cu_weight_of(b, bias, &bw)))
        return;
    w.cols = 1;
    bw.cols = 1;
    k_layernorm<<<n, 256, 0, cu(b)->stream>>>(x, w, bw, has_bias, eps, dim,
                                             out);
    cu_launched(b, "layernorm");
}

/* ---- element-wise ------------------------------------------------------- */

static unsigned
grid_for(size_t count)
{
    size_t g = (count + 255) / 256;
    return g > 65535 * 8 ? 65535 * 8 : (unsigned)(g ? g : 1);
}

__global__ void
k_add(float *y, const float *x, size_t count)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < count;
         i += (size_t)gridDim.x * blockDim.x)
        y[i] += x[i];
}

void
cu_add(sg_backend *b, float *y, const float *x, size_t count)
{
    cu_enter(b);
    if (count == 0 || cu(b)->failed)
        return;
    k_add<<<grid_for(count), 256, 0, cu(b)->stream>>>(y, x, count);
    cu_launched(b, "add");
}

__global__ void
k_silu_mul(const float *g, const float *u, float *out, size_t count)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < count;
         i += (size_t)gridDim.x * blockDim.x)
        out[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

void
cu_silu_mul(sg_backend *b, const float *gate, const float *up, float *out,
            size_t count)
{
    cu_enter(b);
    if (count == 0 || cu(b)->failed)
        return;
    k_silu_mul<<<grid_for(count), 256, 0, cu(b)->stream>>>(gate, up, out,
                                                          count);
    cu_launched(b, "silu_mul");
}

__global__ void
k_gather_rows(const float *src, const int32_t *idx, int dim, float *dst)
{
    int64_t j = blockIdx.y;
    const float *s = src + (int64_t)idx[j] * dim;

    for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < dim;
         c += gridDim.x * blockDim.x)
        dst[j * dim + c] = s[c];
}

void
cu_gather_rows(sg_backend *b, const float *src, const int32_t *idx, int n,
               int dim, float *dst)
{
    cu_enter(b);
    int32_t *di;

    if (n <= 0 || dim <= 0)
        return;
    di = (int32_t *)cu_scratch(b, sizeof(int32_t) * n);
    if (di == NULL || cu_put(b, di, idx, sizeof(int32_t) * n))
        return;
    for (int j0 = 0; j0 < n; j0 += 65535) {
        int m = n - j0 < 65535 ? n - j0 : 65535;
        k_gather_rows<<<dim3(CU_GRID(dim, 256), m), 256, 0, cu(b)->stream>>>(
            src, di + j0, dim, dst + (size_t)j0 * dim);
    }
    cu_launched(b, "gather_rows");
}

/* in order per column, so repeated targets add up as on the host */
__global__ void
k_scatter_add(float *dst, const int32_t *idx, const float *w, int n, int dim,
              const float *src)
{
    int c = blockIdx.x * blockDim.x + threadIdx.x;

    if (c >= dim)
        return;
    for (int j = 0; j < n; j++)
        dst[(int64_t)idx[j] * dim + c] += w[j] * src[(int64_t)j * dim + c];
}

void
cu_scatter_add_rows(sg_backend *b, float *dst, const int32_t *idx,
                    const float *w, int n, int dim, const float *src)
{
    cu_enter(b);
    char *s;

    if (n <= 0 || dim <= 0)
        return;
    s = (char *)cu_scratch(b, cu_al(sizeof(int32_t) * n) + sizeof(float) * n);
    if (s == NULL || cu_put(b, s, idx, sizeof(int32_t) * n)
        || cu_put(b, s + cu_al(sizeof(int32_t) * n), w, sizeof(float) * n))
        return;
    k_scatter_add<<<CU_GRID(dim, 128), 128, 0, cu(b)->stream>>>(
        dst, (const int32_t *)s, (const float *)(s + cu_al(sizeof(int32_t) * n)),
        n, dim, src);
    cu_launched(b, "scatter_add_rows");
}

/* ---- RoPE --------------------------------------------------------------- */

__global__ void
k_rope(float *x, int n, int heads, int row_stride, int head_stride,
       int offset, const int32_t *pos, const float *cs, int rope_dim,
       int interleaved)
{
    int     half = rope_dim / 2;
    int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;

    if (t >= (int64_t)n * heads * half)
        return;
    int j = (int)(t % half);
    int h = (int)(t / half % heads);
    int i = (int)(t / half / heads);
    float *p = x + (int64_t)i * row_stride + (int64_t)h * head_stride + offset;
    const float *c = cs + ((int64_t)pos[i] * half + j) * 2;
    int a = interleaved ? 2 * j : j, bi = interleaved ? 2 * j + 1 : j + half;
    float x0 = p[a], x1 = p[bi];
    p[a] = x0 * c[0] - x1 * c[1];
    p[bi] = x0 * c[1] + x1 * c[0];
}

void
cu_rope(sg_backend *b, float *x, int n, int heads, int row_stride,
        int head_stride, int offset, const int32_t *pos,
        const sg_rope_table *t, int interleaved)
{
    cu_enter(b);
    int32_t *dp;
    int64_t  count = (int64_t)n * heads * (t->rope_dim / 2);

    if (count <= 0)
        return;
    for (int i = 0; i < n; i++) {
        if (pos[i] < 0 || pos[i] >= t->max_pos) {
            cu_fail(b, "cuda: rope: position %d outside the table (0..%d)",
                    pos[i], t->max_pos - 1);
            return;
        }
    }
    dp = (int32_t *)cu_scratch(b, sizeof(int32_t) * n);
    if (dp == NULL || cu_put(b, dp, pos, sizeof(int32_t) * n))
        return;
    k_rope<<<CU_GRID(count, 256), 256, 0, cu(b)->stream>>>(
        x, n, heads, row_stride, head_stride, offset, dp, t->cos_sin,
        t->rope_dim, interleaved);
    cu_launched(b, "rope");
}

/* ---- Hadamard ----------------------------------------------------------- */

/* Fast Walsh-Hadamard transform of one row in shared memory (natural,
 * i.e. Sylvester, order), then the dim^-0.5 scale. */
__global__ void
k_hadamard(float *x, int dim, float scale)
{
    extern __shared__ float s[];
    float *row = x + (int64_t)blockIdx.x * dim;

    for (int j = threadIdx.x; j < dim; j += blockDim.x)
        s[j] = row[j];
    __syncthreads();
    for (int len = 1; len < dim; len <<= 1) {
        for (int p = threadIdx.x; p < dim / 2; p += blockDim.x) {
            int i = (p / len) * 2 * len + p % len;
            float a = s[i], c = s[i + len];
            s[i] = a + c;
            s[i + len] = a - c;
        }
        __syncthreads();
    }
    for (int j = threadIdx.x; j < dim; j += blockDim.x)
        row[j] = s[j] * scale;
}

void
cu_hadamard(sg_backend *b, float *x, int rows, int dim)
{
    cu_enter(b);
    if (rows <= 0 || cu(b)->failed)
        return;
    if (dim <= 0 || (dim & (dim - 1)) || dim > 8192) {
        cu_fail(b, "cuda: hadamard: dim %d is not a power of two <= 8192", dim);
        return;
    }
    k_hadamard<<<rows, dim < 256 ? (dim + 31) / 32 * 32 : 256,
                 sizeof(float) * dim, cu(b)->stream>>>(
        x, dim, (float)pow((double)dim, -0.5));   /* python's d ** -0.5 */
    cu_launched(b, "hadamard");
}

/* ---- FP8 act_quant ------------------------------------------------------ */

/*
 * One warp per block of 128 values of a row (the last block of a row may be
 * shorter): amax, scale, q, and optionally x' = q * scale.
 */
__global__ void
k_act_quant(const float *x, int rows, int dim, uint8_t *q, float *scale,
            float *xq, int ue8m0)
{
    int     nb = (dim + 127) / 128;
    int64_t blk = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int     lane = threadIdx.x & 31;

    if (blk >= (int64_t)rows * nb)
        return;
    int64_t r = blk / nb;
    int     c0 = (int)(blk % nb) * 128;
    int     len = dim - c0 < 128 ? dim - c0 : 128;
    int64_t base = r * dim + c0;
    float   v[4], amax = 0.0f;
    bool    nan = false;
#pragma unroll
    for (int j = 0; j < 4; j++) {
        int c = lane + 32 * j;
        v[j] = c < len ? x[base + c] : 0.0f;
        amax = fmaxf(amax, fabsf(v[j]));
        nan |= v[j] != v[j];
    }
    /* fmaxf drops NaN: a block holding one gets a NaN scale, as on the CPU */
    float s = __any_sync(0xffffffffu, nan)
              ? CU_NAN_SCALE : cu_act_scale(warp_max(amax), ue8m0);
#pragma unroll
    for (int j = 0; j < 4; j++) {
        int c = lane + 32 * j;
        if (c >= len)
            continue;
        uint8_t o = cu_act_code(v[j], s);
        if (q)
            q[base + c] = o;
        if (xq)
            xq[base + c] = cu_e4m3(o) * s;
    }
    if (scale && lane == 0)
        scale[r * nb + c0 / 128] = s;
}

void
cu_fp8_quant(sg_backend *b, const float *x, int rows, int dim, uint8_t *q,
             float *scale, int ue8m0)
{
    cu_enter(b);
    int64_t nb = (int64_t)rows * ((dim + 127) / 128);

    if (rows <= 0 || dim <= 0 || cu(b)->failed)
        return;
    k_act_quant<<<CU_GRID(nb, 8), 256, 0, cu(b)->stream>>>(x, rows, dim, q,
                                                          scale, NULL, ue8m0);
    cu_launched(b, "fp8_quant");
}

void
cu_act_quant_f32(sg_backend *b, const float *x, int rows, int dim, float *out,
                 int ue8m0)
{
    int64_t nb = (int64_t)rows * ((dim + 127) / 128);

    if (rows <= 0 || dim <= 0 || cu(b)->failed)
        return;
    k_act_quant<<<CU_GRID(nb, 8), 256, 0, cu(b)->stream>>>(x, rows, dim, NULL,
                                                          NULL, out, ue8m0);
    cu_launched(b, "act_quant");
}

__global__ void
k_fp8_dequant(const uint8_t *q, const float *scale, int dim, int64_t count,
              float *out)
{
    int nb = (dim + 127) / 128;

    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
         i < count; i += (int64_t)gridDim.x * blockDim.x)
        out[i] = cu_e4m3(q[i]) * scale[(i / dim) * nb + (i % dim) / 128];
}

void
cu_fp8_dequant(sg_backend *b, const uint8_t *q, const float *scale, int rows,
               int dim, float *out)
{
    cu_enter(b);
    int64_t count = (int64_t)rows * dim;

    if (count <= 0 || cu(b)->failed)
        return;
    k_fp8_dequant<<<grid_for(count), 256, 0, cu(b)->stream>>>(q, scale, dim,
                                                             count, out);
    cu_launched(b, "fp8_dequant");
}

/* ---- KV cache ----------------------------------------------------------- */

/* Row i's slot: block_table[seq[i]][pos / SG_KV_BLOCK]; host side. */
static int
row_slots(sg_backend *b, const sg_kv_pool *pool, const sg_rows *rows,
          int32_t *slots)
{
    for (int i = 0; i < rows->n; i++) {
        int p = rows->pos[i];
        if (p < 0 || p / SG_KV_BLOCK >= rows->max_blocks) {
            cu_fail(b, "cuda: kv: row %d: position %d outside its block "
                    "table (%d blocks)", i, p, rows->max_blocks);
            return -1;
        }
        int blk = rows->block_table[(int64_t)rows->seq[i] * rows->max_blocks
                                    + p / SG_KV_BLOCK];
        if (blk < 0 || blk >= pool->n_blocks) {
            cu_fail(b, "cuda: kv: block id %d outside the pool (%d blocks)",
                    blk, pool->n_blocks);
            return -1;
        }
        slots[i] = blk * SG_KV_BLOCK + p % SG_KV_BLOCK;
    }
    return 0;
}

/* One block per row: the latent (act_quant per 128 when the pool keeps
 * FP8), the RoPE key and the indexer key go to the row's slot. */
__global__ void
k_kv_store(sg_kv_layer L, int kv_lora, int rope, int index_dim, int fp8,
           const int32_t *slots, const float *latent, const float *pe,
           const uint8_t *ikey, const float *ikey_scale, int ue8m0)
{
    int64_t i = blockIdx.x, slot = slots[i];
    int     lane = threadIdx.x & 31, wid = threadIdx.x / 32;
    const float *lat = latent + i * kv_lora;

    if (fp8) {
        uint8_t *q = (uint8_t *)L.latent + slot * kv_lora;
        for (int blk = wid; blk < kv_lora / 128; blk += blockDim.x / 32) {
            float v[4], amax = 0.0f;
            bool  nan = false;
#pragma unroll
            for (int j = 0; j < 4; j++) {
                v[j] = lat[blk * 128 + lane * 4 + j];
                amax = fmaxf(amax, fabsf(v[j]));
                nan |= v[j] != v[j];
            }
            /* as k_act_quant: NaN in, NaN scale and codes out */
            float s = __any_sync(0xffffffffu, nan)
                      ? CU_NAN_SCALE : cu_act_scale(warp_max(amax), ue8m0);
#pragma unroll
            for (int j = 0; j < 4; j++)
                q[blk * 128 + lane * 4 + j] = cu_act_code(v[j], s);
            if (lane == 0)
                L.latent_scale[slot * (kv_lora / 128) + blk] = s;
        }
    } else {
        float *d = (float *)L.latent + slot * kv_lora;
        for (int j = threadIdx.x; j < kv_lora; j += blockDim.x)
            d[j] = lat[j];
    }
    for (int j = threadIdx.x; pe && j < rope; j += blockDim.x)
        L.pe[slot * rope + j] = pe[i * rope + j];
    if (ikey) {
        for (int j = threadIdx.x; j < index_dim; j += blockDim.x)
            L.ikey[slot * index_dim + j] = ikey[i * index_dim + j];
        if (threadIdx.x == 0 && ikey_scale)
            L.ikey_scale[slot] = ikey_scale[i];
    }
}

void
cu_kv_store(sg_backend *b, sg_kv_pool *pool, int layer, const sg_rows *rows,
            const float *latent, const float *pe, const uint8_t *ikey,
            const float *ikey_scale, int ue8m0)
{
    cu_enter(b);
    int32_t *ds, *hs;
    int      n = rows->n;

    if (n <= 0 || cu(b)->failed)
        return;
    if (pool->latent_fp8 && pool->kv_lora % 128 != 0) {
        cu_fail(b, "cuda: kv_store: kv_lora %d is not a multiple of 128",
                pool->kv_lora);
        return;
    }
    hs = (int32_t *)malloc(sizeof(int32_t) * n);
    if (hs == NULL) {
        cu_fail(b, "cuda: kv_store: out of host memory");
        return;
    }
    ds = (int32_t *)cu_scratch(b, sizeof(int32_t) * n);
    if (ds && row_slots(b, pool, rows, hs) == 0
        && cu_put(b, ds, hs, sizeof(int32_t) * n) == 0)
    {
        k_kv_store<<<n, 128, 0, cu(b)->stream>>>(
            pool->layers[layer], pool->kv_lora, pool->rope, pool->index_dim,
            pool->latent_fp8, ds, latent, pe, ikey, ikey_scale, ue8m0);
        cu_launched(b, "kv_store");
    }
    free(hs);
}

__global__ void
k_kv_gather(sg_kv_layer L, int kv_lora, int rope, int fp8,
            const int32_t *table, float *latent, float *pe)
{
    int64_t s = blockIdx.x;
    int64_t slot = (int64_t)table[s / SG_KV_BLOCK] * SG_KV_BLOCK
                   + s % SG_KV_BLOCK;

    for (int j = threadIdx.x; j < kv_lora; j += blockDim.x) {
        latent[s * kv_lora + j] = fp8
            ? cu_e4m3(((const uint8_t *)L.latent)[slot * kv_lora + j])
              * L.latent_scale[slot * (kv_lora / 128) + j / 128]
            : ((const float *)L.latent)[slot * kv_lora + j];
    }
    for (int j = threadIdx.x; pe && j < rope; j += blockDim.x)
        pe[s * rope + j] = L.pe[slot * rope + j];
}

void
cu_kv_gather(sg_backend *b, const sg_kv_pool *pool, int layer,
             const int32_t *block_table, int n_keys, float *latent, float *pe)
{
    cu_enter(b);
    int      nb = (n_keys + SG_KV_BLOCK - 1) / SG_KV_BLOCK;
    int32_t *dt;

    if (n_keys <= 0 || cu(b)->failed)
        return;
    for (int i = 0; i < nb; i++) {
        if (block_table[i] < 0 || block_table[i] >= pool->n_blocks) {
            cu_fail(b, "cuda: kv_gather: block id %d outside the pool",
                    block_table[i]);
            return;
        }
    }
    dt = (int32_t *)cu_scratch(b, sizeof(int32_t) * nb);
    if (dt == NULL || cu_put(b, dt, block_table, sizeof(int32_t) * nb))
        return;
    k_kv_gather<<<n_keys, 128, 0, cu(b)->stream>>>(
        pool->layers[layer], pool->kv_lora, pool->rope, pool->latent_fp8, dt,
        latent, pe);
    cu_launched(b, "kv_gather");
}

/* ---- MoE routing -------------------------------------------------------- */

/*
 * One block per row: sigmoid in parallel, then one thread makes the
 * (small, order-sensitive) selection: group scores = sum of each group's
 * top-2 of s + bias, the topk_group best groups, the top_k experts among
 * them, ties to the lower index; experts ascending with their weights.
 */
__global__ void
k_moe_route(const float *logits, const float *bias, int E, int n_group,
            int topk_group, int top_k, int norm, float route_scale,
            const int32_t *forced, int32_t *experts, float *weights)
{
    extern __shared__ float sm[];
    float *s = sm, *ch = sm + E;
    int64_t i = blockIdx.x;

    for (int e = threadIdx.x; e < E; e += blockDim.x) {
        float l = logits[i * E + e];
        /* CUDA's expf is off by up to 2 ulp where glibc's (the CPU's) is
         * within 0.502: exp in double, rounded once, nearly always gives
         * glibc's float, so near-ties between experts break the same way */
        s[e] = 1.0f / (1.0f + (float)exp(-(double)l));
        ch[e] = s[e] + (bias ? bias[e] : 0.0f);
    }
    __syncthreads();
    if (threadIdx.x != 0)
        return;

    int32_t *ex = experts + i * top_k;
    float   *wt = weights + i * top_k;

    if (n_group > 1 && forced == NULL) {
        /* group scores (top-2 sum with a bias, else the max), the
         * topk_group best groups kept, the others masked */
        int      gs = E / n_group;
        float   *gsc = sm + 2 * E;
        uint32_t keep = 0;
        for (int g = 0; g < n_group; g++) {
            float m1 = -INFINITY, m2 = -INFINITY;
            for (int e = g * gs; e < (g + 1) * gs; e++) {
                if (ch[e] > m1) {
                    m2 = m1;
                    m1 = ch[e];
                } else if (ch[e] > m2) {
                    m2 = ch[e];
                }
            }
            gsc[g] = bias == NULL || gs == 1 ? m1 : m1 + m2;
        }
        for (int t = 0; t < topk_group && t < n_group; t++) {
            int best = -1;
            for (int g = 0; g < n_group; g++) {
                if (!(keep >> g & 1)
                    && (best < 0 || sg_moe_beats(gsc[g], gsc[best])))
                    best = g;
            }
            keep |= 1u << best;
        }
        for (int e = 0; e < E; e++)
            if (!(keep >> (e / gs) & 1))
                ch[e] = -INFINITY;
    }
    if (forced) {
        sg_moe_rank_forced(forced + i * top_k, ch, E, top_k, ex);
    } else {
        for (int j = 0; j < top_k; j++) {
            int best = -1;
            for (int e = 0; e < E; e++) {
                bool taken = false;
                for (int t = 0; t < j; t++)
                    taken |= ex[t] == e;
                if (!taken && (best < 0 || sg_moe_beats(ch[e], ch[best])))
                    best = e;
            }
            ex[j] = best;
        }
    }
    sg_moe_weigh(s, E, top_k, norm, route_scale, ex, wt);
}

void
cu_moe_route(sg_backend *b, const float *logits, const float *bias, int n,
             int n_experts, int n_group, int topk_group, int top_k, int norm,
             float route_scale, const int32_t *forced, int32_t *experts,
             float *weights)
{
    cu_enter(b);
    cuda_impl *c = cu(b);
    size_t     ob = cu_al(sizeof(int32_t) * n * top_k);
    size_t     bb = cu_al(sizeof(float) * n_experts);
    char      *s;

    if (n <= 0)
        return;
    /* defined results even when the device fails (sync reports it) */
    for (int i = 0; i < n * top_k; i++) {
        experts[i] = -1;
        weights[i] = 0.0f;
    }
    if (c->failed)
        return;
    if (n_group > 32 || (n_group > 1 && n_experts % n_group != 0)
        || topk_group > n_group || top_k > n_experts) {
        cu_fail(b, "cuda: moe_route: %d experts in %d groups (keep %d), top "
                "%d: unsupported", n_experts, n_group, topk_group, top_k);
        return;
    }
    s = (char *)cu_scratch(b, 3 * ob + bb);
    if (s == NULL)
        return;
    int32_t *dex = (int32_t *)s, *dforced = (int32_t *)(s + 2 * ob);
    float   *dw = (float *)(s + ob), *dbias = (float *)(s + 3 * ob);
    if ((bias && cu_put(b, dbias, bias, sizeof(float) * n_experts))
        || (forced && cu_put(b, dforced, forced, sizeof(int32_t) * n * top_k)))
        return;
    k_moe_route<<<n, 128, sizeof(float) * (2 * n_experts + 32), c->stream>>>(
        logits, bias ? dbias : NULL, n_experts, n_group, topk_group, top_k,
        norm, route_scale, forced ? dforced : NULL, dex, dw);
    if (cu_launched(b, "moe_route"))
        return;
    /* the caller groups rows by expert on the host */
    if (cu_check(b, cudaMemcpyAsync(experts, dex, sizeof(int32_t) * n * top_k,
                                    cudaMemcpyDeviceToHost, c->stream),
                 "moe_route download")
        || cu_check(b, cudaMemcpyAsync(weights, dw, sizeof(float) * n * top_k,
                                       cudaMemcpyDeviceToHost, c->stream),
                    "moe_route download")
        || cu_check(b, cudaStreamSynchronize(c->stream), "moe_route sync"))
        return;
}
