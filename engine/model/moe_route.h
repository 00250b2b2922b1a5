/*
 * The parts of DeepSeek's MoE routing that both backends run the same way,
 * written once: the CPU backend (engine/cpu/cpu_moe.c) calls them on the
 * host, the CUDA one (kernels/cuda_elementwise.cu) in its routing kernel.
 * Plain C, compiled as CUDA device code too; only comparisons and the
 * weights' sum, in a fixed order, so both give the same bits.
 */
#ifndef SG_MOE_ROUTE_H
#define SG_MOE_ROUTE_H

#include <math.h>
#include <stdint.h>

#ifdef __CUDACC__
#define SG_HOST_DEVICE __host__ __device__
#else
#define SG_HOST_DEVICE
#endif

/* The argmax order: larger wins, and any number beats a NaN. */
static inline SG_HOST_DEVICE int
sg_moe_beats(float v, float best)
{
    return v > best || (best != best && v == v);
}

/*
 * Decisions forced from outside (the reference's recorded experts): the
 * given experts into ex, ranked by their selection score sel (best first,
 * ties to the lower id; an id outside [0, E) last), so the weights' sum
 * below runs in the order the reference's topk returns them.
 */
static inline SG_HOST_DEVICE void
sg_moe_rank_forced(const int32_t *forced, const float *sel, int E,
    int top_k, int32_t *ex)
{
    for (int j = 0; j < top_k; j++)
        ex[j] = forced[j];
    for (int a = 1; a < top_k; a++)
        for (int c = a; c > 0; c--) {
            int32_t x = ex[c - 1], y = ex[c];
            float   sx = x >= 0 && x < E ? sel[x] : -INFINITY;
            float   sy = y >= 0 && y < E ? sel[y] : -INFINITY;

            if (sy > sx || (sy == sx && y < x)) {
                ex[c - 1] = y;
                ex[c] = x;
            }
        }
}

/*
 * The chosen experts' weights from their gate scores s (sigmoid, without
 * the bias), summed in the order of ex, normalized when norm, scaled; then
 * ex in ascending id order with the weights alongside.
 */
static inline SG_HOST_DEVICE void
sg_moe_weigh(const float *s, int E, int top_k, int norm, float route_scale,
    int32_t *ex, float *wt)
{
    float sum = 0.0f;

    for (int j = 0; j < top_k; j++) {
        wt[j] = ex[j] >= 0 && ex[j] < E ? s[ex[j]] : 0.0f;
        sum += wt[j];
    }
    for (int j = 0; j < top_k; j++) {
        if (norm)
            wt[j] /= sum;
        wt[j] *= route_scale;
    }
    for (int a = 1; a < top_k; a++)
        for (int c = a; c > 0 && ex[c - 1] > ex[c]; c--) {
            int32_t te = ex[c - 1];
            float   tw = wt[c - 1];

            ex[c - 1] = ex[c];
            wt[c - 1] = wt[c];
            ex[c] = te;
            wt[c] = tw;
        }
}

#endif
