/*
 * Dense prefill attention in the MHA form, flash style: a block of rows of
 * one head goes through the keys in tiles of FLASH_KT positions, keeping a
 * running max, denominator and output per row (online softmax), so no row
 * ever holds more than one tile of scores.
 *
 * One fixed order per output, whatever rows share the call:
 *  - a score q . k is one FMA chain over the nope then the rope dimensions
 *    (keys are packed transposed, 8 or 16 keys per vector: every lane is
 *    its own chain, so the vector width changes nothing);
 *  - tiles start at key 0 and are FLASH_KT positions wide, a row stops at
 *    its own position; its max, denominator and output are updated tile by
 *    tile in key order, the output as one FMA chain per element;
 *  - rows are grouped 4 at a time only to share loads: a row's numbers are
 *    those it would get alone (chunked and one-shot prefill agree bitwise);
 *  - the keys may come in ranges [k0, k0 + n_keys), k0 a multiple of
 *    FLASH_KT, over several calls: a row's max and denominator wait in ml
 *    and its unnormalised output in out between them, so the tiles and
 *    their order are those of one call over every key (the caller holds
 *    one range of expanded keys at a time, not the context's).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_internal.h"
#include "cpu_tile.h"

#define FLASH_KT 64          /* keys per tile (divides SG_PREFILL_KEY_ALIGN) */
#define FLASH_RB 64          /* rows per work item */

_Static_assert(SG_PREFILL_KEY_ALIGN % FLASH_KT == 0,
               "a key range starts on a tile");

typedef struct {
    const float   *q, *kv, *pe;
    const sg_rows *rows;
    const int32_t *ridx;          /* the rows to compute, NULL = all */
    int            k0;            /* kv and pe hold keys k0.. */
    int            n, n_keys, heads, nope, rope, v;
    float          scale;
    float         *ml;            /* [row][head][2] between ranges, or NULL */
    float         *out;
} flash_ctx;

/* Row index of the r-th row to compute. */
static inline int
row_of(const flash_ctx *F, int r)
{
    return F->ridx ? F->ridx[r] : r;
}

/* Kt[d][j] = key j's dimension d (nope from kv, then rope from pe) for the
 * tile's nk keys, zero up to FLASH_KT. */
static void
pack_keys(const flash_ctx *F, int h, int k0, int nk, float *kt)
{
    int dk = F->nope + F->rope, kvw = F->nope + F->v, H = F->heads;
    int j = 0;

    for (; j + 8 <= nk; j += 8) {
        const float *kr[8], *pr[8];
        int          d = 0;

        for (int u = 0; u < 8; u++) {
            kr[u] = F->kv + ((size_t)(k0 + j + u) * H + h) * kvw;
            pr[u] = F->pe + (size_t)(k0 + j + u) * F->rope;
        }
        for (; d + 8 <= F->nope; d += 8) {
            __m256 r[8];
            for (int u = 0; u < 8; u++)
                r[u] = _mm256_loadu_ps(kr[u] + d);
            cpu_transpose8(r);
            for (int u = 0; u < 8; u++)
                _mm256_storeu_ps(kt + (size_t)(d + u) * FLASH_KT + j, r[u]);
        }
        for (; d < F->nope; d++)
            for (int u = 0; u < 8; u++)
                kt[(size_t)d * FLASH_KT + j + u] = kr[u][d];
        for (d = 0; d + 8 <= F->rope; d += 8) {
            __m256 r[8];
            for (int u = 0; u < 8; u++)
                r[u] = _mm256_loadu_ps(pr[u] + d);
            cpu_transpose8(r);
            for (int u = 0; u < 8; u++)
                _mm256_storeu_ps(kt + (size_t)(F->nope + d + u) * FLASH_KT
                                 + j, r[u]);
        }
        for (; d < F->rope; d++)
            for (int u = 0; u < 8; u++)
                kt[(size_t)(F->nope + d) * FLASH_KT + j + u] = pr[u][d];
    }
    for (; j < nk; j++) {
        const float *kr = F->kv + ((size_t)(k0 + j) * H + h) * kvw;
        const float *pr = F->pe + (size_t)(k0 + j) * F->rope;

        for (int d = 0; d < F->nope; d++)
            kt[(size_t)d * FLASH_KT + j] = kr[d];
        for (int d = 0; d < F->rope; d++)
            kt[(size_t)(F->nope + d) * FLASH_KT + j] = pr[d];
    }
    for (int d = 0; d < dk && nk < FLASH_KT; d++)
        memset(kt + (size_t)d * FLASH_KT + nk, 0,
               sizeof(float) * (FLASH_KT - nk));
}

/* Work items are (head, block of FLASH_RB rows). */
static void
flash_range(void *c, int64_t t0, int64_t t1)
{
    flash_ctx *F = c;
    int        H = F->heads, nope = F->nope, rope = F->rope, v = F->v;
    int        dk = nope + rope, qk = nope + rope, kvw = nope + v;
    int        n = F->n, nblk = (n + FLASH_RB - 1) / FLASH_RB;
    float     *kt = malloc(sizeof(float) * ((size_t)dk * FLASH_KT
                                            + (size_t)FLASH_RB * FLASH_KT));
    float     *sc = kt + (size_t)dk * FLASH_KT;
    float      m[FLASH_RB], l[FLASH_RB];
    int        cnt[FLASH_RB], act[FLASH_RB];

    if (kt == NULL) {
        cpu_oom();
        return;
    }
    for (int64_t t = t0; t < t1; t++) {
        int h = (int)(t / nblk), i0 = (int)(t % nblk) * FLASH_RB;
        int rn = n - i0 < FLASH_RB ? n - i0 : FLASH_RB;
        int last = -1;

        /* positions local to the range: key j of kv is key k0 + j */
        for (int r = 0; r < rn; r++) {
            int p = F->rows->pos[row_of(F, i0 + r)] - F->k0;

            p = p < F->n_keys - 1 ? p : F->n_keys - 1;
            last = p > last ? p : last;
            if (F->k0 > 0) {           /* carried from the earlier ranges */
                const float *mr = F->ml + ((size_t)row_of(F, i0 + r) * H
                                           + h) * 2;
                m[r] = p >= 0 ? mr[0] : -INFINITY;
                l[r] = p >= 0 ? mr[1] : 0.0f;
                continue;
            }
            m[r] = -INFINITY;
            l[r] = 0.0f;
            memset(F->out + ((size_t)row_of(F, i0 + r) * H + h) * v, 0,
                   sizeof(float) * v);
        }
        for (int k0 = 0; k0 <= last; k0 += FLASH_KT) {
            int nk = last + 1 - k0 < FLASH_KT ? last + 1 - k0 : FLASH_KT;
            int nk16 = (nk + 15) & ~15, na = 0, g;

            pack_keys(F, h, k0, nk, kt);
            /* rows with keys in this tile, and how many */
            for (int r = 0; r < rn; r++) {
                int p = F->rows->pos[row_of(F, i0 + r)] - F->k0, cr;

                p = p < F->n_keys - 1 ? p : F->n_keys - 1;
                cr = p - k0 + 1 < nk ? p - k0 + 1 : nk;
                if (cr > 0) {
                    cnt[r] = cr;
                    act[na++] = r;
                }
            }
            for (g = 0; g < na; g += 4) {
                int          ng = na - g < 4 ? na - g : 4;
                const float *qr[4];
                float       *sr[4];

                for (int u = 0; u < ng; u++) {
                    qr[u] = F->q + ((size_t)row_of(F, i0 + act[g + u]) * H
                                    + h) * qk;
                    sr[u] = sc + (size_t)act[g + u] * FLASH_KT;
                }
                cpu_tile_scores(qr, ng, kt, FLASH_KT, dk, nk16, sr);
            }
            for (int a = 0; a < na; a++) {
                int r = act[a];
                online_softmax(sc + (size_t)r * FLASH_KT, cnt[r], F->scale,
                               &m[r], &l[r],
                               F->out + ((size_t)row_of(F, i0 + r) * H + h)
                               * v, v);
            }
            /* values: four rows share each key's loads up to the shortest
             * count, then each row finishes its own keys */
            const float *vb = F->kv + ((size_t)k0 * H + h) * kvw + nope;
            size_t       vstride = (size_t)H * kvw;

            for (g = 0; g < na; g += 4) {
                int          ng = na - g < 4 ? na - g : 4, cmin = FLASH_KT;
                float       *orow[4];
                const float *pr[4];

                for (int u = 0; u < ng; u++) {
                    int r = act[g + u];
                    orow[u] = F->out + ((size_t)row_of(F, i0 + r) * H + h)
                              * v;
                    pr[u] = sc + (size_t)r * FLASH_KT;
                    cmin = cnt[r] < cmin ? cnt[r] : cmin;
                }
                if (ng == 4)
                    cpu_tile_values(orow, pr, 4, vb, vstride, cmin, v);
                else
                    cmin = 0;
                for (int u = 0; u < ng; u++) {
                    int          r = act[g + u];
                    float       *ou = orow[u];
                    const float *pu = pr[u] + cmin;

                    if (cnt[r] > cmin)
                        cpu_tile_values(&ou, &pu, 1,
                                        vb + (size_t)cmin * vstride, vstride,
                                        cnt[r] - cmin, v);
                }
            }
        }
        for (int r = 0; r < rn; r++) {
            int    pos = F->rows->pos[row_of(F, i0 + r)];
            float *o = F->out + ((size_t)row_of(F, i0 + r) * H + h) * v;

            if (pos < F->k0 || F->n_keys <= 0)
                continue;           /* no keys here (none at all: zero) */
            if (F->ml && pos >= F->k0 + F->n_keys) {
                float *mr = F->ml + ((size_t)row_of(F, i0 + r) * H + h) * 2;

                mr[0] = m[r];       /* its keys go on in the next range */
                mr[1] = l[r];
                continue;
            }
            for (int d = 0; d < v; d++)
                o[d] /= l[r];
        }
    }
    free(kt);
}

void
cpu_flash_prefill(sg_backend *b, const float *q, const float *kv,
                  const float *pe, int k0, int n_keys, const sg_rows *rows,
                  const int32_t *ridx, int n, int heads, int nope, int rope,
                  int v, float scale, float *ml, float *out)
{
    flash_ctx F = { q, kv, pe, rows, ridx, k0, n, n_keys, heads, nope, rope,
                    v, scale, ml, out };
    int       nblk = (n + FLASH_RB - 1) / FLASH_RB;
    double    span = 0;

    for (int i = 0; i < n; i++) {
        int p = rows->pos[ridx ? ridx[i] : i] - k0;
        span += p < 0 ? 0 : p + 1 < n_keys ? p + 1 : n_keys;
    }
    cpu_parallel(b, (int64_t)heads * nblk, 1,
                 (double)heads * span * (nope + rope + v), flash_range, &F);
}
