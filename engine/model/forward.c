/*
 * The forward pass of a DeepSeek-V3.2 model, written once over the backend
 * interface.  It follows DeepSeek's reference inference code (model.py with
 * the 2025-11-17 fix): MLA with interleaved RoPE, the DSA lightning indexer
 * (non-interleaved RoPE, Hadamard, FP8 q/k, ReLU-weighted head sum, top-k),
 * MHA-form attention for prefill and the absorbed MQA form for decode, dense
 * MLP then MoE layers, final RMSNorm and lm_head.
 *
 * A batch's rows are the new tokens of all items, item after item.  Linear
 * layers run on all rows at once; attention runs per prefill item and per
 * run of consecutive decode items.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "forward_scratch.h"
#include "group.h"
#include "model.h"

enum {
    S_X, S_H, S_QA, S_QR, S_Q, S_KV, S_LAT, S_PE, S_IQ, S_IK, S_IKN, S_IQ8,
    S_IQS, S_IK8, S_IKS, S_IW, S_SCORES, S_QLAT, S_QPE, S_OLAT, S_ATT, S_O,
    S_GLAT, S_GPE, S_KVFULL, S_ML, S_G, S_U, S_A, S_Y, S_Z, S_XE, S_GE, S_UE,
    S_YE,
    S_LAST, S_LOGITS, S_SEND, S_RECV, S_BACK, S_BACKR, S_COUNT
};

typedef struct {
    void   *p[S_COUNT];
    size_t  cap[S_COUNT];
} scratch_t;

/* A working buffer of at least `bytes`, grown (never shrunk) as needed. */
static void *
need(sg_model *m, int which, size_t bytes)
{
    scratch_t  *s = m->scratch;
    sg_backend *b = m->backend;

    if (s == NULL) {
        s = calloc(1, sizeof(*s));
        if (s == NULL)
            return NULL;
        m->scratch = s;
    }
    if (s->cap[which] >= bytes && s->p[which] != NULL)
        return s->p[which];
    if (s->p[which])
        b->ops->free(b, s->p[which]);
    bytes = bytes < 256 ? 256 : bytes + bytes / 4;
    s->p[which] = b->ops->alloc(b, bytes);
    s->cap[which] = s->p[which] ? bytes : 0;
    return s->p[which];
}

void
sg_forward_scratch_free(sg_model *m)
{
    scratch_t *s = m->scratch;

    if (s == NULL)
        return;
    for (int i = 0; i < S_COUNT; i++) {
        if (s->p[i])
            m->backend->ops->free(m->backend, s->p[i]);
    }
    free(s);
    m->scratch = NULL;
}

/* Host-side description of one forward call. */
typedef struct {
    sg_model        *m;
    sg_kv_pool      *pool;
    sg_batch_item   *items;
    int              n_items;
    const sg_trace  *trace;
    int              T;              /* rows */
    int32_t         *tokens;         /* [T] */
    int32_t         *pos;            /* [T] */
    int32_t         *row_seq;        /* [T] item of each row */
    int32_t         *row_start;      /* [n_items + 1] */
    int32_t         *block_table;    /* [n_items * max_blocks] */
    int              max_blocks;
    sg_rows          rows;           /* all rows */
    int32_t         *sel;            /* [T * K] top-k sets, NULL when dense */
    int32_t         *len;            /* [T] */
    int32_t         *experts;        /* [T * top_k] */
    float           *eweights;       /* [T * top_k] */
    int32_t         *forced;         /* [T * top_k] */
    int32_t         *erows;          /* [T] rows routed to one expert */
    float           *ew;             /* [T] their weights */
    float           *host_f;         /* [T * index_heads * 2] */
    int              aq;             /* fp8 GEMM activation quantization */
    int              ue8m0;
    char            *err;
    int              errlen;
    int              oom;          /* the step failed for want of memory */
} fwd_t;

/* The step cannot have the memory it needs: -1, and sg_forward says
 * SG_FORWARD_ENOMEM. */
static int
fwd_oom(fwd_t *f, const char *what, size_t bytes)
{
    snprintf(f->err, f->errlen, "backend %s: out of memory (%zu bytes of "
             "%s)", f->m->backend->name, bytes, what);
    f->oom = 1;
    return -1;
}

#define NEED(var, which, bytes) \
    do { \
        (var) = need(f->m, (which), (bytes)); \
        if ((var) == NULL) \
            return fwd_oom(f, "working memory", (size_t)(bytes)); \
    } while (0)

/* A sub-range of the batch's rows [r0, r0 + n). */
static sg_rows
rows_sub(const fwd_t *f, int r0, int n)
{
    sg_rows r = f->rows;

    r.n = n;
    r.pos = f->pos + r0;
    r.seq = f->row_seq + r0;
    return r;
}

/*
 * dst[i][0..ncols) = src[i * stride + col0 ..] for i < n.  The backend has
 * no strided copy; when the strides are multiples of ncols the rows are
 * gathered as ncols-wide rows, else the copy goes through the host.
 */
static int
copy_cols(fwd_t *f, const float *src, int stride, int col0, int ncols, int n,
    float *dst)
{
    sg_backend *b = f->m->backend;

    if (stride % ncols == 0 && col0 % ncols == 0) {
        int32_t *idx = f->erows;        /* T entries are enough: n <= T*H */
        int32_t *tmp = NULL;

        if (n > f->T)
            idx = tmp = malloc(sizeof(int32_t) * n);
        if (idx) {
            for (int i = 0; i < n; i++)
                idx[i] = (int32_t)(((int64_t)i * stride + col0) / ncols);
            b->ops->gather_rows(b, src, idx, n, ncols, dst);
            free(tmp);
            return 0;
        }
    }
    {
        size_t all = (size_t)n * stride;
        float *h = malloc(sizeof(float) * (all ? all : 1));
        float *o = malloc(sizeof(float) * (size_t)n * ncols + 1);
        int    rc = 0;

        if (h && o) {
            b->ops->download(b, h, src, sizeof(float) * all);
            for (int i = 0; i < n; i++)
                memcpy(o + (size_t)i * ncols, h + (size_t)i * stride + col0,
                       sizeof(float) * ncols);
            b->ops->upload(b, dst, o, sizeof(float) * (size_t)n * ncols);
        } else {
            rc = fwd_oom(f, "a column copy", sizeof(float) * (all + 1));
        }
        free(h);
        free(o);
        return rc;
    }
}

/* ---- attention block ---------------------------------------------------- */

/*
 * IndexCache (the idea SGLang reported for DSA models): adjacent layers'
 * top-k sets overlap a lot, so with index_share = N only every N-th layer
 * scores the context and the N - 1 layers after it attend the same keys,
 * f->sel left as that layer wrote it.  Their indexer keys are still
 * cached, so the switch changes compute, never the cache layout.
 */
static int
shares_selection(const sg_model *m, int l)
{
    return m->num.index_share > 1 && l % m->num.index_share != 0;
}

static void
trace_shared_selection(fwd_t *f, int l)
{
    const sg_trace *tr = f->trace;
    int             T = f->T, K = f->m->cfg.index_topk;

    if (tr && tr->out_topk)
        memcpy(tr->out_topk + (size_t)l * T * K, f->sel,
               sizeof(int32_t) * T * K);
}

/*
 * The sliding-window switch: instead of the indexer's choice, each row's
 * set is its index_topk most recent positions (itself included), -1
 * padded, in the layout indexer_select writes.
 */
static void
window_select(fwd_t *f, int l)
{
    const sg_trace *tr = f->trace;
    int             K = f->m->cfg.index_topk;

    for (int r = 0; r < f->T; r++) {
        int32_t *row = f->sel + (size_t)r * K;
        int      first = f->pos[r] + 1 - K, c = 0;

        for (int s = first > 0 ? first : 0; s <= f->pos[r]; s++)
            row[c++] = s;
        for (; c < K; c++)
            row[c] = -1;
    }
    if (tr && tr->out_topk)
        memcpy(tr->out_topk + (size_t)l * f->T * K, f->sel,
               sizeof(int32_t) * f->T * K);
}

/*
 * The lightning indexer's projections: every row's key (cached for later
 * rows) and, when this layer selects, its queries and head weights.
 */
static int
indexer(fwd_t *f, int l, const float *h, const float *qr)
{
    sg_model         *m = f->m;
    sg_backend       *b = m->backend;
    const sg_config  *c = &m->cfg;
    sg_layer_weights *L = &m->w.layers[l];
    int    T = f->T, IH = c->index_n_heads, ID = c->index_head_dim;
    int    inter = m->num.indexer_rope_interleaved;
    float *iq, *ik, *ikn, *iqs, *iks, *iw;
    uint8_t *iq8, *ik8;

    NEED(iq, S_IQ, sizeof(float) * T * IH * ID);
    NEED(ik, S_IK, sizeof(float) * T * ID);
    NEED(ikn, S_IKN, sizeof(float) * T * ID);
    NEED(iq8, S_IQ8, (size_t)T * IH * ID);
    NEED(iqs, S_IQS, sizeof(float) * T * IH);
    NEED(ik8, S_IK8, (size_t)T * ID);
    NEED(iks, S_IKS, sizeof(float) * T);
    NEED(iw, S_IW, sizeof(float) * T * IH);

    /* one key head from the attention input; the rotation keeps dot
     * products but spreads outliers before FP8 */
    b->ops->linear(b, &L->idx_wk, h, T, ik, f->aq, f->ue8m0);
    b->ops->layernorm(b, ik, &L->idx_k_norm_w, &L->idx_k_norm_b, 1e-6f, T, ID,
                      ikn);
    b->ops->rope(b, ikn, T, 1, ID, ID, 0, f->pos, &m->rope, inter);
    b->ops->hadamard(b, ikn, T, ID);
    b->ops->fp8_quant(b, ikn, T, ID, ik8, iks, f->ue8m0);
    if (m->num.dense || m->num.window || shares_selection(m, l))
        return 0;

    /* queries from the q latent */
    b->ops->linear(b, &L->idx_wq_b, qr, T, iq, f->aq, f->ue8m0);
    b->ops->rope(b, iq, T, IH, IH * ID, ID, 0, f->pos, &m->rope, inter);
    b->ops->hadamard(b, iq, T * IH, ID);
    b->ops->fp8_quant(b, iq, T * IH, ID, iq8, iqs, f->ue8m0);

    /* head weights: weights_proj(x) * IH^-0.5 * q_scale * ID^-0.5, in the
     * reference's order of f32 multiplications */
    b->ops->linear(b, &L->idx_weights_proj, h, T, iw, 0, f->ue8m0);
    {
        float *hw = f->host_f, *hs = f->host_f + (size_t)T * IH;
        float  c1 = (float)pow(IH, -0.5), c2 = (float)pow(ID, -0.5);

        b->ops->download(b, hw, iw, sizeof(float) * T * IH);
        b->ops->download(b, hs, iqs, sizeof(float) * T * IH);
        for (int i = 0; i < T * IH; i++) {
            float w = hw[i] * c1;
            w = w * hs[i];
            hw[i] = w * c2;
        }
        b->ops->upload(b, iw, hw, sizeof(float) * T * IH);
    }

    return 0;
}

static int
indexer_select(fwd_t *f, int l)
{
    sg_model        *m = f->m;
    sg_backend      *b = m->backend;
    const sg_config *c = &m->cfg;
    const sg_trace  *tr = f->trace;
    int     T = f->T, IH = c->index_n_heads, K = c->index_topk;
    int     ID = c->index_head_dim;
    scratch_t *s = m->scratch;
    uint8_t *iq8 = s->p[S_IQ8];
    float   *iw = s->p[S_IW];
    float   *scores;

    /* Rows go in chunks so that the score matrix stays bounded at long
     * context (rows x context floats). */
    for (int r0 = 0; r0 < T; ) {
        int maxpos = f->pos[r0], n = 0;

        while (r0 + n < T) {
            int p = f->pos[r0 + n] > maxpos ? f->pos[r0 + n] : maxpos;
            if (n > 0 && (size_t)(n + 1) * (p + 1) > (8u << 20))
                break;
            maxpos = p;
            n++;
        }
        int stride = maxpos + 1;
        sg_rows rs = rows_sub(f, r0, n);

        NEED(scores, S_SCORES, sizeof(float) * (size_t)n * stride);
        b->ops->index_scores(b, f->pool, l, &rs, iq8 + (size_t)r0 * IH * ID,
                             iw + (size_t)r0 * IH, IH, scores, stride);
        for (int i = 0; i < n; i++)
            f->len[r0 + i] = f->pos[r0 + i] + 1;
        b->ops->topk(b, scores, n, stride, f->len + r0, K,
                     f->sel + (size_t)r0 * K);

        if (tr && tr->out_index_scores) {
            float *dst = tr->out_index_scores
                         + ((size_t)l * T + r0) * tr->score_stride;
            for (int i = 0; i < n; i++) {
                int w = stride < tr->score_stride ? stride : tr->score_stride;
                b->ops->download(b, dst + (size_t)i * tr->score_stride,
                                 scores + (size_t)i * stride, sizeof(float) * w);
            }
        }
        r0 += n;
    }

    for (int r = 0; r < T; r++) {
        int32_t *row = f->sel + (size_t)r * K;

        if (tr && tr->force_topk) {
            const int32_t *fk = tr->force_topk(tr->ctx, l, r);
            if (fk)
                memcpy(row, fk, sizeof(int32_t) * K);
        }
        if (tr && tr->out_topk)
            memcpy(tr->out_topk + ((size_t)l * T + r) * K, row,
                   sizeof(int32_t) * K);
    }
    return 0;
}

/*
 * Which form a row's attention takes: prompt tokens the MHA form (kv_b
 * applied to every cached latent of the context, as the reference's
 * prefill), generated tokens the absorbed form (kv_b folded into the query
 * and the output, as the reference's decode).  Past the position where the
 * context's keys and values would outgrow num.mha_max_bytes (the backend's
 * default: 256 MiB on the CPU, reached at 2K tokens with V3.2's shapes; 0 on
 * the GPU, see backend.h), prompt tokens take the absorbed form too.  Rows
 * that attend every earlier key expand the context a range at a time
 * (attend_mha), so for them the bound limits how far the MHA form reaches,
 * not the memory it holds; rows with their own top-k sets expand the
 * context at once, and for them the bound is the memory's.
 * Choosing by the kind of token and its position, never by chunking or by
 * a prefix-cache hit, keeps every token's result bitwise independent of
 * how its prompt was scheduled.
 */
static int
uses_mha(const fwd_t *f, int it)
{
    int r0 = f->row_start[it], n = f->row_start[it + 1] - r0;

    return n > 1 || f->items[it].prompt;
}

/* Positions [0, mha_positions) of a prompt take the MHA form.  With the
 * indexer on, a row past index_topk attends index_topk keys of a longer
 * context: the absorbed form reads each of them once for all heads where
 * the MHA form would expand every key of the context, so it ends there
 * too (unless the model's mha_max_bytes is set explicitly, or FP8 GEMMs
 * quantize their inputs: the MHA form's kv_b GEMM then quantizes the
 * latents as the reference's prefill does, the absorbed form does not). */
static int
mha_positions(const sg_model *m)
{
    const sg_config *c = &m->cfg;
    size_t per_key = sizeof(float) * (size_t)c->num_attention_heads
                     * (c->qk_nope_head_dim + c->v_head_dim);
    size_t limit = m->num.mha_max_bytes ? m->num.mha_max_bytes
                                        : m->backend->mha_max_bytes;
    size_t keys = limit / per_key;

    if (!m->num.dense && m->num.mha_max_bytes == 0
        && !(m->num.act_quant && c->fp8) && keys > (size_t)c->index_topk)
        keys = c->index_topk;
    return keys > (size_t)m->max_pos ? m->max_pos : (int)keys;
}

/* Rows [r0, r0 + n) in the absorbed MQA form over the cache. */
static int
attend_absorbed(fwd_t *f, int l, const float *q, int r0, int n, float *att)
{
    sg_model         *m = f->m;
    sg_backend       *b = m->backend;
    const sg_config  *c = &m->cfg;
    sg_layer_weights *L = &m->w.layers[l];
    int   H = c->num_attention_heads, nope = c->qk_nope_head_dim;
    int   rope = c->qk_rope_head_dim, qk = nope + rope, v = c->v_head_dim;
    int   lora = c->kv_lora_rank, K = c->index_topk;
    float scale = (float)c->softmax_scale;

    /* bounded working memory: rows x heads x kv_lora per piece */
    for (int done = 0; done < n; ) {
        int    piece = n - done < 256 ? n - done : 256, r = r0 + done;
        float *qlat, *qpe, *olat;
        sg_rows rs = rows_sub(f, r, piece);

        NEED(qlat, S_QLAT, sizeof(float) * piece * H * lora);
        NEED(qpe, S_QPE, sizeof(float) * piece * H * rope);
        NEED(olat, S_OLAT, sizeof(float) * piece * H * lora);
        b->ops->mla_absorb(b, &L->kv_b, q + (size_t)r * H * qk, piece, H,
                           nope, rope, v, lora, qlat);
        if (copy_cols(f, q + (size_t)r * H * qk, qk, nope, rope, piece * H,
                      qpe) != 0)
            return -1;
        b->ops->attn_decode(b, f->pool, l, &rs, qlat, qpe,
                            f->sel ? f->sel + (size_t)r * K : NULL, K, H,
                            scale, olat);
        b->ops->mla_unabsorb(b, &L->kv_b, olat, piece, H, nope, v, lora,
                             att + (size_t)r * H * v);
        done += piece;
    }
    return 0;
}

/* Keys the MHA form expands at a time (num.mha_key_range's default): kv_b
 * applied to this many cached latents, attended, then the next ones
 * (attn_prefill carries each row's softmax between them), so its working
 * memory is bounded by the range and not by the context (at 16K tokens of
 * a 16-head model 16 MiB, not 128). */
#define MHA_KEY_RANGE 2048

_Static_assert(MHA_KEY_RANGE % SG_PREFILL_KEY_ALIGN == 0
               && SG_PREFILL_KEY_ALIGN % SG_KV_BLOCK == 0,
               "a key range starts on a tile and on a cache block");

/* Rows [r0, r0 + n) of prompt item `it` in the MHA form: keys and values
 * from the cached latents, range by range when every row attends all its
 * earlier keys (dense, or a DSA row before index_topk); rows with their
 * own top-k sets take the context's keys at once (mha_positions bounds
 * them). */
static int
attend_mha(fwd_t *f, int l, const float *q, int it, int r0, int n,
    float *att)
{
    sg_model         *m = f->m;
    sg_backend       *b = m->backend;
    const sg_config  *c = &m->cfg;
    sg_layer_weights *L = &m->w.layers[l];
    int   H = c->num_attention_heads, nope = c->qk_nope_head_dim;
    int   rope = c->qk_rope_head_dim, qk = nope + rope, v = c->v_head_dim;
    int   lora = c->kv_lora_rank, K = c->index_topk;
    int   S = f->pos[r0 + n - 1] + 1;
    int   every = f->sel == NULL || S <= K;
    int   range = m->num.mha_key_range > 0 ? m->num.mha_key_range
                                           : MHA_KEY_RANGE;
    float scale = (float)c->softmax_scale;
    float *glat, *gpe, *kvfull, *ml = NULL;
    const int32_t *bt = f->block_table + (size_t)it * f->max_blocks;
    sg_rows rs = rows_sub(f, r0, n);

    if (range % SG_PREFILL_KEY_ALIGN != 0) {
        snprintf(f->err, f->errlen, "num.mha_key_range %d is not a multiple "
                 "of %d", range, SG_PREFILL_KEY_ALIGN);
        return -1;
    }
    if (!every || range > S)
        range = S;
    NEED(glat, S_GLAT, sizeof(float) * (size_t)range * lora);
    NEED(gpe, S_GPE, sizeof(float) * (size_t)range * rope);
    NEED(kvfull, S_KVFULL, sizeof(float) * (size_t)range * H * (nope + v));
    if (range < S)
        NEED(ml, S_ML, sizeof(float) * (size_t)n * H * 2);
    for (int k0 = 0; k0 < S; k0 += range) {
        int nk = S - k0 < range ? S - k0 : range;

        b->ops->kv_gather(b, f->pool, l, bt + k0 / SG_KV_BLOCK, nk, glat,
                          gpe);
        b->ops->linear(b, &L->kv_b, glat, nk, kvfull, f->aq, f->ue8m0);
        b->ops->attn_prefill(b, q + (size_t)r0 * H * qk, kvfull, gpe, k0, nk,
                             &rs, every ? NULL : f->sel + (size_t)r0 * K, K,
                             H, nope, rope, v, scale, ml,
                             att + (size_t)r0 * H * v);
    }
    return 0;
}

static int
attention(fwd_t *f, int l, float *x)
{
    sg_model         *m = f->m;
    sg_backend       *b = m->backend;
    const sg_config  *c = &m->cfg;
    sg_layer_weights *L = &m->w.layers[l];
    int   T = f->T, D = c->hidden_size, H = c->num_attention_heads;
    int   nope = c->qk_nope_head_dim, rope = c->qk_rope_head_dim;
    int   qk = nope + rope, v = c->v_head_dim, lora = c->kv_lora_rank;
    float *h, *qa, *qr, *q, *kv, *lat, *pe, *att, *o;
    scratch_t *s;

    NEED(h, S_H, sizeof(float) * T * D);
    NEED(qa, S_QA, sizeof(float) * T * c->q_lora_rank);
    NEED(qr, S_QR, sizeof(float) * T * c->q_lora_rank);
    NEED(q, S_Q, sizeof(float) * T * H * qk);
    NEED(kv, S_KV, sizeof(float) * T * (lora + rope));
    NEED(lat, S_LAT, sizeof(float) * T * lora);
    NEED(pe, S_PE, sizeof(float) * T * rope);
    NEED(att, S_ATT, sizeof(float) * T * H * v);
    NEED(o, S_O, sizeof(float) * T * D);

    b->ops->rmsnorm(b, x, D, &L->attn_norm, 1e-6f, T, D, h, D);

    /* queries through the low-rank q path; RoPE on the last rope dims */
    b->ops->linear(b, &L->q_a, h, T, qa, f->aq, f->ue8m0);
    b->ops->rmsnorm(b, qa, c->q_lora_rank, &L->q_a_norm, 1e-6f, T,
                    c->q_lora_rank, qr, c->q_lora_rank);
    b->ops->linear(b, &L->q_b, qr, T, q, f->aq, f->ue8m0);
    b->ops->rope(b, q, T, H, H * qk, qk, nope, f->pos, &m->rope, 1);

    /* the compressed KV: normed latent + one shared RoPE key */
    b->ops->linear(b, &L->kv_a, h, T, kv, f->aq, f->ue8m0);
    b->ops->rmsnorm(b, kv, lora + rope, &L->kv_a_norm, 1e-6f, T, lora, lat,
                    lora);
    b->ops->rope(b, kv, T, 1, lora + rope, 0, lora, f->pos, &m->rope, 1);
    if (copy_cols(f, kv, lora + rope, lora, rope, T, pe) != 0)
        return -1;

    /* the keys go into the cache first: a row's own key is one of its
     * candidates */
    if (indexer(f, l, h, qr) != 0)
        return -1;
    s = m->scratch;
    b->ops->kv_store(b, f->pool, l, &f->rows, lat, pe, s->p[S_IK8],
                     s->p[S_IKS], f->ue8m0);
    if (!m->num.dense) {
        if (m->num.window)
            window_select(f, l);
        else if (shares_selection(m, l))
            trace_shared_selection(f, l);
        else if (indexer_select(f, l) != 0)
            return -1;
    }

    int mha_end = mha_positions(m);

    for (int it = 0; it < f->n_items; ) {
        int r0 = f->row_start[it], j = it;

        if (uses_mha(f, it)) {
            int r1 = f->row_start[it + 1], split = r0;

            while (split < r1 && f->pos[split] < mha_end)
                split++;
            if (split > r0 && attend_mha(f, l, q, it, r0, split - r0, att))
                return -1;
            if (split < r1
                && attend_absorbed(f, l, q, split, r1 - split, att) != 0)
                return -1;
            it++;
            continue;
        }
        /* a run of decode items */
        while (j < f->n_items && !uses_mha(f, j))
            j++;
        if (attend_absorbed(f, l, q, r0, f->row_start[j] - r0, att) != 0)
            return -1;
        it = j;
    }

    b->ops->linear(b, &L->o, att, T, o, f->aq, f->ue8m0);
    b->ops->add(b, x, o, (size_t)T * D);
    return 0;
}

/* ---- feed-forward ------------------------------------------------------- */

static int
mlp(fwd_t *f, const sg_mlp_weights *w, const float *in, int n, int inter,
    float *g, float *u, float *a, float *out)
{
    sg_backend *b = f->m->backend;

    b->ops->linear(b, &w->gate, in, n, g, f->aq, f->ue8m0);
    b->ops->linear(b, &w->up, in, n, u, f->aq, f->ue8m0);
    b->ops->silu_mul(b, g, u, a, (size_t)n * inter);
    b->ops->linear(b, &w->down, a, n, out, f->aq, f->ue8m0);
    return 0;
}

/*
 * The routed experts of one MoE layer: y[r] = sum over row r's experts, in
 * ascending expert id, of weight * expert(h[r]) -- the order the reference
 * accumulates them in, and the one every group size reproduces.
 *
 * Alone, each expert runs over the rows routed to it and scatter_add_rows
 * adds the results.  In a group of N ranks (expert-parallel):
 *   1. every rank all_gathers the row counts and routing of all ranks, so
 *      each derives the same exchange plan;
 *   2. dispatch (all_to_all): each row goes once to every rank that holds
 *      one of its experts, rows in ascending order per source;
 *   3. each rank runs its experts in ascending id over the rows it
 *      received (a row's result does not depend on its company: the
 *      backends' linear is batch invariant);
 *   4. combine (all_to_all): each (row, expert) result goes back to the
 *      row's rank, grouped by holder, experts ascending, rows ascending;
 *      holders own ascending ranges, so what arrives is in ascending
 *      expert id and ONE scatter_add_rows over it adds each row's
 *      results in the same order as alone: the same bits for any N and
 *      any spread of requests over ranks.
 * T may be 0 (a rank with nothing to run still serves the others).
 */
typedef struct {
    int      N, me, E, k, maxT;
    int32_t *T;            /* [N] rows of each rank */
    int32_t *ex;           /* [N][maxT * k] routing of each rank, -1 pad */
    int32_t *pos;          /* [N][maxT] where row r of rank s lies in recv */
    int32_t *idx;          /* row index lists (one use at a time) */
    float   *w;            /* their weights */
    int32_t *ysrc;         /* [pairs] source rank of each computed result */
    size_t  *off[4];       /* send/recv offsets and bytes, [N] each */
} moe_plan;

static void
moe_plan_free(moe_plan *p)
{
    free(p->T);
    free(p->ex);
    free(p->pos);
    free(p->idx);
    free(p->w);
    free(p->ysrc);
    for (int i = 0; i < 4; i++)
        free(p->off[i]);
}

/* 1 when any of the k experts at ex is held by rank d. */
static int
routes_to(const moe_plan *p, const int32_t *ex, int d)
{
    for (int j = 0; j < p->k; j++) {
        if (ex[j] >= 0 && sg_expert_owner(ex[j], p->N, p->E) == d)
            return 1;
    }
    return 0;
}

static int
coll_failed(fwd_t *f)
{
    snprintf(f->err, f->errlen, "device group: %s",
             f->m->coll->why[0] ? f->m->coll->why : "aborted");
    return -1;
}

/* Step 1: every rank's row count and routing, and the plan's arrays. */
static int
moe_gather(fwd_t *f, moe_plan *p)
{
    sg_coll *c = f->m->coll;
    int      T = f->T, cap = 0, rows = 0;
    int32_t *mine;

    p->T = malloc(sizeof(int32_t) * p->N);
    if (p->T == NULL)
        goto oom;
    if (p->N == 1) {
        p->T[0] = T;
    } else if (c->ops->all_gather(c, p->me, &T, sizeof(int32_t), p->T) != 0) {
        return coll_failed(f);
    }
    for (int s = 0; s < p->N; s++) {
        if (p->T[s] > p->maxT)
            p->maxT = p->T[s];
        rows += p->T[s];
    }
    cap = p->maxT > 0 ? p->maxT : 1;
    p->ex = malloc(sizeof(int32_t) * (size_t)p->N * cap * p->k);
    p->pos = malloc(sizeof(int32_t) * (size_t)p->N * cap);
    p->idx = malloc(sizeof(int32_t) * ((size_t)rows * p->k + p->N + 1));
    p->w = malloc(sizeof(float) * ((size_t)rows * p->k + 1));
    p->ysrc = malloc(sizeof(int32_t) * ((size_t)rows * p->k + 1));
    mine = malloc(sizeof(int32_t) * (size_t)cap * p->k);
    for (int i = 0; i < 4; i++)
        p->off[i] = calloc(p->N, sizeof(size_t));
    if (!p->ex || !p->pos || !p->idx || !p->w || !p->ysrc || !mine
        || !p->off[0] || !p->off[1] || !p->off[2] || !p->off[3])
    {
        free(mine);
        goto oom;
    }
    for (int i = 0; i < cap * p->k; i++)
        mine[i] = i < T * p->k ? f->experts[i] : -1;
    if (p->N == 1) {
        memcpy(p->ex, mine, sizeof(int32_t) * (size_t)cap * p->k);
    } else if (c->ops->all_gather(c, p->me, mine,
                                  sizeof(int32_t) * (size_t)cap * p->k,
                                  p->ex) != 0)
    {
        free(mine);
        return coll_failed(f);
    }
    free(mine);
    return 0;
oom:
    snprintf(f->err, f->errlen, "out of memory for the MoE exchange plan");
    f->oom = 1;
    return -1;
}

#define EX(p, s, r) ((p)->ex + ((size_t)(s) * (p)->maxT + (r)) * (p)->k)

/* Step 2: the rows this rank's experts need, in recv (s asc, r asc);
 * returns how many, or -1. */
static int
moe_dispatch(fwd_t *f, moe_plan *p, const float *h, float **recv)
{
    sg_backend *b = f->m->backend;
    sg_coll    *c = f->m->coll;
    int         D = f->m->cfg.hidden_size, n_send = 0, n_recv = 0;
    size_t      row = sizeof(float) * D;
    float      *send;

    for (int s = 0; s < p->N; s++) {
        for (int r = 0; r < p->T[s]; r++) {
            int here = p->N == 1 || routes_to(p, EX(p, s, r), p->me);
            p->pos[(size_t)s * p->maxT + r] = here ? n_recv++ : -1;
        }
    }
    if (p->N == 1) {
        *recv = (float *)h;             /* every row, in order */
        return n_recv;
    }
    /* what this rank sends: to each d its rows for d, ascending */
    for (int d = 0; d < p->N; d++) {
        size_t n0 = n_send;
        for (int r = 0; r < f->T; r++) {
            if (routes_to(p, EX(p, p->me, r), d))
                p->idx[n_send++] = r;
        }
        p->off[0][d] = n0 * row;
        p->off[1][d] = (n_send - n0) * row;
    }
    for (int s = 0, at = 0; s < p->N; s++) {
        int cnt = 0;
        for (int r = 0; r < p->T[s]; r++)
            cnt += p->pos[(size_t)s * p->maxT + r] >= 0;
        p->off[2][s] = (size_t)at * row;
        p->off[3][s] = (size_t)cnt * row;
        at += cnt;
    }
    NEED(send, S_SEND, row * (n_send ? n_send : 1));
    NEED(*recv, S_RECV, row * (n_recv ? n_recv : 1));
    if (n_send)
        b->ops->gather_rows(b, h, p->idx, n_send, D, send);
    if (c->ops->all_to_all(c, p->me, send, p->off[0], p->off[1], *recv,
                           p->off[2], p->off[3]) != 0)
    {
        return coll_failed(f);
    }
    return n_recv;
}

/* Step 3: this rank's experts over the received rows; results in (expert
 * asc, source asc, row asc) order, p->ysrc their source ranks.  Returns the
 * number of results, or -1. */
static int
moe_experts(fwd_t *f, int l, moe_plan *p, const float *recv, int n_recv,
    float **yall)
{
    sg_model         *m = f->m;
    sg_backend       *b = m->backend;
    sg_layer_weights *L = &m->w.layers[l];
    int    D = m->cfg.hidden_size, mi = m->cfg.moe_intermediate_size;
    int    n = 0;
    float *xe, *g, *u, *a;

    NEED(*yall, S_YE, sizeof(float) * D * ((size_t)n_recv * p->k + 1));
    for (int e = m->expert_begin; e < m->expert_end; e++) {
        int cnt = 0;

        for (int s = 0; s < p->N; s++) {
            for (int r = 0; r < p->T[s]; r++) {
                const int32_t *ex = EX(p, s, r);
                for (int j = 0; j < p->k; j++) {
                    if (ex[j] != e)
                        continue;
                    p->idx[cnt++] = p->pos[(size_t)s * p->maxT + r];
                    p->ysrc[n + cnt - 1] = s;
                }
            }
        }
        if (cnt == 0)
            continue;
        NEED(xe, S_XE, sizeof(float) * D * cnt);
        NEED(g, S_G, sizeof(float) * mi * cnt);
        NEED(u, S_U, sizeof(float) * mi * cnt);
        NEED(a, S_A, sizeof(float) * mi * cnt);
        b->ops->gather_rows(b, recv, p->idx, cnt, D, xe);
        mlp(f, &L->experts[e], xe, cnt, mi, g, u, a,
            *yall + (size_t)n * D);
        n += cnt;
    }
    return n;
}

/* Step 4: the results back to their rows' ranks; returns where this
 * rank's results lie, in ascending expert id, or NULL. */
static const float *
moe_combine(fwd_t *f, moe_plan *p, const float *yall, int n_y, int *n_back)
{
    sg_backend *b = f->m->backend;
    sg_coll    *c = f->m->coll;
    int         D = f->m->cfg.hidden_size, n = 0, got = 0;
    size_t      row = sizeof(float) * D;
    float      *back, *backr;

    if (p->N == 1) {
        *n_back = n_y;
        return yall;
    }
    /* to each source s its results, in the order computed */
    for (int s = 0; s < p->N; s++) {
        int n0 = n;
        for (int i = 0; i < n_y; i++) {
            if (p->ysrc[i] == s)
                p->idx[n++] = i;
        }
        p->off[0][s] = (size_t)n0 * row;
        p->off[1][s] = (size_t)(n - n0) * row;
    }
    /* from each holder d the results for this rank's rows */
    for (int d = 0; d < p->N; d++) {
        int lo = sg_expert_first(d, p->N, p->E);
        int hi = sg_expert_first(d + 1, p->N, p->E), cnt = 0;
        for (int i = 0; i < f->T * p->k; i++)
            cnt += f->experts[i] >= lo && f->experts[i] < hi;
        p->off[2][d] = (size_t)got * row;
        p->off[3][d] = (size_t)cnt * row;
        got += cnt;
    }
    back = need(f->m, S_BACK, row * (n ? n : 1));
    backr = need(f->m, S_BACKR, row * (got ? got : 1));
    if (back == NULL || backr == NULL) {
        snprintf(f->err, f->errlen, "backend %s: out of memory (MoE "
                 "exchange buffers)", b->name);
        f->oom = 1;
        return NULL;
    }
    if (n)
        b->ops->gather_rows(b, yall, p->idx, n, D, back);
    if (c->ops->all_to_all(c, p->me, back, p->off[0], p->off[1], backr,
                           p->off[2], p->off[3]) != 0)
    {
        coll_failed(f);
        return NULL;
    }
    *n_back = got;
    return backr;
}

static int
moe_routed(fwd_t *f, int l, const float *h, float *y)
{
    sg_model   *m = f->m;
    sg_backend *b = m->backend;
    moe_plan    p;
    int         D = m->cfg.hidden_size, n_recv, n_y, n_back = 0, rc = -1;
    float      *recv = NULL, *yall = NULL;
    const float *back;

    memset(&p, 0, sizeof(p));
    p.N = m->n_ranks;
    p.me = m->rank;
    p.E = m->cfg.n_routed_experts;
    p.k = m->cfg.num_experts_per_tok;
    if (moe_gather(f, &p) != 0
        || (n_recv = moe_dispatch(f, &p, h, &recv)) < 0
        || (n_y = moe_experts(f, l, &p, recv, n_recv, &yall)) < 0
        || (back = moe_combine(f, &p, yall, n_y, &n_back)) == NULL)
    {
        goto out;
    }
    /* this rank's (row, expert) pairs in ascending expert id, rows
     * ascending: the order the results arrived in */
    {
        int n = 0;
        for (int e = 0; e < p.E; e++) {
            for (int r = 0; r < f->T; r++) {
                for (int j = 0; j < p.k; j++) {
                    if (f->experts[(size_t)r * p.k + j] != e)
                        continue;
                    p.idx[n] = r;
                    p.w[n++] = f->eweights[(size_t)r * p.k + j];
                }
            }
        }
        if (n != n_back) {
            snprintf(f->err, f->errlen, "MoE combine: %d results for %d "
                     "routed pairs", n_back, n);
            goto out;
        }
        if (n)
            b->ops->scatter_add_rows(b, y, p.idx, p.w, n, D, back);
    }
    rc = 0;
out:
    moe_plan_free(&p);
    return rc;
}

static int
feed_forward(fwd_t *f, int l, float *x)
{
    sg_model         *m = f->m;
    sg_backend       *b = m->backend;
    const sg_config  *c = &m->cfg;
    sg_layer_weights *L = &m->w.layers[l];
    const sg_trace   *tr = f->trace;
    int    T = f->T, D = c->hidden_size, E = c->n_routed_experts;
    int    k = c->num_experts_per_tok, mi = c->moe_intermediate_size;
    int    si = mi * c->n_shared_experts;
    int    inter = L->is_moe ? (mi > si ? mi : si) : c->intermediate_size;
    float *h, *g, *u, *a, *y, *z, *logits;

    NEED(h, S_H, sizeof(float) * T * D);
    NEED(g, S_G, sizeof(float) * T * inter);
    NEED(u, S_U, sizeof(float) * T * inter);
    NEED(a, S_A, sizeof(float) * T * inter);
    NEED(y, S_Y, sizeof(float) * T * D);

    b->ops->rmsnorm(b, x, D, &L->ffn_norm, 1e-6f, T, D, h, D);

    if (!L->is_moe) {
        mlp(f, &L->mlp, h, T, c->intermediate_size, g, u, a, y);
        b->ops->add(b, x, y, (size_t)T * D);
        if (tr && tr->out_experts) {
            for (int i = 0; i < T * k; i++) {
                tr->out_experts[(size_t)l * T * k + i] = -1;
                if (tr->out_expert_weights)
                    tr->out_expert_weights[(size_t)l * T * k + i] = 0;
            }
        }
        return 0;
    }

    NEED(z, S_Z, sizeof(float) * T * D);
    NEED(logits, S_LOGITS, sizeof(float) * T * (E > 1 ? E : 1));

    /* routing in f32 on the normed input */
    b->ops->linear(b, &L->gate, h, T, logits, 0, f->ue8m0);
    const int32_t *forced = NULL;
    if (tr && tr->force_experts) {
        int all = 1;
        for (int r = 0; r < T; r++) {
            const int32_t *fe = tr->force_experts(tr->ctx, l, r);
            if (fe == NULL) {
                all = 0;
                break;
            }
            memcpy(f->forced + (size_t)r * k, fe, sizeof(int32_t) * k);
        }
        forced = all ? f->forced : NULL;
    }
    b->ops->moe_route(b, logits,
                      L->gate_bias.data ? (const float *)L->gate_bias.data : NULL,
                      T, E, c->n_group, c->topk_group, k, c->norm_topk_prob,
                      c->routed_scaling_factor, forced, f->experts,
                      f->eweights);
    if (tr && tr->out_experts)
        memcpy(tr->out_experts + (size_t)l * T * k, f->experts,
               sizeof(int32_t) * T * k);
    if (tr && tr->out_expert_weights)
        memcpy(tr->out_expert_weights + (size_t)l * T * k, f->eweights,
               sizeof(float) * T * k);

    {
        /* y = 0 (the backend has no fill op; this is small next to the
         * expert GEMMs) */
        size_t bytes = sizeof(float) * T * D;
        float *hz = calloc(1, bytes);
        if (hz == NULL)
            return fwd_oom(f, "host zeros", bytes);
        b->ops->upload(b, y, hz, bytes);
        free(hz);
    }
    if (moe_routed(f, l, h, y) != 0)
        return -1;
    /* the experts' buffers may have grown: fetch them again */
    NEED(g, S_G, sizeof(float) * T * inter);
    NEED(u, S_U, sizeof(float) * T * inter);
    NEED(a, S_A, sizeof(float) * T * inter);
    mlp(f, &L->shared, h, T, si, g, u, a, z);
    b->ops->add(b, y, z, (size_t)T * D);
    b->ops->add(b, x, y, (size_t)T * D);
    return 0;
}

/* ---- the whole model ---------------------------------------------------- */

static int
trace_hidden(fwd_t *f, const float *x, int slot)
{
    const sg_trace *tr = f->trace;
    sg_backend     *b = f->m->backend;
    int D = f->m->cfg.hidden_size, L = f->m->cfg.num_hidden_layers;

    if (tr == NULL || tr->out_hidden == NULL)
        return 0;
    for (int r = 0; r < f->T; r++) {
        b->ops->download(b, tr->out_hidden + ((size_t)r * (L + 1) + slot) * D,
                         x + (size_t)r * D, sizeof(float) * D);
    }
    return 0;
}

static int
final_logits(fwd_t *f, const float *x)
{
    sg_model        *m = f->m;
    sg_backend      *b = m->backend;
    const sg_config *c = &m->cfg;
    int    D = c->hidden_size, V = c->vocab_size, n = 0;
    float *last, *hl, *logits;

    for (int it = 0; it < f->n_items; it++) {
        if (f->items[it].logits)
            f->erows[n++] = f->row_start[it + 1] - 1;
    }
    if (n == 0)
        return 0;
    NEED(last, S_LAST, sizeof(float) * n * D);
    NEED(hl, S_XE, sizeof(float) * n * D);
    NEED(logits, S_LOGITS, sizeof(float) * (size_t)n * V);
    b->ops->gather_rows(b, x, f->erows, n, D, last);
    b->ops->rmsnorm(b, last, D, &m->w.norm, 1e-6f, n, D, hl, D);
    b->ops->linear(b, &m->w.lm_head, hl, n, logits, 0, f->ue8m0);
    for (int it = 0, j = 0; it < f->n_items; it++) {
        if (f->items[it].logits == NULL)
            continue;
        b->ops->download(b, f->items[it].logits, logits + (size_t)j * V,
                         sizeof(float) * V);
        j++;
    }
    return 0;
}

static int
check_items(sg_model *m, sg_kv_pool *pool, sg_batch_item *items, int n_items,
    char *err, int errlen)
{
    const sg_config *c = &m->cfg;

    if (n_items <= 0) {
        snprintf(err, errlen, "empty batch");
        return -1;
    }
    for (int it = 0; it < n_items; it++) {
        sg_batch_item *x = &items[it];
        int end;

        if (x->seq == NULL || x->n_tokens <= 0 || x->tokens == NULL) {
            snprintf(err, errlen, "batch item %d: no tokens", it);
            return -1;
        }
        end = x->seq->n_tokens + x->n_tokens;
        if (end > m->max_pos) {
            snprintf(err, errlen, "batch item %d: position %d past the "
                     "model's limit %d", it, end - 1, m->max_pos);
            return -1;
        }
        if ((int64_t)x->seq->n_blocks * SG_KV_BLOCK < end) {
            snprintf(err, errlen, "batch item %d: %d cache blocks hold %d "
                     "tokens, %d needed", it, x->seq->n_blocks,
                     x->seq->n_blocks * SG_KV_BLOCK, end);
            return -1;
        }
        for (int i = 0; i < x->seq->n_blocks; i++) {
            if (x->seq->blocks[i] < 0 || x->seq->blocks[i] >= pool->n_blocks) {
                snprintf(err, errlen, "batch item %d: block id %d out of the "
                         "pool's range", it, x->seq->blocks[i]);
                return -1;
            }
        }
        for (int i = 0; i < x->n_tokens; i++) {
            if (x->tokens[i] < 0 || x->tokens[i] >= c->vocab_size) {
                snprintf(err, errlen, "batch item %d: token id %d outside the "
                         "vocabulary (0..%d)", it, x->tokens[i],
                         c->vocab_size - 1);
                return -1;
            }
        }
    }
    return 0;
}

/*
 * A group rank's step with no rows: it takes part in every MoE layer's
 * exchange, running its experts for the other ranks' tokens.
 */
static int
forward_empty(sg_model *m, char *err, int errlen)
{
    fwd_t f;

    memset(&f, 0, sizeof(f));
    f.m = m;
    f.err = err;
    f.errlen = errlen;
    f.aq = m->num.act_quant && m->cfg.fp8;
    f.ue8m0 = m->cfg.scale_ue8m0;
    for (int l = 0; l < m->cfg.num_hidden_layers; l++) {
        if (m->w.layers[l].is_moe && moe_routed(&f, l, NULL, NULL) != 0)
            return -1;
    }
    return m->backend->ops->sync(m->backend, err, errlen);
}

static int
forward_batch(sg_model *m, sg_kv_pool *pool, sg_batch_item *items,
    int n_items, const sg_trace *trace, char *err, int errlen)
{
    const sg_config *c = &m->cfg;
    sg_backend      *b = m->backend;
    fwd_t            f;
    float           *x;
    int              rc = -1, T = 0, K = c->index_topk;
    int              k = c->num_experts_per_tok;

    if (check_items(m, pool, items, n_items, err, errlen) != 0)
        return -1;

    memset(&f, 0, sizeof(f));
    f.m = m;
    f.pool = pool;
    f.items = items;
    f.n_items = n_items;
    f.trace = trace;
    f.err = err;
    f.errlen = errlen;
    f.aq = m->num.act_quant && c->fp8;
    f.ue8m0 = c->scale_ue8m0;
    for (int it = 0; it < n_items; it++) {
        T += items[it].n_tokens;
        if (items[it].seq->n_blocks > f.max_blocks)
            f.max_blocks = items[it].seq->n_blocks;
    }
    f.T = T;
    f.tokens = malloc(sizeof(int32_t) * T);
    f.pos = malloc(sizeof(int32_t) * T);
    f.row_seq = malloc(sizeof(int32_t) * T);
    f.row_start = malloc(sizeof(int32_t) * (n_items + 1));
    f.block_table = calloc((size_t)n_items * f.max_blocks, sizeof(int32_t));
    f.sel = m->num.dense ? NULL : malloc(sizeof(int32_t) * (size_t)T * K);
    f.len = malloc(sizeof(int32_t) * T);
    f.experts = malloc(sizeof(int32_t) * T * k);
    f.eweights = malloc(sizeof(float) * T * k);
    f.forced = malloc(sizeof(int32_t) * T * k);
    f.erows = malloc(sizeof(int32_t) * T);
    f.ew = malloc(sizeof(float) * T);
    f.host_f = malloc(sizeof(float) * (size_t)T * c->index_n_heads * 2);
    if (!f.tokens || !f.pos || !f.row_seq || !f.row_start || !f.block_table
        || (!m->num.dense && !f.sel) || !f.len || !f.experts || !f.eweights
        || !f.forced || !f.erows || !f.ew || !f.host_f)
    {
        fwd_oom(&f, "a batch's row data", (size_t)T * sizeof(int32_t));
        goto done;
    }

    for (int it = 0, r = 0; it < n_items; it++) {
        sg_batch_item *x = &items[it];

        f.row_start[it] = r;
        memcpy(f.block_table + (size_t)it * f.max_blocks, x->seq->blocks,
               sizeof(int32_t) * x->seq->n_blocks);
        for (int i = 0; i < x->n_tokens; i++, r++) {
            f.tokens[r] = x->tokens[i];
            f.pos[r] = x->seq->n_tokens + i;
            f.row_seq[r] = it;
        }
    }
    f.row_start[n_items] = T;
    f.rows.n = T;
    f.rows.pos = f.pos;
    f.rows.seq = f.row_seq;
    f.rows.block_table = f.block_table;
    f.rows.max_blocks = f.max_blocks;

    x = need(m, S_X, sizeof(float) * T * c->hidden_size);
    if (x == NULL) {
        fwd_oom(&f, "working memory", sizeof(float) * T * c->hidden_size);
        goto done;
    }
    b->ops->embed(b, &m->w.embed, f.tokens, T, x);
    trace_hidden(&f, x, 0);

    for (int l = 0; l < c->num_hidden_layers; l++) {
        if (attention(&f, l, x) != 0 || feed_forward(&f, l, x) != 0)
            goto done;
        trace_hidden(&f, x, l + 1);
    }
    if (final_logits(&f, x) != 0)
        goto done;
    rc = b->ops->sync(b, err, errlen);
    if (rc != 0) {
        f.oom = rc == SG_BACKEND_ENOMEM;
        rc = -1;
        goto done;
    }

    for (int it = 0; it < n_items; it++)
        items[it].seq->n_tokens += items[it].n_tokens;
    rc = 0;

done:
    if (rc != 0 && f.oom)
        rc = SG_FORWARD_ENOMEM;
    free(f.tokens);
    free(f.pos);
    free(f.row_seq);
    free(f.row_start);
    free(f.block_table);
    free(f.sel);
    free(f.len);
    free(f.experts);
    free(f.eweights);
    free(f.forced);
    free(f.erows);
    free(f.ew);
    free(f.host_f);
    return rc;
}

int
sg_forward(sg_model *m, sg_kv_pool *pool, sg_batch_item *items, int n_items,
    const sg_trace *trace, char *err, int errlen)
{
    int  rc;
    char why[160];

    if (m->n_ranks > 1 && m->coll == NULL) {
        snprintf(err, errlen, "rank %d of %d has no collective (load it "
                 "with its device group)", m->rank, m->n_ranks);
        return -1;
    }
    if (n_items == 0 && m->n_ranks > 1)
        rc = forward_empty(m, err, errlen);
    else
        rc = forward_batch(m, pool, items, n_items, trace, err, errlen);
    /* the other ranks must not wait for this one's exchanges */
    if (rc != 0 && m->coll) {
        snprintf(why, sizeof(why), "rank %d: %s", m->rank, err);
        m->coll->ops->abort(m->coll, why);
    }
    return rc;
}
