/*
 * MLA attention: the prefill (MHA) form over kv_b-expanded keys, the
 * decode (absorbed MQA) form over the cached latents, and the two per-head
 * products with kv_b that the absorbed form needs.
 */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "cpu_internal.h"

static int
cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;

    return (x > y) - (x < y);
}

int
cpu_key_list(const int32_t *sel, int k, int pos, int n_keys, int32_t *keys)
{
    int last = pos < n_keys - 1 ? pos : n_keys - 1;
    int n = 0, sorted = 1;

    if (sel == NULL) {
        for (int s = 0; s <= last; s++)
            keys[n++] = s;
        return n;
    }
    for (int j = 0; j < k; j++) {
        int32_t s = sel[j];

        if (s < 0 || s > last)
            continue;
        if (n > 0 && s <= keys[n - 1])
            sorted = 0;
        keys[n++] = s;
    }
    if (!sorted) {
        /* a set, as a mask: order and repeats do not matter */
        int m = 0;

        qsort(keys, n, sizeof(int32_t), cmp_i32);
        for (int j = 0; j < n; j++)
            if (m == 0 || keys[j] != keys[m - 1])
                keys[m++] = keys[j];
        n = m;
    }
    return n;
}

/* out[t] = a[t] . b for na rows (na = 1 or 4, a constant after inlining),
 * each summed in the same order whatever na is: the dense prefill blocks
 * and the per-row path give a row bitwise the same scores. */
static inline __attribute__((always_inline)) void
dot_rows(const float *const *a, const int na, const float *b, int len,
         float *out)
{
    __m256 acc[4];
    int    j = 0;

#pragma GCC unroll 4
    for (int t = 0; t < na; t++)
        acc[t] = _mm256_setzero_ps();
    for (; j + 8 <= len; j += 8) {
        __m256 bv = _mm256_loadu_ps(b + j);
#pragma GCC unroll 4
        for (int t = 0; t < na; t++)
            acc[t] = _mm256_fmadd_ps(_mm256_loadu_ps(a[t] + j), bv, acc[t]);
    }
#pragma GCC unroll 4
    for (int t = 0; t < na; t++) {
        float s = cpu_hsum(acc[t]);
        for (int i = j; i < len; i++)
            s += a[t][i] * b[i];
        out[t] = s;
    }
}

static float
dot(const float *a, const float *b, int len)
{
    float out;

    dot_rows(&a, 1, b, len, &out);
    return out;
}

/* p[0..n) = softmax(p * scale) in place, f32 with max subtraction. */
static void
softmax_scaled(float *p, int n, float scale)
{
    float mx = -INFINITY, sum = 0.0f;

    for (int j = 0; j < n; j++) {
        p[j] *= scale;
        mx = p[j] > mx ? p[j] : mx;
    }
    for (int j = 0; j < n; j++) {
        p[j] = expf(p[j] - mx);
        sum += p[j];
    }
    for (int j = 0; j < n; j++)
        p[j] /= sum;
}

typedef struct {
    const float       *q, *kv, *pe;
    const sg_rows     *rows;
    const int32_t     *sel;
    int                n_keys, k, heads, nope, rope, v;
    float              scale;
    float             *out;
} prefill_ctx;

#define SPARSE_ROWS 16      /* top-k rows per work item */

/* Per-item scratch of the top-k path: each row's key list and its scores
 * (then probabilities) per head, and the merged list of the block. */
typedef struct {
    int32_t  *keys[SPARSE_ROWS];
    float    *p[SPARSE_ROWS];      /* [heads][cap] */
    int       nk[SPARSE_ROWS], cur[SPARSE_ROWS];
    int32_t  *ukey;                /* [SPARSE_ROWS * cap] ascending */
    uint32_t *umask;               /* rows whose list holds ukey[u] */
} sparse_block;

_Static_assert(SPARSE_ROWS <= 32, "row masks are 32-bit");

/* Merges the block's rn sorted key lists; returns the union's size. */
static int
merge_keys(sparse_block *B, int rn)
{
    int nu = 0;

    for (int r = 0; r < rn; r++)
        B->cur[r] = 0;
    for (;;) {
        int      key = INT_MAX;
        uint32_t mask = 0;

        for (int r = 0; r < rn; r++)
            if (B->cur[r] < B->nk[r] && B->keys[r][B->cur[r]] < key)
                key = B->keys[r][B->cur[r]];
        if (key == INT_MAX)
            break;
        for (int r = 0; r < rn; r++)
            if (B->cur[r] < B->nk[r] && B->keys[r][B->cur[r]] == key) {
                mask |= 1u << r;
                B->cur[r]++;
            }
        B->ukey[nu] = key;
        B->umask[nu++] = mask;
    }
    for (int r = 0; r < rn; r++)
        B->cur[r] = 0;
    return nu;
}

/* Asks for len floats at base + h * stride, every head: a key's kv row is
 * one page, where the hardware prefetcher stops, and keys are sparse. */
static inline void
prefetch_heads(const float *base, int heads, int stride, int len)
{
    for (int h = 0; h < heads; h++)
        for (int j = 0; j < len; j += 16)
            _mm_prefetch((const char *)(base + (size_t)h * stride + j),
                         _MM_HINT_T0);
}

#define SPARSE_AHEAD 2        /* keys prefetched ahead */

/*
 * Top-k rows.  Items are blocks of SPARSE_ROWS rows.  Nearby rows pick
 * many of the same keys, so the block walks the union of its rows' sorted
 * key lists, and each key's kv row (all heads, contiguous) and pe row are
 * read once for every row and head that attends it.  A row's numbers are
 * those of a row alone: its scores are dot products summed in one fixed
 * order (dot_rows), its softmax is its own, and its values are summed in
 * its own key order -- whichever rows share its block.
 */
static void
prefill_range(void *c, int64_t b0, int64_t b1)
{
    prefill_ctx *P = c;
    int          heads = P->heads, nope = P->nope, rope = P->rope;
    int          qk = nope + rope, kvw = nope + P->v, n = P->rows->n;
    int          cap = P->k;           /* a row's list is a subset of sel */
    sparse_block B;
    int          ok;

    if (cap < 1)
        cap = 1;
    B.ukey = malloc(sizeof(int32_t) * SPARSE_ROWS * (size_t)cap);
    B.umask = malloc(sizeof(uint32_t) * SPARSE_ROWS * (size_t)cap);
    ok = B.ukey != NULL && B.umask != NULL;
    for (int r = 0; r < SPARSE_ROWS; r++) {
        B.keys[r] = malloc(sizeof(int32_t) * cap);
        B.p[r] = malloc(sizeof(float) * (size_t)heads * cap);
        ok = ok && B.keys[r] != NULL && B.p[r] != NULL;
    }
    if (!ok) {
        cpu_oom();
        b1 = b0;                       /* nothing computed, all freed */
    }
    for (int64_t blk = b0; blk < b1; blk++) {
        int i0 = (int)blk * SPARSE_ROWS;
        int rn = n - i0 < SPARSE_ROWS ? n - i0 : SPARSE_ROWS;
        int nu;

        for (int r = 0; r < rn; r++)
            B.nk[r] = cpu_key_list(P->sel + (size_t)(i0 + r) * P->k, P->k,
                                   P->rows->pos[i0 + r], P->n_keys,
                                   B.keys[r]);
        nu = merge_keys(&B, rn);
        /* scores: the rows attending a key, four at a time, head by head
         * (a short group repeats its first row and drops the results) */
        for (int u = 0; u < nu; u++) {
            const float *kvr = P->kv + (size_t)B.ukey[u] * heads * kvw;
            const float *per = P->pe + (size_t)B.ukey[u] * rope;
            int          ru[SPARSE_ROWS], nr = 0;

            if (u + SPARSE_AHEAD < nu) {
                int32_t ka = B.ukey[u + SPARSE_AHEAD];
                prefetch_heads(P->kv + (size_t)ka * heads * kvw, heads, kvw,
                               nope);
                prefetch_heads(P->pe + (size_t)ka * rope, 1, 0, rope);
            }
            for (int r = 0; r < rn; r++)
                if (B.umask[u] & (1u << r))
                    ru[nr++] = r;
            for (int g = 0; g < nr; g += 4) {
                const int *rg = ru + g;
                int        ng = nr - g < 4 ? nr - g : 4;

                for (int h = 0; h < heads; h++) {
                    const float *qn[4], *qp[4];
                    float        dn[4], dp[4];

                    for (int t = 0; t < 4; t++) {
                        int r = rg[t < ng ? t : 0];
                        qn[t] = P->q + ((size_t)(i0 + r) * heads + h) * qk;
                        qp[t] = qn[t] + nope;
                    }
                    dot_rows(qn, 4, kvr + (size_t)h * kvw, nope, dn);
                    dot_rows(qp, 4, per, rope, dp);
                    for (int t = 0; t < ng; t++) {
                        int r = rg[t];
                        B.p[r][(size_t)h * cap + B.cur[r]] = dn[t] + dp[t];
                    }
                }
            }
            for (int t = 0; t < nr; t++)
                B.cur[ru[t]]++;
        }
        for (int r = 0; r < rn; r++) {
            for (int h = 0; h < heads; h++) {
                softmax_scaled(B.p[r] + (size_t)h * cap, B.nk[r], P->scale);
                memset(P->out + ((size_t)(i0 + r) * heads + h) * P->v, 0,
                       sizeof(float) * P->v);
            }
            B.cur[r] = 0;
        }
        /* values: each row sums its keys in its own (ascending) order */
        for (int u = 0; u < nu; u++) {
            const float *vr = P->kv + (size_t)B.ukey[u] * heads * kvw + nope;

            if (u + SPARSE_AHEAD < nu)
                prefetch_heads(P->kv + (size_t)B.ukey[u + SPARSE_AHEAD]
                               * heads * kvw + nope, heads, kvw, P->v);
            for (int r = 0; r < rn; r++) {
                if (!(B.umask[u] & (1u << r)))
                    continue;
                float *o = P->out + (size_t)(i0 + r) * heads * P->v;
                for (int h = 0; h < heads; h++)
                    cpu_axpy(o + (size_t)h * P->v,
                             B.p[r][(size_t)h * cap + B.cur[r]],
                             vr + (size_t)h * kvw, P->v);
                B.cur[r]++;
            }
        }
    }
    for (int r = 0; r < SPARSE_ROWS; r++) {
        free(B.keys[r]);
        free(B.p[r]);
    }
    free(B.ukey);
    free(B.umask);
}

#define PREFILL_BLOCK 32      /* rows per work item */

/*
 * Dense rows.  Items are (head, block of PREFILL_BLOCK rows): scores of
 * four rows at a time against every key up to the block's last position
 * (each key read once for the four), keys past a row's position masked to
 * -inf (exp gives exactly 0, as the reference's additive mask), softmax,
 * then each row sums its own keys' values in key order.  A row's numbers
 * are those of the per-row path, whichever rows share its call: chunked
 * and one-shot prefill agree bitwise.  (sgemm would be faster but its
 * summation order changes with the matrix shapes.)
 */
static void
prefill_block_range(void *c, int64_t t0, int64_t t1)
{
    prefill_ctx *P = c;
    int          heads = P->heads, qk = P->nope + P->rope;
    int          kvw = P->nope + P->v, n = P->rows->n;
    int          nblk = (n + PREFILL_BLOCK - 1) / PREFILL_BLOCK;
    float       *sc = malloc(sizeof(float) * PREFILL_BLOCK * (size_t)P->n_keys
                             + 1);

    if (sc == NULL) {
        cpu_oom();
        return;
    }
    for (int64_t t = t0; t < t1; t++) {
        int h = (int)(t / nblk), i0 = (int)(t % nblk) * PREFILL_BLOCK;
        int rn = n - i0 < PREFILL_BLOCK ? n - i0 : PREFILL_BLOCK;
        int nk = 0;

        for (int r = 0; r < rn; r++) {
            memset(P->out + ((size_t)(i0 + r) * heads + h) * P->v, 0,
                   sizeof(float) * P->v);
            if (P->rows->pos[i0 + r] + 1 > nk)
                nk = P->rows->pos[i0 + r] + 1;
        }
        if (nk > P->n_keys)
            nk = P->n_keys;
        if (nk <= 0)
            continue;
        const float *kh = P->kv + (size_t)h * kvw;
        int          r = 0;

        /* scores as the per-row path computes them, four rows per key */
        for (; r + 4 <= rn; r += 4) {
            const float *qn[4], *qp[4];
            float        dn[4], dp[4];

            for (int u = 0; u < 4; u++) {
                qn[u] = P->q + ((size_t)(i0 + r + u) * heads + h) * qk;
                qp[u] = qn[u] + P->nope;
            }
            for (int s = 0; s < nk; s++) {
                dot_rows(qn, 4, kh + (size_t)s * heads * kvw, P->nope, dn);
                dot_rows(qp, 4, P->pe + (size_t)s * P->rope, P->rope, dp);
                for (int u = 0; u < 4; u++)
                    sc[(size_t)(r + u) * nk + s] = dn[u] + dp[u];
            }
        }
        for (; r < rn; r++) {
            const float *qn = P->q + ((size_t)(i0 + r) * heads + h) * qk;

            for (int s = 0; s < nk; s++)
                sc[(size_t)r * nk + s] =
                    dot(qn, kh + (size_t)s * heads * kvw, P->nope)
                    + dot(qn + P->nope, P->pe + (size_t)s * P->rope, P->rope);
        }
        for (int r = 0; r < rn; r++) {
            float *row = sc + (size_t)r * nk;
            float *o = P->out + ((size_t)(i0 + r) * heads + h) * P->v;
            int    last = P->rows->pos[i0 + r];

            if (last >= nk)
                last = nk - 1;
            if (last < 0)
                continue;                      /* no keys: zero output */
            for (int s = last + 1; s < nk; s++)
                row[s] = -INFINITY;
            softmax_scaled(row, nk, P->scale);
            for (int s = 0; s <= last; s++)
                cpu_axpy(o, row[s], kh + (size_t)s * heads * kvw + P->nope,
                         P->v);
        }
    }
    free(sc);
}

void
cpu_attn_prefill(sg_backend *b, const float *q, const float *kv,
                 const float *pe, int n_keys, const sg_rows *rows,
                 const int32_t *sel, int k, int heads, int nope, int rope,
                 int v, float scale, float *out)
{
    prefill_ctx P = { q, kv, pe, rows, sel, n_keys, k, heads, nope, rope, v,
                      scale, out };
    double span = 0, work;

    if (rows->n <= 0)
        return;
    for (int i = 0; i < rows->n; i++)
        span += rows->pos[i] + 1 < n_keys ? rows->pos[i] + 1 : n_keys;
    /* the path depends only on sel, never on which rows share the call:
     * top-k rows go through their own key lists */
    if (sel == NULL) {
        int nblk = (rows->n + PREFILL_BLOCK - 1) / PREFILL_BLOCK;
        work = (double)heads * span * (nope + rope + v);
        cpu_parallel(b, (int64_t)heads * nblk, 1, work, prefill_block_range,
                     &P);
    } else {
        int nblk = (rows->n + SPARSE_ROWS - 1) / SPARSE_ROWS;
        work = (double)rows->n * heads * k * (nope + rope + v);
        cpu_parallel(b, nblk, 1, work, prefill_range, &P);
    }
}

typedef struct {
    const sg_kv_pool *pool;
    const sg_kv_layer *L;
    const int32_t    *bt, *keys;
    const float      *q_lat, *q_pe;
    float            *lat, *kpe, *sc, *out;
    int               nk, heads;
    int               j0, tn;      /* the current tile of the key list */
    float             scale;
} decode_ctx;

/* Keys [j0, j1) of the current tile, dequantized for all heads. */
static void
decode_keys_range(void *c, int64_t j0, int64_t j1)
{
    decode_ctx        *D = c;
    const sg_kv_layer *L = D->L;
    int lora = D->pool->kv_lora, rope = D->pool->rope;
    int nb = (lora + SG_FP8_BLOCK - 1) / SG_FP8_BLOCK;

    for (int64_t j = j0; j < j1; j++) {
        int64_t slot = cpu_slot(D->bt, D->keys[D->j0 + j]);
        float  *dst = D->lat + (size_t)j * lora;

        if (D->pool->latent_fp8) {
            cpu_dequant_row((const uint8_t *)L->latent + slot * lora,
                            L->latent_scale + slot * nb, lora, dst);
        } else {
            memcpy(dst, (const float *)L->latent + slot * lora,
                   sizeof(float) * lora);
        }
        memcpy(D->kpe + (size_t)j * rope, L->pe + slot * rope,
               sizeof(float) * rope);
    }
}

/* Heads [h0, h1): scores against the tile's keys. */
static void
decode_scores_range(void *c, int64_t h0, int64_t h1)
{
    decode_ctx *D = c;
    int         lora = D->pool->kv_lora, rope = D->pool->rope;
    int         hn = (int)(h1 - h0), nk = D->nk;
    float      *s = D->sc + (size_t)h0 * nk + D->j0;

    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, hn, D->tn, lora,
                1.0f, D->q_lat + (size_t)h0 * lora, lora, D->lat, lora, 0.0f,
                s, nk);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, hn, D->tn, rope,
                1.0f, D->q_pe + (size_t)h0 * rope, rope, D->kpe, rope, 1.0f,
                s, nk);
}

static void
decode_softmax_range(void *c, int64_t h0, int64_t h1)
{
    decode_ctx *D = c;

    for (int64_t h = h0; h < h1; h++)
        softmax_scaled(D->sc + (size_t)h * D->nk, D->nk, D->scale);
}

/* Heads [h0, h1): out += p[tile] . latents[tile] (= for the first tile). */
static void
decode_values_range(void *c, int64_t h0, int64_t h1)
{
    decode_ctx *D = c;
    int         lora = D->pool->kv_lora, nk = D->nk;

    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)(h1 - h0),
                lora, D->tn, 1.0f, D->sc + (size_t)h0 * nk + D->j0, nk,
                D->lat, lora, D->j0 == 0 ? 0.0f : 1.0f,
                D->out + (size_t)h0 * lora, lora);
}

/*
 * Long lists go in tiles of DECODE_TILE keys, so that the dequantized
 * latents stay in cache between the scores and the product that reads
 * them (a 32K list as one tile is 64 MB at kv_lora 512, read by every
 * chunk of heads); lists up to DECODE_TILE_MAX are one tile.  The tiling
 * depends only on the row's own key count: batch invariant.
 */
#define DECODE_TILE      1024
#define DECODE_TILE_MAX  4096
_Static_assert(DECODE_TILE <= DECODE_TILE_MAX, "tiles fit the buffers");

static int
decode_tile(int nk)
{
    return nk <= DECODE_TILE_MAX ? nk : DECODE_TILE;
}

void
cpu_attn_decode(sg_backend *b, const sg_kv_pool *pool, int layer,
                const sg_rows *rows, const float *q_lat, const float *q_pe,
                const int32_t *sel, int k, int heads, float scale, float *out)
{
    int lora = pool->kv_lora, rope = pool->rope;
    int cap = 1;

    for (int i = 0; i < rows->n; i++) {
        int m = sel ? k : rows->pos[i] + 1;
        cap = m > cap ? m : cap;
    }
    /* the largest tile: a list of up to DECODE_TILE_MAX keys is one */
    int      tcap = cap < DECODE_TILE_MAX ? cap : DECODE_TILE_MAX;
    int32_t *keys = malloc(sizeof(int32_t) * cap);
    float   *lat = malloc(sizeof(float) * (size_t)tcap * lora);
    float   *kpe = malloc(sizeof(float) * (size_t)tcap * rope);
    float   *sc = malloc(sizeof(float) * (size_t)cap * heads);
    /* about one chunk of heads per thread: each sgemm reads all keys */
    int      hchunk = (heads + cpu_threads(b) - 1) / cpu_threads(b);

    int      n = rows->n;

    if (keys == NULL || lat == NULL || kpe == NULL || sc == NULL) {
        cpu_backend_oom(b);
        n = 0;                         /* nothing computed, all freed */
    }
    for (int i = 0; i < n; i++) {
        decode_ctx D = { pool, &pool->layers[layer],
                         rows->block_table
                         + (size_t)rows->seq[i] * rows->max_blocks,
                         keys, q_lat + (size_t)i * heads * lora,
                         q_pe + (size_t)i * heads * rope, lat, kpe, sc,
                         out + (size_t)i * heads * lora, 0, heads, 0, 0,
                         scale };
        int tile;

        D.nk = cpu_key_list(sel ? sel + (size_t)i * k : NULL, k,
                            rows->pos[i], INT_MAX, keys);
        if (D.nk == 0) {
            memset(D.out, 0, sizeof(float) * heads * lora);
            continue;
        }
        tile = decode_tile(D.nk);
        for (D.j0 = 0; D.j0 < D.nk; D.j0 += tile) {
            D.tn = D.nk - D.j0 < tile ? D.nk - D.j0 : tile;
            cpu_parallel(b, D.tn, 16, (double)D.tn * lora,
                         decode_keys_range, &D);
            cpu_parallel(b, heads, hchunk,
                         (double)heads * D.tn * (lora + rope),
                         decode_scores_range, &D);
        }
        cpu_parallel(b, heads, 1, (double)heads * D.nk * 8,
                     decode_softmax_range, &D);
        for (D.j0 = 0; D.j0 < D.nk; D.j0 += tile) {
            D.tn = D.nk - D.j0 < tile ? D.nk - D.j0 : tile;
            if (tile < D.nk)          /* one tile: its latents are there */
                cpu_parallel(b, D.tn, 16, (double)D.tn * lora,
                             decode_keys_range, &D);
            cpu_parallel(b, heads, hchunk, (double)heads * D.tn * lora,
                         decode_values_range, &D);
        }
    }
    free(keys);
    free(lat);
    free(kpe);
    free(sc);
}

typedef struct {
    const sg_tensor *kv_b;
    const float     *in;
    float           *out;
    int              n, heads, nope, rope, v, kv_lora;
} absorb_ctx;

/* Heads [h0, h1): q_lat[i][h] = sum_d q_nope[i][h][d] * Wk[h][d]. */
static void
absorb_range(void *c, int64_t h0, int64_t h1)
{
    absorb_ctx *A = c;
    int         kv_lora = A->kv_lora, nope = A->nope;
    int         qs = A->heads * (nope + A->rope);
    float      *wrow = malloc(sizeof(float) * kv_lora);

    if (wrow == NULL) {
        cpu_oom();
        return;
    }
    for (int64_t h = h0; h < h1; h++) {
        for (int d = 0; d < nope; d++) {
            cpu_weight_row(A->kv_b, h * (nope + A->v) + d, wrow);
            for (int i = 0; i < A->n; i++) {
                float  qd = A->in[(size_t)i * qs + h * (nope + A->rope) + d];
                float *o = A->out + ((size_t)i * A->heads + h) * kv_lora;
                cpu_axpy(o, qd, wrow, kv_lora);
            }
        }
    }
    free(wrow);
}

void
cpu_mla_absorb(sg_backend *b, const sg_tensor *kv_b, const float *q, int n,
               int heads, int nope, int rope, int v, int kv_lora,
               float *q_lat)
{
    absorb_ctx A = { kv_b, q, q_lat, n, heads, nope, rope, v, kv_lora };

    memset(q_lat, 0, sizeof(float) * (size_t)n * heads * kv_lora);
    cpu_parallel(b, heads, 1, (double)n * heads * nope * kv_lora,
                 absorb_range, &A);
}

/* Items (h, j) of heads*v: out[i][h][j] = Wv[h][j] . o_lat[i][h]. */
static void
unabsorb_range(void *c, int64_t t0, int64_t t1)
{
    absorb_ctx *A = c;
    int         kv_lora = A->kv_lora, v = A->v;
    float      *wrow = malloc(sizeof(float) * kv_lora);

    if (wrow == NULL) {
        cpu_oom();
        return;
    }
    for (int64_t t = t0; t < t1; t++) {
        int64_t h = t / v, j = t % v;

        cpu_weight_row(A->kv_b, h * (A->nope + v) + A->nope + j, wrow);
        for (int i = 0; i < A->n; i++)
            A->out[((size_t)i * A->heads + h) * v + j] =
                dot(wrow, A->in + ((size_t)i * A->heads + h) * kv_lora,
                    kv_lora);
    }
    free(wrow);
}

void
cpu_mla_unabsorb(sg_backend *b, const sg_tensor *kv_b, const float *o_lat,
                 int n, int heads, int nope, int v, int kv_lora, float *out)
{
    absorb_ctx A = { kv_b, o_lat, out, n, heads, nope, 0, v, kv_lora };

    cpu_parallel(b, (int64_t)heads * v, 8, (double)n * heads * v * kv_lora,
                 unabsorb_range, &A);
}
