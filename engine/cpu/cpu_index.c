/*
 * The DSA lightning indexer's scores over the cached FP8 keys, and the
 * top-k selection that turns them into each row's key set.
 */
#include <math.h>
#include <stdlib.h>

#include <cblas.h>

#include "cpu_internal.h"

/* e4m3 codes -> f32 holding value * 2^-8 (exact). */
static void
e4m3_row_scaled(const uint8_t *q, int len, float *out)
{
    int j = 0;

    for (; j + 8 <= len; j += 8)
        _mm256_storeu_ps(out + j, cpu_e4m3x8_scaled(q + j));
    for (; j < len; j++)
        out[j] = sg_e4m3_to_f32(q[j]) * (1.0f / 256.0f);
}

#define KEY_CHUNK 128
#define ROW_BLOCK 8          /* rows of one sequence sharing decoded keys */

typedef struct {
    const sg_kv_layer *L;
    const sg_rows     *rows;
    const uint8_t     *q8;
    const float       *w;
    float             *scores;
    const int32_t     *block_row;    /* [n_blocks + 1] first row of each */
    int                heads, idim, stride, chunks_per_row;
} index_ctx;

/*
 * Items are (block of rows, chunk of KEY_CHUNK keys) pairs.  A block is up
 * to ROW_BLOCK consecutive rows of one sequence: the chunk's keys are
 * decoded once for all of them, then one sgemm per row gives its (head,
 * key) dot products (products of e4m3 values are exact in f32; a per-row
 * sgemm keeps each row's sums independent of the block), then relu,
 * weight and the sum over heads in head order, as the reference kernel.
 */
static void
index_range(void *c, int64_t t0, int64_t t1)
{
    index_ctx *X = c;
    int        heads = X->heads, idim = X->idim;
    size_t     qn = (size_t)ROW_BLOCK * heads * idim;
    float     *qf = malloc(sizeof(float) * (qn + (size_t)KEY_CHUNK * idim
                                            + (size_t)heads * KEY_CHUNK));
    float     *kf = qf + qn;
    float     *dots = kf + (size_t)KEY_CHUNK * idim;
    int        block = -1;

    if (qf == NULL) {
        cpu_oom();
        return;
    }
    for (int64_t t = t0; t < t1; t++) {
        int            bi = (int)(t / X->chunks_per_row);
        int            i0 = X->block_row[bi], i1 = X->block_row[bi + 1];
        int            c0 = (int)(t % X->chunks_per_row) * KEY_CHUNK;
        int            c1 = c0 + KEY_CHUNK < X->stride ? c0 + KEY_CHUNK
                                                       : X->stride;
        const int32_t *bt = X->rows->block_table
                            + (size_t)X->rows->seq[i0] * X->rows->max_blocks;
        int            nv = 0;

        /* keys up to the block's furthest position */
        for (int i = i0; i < i1; i++) {
            int end = X->rows->pos[i] + 1 < c1 ? X->rows->pos[i] + 1 : c1;
            nv = end - c0 > nv ? end - c0 : nv;
        }
        if (nv > 0) {
            if (bi != block) {
                e4m3_row_scaled(X->q8 + (size_t)i0 * heads * idim,
                                (i1 - i0) * heads * idim, qf);
                block = bi;
            }
            for (int j = 0; j < nv; j++)
                e4m3_row_scaled(X->L->ikey + cpu_slot(bt, c0 + j) * idim,
                                idim, kf + (size_t)j * idim);
        }
        for (int i = i0; i < i1; i++) {
            const float *wi = X->w + (size_t)i * heads;
            float       *out = X->scores + (size_t)i * X->stride;
            int          end = X->rows->pos[i] + 1 < c1 ? X->rows->pos[i] + 1
                                                        : c1;
            int          n = end - c0;

            for (int s = c0 > end ? c0 : end; s < c1; s++)
                out[s] = -INFINITY;
            if (n <= 0)
                continue;
            /* one sgemm per row, shaped by the row alone: OpenBLAS does
             * not sum a dot product in the same order for every M */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, heads, n,
                        idim, 1.0f, qf + (size_t)(i - i0) * heads * idim,
                        idim, kf, idim, 0.0f, dots, n);
            for (int j = 0; j < n; j++) {
                float sum = 0.0f;

                for (int h = 0; h < heads; h++) {
                    /* both operands carry 2^-8: scale back exactly */
                    float d = dots[(size_t)h * n + j] * 65536.0f;
                    sum += (d > 0.0f ? d : 0.0f) * wi[h];
                }
                out[c0 + j] = sum * X->L->ikey_scale[cpu_slot(bt, c0 + j)];
            }
        }
    }
    free(qf);
}

void
cpu_index_scores(sg_backend *b, const sg_kv_pool *pool, int layer,
                 const sg_rows *rows, const uint8_t *q8, const float *w,
                 int heads, float *scores, int scores_stride)
{
    int32_t  *block_row = malloc(sizeof(int32_t) * (rows->n + 1));
    int       nb = 0;
    double    work = 0;

    if (block_row == NULL) {
        cpu_backend_oom(b);
        return;
    }
    for (int i = 0; i < rows->n; i++) {
        if (nb == 0 || i - block_row[nb - 1] == ROW_BLOCK
            || rows->seq[i] != rows->seq[block_row[nb - 1]])
            block_row[nb++] = i;
        work += (double)(rows->pos[i] + 1) * heads * pool->index_dim;
    }
    block_row[nb] = rows->n;

    index_ctx X = { &pool->layers[layer], rows, q8, w, scores, block_row,
                    heads, pool->index_dim, scores_stride,
                    (scores_stride + KEY_CHUNK - 1) / KEY_CHUNK };

    cpu_parallel(b, (int64_t)nb * X.chunks_per_row, 1, work, index_range, &X);
    free(block_row);
}

static inline float
key_of(float v)
{
    return v != v ? -INFINITY : v;          /* NaN ranks lowest */
}

/* The k-th largest (k >= 1) of a[0..n), reordering a (Hoare quickselect). */
static float
kth_largest(float *a, int n, int k)
{
    int lo = 0, hi = n - 1, target = k - 1;

    while (lo < hi) {
        float x = a[lo], y = a[lo + (hi - lo) / 2], z = a[hi];
        float pivot = x > y ? (y > z ? y : (x > z ? z : x))
                            : (x > z ? x : (y > z ? z : y));
        int   i = lo, j = hi;

        while (i <= j) {
            while (a[i] > pivot)
                i++;
            while (a[j] < pivot)
                j--;
            if (i <= j) {
                float t = a[i];
                a[i] = a[j];
                a[j] = t;
                i++;
                j--;
            }
        }
        if (target <= j)
            hi = j;
        else if (target >= i)
            lo = i;
        else
            return a[target];
    }
    return a[target];
}

typedef struct {
    const float   *scores;
    const int32_t *len;
    int32_t       *idx;
    int            stride, k;
} topk_ctx;

static void
topk_range(void *c, int64_t i0, int64_t i1)
{
    topk_ctx *T = c;
    int       k = T->k;
    float    *tmp = malloc(sizeof(float) * (T->stride > 0 ? T->stride : 1));

    if (tmp == NULL) {
        /* no keys selected: the indices stay in range */
        for (int64_t i = i0; i < i1; i++)
            for (int c = 0; c < k; c++)
                T->idx[(size_t)i * k + c] = -1;
        cpu_oom();
        return;
    }
    for (int64_t i = i0; i < i1; i++) {
        const float *row = T->scores + (size_t)i * T->stride;
        int32_t     *out = T->idx + (size_t)i * k;
        int          m = T->len[i] < T->stride ? T->len[i] : T->stride;
        int          c = 0;

        if (m < 0)
            m = 0;
        if (m <= k) {
            for (; c < m; c++)
                out[c] = c;
        } else {
            for (int s = 0; s < m; s++)
                tmp[s] = key_of(row[s]);
            float thr = kth_largest(tmp, m, k);
            int   above = 0;

            for (int s = 0; s < m; s++)
                above += key_of(row[s]) > thr;
            /* ties at the threshold go to the lowest indices */
            int ties = k - above;
            for (int s = 0; s < m && c < k; s++) {
                float v = key_of(row[s]);
                if (v > thr || (v == thr && ties-- > 0))
                    out[c++] = s;
            }
        }
        for (; c < k; c++)
            out[c] = -1;
    }
    free(tmp);
}

void
cpu_topk(sg_backend *b, const float *scores, int n, int stride,
         const int32_t *len, int k, int32_t *idx)
{
    topk_ctx T = { scores, len, idx, stride, k };

    if (k <= 0)
        return;

    cpu_parallel(b, n, 1, (double)n * stride * 8, topk_range, &T);
}
