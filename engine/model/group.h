/*
 * A device group: one model over N ranks (GPUs, or host ranks that stand
 * for NUMA nodes and for simulated devices in the tests) in one process.
 *
 * Attention is data-parallel: every rank holds the attention, indexer,
 * dense layers, shared experts, embeddings and head, and runs its own
 * sequences with its own cache pool.  The MoE is expert-parallel: rank r
 * holds routed experts [sg_expert_first(r), sg_expert_first(r + 1)) of
 * every MoE layer, and forward.c sends each token to the owners of its
 * experts through the group's collective (model/collective.h).
 *
 * Each rank has a thread of its own (N > 1) that loads its model (so a
 * NUMA rank's memory and worker threads start on its node) and runs the
 * functions sg_group_run hands it; a group of one runs on the caller's
 * thread and has no collective.
 */
#ifndef SG_GROUP_H
#define SG_GROUP_H

#include <stdint.h>

#include "collective.h"
#include "model.h"

#define SG_MAX_RANKS 64

/* The first routed expert of rank r (contiguous, balanced ranges). */
static inline int
sg_expert_first(int rank, int n_ranks, int n_experts)
{
    return (int)((int64_t)rank * n_experts / n_ranks);
}

/* The rank that holds expert e: the largest r with first(r) <= e. */
static inline int
sg_expert_owner(int e, int n_ranks, int n_experts)
{
    return (int)(((int64_t)(e + 1) * n_ranks - 1) / n_experts);
}

/*
 * Parses a device list: "3", "0-7", "0,2,4-5" (ascending, no repeats, each
 * id 0..1023) into ids[] (room for max); returns the count, or -1 with a
 * message quoting the list.
 */
int sg_devices_parse(const char *s, int *ids, int max, char *err, int errlen);

typedef struct sg_group sg_group;

/*
 * Loads the model at dir once per device: rank r on devices[r] (a CUDA
 * device; for the CPU backend the ids only count ranks, and name the NUMA
 * node a rank is bound to when the machine has several).  o->n_threads is
 * the CPU threads of the whole group (0: all cores), shared among the
 * ranks.  -1 with a message naming the rank.
 */
int sg_group_load(const char *dir, const sg_model_opts *o,
    const int *devices, int n_devices, sg_group **out, char *err,
    int errlen);
void sg_group_free(sg_group *g);

int sg_group_size(const sg_group *g);
sg_model *sg_group_model(sg_group *g, int rank);
sg_coll *sg_group_coll(sg_group *g);
/* The NUMA node rank r is bound to, or -1. */
int sg_group_node(const sg_group *g, int rank);

/*
 * Runs fn(ctx, r) for every rank r at once, each on its rank's thread, and
 * returns when all have returned; then clears any abort of the collective
 * for the next step.
 */
typedef void (*sg_rank_fn)(void *ctx, int rank);
void sg_group_run(sg_group *g, sg_rank_fn fn, void *ctx);

#endif
