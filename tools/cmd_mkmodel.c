/*
 * sparsegate mkmodel: writes a random-weight DeepSeek-V3.2 checkpoint.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "offline/mkmodel.h"

static void
usage(FILE *f)
{
    fprintf(f,
        "usage: sparsegate mkmodel --out DIR [--preset tiny|small|v32-attn]\n"
        "           [--config FILE.json] [--set key=value ...] [--fp8]\n"
        "           [--seed N] [--shards N] [--tokenizer tokenizer.json]\n"
        "\n"
        "Writes config.json, model.safetensors (or N shards) with\n"
        "model.safetensors.index.json, and a copy of tokenizer.json.\n"
        "  --preset     tiny (the test fixture's shapes, default), small\n"
        "               (a fast CPU demo model, DeepSeek's vocabulary),\n"
        "               v32-attn (DeepSeek-V3.2's attention/indexer shapes,\n"
        "               2 layers, small MoE)\n"
        "  --config     start from this config.json instead of a preset\n"
        "  --set        override a field, e.g. --set num_hidden_layers=8,\n"
        "               --set rope_scaling.factor=8 (repeatable)\n"
        "  --fp8        store matrices as e4m3 with 128x128 block scales\n"
        "  --seed       random seed (default 0)\n"
        "  --shards     number of safetensors files (default 1)\n");
}

static int
parse_count(const char *opt, const char *s, long max, long *out)
{
    char *end;
    long  v;

    errno = 0;
    v = strtol(s, &end, 0);
    if (*s == '\0' || *end || errno || v < 0 || v > max) {
        fprintf(stderr, "mkmodel: %s '%s' is not a number in [0, %ld]\n",
                opt, s, max);
        return -1;
    }
    *out = v;
    return 0;
}

int
sg_cmd_mkmodel(int argc, char **argv)
{
    sg_mkmodel_opts o;
    const char    **sets = calloc(argc > 0 ? argc : 1, sizeof(char *));
    char            err[1024];
    long            v;
    int             rc = 2;

    memset(&o, 0, sizeof(o));
    o.sets = sets;
    o.log = stdout;
    if (sets == NULL)
        return 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;

        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            rc = 0;
            goto out;
        }
        if (strcmp(a, "--fp8") == 0) {
            o.fp8 = 1;
            continue;
        }
        if (val == NULL) {
            fprintf(stderr, "mkmodel: %s needs a value (or unknown option)\n",
                    a);
            goto out;
        }
        i++;
        if (strcmp(a, "--out") == 0) {
            o.out_dir = val;
        } else if (strcmp(a, "--preset") == 0) {
            o.preset = val;
        } else if (strcmp(a, "--config") == 0) {
            o.config_path = val;
        } else if (strcmp(a, "--set") == 0) {
            sets[o.n_sets++] = val;
        } else if (strcmp(a, "--tokenizer") == 0) {
            o.tokenizer = val;
        } else if (strcmp(a, "--seed") == 0) {
            char *end;

            errno = 0;
            o.seed = strtoull(val, &end, 0);
            if (*val == '\0' || *end || errno) {
                fprintf(stderr, "mkmodel: --seed '%s' is not a number\n", val);
                goto out;
            }
        } else if (strcmp(a, "--shards") == 0) {
            if (parse_count(a, val, 99999, &v) != 0)
                goto out;
            o.shards = (int)v;
        } else {
            fprintf(stderr, "mkmodel: unknown option '%s'\n\n", a);
            usage(stderr);
            goto out;
        }
    }
    if (o.out_dir == NULL) {
        fprintf(stderr, "mkmodel: --out DIR is required\n\n");
        usage(stderr);
        goto out;
    }
    if (o.preset && o.config_path) {
        fprintf(stderr, "mkmodel: give --preset or --config, not both\n");
        goto out;
    }
    if (sg_mkmodel(&o, err, sizeof(err)) != 0) {
        fprintf(stderr, "mkmodel: %s\n", err);
        rc = 1;
        goto out;
    }
    rc = 0;
out:
    free(sets);
    return rc;
}
