/*
 * Checkpoint access: Hugging Face safetensors files (one or many, with
 * model.safetensors.index.json), mmapped, and the model's weights bound to
 * them by their real DeepSeek-V3.2 names.
 */
#ifndef SG_CHECKPOINT_H
#define SG_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "dtype.h"

#define SG_MAX_DIMS 4

/*
 * A weight as stored: dtype, shape, and a pointer into the mmapped file.
 * FP8 weights carry their 128x128 block scales (weight_scale_inv, F32,
 * [ceil(rows/128), ceil(cols/128)]): w[i][j] = e4m3[i][j] * scale[i/128][j/128].
 */
typedef struct sg_tensor {
    const char   *name;
    sg_dtype      dtype;
    int           ndim;
    int64_t       shape[SG_MAX_DIMS];
    const void   *data;
    const float  *scale;          /* FP8 only, else NULL */
    int64_t       scale_cols;     /* ceil(cols / 128) */
    void         *dev;            /* backend's copy (CUDA), NULL on the CPU */
    void         *dev_scale;
} sg_tensor;

static inline int64_t sg_tensor_rows(const sg_tensor *t) { return t->shape[0]; }
static inline int64_t sg_tensor_cols(const sg_tensor *t)
{
    return t->ndim > 1 ? t->shape[1] : 1;
}

typedef struct sg_checkpoint sg_checkpoint;

/*
 * Opens a checkpoint directory: reads model.safetensors.index.json when
 * present (else every *.safetensors file), parses and checks every header
 * (dtype, shape, offsets inside the file, no overlap), mmaps the files.
 * -1 with a message naming the file (and tensor) on error.
 */
int sg_checkpoint_open(const char *dir, sg_checkpoint **out, char *err,
    int errlen);
void sg_checkpoint_close(sg_checkpoint *ck);

/* The tensor of that name, or NULL. */
const sg_tensor *sg_checkpoint_find(const sg_checkpoint *ck, const char *name);

typedef struct sg_mlp_weights {
    sg_tensor gate, up, down;      /* SwiGLU: down(silu(gate x) * up x) */
} sg_mlp_weights;

typedef struct sg_layer_weights {
    sg_tensor attn_norm;           /* input_layernorm */
    sg_tensor ffn_norm;            /* post_attention_layernorm */

    /* MLA */
    sg_tensor q_a, q_a_norm, q_b;  /* q_a_proj, q_a_layernorm, q_b_proj */
    sg_tensor kv_a, kv_a_norm;     /* kv_a_proj_with_mqa, kv_a_layernorm */
    sg_tensor kv_b, o;             /* kv_b_proj, o_proj */

    /* DSA lightning indexer */
    sg_tensor idx_wq_b, idx_wk, idx_k_norm_w, idx_k_norm_b, idx_weights_proj;

    /* feed-forward: dense for layer < first_k_dense_replace, else MoE */
    int             is_moe;
    sg_mlp_weights  mlp;           /* dense layers */
    sg_tensor       gate;          /* router [E, D] */
    sg_tensor       gate_bias;     /* e_score_correction_bias [E] */
    sg_mlp_weights *experts;       /* [n_routed_experts] */
    sg_mlp_weights  shared;        /* shared_experts (n_shared x moe_inter) */
} sg_layer_weights;

typedef struct sg_weights {
    sg_tensor         embed;       /* model.embed_tokens */
    sg_tensor         norm;        /* model.norm */
    sg_tensor         lm_head;
    sg_layer_weights *layers;      /* [n_layers] */
    int               n_layers;
} sg_weights;

/*
 * Binds every weight the engine uses, checking name, dtype and shape
 * against the config; tensors the engine does not use (the MTP layer
 * model.layers.<num_hidden_layers>.*) are ignored.  -1 with a message
 * naming the tensor and file on error.
 */
int sg_weights_bind(const sg_checkpoint *ck, const sg_config *cfg,
    sg_weights *w, char *err, int errlen);
void sg_weights_free(sg_weights *w);

/*
 * The same weights from the config alone, without a checkpoint: each
 * tensor gets its shape and the dtype DeepSeek's checkpoints store it in
 * (matrices FP8 e4m3 with 128x128 block scales when the config has a
 * quantization_config, else BF16; the gate, norms and embeddings BF16;
 * e_score_correction_bias F32) and no data.  For sizing a model whose
 * files are not here (model/plan.c).
 */
int sg_weights_shape(const sg_config *cfg, sg_weights *w, char *err,
    int errlen);

/* Bytes a weight occupies as stored, its block scales included. */
size_t sg_tensor_bytes(const sg_tensor *t);

/* fn(ctx, t, expert) for every tensor the engine uses: expert is the
 * routed expert t belongs to, or -1 (replicated on every rank). */
typedef void (*sg_weight_fn)(void *ctx, sg_tensor *t, int expert);
void sg_weights_visit(sg_weights *w, const sg_config *cfg, sg_weight_fn fn,
    void *ctx);

#endif
