/*
 * DeepSeek's MoE gate (noaux_tc, sigmoid scores): group-limited top-k on
 * the bias-corrected scores, weights from the uncorrected ones.
 */
#include <math.h>
#include <stdlib.h>

#include "cpu_internal.h"

/* Index of the largest v[j] among j < n with !used[j]; ties -> lower j. */
static int
argmax_unused(const float *v, const char *used, int n)
{
    int best = -1;

    for (int j = 0; j < n; j++)
        if (!used[j] && (best < 0 || v[j] > v[best]
                         || (v[best] != v[best] && v[j] == v[j])))
            best = j;
    return best;
}

static void
route_row(const float *logits, const float *bias, int E, int n_group,
          int topk_group, int top_k, int norm, float route_scale,
          const int32_t *forced, int32_t *experts, float *weights,
          float *orig, float *sel, char *used)
{
    int chosen[top_k > 0 ? top_k : 1];

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
        /* the given experts, ranked by their selection score so the sum
         * below runs in the order the reference's topk returns them */
        for (int j = 0; j < top_k; j++)
            chosen[j] = forced[j];
        for (int a = 1; a < top_k; a++)
            for (int c = a; c > 0; c--) {
                int x = chosen[c - 1], y = chosen[c];
                float sx = x >= 0 && x < E ? sel[x] : -INFINITY;
                float sy = y >= 0 && y < E ? sel[y] : -INFINITY;
                if (sy > sx || (sy == sx && y < x)) {
                    chosen[c - 1] = y;
                    chosen[c] = x;
                }
            }
    } else {
        for (int j = 0; j < top_k; j++) {
            chosen[j] = argmax_unused(sel, used, E);
            if (chosen[j] >= 0)
                used[chosen[j]] = 1;
        }
    }
    float sum = 0.0f, w[top_k > 0 ? top_k : 1];
    for (int j = 0; j < top_k; j++) {
        int e = chosen[j];
        w[j] = e >= 0 && e < E ? orig[e] : 0.0f;
        sum += w[j];
    }
    for (int j = 0; j < top_k; j++) {
        if (norm)
            w[j] /= sum;
        w[j] *= route_scale;
    }
    /* ascending expert ids, weights alongside */
    for (int a = 1; a < top_k; a++)
        for (int c = a; c > 0 && chosen[c - 1] > chosen[c]; c--) {
            int   te = chosen[c - 1];
            float tw = w[c - 1];
            chosen[c - 1] = chosen[c];
            w[c - 1] = w[c];
            chosen[c] = te;
            w[c] = tw;
        }
    for (int j = 0; j < top_k; j++) {
        experts[j] = chosen[j];
        weights[j] = w[j];
    }
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

    if (orig == NULL || used == NULL)
        abort();
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
