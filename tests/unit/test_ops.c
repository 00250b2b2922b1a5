/*
 * The CPU backend's dense ops against plain references on fresh random
 * inputs: linear over F32/BF16/FP8 weights (with and without act_quant),
 * RMSNorm/LayerNorm, RoPE (both layouts) vs complex multiplication, the
 * element-wise ops, MoE routing vs a sort-based gate, and the MLA absorb
 * products.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "model/backend.h"
#include "check.h"
#include "ref_fp8.h"
#include "model/dtype.h"

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

/* ---- plain references ---------------------------------------------------- */

/* A random weight in a given dtype and its exact f32 values (ref). */
typedef struct {
    sg_tensor t;
    float    *ref;
} weight;

static void
weight_make(weight *w, sg_dtype dt, int rows, int cols, int pow2)
{
    size_t n = (size_t)rows * cols;

    memset(w, 0, sizeof(*w));
    w->ref = malloc(sizeof(float) * n);
    w->t.name = "test.weight";
    w->t.dtype = dt;
    w->t.ndim = cols > 1 || dt == SG_F8_E4M3 ? 2 : 1;
    w->t.shape[0] = rows;
    w->t.shape[1] = cols;
    if (dt == SG_F32) {
        float *d = malloc(sizeof(float) * n);
        for (size_t i = 0; i < n; i++)
            d[i] = w->ref[i] = check_randn() * 0.1f;
        w->t.data = d;
    } else if (dt == SG_BF16) {
        uint16_t *d = malloc(2 * n);
        for (size_t i = 0; i < n; i++) {
            d[i] = sg_f32_to_bf16(check_randn() * 0.1f);
            w->ref[i] = sg_bf16_to_f32(d[i]);
        }
        w->t.data = d;
    } else {
        int      sr = (rows + 127) / 128, sc = (cols + 127) / 128;
        uint8_t *d = malloc(n);
        float   *s = malloc(sizeof(float) * sr * sc);

        for (int i = 0; i < sr * sc; i++)
            s[i] = pow2 ? ldexpf(1, (int)check_randu(-10, -4))
                        : check_randu(1e-3f, 1e-2f);
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++) {
                size_t i = (size_t)r * cols + c;
                int    code;
                do
                    code = check_rand32() & 0xff;
                while ((code & 0x7f) == 0x7f);       /* no NaN codes */
                d[i] = (uint8_t)code;
                w->ref[i] = (float)(ref_e4m3_value(code)
                                    * s[(r / 128) * sc + c / 128]);
            }
        w->t.data = d;
        w->t.scale = s;
        w->t.scale_cols = sc;
    }
}

static void
weight_free(weight *w)
{
    free((void *)w->t.data);
    free((void *)w->t.scale);
    free(w->ref);
}

static float *
randn_buf(size_t n, float sd)
{
    float *p = B->ops->alloc(B, sizeof(float) * (n ? n : 1));

    for (size_t i = 0; i < n; i++)
        p[i] = check_randn() * sd;
    return p;
}

/* ---- linear -------------------------------------------------------------- */

static void
linear_case(sg_dtype dt, int rows, int cols, int n, int aq, int ue8m0,
            int pow2)
{
    weight w;
    float *x = randn_buf((size_t)n * cols, 1.0f);
    float *xin = malloc(sizeof(float) * n * cols);
    float *y = B->ops->alloc(B, sizeof(float) * n * rows);
    float *ref = malloc(sizeof(float) * n * rows);
    char   name[128];

    weight_make(&w, dt, rows, cols, pow2);
    for (int t = 0; t < n; t++) {
        if (dt == SG_F8_E4M3 && aq)
            ref_act_quant(x + (size_t)t * cols, cols, ue8m0,
                          xin + (size_t)t * cols);
        else
            memcpy(xin + (size_t)t * cols, x + (size_t)t * cols,
                   sizeof(float) * cols);
    }
    for (int t = 0; t < n; t++)
        for (int r = 0; r < rows; r++) {
            double acc = 0;
            for (int j = 0; j < cols; j++)
                acc += (double)xin[(size_t)t * cols + j]
                       * w.ref[(size_t)r * cols + j];
            ref[(size_t)t * rows + r] = (float)acc;
        }
    B->ops->linear(B, &w.t, x, n, y, aq, ue8m0);
    double e = check_rel_err(y, ref, (size_t)n * rows);
    snprintf(name, sizeof(name), "linear %s %dx%d n=%d act_quant=%d ue8m0=%d%s",
             sg_dtype_name(dt), rows, cols, n, aq, ue8m0,
             dt == SG_F8_E4M3 && !pow2 ? " (non-pow2 scales)" : "");
    CHECKB(e < 2e-6, name, "rel err %g", e);
    weight_free(&w);
    B->ops->free(B, x);
    B->ops->free(B, y);
    free(xin);
    free(ref);
}

static void
test_linear(void)
{
    int ns[] = { 1, 5, 37 };

    for (int k = 0; k < 3; k++) {
        linear_case(SG_F32, 200, 384, ns[k], 0, 0, 1);
        linear_case(SG_BF16, 200, 300, ns[k], 0, 0, 1);
        linear_case(SG_BF16, 131, 256, ns[k], 1, 1, 1);  /* aq ignored */
        linear_case(SG_F8_E4M3, 200, 384, ns[k], 0, 0, 1);
        linear_case(SG_F8_E4M3, 200, 300, ns[k], 0, 0, 0);
        linear_case(SG_F8_E4M3, 200, 384, ns[k], 1, 1, 1);
        linear_case(SG_F8_E4M3, 131, 256, ns[k], 1, 0, 0);
    }
    /* several input tiles, 6-row tails, column chunks and a short last
     * 128-column block */
    linear_case(SG_BF16, 131, 1100, 100, 0, 0, 1);
    linear_case(SG_F8_E4M3, 131, 1100, 100, 1, 0, 0);
}

/* Each output row is bitwise the same whether its input row comes alone
 * or in a batch (FP8 rounding downstream would amplify any difference). */
static void
linear_invariance(sg_dtype dt, int aq)
{
    enum { ROWS = 70, COLS = 1100, N = 110 };
    weight w;
    float *x = randn_buf((size_t)N * COLS, 1.0f);
    float *y = B->ops->alloc(B, sizeof(float) * N * ROWS);
    float *y1 = B->ops->alloc(B, sizeof(float) * 50 * ROWS);
    char   name[96];
    int    bad = 0;

    weight_make(&w, dt, ROWS, COLS, 1);
    B->ops->linear(B, &w.t, x, N, y, aq, 1);
    for (int t = 0; t < N; t++) {
        /* alone, 5 or 50 at once (50: rows in two input tiles) */
        int m = t == 7 ? 50 : t % 3 == 0 && t + 5 <= N ? 5 : 1;

        B->ops->linear(B, &w.t, x + (size_t)t * COLS, m, y1, aq, 1);
        bad += memcmp(y1, y + (size_t)t * ROWS, sizeof(float) * m * ROWS) != 0;
    }
    snprintf(name, sizeof(name), "linear %s act_quant=%d batch invariant",
             sg_dtype_name(dt), aq);
    CHECKB(bad == 0, name, "%d sub-batches differ from the full batch", bad);
    weight_free(&w);
    B->ops->free(B, x);
    B->ops->free(B, y);
    B->ops->free(B, y1);
}

/* A NaN in one input row makes that row's outputs NaN and leaves the other
 * rows' bits as they were without it (the batched kernel shares weight
 * loads between rows, never sums). */
static void
linear_nan(sg_dtype dt)
{
    enum { ROWS = 70, COLS = 1100, N = 13 };
    weight w;
    float *x = randn_buf((size_t)N * COLS, 1.0f);
    float *y = B->ops->alloc(B, sizeof(float) * N * ROWS);
    float *y2 = B->ops->alloc(B, sizeof(float) * N * ROWS);
    char   name[96];
    int    bad = 0;

    weight_make(&w, dt, ROWS, COLS, 1);
    B->ops->linear(B, &w.t, x, N, y, 0, 1);
    x[5 * COLS + 1093] = NAN;                   /* in the column tail */
    B->ops->linear(B, &w.t, x, N, y2, 0, 1);
    for (int t = 0; t < N; t++)
        for (int r = 0; r < ROWS; r++) {
            size_t i = (size_t)t * ROWS + r;
            bad += t == 5 ? !isnan(y2[i])
                          : memcmp(&y[i], &y2[i], sizeof(float)) != 0;
        }
    snprintf(name, sizeof(name), "linear %s NaN stays in its row",
             sg_dtype_name(dt));
    CHECKB(bad == 0, name, "%d outputs wrong", bad);
    weight_free(&w);
    B->ops->free(B, x);
    B->ops->free(B, y);
    B->ops->free(B, y2);
}

/* A child forked after the backend started its threads (an nginx master
 * that loaded the model) still gets answers, serially, not a hang. */
static void
test_fork(void)
{
    weight w;
    float *x = randn_buf(64 * 128, 1.0f);
    float *y = B->ops->alloc(B, sizeof(float) * 64 * 96);
    float *y2 = B->ops->alloc(B, sizeof(float) * 64 * 96);
    int    status = -1;

    weight_make(&w, SG_BF16, 96, 128, 1);
    B->ops->linear(B, &w.t, x, 64, y, 0, 0);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        alarm(10);                              /* a hang fails, bounded */
        B->ops->linear(B, &w.t, x, 64, y2, 0, 0);
        _exit(memcmp(y, y2, sizeof(float) * 64 * 96) == 0 ? 0 : 1);
    }
    if (pid > 0)
        waitpid(pid, &status, 0);
    CHECKB(pid > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0,
           "linear in a forked child", "child status %d", status);
    weight_free(&w);
    B->ops->free(B, x);
    B->ops->free(B, y);
    B->ops->free(B, y2);
}

/* ---- norms --------------------------------------------------------------- */

static void
test_norms(void)
{
    enum { N = 5, D = 300, XS = 320, OS = 310 };
    weight w, bias;
    float *x = randn_buf((size_t)N * XS, 2.0f);
    float *y = B->ops->alloc(B, sizeof(float) * N * OS);
    float *got = malloc(sizeof(float) * N * D);
    float *ref = malloc(sizeof(float) * N * D);

    weight_make(&w, SG_BF16, D, 1, 1);
    for (int i = 0; i < D; i++)
        w.ref[i] += 1.0f, ((uint16_t *)w.t.data)[i] = sg_f32_to_bf16(w.ref[i]),
        w.ref[i] = sg_bf16_to_f32(((uint16_t *)w.t.data)[i]);
    B->ops->rmsnorm(B, x, XS, &w.t, 1e-6f, N, D, y, OS);
    for (int i = 0; i < N; i++) {
        double ss = 0;
        for (int j = 0; j < D; j++)
            ss += (double)x[i * XS + j] * x[i * XS + j];
        for (int j = 0; j < D; j++) {
            ref[i * D + j] = (float)(x[i * XS + j] / sqrt(ss / D + 1e-6)
                                     * w.ref[j]);
            got[i * D + j] = y[i * OS + j];
        }
    }
    double e = check_rel_err(got, ref, (size_t)N * D);
    CHECKB(e < 1e-6, "rmsnorm with row strides", "rel err %g", e);

    weight_free(&w);
    weight_make(&w, SG_F32, D, 1, 1);
    weight_make(&bias, SG_BF16, D, 1, 1);
    B->ops->layernorm(B, x, &w.t, &bias.t, 1e-6f, N, D, y);
    for (int i = 0; i < N; i++) {
        double m = 0, v = 0;
        for (int j = 0; j < D; j++)
            m += x[i * D + j];
        m /= D;
        for (int j = 0; j < D; j++)
            v += (x[i * D + j] - m) * (x[i * D + j] - m);
        v /= D;                                      /* biased */
        for (int j = 0; j < D; j++)
            ref[i * D + j] = (float)((x[i * D + j] - m) / sqrt(v + 1e-6)
                                     * w.ref[j] + bias.ref[j]);
    }
    e = check_rel_err(y, ref, (size_t)N * D);
    CHECKB(e < 1e-6, "layernorm with weight and bias", "rel err %g", e);
    weight_free(&w);
    weight_free(&bias);
    B->ops->free(B, x);
    B->ops->free(B, y);
    free(got);
    free(ref);
}

/* ---- RoPE ---------------------------------------------------------------- */

static void
rope_case(int interleaved)
{
    enum { N = 4, H = 3, NOPE = 8, R = 16, QK = NOPE + R, MAXP = 50 };
    float *cs = B->ops->alloc(B, sizeof(float) * MAXP * R);
    float *x = randn_buf((size_t)N * H * QK, 1.0f);
    float *x0 = malloc(sizeof(float) * N * H * QK);
    float *ref = malloc(sizeof(float) * N * H * QK);
    int32_t pos[N];
    sg_rope_table t = { cs, R, MAXP };
    char name[64];

    for (int p = 0; p < MAXP; p++)
        for (int j = 0; j < R / 2; j++) {
            double a = p * pow(10000.0, -2.0 * j / R) * check_randu(0.5f, 1.5f);
            cs[(p * R / 2 + j) * 2] = (float)cos(a);
            cs[(p * R / 2 + j) * 2 + 1] = (float)sin(a);
        }
    for (int i = 0; i < N; i++)
        pos[i] = (int)check_randu(0, MAXP - 1);
    memcpy(x0, x, sizeof(float) * N * H * QK);
    memcpy(ref, x, sizeof(float) * N * H * QK);
    for (int i = 0; i < N; i++)
        for (int h = 0; h < H; h++) {
            float *r = ref + (i * H + h) * QK + NOPE;
            const float *o = x0 + (i * H + h) * QK + NOPE;
            for (int j = 0; j < R / 2; j++) {
                int a = interleaved ? 2 * j : j;
                int b = interleaved ? 2 * j + 1 : j + R / 2;
                double c = cs[(pos[i] * R / 2 + j) * 2];
                double s = cs[(pos[i] * R / 2 + j) * 2 + 1];
                /* (x_a + i x_b) * (c + i s) */
                r[a] = (float)(o[a] * c - o[b] * s);
                r[b] = (float)(o[a] * s + o[b] * c);
            }
        }
    B->ops->rope(B, x, N, H, H * QK, QK, NOPE, pos, &t, interleaved);
    double e = check_rel_err(x, ref, (size_t)N * H * QK);
    snprintf(name, sizeof(name), "rope %s vs complex multiply",
             interleaved ? "interleaved" : "rotate-half");
    CHECKB(e < 1e-6, name, "rel err %g", e);
    B->ops->free(B, cs);
    B->ops->free(B, x);
    free(x0);
    free(ref);
}

/* ---- element-wise -------------------------------------------------------- */

static void
test_elementwise(void)
{
    enum { N = 9, D = 70, V = 33 };
    float *a = randn_buf(N * D, 1), *b = randn_buf(N * D, 1);
    float *y = B->ops->alloc(B, sizeof(float) * N * D);
    float *ref = malloc(sizeof(float) * N * D);
    int32_t idx[N], tok[N];
    float  wts[N];
    weight emb;

    for (int i = 0; i < N * D; i++)
        ref[i] = a[i] + b[i];
    memcpy(y, a, sizeof(float) * N * D);
    B->ops->add(B, y, b, N * D);
    CHECKB(check_max_abs(y, ref, N * D) == 0, "add", "differs");

    for (int i = 0; i < N * D; i++)
        ref[i] = (float)(a[i] / (1 + exp(-(double)a[i])) * b[i]);
    B->ops->silu_mul(B, a, b, y, N * D);
    double e = check_rel_err(y, ref, N * D);
    CHECKB(e < 1e-6, "silu_mul", "rel err %g", e);

    for (int j = 0; j < N; j++)
        idx[j] = check_rand32() % N;
    B->ops->gather_rows(B, a, idx, N, D, y);
    for (int j = 0; j < N; j++)
        memcpy(ref + j * D, a + idx[j] * D, sizeof(float) * D);
    CHECKB(check_max_abs(y, ref, N * D) == 0, "gather_rows", "differs");

    /* repeated destinations accumulate in order */
    for (int j = 0; j < N; j++) {
        idx[j] = check_rand32() % 3;
        wts[j] = check_randn();
    }
    memcpy(y, b, sizeof(float) * N * D);
    memcpy(ref, b, sizeof(float) * N * D);
    for (int j = 0; j < N; j++)
        for (int c = 0; c < D; c++)
            ref[idx[j] * D + c] += wts[j] * a[j * D + c];
    B->ops->scatter_add_rows(B, y, idx, wts, N, D, a);
    e = check_rel_err(y, ref, N * D);
    CHECKB(e < 1e-6, "scatter_add_rows with repeats", "rel err %g", e);

    weight_make(&emb, SG_BF16, V, D, 1);
    for (int j = 0; j < N; j++)
        tok[j] = check_rand32() % V;
    B->ops->embed(B, &emb.t, tok, N, y);
    for (int j = 0; j < N; j++)
        memcpy(ref + j * D, emb.ref + tok[j] * D, sizeof(float) * D);
    CHECKB(check_max_abs(y, ref, N * D) == 0, "embed bf16", "differs");
    weight_free(&emb);
    B->ops->free(B, a);
    B->ops->free(B, b);
    B->ops->free(B, y);
    free(ref);
}

/* ---- MoE routing --------------------------------------------------------- */

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
by_index(const void *a, const void *b)
{
    return ((const ranked *)a)->i - ((const ranked *)b)->i;
}

/* DeepSeek's Gate, with sorts in place of torch.topk. */
static void
ref_route(const float *logits, const float *bias, int E, int G, int TG, int K,
          int norm, float rs, const int32_t *forced, int32_t *ex, float *w)
{
    float  s[E], sb[E];
    ranked r[E], g[G > 0 ? G : 1], pick[K];

    for (int e = 0; e < E; e++) {
        s[e] = 1.0f / (1.0f + expf(-logits[e]));
        sb[e] = bias ? s[e] + bias[e] : s[e];
    }
    if (G > 1) {
        int gs = E / G;
        for (int q = 0; q < G; q++) {
            ranked m[gs];
            for (int j = 0; j < gs; j++)
                m[j] = (ranked){ sb[q * gs + j], j };
            qsort(m, gs, sizeof(ranked), by_score_desc);
            g[q] = (ranked){ bias ? m[0].v + m[1].v : m[0].v, q };
        }
        qsort(g, G, sizeof(ranked), by_score_desc);
        for (int q = TG; q < G; q++)
            for (int j = 0; j < gs; j++)
                sb[g[q].i * gs + j] = -INFINITY;
    }
    for (int e = 0; e < E; e++)
        r[e] = (ranked){ sb[e], e };
    qsort(r, E, sizeof(ranked), by_score_desc);
    if (forced) {
        for (int j = 0; j < K; j++)
            pick[j] = (ranked){ sb[forced[j]], forced[j] };
        qsort(pick, K, sizeof(ranked), by_score_desc);
    } else {
        memcpy(pick, r, sizeof(ranked) * K);
    }
    float sum = 0, wt[K];
    for (int j = 0; j < K; j++)
        sum += (wt[j] = s[pick[j].i]);
    for (int j = 0; j < K; j++) {
        if (norm)
            wt[j] /= sum;
        pick[j].v = wt[j] * rs;
    }
    qsort(pick, K, sizeof(ranked), by_index);
    for (int j = 0; j < K; j++) {
        ex[j] = pick[j].i;
        w[j] = pick[j].v;
    }
}

static void
route_case(int n, int E, int G, int TG, int K, int use_bias, int norm,
           int force, int ties)
{
    float   *logits = randn_buf((size_t)n * E, 2.0f);
    float    bias[E];
    int32_t *ex = malloc(sizeof(int32_t) * n * K);
    int32_t *rex = malloc(sizeof(int32_t) * n * K);
    int32_t *forced = malloc(sizeof(int32_t) * n * K);
    float   *w = malloc(sizeof(float) * n * K);
    float   *rw = malloc(sizeof(float) * n * K);
    char     name[128];
    int      bad = 0;

    for (int e = 0; e < E; e++)
        bias[e] = ties ? 0.0f : check_randn() * 0.1f;
    if (ties)       /* few distinct values: many exact ties */
        for (int i = 0; i < n * E; i++)
            logits[i] = (float)(check_rand32() % 3);
    for (int i = 0; i < n; i++) {
        /* K distinct experts, ascending */
        int c = 0;
        for (int e = 0; e < E && c < K; e++)
            if ((int)(check_rand32() % (E - e)) < K - c)
                forced[i * K + c++] = e;
    }
    for (int i = 0; i < n; i++)
        ref_route(logits + i * E, use_bias ? bias : NULL, E, G, TG, K, norm,
                  2.5f, force ? forced + i * K : NULL, rex + i * K, rw + i * K);
    B->ops->moe_route(B, logits, use_bias ? bias : NULL, n, E, G, TG, K, norm,
                      2.5f, force ? forced : NULL, ex, w);
    for (int i = 0; i < n * K; i++)
        bad += ex[i] != rex[i];
    double e = check_rel_err(w, rw, (size_t)n * K);
    snprintf(name, sizeof(name),
             "moe_route n=%d E=%d groups=%d/%d top%d bias=%d norm=%d "
             "forced=%d ties=%d",
             n, E, TG, G, K, use_bias, norm, force, ties);
    CHECKB(bad == 0 && e < 1e-6, name, "%d experts differ, weights rel err %g",
          bad, e);
    B->ops->free(B, logits);
    free(ex);
    free(rex);
    free(forced);
    free(w);
    free(rw);
}

static void
test_moe_route(void)
{
    route_case(100, 16, 4, 2, 4, 1, 1, 0, 0);
    route_case(7, 16, 4, 2, 4, 0, 1, 0, 0);     /* no bias: group amax */
    route_case(7, 12, 1, 1, 3, 1, 0, 0, 0);     /* no groups, no norm */
    route_case(9, 16, 4, 2, 4, 1, 1, 1, 0);     /* forced experts */
    route_case(20, 16, 4, 2, 4, 1, 1, 0, 1);    /* ties -> lower index */
    route_case(3, 64, 8, 4, 6, 1, 1, 0, 0);
}

/* ---- MLA absorb / unabsorb ----------------------------------------------- */

static void
absorb_case(sg_dtype dt)
{
    enum { N = 3, H = 3, NOPE = 16, R = 8, V = 12, LORA = 256 };
    weight w;
    float *q = randn_buf(N * H * (NOPE + R), 1);
    float *ol = randn_buf(N * H * LORA, 1);
    float *ql = B->ops->alloc(B, sizeof(float) * N * H * LORA);
    float *out = B->ops->alloc(B, sizeof(float) * N * H * V);
    float *r1 = malloc(sizeof(float) * N * H * LORA);
    float *r2 = malloc(sizeof(float) * N * H * V);
    char   name[64];

    weight_make(&w, dt, H * (NOPE + V), LORA, 1);
    for (int i = 0; i < N; i++)
        for (int h = 0; h < H; h++) {
            for (int c = 0; c < LORA; c++) {
                double acc = 0;
                for (int d = 0; d < NOPE; d++)
                    acc += (double)q[(i * H + h) * (NOPE + R) + d]
                           * w.ref[(h * (NOPE + V) + d) * LORA + c];
                r1[(i * H + h) * LORA + c] = (float)acc;
            }
            for (int j = 0; j < V; j++) {
                double acc = 0;
                for (int c = 0; c < LORA; c++)
                    acc += (double)w.ref[(h * (NOPE + V) + NOPE + j) * LORA + c]
                           * ol[(i * H + h) * LORA + c];
                r2[(i * H + h) * V + j] = (float)acc;
            }
        }
    B->ops->mla_absorb(B, &w.t, q, N, H, NOPE, R, V, LORA, ql);
    B->ops->mla_unabsorb(B, &w.t, ol, N, H, NOPE, V, LORA, out);
    double e1 = check_rel_err(ql, r1, N * H * LORA);
    double e2 = check_rel_err(out, r2, N * H * V);
    snprintf(name, sizeof(name), "mla_absorb %s", sg_dtype_name(dt));
    CHECKB(e1 < 2e-6, name, "rel err %g", e1);
    snprintf(name, sizeof(name), "mla_unabsorb %s", sg_dtype_name(dt));
    CHECKB(e2 < 2e-6, name, "rel err %g", e2);
    weight_free(&w);
    B->ops->free(B, q);
    B->ops->free(B, ol);
    B->ops->free(B, ql);
    B->ops->free(B, out);
    free(r1);
    free(r2);
}

int
main(void)
{
    check_seed_from_env();
    sg_fp8_init();
    for (int split = 0; split < 2; split++) {
        if (split)
            setenv("SG_CPU_PAR_WORK", "0", 1);
        config_tag = split ? " [3 threads, all loops split]" : "";
        B = sg_backend_cpu_new(split ? 3 : 0);
        CHECKB(B != NULL, "cpu backend created", "sg_backend_cpu_new failed");
        if (B == NULL)
            return check_finish();
        test_linear();
        linear_invariance(SG_F32, 0);
        linear_invariance(SG_BF16, 0);
        linear_invariance(SG_F8_E4M3, 1);
        linear_nan(SG_BF16);
        linear_nan(SG_F8_E4M3);
        test_norms();
        rope_case(1);
        rope_case(0);
        test_elementwise();
        test_moe_route();
        absorb_case(SG_BF16);
        absorb_case(SG_F8_E4M3);
        test_fork();
        B->ops->destroy(B);
    }
    unsetenv("SG_CPU_PAR_WORK");
    return check_finish();
}
