/*
 * sparsegate plan: what a model needs on each device of a group and
 * whether it fits (engine/model/plan.h), for a checkpoint directory or a
 * bare config.json (the weights are never read).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/group.h"
#include "model/plan.h"

static void
usage(FILE *f)
{
    fprintf(f,
"usage: sparsegate plan --model DIR|config.json --devices N|LIST\n"
"                       --device-memory SIZE [--reserve SIZE] [--kv fp8|exact]\n"
"                       [--context N] [--step-tokens N] [--max-running N]\n"
"                       [--backend cuda|cpu]\n"
"  --devices        how many devices (8), or a list as sparsegate_devices\n"
"                   takes it (0-7, 0,2,4-5)\n"
"  --device-memory  one device's memory: 141GB, 80GiB, 143771MiB (GB, MB:\n"
"                   decimal; GiB, MiB and the letters k m g t: binary)\n"
"  --reserve        kept per device for the runtime (default 2GiB with\n"
"                   --backend cuda, the default; none with cpu)\n"
"  --context        the context one request may take (default: the model's)\n"
"exit status: 0 when it fits, 1 when it does not, 2 on bad arguments\n");
}

static int
positive(const char *what, const char *s, int *out)
{
    char *end;
    long  v = strtol(s, &end, 10);

    if (*s == '\0' || *end != '\0' || v < 1 || v > 1 << 30) {
        fprintf(stderr, "plan: %s must be a positive integer, not \"%s\"\n",
                what, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

int
sg_cmd_plan(int argc, char **argv)
{
    static const struct option opts[] = {
        { "model", 1, 0, 'm' }, { "devices", 1, 0, 'd' },
        { "device-memory", 1, 0, 'M' }, { "reserve", 1, 0, 'r' },
        { "kv", 1, 0, 'k' }, { "context", 1, 0, 'c' },
        { "step-tokens", 1, 0, 's' }, { "max-running", 1, 0, 'R' },
        { "backend", 1, 0, 'b' }, { "help", 0, 0, 'h' }, { 0, 0, 0, 0 }
    };
    sg_plan_in in;
    sg_plan    p;
    char       err[512];
    int        c, ids[SG_MAX_RANKS];

    memset(&in, 0, sizeof(in));
    in.kv_fp8 = 1;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': in.model = optarg; break;
        case 'd':
            if (strpbrk(optarg, "-,")) {
                in.n_devices = sg_devices_parse(optarg, ids, SG_MAX_RANKS,
                                                err, sizeof(err));
                if (in.n_devices < 0) {
                    fprintf(stderr, "plan: --devices: %s\n", err);
                    return 2;
                }
            } else if (positive("--devices", optarg, &in.n_devices) != 0) {
                return 2;
            }
            break;
        case 'M':
        case 'r':
            if (sg_size_parse(optarg, c == 'M' ? &in.device_bytes
                                               : &in.reserve_bytes) != 0)
            {
                fprintf(stderr, "plan: --%s: \"%s\" is not a size (141GB, "
                        "80GiB, 512m)\n", c == 'M' ? "device-memory"
                        : "reserve", optarg);
                return 2;
            }
            break;
        case 'k':
            if (strcmp(optarg, "fp8") && strcmp(optarg, "exact")) {
                fprintf(stderr, "plan: --kv must be fp8 or exact\n");
                return 2;
            }
            in.kv_fp8 = strcmp(optarg, "fp8") == 0;
            break;
        case 'c':
            if (positive("--context", optarg, &in.context) != 0)
                return 2;
            break;
        case 's':
            if (positive("--step-tokens", optarg, &in.step_tokens) != 0)
                return 2;
            break;
        case 'R':
            if (positive("--max-running", optarg, &in.max_running) != 0)
                return 2;
            break;
        case 'b':
            if (strcmp(optarg, "cuda") && strcmp(optarg, "cpu")) {
                fprintf(stderr, "plan: --backend must be cuda or cpu\n");
                return 2;
            }
            in.cpu = strcmp(optarg, "cpu") == 0;
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (in.model == NULL || in.n_devices < 1 || in.device_bytes == 0) {
        usage(stderr);
        return 2;
    }
    if (sg_plan_make(&in, &p, err, sizeof(err)) != 0) {
        fprintf(stderr, "plan: %s\n", err);
        return 2;
    }
    sg_plan_print(&in, &p, stdout);
    return p.fits ? 0 : 1;
}
