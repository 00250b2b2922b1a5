/*
 * sparsegate run: runs a model on prompt token ids (prefill + decode),
 * greedy or sampled, teacher-forced or free, with decisions optionally
 * forced from recorded files, and dumps everything in the fixtures' format.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "model/group.h"
#include "offline/protocol.h"
#include "tool_io.h"

static void
usage(FILE *f)
{
    fprintf(f,
"usage: sparsegate run --model DIR (--prompt-ids FILE.i32.bin | --prompt 'ID ID ...')\n"
"                      [--steps N] [--teacher FILE.i32.bin] [--force-decisions RUNDIR]\n"
"                      [--dense | --window] [--kv fp8|exact] [--act-quant on|off]\n"
"                      [--indexer-rope half|interleaved] [--index-share N]\n"
"                      [--temperature T] [--seed S]\n"
"                      [--threads N] [--backend cpu|cuda] [--devices LIST]\n"
"                      [--dump DIR]\n"
"  --teacher        feed these tokens at the decode steps (teacher forcing)\n"
"  --force-decisions read indexer top-k sets and expert routing from RUNDIR\n"
"                   (prefill_topk_all, topk, prefill_experts_all, experts .i32.bin)\n"
"  --devices LIST   one model over a device group (0-7, 0,2,4-5): the run on\n"
"                   rank 0, the routed experts spread over the ranks (with\n"
"                   --backend cpu, host ranks in this process)\n"
"  --window         attend each token's index_topk most recent keys instead\n"
"                   of the indexer's choice (a sliding-window baseline)\n"
"  --index-share N  IndexCache: the indexer runs on every N-th layer, the\n"
"                   layers between reuse its top-k sets (0 or 1: off)\n"
"  --dump           write prefill_logits.f32.bin, decode_logits.f32.bin,\n"
"                   tokens.i32.bin, hidden, experts, expert_weights, topk, ...\n");
}

static int
parse_ids(const char *s, int32_t **ids, int *n)
{
    int cap = 16;
    char *end;

    *n = 0;
    *ids = malloc(sizeof(int32_t) * cap);
    while (*ids) {
        while (*s == ' ' || *s == ',' || *s == '\t' || *s == '\n')
            s++;
        if (*s == '\0')
            return 0;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (end == s || errno || v < 0 || v > INT32_MAX)
            return -1;
        if (*n == cap) {
            int32_t *t = realloc(*ids, sizeof(int32_t) * (cap *= 2));
            if (t == NULL)
                break;
            *ids = t;
        }
        (*ids)[(*n)++] = (int32_t)v;
        s = end;
    }
    return -1;
}

int
sg_cmd_run(int argc, char **argv)
{
    static const struct option opts[] = {
        { "model", 1, 0, 'm' }, { "prompt-ids", 1, 0, 'p' },
        { "prompt", 1, 0, 'P' }, { "steps", 1, 0, 'n' },
        { "teacher", 1, 0, 't' }, { "force-decisions", 1, 0, 'f' },
        { "dense", 0, 0, 'd' }, { "window", 0, 0, 'w' }, { "kv", 1, 0, 'k' },
        { "act-quant", 1, 0, 'a' }, { "indexer-rope", 1, 0, 'r' },
        { "index-share", 1, 0, 'x' },
        { "temperature", 1, 0, 'T' }, { "seed", 1, 0, 's' },
        { "threads", 1, 0, 'j' }, { "backend", 1, 0, 'b' },
        { "dump", 1, 0, 'o' }, { "devices", 1, 0, 'D' },
        { "help", 0, 0, 'h' }, { 0, 0, 0, 0 }
    };
    const char   *model_dir = NULL, *prompt_file = NULL, *prompt_text = NULL;
    const char   *teacher_file = NULL, *force_dir = NULL, *dump = NULL;
    const char   *devices = NULL;
    sg_group     *g = NULL;
    sg_model_opts mo;
    sg_protocol   p;
    sg_protocol_out out;
    sg_model     *m = NULL;
    int32_t      *prompt = NULL, *teacher = NULL;
    int32_t      *f_ptk = NULL, *f_tk = NULL, *f_pex = NULL, *f_ex = NULL;
    size_t        n_teacher = 0;
    char          err[512];
    int           c, rc = 1;

    sg_model_opts_default(&mo);
    memset(&p, 0, sizeof(p));
    p.steps = 16;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model_dir = optarg; break;
        case 'p': prompt_file = optarg; break;
        case 'P': prompt_text = optarg; break;
        case 'n': p.steps = atoi(optarg); break;
        case 't': teacher_file = optarg; break;
        case 'f': force_dir = optarg; break;
        case 'd': mo.num.dense = 1; break;
        case 'w': mo.num.window = 1; break;
        case 'k':
            if (strcmp(optarg, "fp8") && strcmp(optarg, "exact")) {
                fprintf(stderr, "run: --kv must be fp8 or exact\n");
                return 2;
            }
            mo.num.kv_fp8 = strcmp(optarg, "fp8") == 0;
            break;
        case 'a':
            if (strcmp(optarg, "on") && strcmp(optarg, "off")) {
                fprintf(stderr, "run: --act-quant must be on or off\n");
                return 2;
            }
            mo.num.act_quant = strcmp(optarg, "on") == 0;
            break;
        case 'r':
            if (strcmp(optarg, "half") && strcmp(optarg, "interleaved")) {
                fprintf(stderr, "run: --indexer-rope must be half or interleaved\n");
                return 2;
            }
            mo.num.indexer_rope_interleaved = strcmp(optarg, "interleaved") == 0;
            break;
        case 'x': {
            char *end;
            long  v = strtol(optarg, &end, 10);

            if (*optarg == '\0' || *end != '\0' || v < 0 || v > 1024) {
                fprintf(stderr, "run: --index-share must be an integer "
                        "0..1024, not \"%s\"\n", optarg);
                return 2;
            }
            mo.num.index_share = (int)v;
            break;
        }
        case 'T': p.temperature = strtof(optarg, NULL); break;
        case 's': p.seed = strtoull(optarg, NULL, 0); break;
        case 'j': mo.n_threads = atoi(optarg); break;
        case 'b': mo.backend = optarg; break;
        case 'o': dump = optarg; break;
        case 'D': devices = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (model_dir == NULL || (prompt_file == NULL) == (prompt_text == NULL)
        || p.steps < 0)
    {
        usage(stderr);
        return 2;
    }
    if (mo.num.dense && mo.num.window) {
        fprintf(stderr, "run: --dense and --window exclude each other\n");
        return 2;
    }

    if (prompt_file) {
        size_t n;
        if (sg_read_i32(prompt_file, &prompt, &n, err, sizeof(err)) != 0) {
            fprintf(stderr, "run: %s\n", err);
            goto done;
        }
        p.n_prompt = (int)n;
    } else if (parse_ids(prompt_text, &prompt, &p.n_prompt) != 0) {
        fprintf(stderr, "run: --prompt: expected token ids separated by spaces\n");
        goto done;
    }
    if (teacher_file) {
        if (sg_read_i32(teacher_file, &teacher, &n_teacher, err, sizeof(err)) != 0) {
            fprintf(stderr, "run: %s\n", err);
            goto done;
        }
        if ((int)n_teacher < p.steps) {
            fprintf(stderr, "run: %s: %zu tokens, --steps %d needs %d\n",
                    teacher_file, n_teacher, p.steps, p.steps);
            goto done;
        }
        p.teacher = teacher;
    }

    if (devices) {
        int ids[SG_MAX_RANKS], n;

        n = sg_devices_parse(devices, ids, SG_MAX_RANKS, err, sizeof(err));
        if (n < 0 || sg_group_load(model_dir, &mo, ids, n, &g, err,
                                   sizeof(err)) != 0)
        {
            fprintf(stderr, "run: --devices: %s\n", err);
            goto done;
        }
        m = sg_group_model(g, 0);
        for (int r = 0; r < n; r++) {
            sg_model *rm = sg_group_model(g, r);
            printf("rank %d (device %d): routed experts %d-%d, %.1f MB of "
                   "weights prepared\n", r, ids[r], rm->expert_begin,
                   rm->expert_end - 1, rm->prepared_bytes / 1e6);
        }
    } else if (sg_model_load(model_dir, &mo, &m, err, sizeof(err)) != 0) {
        fprintf(stderr, "run: %s\n", err);
        goto done;
    }

    if (force_dir) {
        const sg_config *cf = &m->cfg;
        size_t L = cf->num_hidden_layers, P = p.n_prompt, N = p.steps;
        size_t K = cf->index_topk, k = cf->num_experts_per_tok;

        if (sg_read_i32_shape(force_dir, "prefill_experts_all.i32.bin", L * P * k,
                              &f_pex, err, sizeof(err)) != 0
            || sg_read_i32_shape(force_dir, "experts.i32.bin", (N + 1) * L * k,
                                 &f_ex, err, sizeof(err)) != 0)
        {
            fprintf(stderr, "run: %s\n", err);
            goto done;
        }
        if (!mo.num.dense
            && (sg_read_i32_shape(force_dir, "prefill_topk_all.i32.bin", L * P * K,
                                  &f_ptk, err, sizeof(err)) != 0
                || sg_read_i32_shape(force_dir, "topk.i32.bin", L * (N + 1) * K,
                                     &f_tk, err, sizeof(err)) != 0))
        {
            fprintf(stderr, "run: %s\n", err);
            goto done;
        }
        p.force_prefill_topk = f_ptk;
        p.force_topk = f_tk;
        p.force_prefill_experts = f_pex;
        p.force_experts = f_ex;
    }
    p.prompt = prompt;
    p.trace = dump != NULL;

    if ((g ? sg_protocol_run_group(g, 0, &p, &out, err, sizeof(err))
           : sg_protocol_run(m, &p, &out, err, sizeof(err))) != 0)
    {
        fprintf(stderr, "run: %s\n", err);
        goto done;
    }

    printf("tokens:");
    for (int i = 0; i <= p.steps; i++)
        printf(" %d", out.tokens[i]);
    printf("\nprefill: %d tokens in %.3f s (%.1f tok/s); decode: %d steps in "
           "%.3f s (%.2f tok/s)\n", p.n_prompt, out.prefill_seconds,
           p.n_prompt / (out.prefill_seconds > 0 ? out.prefill_seconds : 1e-9),
           p.steps, out.decode_seconds,
           p.steps / (out.decode_seconds > 0 ? out.decode_seconds : 1e-9));
    printf("cpu: prefill %.3f s, decode %.3f s\n", out.prefill_cpu_seconds,
           out.decode_cpu_seconds);

    if (dump && sg_dump_protocol(dump, &m->cfg, &p, &out, !mo.num.dense, err,
                                 sizeof(err)) != 0)
    {
        fprintf(stderr, "run: %s\n", err);
        sg_protocol_out_free(&out);
        goto done;
    }
    sg_protocol_out_free(&out);
    rc = 0;

done:
    if (g)
        sg_group_free(g);
    else
        sg_model_free(m);
    free(prompt);
    free(teacher);
    free(f_ptk);
    free(f_tk);
    free(f_pex);
    free(f_ex);
    return rc;
}
