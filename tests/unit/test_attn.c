/*
 * The CPU backend's cache and attention ops against plain references:
 * KV pool sizes, kv_store/kv_gather round trip (exact and FP8 latent),
 * lightning-indexer scores, top-k selection (ties, short rows), and MLA
 * attention in prefill and decode form vs a naive softmax over explicit key
 * lists.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/backend.h"
#include "check.h"
#include "ref_fp8.h"
#include "model/dtype.h"
#include "model/kv.h"

/* Every check runs twice: on the default backend, and on one with three
 * threads that splits even the smallest loop (SG_CPU_PAR_WORK=0). */
static const char *config_tag = "";
static char        check_name[256];

static const char *
tagged(const char *name)
{
    snprintf(check_name, sizeof(check_name), "%s%s", name, config_tag);
    return check_name;
}

#define CHECKB(cond, name, ...) CHECK(cond, tagged(name), __VA_ARGS__)

static sg_backend *B;

enum { LORA = 256, ROPE = 16, IDIM = 128, NBLK = 8, MAXB = 4, LEN = 200 };

/* two sequences over shuffled blocks */
static const int32_t block_table[2 * MAXB] = { 5, 2, 7, 0, 1, 6, 3, 4 };

static int
rand_code(void)
{
    int c;

    do
        c = check_rand32() & 0xff;
    while ((c & 0x7f) == 0x7f);
    return c;
}

/* What the tests stored for both sequences, in plain arrays. */
typedef struct {
    sg_kv_pool *pool;
    float      *lat;      /* [2][LEN][LORA] as the cache should hold it */
    float      *pe;       /* [2][LEN][ROPE] */
    uint8_t    *ik;       /* [2][LEN][IDIM] */
    float      *iks;      /* [2][LEN] */
} cache;

static void
cache_fill(cache *c, int fp8, int ue8m0)
{
    sg_config cfg;
    int32_t   pos[LEN], seq[LEN];

    memset(&cfg, 0, sizeof(cfg));
    cfg.num_hidden_layers = 2;
    cfg.kv_lora_rank = LORA;
    cfg.qk_rope_head_dim = ROPE;
    cfg.index_head_dim = IDIM;
    c->pool = sg_kv_pool_new(B, &cfg, NBLK, fp8);
    c->lat = malloc(sizeof(float) * 2 * LEN * LORA);
    c->pe = malloc(sizeof(float) * 2 * LEN * ROPE);
    c->ik = malloc(2 * LEN * IDIM);
    c->iks = malloc(sizeof(float) * 2 * LEN);

    float   *lat = B->ops->alloc(B, sizeof(float) * LEN * LORA);
    float   *pe = B->ops->alloc(B, sizeof(float) * LEN * ROPE);
    uint8_t *ik = B->ops->alloc(B, LEN * IDIM);
    float   *iks = B->ops->alloc(B, sizeof(float) * LEN);

    for (int s = 0; s < 2; s++) {
        for (int i = 0; i < LEN * LORA; i++)
            lat[i] = check_randn() * (i % 128 == 3 ? 5.0f : 1.0f);
        for (int i = 0; i < LEN * ROPE; i++)
            pe[i] = check_randn();
        for (int i = 0; i < LEN * IDIM; i++)
            ik[i] = (uint8_t)rand_code();
        for (int i = 0; i < LEN; i++) {
            iks[i] = check_randu(0.001f, 0.1f);
            pos[i] = i;
            seq[i] = s;
        }
        sg_rows rows = { LEN, pos, seq, block_table, MAXB };

        /* layer 1 is the one tested; layer 0 gets other data */
        B->ops->kv_store(B, c->pool, 1, &rows, lat, pe, ik, iks, ue8m0);
        for (int i = 0; i < LEN; i++) {
            if (fp8)
                ref_act_quant(lat + i * LORA, LORA, ue8m0,
                              c->lat + ((size_t)s * LEN + i) * LORA);
            else
                memcpy(c->lat + ((size_t)s * LEN + i) * LORA, lat + i * LORA,
                       sizeof(float) * LORA);
        }
        memcpy(c->pe + (size_t)s * LEN * ROPE, pe, sizeof(float) * LEN * ROPE);
        memcpy(c->ik + (size_t)s * LEN * IDIM, ik, LEN * IDIM);
        memcpy(c->iks + (size_t)s * LEN, iks, sizeof(float) * LEN);
        for (int i = 0; i < LEN * LORA; i++)
            lat[i] = 1e3f;
        B->ops->kv_store(B, c->pool, 0, &rows, lat, pe, ik, iks, ue8m0);
    }
    B->ops->free(B, lat);
    B->ops->free(B, pe);
    B->ops->free(B, ik);
    B->ops->free(B, iks);
}

static void
cache_free(cache *c)
{
    sg_kv_pool_free(c->pool);
    free(c->lat);
    free(c->pe);
    free(c->ik);
    free(c->iks);
}

static void
test_pool_sizes(void)
{
    sg_config cfg;

    memset(&cfg, 0, sizeof(cfg));
    cfg.kv_lora_rank = 512;
    cfg.qk_rope_head_dim = 64;
    cfg.index_head_dim = 128;
    /* fp8 latent 512 + 4 scales, f32 RoPE key, indexer key + scale */
    size_t f8 = sg_kv_bytes_per_token_layer(&cfg, 1);
    size_t ex = sg_kv_bytes_per_token_layer(&cfg, 0);
    CHECKB(f8 == 512 + 16 + 256 + 132 && ex == 2048 + 256 + 132,
          "kv bytes per token and layer", "fp8 %zu, exact %zu", f8, ex);
}

static void
test_kv_roundtrip(int fp8, int ue8m0)
{
    cache  c;
    float *lat = B->ops->alloc(B, sizeof(float) * LEN * LORA);
    float *pe = B->ops->alloc(B, sizeof(float) * LEN * ROPE);
    char   name[96];
    int    bad_ik = 0;

    cache_fill(&c, fp8, ue8m0);
    CHECKB(c.pool != NULL && c.pool->n_layers == 2 && c.pool->latent_fp8 == fp8,
          "kv pool created", "sg_kv_pool_new failed");
    B->ops->kv_gather(B, c.pool, 1, block_table + MAXB, LEN, lat, pe);
    double el = check_max_abs(lat, c.lat + (size_t)LEN * LORA, LEN * LORA);
    double ep = check_max_abs(pe, c.pe + (size_t)LEN * ROPE, LEN * ROPE);
    for (int p = 0; p < LEN; p++) {
        int64_t slot = (int64_t)block_table[MAXB + p / 64] * 64 + p % 64;
        const sg_kv_layer *L = &c.pool->layers[1];
        bad_ik += memcmp(L->ikey + slot * IDIM, c.ik + ((size_t)LEN + p) * IDIM,
                         IDIM) != 0 || L->ikey_scale[slot] != c.iks[LEN + p];
    }
    snprintf(name, sizeof(name), "kv_store/kv_gather round trip (%s latent%s)",
             fp8 ? "fp8" : "exact",
             fp8 ? (ue8m0 ? ", ue8m0" : ", f32 scales") : "");
    CHECKB(el == 0 && ep == 0 && bad_ik == 0, name,
          "latent max diff %g, pe max diff %g, %d indexer keys differ",
          el, ep, bad_ik);
    cache_free(&c);
    B->ops->free(B, lat);
    B->ops->free(B, pe);
}

static void
test_index_scores(void)
{
    enum { N = 4, H = 5, STRIDE = LEN + 11 };
    cache    c;
    int32_t  pos[N] = { 0, 77, LEN - 1, 130 }, seq[N] = { 1, 0, 1, 0 };
    uint8_t *q8 = B->ops->alloc(B, N * H * IDIM);
    float   *w = B->ops->alloc(B, sizeof(float) * N * H);
    float   *sc = B->ops->alloc(B, sizeof(float) * N * STRIDE);
    float   *ref = malloc(sizeof(float) * N * STRIDE);
    float   *got = malloc(sizeof(float) * N * STRIDE);
    sg_rows  rows = { N, pos, seq, block_table, MAXB };
    int      bad_mask = 0, m = 0;

    cache_fill(&c, 1, 1);
    for (int i = 0; i < N * H * IDIM; i++)
        q8[i] = (uint8_t)rand_code();
    for (int i = 0; i < N * H; i++)
        w[i] = check_randn();
    B->ops->index_scores(B, c.pool, 1, &rows, q8, w, H, sc, STRIDE);
    for (int i = 0; i < N; i++)
        for (int s = 0; s < STRIDE; s++) {
            if (s > pos[i]) {
                float v = sc[i * STRIDE + s];
                bad_mask += !(isinf(v) && v < 0);
                continue;
            }
            const uint8_t *k = c.ik + ((size_t)seq[i] * LEN + s) * IDIM;
            double tot = 0;
            for (int h = 0; h < H; h++) {
                double d = 0;
                for (int j = 0; j < IDIM; j++)
                    d += ref_e4m3_value(q8[(i * H + h) * IDIM + j])
                         * ref_e4m3_value(k[j]);
                tot += (d > 0 ? d : 0) * w[i * H + h];
            }
            ref[m] = (float)(tot * c.iks[seq[i] * LEN + s]);
            got[m++] = sc[i * STRIDE + s];
        }
    double e = check_rel_err(got, ref, m);
    CHECKB(e < 1e-5, "index_scores vs e4m3 dot products", "rel err %g", e);
    CHECKB(bad_mask == 0, "index_scores -inf past the position",
          "%d entries not -inf", bad_mask);

    /* Batch invariance: 13 rows of one sequence (the backend may group
     * them) score bitwise as each row alone. */
    {
        enum { N2 = 13 };
        int32_t  p2[N2], s2[N2];
        uint8_t *q2 = B->ops->alloc(B, N2 * H * IDIM);
        float   *w2 = B->ops->alloc(B, sizeof(float) * N2 * H);
        float   *all = B->ops->alloc(B, sizeof(float) * N2 * STRIDE);
        float   *one = B->ops->alloc(B, sizeof(float) * STRIDE);
        int      differ = 0;

        for (int i = 0; i < N2; i++) {
            p2[i] = i == 0 ? (int)check_randu(0, 40)
                           : p2[i - 1] + (int)check_randu(0, 30);
            p2[i] = p2[i] < LEN ? p2[i] : LEN - 1;
            s2[i] = 0;
        }
        for (int i = 0; i < N2 * H * IDIM; i++)
            q2[i] = (uint8_t)rand_code();
        for (int i = 0; i < N2 * H; i++)
            w2[i] = check_randn();
        sg_rows r2 = { N2, p2, s2, block_table, MAXB };
        B->ops->index_scores(B, c.pool, 1, &r2, q2, w2, H, all, STRIDE);
        for (int i = 0; i < N2; i++) {
            sg_rows r1 = { 1, p2 + i, s2 + i, block_table, MAXB };
            B->ops->index_scores(B, c.pool, 1, &r1, q2 + (size_t)i * H * IDIM,
                                 w2 + (size_t)i * H, H, one, STRIDE);
            differ += memcmp(one, all + (size_t)i * STRIDE,
                             sizeof(float) * STRIDE) != 0;
        }
        CHECKB(differ == 0, "index_scores batch-invariant (13 rows of one "
               "sequence vs each alone)", "%d rows differ", differ);
        B->ops->free(B, q2);
        B->ops->free(B, w2);
        B->ops->free(B, all);
        B->ops->free(B, one);
    }
    cache_free(&c);
    B->ops->free(B, q8);
    B->ops->free(B, w);
    B->ops->free(B, sc);
    free(ref);
    free(got);
}

typedef struct {
    float v;
    int   i;
} ranked;

static int
by_score_desc(const void *a, const void *b)
{
    const ranked *x = a, *y = b;

    if (x->v != y->v)
        return x->v > y->v ? -1 : 1;
    return x->i - y->i;
}

static int
cmp_int(const void *a, const void *b)
{
    return *(const int32_t *)a - *(const int32_t *)b;
}

static void
test_topk(void)
{
    enum { N = 7, STRIDE = 300, K = 32 };
    int32_t len[N] = { 0, 5, 32, 33, 100, 300, 250 };
    float  *sc = B->ops->alloc(B, sizeof(float) * N * STRIDE);
    int32_t idx[N * K], ref[N * K];
    int     bad = 0;

    for (int i = 0; i < N * STRIDE; i++) {
        /* rows 0-3 continuous, others from 4 values: many ties */
        sc[i] = i / STRIDE < 4 ? check_randn() : (float)(check_rand32() % 4);
        if (check_rand32() % 20 == 0)
            sc[i] = -INFINITY;
    }
    B->ops->topk(B, sc, N, STRIDE, len, K, idx);
    for (int i = 0; i < N; i++) {
        ranked r[STRIDE];
        int    m = len[i] < K ? len[i] : K;

        for (int s = 0; s < len[i]; s++)
            r[s] = (ranked){ sc[i * STRIDE + s], s };
        qsort(r, len[i], sizeof(ranked), by_score_desc);
        for (int j = 0; j < K; j++)
            ref[i * K + j] = j < m ? r[j].i : -1;
        qsort(ref + i * K, m, sizeof(int32_t), cmp_int);
    }
    for (int i = 0; i < N * K; i++)
        bad += idx[i] != ref[i];
    CHECKB(bad == 0, "topk ascending, ties to lower index, -1 padding",
          "%d entries differ", bad);
    B->ops->free(B, sc);
}

/* The keys a row attends, written plainly: a mask over 0..last. */
static int
ref_keys(const int32_t *sel, int k, int last, int32_t *keys)
{
    int n = 0;

    for (int s = 0; s <= last; s++) {
        int in = sel == NULL;
        for (int j = 0; sel && j < k; j++)
            in |= sel[j] == s;
        if (in)
            keys[n++] = s;
    }
    return n;
}

/* sel rows with -1 padding, out-of-range entries and a repeat */
static void
random_sel(int32_t *sel, int n, int k, int range)
{
    for (int i = 0; i < n * k; i++) {
        int r = check_rand32() % 10;
        sel[i] = r == 0 ? -1 : (int32_t)(check_rand32() % range);
    }
    for (int i = 0; i < n; i++)
        sel[i * k + k - 1] = sel[i * k];
}

/*
 * attn_prefill against a naive double-precision softmax, in one call and
 * split in two calls (as chunked prefill: bitwise equal), dense also with
 * its keys in ranges of 64 and 128 (the softmax carried between the calls:
 * bitwise equal to one call), over shapes that
 * cover several key tiles and row blocks of the dense kernel and dimension
 * tails.  nan: one key's value and one row's query carry a NaN: the rows
 * that attend that key and the NaN row give NaN, every other row is
 * unchanged.
 */
typedef struct {
    int n, nk, h, nope, rope, v;
} prefill_shape;

static void
test_attn_prefill_shape(int sparse, int K, prefill_shape sh, int nan)
{
    int      N = sh.n, NK = sh.nk, H = sh.h, NOPE = sh.nope, R = sh.rope;
    int      V = sh.v, QK = NOPE + R, KVW = NOPE + V, split = N / 3 + 1;
    int32_t *pos = malloc(sizeof(int32_t) * N), seq[1] = { 0 };
    int32_t *sel = malloc(sizeof(int32_t) * N * K);
    int32_t *keys = malloc(sizeof(int32_t) * NK);
    double  *p = malloc(sizeof(double) * NK);
    float   *q = B->ops->alloc(B, sizeof(float) * N * H * QK);
    float   *kv = B->ops->alloc(B, sizeof(float) * NK * H * KVW);
    float   *pe = B->ops->alloc(B, sizeof(float) * NK * R);
    float   *out = B->ops->alloc(B, sizeof(float) * N * H * V);
    float   *out2 = B->ops->alloc(B, sizeof(float) * N * H * V);
    float   *ref = malloc(sizeof(float) * N * H * V);
    sg_rows  rows = { N, pos, seq, block_table, MAXB };
    float    scale = 0.2f;
    int      nan_key = NK / 2, nan_row = N - 2, nan_bad = 0;
    char     name[160], what[96];

    snprintf(what, sizeof(what), "%s %d rows %d keys h%d %d+%d/%d%s",
             sparse ? (K > 4 ? "top-16" : "top-4") : "dense", N, NK, H, NOPE,
             R, V, nan ? " NaN" : "");
    for (int i = 0; i < N; i++)
        pos[i] = i ? (i + 3 < NK ? i + 3 : NK - 1 - i % 3) : 0;
    for (int i = 0; i < N * H * QK; i++)
        q[i] = check_randn();
    for (int i = 0; i < NK * H * KVW; i++)
        kv[i] = check_randn();
    for (int i = 0; i < NK * R; i++)
        pe[i] = check_randn();
    if (nan) {
        kv[(nan_key * H + H - 1) * KVW + NOPE + V - 1] = NAN;
        q[(nan_row * H) * QK + 1] = NAN;
    }
    random_sel(sel, N, K, NK + 5);
    for (int i = 0; i < N; i++)
        for (int h = 0; h < H; h++) {
            int    nk = ref_keys(sparse ? sel + i * K : NULL, K, pos[i], keys);
            double mx = -INFINITY, sum = 0;
            const float *qi = q + (i * H + h) * QK;
            for (int j = 0; j < nk; j++) {
                const float *kj = kv + (keys[j] * H + h) * KVW;
                double d = 0;
                for (int c = 0; c < NOPE; c++)
                    d += (double)qi[c] * kj[c];
                for (int c = 0; c < R; c++)
                    d += (double)qi[NOPE + c] * pe[keys[j] * R + c];
                p[j] = d * scale;
                mx = p[j] > mx ? p[j] : mx;
            }
            for (int j = 0; j < nk; j++)
                sum += (p[j] = exp(p[j] - mx));
            for (int c = 0; c < V; c++) {
                double acc = 0;
                for (int j = 0; j < nk; j++)
                    acc += p[j] / sum * kv[(keys[j] * H + h) * KVW + NOPE + c];
                ref[(i * H + h) * V + c] = nk ? (float)acc : 0.0f;
            }
        }
    B->ops->attn_prefill(B, q, kv, pe, 0, NK, &rows, sparse ? sel : NULL, K, H,
                         NOPE, R, V, scale, NULL, out);
    if (nan) {
        /* NaN exactly where the reference has one, the rest compared */
        for (int i = 0; i < N * H * V; i++) {
            nan_bad += isnan(out[i]) != isnan(ref[i]);
            if (isnan(ref[i]))
                out[i] = ref[i] = 0.0f;
        }
    }
    double e = check_rel_err(out, ref, N * H * V);

    sg_rows ra = { split, pos, seq, block_table, MAXB };
    sg_rows rb = { N - split, pos + split, seq, block_table, MAXB };
    B->ops->attn_prefill(B, q, kv, pe, 0, NK, &ra, sparse ? sel : NULL, K, H,
                         NOPE, R, V, scale, NULL, out2);
    B->ops->attn_prefill(B, q + split * H * QK, kv, pe, 0, NK, &rb,
                         sparse ? sel + split * K : NULL, K, H, NOPE, R, V,
                         scale, NULL, out2 + split * H * V);
    if (nan)
        for (int i = 0; i < N * H * V; i++)
            if (isnan(out2[i]))
                out2[i] = 0.0f;
    snprintf(name, sizeof(name), "attn_prefill %s split rows bitwise equal",
             what);
    CHECKB(memcmp(out, out2, sizeof(float) * N * H * V) == 0, name,
           "a row's output depends on the rows beside it");
    for (int range = SG_PREFILL_KEY_ALIGN; !sparse && range <= 128;
         range *= 2) {
        float *ml = B->ops->alloc(B, sizeof(float) * N * H * 2);

        for (int k0 = 0; k0 < NK; k0 += range)
            B->ops->attn_prefill(B, q, kv + (size_t)k0 * H * KVW,
                                 pe + (size_t)k0 * R, k0,
                                 NK - k0 < range ? NK - k0 : range, &rows,
                                 NULL, K, H, NOPE, R, V, scale, ml, out2);
        if (nan)
            for (int i = 0; i < N * H * V; i++)
                if (isnan(out2[i]))
                    out2[i] = 0.0f;
        snprintf(name, sizeof(name), "attn_prefill %s keys in ranges of %d "
                 "bitwise equal", what, range);
        CHECKB(memcmp(out, out2, sizeof(float) * N * H * V) == 0, name,
               "the carried softmax differs from one call's");
        B->ops->free(B, ml);
    }
    snprintf(name, sizeof(name), "attn_prefill %s vs naive softmax", what);
    CHECKB(e < 1e-5 && nan_bad == 0, name, "rel err %g, %d NaN mismatches",
           e, nan_bad);
    B->ops->free(B, q);
    B->ops->free(B, kv);
    B->ops->free(B, pe);
    B->ops->free(B, out);
    B->ops->free(B, out2);
    free(ref);
    free(pos);
    free(sel);
    free(keys);
    free(p);
}

/* 37 rows, 40 keys: one block; row 0 sees only key 0 */
static void
test_attn_prefill(int sparse, int K)
{
    test_attn_prefill_shape(sparse, K, (prefill_shape){ 37, 40, 3, 16, 8, 12 },
                            0);
}

static void
test_attn_decode(int fp8, int sparse, int H, int nan)
{
    enum { N = 3, K = 16 };
    cache   c;
    int32_t pos[N] = { LEN - 1, 100, 30 }, seq[N] = { 0, 1, 0 };
    int32_t sel[N * K], keys[LEN];
    float  *ql = B->ops->alloc(B, sizeof(float) * N * H * LORA);
    float  *qp = B->ops->alloc(B, sizeof(float) * N * H * ROPE);
    float  *out = B->ops->alloc(B, sizeof(float) * N * H * LORA);
    float  *one = B->ops->alloc(B, sizeof(float) * H * LORA);
    float  *ref = malloc(sizeof(float) * N * H * LORA);
    double *p = malloc(sizeof(double) * LEN);
    sg_rows rows = { N, pos, seq, block_table, MAXB };
    float   scale = 0.05f;
    int     alone_bad = 0, nan_bad = 0;
    char    name[128];

    cache_fill(&c, fp8, 1);
    for (int i = 0; i < N * H * LORA; i++)
        ql[i] = check_randn();
    for (int i = 0; i < N * H * ROPE; i++)
        qp[i] = check_randn();
    if (nan)
        ql[(1 * H + H - 1) * LORA + 3] = NAN;   /* row 1, last head */
    random_sel(sel, N, K, LEN);
    for (int i = 0; i < N; i++)
        for (int h = 0; h < H; h++) {
            int    nk = ref_keys(sparse ? sel + i * K : NULL, K, pos[i], keys);
            double mx = -INFINITY, sum = 0;
            for (int j = 0; j < nk; j++) {
                size_t       at = (size_t)seq[i] * LEN + keys[j];
                const float *l = c.lat + at * LORA;
                const float *e = c.pe + at * ROPE;
                double d = 0;
                for (int x = 0; x < LORA; x++)
                    d += (double)ql[(i * H + h) * LORA + x] * l[x];
                for (int x = 0; x < ROPE; x++)
                    d += (double)qp[(i * H + h) * ROPE + x] * e[x];
                p[j] = d * scale;
                mx = p[j] > mx ? p[j] : mx;
            }
            for (int j = 0; j < nk; j++)
                sum += (p[j] = exp(p[j] - mx));
            for (int x = 0; x < LORA; x++) {
                double acc = 0;
                for (int j = 0; j < nk; j++)
                    acc += p[j] / sum
                           * c.lat[((size_t)seq[i] * LEN + keys[j]) * LORA + x];
                ref[(i * H + h) * LORA + x] = nk ? (float)acc : 0.0f;
            }
        }
    B->ops->attn_decode(B, c.pool, 1, &rows, ql, qp, sparse ? sel : NULL, K, H,
                        scale, out);
    /* each row alone (heads split across threads) gives the same bits */
    for (int i = 0; i < N; i++) {
        sg_rows r1 = { 1, pos + i, seq + i, block_table, MAXB };
        B->ops->attn_decode(B, c.pool, 1, &r1, ql + i * H * LORA,
                            qp + i * H * ROPE, sparse ? sel + i * K : NULL, K,
                            H, scale, one);
        alone_bad += memcmp(one, out + i * H * LORA,
                            sizeof(float) * H * LORA) != 0
                     && !nan;
    }
    if (nan)
        for (int i = 0; i < N * H * LORA; i++) {
            nan_bad += isnan(out[i]) != isnan(ref[i]);
            if (isnan(ref[i]))
                out[i] = ref[i] = 0.0f;
        }
    double e = check_rel_err(out, ref, N * H * LORA);
    snprintf(name, sizeof(name), "attn_decode %s, %s pool, %d heads%s vs naive "
             "softmax", sparse ? "top-k" : "dense", fp8 ? "fp8" : "exact", H,
             nan ? ", NaN query" : "");
    CHECKB(e < 1e-5 && nan_bad == 0, name, "rel err %g, %d NaN mismatches", e,
           nan_bad);
    snprintf(name, sizeof(name), "attn_decode %s, %s pool, %d heads: a row "
             "alone bitwise equal", sparse ? "top-k" : "dense",
             fp8 ? "fp8" : "exact", H);
    CHECKB(alone_bad == 0, name, "%d rows differ", alone_bad);
    cache_free(&c);
    B->ops->free(B, ql);
    B->ops->free(B, qp);
    B->ops->free(B, out);
    B->ops->free(B, one);
    free(ref);
    free(p);
}

/*
 * The AVX-512 and AVX2 forms of the tile kernels give the same bits: dense
 * prefill (flash) and absorbed attention on a backend of each form.
 */
static void
test_isa_forms_equal(void)
{
    enum { N = 70, NK = 130, H = 3, NOPE = 64, R = 32, V = 40, DH = 7 };
    int32_t  pos[N], seq[N] = { 0 }, dpos[3] = { LEN - 1, 100, 30 };
    int32_t  dseq[3] = { 0, 1, 0 };
    float   *q = malloc(sizeof(float) * N * H * (NOPE + R));
    float   *kv = malloc(sizeof(float) * NK * H * (NOPE + V));
    float   *pe = malloc(sizeof(float) * NK * R);
    float   *o[2], *d[2];
    float   *ql = malloc(sizeof(float) * 3 * DH * LORA);
    float   *qp = malloc(sizeof(float) * 3 * DH * ROPE);
    sg_rows  rows = { N, pos, seq, block_table, MAXB };
    sg_rows  drows = { 3, dpos, dseq, block_table, MAXB };
    cache    c;

    if (!__builtin_cpu_supports("avx512f")) {
        printf("# no AVX-512 on this CPU: one kernel form, nothing to "
               "compare\n");
        free(q), free(kv), free(pe), free(ql), free(qp);
        return;
    }
    cache_fill(&c, 1, 1);
    for (int i = 0; i < N; i++)
        pos[i] = i + 50;
    for (int i = 0; i < N * H * (NOPE + R); i++)
        q[i] = check_randn();
    for (int i = 0; i < NK * H * (NOPE + V); i++)
        kv[i] = check_randn();
    for (int i = 0; i < NK * R; i++)
        pe[i] = check_randn();
    for (int i = 0; i < 3 * DH * LORA; i++)
        ql[i] = check_randn();
    for (int i = 0; i < 3 * DH * ROPE; i++)
        qp[i] = check_randn();
    for (int f = 0; f < 2; f++) {
        sg_backend *b;

        if (f)
            setenv("SG_CPU_ISA", "avx2", 1);
        b = sg_backend_cpu_new(2);
        o[f] = malloc(sizeof(float) * N * H * V);
        d[f] = malloc(sizeof(float) * 3 * DH * LORA);
        b->ops->attn_prefill(b, q, kv, pe, 0, NK, &rows, NULL, 0, H, NOPE, R, V,
                             0.1f, NULL, o[f]);
        b->ops->attn_decode(b, c.pool, 1, &drows, ql, qp, NULL, 0, DH, 0.05f,
                            d[f]);
        b->ops->destroy(b);
    }
    unsetenv("SG_CPU_ISA");
    {
        /* the process-wide choice back to this machine's */
        sg_backend *r = sg_backend_cpu_new(1);
        r->ops->destroy(r);
    }
    CHECKB(memcmp(o[0], o[1], sizeof(float) * N * H * V) == 0,
           "attn_prefill dense: AVX-512 and AVX2 forms bitwise equal",
           "outputs differ");
    CHECKB(memcmp(d[0], d[1], sizeof(float) * 3 * DH * LORA) == 0,
           "attn_decode: AVX-512 and AVX2 forms bitwise equal",
           "outputs differ");
    cache_free(&c);
    for (int f = 0; f < 2; f++) {
        free(o[f]);
        free(d[f]);
    }
    free(q), free(kv), free(pe), free(ql), free(qp);
}

int
main(void)
{
    check_seed_from_env();
    sg_fp8_init();
    test_pool_sizes();
    for (int split = 0; split < 2; split++) {
        if (split)
            setenv("SG_CPU_PAR_WORK", "0", 1);
        config_tag = split ? " [3 threads, all loops split]" : "";
        B = sg_backend_cpu_new(split ? 3 : 0);
        CHECKB(B != NULL, "cpu backend created", "sg_backend_cpu_new failed");
        if (B == NULL)
            return check_finish();
        test_kv_roundtrip(0, 1);
        test_kv_roundtrip(1, 1);
        test_kv_roundtrip(1, 0);
        test_index_scores();
        test_topk();
        test_attn_prefill(0, 16);
        test_attn_prefill(1, 16);
        test_attn_prefill(1, 4);
        /* several key tiles and row blocks, odd dimensions, NaN */
        test_attn_prefill_shape(0, 16, (prefill_shape){ 150, 211, 2, 20, 7, 27 },
                                0);
        test_attn_prefill_shape(0, 16, (prefill_shape){ 70, 130, 2, 64, 32, 64 },
                                1);
        test_attn_prefill_shape(1, 16, (prefill_shape){ 70, 130, 2, 64, 32, 64 },
                                1);
        for (int fp8 = 0; fp8 < 2; fp8++)
            for (int sparse = 0; sparse < 2; sparse++)
                test_attn_decode(fp8, sparse, 4, 0);
        test_attn_decode(1, 0, 7, 0);
        test_attn_decode(1, 1, 13, 1);
        test_isa_forms_equal();
        B->ops->destroy(B);
    }
    unsetenv("SG_CPU_PAR_WORK");
    return check_finish();
}
