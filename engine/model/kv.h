/*
 * The paged KV cache pool: fixed blocks of SG_KV_BLOCK tokens.  Per layer
 * and token it holds the MLA latent (kv_lora_rank values after kv_a_layernorm),
 * the RoPE key (qk_rope_head_dim values, after RoPE) and the indexer key
 * (index_head_dim e4m3 values + one f32 scale).
 *
 * The latent is kept either exactly (f32) or as DeepSeek deploys it: e4m3 +
 * one scale per 128 values (the "FP8 KV cache"; the forward pass quantizes
 * it with act_quant before storing, which is the reference's simulation).
 *
 * Storage is one array per layer and kind, indexed by the token's slot:
 *   slot = block_id * SG_KV_BLOCK + (position % SG_KV_BLOCK)
 * A sequence owns a block table: block_table[position / SG_KV_BLOCK].
 * The memory lives in the backend (host memory on the CPU, device memory
 * on the GPU); only the backend reads or writes it.
 */
#ifndef SG_KV_H
#define SG_KV_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

#define SG_KV_BLOCK 64

typedef struct sg_backend sg_backend;

typedef struct sg_kv_layer {
    void     *latent;        /* f32 [slots][kv_lora] or e4m3 [slots][kv_lora] */
    float    *latent_scale;  /* fp8 only: [slots][kv_lora / 128] */
    float    *pe;            /* f32 [slots][rope] */
    uint8_t  *ikey;          /* e4m3 [slots][index_head_dim] */
    float    *ikey_scale;    /* [slots] */
} sg_kv_layer;

typedef struct sg_kv_pool {
    sg_backend  *backend;
    int          n_layers;
    int          n_blocks;
    int          kv_lora;
    int          rope;
    int          index_dim;
    int          latent_fp8;     /* 1: e4m3 + scales, 0: exact f32 */
    sg_kv_layer *layers;         /* [n_layers] */
    size_t       bytes_per_token;/* all layers */
} sg_kv_pool;

/* Bytes one token takes in one layer (e.g. 656 + indexer key at V3.2 shapes
 * with bf16 RoPE keys; this engine keeps RoPE keys in f32). */
size_t sg_kv_bytes_per_token_layer(const sg_config *cfg, int latent_fp8);
/* The same in its parts: latent (+ its scales), RoPE key, indexer key (+
 * its scale); returns their sum. */
size_t sg_kv_bytes_split(const sg_config *cfg, int latent_fp8, size_t *latent,
    size_t *pe, size_t *ikey);

/* Allocates n_blocks blocks of every layer in the backend's memory. */
sg_kv_pool *sg_kv_pool_new(sg_backend *b, const sg_config *cfg, int n_blocks,
    int latent_fp8);
void sg_kv_pool_free(sg_kv_pool *p);

#endif
