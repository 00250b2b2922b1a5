/*
 * FP8 numerics of the CPU backend against plain references: e4m3 rounding
 * (ties, subnormals, saturation) vs a brute-force nearest search, ue8m0
 * scales, act_quant (fp8_quant) codes and round trip, dequant, and the
 * Walsh-Hadamard rotation vs an explicit Sylvester matrix product.
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

/* Nearest finite e4m3 code to x (|x| clamped to 448), ties to the even
 * code, by trying every code. */
static int
e4m3_nearest(float x)
{
    double a = fabs((double)x);
    int    best = 0;
    double bd = INFINITY;

    if (a > 448)
        a = 448;
    for (int c = 0; c < 0x7f; c++) {           /* 0x7f is NaN */
        double d = fabs(ref_e4m3_value(c) - a);
        if (d < bd || (d == bd && (c & 1) == 0 && (best & 1))) {
            bd = d;
            best = c;
        }
    }
    return signbit(x) ? best | 0x80 : best;
}

static int
same_value(int c1, int c2)
{
    return c1 == c2 || ((c1 & 0x7f) == 0 && (c2 & 0x7f) == 0);
}

static void
test_e4m3_rounding(void)
{
    int    bad = 0, n = 0;
    float  worst = 0;

    sg_fp8_init();
    /* every grid value, every midpoint (exact ties) and their neighbours */
    for (int c = 0; c < 0x7e; c++) {
        double lo = ref_e4m3_value(c), hi = ref_e4m3_value(c + 1);
        float  cand[] = { (float)lo, (float)((lo + hi) / 2),
                          nextafterf((float)((lo + hi) / 2), 0),
                          nextafterf((float)((lo + hi) / 2), INFINITY) };

        for (int k = 0; k < 4; k++)
            for (int sgn = 0; sgn < 2; sgn++) {
                float x = sgn ? -cand[k] : cand[k];
                n++;
                if (!same_value(sg_f32_to_e4m3(x), e4m3_nearest(x))) {
                    bad++;
                    worst = x;
                }
            }
    }
    CHECKB(bad == 0, "e4m3 ties and neighbours vs brute force",
          "%d of %d differ (e.g. %.9g)", bad, n, worst);

    bad = 0;
    for (int i = 0; i < 20000; i++) {
        /* log-uniform over the whole range incl. subnormals */
        float x = ldexpf(check_randu(1, 2), (int)check_randu(-12, 9));
        if (check_rand32() & 1)
            x = -x;
        if (!same_value(sg_f32_to_e4m3(x), e4m3_nearest(x)))
            bad++;
    }
    CHECKB(bad == 0, "e4m3 random values vs brute force", "%d differ", bad);

    bad = 0;
    for (int i = 0; i < 2000; i++) {
        float x = check_randu(0, ldexpf(1, -6));   /* subnormal binade */
        if (!same_value(sg_f32_to_e4m3(x), e4m3_nearest(x)))
            bad++;
    }
    CHECKB(bad == 0, "e4m3 subnormals vs brute force", "%d differ", bad);

    float sat[] = { 448, 449, 464, 480, 1e6f, 3e38f };
    bad = 0;
    for (size_t i = 0; i < sizeof(sat) / sizeof(sat[0]); i++) {
        if (sg_f32_to_e4m3(sat[i]) != 0x7e || sg_f32_to_e4m3(-sat[i]) != 0xfe)
            bad++;
    }
    CHECKB(bad == 0, "e4m3 saturates to +-448", "%d values did not", bad);
    CHECKB(sg_e4m3_to_f32(0x7e) == 448.0f
           && sg_e4m3_to_f32(0x01) == ldexpf(1, -9)
          && isnan(sg_e4m3_to_f32(0x7f)), "e4m3 decode table",
          "448/min subnormal/NaN entries wrong");
}

/* DeepSeek's scale of one block, written out plainly. */
static float
ref_scale(const float *x, int len, int ue8m0)
{
    float amax = 0;

    for (int j = 0; j < len; j++)
        amax = fmaxf(amax, fabsf(x[j]));
    amax = fmaxf(amax, 1e-4f);
    float s = amax * (1.0f / 448.0f);
    if (ue8m0) {
        int e;
        float f = frexpf(s, &e);                /* s = f * 2^e, f in [0.5,1) */
        s = f == 0.5f ? s : ldexpf(1.0f, e);    /* next power of two up */
    }
    return s;
}

static void
test_act_quant(sg_backend *b)
{
    enum { R = 7, D = 384 };
    float   *x = b->ops->alloc(b, sizeof(float) * R * D);
    float   *y = b->ops->alloc(b, sizeof(float) * R * D);
    uint8_t *q = b->ops->alloc(b, R * D);
    float   *s = b->ops->alloc(b, sizeof(float) * R * 3);

    for (int ue = 0; ue < 2; ue++) {
        int bad_scale = 0, bad_code = 0, bad_rt = 0;

        for (int i = 0; i < R * D; i++)
            x[i] = check_randn() * ldexpf(1, (int)check_randu(-8, 8));
        /* special blocks: all zero (amax clamp), amax/448 a power of two
         * (must stay), tiny values */
        for (int j = 0; j < 128; j++) {
            x[j] = 0;
            x[128 + j] = check_randu(-1, 1);
            x[256 + j] = check_randu(-1e-6f, 1e-6f);
        }
        x[128 + 5] = 448.0f * 0.25f;           /* amax -> scale exactly 1/4 */
        b->ops->fp8_quant(b, x, R, D, q, s, ue);
        b->ops->fp8_dequant(b, q, s, R, D, y);
        for (int r = 0; r < R; r++)
            for (int k = 0; k < 3; k++) {
                const float *xb = x + r * D + k * 128;
                float rs = ref_scale(xb, 128, ue);
                float amax = 0;

                if (s[r * 3 + k] != rs)
                    bad_scale++;
                for (int j = 0; j < 128; j++) {
                    float v = fminf(fmaxf(xb[j] / rs, -448), 448);
                    int   c = q[r * D + k * 128 + j];
                    if (!same_value(c, e4m3_nearest(v)))
                        bad_code++;
                    if (y[r * D + k * 128 + j] != (float)(ref_e4m3_value(c) * rs))
                        bad_rt++;
                    amax = fmaxf(amax, fabsf(xb[j]));
                }
                /* round trip: within half an e4m3 step of the block max */
                for (int j = 0; j < 128; j++)
                    if (fabsf(y[r * D + k * 128 + j] - xb[j])
                        > fmaxf(amax, 1e-4f) * (ue ? 2 : 1) / 16 + 1e-30f)
                        bad_rt++;
            }
        char name[64];
        snprintf(name, sizeof(name), "fp8_quant scales (ue8m0=%d)", ue);
        CHECKB(bad_scale == 0, name, "%d scales differ", bad_scale);
        snprintf(name, sizeof(name), "fp8_quant codes (ue8m0=%d)", ue);
        CHECKB(bad_code == 0, name, "%d codes differ", bad_code);
        snprintf(name, sizeof(name), "fp8 dequant round trip (ue8m0=%d)", ue);
        CHECKB(bad_rt == 0, name, "%d values off", bad_rt);
    }
    {
        /* a scale that is a power of two stays; any other rounds up */
        float blk[128] = { 0 };
        uint8_t qq[128];
        float sc;

        blk[0] = 448.0f * 0.25f;
        b->ops->fp8_quant(b, blk, 1, 128, qq, &sc, 1);
        CHECKB(sc == 0.25f, "ue8m0 keeps an exact power of two", "got %g", sc);
        blk[0] = 448.0f * 0.3f;
        b->ops->fp8_quant(b, blk, 1, 128, qq, &sc, 1);
        CHECKB(sc == 0.5f, "ue8m0 rounds 0.3 up to 0.5", "got %g", sc);
        blk[0] = 0;
        b->ops->fp8_quant(b, blk, 1, 128, qq, &sc, 0);
        CHECKB(sc == 1e-4f * (1.0f / 448.0f), "amax clamped to 1e-4",
              "got %g", sc);
    }
    b->ops->free(b, x);
    b->ops->free(b, y);
    b->ops->free(b, q);
    b->ops->free(b, s);
}

/*
 * The quantizer inside fp8_quant on exact ties, their neighbours and
 * subnormals: blocks whose scale is a power of two (so x / scale is exact)
 * holding midpoints of the e4m3 grid times that scale.
 */
static void
test_quant_ties(sg_backend *b)
{
    enum { ROWS = 8 };
    float   *x = b->ops->alloc(b, sizeof(float) * ROWS * 128);
    uint8_t *q = b->ops->alloc(b, ROWS * 128);
    float   *s = b->ops->alloc(b, sizeof(float) * ROWS);
    int      bad = 0, code = 0, n = 0;

    for (int r = 0; r < ROWS; r++) {
        float *xr = x + r * 128;
        float  sc;

        xr[0] = 448.0f * ldexpf(1, r - 4) * (r & 1 ? -1 : 1);   /* amax */
        sc = ref_scale(xr, 1, 1);
        for (int j = 1; j < 128; j++, code = (code + 1) % 0x7e) {
            double lo = ref_e4m3_value(code), hi = ref_e4m3_value(code + 1);
            float  m = (float)((lo + hi) / 2);
            float  v = j % 3 == 0 ? m : j % 3 == 1 ? nextafterf(m, 0)
                                                   : nextafterf(m, 1000);
            xr[j] = (j & 4 ? -v : v) * sc;
        }
    }
    b->ops->fp8_quant(b, x, ROWS, 128, q, s, 1);
    for (int r = 0; r < ROWS; r++)
        for (int j = 0; j < 128; j++, n++) {
            float v = x[r * 128 + j] / s[r];
            if (!same_value(q[r * 128 + j], e4m3_nearest(v)))
                bad++;
        }
    CHECKB(bad == 0, "fp8_quant on exact ties, neighbours and subnormals",
          "%d of %d codes differ", bad, n);
    b->ops->free(b, x);
    b->ops->free(b, q);
    b->ops->free(b, s);
}

static void
test_hadamard(sg_backend *b)
{
    int dims[] = { 1, 2, 8, 64, 128 };

    for (size_t t = 0; t < sizeof(dims) / sizeof(dims[0]); t++) {
        int     d = dims[t], rows = 5;
        float  *x = b->ops->alloc(b, sizeof(float) * rows * d);
        float  *ref = malloc(sizeof(float) * rows * d);
        char    name[64];

        for (int i = 0; i < rows * d; i++)
            x[i] = check_randn();
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < d; j++) {
                double acc = 0;
                for (int i = 0; i < d; i++)        /* (x @ H)[j], Sylvester */
                    acc += x[r * d + i]
                           * (__builtin_popcount(i & j) & 1 ? -1.0 : 1.0);
                ref[r * d + j] = (float)(acc / sqrt(d));
            }
        b->ops->hadamard(b, x, rows, d);
        double e = check_rel_err(x, ref, (size_t)rows * d);
        snprintf(name, sizeof(name), "hadamard dim %d vs Sylvester matrix", d);
        CHECKB(e < 1e-6, name, "rel err %g", e);
        b->ops->free(b, x);
        free(ref);
    }
}

int
main(void)
{
    check_seed_from_env();
    test_e4m3_rounding();
    for (int split = 0; split < 2; split++) {
        sg_backend *b;

        if (split)
            setenv("SG_CPU_PAR_WORK", "0", 1);
        config_tag = split ? " [3 threads, all loops split]" : "";
        b = sg_backend_cpu_new(split ? 3 : 0);
        CHECKB(b != NULL, "cpu backend created", "sg_backend_cpu_new failed");
        if (b == NULL)
            return check_finish();
        test_act_quant(b);
        test_quant_ties(b);
        test_hadamard(b);
        b->ops->destroy(b);
    }
    unsetenv("SG_CPU_PAR_WORK");
    return check_finish();
}
