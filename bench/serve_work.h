/*
 * What a prompt costs this engine, counted in multiply-adds from the model's
 * shapes, so that bench_serve can put its measured TTFT ratios next to the
 * ratio the work itself allows.
 *
 * Prefilling positions [p0, p1) in chunks of `chunk` (the scheduler's
 * prefill chunk; a cached prefix ends at p0), per layer:
 *  - the token's projections and feed-forward (independent of position);
 *  - the MHA form's kv_b over the whole context, once per chunk;
 *  - the indexer: every key before the token, IH x ID each (on layers that
 *    select; with IndexCache only every index_share-th layer does);
 *  - attention over min(p + 1, top-k) keys, H x (qk + v) each.
 * A token's cost never falls with its position, so a tail of n tokens out
 * of P costs at least n/P of the cold prompt: P/n bounds the ratio of any
 * engine, whatever it caches of the prefix's latents.
 */
#ifndef SG_BENCH_SERVE_WORK_H
#define SG_BENCH_SERVE_WORK_H

#include "model/config.h"

typedef struct {
    double proj, kv_b, indexer, attention;
} prefill_work;

static double
work_total(const prefill_work *w)
{
    return w->proj + w->kv_b + w->indexer + w->attention;
}

static prefill_work
work_of_prefill(const sg_config *c, int p0, int p1, int chunk,
    int index_share)
{
    prefill_work w = {0, 0, 0, 0};
    double D = c->hidden_size, H = c->num_attention_heads;
    double qk = c->qk_nope_head_dim + c->qk_rope_head_dim;
    double v = c->v_head_dim, lora = c->kv_lora_rank, qr = c->q_lora_rank;
    double IH = c->index_n_heads, ID = c->index_head_dim;
    double rope = c->qk_rope_head_dim, K = c->index_topk;
    int    L = c->num_hidden_layers;

    for (int l = 0; l < L; l++) {
        int    selects = index_share < 2 || l % index_share == 0;
        double ffn = l < c->first_k_dense_replace
                     ? 3 * D * c->intermediate_size
                     : 3 * D * c->moe_intermediate_size
                       * (c->num_experts_per_tok + c->n_shared_experts)
                       + D * c->n_routed_experts;
        double proj = D * qr + qr * H * qk + D * (lora + rope) + H * v * D
                      + D * ID + (selects ? qr * IH * ID + D * IH : 0) + ffn;

        w.proj += proj * (p1 - p0);
        for (int s = p0; s < p1; s += chunk) {
            int end = s + chunk < p1 ? s + chunk : p1;
            w.kv_b += (double)end * lora * H * (qk - rope + v);
        }
        for (int p = p0; p < p1; p++) {
            if (selects)
                w.indexer += (double)(p + 1) * IH * ID;
            w.attention += (p + 1 < K ? p + 1 : K) * H * (qk + v);
        }
    }
    return w;
}

#endif
