/*
 * Element types and the exact FP8 e4m3fn conversions.
 */
#include <math.h>
#include <pthread.h>
#include <string.h>

#include "dtype.h"

static const struct {
    const char *name;
    size_t      size;
} dtypes[SG_DTYPE_COUNT] = {
    [SG_F32]     = { "F32", 4 },
    [SG_BF16]    = { "BF16", 2 },
    [SG_F8_E4M3] = { "F8_E4M3", 1 },
    [SG_I32]     = { "I32", 4 },
    [SG_I64]     = { "I64", 8 },
};

size_t
sg_dtype_size(sg_dtype t)
{
    return (unsigned)t < SG_DTYPE_COUNT ? dtypes[t].size : 0;
}

const char *
sg_dtype_name(sg_dtype t)
{
    return (unsigned)t < SG_DTYPE_COUNT ? dtypes[t].name : "?";
}

int
sg_dtype_parse(const char *s, sg_dtype *out)
{
    for (int i = 0; i < SG_DTYPE_COUNT; i++) {
        if (strcmp(s, dtypes[i].name) == 0) {
            *out = (sg_dtype)i;
            return 0;
        }
    }
    return -1;
}

float sg_e4m3_table[256];

static void
fp8_build_table(void)
{
    for (int v = 0; v < 256; v++) {
        int   sign = v >> 7, exp = (v >> 3) & 15, man = v & 7;
        float f;

        if (exp == 15 && man == 7)
            f = NAN;                               /* e4m3fn has no inf */
        else if (exp == 0)
            f = ldexpf((float)man, -9);            /* subnormal: m/8 * 2^-6 */
        else
            f = ldexpf(1.0f + man / 8.0f, exp - 7);
        sg_e4m3_table[v] = sign ? -f : f;
    }
}

void
sg_fp8_init(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;

    pthread_once(&once, fp8_build_table);
}

/*
 * Round to nearest, ties to even, on the e4m3fn grid.  Values are first
 * brought to a multiple of the grid step of their binade by an exact f32
 * rounding (rintf rounds ties to even in the default mode), so subnormals
 * and the top binade come out right; magnitudes past 448 saturate.
 */
uint8_t
sg_f32_to_e4m3(float x)
{
    uint8_t sign = signbit(x) ? 0x80 : 0;
    float   a = fabsf(x);
    int     e;

    if (isnan(x))
        return 0x7f;
    if (a >= 448.0f)
        return sign | 0x7e;                        /* 448 = 1.75 * 2^8 */
    if (a < ldexpf(1.0f, -6)) {
        /* subnormal binade, step 2^-9 */
        int m = (int)rintf(a * 512.0f);            /* 0..8; 8 = 2^-6 */
        return sign | (uint8_t)m;                  /* 8 encodes exp 1, man 0 */
    }
    frexpf(a, &e);                                 /* a = f * 2^e, f in [0.5,1) */
    e -= 1;                                        /* a in [2^e, 2^(e+1)) */
    {
        float step = ldexpf(1.0f, e - 3);
        float r = rintf(a / step) * step;          /* exact: a / step < 16 */
        int   re, m;

        if (r >= 448.0f)
            return sign | 0x7e;
        frexpf(r, &re);
        re -= 1;
        m = (int)(r / ldexpf(1.0f, re - 3)) - 8;   /* 0..7 */
        return sign | (uint8_t)(((re + 7) << 3) | m);
    }
}
