/*
 * Loading a model: config, checkpoint, weights bound to a backend, and the
 * RoPE table (YaRN frequencies, as DeepSeek's precompute_freqs_cis).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "forward_scratch.h"
#include "group.h"
#include "model.h"

void
sg_model_opts_default(sg_model_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->backend = "cpu";
    o->num.kv_fp8 = 1;
    o->num.act_quant = 1;
}

/*
 * Inverse frequencies of the rotary pairs, computed in f32 like the
 * reference (torch float32): base^(2i/dim), YaRN-corrected when the model's
 * maximum length exceeds the original one.
 */
static void
rope_freqs(const sg_config *c, float *freqs)
{
    int dim = c->qk_rope_head_dim, half = dim / 2;

    for (int i = 0; i < half; i++) {
        float expo = (float)(2 * i) / (float)dim;
        freqs[i] = 1.0f / powf((float)c->rope_theta, expo);
    }
    if (!c->yarn_enabled
        || c->max_position_embeddings <= c->yarn_original_max_position_embeddings)
    {
        return;
    }

    double orig = c->yarn_original_max_position_embeddings;
    double lb = log(c->rope_theta);
    double dlow = dim * log(orig / (c->yarn_beta_fast * 2 * M_PI)) / (2 * lb);
    double dhigh = dim * log(orig / (c->yarn_beta_slow * 2 * M_PI)) / (2 * lb);
    double low = floor(dlow), high = ceil(dhigh);

    if (low < 0)
        low = 0;
    if (high > dim - 1)
        high = dim - 1;
    if (low == high)
        high += 0.001;

    for (int i = 0; i < half; i++) {
        float ramp = ((float)i - (float)low) / (float)(high - low);
        float smooth;

        ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
        smooth = 1.0f - ramp;
        freqs[i] = freqs[i] / (float)c->yarn_factor * (1.0f - smooth)
                   + freqs[i] * smooth;
    }
}

static int
build_rope_table(sg_model *m, char *err, int errlen)
{
    const sg_config *c = &m->cfg;
    int    half = c->qk_rope_head_dim / 2;
    size_t n = (size_t)m->max_pos * half * 2;
    float *freqs = malloc(sizeof(float) * half);
    float *host = malloc(sizeof(float) * n);
    float *dev;

    if (freqs == NULL || host == NULL) {
        free(freqs);
        free(host);
        snprintf(err, errlen, "out of memory for the RoPE table");
        return -1;
    }
    rope_freqs(c, freqs);
    for (int p = 0; p < m->max_pos; p++) {
        for (int i = 0; i < half; i++) {
            float a = (float)p * freqs[i];
            host[((size_t)p * half + i) * 2] = cosf(a);
            host[((size_t)p * half + i) * 2 + 1] = sinf(a);
        }
    }
    dev = m->backend->ops->alloc(m->backend, sizeof(float) * n);
    if (dev == NULL) {
        free(freqs);
        free(host);
        snprintf(err, errlen, "backend %s: out of memory for the RoPE table",
                 m->backend->name);
        return -1;
    }
    m->backend->ops->upload(m->backend, dev, host, sizeof(float) * n);
    free(freqs);
    free(host);
    m->rope.cos_sin = dev;
    m->rope.rope_dim = c->qk_rope_head_dim;
    m->rope.max_pos = m->max_pos;
    return 0;
}

typedef struct {
    sg_model *m;
    int       rc;
    char     *err;
    int       errlen;
} prep_ctx;

static void
prepare_one(void *p, sg_tensor *t, int expert)
{
    prep_ctx   *pc = p;
    sg_model   *m = pc->m;
    sg_backend *b = m->backend;

    if (expert >= 0 && (expert < m->expert_begin || expert >= m->expert_end)) {
        memset(t, 0, sizeof(*t));
        return;
    }
    if (pc->rc != 0 || t->data == NULL)
        return;
    if (b->ops->prepare_weight(b, t, pc->err, pc->errlen) != 0) {
        pc->rc = -1;
        return;
    }
    m->prepared_bytes += sg_tensor_bytes(t);
}

/*
 * Every weight this rank uses, for prepare_weight: all of them but the
 * routed experts other ranks hold, whose tensors are unbound here (data
 * NULL) so that nothing can read them by mistake.
 */
static int
prepare_all(sg_model *m, char *err, int errlen)
{
    prep_ctx pc = { m, 0, err, errlen };

    sg_weights_visit(&m->w, &m->cfg, prepare_one, &pc);
    return pc.rc;
}

int
sg_model_load(const char *dir, const sg_model_opts *o, sg_model **out,
    char *err, int errlen)
{
    sg_model_opts def;
    sg_model     *m;
    char          path[4096];

    if (o == NULL) {
        sg_model_opts_default(&def);
        o = &def;
    }
    sg_fp8_init();
    m = calloc(1, sizeof(*m));
    if (m == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    m->num = o->num;

    snprintf(path, sizeof(path), "%s/config.json", dir);
    if (sg_config_load(path, &m->cfg, err, errlen) != 0
        || sg_config_finish(&m->cfg, err, errlen) != 0)
    {
        goto fail;
    }
    if (m->cfg.index_head_dim != SG_FP8_BLOCK) {
        snprintf(err, errlen, "%s: index_head_dim %d: the indexer needs %d "
                 "(one FP8 scale per head)", path, m->cfg.index_head_dim,
                 SG_FP8_BLOCK);
        goto fail;
    }
    if (m->cfg.kv_lora_rank % SG_FP8_BLOCK != 0) {
        snprintf(err, errlen, "%s: kv_lora_rank %d is not a multiple of %d",
                 path, m->cfg.kv_lora_rank, SG_FP8_BLOCK);
        goto fail;
    }
    m->n_ranks = o->n_ranks > 0 ? o->n_ranks : 1;
    m->rank = o->rank;
    if (m->rank < 0 || m->rank >= m->n_ranks
        || m->n_ranks > m->cfg.n_routed_experts)
    {
        snprintf(err, errlen, "rank %d of %d: a group has 1 to %d ranks "
                 "(n_routed_experts in %s)", m->rank, m->n_ranks,
                 m->cfg.n_routed_experts, path);
        goto fail;
    }
    m->expert_begin = sg_expert_first(m->rank, m->n_ranks,
                                      m->cfg.n_routed_experts);
    m->expert_end = sg_expert_first(m->rank + 1, m->n_ranks,
                                    m->cfg.n_routed_experts);
    if (sg_checkpoint_open(dir, &m->ck, err, errlen) != 0
        || sg_weights_bind(m->ck, &m->cfg, &m->w, err, errlen) != 0)
    {
        goto fail;
    }

    if (o->backend == NULL || strcmp(o->backend, "cpu") == 0) {
        m->backend = sg_backend_cpu_new(o->n_threads);
    } else if (strcmp(o->backend, "cuda") == 0) {
        /* model/cuda_loader.c: opens libsparsegate_cuda.so on demand */
        m->backend = sg_backend_cuda_new(o->device, err, errlen);
        if (m->backend == NULL)
            goto fail;
    } else {
        snprintf(err, errlen, "unknown backend '%s' (cpu or cuda)", o->backend);
        goto fail;
    }
    if (m->backend == NULL) {
        snprintf(err, errlen, "cannot create the %s backend", o->backend);
        goto fail;
    }
    if (prepare_all(m, err, errlen) != 0)
        goto fail;

    m->max_pos = o->max_pos > 0 ? o->max_pos : m->cfg.max_position_embeddings;
    if (build_rope_table(m, err, errlen) != 0)
        goto fail;

    *out = m;
    return 0;

fail:
    sg_model_free(m);
    return -1;
}

void
sg_model_free(sg_model *m)
{
    if (m == NULL)
        return;
    if (m->backend) {
        sg_forward_scratch_free(m);
        if (m->rope.cos_sin)
            m->backend->ops->free(m->backend, (void *)m->rope.cos_sin);
        m->backend->ops->destroy(m->backend);
    }
    sg_weights_free(&m->w);
    sg_checkpoint_close(m->ck);
    free(m);
}
