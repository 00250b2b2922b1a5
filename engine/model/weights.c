/*
 * Binds the checkpoint's tensors, by their DeepSeek-V3.2 Hugging Face names,
 * into sg_weights, checking each one's dtype and shape against the config.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint_file.h"

/* Which dtypes a weight may have. */
enum {
    KIND_MATRIX,      /* BF16, F32, or F8_E4M3 with block scales */
    KIND_DENSE,       /* BF16 or F32: never FP8 in DeepSeek's code */
    KIND_NORM,        /* BF16 or F32 vector */
    KIND_F32          /* F32 only (e_score_correction_bias) */
};

typedef struct {
    const sg_checkpoint *ck;          /* NULL: shapes from the config only */
    int                  fp8;         /* (then) matrices stored as FP8 */
    char                *err;
    int                  errlen;
} binder;

/* What a tensor bound from the config alone points its scales at: only
 * "has scales" matters, nothing reads them. */
static const float no_data_scale;

static int
kind_allows(int kind, sg_dtype t)
{
    switch (kind) {
    case KIND_MATRIX:
        return t == SG_BF16 || t == SG_F32 || t == SG_F8_E4M3;
    case KIND_DENSE:
    case KIND_NORM:
        return t == SG_BF16 || t == SG_F32;
    default:
        return t == SG_F32;
    }
}

static const char *
kind_dtypes(int kind)
{
    switch (kind) {
    case KIND_MATRIX:
        return "BF16, F32 or F8_E4M3";
    case KIND_DENSE:
    case KIND_NORM:
        return "BF16 or F32";
    default:
        return "F32";
    }
}

static void
shape_str(char *buf, size_t len, int ndim, const int64_t *shape)
{
    size_t at = snprintf(buf, len, "[");

    for (int d = 0; d < ndim && at < len; d++)
        at += snprintf(buf + at, len - at, "%s%lld", d ? ", " : "",
                       (long long)shape[d]);
    if (at < len)
        snprintf(buf + at, len - at, "]");
}

/* Finds name and checks it; rows/cols: cols = 0 for a vector. */
static int
bind(binder *b, sg_tensor *out, int kind, int64_t rows, int64_t cols,
    const char *fmt, ...)
{
    char             name[512], got[128], want[128];
    int64_t          shape[2] = { rows, cols };
    int              ndim = cols ? 2 : 1;
    const sg_tensor *t;
    const char      *file;
    va_list          ap;

    va_start(ap, fmt);
    vsnprintf(name, sizeof(name), fmt, ap);
    va_end(ap);
    if (b->ck == NULL) {
        /* the dtype DeepSeek's checkpoints store each kind in */
        memset(out, 0, sizeof(*out));
        out->dtype = kind == KIND_F32 ? SG_F32
                     : kind == KIND_MATRIX && b->fp8 ? SG_F8_E4M3 : SG_BF16;
        out->ndim = ndim;
        out->shape[0] = rows;
        out->shape[1] = cols;
        if (out->dtype == SG_F8_E4M3) {
            out->scale = &no_data_scale;
            out->scale_cols = (cols + 127) / 128;
        }
        return 0;
    }
    t = sg_checkpoint_find(b->ck, name);
    if (t == NULL) {
        snprintf(b->err, b->errlen, "%s: tensor '%s' missing",
                 sg_checkpoint_source(b->ck), name);
        return -1;
    }
    file = sg_checkpoint_file_of(b->ck, t);
    if (!kind_allows(kind, t->dtype)) {
        snprintf(b->err, b->errlen, "%s: tensor '%s' has dtype %s, expected "
                 "%s", file, name, sg_dtype_name(t->dtype), kind_dtypes(kind));
        return -1;
    }
    if (t->ndim != ndim || t->shape[0] != rows
        || (ndim == 2 && t->shape[1] != cols))
    {
        shape_str(got, sizeof(got), t->ndim, t->shape);
        shape_str(want, sizeof(want), ndim, shape);
        snprintf(b->err, b->errlen, "%s: tensor '%s' has shape %s, expected "
                 "%s", file, name, got, want);
        return -1;
    }
    *out = *t;
    return 0;
}

static int
bind_mlp(binder *b, sg_mlp_weights *m, int64_t dim, int64_t inter,
    const char *prefix)
{
    if (bind(b, &m->gate, KIND_MATRIX, inter, dim, "%s.gate_proj.weight",
             prefix) != 0
        || bind(b, &m->up, KIND_MATRIX, inter, dim, "%s.up_proj.weight",
                prefix) != 0
        || bind(b, &m->down, KIND_MATRIX, dim, inter, "%s.down_proj.weight",
                prefix) != 0)
    {
        return -1;
    }
    return 0;
}

static int
bind_attention(binder *b, const sg_config *c, sg_layer_weights *l, int i)
{
    int64_t D = c->hidden_size, H = c->num_attention_heads;
    int64_t ql = c->q_lora_rank, kvl = c->kv_lora_rank;
    int64_t qk = c->qk_nope_head_dim + c->qk_rope_head_dim;
    int64_t IH = c->index_n_heads, ID = c->index_head_dim;
    const char *a = "model.layers.%d.self_attn";
    char p[96];

    snprintf(p, sizeof(p), a, i);
    if (bind(b, &l->attn_norm, KIND_NORM, D, 0,
             "model.layers.%d.input_layernorm.weight", i)
        || bind(b, &l->ffn_norm, KIND_NORM, D, 0,
                "model.layers.%d.post_attention_layernorm.weight", i)
        || bind(b, &l->q_a, KIND_MATRIX, ql, D, "%s.q_a_proj.weight", p)
        || bind(b, &l->q_a_norm, KIND_NORM, ql, 0,
                "%s.q_a_layernorm.weight", p)
        || bind(b, &l->q_b, KIND_MATRIX, H * qk, ql, "%s.q_b_proj.weight", p)
        || bind(b, &l->kv_a, KIND_MATRIX, kvl + c->qk_rope_head_dim, D,
                "%s.kv_a_proj_with_mqa.weight", p)
        || bind(b, &l->kv_a_norm, KIND_NORM, kvl, 0,
                "%s.kv_a_layernorm.weight", p)
        || bind(b, &l->kv_b, KIND_MATRIX,
                H * (c->qk_nope_head_dim + c->v_head_dim), kvl,
                "%s.kv_b_proj.weight", p)
        || bind(b, &l->o, KIND_MATRIX, D, H * c->v_head_dim,
                "%s.o_proj.weight", p)
        || bind(b, &l->idx_wq_b, KIND_MATRIX, IH * ID, ql,
                "%s.indexer.wq_b.weight", p)
        || bind(b, &l->idx_wk, KIND_MATRIX, ID, D, "%s.indexer.wk.weight", p)
        || bind(b, &l->idx_k_norm_w, KIND_NORM, ID, 0,
                "%s.indexer.k_norm.weight", p)
        || bind(b, &l->idx_k_norm_b, KIND_NORM, ID, 0,
                "%s.indexer.k_norm.bias", p)
        || bind(b, &l->idx_weights_proj, KIND_DENSE, IH, D,
                "%s.indexer.weights_proj.weight", p))
    {
        return -1;
    }
    return 0;
}

static int
bind_ffn(binder *b, const sg_config *c, sg_layer_weights *l, int i)
{
    int64_t D = c->hidden_size, E = c->n_routed_experts;
    char    p[96];

    if (i < c->first_k_dense_replace) {
        snprintf(p, sizeof(p), "model.layers.%d.mlp", i);
        return bind_mlp(b, &l->mlp, D, c->intermediate_size, p);
    }
    l->is_moe = 1;
    if (bind(b, &l->gate, KIND_DENSE, E, D, "model.layers.%d.mlp.gate.weight",
             i)
        || bind(b, &l->gate_bias, KIND_F32, E, 0,
                "model.layers.%d.mlp.gate.e_score_correction_bias", i))
    {
        return -1;
    }
    l->experts = calloc(E, sizeof(sg_mlp_weights));
    if (l->experts == NULL) {
        snprintf(b->err, b->errlen, "out of memory for %lld experts",
                 (long long)E);
        return -1;
    }
    for (int j = 0; j < E; j++) {
        snprintf(p, sizeof(p), "model.layers.%d.mlp.experts.%d", i, j);
        if (bind_mlp(b, &l->experts[j], D, c->moe_intermediate_size, p))
            return -1;
    }
    if (c->n_shared_experts > 0) {
        snprintf(p, sizeof(p), "model.layers.%d.mlp.shared_experts", i);
        if (bind_mlp(b, &l->shared, D,
                     (int64_t)c->n_shared_experts * c->moe_intermediate_size,
                     p))
        {
            return -1;
        }
    }
    return 0;
}

static int
bind_all(binder *bp, const sg_config *c, sg_weights *w)
{
    binder b = *bp;
    char  *err = b.err;
    int    errlen = b.errlen;
    int    L = c->num_hidden_layers;

    memset(w, 0, sizeof(*w));
    if (bind(&b, &w->embed, KIND_DENSE, c->vocab_size, c->hidden_size,
             "model.embed_tokens.weight")
        || bind(&b, &w->norm, KIND_NORM, c->hidden_size, 0,
                "model.norm.weight")
        || bind(&b, &w->lm_head, KIND_DENSE, c->vocab_size, c->hidden_size,
                "lm_head.weight"))
    {
        return -1;
    }
    w->layers = calloc(L, sizeof(sg_layer_weights));
    if (w->layers == NULL) {
        snprintf(err, errlen, "out of memory for %d layers", L);
        return -1;
    }
    w->n_layers = L;
    for (int i = 0; i < L; i++) {
        if (bind_attention(&b, c, &w->layers[i], i) != 0
            || bind_ffn(&b, c, &w->layers[i], i) != 0)
        {
            sg_weights_free(w);
            return -1;
        }
    }
    return 0;
}

int
sg_weights_bind(const sg_checkpoint *ck, const sg_config *c, sg_weights *w,
    char *err, int errlen)
{
    binder b = { ck, 0, err, errlen };

    return bind_all(&b, c, w);
}

int
sg_weights_shape(const sg_config *c, sg_weights *w, char *err, int errlen)
{
    binder b = { NULL, c->fp8, err, errlen };

    return bind_all(&b, c, w);
}

size_t
sg_tensor_bytes(const sg_tensor *t)
{
    size_t n = sg_dtype_size(t->dtype);

    for (int d = 0; d < t->ndim; d++)
        n *= (size_t)t->shape[d];
    if (t->scale)
        n += sizeof(float) * (size_t)((sg_tensor_rows(t) + 127) / 128)
             * (size_t)t->scale_cols;
    return n;
}

static void
visit_mlp(sg_mlp_weights *m, sg_weight_fn fn, void *ctx, int expert)
{
    fn(ctx, &m->gate, expert);
    fn(ctx, &m->up, expert);
    fn(ctx, &m->down, expert);
}

void
sg_weights_visit(sg_weights *w, const sg_config *c, sg_weight_fn fn,
    void *ctx)
{
    fn(ctx, &w->embed, -1);
    fn(ctx, &w->norm, -1);
    fn(ctx, &w->lm_head, -1);
    for (int l = 0; l < w->n_layers; l++) {
        sg_layer_weights *L = &w->layers[l];
        sg_tensor *t[] = {
            &L->attn_norm, &L->ffn_norm, &L->q_a, &L->q_a_norm, &L->q_b,
            &L->kv_a, &L->kv_a_norm, &L->kv_b, &L->o, &L->idx_wq_b,
            &L->idx_wk, &L->idx_k_norm_w, &L->idx_k_norm_b,
            &L->idx_weights_proj,
        };

        for (size_t i = 0; i < sizeof(t) / sizeof(*t); i++)
            fn(ctx, t[i], -1);
        if (!L->is_moe) {
            visit_mlp(&L->mlp, fn, ctx, -1);
            continue;
        }
        fn(ctx, &L->gate, -1);
        fn(ctx, &L->gate_bias, -1);
        for (int e = 0; e < c->n_routed_experts; e++)
            visit_mlp(&L->experts[e], fn, ctx, e);
        if (c->n_shared_experts > 0)
            visit_mlp(&L->shared, fn, ctx, -1);
    }
}

void
sg_weights_free(sg_weights *w)
{
    if (w->layers) {
        for (sg_layer_weights *l = w->layers; l < w->layers + w->n_layers; l++)
            free(l->experts);
    }
    free(w->layers);
    memset(w, 0, sizeof(*w));
}
