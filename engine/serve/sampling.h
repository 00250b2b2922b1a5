/*
 * Token sampling: greedy, temperature, top_k, min_p and nucleus (top_p),
 * seeded per request; the logits' transforms before it (repetition,
 * frequency and presence penalties, logit bias); logprobs.  A request's
 * draws come from its own generator and every sample takes exactly one
 * draw, so its tokens depend only on its seed and its logits, never on the
 * other requests batched with it.
 */
#ifndef SG_SAMPLING_H
#define SG_SAMPLING_H

#include <stdint.h>

typedef struct sg_sampler {
    float    temperature;    /* <= 0: greedy */
    float    top_p;          /* >= 1: off; 0 keeps the likeliest token */
    int      top_k;          /* <= 0: off */
    float    min_p;          /* <= 0: off */
    uint64_t state;          /* splitmix64 */
} sg_sampler;

/* top_k and min_p off; set them after. */
void sg_sampler_init(sg_sampler *s, float temperature, float top_p,
    uint64_t seed);

/* A uniform draw in [0, 1) (53 bits). */
double sg_sampler_uniform(sg_sampler *s);

/* Index of the largest logit (the lowest index on ties; NaN never wins). */
int32_t sg_sample_argmax(const float *logits, int n);

/*
 * Samples one token from logits[0..vocab): the temperature, then the
 * top_k likeliest, those at least min_p x the likeliest's probability, the
 * top_p nucleus.  work holds vocab floats and vocab ints of scratch (the
 * logits are left unchanged).
 */
int32_t sg_sample(sg_sampler *s, const float *logits, int vocab,
    float *work_p, int32_t *work_idx);

/* Per token id: how often it was generated, and whether the prompt has it
 * (open addressing; only requests with penalties keep one). */
typedef struct sg_counts {
    int32_t  *ids;           /* id + 1, 0 = empty */
    int32_t  *n;             /* times generated */
    uint8_t  *in_prompt;
    int       used, cap;     /* cap: a power of two */
} sg_counts;

int sg_counts_add(sg_counts *c, int32_t id, int generated);   /* -1: OOM */
void sg_counts_free(sg_counts *c);

/* In place: repetition_penalty (tokens of the prompt or generated: a
 * positive logit divided by it, a negative one multiplied: HF's and vLLM's
 * rule), then frequency x count + presence (generated tokens: OpenAI's
 * rule).  rep <= 0 or 1 is off. */
void sg_penalize(float *logits, const sg_counts *c, float rep, float freq,
    float pres);

/* The log-probability of token under softmax(logits / temperature) (1
 * when temperature <= 0), and the n likeliest (largest first, ties by id;
 * -inf logits never listed): returns how many were found (<= n). */
int sg_logprobs(const float *logits, int vocab, float temperature,
    int32_t token, float *logprob, int n, int32_t *top_ids, float *top_lp);

#endif
