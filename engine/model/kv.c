/*
 * The paged KV pool: one array per layer and kind, in the backend's memory.
 */
#include <stdlib.h>

#include "backend.h"
#include "kv.h"

static int
latent_scale_blocks(int kv_lora)
{
    return (kv_lora + SG_FP8_BLOCK - 1) / SG_FP8_BLOCK;
}

size_t
sg_kv_bytes_split(const sg_config *cfg, int latent_fp8, size_t *latent,
    size_t *pe, size_t *ikey)
{
    size_t lora = (size_t)cfg->kv_lora_rank;
    size_t scales = sizeof(float) * latent_scale_blocks(cfg->kv_lora_rank);

    *latent = latent_fp8 ? lora + scales : sizeof(float) * lora;
    *pe = sizeof(float) * (size_t)cfg->qk_rope_head_dim;
    *ikey = (size_t)cfg->index_head_dim + sizeof(float);
    return *latent + *pe + *ikey;
}

size_t
sg_kv_bytes_per_token_layer(const sg_config *cfg, int latent_fp8)
{
    size_t latent, pe, ikey;

    return sg_kv_bytes_split(cfg, latent_fp8, &latent, &pe, &ikey);
}

void
sg_kv_pool_free(sg_kv_pool *p)
{
    sg_backend *b;

    if (p == NULL)
        return;
    b = p->backend;
    for (int l = 0; p->layers && l < p->n_layers; l++) {
        sg_kv_layer *L = &p->layers[l];
        void *arrays[] = { L->latent, L->latent_scale, L->pe, L->ikey,
                           L->ikey_scale };

        for (size_t i = 0; i < sizeof(arrays) / sizeof(arrays[0]); i++)
            if (arrays[i])
                b->ops->free(b, arrays[i]);
    }
    free(p->layers);
    free(p);
}

sg_kv_pool *
sg_kv_pool_new(sg_backend *b, const sg_config *cfg, int n_blocks,
               int latent_fp8)
{
    sg_kv_pool *p;
    size_t      slots = (size_t)(n_blocks > 0 ? n_blocks : 0) * SG_KV_BLOCK;
    size_t      lora = (size_t)cfg->kv_lora_rank;

    if (b == NULL || n_blocks <= 0 || cfg->num_hidden_layers <= 0)
        return NULL;
    p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->backend = b;
    p->n_layers = cfg->num_hidden_layers;
    p->n_blocks = n_blocks;
    p->kv_lora = cfg->kv_lora_rank;
    p->rope = cfg->qk_rope_head_dim;
    p->index_dim = cfg->index_head_dim;
    p->latent_fp8 = latent_fp8 ? 1 : 0;
    p->bytes_per_token = (size_t)p->n_layers
                         * sg_kv_bytes_per_token_layer(cfg, p->latent_fp8);
    p->layers = calloc(p->n_layers, sizeof(sg_kv_layer));
    if (p->layers == NULL) {
        free(p);
        return NULL;
    }
    for (int l = 0; l < p->n_layers; l++) {
        sg_kv_layer *L = &p->layers[l];

        L->latent = b->ops->alloc(b, slots * lora * (latent_fp8 ? 1 : 4));
        if (latent_fp8)
            L->latent_scale = b->ops->alloc(b, slots * sizeof(float)
                                        * latent_scale_blocks(p->kv_lora));
        L->pe = b->ops->alloc(b, slots * sizeof(float) * p->rope);
        L->ikey = b->ops->alloc(b, slots * (size_t)(p->index_dim > 0
                                                    ? p->index_dim : 1));
        L->ikey_scale = b->ops->alloc(b, slots * sizeof(float));
        if (L->latent == NULL || (latent_fp8 && L->latent_scale == NULL)
            || L->pe == NULL || L->ikey == NULL || L->ikey_scale == NULL) {
            sg_kv_pool_free(p);
            return NULL;
        }
    }
    return p;
}
