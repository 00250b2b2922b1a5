#include <math.h>

#include "ref_fp8.h"

double
ref_e4m3_value(int code)
{
    int    e = (code >> 3) & 15, m = code & 7;
    double v = e == 0 ? m / 8.0 * ldexp(1, -6)
                      : (1 + m / 8.0) * ldexp(1, e - 7);

    return code & 0x80 ? -v : v;
}

/* The grid is monotonic in the code: find the codes just below and above
 * |x| by bisection. */
double
ref_e4m3_round(float x)
{
    double a = fabs((double)x);
    int    lo = 0, hi = 0x7e;

    if (a >= 448)
        return x < 0 ? -448.0 : 448.0;
    while (hi - lo > 1) {                  /* value(lo) <= a < value(hi) */
        int mid = (lo + hi) / 2;
        if (ref_e4m3_value(mid) <= a)
            lo = mid;
        else
            hi = mid;
    }
    double dl = a - ref_e4m3_value(lo), dh = ref_e4m3_value(hi) - a;
    int    best = dl < dh || (dl == dh && (lo & 1) == 0) ? lo : hi;

    return x < 0 ? -ref_e4m3_value(best) : ref_e4m3_value(best);
}

void
ref_act_quant(const float *x, int len, int ue8m0, float *out)
{
    for (int j0 = 0; j0 < len; j0 += 128) {
        int   n = len - j0 < 128 ? len - j0 : 128;
        float amax = 1e-4f;

        for (int j = 0; j < n; j++)
            amax = fmaxf(amax, fabsf(x[j0 + j]));
        float s = amax * (1.0f / 448.0f);
        if (ue8m0) {
            int e;
            if (frexpf(s, &e) != 0.5f)
                s = ldexpf(1.0f, e);
        }
        for (int j = 0; j < n; j++) {
            float v = fminf(fmaxf(x[j0 + j] / s, -448.0f), 448.0f);
            out[j0 + j] = (float)(ref_e4m3_round(v) * s);
        }
    }
}
