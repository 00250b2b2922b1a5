/*
 * The paged KV cache on the host: storing a step's rows at their slots and
 * reading a sequence back as f32.
 */
#include <string.h>

#include "cpu_internal.h"

typedef struct {
    const sg_kv_pool *pool;
    const sg_kv_layer *L;
    const sg_rows    *rows;
    const int32_t    *block_table;
    const float      *latent_in, *pe_in;
    float            *latent_out, *pe_out;
    const uint8_t    *ikey;
    const float      *ikey_scale;
    int               ue8m0;
} kv_ctx;

static void
store_range(void *c, int64_t i0, int64_t i1)
{
    kv_ctx            *K = c;
    const sg_kv_pool  *pool = K->pool;
    const sg_kv_layer *L = K->L;
    const sg_rows     *rows = K->rows;
    int lora = pool->kv_lora, rope = pool->rope, idim = pool->index_dim;
    int nb = (lora + SG_FP8_BLOCK - 1) / SG_FP8_BLOCK;

    for (int64_t i = i0; i < i1; i++) {
        const int32_t *bt = rows->block_table
                            + (size_t)rows->seq[i] * rows->max_blocks;
        int64_t      slot = cpu_slot(bt, rows->pos[i]);
        const float *li = K->latent_in + (size_t)i * lora;

        if (pool->latent_fp8) {
            uint8_t *q = (uint8_t *)L->latent + slot * lora;
            for (int k = 0; k < nb; k++) {
                int j0 = k * SG_FP8_BLOCK;
                int len = lora - j0 < SG_FP8_BLOCK ? lora - j0 : SG_FP8_BLOCK;
                L->latent_scale[slot * nb + k] =
                    cpu_act_quant_block(li + j0, len, q + j0, K->ue8m0);
            }
        } else {
            memcpy((float *)L->latent + slot * lora, li, sizeof(float) * lora);
        }
        if (K->pe_in)
            memcpy(L->pe + slot * rope, K->pe_in + (size_t)i * rope,
                   sizeof(float) * rope);
        if (K->ikey && idim > 0) {
            memcpy(L->ikey + slot * idim, K->ikey + (size_t)i * idim, idim);
            L->ikey_scale[slot] = K->ikey_scale[i];
        }
    }
}

void
cpu_kv_store(sg_backend *b, sg_kv_pool *pool, int layer, const sg_rows *rows,
             const float *latent, const float *pe, const uint8_t *ikey,
             const float *ikey_scale, int ue8m0)
{
    kv_ctx K = { .pool = pool, .L = &pool->layers[layer], .rows = rows,
                 .latent_in = latent, .pe_in = pe, .ikey = ikey,
                 .ikey_scale = ikey_scale, .ue8m0 = ue8m0 };

    cpu_parallel(b, rows->n, 1,
                 (double)rows->n * pool->kv_lora * (pool->latent_fp8 ? 8 : 1),
                 store_range, &K);
}

static void
gather_range(void *c, int64_t s0, int64_t s1)
{
    kv_ctx            *K = c;
    const sg_kv_layer *L = K->L;
    int lora = K->pool->kv_lora, rope = K->pool->rope;
    int nb = (lora + SG_FP8_BLOCK - 1) / SG_FP8_BLOCK;

    for (int64_t s = s0; s < s1; s++) {
        int64_t slot = cpu_slot(K->block_table, (int)s);
        float  *out = K->latent_out + (size_t)s * lora;

        if (K->pool->latent_fp8) {
            cpu_dequant_row((const uint8_t *)L->latent + slot * lora,
                            L->latent_scale + slot * nb, lora, out);
        } else {
            memcpy(out, (const float *)L->latent + slot * lora,
                   sizeof(float) * lora);
        }
        if (K->pe_out)
            memcpy(K->pe_out + (size_t)s * rope, L->pe + slot * rope,
                   sizeof(float) * rope);
    }
}

void
cpu_kv_gather(sg_backend *b, const sg_kv_pool *pool, int layer,
              const int32_t *block_table, int n_keys, float *latent, float *pe)
{
    kv_ctx K = { .pool = pool, .L = &pool->layers[layer],
                 .block_table = block_table, .latent_out = latent,
                 .pe_out = pe };

    cpu_parallel(b, n_keys, 16, (double)n_keys * pool->kv_lora, gather_range,
                 &K);
}
