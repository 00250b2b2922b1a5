/*
 * Model configuration: the Hugging Face config.json of a DeepSeek-V3.2
 * checkpoint, with the fields the engine needs and values derived from them.
 */
#ifndef SG_CONFIG_H
#define SG_CONFIG_H

typedef struct sg_config {
    int    vocab_size;
    int    hidden_size;
    int    intermediate_size;        /* dense MLP layers */
    int    moe_intermediate_size;    /* per routed expert */
    int    num_hidden_layers;
    int    first_k_dense_replace;    /* layers [0, k) are dense MLP */
    int    num_attention_heads;
    int    q_lora_rank;
    int    kv_lora_rank;
    int    qk_nope_head_dim;
    int    qk_rope_head_dim;
    int    v_head_dim;
    int    n_routed_experts;
    int    n_shared_experts;
    int    num_experts_per_tok;
    int    n_group;
    int    topk_group;
    float  routed_scaling_factor;
    int    norm_topk_prob;           /* bool */
    int    index_n_heads;
    int    index_head_dim;
    int    index_topk;
    double rope_theta;
    int    max_position_embeddings;
    float  rms_norm_eps;
    int    bos_token_id;
    int    eos_token_id;

    /* rope_scaling (type "yarn"); yarn_enabled = 0 when absent */
    int    yarn_enabled;
    double yarn_factor;
    int    yarn_original_max_position_embeddings;
    double yarn_beta_fast;
    double yarn_beta_slow;
    double yarn_mscale;
    double yarn_mscale_all_dim;

    /* quantization_config: fp8 = 1 when the checkpoint has FP8 weights */
    int    fp8;
    int    scale_ue8m0;              /* scale_fmt "ue8m0" (also the default) */
    int    weight_block_size;        /* 128 */

    /* derived */
    int    qk_head_dim;              /* nope + rope */
    double softmax_scale;            /* qk_head_dim^-0.5 * mscale^2 */
} sg_config;

/*
 * Reads config.json.  On error returns -1 and writes a message naming the
 * file and the field into err.
 */
int sg_config_load(const char *path, sg_config *cfg, char *err, int errlen);

/* Fills the derived fields and checks consistency; -1 with a message. */
int sg_config_finish(sg_config *cfg, char *err, int errlen);

#endif
