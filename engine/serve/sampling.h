/*
 * Token sampling: greedy, temperature and nucleus (top_p), seeded per
 * request.  A request's draws come from its own generator and every sample
 * takes exactly one draw, so its tokens depend only on its seed and its
 * logits, never on the other requests batched with it.
 */
#ifndef SG_SAMPLING_H
#define SG_SAMPLING_H

#include <stdint.h>

typedef struct sg_sampler {
    float    temperature;    /* <= 0: greedy */
    float    top_p;          /* >= 1: off; 0 keeps the likeliest token */
    uint64_t state;          /* splitmix64 */
} sg_sampler;

void sg_sampler_init(sg_sampler *s, float temperature, float top_p,
    uint64_t seed);

/* A uniform draw in [0, 1) (53 bits). */
double sg_sampler_uniform(sg_sampler *s);

/* Index of the largest logit (the lowest index on ties; NaN never wins). */
int32_t sg_sample_argmax(const float *logits, int n);

/*
 * Samples one token from logits[0..vocab).  work holds vocab floats and
 * vocab ints of scratch (the logits are left unchanged).
 */
int32_t sg_sample(sg_sampler *s, const float *logits, int vocab,
    float *work_p, int32_t *work_idx);

#endif
