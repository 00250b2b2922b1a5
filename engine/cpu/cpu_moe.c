/*
 * DeepSeek's MoE gate (noaux_tc, sigmoid scores): group-limited top-k on
 * the bias-corrected scores, weights from the uncorrected ones.
 */
#include <math.h>
#include <stdlib.h>

#include "cpu_internal.h"
#include "model/moe_route.h"

/* Index of the largest v[j] among j < n with !used[j]; ties -> lower j. */
static int
argmax_unused(const float *v, const char *used, int n)
{
    int best = -1;

    for (int j = 0; j < n; j++)
        if (!used[j] && (best < 0 || sg_moe_beats(v[j], v[best])))
            best = j;
    return best;
}

static void
route_row(const float *logits, const float *bias, int E, int n_group,
          int topk_group, int top_k, int norm, float route_scale,
          const int32_t *forced, int32_t *experts, float *weights,
          float *orig, float *sel, char *used)
{
    int32_t *chosen = experts;

    for (int e = 0; e < E; e++) {
        orig[e] = 1.0f / (1.0f + expf(-logits[e]));
        sel[e] = bias ? orig[e] + bias[e] : orig[e];
    }
    if (n_group > 1 && E % n_group == 0 && forced == NULL) {
        int   gs = E / n_group;
        float gscore[n_group];
        char  gkeep[n_group];

        for (int g = 0; g < n_group; g++) {
            const float *v = sel + g * gs;
            float a = -INFINITY, c = -INFINITY;   /* top-2 of the group */

            for (int j = 0; j < gs; j++) {
                if (v[j] > a) {
                    c = a;
                    a = v[j];
                } else if (v[j] > c) {
                    c = v[j];
                }
            }
            gscore[g] = bias == NULL ? a : (gs > 1 ? a + c : a);
            gkeep[g] = 0;
        }
        for (int t = 0; t < topk_group && t < n_group; t++) {
            int g = argmax_unused(gscore, gkeep, n_group);
            gkeep[g] = 1;
        }
        for (int e = 0; e < E; e++)
            if (!gkeep[e / gs])
                sel[e] = -INFINITY;
    }
    for (int e = 0; e < E; e++)
        used[e] = 0;
    if (forced) {
        sg_moe_rank_forced(forced, sel, E, top_k, chosen);
    } else {
        for (int j = 0; j < top_k; j++) {
            chosen[j] = argmax_unused(sel, used, E);
            if (chosen[j] >= 0)
                used[chosen[j]] = 1;
        }
    }
    sg_moe_weigh(orig, E, top_k, norm, route_scale, experts, weights);
}

typedef struct {
    const float   *logits, *bias;
    const int32_t *forced;
    int32_t       *experts;
    float         *weights;
    int            E, n_group, topk_group, top_k, norm;
    float          route_scale;
} route_ctx;

static void
route_range(void *c, int64_t i0, int64_t i1)
{
    route_ctx *R = c;
    int        E = R->E, K = R->top_k;
    float     *orig = malloc(sizeof(float) * 2 * E);
    char      *used = malloc(E);

    if (orig == NULL || used == NULL) {
        /* experts 0..K-1 with no weight: ids in range, nothing added */
        for (int64_t i = i0; i < i1; i++)
            for (int j = 0; j < K; j++) {
                R->experts[(size_t)i * K + j] = j;
                R->weights[(size_t)i * K + j] = 0;
            }
        free(orig);
        free(used);
        cpu_oom();
        return;
    }
    for (int64_t i = i0; i < i1; i++)
        route_row(R->logits + (size_t)i * E, R->bias, E, R->n_group,
                  R->topk_group, K, R->norm, R->route_scale,
                  R->forced ? R->forced + (size_t)i * K : NULL,
                  R->experts + (size_t)i * K, R->weights + (size_t)i * K,
                  orig, orig + E, used);
    free(orig);
    free(used);
}

void
cpu_moe_route(sg_backend *b, const float *logits, const float *bias, int n,
              int n_experts, int n_group, int topk_group, int top_k, int norm,
              float route_scale, const int32_t *forced, int32_t *experts,
              float *weights)
{
    route_ctx R = { logits, bias, forced, experts, weights, n_experts,
                    n_group, topk_group, top_k, norm, route_scale };

    cpu_parallel(b, n, 1, (double)n * n_experts * 32, route_range, &R);
}
