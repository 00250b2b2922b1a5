/*
 * sparsegate prompts: many RAG prompts at once, built by the gateway's own
 * context builder and chat format, as token ids (training and evaluation
 * data that is byte for byte what /v1/rag sends the model).
 *
 *   sparsegate prompts --tokenizer tokenizer.json --in samples.jsonl
 *       --out samples.bin
 *
 * Each input line: {"passages": [{"id", "doc_id", "title", "text",
 * "collection"}...], "question": "...", "answer": "..." (optional),
 * "budget": N}.  The passages are the collection: they go into the shared
 * block in canonical order (collection, id), as the store lists them, and
 * a collection that fits the budget gives the same prompt whatever the
 * search ranked.  Output per line: int32 n_prompt, n_answer, n_placed,
 * n_passages, then the prompt ids and, when an answer is given, its ids
 * followed by the end-of-sentence id (n_answer counts both).
 */
#define _GNU_SOURCE     /* getline */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "context.h"
#include "store.h"
#include "tokenizer.h"

static int
cmp_canonical(const void *a, const void *b)
{
    const sg_passage *x = a, *y = b;
    int               c = strcmp(x->collection, y->collection);

    return c ? c : strcmp(x->id, y->id);
}

static const char *
str_field(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);

    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* Parses one line's passages into l; -1 with a message. */
static int
read_passages(const cJSON *root, sg_passage_list *l, char *err, int errlen)
{
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(root, "passages");
    const cJSON *e;

    if (!cJSON_IsArray(arr)) {
        snprintf(err, errlen, "\"passages\" is missing or not an array");
        return -1;
    }
    cJSON_ArrayForEach(e, arr) {
        sg_passage p = { 0 };

        p.id = (char *)str_field(e, "id");
        p.doc_id = (char *)str_field(e, "doc_id");
        p.title = (char *)str_field(e, "title");
        p.text = (char *)str_field(e, "text");
        p.collection = (char *)str_field(e, "collection");
        if (p.id == NULL || p.text == NULL) {
            snprintf(err, errlen, "a passage has no \"id\" or \"text\"");
            return -1;
        }
        if (p.doc_id == NULL)
            p.doc_id = p.id;
        if (p.collection == NULL)
            p.collection = "";
        p.n_tokens = -1;
        if (sg_passage_list_push(l, &p) != 0) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
    }
    qsort(l->v, l->n, sizeof(*l->v), cmp_canonical);
    return 0;
}

/* One line -> one record on out; -1 with a message. */
static int
one(const sg_tokenizer *tok, const char *line, FILE *out, char *err,
    int errlen)
{
    cJSON          *root = cJSON_Parse(line);
    sg_passage_list shared = { 0 };
    sg_ctx_opts     o;
    sg_context      ctx = { 0 };
    const char     *q, *a;
    const cJSON    *b;
    int32_t        *ans = NULL, hdr[4];
    size_t          n_ans = 0;
    int             rc = -1;

    if (root == NULL) {
        snprintf(err, errlen, "not a JSON object");
        return -1;
    }
    q = str_field(root, "question");
    a = str_field(root, "answer");
    b = cJSON_GetObjectItemCaseSensitive(root, "budget");
    if (q == NULL || !cJSON_IsNumber(b) || b->valueint < 256) {
        snprintf(err, errlen, "need \"question\" and \"budget\" >= 256");
        goto done;
    }
    if (read_passages(root, &shared, err, errlen) != 0)
        goto done;
    sg_ctx_opts_default(&o);
    o.budget = b->valueint;
    o.encode = sg_ctx_tokenizer_encode;
    o.encode_ud = (void *)tok;
    o.format = sg_chat_format_spans;
    if (sg_context_build(&shared, NULL, q, &o, &ctx, err, errlen) != 0)
        goto done;
    if (a != NULL) {
        if (sg_tokenizer_encode(tok, a, strlen(a), 0, &ans, &n_ans) != 0) {
            snprintf(err, errlen, "cannot encode the answer");
            goto done;
        }
        int32_t *t = realloc(ans, sizeof(int32_t) * (n_ans + 1));

        if (t == NULL) {
            snprintf(err, errlen, "out of memory");
            goto done;
        }
        ans = t;
        ans[n_ans++] = sg_tokenizer_eos(tok);
    }
    hdr[0] = ctx.n_tokens;
    hdr[1] = (int32_t)n_ans;
    hdr[2] = (int32_t)ctx.n_cites;
    hdr[3] = (int32_t)shared.n;
    if (fwrite(hdr, sizeof(hdr), 1, out) != 1
        || fwrite(ctx.ids, sizeof(int32_t), ctx.n_tokens, out)
           != (size_t)ctx.n_tokens
        || (n_ans && fwrite(ans, sizeof(int32_t), n_ans, out) != n_ans))
    {
        snprintf(err, errlen, "write failed");
        goto done;
    }
    rc = 0;
done:
    free(ans);
    sg_context_free(&ctx);
    sg_passage_list_free(&shared);
    cJSON_Delete(root);
    return rc;
}

int
sg_cmd_prompts(int argc, char **argv)
{
    static const struct option opts[] = {
        { "tokenizer", required_argument, NULL, 't' },
        { "in", required_argument, NULL, 'i' },
        { "out", required_argument, NULL, 'o' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char   *tok_path = NULL, *in_path = NULL, *out_path = NULL;
    sg_tokenizer *tok = NULL;
    FILE         *in = NULL, *out = NULL;
    char         *line = NULL, err[512];
    size_t        cap = 0;
    long          lineno = 0;
    int           c, status = 1;

    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 't': tok_path = optarg; break;
        case 'i': in_path = optarg; break;
        case 'o': out_path = optarg; break;
        case 'h':
            printf("usage: sparsegate prompts --tokenizer FILE --in "
                   "samples.jsonl --out samples.bin\n");
            return 0;
        default:
            return 2;
        }
    }
    if (tok_path == NULL || in_path == NULL || out_path == NULL) {
        fprintf(stderr, "prompts: need --tokenizer, --in and --out\n");
        return 2;
    }
    if (sg_tokenizer_load(tok_path, &tok, err, sizeof(err)) != 0) {
        fprintf(stderr, "prompts: %s\n", err);
        return 1;
    }
    in = fopen(in_path, "r");
    out = fopen(out_path, "wb");
    if (in == NULL || out == NULL) {
        fprintf(stderr, "prompts: cannot open %s\n", in ? out_path : in_path);
        goto out;
    }
    while (getline(&line, &cap, in) > 0) {
        lineno++;
        if (one(tok, line, out, err, sizeof(err)) != 0) {
            fprintf(stderr, "prompts: %s:%ld: %s\n", in_path, lineno, err);
            goto out;
        }
    }
    if (fclose(out) != 0) {
        out = NULL;
        fprintf(stderr, "prompts: %s: write failed\n", out_path);
        goto out;
    }
    out = NULL;
    status = 0;
out:
    free(line);
    if (in)
        fclose(in);
    if (out)
        fclose(out);
    sg_tokenizer_free(tok);
    return status;
}
