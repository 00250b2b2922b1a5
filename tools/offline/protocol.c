/*
 * The fixtures' prefill + decode protocol over sg_forward.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model/group.h"
#include "protocol.h"

#define PREFILL_CHUNK 2048     /* prompt tokens per forward call */

int32_t
sg_argmax(const float *x, int n)
{
    int32_t best = 0;

    for (int i = 1; i < n; i++) {
        if (x[i] > x[best])
            best = i;
    }
    return best;
}

/* Draws from softmax(x / temperature) with a per-run xorshift stream. */
static int32_t
sample(const float *x, int n, float temperature, uint64_t *state)
{
    double max = x[sg_argmax(x, n)], sum = 0, u, acc = 0;

    for (int i = 0; i < n; i++)
        sum += exp((x[i] - max) / temperature);
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    u = (double)(*state >> 11) / 9007199254740992.0 * sum;
    for (int i = 0; i < n; i++) {
        acc += exp((x[i] - max) / temperature);
        if (acc > u)
            return i;
    }
    return n - 1;
}

static double
now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* CPU time of the whole process: on a shared machine a run's wall time
 * also counts the time other jobs held the cores. */
static double
cpu_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Which recorded decisions a forward call reads: the prefill's rows, or
 * one decode step (query row step + 1). */
typedef struct {
    const sg_protocol *p;
    const sg_config   *c;
    int                step;      /* -1 = prefill */
} force_ctx;

static const int32_t *
force_topk(void *ctx, int layer, int row)
{
    force_ctx       *f = ctx;
    const sg_config *c = f->c;
    int K = c->index_topk, N = f->p->steps, P = f->p->n_prompt;

    if (f->step < 0)
        return f->p->force_prefill_topk
               ? f->p->force_prefill_topk + ((size_t)layer * P + row) * K : NULL;
    return f->p->force_topk
           ? f->p->force_topk + ((size_t)layer * (N + 1) + f->step + 1) * K
           : NULL;
}

static const int32_t *
force_experts(void *ctx, int layer, int row)
{
    force_ctx       *f = ctx;
    const sg_config *c = f->c;
    int k = c->num_experts_per_tok, L = c->num_hidden_layers;
    int P = f->p->n_prompt;

    if (layer < c->first_k_dense_replace)
        return NULL;
    if (f->step < 0)
        return f->p->force_prefill_experts
               ? f->p->force_prefill_experts + ((size_t)layer * P + row) * k
               : NULL;
    return f->p->force_experts
           ? f->p->force_experts + ((size_t)(f->step + 1) * L + layer) * k
           : NULL;
}

void
sg_protocol_out_free(sg_protocol_out *o)
{
    free(o->prefill_logits);
    free(o->decode_logits);
    free(o->tokens);
    free(o->hidden);
    free(o->experts);
    free(o->expert_weights);
    free(o->prefill_experts_all);
    free(o->topk);
    free(o->index_scores);
    free(o->prefill_topk_all);
    memset(o, 0, sizeof(*o));
}

/* Copies query row `src_row` of a forward call's trace into output row
 * `q` (0 = last prompt position, i + 1 = decode step i). */
static void
keep_row(const sg_config *c, const sg_trace *tr, int T, int src_row, int q,
    int N, int P, int sparse, sg_protocol_out *o)
{
    int L = c->num_hidden_layers, D = c->hidden_size, k = c->num_experts_per_tok;
    int K = c->index_topk, S = P + N;

    memcpy(o->hidden + (size_t)q * (L + 1) * D,
           tr->out_hidden + (size_t)src_row * (L + 1) * D,
           sizeof(float) * (L + 1) * D);
    for (int l = 0; l < L; l++) {
        memcpy(o->experts + ((size_t)q * L + l) * k,
               tr->out_experts + ((size_t)l * T + src_row) * k,
               sizeof(int32_t) * k);
        memcpy(o->expert_weights + ((size_t)q * L + l) * k,
               tr->out_expert_weights + ((size_t)l * T + src_row) * k,
               sizeof(float) * k);
        if (!sparse)
            continue;
        memcpy(o->topk + ((size_t)l * (N + 1) + q) * K,
               tr->out_topk + ((size_t)l * T + src_row) * K,
               sizeof(int32_t) * K);
        memcpy(o->index_scores + ((size_t)l * (N + 1) + q) * S,
               tr->out_index_scores + ((size_t)l * T + src_row) * S,
               sizeof(float) * S);
    }
}

int
sg_protocol_run(sg_model *m, const sg_protocol *p, sg_protocol_out *o,
    char *err, int errlen)
{
    const sg_config *c = &m->cfg;
    int   P = p->n_prompt, N = p->steps, V = c->vocab_size;
    int   L = c->num_hidden_layers, D = c->hidden_size;
    int   K = c->index_topk, k = c->num_experts_per_tok;
    int   S = P + N, sparse = !m->num.dense, rc = -1;
    int   nb = (S + SG_KV_BLOCK - 1) / SG_KV_BLOCK;
    sg_kv_pool *pool = NULL;
    sg_seq      seq = { 0 };
    sg_trace    tr = { 0 };
    force_ctx   fc = { p, c, -1 };
    double      t0, c0;
    uint64_t    rng = p->seed * 0x9E3779B97F4A7C15ull + 1;

    memset(o, 0, sizeof(*o));
    if (P <= 0 || N < 0) {
        snprintf(err, errlen, "the prompt is empty");
        return -1;
    }
    pool = sg_kv_pool_new(m->backend, c, nb, m->num.kv_fp8);
    seq.blocks = malloc(sizeof(int32_t) * nb);
    o->prefill_logits = malloc(sizeof(float) * V);
    o->decode_logits = malloc(sizeof(float) * (size_t)(N ? N : 1) * V);
    o->tokens = malloc(sizeof(int32_t) * (N + 1));
    if (!pool || !seq.blocks || !o->prefill_logits || !o->decode_logits
        || !o->tokens)
    {
        snprintf(err, errlen, "out of memory for %d positions", S);
        goto done;
    }
    for (int i = 0; i < nb; i++)
        seq.blocks[i] = i;
    seq.n_blocks = seq.cap_blocks = nb;

    if (p->trace) {
        /* the prefill's trace covers all P rows; decode steps reuse it */
        tr.out_hidden = malloc(sizeof(float) * (size_t)P * (L + 1) * D);
        tr.out_experts = malloc(sizeof(int32_t) * (size_t)L * P * k);
        tr.out_expert_weights = malloc(sizeof(float) * (size_t)L * P * k);
        o->hidden = malloc(sizeof(float) * (size_t)(N + 1) * (L + 1) * D);
        o->experts = malloc(sizeof(int32_t) * (size_t)(N + 1) * L * k);
        o->expert_weights = malloc(sizeof(float) * (size_t)(N + 1) * L * k);
        o->prefill_experts_all = malloc(sizeof(int32_t) * (size_t)L * P * k);
        if (sparse) {
            tr.out_topk = malloc(sizeof(int32_t) * (size_t)L * P * K);
            tr.out_index_scores = malloc(sizeof(float) * (size_t)L * P * S);
            tr.score_stride = S;
            o->topk = malloc(sizeof(int32_t) * (size_t)L * (N + 1) * K);
            o->index_scores = malloc(sizeof(float) * (size_t)L * (N + 1) * S);
            o->prefill_topk_all = malloc(sizeof(int32_t) * (size_t)L * P * K);
        }
        if (!tr.out_hidden || !tr.out_experts || !tr.out_expert_weights
            || !o->hidden || !o->experts || !o->expert_weights
            || !o->prefill_experts_all
            || (sparse && (!tr.out_topk || !tr.out_index_scores || !o->topk
                           || !o->index_scores || !o->prefill_topk_all)))
        {
            snprintf(err, errlen, "out of memory for the trace");
            goto done;
        }
        if (sparse) {
            for (size_t i = 0; i < (size_t)L * P * S; i++)
                tr.out_index_scores[i] = -INFINITY;
        }
    }
    tr.force_topk = force_topk;
    tr.force_experts = force_experts;
    tr.ctx = &fc;

    /* prefill: without a trace to record or decisions to force (both
     * indexed by prompt position), in chunks of PREFILL_CHUNK tokens, so
     * that the working memory stays bounded whatever the prompt's length;
     * a token's result does not depend on the chunking (test_forward's
     * chunks/equal) */
    sg_batch_item item = { &seq, p->prompt, P, o->prefill_logits, 1 };
    int chunked = !p->trace && !p->force_prefill_topk
                  && !p->force_prefill_experts;
    t0 = now();
    c0 = cpu_now();
    for (int r0 = 0; r0 < P; ) {
        int n = chunked && P - r0 > PREFILL_CHUNK ? PREFILL_CHUNK : P - r0;

        item.tokens = p->prompt + r0;
        item.n_tokens = n;
        item.logits = r0 + n == P ? o->prefill_logits : NULL;
        if (sg_forward(m, pool, &item, 1, &tr, err, errlen) != 0)
            goto done;
        r0 += n;
    }
    o->prefill_seconds = now() - t0;
    o->prefill_cpu_seconds = cpu_now() - c0;
    o->tokens[0] = p->temperature > 0
                   ? sample(o->prefill_logits, V, p->temperature, &rng)
                   : sg_argmax(o->prefill_logits, V);
    if (p->trace) {
        memcpy(o->prefill_experts_all, tr.out_experts,
               sizeof(int32_t) * (size_t)L * P * k);
        if (sparse)
            memcpy(o->prefill_topk_all, tr.out_topk,
                   sizeof(int32_t) * (size_t)L * P * K);
        keep_row(c, &tr, P, P - 1, 0, N, P, sparse, o);
        if (sparse) {
            for (size_t i = 0; i < (size_t)L * 1 * S; i++)
                tr.out_index_scores[i] = -INFINITY;
        }
    }

    /* decode: step i feeds tokens[i] (or the teacher's) at position P + i */
    t0 = now();
    c0 = cpu_now();
    for (int i = 0; i < N; i++) {
        int32_t tok = p->teacher ? p->teacher[i] : o->tokens[i];

        fc.step = i;
        item.tokens = &tok;
        item.n_tokens = 1;
        item.logits = o->decode_logits + (size_t)i * V;
        item.prompt = 0;
        if (sg_forward(m, pool, &item, 1, &tr, err, errlen) != 0)
            goto done;
        o->tokens[i + 1] = p->temperature > 0
                           ? sample(item.logits, V, p->temperature, &rng)
                           : sg_argmax(item.logits, V);
        if (p->trace)
            keep_row(c, &tr, 1, 0, i + 1, N, P, sparse, o);
    }
    o->decode_seconds = now() - t0;
    o->decode_cpu_seconds = cpu_now() - c0;
    rc = 0;

done:
    free(tr.out_hidden);
    free(tr.out_experts);
    free(tr.out_expert_weights);
    free(tr.out_topk);
    free(tr.out_index_scores);
    free(seq.blocks);
    sg_kv_pool_free(pool);
    if (rc != 0)
        sg_protocol_out_free(o);
    return rc;
}

typedef struct {
    struct sg_group   *g;
    int                rank;
    const sg_protocol *p;
    sg_protocol_out   *out;
    int                rc;
    char              *err;
    int                errlen;
} group_run;

static void
run_rank(void *ctx, int r)
{
    group_run *gr = ctx;
    sg_model  *m = sg_group_model(gr->g, r);
    char       err[256];

    if (r == gr->rank) {
        gr->rc = sg_protocol_run(m, gr->p, gr->out, gr->err, gr->errlen);
        /* failed outside a step: the others must not wait for it */
        if (gr->rc != 0 && m->coll)
            m->coll->ops->abort(m->coll, gr->err);
        return;
    }
    /* the prefill, then one step per decode */
    for (int s = 0; s <= gr->p->steps; s++) {
        if (sg_forward(m, NULL, NULL, 0, NULL, err, sizeof(err)) != 0)
            return;              /* the protocol's rank reports the error */
    }
}

int
sg_protocol_run_group(struct sg_group *g, int rank, const sg_protocol *p,
    sg_protocol_out *out, char *err, int errlen)
{
    group_run gr = { g, rank, p, out, -1, err, errlen };

    sg_group_run(g, run_rank, &gr);
    return gr.rc;
}
