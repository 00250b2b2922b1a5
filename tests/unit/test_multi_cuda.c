/*
 * The device group on several GPUs (tests/gpu/run.sh runs it where there
 * are two or more):
 *  - the NCCL collective (kernels/cuda_nccl.cu): all-to-all of random
 *    sizes between device buffers of every rank, the bytes checked; a
 *    receiver expecting another size aborts every rank;
 *  - the fixtures' strict run (bf16, exact cache) on every rank of groups
 *    of 2 to 4 GPUs against one GPU: the same tokens, indexer top-k sets
 *    and routing, logits within 1e-3.  Not bitwise: the CUDA backend is
 *    not batch invariant (cuBLAS picks its kernels by the batch's shape),
 *    and in a group a token's experts run in another company of rows.
 * With fewer than two GPUs, or under the sanitizers (whose shadow memory
 * the CUDA driver cannot share), every check is a SKIP line.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "fixture_runs.h"
#include "model/group.h"
#include "offline/protocol.h"

#define MAXG 4

static const char *const checks[] = { "nccl-all-to-all", "nccl-mismatch",
                                      "fixture-on-groups" };

/* the NCCL collective of model/group.c, from libsparsegate_cuda.so */
sg_coll *sg_coll_nccl_new(sg_backend **b, int n, sg_coll *host, char *err,
    int errlen);

typedef struct {
    sg_coll    *c;
    sg_backend *b[MAXG];
    int         n;
    size_t      bytes[MAXG][MAXG];      /* floats from s to d */
    int         mismatch;
    int         rc[MAXG], bad[MAXG];
} nccl_ctx;

static float
val(int s, int d, size_t i)
{
    return (float)(s * 100000 + d * 1000) + (float)(i % 997);
}

static void
nccl_rank(void *p, int r)
{
    nccl_ctx   *x = p;
    sg_backend *b = x->b[r];
    size_t      so[MAXG], sb[MAXG], ro[MAXG], rb[MAXG], ns = 0, nr = 0;
    float      *hs, *hr, *ds, *dr;
    char        err[256];

    for (int d = 0; d < x->n; d++) {
        so[d] = ns * 4;
        sb[d] = x->bytes[r][d] * 4;
        ns += x->bytes[r][d];
        ro[d] = nr * 4;
        rb[d] = x->bytes[d][r] * 4 + (x->mismatch && r == 1 && d == 0 ? 4 : 0);
        nr += x->bytes[d][r] + 1;
    }
    hs = malloc(4 * (ns + 1));
    hr = malloc(4 * (nr + 1));
    ds = b->ops->alloc(b, 4 * (ns + 1));
    dr = b->ops->alloc(b, 4 * (nr + 1));
    for (int d = 0; d < x->n; d++)
        for (size_t i = 0; i < x->bytes[r][d]; i++)
            hs[so[d] / 4 + i] = val(r, d, i);
    b->ops->upload(b, ds, hs, 4 * ns);
    x->rc[r] = x->c->ops->all_to_all(x->c, r, ds, so, sb, dr, ro, rb);
    if (x->rc[r] == 0 && b->ops->sync(b, err, sizeof(err)) == 0) {
        b->ops->download(b, hr, dr, 4 * nr);
        for (int s = 0; s < x->n; s++)
            for (size_t i = 0; i < x->bytes[s][r]; i++)
                x->bad[r] += hr[ro[s] / 4 + i] != val(s, r, i);
    }
    b->ops->free(b, ds);
    b->ops->free(b, dr);
    free(hs);
    free(hr);
}

static void
test_nccl(int n_gpu)
{
    nccl_ctx x;
    char     err[256];
    int      ok = 1;

    memset(&x, 0, sizeof(x));
    x.n = n_gpu > MAXG ? MAXG : n_gpu;
    for (int r = 0; r < x.n; r++)
        x.b[r] = sg_backend_cuda_new(r, err, sizeof(err));
    x.c = sg_coll_nccl_new(x.b, x.n, sg_coll_host_new(x.n), err, sizeof(err));
    if (x.c == NULL) {
        CHECK(0, "multi-gpu/nccl-all-to-all", "%s", err);
        goto out;
    }
    for (int round = 0; round < 10 && ok; round++) {
        for (int s = 0; s < x.n; s++)
            for (int d = 0; d < x.n; d++)
                x.bytes[s][d] = check_rand32() % 4 ? check_rand32() % 70000 : 0;
        memset(x.rc, 0, sizeof(x.rc));
        memset(x.bad, 0, sizeof(x.bad));
        check_on_threads(x.n, nccl_rank, &x);
        for (int r = 0; r < x.n; r++)
            ok &= x.rc[r] == 0 && x.bad[r] == 0;
    }
    CHECK(ok, "multi-gpu/nccl-all-to-all", "a rank failed or got wrong "
          "bytes (%s)", x.c->why);
    x.mismatch = 1;
    check_on_threads(x.n, nccl_rank, &x);
    ok = 1;
    for (int r = 0; r < x.n; r++)
        ok &= x.rc[r] == -1;
    CHECK(ok && strstr(x.c->why, "expects"), "multi-gpu/nccl-mismatch",
          "why '%s'", x.c->why);
    x.c->ops->destroy(x.c);
out:
    for (int r = 0; r < x.n; r++)
        if (x.b[r])
            x.b[r]->ops->destroy(x.b[r]);
}

static void
test_fixture(int n_gpu)
{
    char            dir[1024], err[512], name[64];
    size_t          np, nt;
    int32_t        *prompt = fixture_file("bf16", NULL, "prompt.i32.bin", &np);
    int32_t        *tokens = fixture_file("bf16", "fix_nokvq_sparse",
                                          "tokens.i32.bin", &nt);
    sg_model_opts   o;
    sg_model       *one = NULL;
    sg_protocol     p = { 0 };
    sg_protocol_out ref;

    snprintf(dir, sizeof(dir), "%s/tiny-v32/bf16", check_fixtures_dir());
    sg_model_opts_default(&o);
    o.backend = "cuda";
    o.num.kv_fp8 = 0;
    if (!prompt || !tokens
        || sg_model_load(dir, &o, &one, err, sizeof(err)) != 0)
    {
        CHECK(0, "multi-gpu/fixture-on-groups", "one GPU: %s", err);
        goto out;
    }
    p.prompt = prompt;
    p.n_prompt = (int)np;
    p.steps = (int)nt - 1;
    p.teacher = tokens;
    p.trace = 1;
    if (sg_protocol_run(one, &p, &ref, err, sizeof(err)) != 0) {
        CHECK(0, "multi-gpu/fixture-on-groups", "one GPU: %s", err);
        goto out;
    }
    const sg_config *c = &one->cfg;
    size_t V = c->vocab_size, L = c->num_hidden_layers, K = c->index_topk;
    size_t k = c->num_experts_per_tok, P = np, N = nt - 1;

    for (int n = 2; n <= n_gpu && n <= MAXG; n++) {
        int       dev[MAXG] = { 0, 1, 2, 3 };
        sg_group *g = NULL;

        if (sg_group_load(dir, &o, dev, n, &g, err, sizeof(err)) != 0) {
            snprintf(name, sizeof(name), "multi-gpu/fixture-N%d", n);
            CHECK(0, name, "%s", err);
            continue;
        }
        for (int r = 0; r < n; r++) {
            sg_protocol_out out;
            snprintf(name, sizeof(name), "multi-gpu/fixture-N%d-rank%d", n, r);
            if (sg_protocol_run_group(g, r, &p, &out, err, sizeof(err)) != 0) {
                CHECK(0, name, "%s", err);
                continue;
            }
            double dp = check_max_abs(out.prefill_logits, ref.prefill_logits, V);
            double dd = check_max_abs(out.decode_logits, ref.decode_logits,
                                      N * V);
            CHECK(dp <= 1e-3 && dd <= 1e-3
                  && !memcmp(out.tokens, ref.tokens, 4 * (N + 1))
                  && !memcmp(out.tokens, tokens, 4 * (N + 1))
                  && !memcmp(out.prefill_topk_all, ref.prefill_topk_all,
                             4 * L * P * K)
                  && !memcmp(out.topk, ref.topk, 4 * L * (N + 1) * K)
                  && !memcmp(out.prefill_experts_all, ref.prefill_experts_all,
                             4 * L * P * k)
                  && !memcmp(out.experts, ref.experts, 4 * (N + 1) * L * k),
                  name, "logits max |d| prefill %.2e decode %.2e, or tokens, "
                  "top-k sets or routing differ", dp, dd);
            printf("# %s: logits max |d| vs one GPU %.2e / %.2e\n", name, dp,
                   dd);
            sg_protocol_out_free(&out);
        }
        sg_group_free(g);
    }
    sg_protocol_out_free(&ref);
out:
    sg_model_free(one);
    free(prompt);
    free(tokens);
}

int
main(void)
{
    char        err[512] = "";
    int         n_gpu = 0;
    const char *why = NULL;

    check_seed_from_env();
    if (getenv("SG_SANITIZED")) {
        why = "not under the sanitizers";
    } else {
        for (int d = 0; d < 16; d++) {
            sg_backend *b = sg_backend_cuda_new(d, err, sizeof(err));
            if (b == NULL)
                break;
            b->ops->destroy(b);
            n_gpu++;
        }
        if (n_gpu < 2)
            why = n_gpu ? "one CUDA device" : err;
    }
    if (why) {
        if (n_gpu == 0 && !getenv("SG_SANITIZED")) {
            /* a group of GPUs that cannot start says why, cleanly */
            char        dir[1024], e2[512] = "";
            int         dev[2] = { 0, 1 };
            sg_group   *g = NULL;
            sg_model_opts o;

            sg_model_opts_default(&o);
            o.backend = "cuda";
            snprintf(dir, sizeof(dir), "%s/tiny-v32/bf16",
                     check_fixtures_dir());
            CHECK(sg_group_load(dir, &o, dev, 2, &g, e2, sizeof(e2)) != 0
                  && strstr(e2, "rank 0 (device 0)")
                  && (strstr(e2, "CUDA") || strstr(e2, "cuda")),
                  "multi-gpu/no-device-message", "'%s'", e2);
        }
        for (size_t i = 0; i < sizeof(checks) / sizeof(*checks); i++)
            printf("SKIP multi-gpu/%s: %s\n", checks[i], why);
        return check_finish();
    }
    printf("# %d CUDA devices\n", n_gpu);
    test_nccl(n_gpu);
    test_fixture(n_gpu);
    return check_finish();
}
