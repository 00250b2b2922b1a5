/*
 * Greedy, temperature and top_p sampling with a per-request generator.
 */
#define _GNU_SOURCE             /* qsort_r */
#include <math.h>
#include <stdlib.h>

#include "sampling.h"

void
sg_sampler_init(sg_sampler *s, float temperature, float top_p, uint64_t seed)
{
    s->temperature = temperature;
    s->top_p = top_p;
    s->state = seed;
}

static uint64_t
splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

double
sg_sampler_uniform(sg_sampler *s)
{
    return (double)(splitmix64(&s->state) >> 11) * 0x1.0p-53;
}

int32_t
sg_sample_argmax(const float *logits, int n)
{
    int32_t best = 0;

    for (int i = 1; i < n; i++) {
        if (logits[i] > logits[best] || isnan(logits[best]))
            best = i;
    }
    return best;
}

/* Sorts indices by probability, largest first; equal ones by index so the
 * order (and so the sample) never depends on the sort's internals. */
static int
by_prob_desc(const void *a, const void *b, void *ctx)
{
    const float *sort_p = ctx;
    int32_t      i = *(const int32_t *)a, j = *(const int32_t *)b;

    if (sort_p[i] != sort_p[j])
        return sort_p[i] > sort_p[j] ? -1 : 1;
    return (i > j) - (i < j);
}

static int
by_index(const void *a, const void *b)
{
    int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;

    return (i > j) - (i < j);
}

int32_t
sg_sample(sg_sampler *s, const float *logits, int vocab, float *p,
    int32_t *idx)
{
    int32_t best = sg_sample_argmax(logits, vocab);
    double  u, sum = 0, acc = 0, keep;

    float   inv_t, mx = logits[best];
    int     n = 0;

    if (s->temperature <= 0 || !isfinite(mx))
        return best;

    /* One draw per sample, taken first, whatever path follows. */
    u = sg_sampler_uniform(s);
    inv_t = 1.0f / s->temperature;
    for (int i = 0; i < vocab; i++) {
        float e = isnan(logits[i]) ? 0.0f : expf((logits[i] - mx) * inv_t);
        p[i] = e;
        sum += e;
        if (e > 0)
            idx[n++] = i;
    }

    if (s->top_p < 1) {
        /* The smallest set of the most likely tokens whose mass reaches
         * top_p.  Sorting a whole vocabulary (129K) per token is slow, and
         * the set lies among the likeliest tokens: sort only those above a
         * threshold, as long as their mass already reaches the target
         * (then the set is the same as with a full sort).  The draw then
         * walks the kept tokens in index order, not in sorted order:
         * nearly equal probabilities may sort either way after a
         * rounding-sized change of the logits, and the sample should not
         * depend on that. */
        static const float thresholds[] = {1e-3f, 1e-6f, 0.0f};
        double target = s->top_p * sum;
        int    m = 0;

        for (size_t k = 0; k < sizeof(thresholds) / sizeof(float); k++) {
            double mass = 0;
            int    c = 0;
            for (int j = 0; j < n; j++) {
                if (p[idx[j]] >= thresholds[k]) {
                    int32_t t = idx[c];
                    idx[c++] = idx[j];
                    idx[j] = t;
                    mass += p[idx[c - 1]];
                }
            }
            if (mass >= target || thresholds[k] == 0.0f) {
                n = c;
                break;
            }
        }
        qsort_r(idx, n, sizeof(int32_t), by_prob_desc, p);
        keep = 0;
        while (m < n) {
            keep += p[idx[m++]];
            if (keep >= target)
                break;
        }
        qsort(idx, m, sizeof(int32_t), by_index);
        n = m;
        /* The kept mass summed in index order (deterministic). */
        sum = 0;
        for (int j = 0; j < n; j++)
            sum += p[idx[j]];
    }

    u *= sum;
    for (int j = 0; j < n; j++) {
        acc += p[idx[j]];
        if (u < acc)
            return idx[j];
    }
    return n > 0 ? idx[n - 1] : best;
}
