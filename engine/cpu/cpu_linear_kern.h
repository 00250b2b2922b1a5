/*
 * The linear kernel's body, included by cpu_linear.c once per vector
 * width: LANES (8 or 16) columns per accumulator, VEC its vector type,
 * LK(name) the width's function names, LK_TARGET its target attribute.
 * Within one width every output is summed in the same order whatever the
 * batch (see cpu_linear.c); the two widths differ in that order, and the
 * width is chosen once per process, by the CPU.
 */

/*
 * Columns [j0, j1) of nw weight rows against nx input rows (nx = 4 with
 * nw = 1..6 at 16 lanes, 1..3 at 8; nx = 1 with nw = 1..6; constants
 * after inlining): each weight vector is converted once for all nx
 * inputs, each input vector loaded once for all nw rows (6 x 4 in
 * AVX-512's 32 registers: 24 accumulators, ten loads per 24 FMAs, 1.5-1.7x
 * the GEMM rate of 3 x 4 there; 3 x 4 in AVX2's 16: twelve accumulators,
 * seven loads per twelve FMAs; 6 x 1 for a lone input row, six
 * independent chains).  acc[u * 4 +
 * t] += w[u] . x[t], every pair summed in the same order (8 lanes, columns
 * in order) whatever nw and nx are.  The unroll pragmas keep the
 * accumulators in registers (without them GCC -O2 keeps them on the stack
 * and the kernel runs 3-5x slower).
 */
static inline __attribute__((always_inline)) LK_TARGET VEC
LK(load_w)(const void *w, sg_dtype dt, int64_t j)
{
    switch (dt) {
    case SG_F32:
        return VLOAD((const float *)w + j);
    case SG_BF16:
        return LOAD_BF16((const uint16_t *)w + j);
    default:
        return LOAD_E4M3((const uint8_t *)w + j);
    }
}

static inline __attribute__((always_inline)) LK_TARGET void
LK(row_kernel)(const void *const *w, const int nw, const sg_dtype dt,
           const float *const *x, const int nx, int64_t j0, int64_t j1,
           VEC *acc)
{
    VEC wv[6];

    for (int64_t j = j0; j + LANES <= j1; j += LANES) {
#pragma GCC unroll 6
        for (int u = 0; u < nw; u++)
            wv[u] = LK(load_w)(w[u], dt, j);
#pragma GCC unroll 4
        for (int t = 0; t < nx; t++) {
            VEC xv = VLOAD(x[t] + j);
#pragma GCC unroll 6
            for (int u = 0; u < nw; u++)
                acc[u * 4 + t] = VFMA(wv[u], xv, acc[u * 4 + t]);
        }
    }
}

/*
 * Columns [c0, c1) of nw weight rows against nx input rows, continuing
 * the pairs' states st[u * X_TILE + t] (u, t < nw, nx).  wr[u] points at
 * weight row u (stored dtype kdt), srow[u] at its FP8 block scales or
 * NULL.  FP8 rows go by 128-column block: each block's sum (of e4m3 * 2^-8
 * times x) times 2^8 * scale into tot; other rows are one block.  Tiles
 * are multiples of 128 columns, so every pair sums in the same order
 * whatever the tiling, nw and nx: outputs do not depend on the batch.
 */
static inline __attribute__((always_inline)) LK_TARGET void
LK(pairs_tile)(const void *const *wr, sg_dtype kdt, const float *const *srow,
           const int nw, int64_t cols, const float *const *x, const int nx,
           int64_t c0, int64_t c1, pair_state *st)
{
    int64_t blk = srow[0] ? SG_FP8_BLOCK : cols;

    for (int64_t j0 = c0; j0 < c1; j0 = j0 - j0 % blk + blk) {
        int64_t bend = j0 - j0 % blk + blk < cols ? j0 - j0 % blk + blk : cols;
        int64_t jv = bend & ~(int64_t)(LANES - 1);  /* block starts are
                                                      multiples of 16 */
        int64_t j1 = c1 < jv ? c1 : jv;
        VEC     acc[24];

#pragma GCC unroll 6
        for (int u = 0; u < nw; u++)
#pragma GCC unroll 4
            for (int t = 0; t < nx; t++)
                acc[u * 4 + t] = j0 % blk == 0
                                 ? VZERO()
                                 : VLOAD(st[u * X_TILE + t].acc);
        LK(row_kernel)(wr, nw, kdt, x, nx, j0, j1, acc);
        if (c1 < bend) {
            /* the block goes on in the next tile */
#pragma GCC unroll 6
            for (int u = 0; u < nw; u++)
#pragma GCC unroll 4
                for (int t = 0; t < nx; t++)
                    VSTORE(st[u * X_TILE + t].acc, acc[u * 4 + t]);
            break;
        }
        for (int u = 0; u < nw; u++) {
            float s = srow[u] ? srow[u][j0 / SG_FP8_BLOCK] * 256.0f : 1.0f;

            for (int t = 0; t < nx; t++) {
                pair_state *p = &st[u * X_TILE + t];
                float       e = 0.0f;

                for (int64_t j = jv; j < bend; j++)
                    e += elem_scaled(wr[u], kdt, j) * x[t][j];
                VSTORE(p->tot, VFMA(acc[u * 4 + t], VSET1(s),
                                    VLOAD(p->tot)));
                p->tail += e * s;
            }
        }
    }
}

/* pairs_tile with nw, nx and the dtype constants in each branch. */
static LK_TARGET void
LK(tile_any)(const void *const *wr, sg_dtype dt, const float *const *srow,
         int nw, int64_t cols, const float *const *x, int nx, int64_t c0,
         int64_t c1, pair_state *st)
{
#define TILE(DT, NW, NX)                                                    \
    LK(pairs_tile)(wr, DT, srow, NW, cols, x, NX, c0, c1, st)
#define SHAPES(DT)                                                          \
    if (nx == 4) {                                                          \
        /* nw > 3 only at 16 lanes (linear_range's step) */              \
        switch (nw) {                                                       \
        case 6: if (LANES == 16) { TILE(DT, 6, 4); break; } /* fallthrough */ \
        case 5: if (LANES == 16) { TILE(DT, 5, 4); break; } /* fallthrough */ \
        case 4: if (LANES == 16) { TILE(DT, 4, 4); break; } /* fallthrough */ \
        case 3: TILE(DT, 3, 4); break;                                      \
        case 2: TILE(DT, 2, 4); break;                                      \
        default: TILE(DT, 1, 4); break;                                     \
        }                                                                   \
    } else {                                                                \
        switch (nw) {                                                       \
        case 6: TILE(DT, 6, 1); break;                                      \
        case 5: TILE(DT, 5, 1); break;                                      \
        case 4: TILE(DT, 4, 1); break;                                      \
        case 3: TILE(DT, 3, 1); break;                                      \
        case 2: TILE(DT, 2, 1); break;                                      \
        default: TILE(DT, 1, 1); break;                                     \
        }                                                                   \
    }

    switch (dt) {
    case SG_F32:
        SHAPES(SG_F32);
        break;
    case SG_BF16:
        SHAPES(SG_BF16);
        break;
    default:
        SHAPES(SG_F8_E4M3);
        break;
    }
#undef SHAPES
#undef TILE
}

/*
 * Items are (tile of X_TILE input rows, tile of W_TILE weight rows); each
 * goes through the columns in tiles of C_TILE, so the input and weight
 * tiles it works on stay in L1 while every pair of rows advances.
 */
static LK_TARGET void
LK(linear_range)(void *c, int64_t t0, int64_t t1)
{
    linear_ctx      *L = c;
    const sg_tensor *w = L->w;
    int64_t          cols = L->cols;
    size_t           es = sg_dtype_size(w->dtype);
    pair_state      *st = malloc(sizeof(pair_state) * W_TILE * X_TILE);

    if (st == NULL) {
        cpu_oom();
        return;
    }
    for (int64_t t = t0; t < t1; t++) {
        int64_t x0 = (t / L->n_wt) * X_TILE, r0 = (t % L->n_wt) * W_TILE;
        int64_t x1 = x0 + X_TILE < L->n ? x0 + X_TILE : L->n;
        int64_t r1 = r0 + W_TILE < L->rows ? r0 + W_TILE : L->rows;

        /* weight rows per step: 6 at 16 lanes (6 x 4 pairs), 3 at 8
         * (3 x 4 fills AVX2's registers), 6 for lone input rows */
        int     step = x1 - x0 < 4 || LANES == 16 ? 6 : 3;

        for (int64_t r = r0; r < r1; r++)
            memset(st + (r - r0) * X_TILE, 0, sizeof(pair_state) * (x1 - x0));
        for (int64_t c0 = 0; c0 < cols; c0 += C_TILE) {
            int64_t c1 = c0 + C_TILE < cols ? c0 + C_TILE : cols;

            for (int64_t r = r0; r < r1; r += step) {
                int          nw = r1 - r < step ? (int)(r1 - r) : step;
                const void  *wr[6];
                const float *srow[6] = { NULL, NULL, NULL, NULL, NULL, NULL };
                const float *xs[4];
                int64_t      i = x0;

                for (int u = 0; u < nw; u++) {
                    wr[u] = (const char *)w->data + (size_t)(r + u) * cols * es;
                    if (w->dtype == SG_F8_E4M3)
                        srow[u] = w->scale + ((r + u) / SG_FP8_BLOCK)
                                             * w->scale_cols;
                }
                for (; i < x1; ) {
                    int         nx = i + 4 <= x1 ? 4 : 1;
                    pair_state *ps = st + (r - r0) * X_TILE + (i - x0);

                    for (int k = 0; k < nx; k++)
                        xs[k] = L->x + (i + k) * cols;
                    LK(tile_any)(wr, w->dtype, srow, nw, cols, xs, nx, c0,
                                 c1, ps);
                    i += nx;
                }
            }
        }
        for (int64_t r = r0; r < r1; r++)
            for (int64_t i = x0; i < x1; i++) {
                pair_state *p = st + (r - r0) * X_TILE + (i - x0);
                L->y[i * L->rows + r] = HSUM(VLOAD(p->tot)) + p->tail;
            }
    }
    free(st);
}

