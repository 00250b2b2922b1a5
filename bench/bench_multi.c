/*
 * The device group on host ranks (model/group.h, the host collective):
 *  1. what the MoE exchange costs by itself: steps in which no rank has a
 *     token, so each MoE layer is four collective calls and nothing else;
 *  2. the same total work on 1, 2, 3 and 4 ranks: each step computes the
 *     same prompt tokens, split evenly over the ranks, with the machine's
 *     threads split over the ranks too; wall and CPU time per step, and
 *     the time the ranks spent inside collective calls (waiting for the
 *     slowest rank included), measured by a wrapper around the collective;
 *  3. tokens/s of the engine (sparsegate.h) on one rank and on two ranks
 *     (devices "0-1") with the same threads, the same requests.
 * Prints a Markdown section on stdout.
 *
 * usage: bench_multi MODEL_DIR [--threads N] [--rows N] [--steps N]
 *                    [--requests N] [--prompt N] [--gen N]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <poll.h>

#include "bench_clock.h"
#include "model/group.h"
#include "sparsegate.h"

#define MAXN 4

/* ---- a collective that times its inner one ------------------------------ */

typedef struct {
    sg_coll  base;
    sg_coll *inner;
    double   in_coll[SG_MAX_RANKS];   /* seconds inside calls, per rank */
    long     calls[SG_MAX_RANKS];
} timed;

#define TIMED(c) ((timed *)(c))

static int
t_barrier(sg_coll *c, int r)
{
    double t0 = now();
    int    rc = TIMED(c)->inner->ops->barrier(TIMED(c)->inner, r);

    TIMED(c)->in_coll[r] += now() - t0;
    TIMED(c)->calls[r]++;
    return rc;
}

static int
t_all_gather(sg_coll *c, int r, const void *in, size_t bytes, void *out)
{
    double t0 = now();
    int    rc = TIMED(c)->inner->ops->all_gather(TIMED(c)->inner, r, in,
                                                 bytes, out);

    TIMED(c)->in_coll[r] += now() - t0;
    TIMED(c)->calls[r]++;
    return rc;
}

static int
t_all_to_all(sg_coll *c, int r, const void *send, const size_t *so,
    const size_t *sb, void *recv, const size_t *ro, const size_t *rb)
{
    double t0 = now();
    int    rc = TIMED(c)->inner->ops->all_to_all(TIMED(c)->inner, r, send, so,
                                                 sb, recv, ro, rb);

    TIMED(c)->in_coll[r] += now() - t0;
    TIMED(c)->calls[r]++;
    return rc;
}

static void
t_abort(sg_coll *c, const char *why)
{
    TIMED(c)->inner->ops->abort(TIMED(c)->inner, why);
}

static void
t_reset(sg_coll *c)
{
    TIMED(c)->inner->ops->reset(TIMED(c)->inner);
}

static void
t_destroy(sg_coll *c)
{
    (void)c;                     /* the group frees the inner one */
}

static const sg_coll_ops timed_ops = {
    t_barrier, t_all_gather, t_all_to_all, t_abort, t_reset, t_destroy,
};

/* ---- steps of the whole group -------------------------------------------- */

#define MAXSEQ 64

typedef struct {
    sg_group     *g;
    sg_kv_pool   *pool[MAXN];
    sg_seq        seq[MAXN][MAXSEQ];
    int32_t       blocks[MAXN][MAXSEQ][8];
    sg_batch_item items[MAXN][MAXSEQ];
    int32_t      *tokens;
    int           seqs, rows;      /* per rank: sequences of rows tokens */
    int           rc[MAXN];
    char          err[MAXN][256];
} step_ctx;

static void
rank_step(void *p, int r)
{
    step_ctx *x = p;
    sg_model *m = sg_group_model(x->g, r);

    for (int q = 0; q < x->seqs; q++) {
        sg_batch_item it = { &x->seq[r][q], x->tokens, x->rows, NULL, 1 };
        x->seq[r][q].n_tokens = 0;     /* the same prompt, again */
        x->items[r][q] = it;
    }
    x->rc[r] = sg_forward(m, x->pool[r], x->items[r], x->seqs, NULL,
                          x->err[r], 256);
}

typedef struct {
    double wall, cpu, coll;            /* per step, seconds */
} step_cost;

static int
measure(const char *dir, int n, int threads, int seqs, int rows, int steps,
    step_cost *out)
{
    sg_model_opts o;
    int           dev[MAXN] = { 0, 1, 2, 3 };
    step_ctx      x;
    timed         tc;
    char          err[512];
    double        t0, c0;
    int           moe = 0, rc = -1;

    memset(&x, 0, sizeof(x));
    sg_model_opts_default(&o);
    o.n_threads = threads;
    if (sg_group_load(dir, &o, dev, n, &x.g, err, sizeof(err)) != 0) {
        fprintf(stderr, "bench_multi: %s\n", err);
        return -1;
    }
    memset(&tc, 0, sizeof(tc));
    tc.base.ops = &timed_ops;
    tc.base.name = "timed";
    tc.base.n_ranks = n;
    tc.inner = sg_group_coll(x.g);
    x.seqs = seqs;
    x.rows = rows;
    x.tokens = malloc(sizeof(int32_t) * (rows ? rows : 1));
    for (int i = 0; i < rows; i++)
        x.tokens[i] = 2 + (i * 7919) % 1000;
    for (int r = 0; r < n; r++) {
        sg_model *m = sg_group_model(x.g, r);
        int       nb = (rows + SG_KV_BLOCK - 1) / SG_KV_BLOCK;

        if (n > 1)
            m->coll = &tc.base;
        x.pool[r] = sg_kv_pool_new(m->backend, &m->cfg,
                                   (nb ? nb : 1) * (seqs ? seqs : 1), 1);
        for (int q = 0; q < seqs; q++) {
            for (int b = 0; b < nb; b++)
                x.blocks[r][q][b] = q * nb + b;
            x.seq[r][q].blocks = x.blocks[r][q];
            x.seq[r][q].n_blocks = x.seq[r][q].cap_blocks = nb;
        }
    }
    for (int l = 0; l < sg_group_model(x.g, 0)->cfg.num_hidden_layers; l++)
        moe += sg_group_model(x.g, 0)->w.layers[l].is_moe;

    sg_group_run(x.g, rank_step, &x);          /* warm up */
    memset(tc.in_coll, 0, sizeof(tc.in_coll));
    t0 = now();
    c0 = cpu_seconds();
    for (int s = 0; s < steps; s++) {
        sg_group_run(x.g, rank_step, &x);
        for (int r = 0; r < n; r++) {
            if (x.rc[r] != 0) {
                fprintf(stderr, "bench_multi: rank %d: %s\n", r, x.err[r]);
                goto out;
            }
        }
    }
    out->wall = (now() - t0) / steps;
    out->cpu = (cpu_seconds() - c0) / steps;
    out->coll = 0;
    for (int r = 0; r < n; r++)
        out->coll += tc.in_coll[r] / n / steps;
    (void)moe;
    rc = moe;
out:
    for (int r = 0; r < n; r++) {
        sg_group_model(x.g, r)->coll = tc.inner;
        sg_kv_pool_free(x.pool[r]);
    }
    sg_group_free(x.g);
    free(x.tokens);
    return rc;
}

/* ---- the engine ------------------------------------------------------------ */

typedef struct {
    double seconds, cpu;
    long   generated, prompt;
} serve_cost;

static int
serve(const char *dir, const char *devices, int threads, int requests,
    int prompt, int gen, serve_cost *out)
{
    sg_engine_opts o;
    sg_engine     *e;
    sg_model_info  info;
    char           err[512];
    int32_t       *t = malloc(sizeof(int32_t) * prompt);
    int            done = 0;
    double         t0, c0;

    if (sg_model_info_load(dir, &info, err, sizeof(err)) != 0) {
        fprintf(stderr, "bench_multi: %s\n", err);
        return -1;
    }
    sg_engine_opts_default(&o);
    o.model_dir = dir;
    o.devices = devices;
    o.n_threads = threads;
    o.kv_bytes = (size_t)512 << 20;
    o.max_running = requests;
    if (sg_engine_start(&o, &e, err, sizeof(err)) != 0) {
        fprintf(stderr, "bench_multi: %s\n", err);
        return -1;
    }
    memset(out, 0, sizeof(*out));
    t0 = now();
    c0 = cpu_seconds();
    for (int q = 0; q < requests; q++) {
        for (int i = 0; i < prompt; i++)
            t[i] = 2 + (q * 131 + i * 7919) % (info.vocab_size - 2);
        sg_request r = { .prompt = t, .n_prompt = prompt, .max_tokens = gen,
                         .ignore_eos = 1 };
        if (sg_engine_submit(e, &r, NULL, err, sizeof(err)) != SG_OK) {
            fprintf(stderr, "bench_multi: %s\n", err);
            sg_engine_stop(e);
            free(t);
            return -1;
        }
    }
    while (done < requests) {
        struct pollfd p = { sg_engine_fd(e), POLLIN, 0 };
        sg_event      ev[64];
        int           k;

        poll(&p, 1, 100);
        while ((k = sg_engine_drain(e, ev, 64)) > 0) {
            for (int i = 0; i < k; i++) {
                if (ev[i].kind == SG_EV_TOKEN)
                    out->generated++;
                else {
                    done++;
                    out->prompt += ev[i].prompt_tokens;
                }
            }
        }
    }
    out->seconds = now() - t0;
    out->cpu = cpu_seconds() - c0;
    sg_engine_stop(e);
    free(t);
    return 0;
}

int
main(int argc, char **argv)
{
    const char *dir;
    int         threads = 2, rows = 240, steps = 8, requests = 16;
    int         prompt = 128, gen = 32, moe, decode_seqs = 24;
    double      load[3] = { 0 };
    step_cost   base, c;
    FILE       *f;

    if (argc < 2) {
        fprintf(stderr, "usage: bench_multi MODEL_DIR [--threads N] [--rows N] "
                "[--steps N] [--requests N] [--prompt N] [--gen N]\n");
        return 2;
    }
    dir = argv[1];
    for (int i = 2; i + 1 < argc; i += 2) {
        int v = atoi(argv[i + 1]);
        if (!strcmp(argv[i], "--threads")) threads = v;
        else if (!strcmp(argv[i], "--rows")) rows = v;
        else if (!strcmp(argv[i], "--steps")) steps = v;
        else if (!strcmp(argv[i], "--requests")) requests = v;
        else if (!strcmp(argv[i], "--prompt")) prompt = v;
        else if (!strcmp(argv[i], "--gen")) gen = v;
        else {
            fprintf(stderr, "bench_multi: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf %lf %lf", &load[0], &load[1], &load[2]) != 3)
            load[0] = -1;
        fclose(f);
    }
    printf("Load average at the start: %.2f %.2f %.2f (other jobs share "
           "these cores).\n\n", load[0], load[1], load[2]);

    printf("### The exchange alone: steps in which no rank has a token\n\n");
    printf("Each MoE layer is then two all_gathers and two all_to_alls of "
           "nothing: the host collective's floor (condition-variable "
           "barriers, no spinning).\n\n");
    printf("| ranks | per step | per MoE layer |\n|---:|---:|---:|\n");
    for (int n = 2; n <= MAXN; n++) {
        moe = measure(dir, n, n, 0, 0, steps * 8, &c);
        if (moe <= 0)
            return 1;
        printf("| %d | %.0f us | %.0f us |\n", n, c.wall * 1e6,
               c.wall * 1e6 / moe);
    }

    printf("\n### The same work on 1 to 4 ranks\n\n");
    printf("Each step runs the same tokens in all, split evenly over the "
           "ranks, with %d threads in all split over the ranks too (at least "
           "one each); %d steps after a warm-up.  Prefill: %d prompt tokens "
           "(one sequence per rank); decode-like: %d sequences of one token "
           "(the shape of a decode step: weights read for few rows).  In "
           "collectives: the mean over ranks of the time inside all_gather "
           "and all_to_all, waiting for the slowest rank included.\n\n",
           threads, steps, rows, decode_seqs);
    printf("| step | ranks | threads each | wall / step | CPU / step | in "
           "collectives | wall vs 1 rank | CPU vs 1 rank |\n"
           "|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for (int kind = 0; kind < 2; kind++) {
        for (int n = 1; n <= MAXN; n++) {
            int each = threads / n > 0 ? threads / n : 1;
            int seqs = kind ? decode_seqs / n : 1;
            int per = kind ? 1 : rows / n;
            if (measure(dir, n, threads, seqs, per, kind ? steps * 4 : steps,
                        &c) < 0)
                return 1;
            if (n == 1)
                base = c;
            printf("| %s | %d | %d | %.1f ms | %.1f ms | %.1f ms | %.2f | "
                   "%.2f |\n", kind ? "decode-like" : "prefill", n, each,
                   c.wall * 1e3, c.cpu * 1e3, c.coll * 1e3,
                   c.wall / base.wall, c.cpu / base.cpu);
        }
    }

    printf("\n### The engine on 1 and 2 ranks\n\n");
    printf("%d requests at once, %d-token prompts, %d tokens each, greedy; "
           "%d threads in all.\n\n", requests, prompt, gen, threads);
    printf("| devices | seconds | generated tok/s | all tok/s | CPU s |\n"
           "|---|---:|---:|---:|---:|\n");
    serve_cost s1, s2;
    if (serve(dir, NULL, threads, requests, prompt, gen, &s1) != 0
        || serve(dir, "0-1", threads, requests, prompt, gen, &s2) != 0)
    {
        return 1;
    }
    printf("| one | %.2f | %.1f | %.1f | %.2f |\n", s1.seconds,
           s1.generated / s1.seconds, (s1.generated + s1.prompt) / s1.seconds,
           s1.cpu);
    printf("| 0-1 | %.2f | %.1f | %.1f | %.2f |\n", s2.seconds,
           s2.generated / s2.seconds, (s2.generated + s2.prompt) / s2.seconds,
           s2.cpu);
    printf("\nTwo ranks / one: %.2fx the tokens/s, %.2fx the CPU time.\n",
           s1.seconds / s2.seconds, s2.cpu / s1.cpu);
    return 0;
}
