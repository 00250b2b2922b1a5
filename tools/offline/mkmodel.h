/*
 * Random-weight DeepSeek-V3.2 checkpoints in the Hugging Face layout, for
 * tests, demos and benchmarks (the library behind `sparsegate mkmodel`).
 */
#ifndef SG_MKMODEL_H
#define SG_MKMODEL_H

#include <stdint.h>
#include <stdio.h>

#include "model/config.h"

typedef struct sg_mkmodel_opts {
    const char  *out_dir;       /* created when missing */
    const char  *preset;        /* "tiny" (default), "small", "v32-attn" */
    const char  *config_path;   /* a config.json to start from instead */
    const char **sets;          /* "key=value" overrides ("a.b=v" nests) */
    int          n_sets;
    int          fp8;           /* e4m3 matrices + 128x128 pow2 scales */
    uint64_t     seed;
    int          shards;        /* 0 or 1: one file */
    const char  *tokenizer;     /* tokenizer.json to copy, or NULL */
    FILE        *log;           /* what was written, or NULL */
} sg_mkmodel_opts;

/* Writes config.json, the safetensors file(s), the index and the
 * tokenizer.  Returns 0, or -1 with a message. */
int sg_mkmodel(const sg_mkmodel_opts *o, char *err, int errlen);

/* The config.json object mkmodel writes for these options (preset or
 * --config file, then --set overrides, then --fp8); cJSON_Delete it. */
struct cJSON *sg_mkmodel_config(const sg_mkmodel_opts *o, char *err,
    int errlen);

/*
 * The values mkmodel writes for the weight called name in a model of this
 * config and seed, before any FP8 quantization (bf16-rounded unless the
 * tensor is stored as F32), row-major into out (room for cap floats).
 * Returns the element count, or -1 for an unknown name or too small out.
 */
int64_t sg_mkmodel_values(const sg_config *c, uint64_t seed,
    const char *name, float *out, int64_t cap);

/* The preset names, NULL-terminated. */
extern const char *const sg_mkmodel_presets[];

#endif
