/*
 * The memory planner: what a model needs on each device of a group, and
 * whether it fits.  From config.json and, when the checkpoint's files are
 * there, their headers (the weights are never read); without them, from
 * the shapes the config implies (model/weights.c: sg_weights_shape).
 *
 * Per rank (model/group.h): the replicated weights (attention, indexer,
 * dense layers, shared experts, embeddings, head) plus its share of the
 * routed experts; the forward pass's working memory at the step's token
 * budget; a reserve for the runtime (CUDA context, cuBLAS workspace, NCCL
 * buffers); the rest is cache: KV bytes per token = per layer the latent
 * (FP8 e4m3 + scales, or exact f32), the RoPE key (f32) and the indexer key
 * (e4m3 + scale).  A configuration fits when every rank can cache at least
 * one request of the full context.
 */
#ifndef SG_PLAN_H
#define SG_PLAN_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "config.h"

#define SG_PLAN_RESERVE ((size_t)2 << 30)   /* runtime reserve per device */

typedef struct sg_plan_in {
    const char *model;          /* a checkpoint directory or a config.json */
    int         n_devices;
    size_t      device_bytes;   /* memory of one device */
    int         cpu;            /* 1: CPU ranks (no runtime reserve; the
                                   MHA form's 1 GiB buffer), else CUDA */
    size_t      reserve_bytes;  /* per device; 0 = SG_PLAN_RESERVE on
                                   CUDA, none on the CPU */
    int         kv_fp8;         /* cache layout (the engine's default: 1) */
    int         step_tokens;    /* 0 = SG_DEFAULT_STEP_TOKENS */
    int         max_running;    /* 0 = SG_DEFAULT_MAX_RUNNING */
    int         context;        /* a request's context; 0 = the model's */
} sg_plan_in;

typedef struct sg_plan {
    sg_config cfg;
    int       from_files;       /* 1: sizes from the safetensors headers */
    size_t    files_bytes;      /* the index's metadata.total_size, or 0 */
    size_t    weights_total;    /* every weight the engine loads */
    size_t    replicated;       /* on every rank */
    size_t    experts;          /* all routed experts */
    size_t    rank_weights;     /* the largest rank's weights */
    int       rank_experts;     /* routed experts per layer it holds */
    size_t    kv_latent, kv_rope, kv_index;   /* per token and layer */
    size_t    kv_token;         /* per token, all layers */
    size_t    workspace;        /* the forward pass's buffers, per rank */
    size_t    reserve;
    int64_t   cache_bytes;      /* per rank; negative when short */
    int64_t   cache_tokens;     /* per rank (0 when short) */
    int       context;
    int       fits;
    int       min_devices;      /* fewest devices of this size that fit;
                                   0: none up to n_routed_experts */
} sg_plan;

/* -1 with a message naming the file or field. */
int sg_plan_make(const sg_plan_in *in, sg_plan *p, char *err, int errlen);

/* The plan as text (what `sparsegate plan` prints). */
void sg_plan_print(const sg_plan_in *in, const sg_plan *p, FILE *f);

/* "141GB", "80GiB", "512m", "1073741824": GB/MB/KB/TB are decimal, GiB
 * and the single letters k, m, g, t (as nginx reads sizes) binary; 0 or
 * -1 when it is not a size. */
int sg_size_parse(const char *s, size_t *out);

#endif
