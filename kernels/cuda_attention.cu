/*
 * The CUDA backend's attention ops: the DSA lightning indexer's scores over
 * the cached FP8 keys, top-k selection (radix select), and MLA attention
 * for prefill (MHA form) and decode (absorbed form, split over keys with a
 * final combine, all heads of a query sharing one gathered KV tile).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"

static int smem_optin;          /* the device's per-block shared memory cap */
/* dynamic shared memory each big kernel may ask for (cap - its static) */
static int limit_index, limit_decode, limit_prefill;

/* The rows' metadata on the device: pos, seq and the block tables. */
typedef struct dev_rows {
    const int32_t *pos, *seq, *table;
    int            max_blocks;
} dev_rows;

__device__ __forceinline__ int64_t
key_slot(const dev_rows &r, int i, int s)
{
    int blk = r.table[(int64_t)r.seq[i] * r.max_blocks + s / SG_KV_BLOCK];
    return (int64_t)blk * SG_KV_BLOCK + s % SG_KV_BLOCK;
}

/* Copies pos, seq and the block tables of `rows` into scratch at `s`
 * (host-checked: blocks inside the pool); returns bytes used or -1. */
static int64_t
put_rows(sg_backend *b, const sg_rows *rows, int n_pool_blocks, char *s,
         dev_rows *d, int count_only)
{
    int     n = rows->n, n_seqs = 0;
    size_t  a = cu_al(sizeof(int32_t) * n);

    for (int i = 0; i < n; i++)
        n_seqs = rows->seq[i] + 1 > n_seqs ? rows->seq[i] + 1 : n_seqs;
    size_t tb = sizeof(int32_t) * (size_t)n_seqs * rows->max_blocks;
    if (count_only)
        return (int64_t)(2 * a + cu_al(tb));
    for (int i = 0; i < n; i++) {
        int nb = rows->pos[i] / SG_KV_BLOCK + 1;
        const int32_t *t = rows->block_table
                           + (int64_t)rows->seq[i] * rows->max_blocks;
        if (rows->pos[i] < 0 || nb > rows->max_blocks) {
            cu_fail(b, "cuda: row %d: position %d outside its block table",
                    i, rows->pos[i]);
            return -1;
        }
        for (int j = 0; j < nb; j++) {
            if (t[j] < 0 || t[j] >= n_pool_blocks) {
                cu_fail(b, "cuda: row %d: block id %d outside the pool", i,
                        t[j]);
                return -1;
            }
        }
    }
    if (cu_put(b, s, rows->pos, sizeof(int32_t) * n)
        || cu_put(b, s + a, rows->seq, sizeof(int32_t) * n)
        || cu_put(b, s + 2 * a, rows->block_table, tb))
        return -1;
    d->pos = (const int32_t *)s;
    d->seq = (const int32_t *)(s + a);
    d->table = (const int32_t *)(s + 2 * a);
    d->max_blocks = rows->max_blocks;
    return (int64_t)(2 * a + cu_al(tb));
}

/* ---- indexer scores ----------------------------------------------------- */

#define IX_D     128    /* index_head_dim */
#define IX_KEYS  64     /* keys per tile */
#define IX_HEADS 64     /* heads per pass */
#define IX_TILES 4      /* tiles per block */

/*
 * scores[i][s] = k_scale[s] * sum_h w[i][h] * relu(q8[i][h] . k8[s]).
 * A block: one query row, IX_TILES tiles of 64 keys; q and k as f32 in
 * shared memory, d-major, each thread a 4 keys x 4 heads register tile.
 */
__global__ void __launch_bounds__(256)
k_index_scores(sg_kv_layer L, dev_rows r, const uint8_t *q8, const float *w,
               int heads, float *scores, int stride)
{
    extern __shared__ float sm[];
    float *qT = sm;                             /* [IX_D][IX_HEADS] */
    float *kT = qT + IX_D * IX_HEADS;           /* [IX_D][IX_KEYS] */
    float *red = kT + IX_D * IX_KEYS;           /* [16][IX_KEYS] */
    float *ws = red + 16 * IX_KEYS;             /* [IX_HEADS] */
    int    i = blockIdx.y, t = threadIdx.x;
    int    kg = t % 16, hg = t / 16;
    int    pos = r.pos[i];
    int    n_chunks = (heads + IX_HEADS - 1) / IX_HEADS;
    float *out = scores + (int64_t)i * stride;

    for (int tile = 0; tile < IX_TILES; tile++) {
        int s0 = (blockIdx.x * IX_TILES + tile) * IX_KEYS;
        if (s0 >= stride)
            break;
        if (s0 > pos) {
            for (int j = t; j < IX_KEYS; j += blockDim.x)
                if (s0 + j < stride)
                    out[s0 + j] = -INFINITY;
            continue;
        }
        /* keys of the tile, e4m3 -> f32, d-major; 32 bytes per thread */
        {
            int key = t / 4, part = t % 4, s = s0 + key;
            uint4 u[2] = {};
            if (s <= pos) {
                const uint4 *src = (const uint4 *)(L.ikey + key_slot(r, i, s)
                                                   * IX_D + part * 32);
                u[0] = src[0];
                u[1] = src[1];
            }
            const uint8_t *bytes = (const uint8_t *)u;
#pragma unroll
            for (int j = 0; j < 32; j++)
                kT[(part * 32 + j) * IX_KEYS + key] = cu_e4m3(bytes[j]);
        }
        float total = 0.0f;             /* thread t < IX_KEYS: key t */
        for (int hc = 0; hc < n_chunks; hc++) {
            int h0 = hc * IX_HEADS;
            __syncthreads();            /* qT/red reuse */
            if (tile == 0 || n_chunks > 1) {
                for (int e = t; e < IX_HEADS * IX_D; e += blockDim.x) {
                    int h = e / IX_D, d = e % IX_D;
                    qT[d * IX_HEADS + h] = h0 + h < heads
                        ? cu_e4m3(q8[((int64_t)i * heads + h0 + h) * IX_D + d])
                        : 0.0f;
                }
                for (int h = t; h < IX_HEADS; h += blockDim.x)
                    ws[h] = h0 + h < heads ? w[(int64_t)i * heads + h0 + h]
                                           : 0.0f;
            }
            __syncthreads();
            float acc[4][4] = {};
#pragma unroll 4
            for (int d = 0; d < IX_D; d++) {
                float4 kv = *(const float4 *)&kT[d * IX_KEYS + kg * 4];
                float4 qv = *(const float4 *)&qT[d * IX_HEADS + hg * 4];
                float kk[4] = { kv.x, kv.y, kv.z, kv.w };
                float qq[4] = { qv.x, qv.y, qv.z, qv.w };
#pragma unroll
                for (int a = 0; a < 4; a++)
#pragma unroll
                    for (int c = 0; c < 4; c++)
                        acc[a][c] = fmaf(kk[a], qq[c], acc[a][c]);
            }
#pragma unroll
            for (int a = 0; a < 4; a++) {
                float p = 0.0f;
#pragma unroll
                for (int c = 0; c < 4; c++)
                    p += ws[hg * 4 + c] * fmaxf(acc[a][c], 0.0f);
                red[hg * IX_KEYS + kg * 4 + a] = p;
            }
            __syncthreads();
            if (t < IX_KEYS) {
                for (int g = 0; g < 16; g++)    /* heads in order */
                    total += red[g * IX_KEYS + t];
            }
        }
        if (t < IX_KEYS && s0 + t < stride) {
            int s = s0 + t;
            out[s] = s <= pos ? total * L.ikey_scale[key_slot(r, i, s)]
                              : -INFINITY;
        }
        __syncthreads();                /* kT reuse */
    }
}

/*
 * The same scores on the tensor cores.  Default (FP8 = false): e4m3 ->
 * bf16 is exact, so bf16 mma.sync (m16n8k16, f32 accumulation) computes
 * the e4m3 dot products with exact products, as the f32 version does.
 * FP8 = true (SG_CUDA_INDEX_FP8=1, opt-in): the e4m3 codes go to the FP8
 * tensor cores as they are (mma.sync m16n8k32 e4m3, f32 accumulation),
 * no conversion and half the shared memory traffic; Hopper's FP8 tensor
 * cores keep fewer accumulator bits (DeepSeek-V3 reports ~14), so scores
 * may differ from the CPU's in the last bits and near-tied top-k entries
 * flip: not the default while the model checks compare sets exactly.
 * Warp w: 16 heads (w % 4) x 32 keys (w / 4) of a 64 x 64 tile; rows
 * padded to 4 mod 32 words so that fragment loads hit 32 distinct banks.
 * The m16n8k32 fragments of 8-bit types sit at the same 32-bit word
 * offsets as m16n8k16's of 16-bit types (a0/a1 rows g/g + 8, a2/a3 four
 * words on; b0/b1 likewise), so one body serves both.
 */
#define IXM_STR 68      /* 32-bit words per padded row: 128 bf16 */
#define IXF_STR 36      /* 32-bit words per padded row: 128 e4m3 */

__device__ __forceinline__ uint32_t
e4m3x2_bf16(uint8_t lo, uint8_t hi)
{
    return (__float_as_uint(cu_e4m3(lo)) >> 16)
           | (__float_as_uint(cu_e4m3(hi)) & 0xffff0000u);
}

__device__ __forceinline__ void
mma_bf16(float *c, uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
         uint32_t b0, uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void
mma_e4m3(float *c, uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
         uint32_t b0, uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

template <bool FP8>
__global__ void __launch_bounds__(256)
k_index_scores_mma(sg_kv_layer L, dev_rows r, const uint8_t *q8,
                   const float *w, int heads, float *scores, int stride)
{
    constexpr int STR = FP8 ? IXF_STR : IXM_STR;
    constexpr int WORDS = FP8 ? IX_D / 4 : IX_D / 2;   /* per row */
    __shared__ uint32_t qs[IX_HEADS * STR];
    __shared__ uint32_t ks[IX_KEYS * STR];
    __shared__ float    red[4 * IX_KEYS];
    __shared__ float    ws[IX_HEADS];
    int    i = blockIdx.y, t = threadIdx.x, lane = t & 31, wid = t >> 5;
    int    g = lane >> 2, tig = lane & 3, mt = wid & 3, nh = wid >> 2;
    int    pos = r.pos[i];
    int    n_chunks = (heads + IX_HEADS - 1) / IX_HEADS;
    float *out = scores + (int64_t)i * stride;

    for (int tile = 0; tile < IX_TILES; tile++) {
        int s0 = (blockIdx.x * IX_TILES + tile) * IX_KEYS;
        if (s0 >= stride)
            break;
        if (s0 > pos) {
            for (int j = t; j < IX_KEYS; j += blockDim.x)
                if (s0 + j < stride)
                    out[s0 + j] = -INFINITY;
            continue;
        }
        {
            int key = t / 4, part = t % 4, s = s0 + key;
            uint4 u[2] = {};
            if (s <= pos) {
                const uint4 *src = (const uint4 *)(L.ikey + key_slot(r, i, s)
                                                   * IX_D + part * 32);
                u[0] = src[0];
                u[1] = src[1];
            }
            if (FP8) {
                const uint32_t *words = (const uint32_t *)u;
#pragma unroll
                for (int j = 0; j < 8; j++)
                    ks[key * STR + part * 8 + j] = words[j];
            } else {
                const uint8_t *bytes = (const uint8_t *)u;
#pragma unroll
                for (int j = 0; j < 16; j++)
                    ks[key * STR + part * 16 + j] =
                        e4m3x2_bf16(bytes[2 * j], bytes[2 * j + 1]);
            }
        }
        float total = 0.0f;             /* thread t < IX_KEYS: key t */
        for (int hc = 0; hc < n_chunks; hc++) {
            int h0 = hc * IX_HEADS;
            __syncthreads();            /* qs/red reuse, ks written */
            if (tile == 0 || n_chunks > 1) {
                for (int e = t; e < IX_HEADS * WORDS; e += blockDim.x) {
                    int h = e / WORDS, wd = e % WORDS;
                    const uint8_t *qr = q8 + ((int64_t)i * heads + h0 + h)
                                             * IX_D;
                    uint32_t v = 0u;
                    if (h0 + h < heads)
                        v = FP8 ? ((const uint32_t *)qr)[wd]
                                : e4m3x2_bf16(qr[2 * wd], qr[2 * wd + 1]);
                    qs[h * STR + wd] = v;
                }
                for (int h = t; h < IX_HEADS; h += blockDim.x)
                    ws[h] = h0 + h < heads ? w[(int64_t)i * heads + h0 + h]
                                           : 0.0f;
            }
            __syncthreads();
            float c[4][4] = {};
            const uint32_t *qa = qs + (mt * 16 + g) * STR + tig;
#pragma unroll
            for (int kw = 0; kw < WORDS; kw += 8) {
                uint32_t a0 = qa[kw], a1 = qa[8 * STR + kw];
                uint32_t a2 = qa[kw + 4], a3 = qa[8 * STR + kw + 4];
#pragma unroll
                for (int nt = 0; nt < 4; nt++) {
                    const uint32_t *kb = ks + (nh * 32 + nt * 8 + g) * STR
                                         + tig + kw;
                    if (FP8)
                        mma_e4m3(c[nt], a0, a1, a2, a3, kb[0], kb[4]);
                    else
                        mma_bf16(c[nt], a0, a1, a2, a3, kb[0], kb[4]);
                }
            }
            float wa = ws[mt * 16 + g], wb = ws[mt * 16 + g + 8];
#pragma unroll
            for (int nt = 0; nt < 4; nt++) {
                float pa = wa * fmaxf(c[nt][0], 0.0f)
                           + wb * fmaxf(c[nt][2], 0.0f);
                float pb = wa * fmaxf(c[nt][1], 0.0f)
                           + wb * fmaxf(c[nt][3], 0.0f);
                for (int o = 4; o < 32; o <<= 1) {      /* over the heads */
                    pa += __shfl_xor_sync(0xffffffffu, pa, o);
                    pb += __shfl_xor_sync(0xffffffffu, pb, o);
                }
                if (g == 0) {
                    int key = nh * 32 + nt * 8 + tig * 2;
                    red[mt * IX_KEYS + key] = pa;
                    red[mt * IX_KEYS + key + 1] = pb;
                }
            }
            __syncthreads();
            if (t < IX_KEYS)
                total += red[t] + red[IX_KEYS + t] + red[2 * IX_KEYS + t]
                         + red[3 * IX_KEYS + t];
        }
        if (t < IX_KEYS && s0 + t < stride) {
            int s = s0 + t;
            out[s] = s <= pos ? total * L.ikey_scale[key_slot(r, i, s)]
                              : -INFINITY;
        }
        __syncthreads();                /* ks reuse */
    }
}

static int use_fma_only;        /* SG_CUDA_FMA=1: the f32 FMA kernels */

void
cu_set_fma_only(int on)
{
    use_fma_only = on;
}

static size_t
index_smem(void)
{
    return sizeof(float) * (IX_D * IX_HEADS + IX_D * IX_KEYS + 16 * IX_KEYS
                            + IX_HEADS);
}

void
cu_index_scores(sg_backend *b, const sg_kv_pool *pool, int layer,
                const sg_rows *rows, const uint8_t *q8, const float *w,
                int heads, float *scores, int scores_stride)
{
    cu_enter(b);
    cuda_impl *c = cu(b);
    dev_rows   d;
    char      *s;
    int        n = rows->n;

    /* no columns: nothing to write (a zero-sized grid fails to launch) */
    if (n <= 0 || scores_stride <= 0 || c->failed)
        return;
    if (pool->index_dim != IX_D) {
        cu_fail(b, "cuda: index_scores: index_dim %d (the kernel needs %d)",
                pool->index_dim, IX_D);
        return;
    }
    s = (char *)cu_scratch(b, (size_t)put_rows(b, rows, 0, NULL, &d, 1));
    if (s == NULL || put_rows(b, rows, pool->n_blocks, s, &d, 0) < 0)
        return;
    for (int y0 = 0; y0 < n; y0 += 65535) {
        int m = n - y0 < 65535 ? n - y0 : 65535;
        dev_rows dr = d;
        dr.pos += y0;
        dr.seq += y0;
        dim3 grid(CU_GRID(scores_stride, IX_KEYS * IX_TILES), m);
        if (use_fma_only)
            k_index_scores<<<grid, 256, index_smem(), c->stream>>>(
                pool->layers[layer], dr, q8 + (size_t)y0 * heads * IX_D,
                w + (size_t)y0 * heads, heads,
                scores + (size_t)y0 * scores_stride, scores_stride);
        else
            (c->index_fp8 ? k_index_scores_mma<true>
                          : k_index_scores_mma<false>)<<<grid, 256, 0,
                                                         c->stream>>>(
                pool->layers[layer], dr, q8 + (size_t)y0 * heads * IX_D,
                w + (size_t)y0 * heads, heads,
                scores + (size_t)y0 * scores_stride, scores_stride);
    }
    cu_launched(b, "index_scores");
}

/* ---- top-k -------------------------------------------------------------- */

/* Order-preserving map of a float to an unsigned key (-0 counts as +0,
 * NaN ranks with -inf as on the CPU). */
__device__ __forceinline__ uint32_t
float_key(float f)
{
    uint32_t u = __float_as_uint(f != f ? -INFINITY : f + 0.0f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/* Exclusive prefix count of `flag` over the block (1024 threads, index
 * order), and the block's total. */
__device__ __forceinline__ int
block_count(bool flag, int *total, int *warp_tot)
{
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    unsigned m = __ballot_sync(0xffffffffu, flag);
    int before = __popc(m & ((1u << lane) - 1));

    __syncthreads();
    if (lane == 0)
        warp_tot[wid] = __popc(m);
    __syncthreads();
    if (threadIdx.x == 0) {
        int acc = 0;
        for (int w = 0; w < (int)(blockDim.x >> 5); w++) {
            int v = warp_tot[w];
            warp_tot[w] = acc;
            acc += v;
        }
        warp_tot[32] = acc;
    }
    __syncthreads();
    *total = warp_tot[32];
    return warp_tot[wid] + before;
}

/*
 * One block per row: radix select of the k-th largest key (4 passes of 8
 * bits over the row), then one ordered pass that writes the indices above
 * it and the lowest-indexed ones equal to it, ascending.
 */
__global__ void __launch_bounds__(1024)
k_topk(const float *scores, int stride, const int32_t *lens, int k,
       int32_t *idx)
{
    __shared__ int      hist[256];
    __shared__ int      warp_tot[33];
    __shared__ uint32_t sh_prefix;
    __shared__ int      sh_remaining;
    const float *row = scores + (int64_t)blockIdx.x * stride;
    int32_t     *out = idx + (int64_t)blockIdx.x * k;
    int          len = lens[blockIdx.x] < stride ? lens[blockIdx.x] : stride;
    int          kk = len < k ? len : k;
    uint32_t     prefix = 0, mask = 0;

    if (len < 0)
        len = kk = 0;
    if (threadIdx.x == 0) {
        sh_prefix = 0;
        sh_remaining = kk;
    }
    __syncthreads();
    for (int pass = 0; pass < 4 && kk > 0; pass++) {
        int shift = 24 - 8 * pass;
        for (int j = threadIdx.x; j < 256; j += blockDim.x)
            hist[j] = 0;
        __syncthreads();
        for (int e = threadIdx.x; e < len; e += blockDim.x) {
            uint32_t u = float_key(row[e]);
            if ((u & mask) == prefix)
                atomicAdd(&hist[(u >> shift) & 255], 1);
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            int rem = sh_remaining, cum = 0, bin = 255;
            for (; bin > 0; bin--) {
                if (cum + hist[bin] >= rem)
                    break;
                cum += hist[bin];
            }
            sh_remaining = rem - cum;
            sh_prefix = prefix | (uint32_t)bin << shift;
        }
        __syncthreads();
        prefix = sh_prefix;
        mask |= 255u << shift;
    }
    int need_eq = sh_remaining;         /* ties taken, lowest index first */
    int eq_base = 0, sel_base = 0;

    for (int base = 0; base < len; base += blockDim.x) {
        int  e = base + threadIdx.x;
        uint32_t u = e < len ? float_key(row[e]) : 0;
        bool gt = e < len && u > prefix, eq = e < len && u == prefix;
        int  eq_tot, sel_tot;
        int  eq_rank = eq_base + block_count(eq, &eq_tot, warp_tot);
        bool sel = gt || (eq && eq_rank < need_eq);
        int  at = sel_base + block_count(sel, &sel_tot, warp_tot);
        if (sel && at < kk)
            out[at] = e;
        eq_base += eq_tot;
        sel_base += sel_tot;
    }
    for (int j = kk + threadIdx.x; j < k; j += blockDim.x)
        out[j] = -1;
}

void
cu_topk(sg_backend *b, const float *scores, int n, int stride,
        const int32_t *len, int k, int32_t *idx)
{
    cu_enter(b);
    cuda_impl *c = cu(b);
    size_t     lb = cu_al(sizeof(int32_t) * n);
    char      *s;

    if (n <= 0 || k <= 0)
        return;
    for (int i = 0; i < n * k; i++)
        idx[i] = -1;                    /* defined even on device failure */
    if (c->failed)
        return;
    s = (char *)cu_scratch(b, lb + sizeof(int32_t) * (size_t)n * k);
    if (s == NULL || cu_put(b, s, len, sizeof(int32_t) * n))
        return;
    int32_t *didx = (int32_t *)(s + lb);
    k_topk<<<n, 1024, 0, c->stream>>>(scores, stride, (const int32_t *)s, k,
                                      didx);
    if (cu_launched(b, "topk"))
        return;
    /* the top-k sets are host metadata for the attention ops */
    if (cu_check(b, cudaMemcpyAsync(idx, didx, sizeof(int32_t) * n * k,
                                    cudaMemcpyDeviceToHost, c->stream),
                 "topk download") == 0)
        cu_check(b, cudaStreamSynchronize(c->stream), "topk sync");
}

/* ---- prefill attention (MHA form) --------------------------------------- */

#define PF_KEYS 32

static_assert(SG_PREFILL_KEY_ALIGN % PF_KEYS == 0,
              "a key range starts on a tile");

/*
 * One block (128 threads) per (row, head): tiles of 32 keys of the row's
 * set in shared memory, online softmax in warp 0, each thread up to four
 * output columns.  Keys [k0, k0 + n_keys) (kv row j = key k0 + j); with ml
 * the row's max and denominator come from ml and its unnormalised output
 * from out when k0 > 0, and go back there when its position lies past the
 * range (see backend.h).
 */
__global__ void __launch_bounds__(128)
k_attn_prefill(const float *q, const float *kv, const float *pe, int k0,
               int n_keys, const int32_t *pos, const int32_t *sel, int k,
               int heads, int nope, int rope, int v, float scale, float *ml,
               float *out)
{
    extern __shared__ float sm[];
    int    qk = nope + rope, kst = qk + 1;
    float *qs = sm;                             /* [qk] */
    float *ks = qs + qk;                        /* [PF_KEYS][qk + 1] */
    float *vs = ks + PF_KEYS * kst;             /* [PF_KEYS][v] */
    float *part = vs + PF_KEYS * v;             /* [4][PF_KEYS] */
    float *pr = part + 4 * PF_KEYS;             /* [PF_KEYS] p, then alpha */
    __shared__ int keys[PF_KEYS];
    __shared__ float alpha_s;
    int   i = blockIdx.x / heads, h = blockIdx.x % heads, t = threadIdx.x;
    int   p = pos[i] - k0, nlist = sel ? k : (p + 1 < n_keys ? p + 1 : n_keys);
    int   kvw = nope + v;
    int   carry = ml != NULL && pos[i] >= k0 + n_keys;
    float m = -INFINITY, l = 0.0f, acc[4] = {};
    float *o = out + ((int64_t)i * heads + h) * v;

    if (p < 0 && k0 > 0)
        return;                         /* the row ended in an earlier range */
    if (k0 > 0) {
        m = ml[((int64_t)i * heads + h) * 2];
        l = ml[((int64_t)i * heads + h) * 2 + 1];
#pragma unroll
        for (int j = 0; j < 4; j++)
            if (t + 128 * j < v)
                acc[j] = o[t + 128 * j];
    }
    for (int d = t; d < qk; d += blockDim.x)
        qs[d] = q[((int64_t)i * heads + h) * qk + d];
    for (int j0 = 0; j0 < nlist; j0 += PF_KEYS) {
        __syncthreads();
        if (t < PF_KEYS) {
            int j = j0 + t, s = -1;
            if (j < nlist) {
                s = sel ? sel[(int64_t)i * k + j] : j;
                if (s < 0 || s > p || s >= n_keys)
                    s = -1;
            }
            keys[t] = s;
        }
        __syncthreads();
        for (int e = t; e < PF_KEYS * (qk + v); e += blockDim.x) {
            int key = e / (qk + v), d = e % (qk + v), s = keys[key];
            float val = 0.0f;
            if (s >= 0) {
                if (d < nope)
                    val = kv[((int64_t)s * heads + h) * kvw + d];
                else if (d < qk)
                    val = pe[(int64_t)s * rope + d - nope];
                else
                    val = kv[((int64_t)s * heads + h) * kvw + nope + d - qk];
            }
            if (d < qk)
                ks[key * kst + d] = val;
            else
                vs[key * v + d - qk] = val;
        }
        __syncthreads();
        {
            int key = t % PF_KEYS, q4 = t / PF_KEYS;
            int d0 = q4 * qk / 4, d1 = (q4 + 1) * qk / 4;
            float sdot = 0.0f;
            for (int d = d0; d < d1; d++)
                sdot = fmaf(qs[d], ks[key * kst + d], sdot);
            part[q4 * PF_KEYS + key] = sdot;
        }
        __syncthreads();
        if (t < 32) {
            float sc = keys[t] >= 0
                ? (part[t] + part[PF_KEYS + t] + part[2 * PF_KEYS + t]
                   + part[3 * PF_KEYS + t]) * scale
                : -INFINITY;
            float mn = fmaxf(m, warp_max(sc));
            float pv = sc == -INFINITY ? 0.0f : expf(sc - mn);
            float al = m == -INFINITY ? 0.0f : expf(m - mn);
            l = l * al + warp_sum(pv);
            m = mn;
            pr[t] = pv;
            if (t == 0)
                alpha_s = al;
        }
        __syncthreads();
        float al = alpha_s;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            int c = t + 128 * j;
            if (c < v) {
                float a = acc[j] * al;
                for (int key = 0; key < PF_KEYS; key++)
                    a = fmaf(pr[key], vs[key * v + c], a);
                acc[j] = a;
            }
        }
    }
    __shared__ float l_s;
    if (t == 0) {
        l_s = l;
        if (carry) {                    /* warp 0 holds m and l */
            ml[((int64_t)i * heads + h) * 2] = m;
            ml[((int64_t)i * heads + h) * 2 + 1] = l;
        }
    }
    __syncthreads();
    float inv = carry ? 1.0f : l_s > 0.0f ? 1.0f / l_s : 0.0f;
#pragma unroll
    for (int j = 0; j < 4; j++) {
        int c = t + 128 * j;
        if (c < v)
            o[c] = acc[j] * inv;
    }
}

void
cu_attn_prefill(sg_backend *b, const float *q, const float *kv,
                const float *pe, int k0, int n_keys, const sg_rows *rows,
                const int32_t *sel, int k, int heads, int nope, int rope,
                int v, float scale, float *ml, float *out)
{
    cu_enter(b);
    cuda_impl *c = cu(b);
    int        n = rows->n, qk = nope + rope;
    size_t     pb = cu_al(sizeof(int32_t) * n);
    size_t     smem = sizeof(float) * (qk + PF_KEYS * (qk + 1) + PF_KEYS * v
                                       + 5 * PF_KEYS);
    char      *s;

    /* no heads: nothing to write (a zero-sized grid fails to launch) */
    if (n <= 0 || heads <= 0 || c->failed)
        return;
    if (v > 512 || smem > (size_t)limit_prefill) {
        cu_fail(b, "cuda: attn_prefill: head dims %d+%d/%d too large", nope,
                rope, v);
        return;
    }
    s = (char *)cu_scratch(b, pb + (sel ? sizeof(int32_t) * (size_t)n * k : 0));
    if (s == NULL || cu_put(b, s, rows->pos, sizeof(int32_t) * n)
        || (sel && cu_put(b, s + pb, sel, sizeof(int32_t) * (size_t)n * k)))
        return;
    k_attn_prefill<<<n * heads, 128, smem, c->stream>>>(
        q, kv, pe, k0, n_keys, (const int32_t *)s,
        sel ? (const int32_t *)(s + pb) : NULL, k, heads, nope, rope, v, scale,
        ml, out);
    cu_launched(b, "attn_prefill");
}

/* ---- decode attention (absorbed form) ----------------------------------- */

#define DC_HEADS 32     /* heads per block */
#define DC_KEYS  32     /* keys per tile */
#define DC_ACC   64     /* kv_lora / 8 columns per thread, at most */

/*
 * Block (256 threads) = (row, group of 32 heads, split of the key list).
 * Per tile of 32 keys the latent (dequantized) and RoPE key go to shared
 * memory once and serve all the group's heads: scores (each thread a key
 * x 4 heads), online softmax (a warp per 4 heads), then each thread
 * accumulates 1/8 of the latent columns of one head.  With one split the
 * block writes the output, else partial (m, l, acc) for k_decode_combine.
 */
__global__ void __launch_bounds__(256)
k_attn_decode(sg_kv_layer L, dev_rows r, int kv_lora, int rope, int fp8,
              const float *q_lat, const float *q_pe, const int32_t *sel,
              int k, int heads, float scale, int tiles_per_split,
              int n_splits, float *part, float *out)
{
    extern __shared__ float sm[];
    int    D = kv_lora + rope, kst = D + 1;
    float *qs = sm;                             /* [DC_HEADS][D] */
    float *ks = qs + DC_HEADS * D;              /* [DC_KEYS][D + 1] */
    float *sc = ks + DC_KEYS * kst;             /* [DC_HEADS][DC_KEYS] */
    float *alpha = sc + DC_HEADS * DC_KEYS;     /* [DC_HEADS] */
    float *ls = alpha + DC_HEADS;               /* [DC_HEADS] */
    float *ms = ls + DC_HEADS;                  /* [DC_HEADS] */
    __shared__ int64_t slots[DC_KEYS];
    int    i = blockIdx.x, h0 = blockIdx.y * DC_HEADS, split = blockIdx.z;
    int    t = threadIdx.x, lane = t & 31, wid = t >> 5;
    int    p = r.pos[i], nlist = sel ? k : p + 1;
    int    j_begin = split * tiles_per_split * DC_KEYS;
    int    j_end = min(nlist, j_begin + tiles_per_split * DC_KEYS);
    int    ah = t / 8, ac = t % 8;              /* accumulate: head, cols */
    int    ncol = kv_lora / 8;
    float  acc[DC_ACC];

#pragma unroll
    for (int j = 0; j < DC_ACC; j++)
        acc[j] = 0.0f;
    for (int e = t; e < DC_HEADS * D; e += blockDim.x) {
        int hl = e / D, d = e % D, h = h0 + hl;
        float val = 0.0f;
        if (h < heads)
            val = d < kv_lora ? q_lat[((int64_t)i * heads + h) * kv_lora + d]
                              : q_pe[((int64_t)i * heads + h) * rope + d
                                     - kv_lora];
        qs[e] = val;
    }
    if (t < DC_HEADS) {
        ms[t] = -INFINITY;
        ls[t] = 0.0f;
    }
    for (int j0 = j_begin; j0 < j_end; j0 += DC_KEYS) {
        __syncthreads();
        if (t < DC_KEYS) {
            int j = j0 + t, s = -1;
            if (j < j_end) {
                s = sel ? sel[(int64_t)i * k + j] : j;
                if (s > p)
                    s = -1;
            }
            slots[t] = s >= 0 ? key_slot(r, i, s) : -1;
        }
        __syncthreads();
        for (int e = t; e < DC_KEYS * D; e += blockDim.x) {
            int key = e / D, d = e % D;
            int64_t slot = slots[key];
            float val = 0.0f;
            if (slot >= 0) {
                if (d >= kv_lora)
                    val = L.pe[slot * rope + d - kv_lora];
                else if (fp8)
                    val = cu_e4m3(((const uint8_t *)L.latent)[slot * kv_lora
                                                               + d])
                          * L.latent_scale[slot * (kv_lora / 128) + d / 128];
                else
                    val = ((const float *)L.latent)[slot * kv_lora + d];
            }
            ks[key * kst + d] = val;
        }
        __syncthreads();
        {
            int key = lane, hb = wid * 4;
            float s4[4] = {};
            const float *kr = ks + key * kst;
            for (int d = 0; d < D; d++) {
                float kvv = kr[d];
#pragma unroll
                for (int a = 0; a < 4; a++)
                    s4[a] = fmaf(qs[(hb + a) * D + d], kvv, s4[a]);
            }
#pragma unroll
            for (int a = 0; a < 4; a++)
                sc[(hb + a) * DC_KEYS + key] = slots[key] >= 0
                                               ? s4[a] * scale : -INFINITY;
        }
        __syncthreads();
#pragma unroll
        for (int a = 0; a < 4; a++) {
            int   h = wid * 4 + a;
            float sv = sc[h * DC_KEYS + lane];
            float mo = ms[h], mn = fmaxf(mo, warp_max(sv));
            float pv = sv == -INFINITY ? 0.0f : expf(sv - mn);
            float al = mo == -INFINITY ? 0.0f : expf(mo - mn);
            float sum = warp_sum(pv);
            sc[h * DC_KEYS + lane] = pv;
            __syncwarp();
            if (lane == 0) {
                alpha[h] = al;
                ls[h] = ls[h] * al + sum;
                ms[h] = mn;
            }
        }
        __syncthreads();
        {
            float al = alpha[ah];
            const float *pr = sc + ah * DC_KEYS;
#pragma unroll
            for (int j = 0; j < DC_ACC; j++)
                acc[j] *= al;
            for (int key = 0; key < DC_KEYS; key++) {
                float pv = pr[key];
                if (pv == 0.0f)
                    continue;
                const float *kr = ks + key * kst + ac;
#pragma unroll
                for (int j = 0; j < DC_ACC; j++)
                    if (j < ncol)
                        acc[j] = fmaf(pv, kr[8 * j], acc[j]);
            }
        }
    }
    __syncthreads();
    int h = h0 + ah;
    if (h >= heads)
        return;
    if (n_splits == 1) {
        float inv = ls[ah] > 0.0f ? 1.0f / ls[ah] : 0.0f;
        float *o = out + ((int64_t)i * heads + h) * kv_lora;
#pragma unroll
        for (int j = 0; j < DC_ACC; j++)
            if (j < ncol)
                o[ac + 8 * j] = acc[j] * inv;
        return;
    }
    float *pp = part + (((int64_t)i * heads + h) * n_splits + split)
                       * (kv_lora + 2);
    if (ac == 0) {
        pp[0] = ms[ah];
        pp[1] = ls[ah];
    }
#pragma unroll
    for (int j = 0; j < DC_ACC; j++)
        if (j < ncol)
            pp[2 + ac + 8 * j] = acc[j];
}

/*
 * The same decode attention on the tensor cores, for an FP8 latent pool
 * with kv_lora a multiple of 128, at most 512.  The mma runs on the raw
 * e4m3 codes (exact in bf16) and the per-128 block scales are applied
 * outside it, so the cache is never rounded:
 *   q . latent[s] = sum_b scale[s][b] * (q_b . code_b[s])
 *   out[h][c]     = sum_s (p[h][s] * scale[s][c/128]) * code[s][c]
 * The f32 operands (q, p * scale) go in as hi + lo bf16 halves (two mma
 * each), ~2^-17 relative; the RoPE part stays in f32 FMA.  Warp w: M-tile
 * (16 heads) w & 1; scores for keys 8 * (w >> 1) of the 32-key tile, the
 * output for the 128-column block w >> 1.
 */
__device__ __forceinline__ void
split_bf16x2(float x0, float x1, uint32_t *hi, uint32_t *lo)
{
    uint32_t h0 = __float_as_uint(x0) + 0x7fffu
                  + ((__float_as_uint(x0) >> 16) & 1);
    uint32_t h1 = __float_as_uint(x1) + 0x7fffu
                  + ((__float_as_uint(x1) >> 16) & 1);
    h0 &= 0xffff0000u;
    h1 &= 0xffff0000u;
    float r0 = x0 - __uint_as_float(h0), r1 = x1 - __uint_as_float(h1);
    uint32_t l0 = __float_as_uint(r0) + 0x7fffu
                  + ((__float_as_uint(r0) >> 16) & 1);
    uint32_t l1 = __float_as_uint(r1) + 0x7fffu
                  + ((__float_as_uint(r1) >> 16) & 1);
    *hi = (h0 >> 16) | h1;
    *lo = (l0 >> 16) | (l1 & 0xffff0000u);
}

#define DM_RS 33        /* score row stride (floats) */

__global__ void __launch_bounds__(256)
k_attn_decode_mma(sg_kv_layer L, dev_rows r, int kv_lora, int rope,
                  const float *q_lat, const float *q_pe, const int32_t *sel,
                  int k, int heads, float scale, int tiles_per_split,
                  int n_splits, float *part, float *out)
{
    extern __shared__ uint32_t smu[];
    int       W = kv_lora / 2 + 4, nblk = kv_lora / 128, RP = rope + 1;
    uint32_t *qhi = smu;                        /* [32 heads][W] */
    uint32_t *qlo = qhi + 32 * W;               /* [32 heads][W] */
    uint32_t *kc = qlo + 32 * W;                /* [32 keys][W] codes */
    float    *qpe = (float *)(kc + 32 * W);     /* [32 heads][RP] */
    float    *kpe = qpe + 32 * RP;              /* [32 keys][RP] */
    float    *ksc = kpe + 32 * RP;              /* [32 keys][4] */
    float    *sc = ksc + 32 * 4;                /* [32 heads][DM_RS] */
    float    *alpha = sc + 32 * DM_RS;          /* [32] */
    float    *ls = alpha + 32, *ms = ls + 32;   /* [32] each */
    __shared__ int64_t slots[32];
    int i = blockIdx.x, h0 = blockIdx.y * 32, split = blockIdx.z;
    int t = threadIdx.x, lane = t & 31, wid = t >> 5;
    int g = lane >> 2, tig = lane & 3, mt = wid & 1, wb = wid >> 1;
    int hA = mt * 16 + g, hB = hA + 8;
    int p = r.pos[i], nlist = sel ? k : p + 1;
    int j_begin = split * tiles_per_split * 32;
    int j_end = min(nlist, j_begin + tiles_per_split * 32);
    float acc[16][4];

#pragma unroll
    for (int nt = 0; nt < 16; nt++)
        acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.0f;
    for (int e = t; e < 32 * (kv_lora / 2); e += blockDim.x) {
        int hl = e / (kv_lora / 2), wd = e % (kv_lora / 2), h = h0 + hl;
        float x0 = 0.0f, x1 = 0.0f;
        if (h < heads) {
            const float *qr = q_lat + ((int64_t)i * heads + h) * kv_lora
                              + 2 * wd;
            x0 = qr[0];
            x1 = qr[1];
        }
        split_bf16x2(x0, x1, &qhi[hl * W + wd], &qlo[hl * W + wd]);
    }
    for (int e = t; e < 32 * rope; e += blockDim.x) {
        int hl = e / rope, d = e % rope, h = h0 + hl;
        qpe[hl * RP + d] = h < heads
                           ? q_pe[((int64_t)i * heads + h) * rope + d] : 0.0f;
    }
    if (t < 32) {
        ms[t] = -INFINITY;
        ls[t] = 0.0f;
    }
    for (int j0 = j_begin; j0 < j_end; j0 += 32) {
        __syncthreads();
        if (t < 32) {
            int j = j0 + t, s = -1;
            if (j < j_end) {
                s = sel ? sel[(int64_t)i * k + j] : j;
                if (s > p)
                    s = -1;
            }
            slots[t] = s >= 0 ? key_slot(r, i, s) : -1;
        }
        __syncthreads();
        for (int e = t; e < 32 * (kv_lora / 16); e += blockDim.x) {
            int key = e / (kv_lora / 16), c16 = e % (kv_lora / 16);
            uint4 u = make_uint4(0, 0, 0, 0);
            if (slots[key] >= 0)
                u = *(const uint4 *)((const uint8_t *)L.latent
                                     + slots[key] * kv_lora + c16 * 16);
            uint32_t v[4] = { u.x, u.y, u.z, u.w };
#pragma unroll
            for (int j = 0; j < 4; j++) {
                kc[key * W + c16 * 8 + 2 * j] =
                    e4m3x2_bf16((uint8_t)v[j], (uint8_t)(v[j] >> 8));
                kc[key * W + c16 * 8 + 2 * j + 1] =
                    e4m3x2_bf16((uint8_t)(v[j] >> 16), (uint8_t)(v[j] >> 24));
            }
        }
        for (int e = t; e < 32 * rope; e += blockDim.x) {
            int key = e / rope, d = e % rope;
            kpe[key * RP + d] = slots[key] >= 0
                                ? L.pe[slots[key] * rope + d] : 0.0f;
        }
        for (int e = t; e < 32 * 4; e += blockDim.x) {
            int key = e / 4, bb = e % 4;
            ksc[e] = slots[key] >= 0 && bb < nblk
                     ? L.latent_scale[slots[key] * nblk + bb] : 0.0f;
        }
        __syncthreads();
        {
            /* scores of heads hA/hB x keys kA/kA+1 */
            int   kA = wb * 8 + tig * 2;
            float s4[4] = {};
            const uint32_t *ah = qhi + hA * W + tig, *al = qlo + hA * W + tig;
            const uint32_t *kb = kc + (wb * 8 + g) * W + tig;
            for (int bb = 0; bb < nblk; bb++) {
                float c[4] = {};
#pragma unroll
                for (int kw = bb * 64; kw < bb * 64 + 64; kw += 8) {
                    uint32_t b0 = kb[kw], b1 = kb[kw + 4];
                    mma_bf16(c, ah[kw], ah[8 * W + kw], ah[kw + 4],
                             ah[8 * W + kw + 4], b0, b1);
                    mma_bf16(c, al[kw], al[8 * W + kw], al[kw + 4],
                             al[8 * W + kw + 4], b0, b1);
                }
                float sa = ksc[kA * 4 + bb], sb = ksc[(kA + 1) * 4 + bb];
                s4[0] = fmaf(c[0], sa, s4[0]);
                s4[1] = fmaf(c[1], sb, s4[1]);
                s4[2] = fmaf(c[2], sa, s4[2]);
                s4[3] = fmaf(c[3], sb, s4[3]);
            }
            const float *qa = qpe + hA * RP, *qb = qpe + hB * RP;
            const float *ka = kpe + kA * RP, *kb2 = kpe + (kA + 1) * RP;
            for (int d = 0; d < rope; d++) {
                s4[0] = fmaf(qa[d], ka[d], s4[0]);
                s4[1] = fmaf(qa[d], kb2[d], s4[1]);
                s4[2] = fmaf(qb[d], ka[d], s4[2]);
                s4[3] = fmaf(qb[d], kb2[d], s4[3]);
            }
            bool va = slots[kA] >= 0, vb = slots[kA + 1] >= 0;
            sc[hA * DM_RS + kA] = va ? s4[0] * scale : -INFINITY;
            sc[hA * DM_RS + kA + 1] = vb ? s4[1] * scale : -INFINITY;
            sc[hB * DM_RS + kA] = va ? s4[2] * scale : -INFINITY;
            sc[hB * DM_RS + kA + 1] = vb ? s4[3] * scale : -INFINITY;
        }
        __syncthreads();
#pragma unroll
        for (int a = 0; a < 4; a++) {
            int   h = wid * 4 + a;
            float sv = sc[h * DM_RS + lane];
            float mo = ms[h], mn = fmaxf(mo, warp_max(sv));
            float pv = sv == -INFINITY ? 0.0f : expf(sv - mn);
            float al = mo == -INFINITY ? 0.0f : expf(mo - mn);
            float sum = warp_sum(pv);
            sc[h * DM_RS + lane] = pv;
            __syncwarp();
            if (lane == 0) {
                alpha[h] = al;
                ls[h] = ls[h] * al + sum;
                ms[h] = mn;
            }
        }
        __syncthreads();
        if (wb < nblk) {
            float aA = alpha[hA], aB = alpha[hB];
            const uint16_t *kc16 = (const uint16_t *)kc;
#pragma unroll
            for (int nt = 0; nt < 16; nt++) {
                acc[nt][0] *= aA;
                acc[nt][1] *= aA;
                acc[nt][2] *= aB;
                acc[nt][3] *= aB;
            }
#pragma unroll
            for (int ks = 0; ks < 2; ks++) {
                int k0 = ks * 16 + tig * 2;     /* keys k0, k0+1, k0+8, k0+9 */
                float s0 = ksc[k0 * 4 + wb], s1 = ksc[(k0 + 1) * 4 + wb];
                float s8 = ksc[(k0 + 8) * 4 + wb], s9 = ksc[(k0 + 9) * 4 + wb];
                uint32_t hi[4], lo[4];
                split_bf16x2(sc[hA * DM_RS + k0] * s0,
                             sc[hA * DM_RS + k0 + 1] * s1, &hi[0], &lo[0]);
                split_bf16x2(sc[hB * DM_RS + k0] * s0,
                             sc[hB * DM_RS + k0 + 1] * s1, &hi[1], &lo[1]);
                split_bf16x2(sc[hA * DM_RS + k0 + 8] * s8,
                             sc[hA * DM_RS + k0 + 9] * s9, &hi[2], &lo[2]);
                split_bf16x2(sc[hB * DM_RS + k0 + 8] * s8,
                             sc[hB * DM_RS + k0 + 9] * s9, &hi[3], &lo[3]);
#pragma unroll
                for (int nt = 0; nt < 16; nt++) {
                    int col = wb * 128 + nt * 8 + g;
                    uint32_t b0 = kc16[k0 * 2 * W + col]
                        | (uint32_t)kc16[(k0 + 1) * 2 * W + col] << 16;
                    uint32_t b1 = kc16[(k0 + 8) * 2 * W + col]
                        | (uint32_t)kc16[(k0 + 9) * 2 * W + col] << 16;
                    mma_bf16(acc[nt], hi[0], hi[1], hi[2], hi[3], b0, b1);
                    mma_bf16(acc[nt], lo[0], lo[1], lo[2], lo[3], b0, b1);
                }
            }
        }
    }
    __syncthreads();
    if (wb >= nblk)
        return;
    for (int half = 0; half < 2; half++) {
        int hl = half ? hB : hA, h = h0 + hl;
        if (h >= heads)
            continue;
        float inv = ls[hl] > 0.0f ? 1.0f / ls[hl] : 0.0f;
        float *pp = part + (((int64_t)i * heads + h) * n_splits + split)
                           * (kv_lora + 2);
        if (n_splits > 1 && wb == 0 && tig == 0) {
            pp[0] = ms[hl];
            pp[1] = ls[hl];
        }
#pragma unroll
        for (int nt = 0; nt < 16; nt++) {
            int   col = wb * 128 + nt * 8 + tig * 2;
            float v0 = acc[nt][2 * half], v1 = acc[nt][2 * half + 1];
            if (n_splits == 1) {
                float *o = out + ((int64_t)i * heads + h) * kv_lora + col;
                o[0] = v0 * inv;
                o[1] = v1 * inv;
            } else {
                pp[2 + col] = v0;
                pp[3 + col] = v1;
            }
        }
    }
}

static size_t
decode_mma_smem(int kv_lora, int rope)
{
    size_t W = kv_lora / 2 + 4;

    return 4 * (3 * 32 * W + 2 * 32 * (size_t)(rope + 1) + 32 * 4
                + 32 * DM_RS + 3 * 32);
}

static int limit_decode_mma;

/* out[i][h] = sum_s e^(m_s - M) acc_s / sum_s e^(m_s - M) l_s */
__global__ void
k_decode_combine(const float *part, int n_splits, int kv_lora, float *out)
{
    int64_t ih = blockIdx.x;
    const float *pp = part + ih * n_splits * (kv_lora + 2);
    float M = -INFINITY, Lsum = 0.0f;

    for (int s = 0; s < n_splits; s++)
        M = fmaxf(M, pp[s * (kv_lora + 2)]);
    for (int s = 0; s < n_splits; s++) {
        float m = pp[s * (kv_lora + 2)];
        if (m != -INFINITY)
            Lsum += expf(m - M) * pp[s * (kv_lora + 2) + 1];
    }
    float inv = Lsum > 0.0f ? 1.0f / Lsum : 0.0f;
    for (int c = threadIdx.x; c < kv_lora; c += blockDim.x) {
        float a = 0.0f;
        for (int s = 0; s < n_splits; s++) {
            float m = pp[s * (kv_lora + 2)];
            if (m != -INFINITY)
                a += expf(m - M) * pp[s * (kv_lora + 2) + 2 + c];
        }
        out[ih * kv_lora + c] = a * inv;
    }
}

static size_t
decode_smem(int kv_lora, int rope)
{
    int D = kv_lora + rope;

    return sizeof(float) * ((size_t)DC_HEADS * D + (size_t)DC_KEYS * (D + 1)
                            + DC_HEADS * DC_KEYS + 3 * DC_HEADS);
}

void
cu_attn_decode(sg_backend *b, const sg_kv_pool *pool, int layer,
               const sg_rows *rows, const float *q_lat, const float *q_pe,
               const int32_t *sel, int k, int heads, float scale, float *out)
{
    cu_enter(b);
    cuda_impl *c = cu(b);
    int        n = rows->n, lora = pool->kv_lora, maxlist = 0;
    size_t     smem = decode_smem(lora, pool->rope);
    dev_rows   d;
    char      *s;

    /* no heads: nothing to write; groups = 0 would also divide by zero
     * in the split count below */
    if (n <= 0 || heads <= 0 || c->failed)
        return;
    if (lora % 8 != 0 || lora / 8 > DC_ACC || smem > (size_t)limit_decode) {
        cu_fail(b, "cuda: attn_decode: kv_lora %d + rope %d unsupported "
                "(kv_lora <= %d, multiple of 8)", lora, pool->rope,
                8 * DC_ACC);
        return;
    }
    /* the kernels index the FP8 scales as [slot][kv_lora / 128]; the CPU
     * rounds the block count up, so other sizes would read wrong scales
     * (kv_store refuses them too) */
    if (pool->latent_fp8 && lora % 128 != 0) {
        cu_fail(b, "cuda: attn_decode: FP8 latent with kv_lora %d (needs a "
                "multiple of 128)", lora);
        return;
    }
    for (int i = 0; i < n; i++) {
        int nl = sel ? k : rows->pos[i] + 1;
        maxlist = nl > maxlist ? nl : maxlist;
    }
    int groups = (heads + DC_HEADS - 1) / DC_HEADS;
    int tiles = (maxlist + DC_KEYS - 1) / DC_KEYS;
    if (tiles < 1)
        tiles = 1;
    /* enough blocks to fill the device twice, each at least one tile */
    int splits = (2 * c->n_sm + n * groups - 1) / (n * groups);
    splits = splits < 1 ? 1 : splits > tiles ? tiles : splits;
    int tps = (tiles + splits - 1) / splits;
    splits = (tiles + tps - 1) / tps;
    if (splits < 1)
        splits = 1;

    size_t rb = (size_t)put_rows(b, rows, 0, NULL, &d, 1);
    size_t sb = sel ? cu_al(sizeof(int32_t) * (size_t)n * k) : 0;
    size_t pb = splits > 1 ? sizeof(float) * (size_t)n * heads * splits
                             * (lora + 2) : 0;
    s = (char *)cu_scratch(b, rb + sb + pb);
    if (s == NULL || put_rows(b, rows, pool->n_blocks, s, &d, 0) < 0
        || (sel && cu_put(b, s + rb, sel, sizeof(int32_t) * (size_t)n * k)))
        return;
    float *part = (float *)(s + rb + sb);
    size_t msmem = decode_mma_smem(lora, pool->rope);
    if (pool->latent_fp8 && !use_fma_only && lora % 128 == 0 && lora <= 512
        && msmem <= (size_t)limit_decode_mma)
        k_attn_decode_mma<<<dim3(n, groups, splits), 256, msmem,
                            c->stream>>>(
            pool->layers[layer], d, lora, pool->rope, q_lat, q_pe,
            sel ? (const int32_t *)(s + rb) : NULL, k, heads, scale, tps,
            splits, part, out);
    else
        k_attn_decode<<<dim3(n, groups, splits), 256, smem, c->stream>>>(
            pool->layers[layer], d, lora, pool->rope, pool->latent_fp8,
            q_lat, q_pe, sel ? (const int32_t *)(s + rb) : NULL, k, heads,
            scale, tps, splits, part, out);
    if (cu_launched(b, "attn_decode") || splits == 1)
        return;
    k_decode_combine<<<n * heads, 128, 0, c->stream>>>(part, splits, lora,
                                                       out);
    cu_launched(b, "decode_combine");
}

/* Raises a kernel's dynamic shared memory limit to what the device allows
 * beside the kernel's static shared memory. */
static int
allow_smem(sg_backend *b, const void *fn, int *limit, const char *name)
{
    cudaFuncAttributes fa;

    if (cu_check(b, cudaFuncGetAttributes(&fa, fn), name))
        return -1;
    *limit = smem_optin - (int)fa.sharedSizeBytes;
    return cu_check(b, cudaFuncSetAttribute(fn,
                        cudaFuncAttributeMaxDynamicSharedMemorySize, *limit),
                    name);
}

int
cu_attention_init(sg_backend *b)
{
    int         dev = cu(b)->device;
    const char *fma = getenv("SG_CUDA_FMA");
    const char *fp8 = getenv("SG_CUDA_INDEX_FP8");

    use_fma_only = fma != NULL && strcmp(fma, "0") != 0;
    cu(b)->index_fp8 = fp8 != NULL && strcmp(fp8, "0") != 0;
    if (cu_check(b, cudaDeviceGetAttribute(&smem_optin,
                        cudaDevAttrMaxSharedMemoryPerBlockOptin, dev),
                 "shared memory limit")
        || allow_smem(b, (const void *)k_index_scores, &limit_index,
                      "index_scores smem")
        || allow_smem(b, (const void *)k_attn_decode, &limit_decode,
                      "attn_decode smem")
        || allow_smem(b, (const void *)k_attn_prefill, &limit_prefill,
                      "attn_prefill smem")
        || allow_smem(b, (const void *)k_attn_decode_mma, &limit_decode_mma,
                      "attn_decode_mma smem"))
        return -1;
    if ((size_t)limit_index < index_smem()) {
        cu_fail(b, "cuda: the indexer kernel needs %zu bytes of shared "
                "memory, the device allows %d", index_smem(), limit_index);
        return -1;
    }
    return 0;
}
