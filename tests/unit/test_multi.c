/*
 * One model over a device group of N host ranks (simulated devices, the
 * host collective), held to the single-device engine BITWISE:
 *  - the host collective: all_gather, all_to_all with random sizes, abort
 *    waking a rank that waits, a size mismatch detected;
 *  - device lists;
 *  - each rank prepares its 1/N of the routed experts and the replicated
 *    rest, never the whole model (bytes counted);
 *  - the fixtures' reference runs (bf16 strict, fp8 with decisions forced)
 *    on any rank of groups of 1-4, other ranks running their own requests
 *    or empty steps alongside: logits, tokens, hidden states, top-k sets,
 *    index scores and routing equal to the single device's bits;
 *  - a random FP8 model with several MoE layers: requests spread over the
 *    ranks at random, prompts cut in random chunks, decodes interleaved:
 *    every logit, top-k set, expert choice and weight equal to each
 *    request run alone on one device;
 *  - a failing rank (bad batch) fails the step on every rank, nobody
 *    hangs, and the next step works.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "fixture_runs.h"
#include "model/group.h"
#include "offline/mkmodel.h"
#include "offline/protocol.h"

#define MAXN 4

static int sanitized;

/* ---- the host collective ------------------------------------------------ */

typedef struct {
    sg_coll *c;
    int      n;
    size_t   bytes[MAXN][MAXN];     /* from s to d, in floats */
    int      bad[MAXN];
    int      aborter;               /* rank that aborts, or -1 */
    int      rc[MAXN];
} coll_ctx;

static float
val(int s, int d, size_t i)
{
    return (float)(s * 1000000 + d * 10000) + (float)(i % 9973);
}

static void
coll_rank(void *p, int r)
{
    coll_ctx *x = p;
    size_t    so[MAXN], sb[MAXN], ro[MAXN], rb[MAXN], ns = 0, nr = 0;
    float    *send, *recv;
    int32_t   mine[3] = { r, r * 7, -r }, all[MAXN * 3];

    if (x->aborter == r) {
        usleep(20000);              /* the others are waiting by now */
        x->c->ops->abort(x->c, "rank test abort");
        x->rc[r] = -1;
        return;
    }
    if (x->c->ops->all_gather(x->c, r, mine, sizeof(mine), all) != 0) {
        x->rc[r] = -1;
        return;
    }
    for (int s = 0; s < x->n; s++) {
        if (all[s * 3] != s || all[s * 3 + 1] != s * 7 || all[s * 3 + 2] != -s)
            x->bad[r]++;
    }
    for (int d = 0; d < x->n; d++) {
        so[d] = ns * sizeof(float);
        sb[d] = x->bytes[r][d] * sizeof(float);
        ns += x->bytes[r][d];
        ro[d] = nr * sizeof(float);
        rb[d] = x->bytes[d][r] * sizeof(float);
        nr += x->bytes[d][r];
    }
    send = malloc(sizeof(float) * (ns + 1));
    recv = malloc(sizeof(float) * (nr + 1));
    for (int d = 0; d < x->n; d++)
        for (size_t i = 0; i < x->bytes[r][d]; i++)
            send[so[d] / sizeof(float) + i] = val(r, d, i);
    x->rc[r] = x->c->ops->all_to_all(x->c, r, send, so, sb, recv, ro, rb);
    for (int s = 0; x->rc[r] == 0 && s < x->n; s++)
        for (size_t i = 0; i < x->bytes[s][r]; i++)
            if (recv[ro[s] / sizeof(float) + i] != val(s, r, i))
                x->bad[r]++;
    free(send);
    free(recv);
}

static void
test_coll_host(void)
{
    for (int n = 1; n <= MAXN; n++) {
        for (int round = 0; round < 20; round++) {
            coll_ctx x;
            int      bad = 0, fail = 0;

            memset(&x, 0, sizeof(x));
            x.c = sg_coll_host_new(n);
            x.n = n;
            x.aborter = -1;
            for (int s = 0; s < n; s++)
                for (int d = 0; d < n; d++)
                    x.bytes[s][d] = check_rand32() % 4 == 0 ? 0
                                    : check_rand32() % 3000;
            check_on_threads(n, coll_rank, &x);
            for (int r = 0; r < n; r++) {
                bad += x.bad[r];
                fail += x.rc[r] != 0;
            }
            x.c->ops->destroy(x.c);
            if (bad || fail) {
                CHECK(0, "coll/all-to-all", "n=%d round %d: %d wrong values, "
                      "%d failed ranks", n, round, bad, fail);
                return;
            }
        }
    }
    CHECK(1, "coll/all-to-all", " ");

    /* an abort wakes the ranks blocked in an exchange */
    {
        coll_ctx x;
        int      ok = 1;

        memset(&x, 0, sizeof(x));
        x.c = sg_coll_host_new(3);
        x.n = 3;
        x.aborter = 1;
        check_on_threads(3, coll_rank, &x);
        for (int r = 0; r < 3; r++)
            ok &= x.rc[r] == -1;
        CHECK(ok && strstr(x.c->why, "rank test abort"), "coll/abort",
              "rc %d %d %d, why '%s'", x.rc[0], x.rc[1], x.rc[2], x.c->why);
        /* after reset the group works again */
        x.c->ops->reset(x.c);
        x.aborter = -1;
        memset(x.rc, 0, sizeof(x.rc));
        x.bytes[0][2] = 5;
        check_on_threads(3, coll_rank, &x);
        CHECK(x.rc[0] == 0 && x.rc[1] == 0 && x.rc[2] == 0
              && x.bad[0] + x.bad[1] + x.bad[2] == 0, "coll/reset",
              "rc %d %d %d", x.rc[0], x.rc[1], x.rc[2]);
        x.c->ops->destroy(x.c);
    }
}

/* A receiver expecting other sizes than were sent: the group aborts. */
typedef struct {
    sg_coll *c;
    int      rc[2];
} mis_ctx;

static void
mismatch_rank(void *p, int r)
{
    mis_ctx *x = p;
    float    send[8] = { 0 }, recv[8];
    size_t   so[2] = { 0, 0 }, sb[2] = { 0, 8 }, ro[2] = { 0, 0 };
    size_t   rb[2] = { 0, r == 1 ? 4 : 0 };

    if (r == 1)
        sb[1] = 0;
    x->rc[r] = x->c->ops->all_to_all(x->c, r, send, so, sb, recv, ro, rb);
}

static void
test_coll_mismatch(void)
{
    mis_ctx x = { sg_coll_host_new(2), { 0, 0 } };

    check_on_threads(2, mismatch_rank, &x);
    CHECK(x.rc[0] == -1 && x.rc[1] == -1 && strstr(x.c->why, "expects"),
          "coll/size-mismatch", "rc %d %d why '%s'", x.rc[0], x.rc[1],
          x.c->why);
    x.c->ops->destroy(x.c);
}

/* ---- device lists and expert ranges ------------------------------------ */

static void
test_devices(void)
{
    int  ids[16], n;
    char err[256];

    n = sg_devices_parse("0-7", ids, 16, err, sizeof(err));
    CHECK(n == 8 && ids[0] == 0 && ids[7] == 7, "devices/range", "n=%d", n);
    n = sg_devices_parse("1,3,5-6", ids, 16, err, sizeof(err));
    CHECK(n == 4 && ids[0] == 1 && ids[1] == 3 && ids[2] == 5 && ids[3] == 6,
          "devices/list", "n=%d", n);
    n = sg_devices_parse("2", ids, 16, err, sizeof(err));
    CHECK(n == 1 && ids[0] == 2, "devices/one", "n=%d", n);
    static const char *bad[] = { "", "a", "3-1", "1,1", "2,1", "0-", "-1",
                                 "0,,1", "0 1", "0-99999", "1-2-3", NULL };
    int all_bad = 1;
    for (int i = 0; bad[i]; i++) {
        err[0] = 0;
        if (sg_devices_parse(bad[i], ids, 16, err, sizeof(err)) >= 0
            || strstr(err, "device list") == NULL)
        {
            CHECK(0, "devices/bad", "\"%s\" accepted (%s)", bad[i], err);
            all_bad = 0;
        }
    }
    CHECK(all_bad, "devices/bad-refused", " ");
    n = sg_devices_parse("0-15", ids, 8, err, sizeof(err));
    CHECK(n < 0 && strstr(err, "more than 8"), "devices/too-many", "%s", err);

    /* owner and first agree, for every E and N */
    int ok = 1;
    for (int E = 1; E <= 64; E++)
        for (int N = 1; N <= E && N <= 16; N++)
            for (int e = 0; e < E; e++) {
                int r = sg_expert_owner(e, N, E);
                if (r < 0 || r >= N || sg_expert_first(r, N, E) > e
                    || sg_expert_first(r + 1, N, E) <= e)
                    ok = 0;
            }
    CHECK(ok, "devices/expert-ranges", "owner and first disagree");
}

/* ---- models ------------------------------------------------------------- */

static char fixture_dir[1024];

static sg_model_opts
opts_for(int kv_fp8, int act_quant)
{
    sg_model_opts o;

    sg_model_opts_default(&o);
    o.num.kv_fp8 = kv_fp8;
    o.num.act_quant = act_quant;
    o.n_threads = 1;
    return o;
}

static sg_group *
group_load(const char *dir, const sg_model_opts *o, int n)
{
    int       dev[MAXN] = { 0, 1, 2, 3 };
    sg_group *g = NULL;
    char      err[512];

    if (sg_group_load(dir, o, dev, n, &g, err, sizeof(err)) != 0) {
        CHECK(0, "group/load", "%s (N=%d): %s", dir, n, err);
        return NULL;
    }
    return g;
}

static void
add_expert_bytes(void *ctx, sg_tensor *t, int expert)
{
    if (expert >= 0 && t->data)
        *(size_t *)ctx += sg_tensor_bytes(t);
}

/* The routed experts' bytes a model holds. */
static size_t
expert_bytes(sg_model *m)
{
    size_t n = 0;

    sg_weights_visit(&m->w, &m->cfg, add_expert_bytes, &n);
    return n;
}

static void
test_rank_bytes(const char *dir, sg_model *single)
{
    size_t all = single->prepared_bytes, ex = expert_bytes(single);
    size_t rest = all - ex;

    CHECK(ex > 0 && ex < all, "bytes/single", "experts %zu of %zu", ex, all);
    for (int n = 2; n <= MAXN; n++) {
        sg_model_opts o = opts_for(1, 1);
        sg_group     *g = group_load(dir, &o, n);
        size_t        sum_ex = 0;
        int           ok = 1;
        char          name[64];

        if (g == NULL)
            return;
        for (int r = 0; r < n; r++) {
            sg_model *m = sg_group_model(g, r);
            size_t    e = expert_bytes(m);
            int       k = m->expert_end - m->expert_begin;

            sum_ex += e;
            /* replicated part whole, experts exactly its share */
            ok &= m->prepared_bytes == rest + e;
            ok &= m->prepared_bytes < all;
            ok &= e * (size_t)single->cfg.n_routed_experts == ex * (size_t)k;
            printf("# N=%d rank %d: experts %d-%d, %zu of %zu bytes\n", n, r,
                   m->expert_begin, m->expert_end - 1, m->prepared_bytes,
                   all);
        }
        snprintf(name, sizeof(name), "bytes/N%d", n);
        CHECK(ok && sum_ex == ex, name, "experts over ranks %zu, single %zu",
              sum_ex, ex);
        sg_group_free(g);
    }
}

/* ---- requests on ranks --------------------------------------------------- */

/* A rank's own request beside the one under test: a random prompt, then
 * decodes, one forward call per step (or an empty step). */
typedef struct {
    sg_kv_pool *pool;
    sg_seq      seq;
    int32_t     blocks[16];
    int32_t     tok[256];
    int         n_prompt;
    int         empty;          /* 1: empty steps only */
} company;

static int
company_step(sg_model *m, company *c, int step, char *err, int errlen)
{
    sg_batch_item it;

    if (c->empty)
        return sg_forward(m, NULL, NULL, 0, NULL, err, errlen);
    memset(&it, 0, sizeof(it));
    it.seq = &c->seq;
    if (step == 0) {
        it.tokens = c->tok;
        it.n_tokens = c->n_prompt;
        it.prompt = 1;
    } else {
        it.tokens = c->tok + c->n_prompt + step - 1;
        it.n_tokens = 1;
    }
    return sg_forward(m, c->pool, &it, 1, NULL, err, errlen);
}

static void
company_init(company *c, sg_model *m, int empty)
{
    memset(c, 0, sizeof(*c));
    c->empty = empty;
    if (empty)
        return;
    c->n_prompt = 10 + check_rand32() % 150;
    for (int i = 0; i < 256; i++)
        c->tok[i] = check_rand32() % m->cfg.vocab_size;
    c->pool = sg_kv_pool_new(m->backend, &m->cfg, 16, m->num.kv_fp8);
    for (int i = 0; i < 16; i++)
        c->blocks[i] = i;
    c->seq.blocks = c->blocks;
    c->seq.n_blocks = c->seq.cap_blocks = 16;
}

/* The fixture protocol on one rank, company on the others. */
typedef struct {
    sg_group          *g;
    int                prot_rank;
    const sg_protocol *p;
    sg_protocol_out    out;
    company            co[MAXN];
    int                rc[MAXN];
    char               err[MAXN][256];
} fx_ctx;

static void
fx_rank(void *p, int r)
{
    fx_ctx   *x = p;
    sg_model *m = sg_group_model(x->g, r);

    if (r == x->prot_rank) {
        x->rc[r] = sg_protocol_run(m, x->p, &x->out, x->err[r], 256);
        return;
    }
    for (int s = 0; s <= x->p->steps; s++) {
        if (company_step(m, &x->co[r], s, x->err[r], 256) != 0) {
            x->rc[r] = -1;
            return;
        }
    }
}

#define SAME(a, b, n) \
    ((a) == NULL ? (b) == NULL : (b) != NULL && memcmp((a), (b), (n)) == 0)

static int
same_out(const sg_protocol_out *a, const sg_protocol_out *b, const sg_config *c,
    int P, int N, char *why, int whylen)
{
    size_t V = c->vocab_size, L = c->num_hidden_layers, K = c->index_topk;
    size_t k = c->num_experts_per_tok, D = c->hidden_size;
    const char *what = NULL;

    if (!SAME(a->prefill_logits, b->prefill_logits, 4 * V))
        what = "prefill logits";
    else if (!SAME(a->decode_logits, b->decode_logits, 4 * V * N))
        what = "decode logits";
    else if (!SAME(a->tokens, b->tokens, 4 * (size_t)(N + 1)))
        what = "tokens";
    else if (!SAME(a->hidden, b->hidden, 4 * (N + 1) * (L + 1) * D))
        what = "hidden states";
    else if (!SAME(a->experts, b->experts, 4 * (N + 1) * L * k))
        what = "experts";
    else if (!SAME(a->expert_weights, b->expert_weights, 4 * (N + 1) * L * k))
        what = "expert weights";
    else if (!SAME(a->prefill_experts_all, b->prefill_experts_all,
                   4 * L * P * k))
        what = "prefill routing";
    else if (!SAME(a->topk, b->topk, 4 * L * (N + 1) * K))
        what = "top-k sets";
    else if (!SAME(a->prefill_topk_all, b->prefill_topk_all, 4 * L * P * K))
        what = "prefill top-k sets";
    else if (!SAME(a->index_scores, b->index_scores,
                   4 * L * (N + 1) * (P + N)))
        what = "index scores";
    if (what)
        snprintf(why, whylen, "%s differ from the single device's", what);
    return what == NULL;
}

/*
 * The fixture protocol p on the single model, then on every rank of groups
 * of 1..MAXN with company: bitwise the same outputs.
 */
static void
fixture_on_groups(const char *tag, const char *dir, const sg_model_opts *o,
    sg_model *single, const sg_protocol *p)
{
    sg_protocol_out ref;
    char            err[512];

    if (sg_protocol_run(single, p, &ref, err, sizeof(err)) != 0) {
        CHECK(0, check_named(tag, "single"), "%s", err);
        return;
    }
    for (int n = 1; n <= MAXN; n++) {
        sg_group *g = group_load(dir, o, n);

        if (g == NULL)
            break;
        for (int pr = 0; pr < n; pr++) {
            fx_ctx x;
            char   name[96], why[160];
            int    ok = 1;

            if (sanitized && pr != n - 1)
                continue;
            memset(&x, 0, sizeof(x));
            x.g = g;
            x.prot_rank = pr;
            x.p = p;
            for (int r = 0; r < n; r++)
                if (r != pr)
                    company_init(&x.co[r], sg_group_model(g, r),
                                 check_rand32() % 3 == 0);
            sg_group_run(g, fx_rank, &x);
            snprintf(name, sizeof(name), "%s/N%d-rank%d", tag, n, pr);
            for (int r = 0; r < n; r++) {
                if (x.rc[r] != 0) {
                    CHECK(0, name, "rank %d: %s", r, x.err[r]);
                    ok = 0;
                }
            }
            if (ok) {
                why[0] = 0;
                ok = same_out(&x.out, &ref, &single->cfg, p->n_prompt,
                              p->steps, why, sizeof(why));
                CHECK(ok, name, "%s", why);
            }
            sg_protocol_out_free(&x.out);
            for (int r = 0; r < n; r++)
                sg_kv_pool_free(x.co[r].pool);
        }
        sg_group_free(g);
    }
    sg_protocol_out_free(&ref);
}

static void
test_fixtures(void)
{
    size_t   np, nt;
    int32_t *prompt, *tokens, *ptk, *tk, *pex, *ex;
    sg_model *single = NULL;
    sg_model_opts o;
    char     err[512];

    /* bf16 strict run: free decisions, teacher-forced tokens */
    snprintf(fixture_dir, sizeof(fixture_dir), "%s/tiny-v32/bf16",
             check_fixtures_dir());
    prompt = fixture_file("bf16", NULL, "prompt.i32.bin", &np);
    tokens = fixture_file("bf16", "fix_nokvq_sparse", "tokens.i32.bin", &nt);
    o = opts_for(0, 1);
    if (!prompt || !tokens
        || sg_model_load(fixture_dir, &o, &single, err, sizeof(err)) != 0)
    {
        CHECK(0, "fixture/load", "fixtures under %s", check_fixtures_dir());
        free(prompt);
        free(tokens);
        return;
    }
    {
        sg_protocol p = { 0 };
        sg_protocol_out chk;

        p.prompt = prompt;
        p.n_prompt = (int)np;
        p.steps = (int)nt - 1;
        p.teacher = tokens;
        p.trace = 1;
        fixture_on_groups("bf16-strict", fixture_dir, &o, single, &p);
        /* and the single device still meets the reference */
        if (sg_protocol_run(single, &p, &chk, err, sizeof(err)) == 0) {
            CHECK(memcmp(chk.tokens, tokens, 4 * nt) == 0,
                  "bf16-strict/reference-tokens", "argmax differs from the "
                  "reference");
            sg_protocol_out_free(&chk);
        }
    }
    test_rank_bytes(fixture_dir, single);
    sg_model_free(single);
    free(prompt);
    free(tokens);

    /* fp8 run (FP8 KV, act_quant) with the reference's decisions forced */
    snprintf(fixture_dir, sizeof(fixture_dir), "%s/tiny-v32/fp8",
             check_fixtures_dir());
    prompt = fixture_file("fp8", NULL, "prompt.i32.bin", &np);
    tokens = fixture_file("fp8", "fix_sparse", "tokens.i32.bin", &nt);
    ptk = fixture_file("fp8", "fix_sparse", "prefill_topk_all.i32.bin", NULL);
    tk = fixture_file("fp8", "fix_sparse", "topk.i32.bin", NULL);
    pex = fixture_file("fp8", "fix_sparse", "prefill_experts_all.i32.bin",
                       NULL);
    ex = fixture_file("fp8", "fix_sparse", "experts.i32.bin", NULL);
    o = opts_for(1, 1);
    single = NULL;
    if (prompt && tokens && ptk && tk && pex && ex
        && sg_model_load(fixture_dir, &o, &single, err, sizeof(err)) == 0)
    {
        sg_protocol p = { 0 };

        p.prompt = prompt;
        p.n_prompt = (int)np;
        p.steps = (int)nt - 1;
        p.teacher = tokens;
        p.trace = 1;
        p.force_prefill_topk = ptk;
        p.force_topk = tk;
        p.force_prefill_experts = pex;
        p.force_experts = ex;
        fixture_on_groups("fp8-forced", fixture_dir, &o, single, &p);
    } else {
        CHECK(0, "fp8-forced/load", "fixtures under %s", check_fixtures_dir());
    }
    sg_model_free(single);
    free(prompt); free(tokens); free(ptk); free(tk); free(pex); free(ex);
}

/* ---- a random model, requests spread over ranks -------------------------- */

#define MAXS   8
#define MAXP   200
#define MAXD   6
#define NBMAX  ((MAXP + MAXD + SG_KV_BLOCK - 1) / SG_KV_BLOCK)

typedef struct {
    int      P, D, rank;
    int32_t  tok[MAXP + MAXD];      /* prompt, then the decode tokens fed */
    sg_seq   seq;
    int32_t  blocks[NBMAX];
    float   *logits;                /* [D + 1][V] */
    int32_t *ex;                    /* [P + D][L][k] */
    float   *ew;
    int32_t *tk;                    /* [P + D][L][K] */
} fseq;

typedef struct {
    int      n_items;
    int      seq_of[MAXS];
    int      pos0[MAXS];
    sg_batch_item items[MAXS];
    sg_trace tr;
    int      rc;
    char     err[256];
} rank_batch;

typedef struct {
    sg_group   *g;
    sg_kv_pool *pool[MAXN];
    rank_batch  b[MAXN];
} step_ctx;

static void
step_rank(void *p, int r)
{
    step_ctx   *x = p;
    rank_batch *b = &x->b[r];

    /* alone, a device with nothing to run has no step to take */
    if (b->n_items == 0 && sg_group_size(x->g) == 1) {
        b->rc = 0;
        return;
    }
    b->rc = sg_forward(sg_group_model(x->g, r), x->pool[r], b->items,
                       b->n_items, &b->tr, b->err, sizeof(b->err));
}

static void
fseq_alloc(fseq *q, const sg_config *c)
{
    size_t L = c->num_hidden_layers, k = c->num_experts_per_tok;
    size_t K = c->index_topk, rows = q->P + q->D;

    q->logits = calloc((size_t)(q->D + 1) * c->vocab_size, sizeof(float));
    q->ex = calloc(rows * L * k, sizeof(int32_t));
    q->ew = calloc(rows * L * k, sizeof(float));
    q->tk = calloc(rows * L * K, sizeof(int32_t));
}

static void
fseq_free(fseq *q)
{
    free(q->logits);
    free(q->ex);
    free(q->ew);
    free(q->tk);
}

static void
trace_alloc(sg_trace *tr, const sg_config *c, int T)
{
    size_t L = c->num_hidden_layers, k = c->num_experts_per_tok;

    memset(tr, 0, sizeof(*tr));
    tr->out_experts = malloc(sizeof(int32_t) * L * T * k);
    tr->out_expert_weights = malloc(sizeof(float) * L * T * k);
    tr->out_topk = malloc(sizeof(int32_t) * L * T * c->index_topk);
}

static void
trace_free(sg_trace *tr)
{
    free(tr->out_experts);
    free(tr->out_expert_weights);
    free(tr->out_topk);
}

/* Row `row` of a T-row call's trace is position pos of q. */
static void
trace_keep(const sg_trace *tr, const sg_config *c, int T, int row, fseq *q,
    int pos)
{
    int L = c->num_hidden_layers, k = c->num_experts_per_tok;
    int K = c->index_topk;

    for (int l = 0; l < L; l++) {
        memcpy(q->ex + ((size_t)pos * L + l) * k,
               tr->out_experts + ((size_t)l * T + row) * k, 4 * k);
        memcpy(q->ew + ((size_t)pos * L + l) * k,
               tr->out_expert_weights + ((size_t)l * T + row) * k, 4 * k);
        memcpy(q->tk + ((size_t)pos * L + l) * K,
               tr->out_topk + ((size_t)l * T + row) * K, 4 * K);
    }
}

/* Each request alone on the single device: the prompt in one call, then
 * its decodes. */
static int
run_alone(sg_model *m, fseq *q, char *err, int errlen)
{
    const sg_config *c = &m->cfg;
    sg_kv_pool      *pool = sg_kv_pool_new(m->backend, c, NBMAX, m->num.kv_fp8);
    sg_trace         tr;
    int              rc = -1;

    for (int i = 0; i < NBMAX; i++)
        q->blocks[i] = i;
    q->seq.blocks = q->blocks;
    q->seq.n_blocks = q->seq.cap_blocks = NBMAX;
    q->seq.n_tokens = 0;
    trace_alloc(&tr, c, q->P);
    sg_batch_item it = { &q->seq, q->tok, q->P, q->logits, 1 };
    if (sg_forward(m, pool, &it, 1, &tr, err, errlen) != 0)
        goto out;
    for (int i = 0; i < q->P; i++)
        trace_keep(&tr, c, q->P, i, q, i);
    for (int d = 0; d < q->D; d++) {
        sg_batch_item dt = { &q->seq, q->tok + q->P + d, 1,
                             q->logits + (size_t)(d + 1) * c->vocab_size, 0 };
        if (sg_forward(m, pool, &dt, 1, &tr, err, errlen) != 0)
            goto out;
        trace_keep(&tr, c, 1, 0, q, q->P + d);
    }
    rc = 0;
out:
    trace_free(&tr);
    sg_kv_pool_free(pool);
    return rc;
}

/*
 * n_seq random requests on random ranks of a group of n, stepped together:
 * each step a request is in or out at random, prompts go in random chunks,
 * decodes one token; the outputs must be the alone runs' bits.
 */
static void
fuzz_group(const char *dir, const sg_model_opts *o, sg_model *single, int n,
    int rounds)
{
    const sg_config *c = &single->cfg;
    sg_group        *g = group_load(dir, o, n);
    char             name[64], err[512];
    int              V = c->vocab_size, L = c->num_hidden_layers;
    int              k = c->num_experts_per_tok, K = c->index_topk;
    int              fails = 0, steps_total = 0, empty_steps = 0;

    if (g == NULL)
        return;
    snprintf(name, sizeof(name), "fuzz/N%d", n);
    for (int round = 0; round < rounds && fails == 0; round++) {
        fseq     q[MAXS], ref[MAXS];
        int      n_seq = 1 + check_rand32() % MAXS, fed[MAXS] = { 0 };
        step_ctx x;

        memset(&x, 0, sizeof(x));
        x.g = g;
        for (int r = 0; r < n; r++)
            x.pool[r] = sg_kv_pool_new(sg_group_model(g, r)->backend, c,
                                       MAXS * NBMAX, o->num.kv_fp8);
        for (int i = 0; i < n_seq; i++) {
            memset(&q[i], 0, sizeof(q[i]));
            q[i].P = 1 + check_rand32() % MAXP;
            q[i].D = check_rand32() % (MAXD + 1);
            q[i].rank = check_rand32() % n;
            for (int t = 0; t < q[i].P + q[i].D; t++)
                q[i].tok[t] = check_rand32() % V;
            for (int b = 0; b < NBMAX; b++)
                q[i].blocks[b] = i * NBMAX + b;
            q[i].seq.blocks = q[i].blocks;
            q[i].seq.n_blocks = q[i].seq.cap_blocks = NBMAX;
            ref[i] = q[i];
            fseq_alloc(&q[i], c);
            fseq_alloc(&ref[i], c);
            if (run_alone(single, &ref[i], err, sizeof(err)) != 0) {
                CHECK(0, name, "alone: %s", err);
                fails++;
            }
        }
        /* lockstep: until every request has fed all its tokens */
        for (;;) {
            int left = 0;

            for (int i = 0; i < n_seq; i++)
                left += fed[i] < q[i].P + q[i].D;
            if (left == 0 || fails)
                break;
            for (int r = 0; r < n; r++)
                x.b[r].n_items = 0;
            for (int i = 0; i < n_seq; i++) {
                fseq          *s = &q[i];
                rank_batch    *b = &x.b[s->rank];
                sg_batch_item *it = &b->items[b->n_items];
                int            rest = s->P - fed[i];

                if (fed[i] >= s->P + s->D || check_rand32() % 4 == 0)
                    continue;
                it->seq = &s->seq;
                it->tokens = s->tok + fed[i];
                if (rest > 0) {
                    it->n_tokens = check_rand32() % 2 ? rest
                                   : 1 + (int)(check_rand32() % rest);
                    it->prompt = 1;
                    it->logits = it->n_tokens == rest ? s->logits : NULL;
                } else {
                    it->n_tokens = 1;
                    it->prompt = 0;
                    it->logits = s->logits + (size_t)(fed[i] - s->P + 1) * V;
                }
                b->seq_of[b->n_items] = i;
                b->pos0[b->n_items] = fed[i];
                b->n_items++;
            }
            for (int r = 0; r < n; r++) {
                int T = 0;
                for (int j = 0; j < x.b[r].n_items; j++)
                    T += x.b[r].items[j].n_tokens;
                trace_alloc(&x.b[r].tr, c, T ? T : 1);
                empty_steps += x.b[r].n_items == 0 && n > 1;
            }
            sg_group_run(g, step_rank, &x);
            steps_total++;
            for (int r = 0; r < n; r++) {
                rank_batch *b = &x.b[r];
                int         T = 0, row = 0;

                if (b->rc != 0) {
                    CHECK(0, name, "round %d rank %d: %s", round, r, b->err);
                    fails++;
                }
                for (int j = 0; j < b->n_items; j++)
                    T += b->items[j].n_tokens;
                for (int j = 0; b->rc == 0 && j < b->n_items; j++) {
                    fseq *s = &q[b->seq_of[j]];
                    for (int t = 0; t < b->items[j].n_tokens; t++, row++)
                        trace_keep(&b->tr, c, T, row, s, b->pos0[j] + t);
                    fed[b->seq_of[j]] += b->items[j].n_tokens;
                }
                trace_free(&b->tr);
            }
        }
        for (int i = 0; i < n_seq && fails == 0; i++) {
            size_t rows = q[i].P + q[i].D;
            const char *what =
                memcmp(q[i].logits, ref[i].logits,
                       4 * (size_t)(q[i].D + 1) * V) ? "logits"
                : memcmp(q[i].ex, ref[i].ex, 4 * rows * L * k) ? "experts"
                : memcmp(q[i].ew, ref[i].ew, 4 * rows * L * k)
                  ? "expert weights"
                : memcmp(q[i].tk, ref[i].tk, 4 * rows * L * K) ? "top-k sets"
                : NULL;
            if (what) {
                CHECK(0, name, "round %d request %d (rank %d, prompt %d, %d "
                      "decodes): %s differ from the request alone", round, i,
                      q[i].rank, q[i].P, q[i].D, what);
                fails++;
            }
        }
        for (int i = 0; i < n_seq; i++) {
            fseq_free(&q[i]);
            fseq_free(&ref[i]);
        }
        for (int r = 0; r < n; r++)
            sg_kv_pool_free(x.pool[r]);
    }
    if (fails == 0)
        CHECK(1, name, " ");
    printf("# N=%d: %d lockstep steps, %d empty rank steps\n", n, steps_total,
           empty_steps);
    sg_group_free(g);
}

/* A rank with a bad batch fails the step on every rank, promptly; the
 * next step runs and gives the alone run's logits. */
static void
test_failing_rank(const char *dir, const sg_model_opts *o, sg_model *single)
{
    const sg_config *c = &single->cfg;
    sg_group        *g = group_load(dir, o, 3);
    step_ctx         x;
    fseq             q, ref;
    int32_t          bad_tok = c->vocab_size + 5;
    sg_seq           bad_seq;
    int32_t          bad_blocks[1] = { 0 };
    char             err[256];
    int              ok;

    if (g == NULL)
        return;
    memset(&x, 0, sizeof(x));
    memset(&q, 0, sizeof(q));
    x.g = g;
    for (int r = 0; r < 3; r++)
        x.pool[r] = sg_kv_pool_new(sg_group_model(g, r)->backend, c, NBMAX,
                                   o->num.kv_fp8);
    q.P = 90;
    q.rank = 0;
    for (int t = 0; t < q.P; t++)
        q.tok[t] = check_rand32() % c->vocab_size;
    ref = q;
    fseq_alloc(&q, c);
    fseq_alloc(&ref, c);
    run_alone(single, &ref, err, sizeof(err));
    for (int b = 0; b < NBMAX; b++)
        q.blocks[b] = b;
    q.seq.blocks = q.blocks;
    q.seq.n_blocks = q.seq.cap_blocks = NBMAX;
    bad_seq.blocks = bad_blocks;
    bad_seq.n_blocks = bad_seq.cap_blocks = 1;
    bad_seq.n_tokens = 0;

    x.b[0].n_items = 1;
    x.b[0].items[0] = (sg_batch_item){ &q.seq, q.tok, q.P, q.logits, 1 };
    x.b[1].n_items = 1;
    x.b[1].items[0] = (sg_batch_item){ &bad_seq, &bad_tok, 1, NULL, 1 };
    x.b[2].n_items = 0;
    sg_group_run(g, step_rank, &x);
    ok = x.b[0].rc == -1 && x.b[1].rc == -1 && x.b[2].rc == -1
         && strstr(x.b[0].err, "device group: rank 1:") != NULL
         && strstr(x.b[2].err, "outside the vocabulary") != NULL
         && q.seq.n_tokens == 0;
    CHECK(ok, "fail/one-rank-fails-all", "rc %d %d %d; rank 0: '%s'; rank 2: "
          "'%s'", x.b[0].rc, x.b[1].rc, x.b[2].rc, x.b[0].err, x.b[2].err);

    x.b[1].n_items = 0;
    sg_group_run(g, step_rank, &x);
    CHECK(x.b[0].rc == 0 && x.b[1].rc == 0 && x.b[2].rc == 0
          && memcmp(q.logits, ref.logits, 4 * (size_t)c->vocab_size) == 0,
          "fail/next-step-exact", "rc %d %d %d: %s", x.b[0].rc, x.b[1].rc,
          x.b[2].rc, x.b[0].err);
    fseq_free(&q);
    fseq_free(&ref);
    for (int r = 0; r < 3; r++)
        sg_kv_pool_free(x.pool[r]);
    sg_group_free(g);
}

static void
test_random_model(void)
{
    static const char *sets[] = {
        "num_hidden_layers=4", "first_k_dense_replace=1",
        "n_routed_experts=32", "n_group=4", "topk_group=2",
        "num_experts_per_tok=6", "index_topk=24",
    };
    char            tmpl[] = "/tmp/sg_multi_XXXXXX", err[512];
    sg_mkmodel_opts mo;
    sg_model_opts   o = opts_for(1, 1);
    sg_model       *single = NULL;

    if (mkdtemp(tmpl) == NULL) {
        CHECK(0, "random/model", "mkdtemp failed");
        return;
    }
    memset(&mo, 0, sizeof(mo));
    mo.out_dir = tmpl;
    mo.preset = "tiny";
    mo.sets = sets;
    mo.n_sets = sizeof(sets) / sizeof(sets[0]);
    mo.fp8 = 1;
    mo.seed = check_rand32();
    if (sg_mkmodel(&mo, err, sizeof(err)) != 0
        || sg_model_load(tmpl, &o, &single, err, sizeof(err)) != 0)
    {
        CHECK(0, "random/model", "%s", err);
        check_rm_rf(tmpl);
        return;
    }
    for (int n = 1; n <= MAXN; n++)
        fuzz_group(tmpl, &o, single, n, sanitized ? 1 : 4);
    test_failing_rank(tmpl, &o, single);
    sg_model_free(single);
    check_rm_rf(tmpl);
}

int
main(void)
{
    check_seed_from_env();
    sanitized = getenv("SG_SANITIZED") != NULL;
    test_devices();
    test_coll_host();
    test_coll_mismatch();
    test_fixtures();
    test_random_model();
    return check_finish();
}
