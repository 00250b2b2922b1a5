/*
 * MLA attention in the absorbed (MQA) form over the cached latents: every
 * head of a row attends the same keys, so a tile of the row's key list is
 * read from the cache and dequantized once for all heads, then scores
 * (heads x keys, over kv_lora + rope dimensions), an online softmax per
 * head, and the probability-weighted latents.  Generated tokens take it,
 * and prompt tokens where the forward pass chooses the absorbed form.
 *
 * A row's result is the same whichever rows share the call and however the
 * work is split: the key list and its tiles (MQA_KT entries from the
 * list's start) depend only on the row; each score and output element is
 * one FMA chain in a fixed order (cpu_tile.h); a call with one row splits
 * its heads across threads, a call with several rows gives each thread
 * whole rows, and a head's numbers are the same either way.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_tile.h"

#define MQA_KT 64            /* keys per tile */

typedef struct {
    const sg_kv_pool  *pool;
    const sg_kv_layer *L;
    const sg_rows     *rows;
    const float       *q_lat, *q_pe;
    const int32_t     *sel;
    int                k, heads, hchunk;
    float              scale;
    float             *out;
} mqa_ctx;

/* Per-thread working memory. */
typedef struct {
    int32_t *keys;             /* the row's key list */
    float   *lat;              /* [MQA_KT][kv_lora] dequantized latents */
    float   *kt;               /* [kv_lora + rope][MQA_KT] keys transposed */
    float   *sc;               /* [heads][MQA_KT] scores, probabilities */
    float   *m, *l;            /* [heads] running max and denominator */
} mqa_scratch;

static int
mqa_scratch_init(const mqa_ctx *A, int cap, mqa_scratch *S)
{
    int lora = A->pool->kv_lora, dk = lora + A->pool->rope, H = A->heads;

    S->keys = malloc(sizeof(int32_t) * (cap > 0 ? cap : 1));
    S->lat = malloc(sizeof(float) * ((size_t)MQA_KT * lora
                                     + (size_t)dk * MQA_KT
                                     + (size_t)H * MQA_KT + 2 * (size_t)H));
    if (S->keys == NULL || S->lat == NULL) {
        free(S->keys);
        free(S->lat);
        return -1;
    }
    S->kt = S->lat + (size_t)MQA_KT * lora;
    S->sc = S->kt + (size_t)dk * MQA_KT;
    S->m = S->sc + (size_t)H * MQA_KT;
    S->l = S->m + H;
    return 0;
}

static void
mqa_scratch_free(mqa_scratch *S)
{
    free(S->keys);
    free(S->lat);
}

/* Keys [j0, j0 + tn) of the list: latents dequantized to lat (row-major)
 * and, with the RoPE keys, transposed into kt (zero past tn up to a
 * multiple of 16). */
static void
load_tile(const mqa_ctx *A, const int32_t *bt, const int32_t *keys, int j0,
          int tn, mqa_scratch *S)
{
    const sg_kv_pool  *pool = A->pool;
    const sg_kv_layer *L = A->L;
    int lora = pool->kv_lora, rope = pool->rope, dk = lora + rope;
    int nb = (lora + SG_FP8_BLOCK - 1) / SG_FP8_BLOCK;
    int tn16 = (tn + 15) & ~15;

    for (int j = 0; j < tn; j++) {
        int64_t slot = cpu_slot(bt, keys[j0 + j]);
        float  *dst = S->lat + (size_t)j * lora;

        if (pool->latent_fp8)
            cpu_dequant_row((const uint8_t *)L->latent + slot * lora,
                            L->latent_scale + slot * nb, lora, dst);
        else
            memcpy(dst, (const float *)L->latent + slot * lora,
                   sizeof(float) * lora);
    }
    /* transposed: 8 keys x 8 dims at a time */
    for (int j = 0; j < tn16; j += 8) {
        const float *src[8];
        const float *pe[8];
        float        zero[8] = { 0 };
        int          d = 0;

        for (int u = 0; u < 8; u++) {
            int jj = j + u;
            src[u] = jj < tn ? S->lat + (size_t)jj * lora : NULL;
            pe[u] = jj < tn ? L->pe + cpu_slot(bt, keys[j0 + jj]) * rope
                            : NULL;
        }
        for (; d + 8 <= lora; d += 8) {
            __m256 r[8];
            for (int u = 0; u < 8; u++)
                r[u] = src[u] ? _mm256_loadu_ps(src[u] + d)
                              : _mm256_setzero_ps();
            cpu_transpose8(r);
            for (int u = 0; u < 8; u++)
                _mm256_storeu_ps(S->kt + (size_t)(d + u) * MQA_KT + j, r[u]);
        }
        for (; d < dk; d++)
            for (int u = 0; u < 8; u++) {
                const float *v = d < lora ? (src[u] ? src[u] + d : zero)
                                          : (pe[u] ? pe[u] + d - lora : zero);
                S->kt[(size_t)d * MQA_KT + j + u] = *v;
            }
    }
}

/* Heads [h0, h1) of row i. */
static void
mqa_row(const mqa_ctx *A, int i, int h0, int h1, mqa_scratch *S)
{
    const sg_rows *rows = A->rows;
    int   lora = A->pool->kv_lora, rope = A->pool->rope, H = A->heads;
    int   dk = lora + rope;
    const int32_t *bt = rows->block_table
                        + (size_t)rows->seq[i] * rows->max_blocks;
    int   nk = cpu_key_list(A->sel ? A->sel + (size_t)i * A->k : NULL, A->k,
                            rows->pos[i], INT_MAX, S->keys);
    float *out = A->out + (size_t)i * H * lora;
    /* q_lat and q_pe of a head side by side, as the packed keys */
    float *qcat = malloc(sizeof(float) * (size_t)(h1 - h0) * dk);

    if (qcat == NULL) {
        cpu_oom();
        return;
    }
    for (int h = h0; h < h1; h++) {
        memcpy(qcat + (size_t)(h - h0) * dk,
               A->q_lat + ((size_t)i * H + h) * lora, sizeof(float) * lora);
        memcpy(qcat + (size_t)(h - h0) * dk + lora,
               A->q_pe + ((size_t)i * H + h) * rope, sizeof(float) * rope);
        memset(out + (size_t)h * lora, 0, sizeof(float) * lora);
        S->m[h] = -INFINITY;
        S->l[h] = 0.0f;
    }
    for (int j0 = 0; j0 < nk; j0 += MQA_KT) {
        int tn = nk - j0 < MQA_KT ? nk - j0 : MQA_KT;
        int tn16 = (tn + 15) & ~15, h = h0;

        load_tile(A, bt, S->keys, j0, tn, S);
        for (; h < h1; h += 4) {
            int          ng = h1 - h < 4 ? h1 - h : 4;
            const float *qr[4];
            float       *sr[4], *orow[4];
            const float *pr[4];

            for (int u = 0; u < ng; u++) {
                qr[u] = qcat + (size_t)(h + u - h0) * dk;
                sr[u] = S->sc + (size_t)(h + u) * MQA_KT;
                orow[u] = out + (size_t)(h + u) * lora;
                pr[u] = sr[u];
            }
            cpu_tile_scores(qr, ng, S->kt, MQA_KT, dk, tn16, sr);
            for (int u = 0; u < ng; u++)
                online_softmax(sr[u], tn, A->scale, &S->m[h + u],
                               &S->l[h + u], orow[u], lora);
            cpu_tile_values(orow, pr, ng, S->lat, lora, tn, lora);
        }
    }
    for (int h = h0; h < h1 && nk > 0; h++) {
        float *o = out + (size_t)h * lora;
        for (int d = 0; d < lora; d++)
            o[d] /= S->l[h];
    }
    free(qcat);
}

static int
list_cap(const mqa_ctx *A)
{
    int cap = 1;

    for (int i = 0; i < A->rows->n; i++) {
        int m = A->sel ? A->k : A->rows->pos[i] + 1;
        cap = m > cap ? m : cap;
    }
    return cap;
}

/* Several rows: whole rows per item. */
static void
rows_range(void *c, int64_t i0, int64_t i1)
{
    mqa_ctx    *A = c;
    mqa_scratch S;

    if (mqa_scratch_init(A, list_cap(A), &S) != 0) {
        cpu_oom();
        return;
    }
    for (int64_t i = i0; i < i1; i++)
        mqa_row(A, (int)i, 0, A->heads, &S);
    mqa_scratch_free(&S);
}

/* One row: items are chunks of heads. */
static void
heads_range(void *c, int64_t t0, int64_t t1)
{
    mqa_ctx    *A = c;
    mqa_scratch S;

    if (mqa_scratch_init(A, list_cap(A), &S) != 0) {
        cpu_oom();
        return;
    }
    for (int64_t t = t0; t < t1; t++) {
        int h0 = (int)t * A->hchunk;
        int h1 = h0 + A->hchunk < A->heads ? h0 + A->hchunk : A->heads;
        mqa_row(A, 0, h0, h1, &S);
    }
    mqa_scratch_free(&S);
}

void
cpu_attn_decode(sg_backend *b, const sg_kv_pool *pool, int layer,
                const sg_rows *rows, const float *q_lat, const float *q_pe,
                const int32_t *sel, int k, int heads, float scale, float *out)
{
    mqa_ctx A = { pool, &pool->layers[layer], rows, q_lat, q_pe, sel, k,
                  heads, heads, scale, out };
    int     dk = pool->kv_lora + pool->rope;
    double  work = 0;

    if (rows->n <= 0)
        return;
    for (int i = 0; i < rows->n; i++) {
        int m = sel ? k : rows->pos[i] + 1;
        m = m < rows->pos[i] + 1 ? m : rows->pos[i] + 1;
        work += (double)m * heads * (dk + pool->kv_lora);
    }
    if (rows->n > 1) {
        cpu_parallel(b, rows->n, 1, work, rows_range, &A);
        return;
    }
    /* one row: about one chunk of heads (a multiple of 4) per thread */
    int nt = cpu_threads(b);

    A.hchunk = ((heads + nt - 1) / nt + 3) & ~3;
    if (A.hchunk < 4)
        A.hchunk = 4;
    cpu_parallel(b, (heads + A.hchunk - 1) / A.hchunk, 1, work, heads_range,
                 &A);
}
