/*
 * One decode step's attention + indexer at DeepSeek-V3.2's real shapes
 * (128 heads, kv_lora 512, rope 64, indexer 64 x 128, top-k 2048), DSA vs
 * dense, over a synthetic FP8 cache of 8K..128K tokens, side by side.
 *
 * usage: bench_attn MODEL_DIR [CONTEXT ...]   (a `mkmodel --preset v32-attn`
 * checkpoint: its kv_b weights and config drive the absorbed projections)
 *
 * Prints a markdown table: per context, the median time of the DSA path
 * (indexer scores + top-k + sparse attention + value projection) and of the
 * dense path (attention over every key + value projection), their ratio and
 * the ratio of operation counts.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model/model.h"

static double
now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static unsigned long long rng = 88172645463325252ull;

static float
frand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2 - 1;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int
main(int argc, char **argv)
{
    sg_model_opts o;
    sg_model     *m;
    char          err[512];
    int           ctxs[16] = { 8192, 32768, 65536, 131072 }, nctx = 4;
    int           reps = 5;

    if (argc < 2) {
        fprintf(stderr, "usage: bench_attn MODEL_DIR [CONTEXT ...]\n");
        return 2;
    }
    if (argc > 2) {
        nctx = 0;
        for (int i = 2; i < argc && nctx < 16; i++)
            ctxs[nctx++] = atoi(argv[i]);
    }
    sg_model_opts_default(&o);
    o.max_pos = 8;
    if (sg_model_load(argv[1], &o, &m, err, sizeof(err)) != 0) {
        fprintf(stderr, "bench_attn: %s\n", err);
        return 1;
    }
    const sg_config *c = &m->cfg;
    sg_backend *b = m->backend;
    const sg_backend_ops *op = b->ops;
    int H = c->num_attention_heads, lora = c->kv_lora_rank;
    int rope = c->qk_rope_head_dim, nope = c->qk_nope_head_dim;
    int v = c->v_head_dim, IH = c->index_n_heads, ID = c->index_head_dim;
    int K = c->index_topk;
    float scale = (float)c->softmax_scale;

    printf("| context | DSA ms | dense ms | dense/DSA time | dense/DSA op count "
           "| DSA GFLOP/s | dense GFLOP/s |\n");
    printf("|---:|---:|---:|---:|---:|---:|---:|\n");
    for (int ci = 0; ci < nctx; ci++) {
        int L = ctxs[ci], nb = (L + SG_KV_BLOCK) / SG_KV_BLOCK;
        sg_kv_pool *pool = sg_kv_pool_new(b, c, nb, 1);
        int32_t *table = malloc(sizeof(int32_t) * nb);
        int chunk = 4096;
        float *lat = op->alloc(b, sizeof(float) * chunk * lora);
        float *pe = op->alloc(b, sizeof(float) * chunk * rope);
        uint8_t *ik = op->alloc(b, (size_t)chunk * ID);
        float *iks = op->alloc(b, sizeof(float) * chunk);
        int32_t *pos = malloc(sizeof(int32_t) * chunk), *seq = calloc(chunk, 4);

        if (!pool || !table || !lat || !pe || !ik || !iks || !pos || !seq) {
            fprintf(stderr, "bench_attn: out of memory at context %d\n", L);
            return 1;
        }
        for (int i = 0; i < nb; i++)
            table[i] = i;

        /* a synthetic cache: random latents, RoPE keys and FP8 index keys */
        {
            float   *hl = malloc(sizeof(float) * chunk * lora);
            float   *hp = malloc(sizeof(float) * chunk * rope);
            uint8_t *hk = malloc((size_t)chunk * ID);
            float   *hs = malloc(sizeof(float) * chunk);

            for (size_t i = 0; i < (size_t)chunk * lora; i++) hl[i] = frand();
            for (size_t i = 0; i < (size_t)chunk * rope; i++) hp[i] = frand();
            for (size_t i = 0; i < (size_t)chunk * ID; i++)
                hk[i] = (uint8_t)((rng = rng * 6364136223846793005ull + 1) >> 56) & 0xf7;
            for (int i = 0; i < chunk; i++) hs[i] = 0.01f * (1 + frand());
            op->upload(b, lat, hl, sizeof(float) * chunk * lora);
            op->upload(b, pe, hp, sizeof(float) * chunk * rope);
            op->upload(b, ik, hk, (size_t)chunk * ID);
            op->upload(b, iks, hs, sizeof(float) * chunk);
            free(hl); free(hp); free(hk); free(hs);
        }
        for (int s0 = 0; s0 < L; s0 += chunk) {
            int n = L - s0 < chunk ? L - s0 : chunk;
            for (int i = 0; i < n; i++)
                pos[i] = s0 + i;
            sg_rows rows = { n, pos, seq, table, nb };
            op->kv_store(b, pool, 0, &rows, lat, pe, ik, iks, 1);
        }

        /* one query row at position L - 1 */
        int32_t qpos = L - 1, qseq = 0;
        sg_rows q1 = { 1, &qpos, &qseq, table, nb };
        float *q = op->alloc(b, sizeof(float) * H * (nope + rope));
        float *qlat = op->alloc(b, sizeof(float) * H * lora);
        float *qpe = op->alloc(b, sizeof(float) * H * rope);
        float *olat = op->alloc(b, sizeof(float) * H * lora);
        float *out = op->alloc(b, sizeof(float) * H * v);
        uint8_t *iq8 = op->alloc(b, (size_t)IH * ID);
        float *iw = op->alloc(b, sizeof(float) * IH);
        float *scores = op->alloc(b, sizeof(float) * L);
        int32_t *sel = malloc(sizeof(int32_t) * K), len = L;
        {
            float hq[H * (nope + rope)], hw[IH];
            uint8_t hq8[IH * ID];
            for (int i = 0; i < H * (nope + rope); i++) hq[i] = frand();
            for (int i = 0; i < IH; i++) hw[i] = frand() * 0.1f;
            for (int i = 0; i < IH * ID; i++) hq8[i] = (uint8_t)(frand() * 100) & 0xf7;
            op->upload(b, q, hq, sizeof(hq));
            op->upload(b, iw, hw, sizeof(hw));
            op->upload(b, iq8, hq8, sizeof(hq8));
        }
        op->mla_absorb(b, &m->w.layers[0].kv_b, q, 1, H, nope, rope, v, lora, qlat);

        double tdsa[16], tden[16];
        for (int r = 0; r < reps; r++) {
            double t0 = now();
            op->index_scores(b, pool, 0, &q1, iq8, iw, IH, scores, L);
            op->topk(b, scores, 1, L, &len, K, sel);
            op->attn_decode(b, pool, 0, &q1, qlat, qpe, sel, K, H, scale, olat);
            op->mla_unabsorb(b, &m->w.layers[0].kv_b, olat, 1, H, nope, v, lora, out);
            op->sync(b, err, sizeof(err));
            double t1 = now();
            op->attn_decode(b, pool, 0, &q1, qlat, qpe, NULL, K, H, scale, olat);
            op->mla_unabsorb(b, &m->w.layers[0].kv_b, olat, 1, H, nope, v, lora, out);
            op->sync(b, err, sizeof(err));
            double t2 = now();
            tdsa[r] = t1 - t0;
            tden[r] = t2 - t1;
        }
        qsort(tdsa, reps, sizeof(double), cmp_double);
        qsort(tden, reps, sizeof(double), cmp_double);

        /* multiply-adds: indexer IH*ID per key; attention H*(lora+rope)
         * for scores + H*lora for values per attended key; the value
         * projection H*lora*v is the same for both */
        double kk = L < K ? L : K;
        double dsa_ops = (double)L * IH * ID + kk * H * (2.0 * lora + rope)
                         + (double)H * lora * v;
        double den_ops = (double)L * H * (2.0 * lora + rope) + (double)H * lora * v;
        printf("| %d | %.2f | %.2f | %.2fx | %.2fx | %.1f | %.1f |\n", L,
               tdsa[reps / 2] * 1e3, tden[reps / 2] * 1e3,
               tden[reps / 2] / tdsa[reps / 2], den_ops / dsa_ops,
               2 * dsa_ops / tdsa[reps / 2] * 1e-9,
               2 * den_ops / tden[reps / 2] * 1e-9);
        fflush(stdout);

        op->free(b, q); op->free(b, qlat); op->free(b, qpe); op->free(b, olat);
        op->free(b, out); op->free(b, iq8); op->free(b, iw); op->free(b, scores);
        op->free(b, lat); op->free(b, pe); op->free(b, ik); op->free(b, iks);
        free(sel); free(table); free(pos); free(seq);
        sg_kv_pool_free(pool);
    }
    sg_model_free(m);
    return 0;
}
