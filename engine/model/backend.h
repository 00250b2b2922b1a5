/*
 * The backend interface: every op the forward pass (model/forward.c) runs.
 * The model is written once against these ops; engine/cpu/ implements them
 * on the host and kernels/ on a CUDA device.  Model code never knows which.
 *
 * Conventions
 *  - Activations are f32, row-major; "n" is the number of rows (tokens) in
 *    the batch.  Pointers named x/y/out/q... point into backend memory
 *    (from ops->alloc); pointers to int32 metadata (tokens, positions,
 *    block tables, top-k sets, expert ids) are HOST memory: the backend
 *    copies what it needs.
 *  - Weights are sg_tensor (checkpoint.h) in their stored dtype (F32, BF16,
 *    F8_E4M3 + 128x128 block scales); never converted to an f32 copy.
 *  - FP8 "act_quant" is DeepSeek's: per row and block of 128 columns,
 *    amax = max(|x|) clamped to >= 1e-4, scale = amax * (1.0f / 448.0f)
 *    (a multiply by the f32 reciprocal), with ue8m0 the scale is rounded UP
 *    to a power of two through its f32 exponent (exact powers stay); then
 *    q = e4m3_rne(clamp(x / scale, -448, 448)).
 *  - Ops report nothing: argument errors are the caller's bugs.  A backend
 *    that can fail at run time (device errors, an op's scratch memory)
 *    records the error and returns it from ops->sync; an op that fails
 *    leaves outputs that are safe to read (indices in range), never used.
 */
#ifndef SG_BACKEND_H
#define SG_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "checkpoint.h"
#include "kv.h"

#define SG_FP8_BLOCK 128

/* attn_prefill's key ranges start at multiples of this: every backend's
 * key tile divides it (the CPU's 64, the CUDA kernel's 32), so ranged
 * calls walk the same tiles as one call. */
#define SG_PREFILL_KEY_ALIGN 64

/* ops->sync: an op ran out of memory. */
#define SG_BACKEND_ENOMEM  (-2)

typedef struct sg_backend_ops sg_backend_ops;

struct sg_backend {
    const sg_backend_ops *ops;
    const char           *name;       /* "cpu", "cuda" */
    int                   n_threads;
    /* How long a prompt keeps the MHA form (the default of the model's
     * num.mha_max_bytes, see forward.c): the CPU 256 MiB of expanded keys
     * and values; the CUDA backend 0, every prompt token absorbed, because
     * its absorbed kernel gathers one latent set for all heads of a row
     * where the MHA kernel reads each (row, head)'s keys on its own. */
    size_t                mha_max_bytes;
    void                 *impl;       /* backend's own state */
};

/*
 * One forward step's rows, as the attention ops see them.  Row i is the
 * token at position pos[i] of sequence seq[i]; it sees keys 0..pos[i] of
 * that sequence, whose block table is block_table + seq[i] * max_blocks.
 */
typedef struct sg_rows {
    int             n;
    const int32_t  *pos;           /* [n] */
    const int32_t  *seq;           /* [n] index into the block tables */
    const int32_t  *block_table;   /* [n_seqs * max_blocks] */
    int             max_blocks;
} sg_rows;

/* RoPE tables, built once by the model (YaRN frequencies): for position p
 * and pair i < rope_dim/2: cos_sin[(p * rope_dim/2 + i) * 2 + {0,1}]. */
typedef struct sg_rope_table {
    const float *cos_sin;          /* backend memory */
    int          rope_dim;
    int          max_pos;
} sg_rope_table;

struct sg_backend_ops {
    /* ---- memory ---- */
    void *(*alloc)(sg_backend *b, size_t bytes);          /* zeroed, NULL on OOM */
    void  (*free)(sg_backend *b, void *p);
    void  (*upload)(sg_backend *b, void *dst, const void *src, size_t bytes);
    void  (*download)(sg_backend *b, void *dst, const void *src, size_t bytes);
    /* Makes a weight usable by this backend (CUDA: copy to the device once). */
    int   (*prepare_weight)(sg_backend *b, sg_tensor *t, char *err, int errlen);
    /* Waits for queued work; returns 0, -1 with the first error, or
     * SG_BACKEND_ENOMEM when an op ran out of memory (its outputs are not
     * to be used). */
    int   (*sync)(sg_backend *b, char *err, int errlen);
    void  (*destroy)(sg_backend *b);

    /* ---- dense ops ---- */
    /* out[i] = row tokens[i] of w (BF16/F32 [V, D]) as f32 */
    void (*embed)(sg_backend *b, const sg_tensor *w, const int32_t *tokens,
                  int n, float *out);
    /* out[i] = x[i] / sqrt(mean(x[i]^2) + eps) * w, over dim columns;
     * rows are x_stride / out_stride floats apart. */
    void (*rmsnorm)(sg_backend *b, const float *x, int x_stride,
                    const sg_tensor *w, float eps, int n, int dim,
                    float *out, int out_stride);
    /* out[i] = (x[i] - mean) / sqrt(var + eps) * w + bias (biased var) */
    void (*layernorm)(sg_backend *b, const float *x, const sg_tensor *w,
                      const sg_tensor *bias, float eps, int n, int dim,
                      float *out);
    /* y[n, rows(w)] = x[n, cols(w)] . W^T.  act_quant (FP8 weights only):
     * first round x through act_quant (ue8m0 per the flag), as DeepSeek's
     * fp8_gemm does; ignored for BF16/F32 weights. */
    void (*linear)(sg_backend *b, const sg_tensor *w, const float *x, int n,
                   float *y, int act_quant, int ue8m0);
    /* y[i] += x[i], i < count */
    void (*add)(sg_backend *b, float *y, const float *x, size_t count);
    /* out[i] = silu(gate[i]) * up[i], i < count */
    void (*silu_mul)(sg_backend *b, const float *gate, const float *up,
                     float *out, size_t count);
    /* dst[j] = src[idx[j]] (rows of dim floats), j < n */
    void (*gather_rows)(sg_backend *b, const float *src, const int32_t *idx,
                        int n, int dim, float *dst);
    /* dst[idx[j]] += w[j] * src[j] (rows of dim floats), j < n, in order;
     * idx and w are host memory */
    void (*scatter_add_rows)(sg_backend *b, float *dst, const int32_t *idx,
                             const float *w, int n, int dim, const float *src);

    /* ---- position and quantization ---- */
    /* Rotates rope_dim values of every head in place: head h of row i starts
     * at x + i*row_stride + h*head_stride + offset.  interleaved: pairs
     * (2j, 2j+1) (MLA); else pairs (j, j + rope_dim/2) (indexer, rotate-half).
     * Pair j of position p turns by (cos, sin) from the table. */
    void (*rope)(sg_backend *b, float *x, int n, int heads, int row_stride,
                 int head_stride, int offset, const int32_t *pos,
                 const sg_rope_table *t, int interleaved);
    /* x[r] = x[r] @ H_dim * dim^-0.5 in place (Sylvester order), dim a power
     * of two, r < rows */
    void (*hadamard)(sg_backend *b, float *x, int rows, int dim);
    /* act_quant of rows of dim floats: q [rows][dim] e4m3, scale
     * [rows][dim/128] f32 (dim a multiple of 128) */
    void (*fp8_quant)(sg_backend *b, const float *x, int rows, int dim,
                      uint8_t *q, float *scale, int ue8m0);
    /* out = q * scale (inverse of fp8_quant's layout) */
    void (*fp8_dequant)(sg_backend *b, const uint8_t *q, const float *scale,
                        int rows, int dim, float *out);

    /* ---- cache ---- */
    /* Stores row i's latent [kv_lora] (quantized with act_quant when the
     * pool keeps an FP8 latent), RoPE key [rope] and indexer key (e4m3
     * [index_dim] + scale) at its slot. */
    void (*kv_store)(sg_backend *b, sg_kv_pool *pool, int layer,
                     const sg_rows *rows, const float *latent, const float *pe,
                     const uint8_t *ikey, const float *ikey_scale, int ue8m0);
    /* Reads positions [0, n_keys) of one sequence (its block table) back as
     * f32: latent [n_keys][kv_lora] (dequantized), pe [n_keys][rope]. */
    void (*kv_gather)(sg_backend *b, const sg_kv_pool *pool, int layer,
                      const int32_t *block_table, int n_keys,
                      float *latent, float *pe);

    /* ---- DSA lightning indexer ---- */
    /* scores[i][s] = k_scale[s] * sum_h w[i][h] * relu(q8[i][h] . k8[s])
     * for s <= pos[i] (dot products of e4m3 values in f32, then relu, times
     * w, summed over heads in order, times k_scale); -inf for s > pos[i] up
     * to s < scores_stride.  q8: [n][heads][index_dim]; w already holds
     * weights_proj * heads^-0.5 * q_scale * index_dim^-0.5. */
    void (*index_scores)(sg_backend *b, const sg_kv_pool *pool, int layer,
                         const sg_rows *rows, const uint8_t *q8, const float *w,
                         int heads, float *scores, int scores_stride);
    /* For each row: the indices of the min(k, len[i]) largest of
     * scores[i][0..len[i]), written ascending to idx[i][0..], the rest of
     * the k entries -1.  Ties go to the lower index. */
    void (*topk)(sg_backend *b, const float *scores, int n, int stride,
                 const int32_t *len, int k, int32_t *idx);

    /* ---- MLA attention ---- */
    /* Prefill (MHA form), rows of ONE sequence.  q [n][heads][nope+rope]
     * (RoPE applied), kv [n_keys][heads][nope+v] = kv_b(latent), pe
     * [n_keys][rope], row j of both being key k0 + j.  Row i attends keys
     * s <= pos[i] that are in its top-k set (sel [n][k], -1 padded; sel
     * NULL = dense), softmax in f32 with scale; out [n][heads][v].
     * ml NULL: one call over every key (k0 0).  Dense (sel NULL): the keys
     * may instead come in consecutive ranges from k0 = 0, each k0 a
     * multiple of SG_PREFILL_KEY_ALIGN, with ml [n][heads][2] and out
     * carrying each row's running softmax between the calls; a row's out is
     * final after the range that holds its position, bitwise what one call
     * gives (so the caller holds one range of expanded keys, never the
     * context's). */
    void (*attn_prefill)(sg_backend *b, const float *q, const float *kv,
                         const float *pe, int k0, int n_keys,
                         const sg_rows *rows, const int32_t *sel, int k,
                         int heads, int nope, int rope, int v, float scale,
                         float *ml, float *out);
    /* Decode (absorbed MQA form) over the cache.  q_lat [n][heads][kv_lora]
     * (q_nope already multiplied by kv_b's key part), q_pe [n][heads][rope];
     * row i attends keys s <= pos[i] in its set (sel as above); scores =
     * (q_lat . latent[s] + q_pe . pe[s]) * scale, softmax, out [n][heads]
     * [kv_lora] = sum p * latent[s]. */
    void (*attn_decode)(sg_backend *b, const sg_kv_pool *pool, int layer,
                        const sg_rows *rows, const float *q_lat,
                        const float *q_pe, const int32_t *sel, int k,
                        int heads, float scale, float *out);
    /* The absorbed form's two per-head products with kv_b ([heads*(nope+v),
     * kv_lora], any dtype, dequantized, no act_quant):
     * absorb:   q_lat[i][h] = q_nope[i][h] . Wk[h]   ([nope] -> [kv_lora])
     * unabsorb: out[i][h]   = Wv[h] . o_lat[i][h]    ([kv_lora] -> [v])
     * q_nope rows have stride heads*(nope+rope) (the q projection's layout). */
    void (*mla_absorb)(sg_backend *b, const sg_tensor *kv_b, const float *q,
                       int n, int heads, int nope, int rope, int v,
                       int kv_lora, float *q_lat);
    void (*mla_unabsorb)(sg_backend *b, const sg_tensor *kv_b,
                         const float *o_lat, int n, int heads, int nope,
                         int v, int kv_lora, float *out);

    /* ---- MoE routing (DeepSeek noaux_tc, sigmoid) ---- */
    /* logits [n][E] (gate output, f32).  s = sigmoid(logits); selection on
     * s + bias: group score = sum of the top-2 of each of n_group groups,
     * keep the topk_group best groups, then the top_k experts among them
     * (ties to the lower index); weights = s of those experts, divided by
     * their sum when norm, times route_scale.  experts [n][top_k] ascending.
     * forced != NULL: take the experts from it and compute only weights.
     * experts and weights are HOST memory (the caller groups rows by
     * expert); logits is backend memory, bias an F32 weight tensor's data
     * in host memory (may be NULL). */
    void (*moe_route)(sg_backend *b, const float *logits, const float *bias,
                      int n, int n_experts, int n_group, int topk_group,
                      int top_k, int norm, float route_scale,
                      const int32_t *forced, int32_t *experts,
                      float *weights);
};

/* The CPU backend (engine/cpu/); n_threads <= 0 means all cores. */
sg_backend *sg_backend_cpu_new(int n_threads);

/* The CUDA backend (kernels/); NULL with a message when there is no
 * device or the engine was built without CUDA. */
sg_backend *sg_backend_cuda_new(int device, char *err, int errlen);

#endif
