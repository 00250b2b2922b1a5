/*
 * A loaded model and its forward pass over a batch of sequences.
 *
 * The forward pass is written once (engine/model/forward.c) over the backend
 * interface.  A batch is a list of items; each item appends n_tokens tokens
 * to one sequence whose cache blocks the caller has allocated.  Prompt
 * tokens (items with more than one token, or marked prompt) take the prefill
 * (MHA) path of DeepSeek's code, generated tokens the decode (absorbed)
 * path; a token's result depends only on its context and its kind, never on
 * how prompts are chunked, batched or served from the prefix cache.
 */
#ifndef SG_MODEL_H
#define SG_MODEL_H

#include <stdint.h>

#include "backend.h"
#include "checkpoint.h"
#include "collective.h"
#include "config.h"
#include "kv.h"

/* Numerics switches (defaults = DeepSeek's corrected reference). */
typedef struct sg_numerics {
    int dense;             /* 1: indexer off, every causal key attended */
    int kv_fp8;            /* 1: latent cached as e4m3 + scales (FP8 KV) */
    int act_quant;         /* 1: fp8 GEMMs quantize activations (fp8 ckpt) */
    int indexer_rope_interleaved; /* 1: first release's (mirror) layout */
    int window;            /* 1: no indexer, each row attends its
                              index_topk most recent keys (a sliding-window
                              baseline for what DSA's selection keeps) */
    int index_share;       /* IndexCache: >= 2 runs the indexer on every
                              index_share-th layer only, the layers between
                              reuse its top-k sets; 0 or 1: every layer */
    size_t mha_max_bytes;  /* prompt tokens take the MHA form while the
                              context's keys and values (S x heads x
                              (nope + v) floats) would fit in this many
                              bytes, the absorbed form after (dense rows
                              expand them 2048 keys at a time); 0 = the
                              backend's default (CPU 256 MiB, CUDA none) */
    int mha_key_range;     /* keys the MHA form expands at a time where
                              every row attends all earlier keys (a
                              multiple of SG_PREFILL_KEY_ALIGN); 0 = 2048.
                              Any value gives the same bits */
} sg_numerics;

typedef struct sg_model {
    sg_config        cfg;
    sg_checkpoint   *ck;
    sg_weights       w;
    sg_backend      *backend;
    sg_numerics      num;
    sg_rope_table    rope;          /* qk_rope_head_dim, YaRN */
    int              max_pos;
    void            *scratch;       /* forward.c's buffers (one caller at a time) */

    /* Its place in a device group (model/group.h): this rank holds the
     * routed experts [expert_begin, expert_end) of every MoE layer (the
     * others' tensors are unbound) and reaches the rest through coll.  A
     * model alone is rank 0 of 1 with every expert and no coll. */
    int              rank;
    int              n_ranks;
    int              expert_begin, expert_end;
    sg_coll         *coll;
    size_t           prepared_bytes; /* weight bytes given to prepare_weight */
} sg_model;

typedef struct sg_model_opts {
    const char *backend;            /* "cpu" (default) or "cuda" */
    int         device;             /* CUDA device */
    int         n_threads;          /* CPU threads, 0 = all cores */
    int         max_pos;            /* RoPE table length, 0 = from config */
    sg_numerics num;
    int         rank;               /* in a device group of n_ranks (0: */
    int         n_ranks;            /* alone): which routed experts it holds */
} sg_model_opts;

void sg_model_opts_default(sg_model_opts *o);

/* Loads config, checkpoint and weights; -1 with a message naming the file,
 * field or tensor. */
int sg_model_load(const char *dir, const sg_model_opts *o, sg_model **out,
    char *err, int errlen);
void sg_model_free(sg_model *m);

/* A sequence's cache state: its block table and how many tokens it holds. */
typedef struct sg_seq {
    int32_t *blocks;
    int      n_blocks;       /* entries used in blocks */
    int      cap_blocks;     /* entries allocated */
    int      n_tokens;       /* tokens whose KV is cached */
} sg_seq;

/*
 * Test and analysis hooks of one forward call (all optional).  Row r of an
 * item is its r-th new token.
 *  force_topk:    per layer, per row of the batch: the top-k set to use
 *                 instead of the indexer's (k entries, -1 padded), or NULL.
 *  force_experts: per layer, per row: the routed experts to use.
 *  out_topk / out_experts / out_expert_weights / out_hidden: filled when
 *  non-NULL (host memory) with the decisions made and the residual stream
 *  (embedding, then after each layer).
 */
typedef struct sg_trace {
    const int32_t *(*force_topk)(void *ctx, int layer, int row);
    const int32_t *(*force_experts)(void *ctx, int layer, int row);
    void          *ctx;
    int32_t       *out_topk;            /* [L][n_rows][index_topk] */
    int32_t       *out_experts;         /* [L][n_rows][top_k], -1 dense */
    float         *out_expert_weights;  /* [L][n_rows][top_k] */
    float         *out_hidden;          /* [n_rows][L+1][D] */
    float         *out_index_scores;    /* [L][n_rows][score_stride] */
    int            score_stride;
} sg_trace;

typedef struct sg_batch_item {
    sg_seq        *seq;
    const int32_t *tokens;
    int            n_tokens;
    float         *logits;       /* host [vocab] for the last token, or NULL */
    int            prompt;       /* 1: prompt tokens, even a single one */
} sg_batch_item;

/*
 * Runs the model on a batch.  Each item's tokens take positions
 * seq->n_tokens.. and their KV goes into the item's blocks (the caller
 * ensures enough blocks: ceil((n_tokens + new) / SG_KV_BLOCK)); on success
 * seq->n_tokens grows.  Returns 0, -1 with a message (backend error), or
 * SG_FORWARD_ENOMEM with a message when memory ran out (the host, the
 * backend's working memory or an op's scratch): a condition to retry
 * later, not a fault of the request.
 *
 * In a device group every rank calls it at the same step, each with its
 * own batch (n_items 0: an empty step, which still serves the MoE layers'
 * exchanges for the other ranks' tokens); a token's result is the same
 * bits whichever rank runs it and with whatever company.
 */
#define SG_FORWARD_ENOMEM  (-2)
int sg_forward(sg_model *m, sg_kv_pool *pool, sg_batch_item *items,
    int n_items, const sg_trace *trace, char *err, int errlen);

#endif
