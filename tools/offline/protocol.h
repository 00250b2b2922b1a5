/*
 * The reference protocol of DeepSeek's inference demo, as the shared
 * fixtures record it: prefill a prompt, then N single-token decode steps,
 * greedy or teacher-forced, with every decision (indexer top-k sets, expert
 * routing) optionally forced from recorded files, and every output captured
 * in the fixtures' own layout.  Used by `sparsegate run` and the tests.
 */
#ifndef SG_PROTOCOL_H
#define SG_PROTOCOL_H

#include <stdint.h>

#include "model/model.h"

typedef struct sg_protocol {
    const int32_t *prompt;
    int            n_prompt;              /* P */
    int            steps;                 /* N decode steps */
    const int32_t *teacher;               /* [N] step i feeds teacher[i]; NULL = own argmax */
    int            trace;                 /* 1: capture hidden/top-k/experts/scores */
    float          temperature;           /* > 0: sample instead of argmax */
    uint64_t       seed;                  /* sampling seed */

    /* forced decisions in the fixture files' layouts (NULL = decide) */
    const int32_t *force_prefill_topk;    /* [L][P][K] */
    const int32_t *force_topk;            /* [L][N+1][K]: row i+1 = step i */
    const int32_t *force_prefill_experts; /* [L][P][k] */
    const int32_t *force_experts;         /* [N+1][L][k]: row i+1 = step i */
} sg_protocol;

/* Outputs (malloc'ed by sg_protocol_run; the trace arrays only with trace). */
typedef struct sg_protocol_out {
    float   *prefill_logits;       /* [V] */
    float   *decode_logits;        /* [N][V] */
    int32_t *tokens;               /* [N+1] argmax (or sample) of each row */
    float   *hidden;               /* [N+1][L+1][D] */
    int32_t *experts;              /* [N+1][L][k] */
    float   *expert_weights;       /* [N+1][L][k] */
    int32_t *prefill_experts_all;  /* [L][P][k] */
    int32_t *topk;                 /* [L][N+1][K] (sparse only) */
    float   *index_scores;         /* [L][N+1][P+N] (sparse only) */
    int32_t *prefill_topk_all;     /* [L][P][K] (sparse only) */
    double   prefill_seconds;
    double   decode_seconds;
    double   prefill_cpu_seconds;   /* the process's CPU time (all threads) */
    double   decode_cpu_seconds;
} sg_protocol_out;

int sg_protocol_run(sg_model *m, const sg_protocol *p, sg_protocol_out *out,
    char *err, int errlen);

/* The same on rank `rank` of a device group, the other ranks taking part
 * in every forward step with nothing of their own (model/group.h). */
struct sg_group;
int sg_protocol_run_group(struct sg_group *g, int rank, const sg_protocol *p,
    sg_protocol_out *out, char *err, int errlen);
void sg_protocol_out_free(sg_protocol_out *out);

/* Index of the largest value, first on ties (the reference's argmax). */
int32_t sg_argmax(const float *x, int n);

#endif
