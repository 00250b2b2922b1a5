/*
 * Greedy, temperature, top_k, min_p and top_p sampling with a per-request
 * generator; penalties and logprobs.
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
    s->top_k = 0;
    s->min_p = 0;
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

/* A total order (probability, then index): whether idx[a] ranks before
 * idx[b]. */
static inline int
ranks_before(const float *p, int32_t a, int32_t b)
{
    return p[a] != p[b] ? p[a] > p[b] : a < b;
}

/* Moves the k best of idx[0..n) (by ranks_before) to the front, in any
 * order: quickselect, O(n) expected; the result depends only on the
 * values, not on their order in idx. */
static void
select_top(const float *p, int32_t *idx, int n, int k)
{
    int lo = 0, hi = n - 1;

    while (lo < hi) {
        int32_t pivot = idx[lo + (hi - lo) / 2], t;
        int     i = lo, j = hi;

        while (i <= j) {
            while (ranks_before(p, idx[i], pivot))
                i++;
            while (ranks_before(p, pivot, idx[j]))
                j--;
            if (i <= j) {
                t = idx[i];
                idx[i] = idx[j];
                idx[j] = t;
                i++;
                j--;
            }
        }
        if (k - 1 <= j)
            hi = j;
        else if (k - 1 >= i)
            lo = i;
        else
            break;
    }
}

int32_t
sg_sample(sg_sampler *s, const float *logits, int vocab, float *p,
    int32_t *idx)
{
    int32_t best = sg_sample_argmax(logits, vocab);
    double  u, sum = 0, acc = 0, keep;

    float   inv_t, mx = logits[best];
    int     n = 0, sorted_by_index = 1;

    if (s->temperature <= 0 || !isfinite(mx))
        return best;

    /* One draw per sample, taken first, whatever path follows. */
    u = sg_sampler_uniform(s);
    inv_t = 1.0f / s->temperature;
    for (int i = 0; i < vocab; i++) {
        /* a masked token (-inf: a grammar's) costs no exp */
        float e = !(logits[i] > -INFINITY) ? 0.0f
                  : expf((logits[i] - mx) * inv_t);
        p[i] = e;
        sum += e;
        if (e > 0)
            idx[n++] = i;
    }

    if (s->top_k > 0 && s->top_k < n) {
        select_top(p, idx, n, s->top_k);
        n = s->top_k;
        sorted_by_index = 0;
    }
    if (s->min_p > 0) {
        /* p is relative to the likeliest (its p is 1) */
        int m = 0;
        for (int j = 0; j < n; j++) {
            if (p[idx[j]] >= s->min_p)
                idx[m++] = idx[j];
        }
        n = m;
    }
    if (!sorted_by_index)
        qsort(idx, n, sizeof(int32_t), by_index);
    if (s->top_k > 0 || s->min_p > 0) {
        sum = 0;
        for (int j = 0; j < n; j++)
            sum += p[idx[j]];
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

/* ------------------------------------------------------------ counts */

static int
counts_grow(sg_counts *c)
{
    int      cap = c->cap ? 2 * c->cap : 64;
    int32_t *ids = calloc(cap, sizeof(int32_t));
    int32_t *n = calloc(cap, sizeof(int32_t));
    uint8_t *in = calloc(cap, 1);

    if (ids == NULL || n == NULL || in == NULL) {
        free(ids);
        free(n);
        free(in);
        return -1;
    }
    for (int i = 0; i < c->cap; i++) {
        uint32_t h;
        if (c->ids[i] == 0)
            continue;
        h = ((uint32_t)c->ids[i] * 2654435761u) & (cap - 1);
        while (ids[h] != 0)
            h = (h + 1) & (cap - 1);
        ids[h] = c->ids[i];
        n[h] = c->n[i];
        in[h] = c->in_prompt[i];
    }
    free(c->ids);
    free(c->n);
    free(c->in_prompt);
    c->ids = ids;
    c->n = n;
    c->in_prompt = in;
    c->cap = cap;
    return 0;
}

int
sg_counts_add(sg_counts *c, int32_t id, int generated)
{
    uint32_t h;

    if (2 * (c->used + 1) > c->cap && counts_grow(c) != 0)
        return -1;
    h = ((uint32_t)(id + 1) * 2654435761u) & (c->cap - 1);
    while (c->ids[h] != 0 && c->ids[h] != id + 1)
        h = (h + 1) & (c->cap - 1);
    if (c->ids[h] == 0) {
        c->ids[h] = id + 1;
        c->used++;
    }
    if (generated)
        c->n[h]++;
    else
        c->in_prompt[h] = 1;
    return 0;
}

void
sg_counts_free(sg_counts *c)
{
    free(c->ids);
    free(c->n);
    free(c->in_prompt);
    c->ids = c->n = NULL;
    c->in_prompt = NULL;
    c->used = c->cap = 0;
}

void
sg_penalize(float *logits, const sg_counts *c, float rep, float freq,
    float pres)
{
    int use_rep = rep > 0 && rep != 1;

    for (int i = 0; i < c->cap; i++) {
        int32_t id = c->ids[i] - 1;
        float  *l;

        if (id < 0)
            continue;
        l = &logits[id];
        if (use_rep)
            *l = *l > 0 ? *l / rep : *l * rep;
        if (c->n[i] > 0)
            *l -= freq * (float)c->n[i] + pres;
    }
}

/* ---------------------------------------------------------- logprobs */

int
sg_logprobs(const float *logits, int vocab, float temperature,
    int32_t token, float *logprob, int n, int32_t *top_ids, float *top_lp)
{
    float  inv_t = temperature > 0 ? 1.0f / temperature : 1.0f;
    float  mx = -INFINITY;
    double sum = 0, lse;
    int    found = 0;

    for (int i = 0; i < vocab; i++) {
        if (logits[i] > mx)
            mx = logits[i];
    }
    if (!isfinite(mx)) {
        *logprob = -INFINITY;
        return 0;
    }
    for (int i = 0; i < vocab; i++) {
        if (logits[i] > -INFINITY)
            sum += exp((double)(logits[i] - mx) * inv_t);
    }
    lse = log(sum);
    *logprob = (float)((double)(logits[token] - mx) * inv_t - lse);

    /* the n largest: insertion into a short sorted list */
    for (int i = 0; i < vocab && n > 0; i++) {
        float l = logits[i];
        int   j;

        if (!(l > -INFINITY))
            continue;
        if (found == n && l <= logits[top_ids[n - 1]])
            continue;
        j = found < n ? found++ : n - 1;
        while (j > 0 && logits[top_ids[j - 1]] < l) {
            top_ids[j] = top_ids[j - 1];
            j--;
        }
        top_ids[j] = i;
    }
    for (int j = 0; j < found; j++)
        top_lp[j] = (float)((double)(logits[top_ids[j]] - mx) * inv_t - lse);
    return found;
}
