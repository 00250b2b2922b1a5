/*
 * MLA attention: the prefill (MHA) form over kv_b-expanded keys, the
 * decode (absorbed MQA) form over the cached latents, and the two per-head
 * products with kv_b that the absorbed form needs.
 */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

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
    const int32_t     *ridx;      /* the rows this path computes */
    int                n, n_keys, k, heads, nope, rope, v;
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
    int          qk = nope + rope, kvw = nope + P->v, n = P->n;
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
            B.nk[r] = cpu_key_list(P->sel + (size_t)P->ridx[i0 + r] * P->k, P->k,
                                   P->rows->pos[P->ridx[i0 + r]], P->n_keys,
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
                        qn[t] = P->q + ((size_t)P->ridx[i0 + r] * heads + h) * qk;
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
                memset(P->out + ((size_t)P->ridx[i0 + r] * heads + h) * P->v, 0,
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
                float *o = P->out + (size_t)P->ridx[i0 + r] * heads * P->v;
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

/* Whether row i's set covers every key up to its position (a prompt row
 * before index_topk, or sel NULL): then it takes the dense kernel. */
static int
attends_all(const int32_t *sel, int k, int pos, int n_keys, int32_t *keys)
{
    int last = pos < n_keys - 1 ? pos : n_keys - 1;

    return sel == NULL || cpu_key_list(sel, k, pos, n_keys, keys) == last + 1;
}

void
cpu_attn_prefill(sg_backend *b, const float *q, const float *kv,
                 const float *pe, int k0, int n_keys, const sg_rows *rows,
                 const int32_t *sel, int k, int heads, int nope, int rope,
                 int v, float scale, float *ml, float *out)
{
    int      n = rows->n, cap = k > n_keys ? k : n_keys, nd = 0, ns = 0;
    int32_t *idx = malloc(sizeof(int32_t) * ((size_t)n + (cap > 0 ? cap : 1)));
    int32_t *keys = idx + n;

    if (n <= 0) {
        free(idx);
        return;
    }
    if (idx == NULL) {
        cpu_backend_oom(b);
        return;
    }
    /* each row's path depends on its own set only, never on which rows
     * share the call: rows that attend every earlier key take the dense
     * (flash) kernel, the others their own key lists; dense rows fill idx
     * from the front, sparse ones from the back */
    for (int i = 0; i < n; i++) {
        if (attends_all(sel ? sel + (size_t)i * k : NULL, k, rows->pos[i],
                        n_keys, keys))
            idx[nd++] = i;
        else
            idx[n - 1 - ns++] = i;
    }
    if (nd > 0)
        cpu_flash_prefill(b, q, kv, pe, k0, n_keys, rows,
                          nd == n ? NULL : idx, nd, heads, nope, rope, v,
                          scale, ml, out);
    if (ns > 0) {
        prefill_ctx P = { q, kv, pe, rows, sel, idx + nd, ns, n_keys, k,
                          heads, nope, rope, v, scale, out };
        int         nblk = (ns + SPARSE_ROWS - 1) / SPARSE_ROWS;

        /* back to ascending order: blocks of neighbouring rows */
        for (int a = nd, z = n - 1; a < z; a++, z--) {
            int32_t t = idx[a];
            idx[a] = idx[z];
            idx[z] = t;
        }
        cpu_parallel(b, nblk, 1, (double)ns * heads * k * (nope + rope + v),
                     prefill_range, &P);
    }
    free(idx);
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
