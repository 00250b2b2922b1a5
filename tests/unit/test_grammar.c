/*
 * Constrained decoding (engine/grammar) on DeepSeek's real vocabulary:
 *  - random generations (uniform over the allowed tokens, random budgets)
 *    under json_object, several schemas and DSML tool calls: no step ever
 *    has nothing allowed, every output is complete when the budget ends
 *    and parses (cJSON), validates against its schema (a validator written
 *    here, apart from the compiler), and DSML parses with the published
 *    parser's rules (sg_chat_parser) into calls whose arguments validate;
 *  - the fewest-tokens function keeps the budget's promise on every state
 *    the walks reach: no byte lowers it by more than one, and with that
 *    many tokens left a token is always allowed and the output ends
 *    complete;
 *  - unsupported keywords are refused with their path;
 *  - a masked token is never one the automaton refuses byte by byte.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "check.h"
#include "grammar.h"
#include "grammar/grammar_internal.h"
#include "tokenizer.h"

#define VOCAB 129280

static sg_tokenizer *tok;
static sg_vocab     *voc;
static float        *logits;
static int           sanitized;

static sg_tokenizer *
load_tokenizer(void)
{
    char          err[256];
    sg_tokenizer *t = NULL;

    if (sg_tokenizer_load(check_npm_tokenizer(), &t, err, sizeof(err)) != 0) {
        CHECK(0, "load_tokenizer", "%s", err);
        return NULL;
    }
    return t;
}

/* ---------------------------------------------------- a validator */

static int validate(const cJSON *schema, const cJSON *v, char *why);

static int
type_ok(const cJSON *type, const cJSON *v)
{
    const cJSON *t;

    if (type == NULL)
        return 1;
    for (t = cJSON_IsArray(type) ? type->child : type; t;
         t = cJSON_IsArray(type) ? t->next : NULL)
    {
        const char *n = t->valuestring;
        if ((!strcmp(n, "null") && cJSON_IsNull(v))
            || (!strcmp(n, "boolean") && cJSON_IsBool(v))
            || (!strcmp(n, "number") && cJSON_IsNumber(v))
            || (!strcmp(n, "integer") && cJSON_IsNumber(v)
                && v->valuedouble == floor(v->valuedouble))
            || (!strcmp(n, "string") && cJSON_IsString(v))
            || (!strcmp(n, "array") && cJSON_IsArray(v))
            || (!strcmp(n, "object") && cJSON_IsObject(v)))
            return 1;
    }
    return 0;
}

static int
validate(const cJSON *s, const cJSON *v, char *why)
{
    const cJSON *x, *e;
    int          n;

    if (s == NULL || cJSON_IsTrue(s))
        return 1;
    if (!type_ok(cJSON_GetObjectItem(s, "type"), v)) {
        sprintf(why, "type");
        return 0;
    }
    if ((x = cJSON_GetObjectItem(s, "const")) != NULL
        && !cJSON_Compare(x, v, 1)) {
        sprintf(why, "const");
        return 0;
    }
    if ((x = cJSON_GetObjectItem(s, "enum")) != NULL) {
        int hit = 0;
        cJSON_ArrayForEach(e, x) hit |= cJSON_Compare(e, v, 1);
        if (!hit) {
            sprintf(why, "enum");
            return 0;
        }
    }
    if (cJSON_IsObject(v)) {
        const cJSON *props = cJSON_GetObjectItem(s, "properties");
        const cJSON *addl = cJSON_GetObjectItem(s, "additionalProperties");
        cJSON_ArrayForEach(e, cJSON_GetObjectItem(s, "required")) {
            if (!cJSON_GetObjectItem(v, e->valuestring)) {
                sprintf(why, "required %s", e->valuestring);
                return 0;
            }
        }
        cJSON_ArrayForEach(e, v) {
            const cJSON *ps = props ? cJSON_GetObjectItem(props, e->string)
                                    : NULL;
            int count = 0;
            for (const cJSON *o = v->child; o; o = o->next)
                count += !strcmp(o->string, e->string);
            if (count != 1) {
                sprintf(why, "key %s twice", e->string);
                return 0;
            }
            if (ps == NULL && (cJSON_IsFalse(addl) || props)) {
                /* the grammar writes only listed properties */
                sprintf(why, "extra key %s", e->string);
                return 0;
            }
            if (!validate(ps ? ps : addl, e, why))
                return 0;
        }
    }
    if (cJSON_IsArray(v)) {
        n = cJSON_GetArraySize(v);
        if ((x = cJSON_GetObjectItem(s, "minItems")) && n < x->valueint) {
            sprintf(why, "minItems");
            return 0;
        }
        if ((x = cJSON_GetObjectItem(s, "maxItems")) && n > x->valueint) {
            sprintf(why, "maxItems");
            return 0;
        }
        cJSON_ArrayForEach(e, v) {
            if (!validate(cJSON_GetObjectItem(s, "items"), e, why))
                return 0;
        }
    }
    return 1;
}

/* ------------------------------------------- need, byte by byte */

/* No byte lowers need by more than one (a byte is a token: need counts
 * tokens at their fewest); returns 0 on a violation (message in why). */
static int
need_exact_here(const sg_grammar *g, const gstate *s, char *why)
{
    int32_t need = g_need(g, s);

    for (int b = 0; b < 256; b++) {
        gstate t = *s;
        int32_t n2;
        if (!g_step(g, &t, (uint8_t)b))
            continue;
        n2 = g_need(g, &t);
        if (n2 < need - 1) {
            sprintf(why, "byte 0x%02x: need %d -> %d", b, need, n2);
            return 0;
        }
    }
    return 1;
}

static float *probe;

/* The budget's promise: with exactly need tokens left, some token is
 * allowed at every step and the output ends complete. */
static int
greedy_completes(sg_grammar *g, const gstate *s, char *why)
{
    sg_grammar_state *st = sg_grammar_state_new(g);
    int32_t           need = g_need(g, s);
    int               ok = 1;

    st->st = *s;
    for (int32_t k = need; k > 0 && ok; k--) {
        int32_t id = -1;
        memset(probe, 0, sizeof(float) * 129280);
        if (sg_grammar_mask(st, k, probe, 129280) <= 0) {
            sprintf(why, "nothing allowed with need %d", k);
            ok = 0;
            break;
        }
        for (int t = 0; t < 129280 && id < 0; t++) {
            if (probe[t] == 0)
                id = t;
        }
        if (sg_grammar_advance(st, id) < 0) {
            sprintf(why, "allowed token %d refused", id);
            ok = 0;
        }
    }
    if (ok && g_need(g, &st->st) != 0) {
        sprintf(why, "incomplete after %d tokens", need);
        ok = 0;
    }
    sg_grammar_state_free(st);
    return ok;
}

/* ------------------------------------------------- generations */

typedef struct gen {
    char   text[65536];
    size_t len;
    int    complete;        /* ended done, by EOS, or need 0 at the end */
    int    dead;            /* a step with nothing allowed */
    int    bad_need;
    char   why[256];
} gen;

/* One generation: a uniform draw among the allowed tokens each step. */
static void
generate(sg_grammar *g, int budget, gen *out, int check_need)
{
    sg_grammar_state *s = sg_grammar_state_new(g);

    memset(out, 0, sizeof(*out));
    for (int left = budget; left > 0; left--) {
        int     allowed, pick, k = 0;
        int32_t id = -1;
        const char *bytes;
        size_t  n;

        if (check_need && !out->bad_need
            && (!need_exact_here(g, &s->st, out->why)
                || !greedy_completes(g, &s->st, out->why))) {
            size_t k = strlen(out->why);
            snprintf(out->why + k, sizeof(out->why) - k, " after \"%.*s\"",
                     (int)(out->len < 150 ? out->len : 150),
                     out->text + (out->len < 150 ? 0 : out->len - 150));
            out->bad_need = 1;
        }
        memset(logits, 0, sizeof(float) * VOCAB);
        allowed = sg_grammar_mask(s, left, logits, VOCAB);
        if (allowed <= 0) {
            out->dead = 1;
            break;
        }
        pick = (int)(check_rand32() % (unsigned)allowed);
        for (int t = 0; t < VOCAB; t++) {
            if (logits[t] == 0 && k++ == pick) {
                id = t;
                break;
            }
        }
        if (id == sg_tokenizer_eos(tok)) {
            out->complete = sg_grammar_advance(s, id) == 1;
            break;
        }
        if (sg_tokenizer_token(tok, id, &bytes, &n) == 0
            || out->len + n >= sizeof(out->text)) {
            out->dead = 1;
            break;
        }
        memcpy(out->text + out->len, bytes, n);
        out->len += n;
        {
            int r = sg_grammar_advance(s, id);
            if (r < 0) {
                out->dead = 1;
                sprintf(out->why, "a masked token was refused: %d", id);
                break;
            }
            if (r == 1) {
                out->complete = 1;
                break;
            }
        }
        if (left == 1)
            out->complete = g_need(g, &s->st) == 0;
    }
    out->text[out->len] = '\0';
    sg_grammar_state_free(s);
}

static void
run_json(const char *name, const char *schema_text, int runs)
{
    char        err[256];
    sg_grammar *g = sg_grammar_json(voc, schema_text,
                                    schema_text ? strlen(schema_text) : 0,
                                    NULL, err, sizeof(err));
    cJSON      *schema = schema_text ? cJSON_Parse(schema_text) : NULL;
    int         bad = 0, dead = 0, incomplete = 0, bad_need = 0;
    char        first[512] = "";
    gen        *o = malloc(sizeof(gen));

    if (g == NULL) {
        CHECK(0, check_named("json_compiles", name), "%s", err);
        free(o);
        return;
    }
    for (int r = 0; r < runs; r++) {
        int    budget = g->min_bytes + (int)(check_rand32() % 48);
        cJSON *v;
        char   why[256] = "";

        generate(g, budget, o, r < 3);
        dead += o->dead;
        incomplete += !o->complete;
        bad_need += o->bad_need;
        v = cJSON_ParseWithLengthOpts(o->text, o->len + 1, NULL, 1);
        if (v == NULL || (schema == NULL && !cJSON_IsObject(v))
            || (schema != NULL && !validate(schema, v, why))) {
            if (!bad)
                snprintf(first, sizeof(first), "%s: %.300s", why, o->text);
            bad++;
        }
        if (o->bad_need && !first[0])
            snprintf(first, sizeof(first), "need: %s", o->why);
        cJSON_Delete(v);
    }
    CHECK(dead == 0 && incomplete == 0 && bad == 0 && bad_need == 0,
          check_named("json_generations_valid", name),
          "%d runs: %d dead ends, %d incomplete, %d invalid, %d need "
          "errors; %s", runs, dead, incomplete, bad, bad_need, first);
    cJSON_Delete(schema);
    sg_grammar_unref(g);
    free(o);
}

/* ------------------------------------------------------ DSML */

typedef struct calls {
    int  n;
    char name[8][64];
    char args[8][2048];
    char content[4096];
} calls;

static void
on_part(void *ctx, sg_chat_part part, int call, const char *s, size_t n,
    const char *args, size_t n_args)
{
    calls *c = ctx;

    if (part == SG_CHAT_CALL && c->n < 8) {
        snprintf(c->name[c->n], 64, "%.*s", (int)n, s);
        snprintf(c->args[c->n], 2048, "%.*s", (int)n_args, args);
        c->n++;
    } else if (part == SG_CHAT_CONTENT) {
        size_t k = strlen(c->content);
        snprintf(c->content + k, sizeof(c->content) - k, "%.*s", (int)n, s);
    }
}

static const char tools_json[] =
    "[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
    "\"description\":\"Weather\",\"parameters\":{\"type\":\"object\","
    "\"properties\":{\"location\":{\"type\":\"string\"},"
    "\"days\":{\"type\":\"integer\"},"
    "\"unit\":{\"type\":\"string\",\"enum\":[\"c\",\"f\"]},"
    "\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"string\"},"
    "\"maxItems\":3}},\"required\":[\"location\",\"days\"]}}},"
    "{\"type\":\"function\",\"function\":{\"name\":\"now\","
    "\"parameters\":{\"type\":\"object\",\"properties\":{}}}},"
    "{\"type\":\"function\",\"function\":{\"name\":\"free\"}}]";

static const cJSON *
params_of(const cJSON *tools, const char *name)
{
    const cJSON *t;

    cJSON_ArrayForEach(t, tools) {
        const cJSON *fn = cJSON_GetObjectItem(t, "function");
        if (!strcmp(cJSON_GetObjectItem(fn, "name")->valuestring, name))
            return cJSON_GetObjectItem(fn, "parameters");
    }
    return NULL;
}

static void
run_dsml(const char *name, const char *only, int parallel, const char *gate,
    int runs)
{
    char            err[256];
    sg_grammar_opts o = { gate };
    sg_grammar     *g = sg_grammar_tool_calls(voc, tools_json,
                                              strlen(tools_json), only,
                                              parallel, &o, err, sizeof(err));
    cJSON          *tools = cJSON_Parse(tools_json);
    int             bad = 0, dead = 0, incomplete = 0, bad_need = 0;
    char            first[600] = "";
    gen            *out = malloc(sizeof(gen));
    calls           c;

    if (g == NULL) {
        CHECK(0, check_named("dsml_compiles", name), "%s", err);
        free(out);
        return;
    }
    for (int r = 0; r < runs; r++) {
        int             budget = g->min_bytes + (int)(check_rand32() % 64);
        sg_chat_parser *p = sg_chat_parser_new(gate != NULL, 1);
        char            why[256] = "";
        int             ok = 1;

        generate(g, budget, out, r < 2);
        dead += out->dead;
        incomplete += !out->complete;
        bad_need += out->bad_need;
        memset(&c, 0, sizeof(c));
        sg_chat_parser_push(p, out->text, out->len, 1, on_part, &c);
        sg_chat_parser_free(p);
        if (c.n == 0 || c.content[0] != '\0' || (!parallel && c.n != 1))
            ok = 0;
        for (int i = 0; ok && i < c.n; i++) {
            cJSON *a = cJSON_Parse(c.args[i]);
            if (a == NULL || (only && strcmp(c.name[i], only) != 0)
                || !validate(params_of(tools, c.name[i]), a, why))
                ok = 0;
            cJSON_Delete(a);
        }
        if (!ok) {
            if (!bad)
                snprintf(first, sizeof(first), "%d calls, %s; %.400s", c.n,
                         why, out->text);
            bad++;
        }
        if (out->bad_need && !first[0])
            snprintf(first, sizeof(first), "need: %s", out->why);
    }
    CHECK(dead == 0 && incomplete == 0 && bad == 0 && bad_need == 0,
          check_named("dsml_generations_parse", name),
          "%d runs: %d dead ends, %d incomplete, %d bad, %d need errors; %s",
          runs, dead, incomplete, bad, bad_need, first);
    cJSON_Delete(tools);
    sg_grammar_unref(g);
    free(out);
}

/* ------------------------------------------------- refusals */

static void
test_refusals(void)
{
    static const struct { const char *schema, *want; } cases[] = {
        { "{\"type\":\"string\",\"pattern\":\"a+\"}", "pattern" },
        { "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"number\","
          "\"minimum\":3}}}", ".properties.a: this keyword is not "
          "supported: minimum" },
        { "{\"anyOf\":[{\"type\":\"string\"}]}", "anyOf" },
        { "{\"type\":\"object\",\"properties\":{\"a\":{}},"
          "\"required\":[\"b\"]}", "not in \"properties\": b" },
        { "{\"type\":\"integer\",\"enum\":[\"x\"]}", "no value" },
        { "{\"type\":\"wat\"}", "unknown type wat" },
        { "[1]", "must be an object" },
        { "{", "not JSON" },
    };
    int bad = 0;
    char err[256], first[512] = "";

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        sg_grammar *g = sg_grammar_json(voc, cases[i].schema,
                                        strlen(cases[i].schema), NULL, err,
                                        sizeof(err));
        if (g != NULL || strstr(err, cases[i].want) == NULL) {
            if (!bad)
                snprintf(first, sizeof(first), "%s -> %s", cases[i].schema,
                         g ? "accepted" : err);
            bad++;
        }
        sg_grammar_unref(g);
    }
    CHECK(bad == 0, "schema_refusals_name_the_keyword", "%d cases: %s", bad,
          first);
}

/* A fixed output checked through advance: the schema's own example. */
static void
test_known_text(void)
{
    char        err[256];
    const char *schema = "{\"type\":\"object\",\"properties\":{\"a\":"
                         "{\"type\":\"integer\"},\"b\":{\"enum\":[\"x\","
                         "\"y\",1.5]}},\"required\":[\"a\"]}";
    sg_grammar *g = sg_grammar_json(voc, schema, strlen(schema), NULL, err,
                                    sizeof(err));
    const char *good[] = { "{\"a\":1}", "{ \"b\" : 1.5 , \"a\" : -20 }",
                           "{\"b\":\"y\",\"a\":0}" };
    const char *badt[] = { "{}", "{\"a\":1.5}", "{\"a\":1,\"a\":2}",
                           "{\"b\":\"z\",\"a\":1}", "{\"c\":1}",
                           " {\"a\":1}", "{\"a\":01}" };
    int         bad = 0;

    if (g == NULL) {
        CHECK(0, "grammar_known_texts", "%s", err);
        return;
    }
    for (int k = 0; k < 2; k++) {
        const char **set = k ? badt : good;
        int          n = k ? 7 : 3;
        for (int i = 0; i < n; i++) {
            gstate st;
            int    ok = 1;
            g_state_init(g, &st);
            for (const char *p = set[i]; *p && ok; p++)
                ok = g_step(g, &st, (uint8_t)*p);
            ok = ok && g_need(g, &st) == 0;
            if (ok != !k) {
                printf("# %s: %s\n", set[i], ok ? "accepted" : "refused");
                bad++;
            }
        }
    }
    CHECK(bad == 0, "grammar_known_texts", "%d texts judged wrong", bad);
    CHECK(g->min_bytes >= 3 && g->min_bytes <= 7, "grammar_min_cost",
          "{\"a\":0} is 7 bytes and at least 3 tokens, got %d", g->min_bytes);
    sg_grammar_unref(g);
}

int
main(void)
{
    char err[256];
    int  runs;

    check_seed_from_env();
    sanitized = getenv("SG_SANITIZED") != NULL;
    runs = sanitized ? 12 : 60;
    tok = load_tokenizer();
    if (tok == NULL)
        return check_finish();
    voc = sg_vocab_new(tok, VOCAB, err, sizeof(err));
    CHECK(voc != NULL, "vocab_new", "%s", err);
    logits = malloc(sizeof(float) * VOCAB);
    probe = malloc(sizeof(float) * VOCAB);
    if (voc == NULL || logits == NULL || probe == NULL)
        return check_finish();

    test_refusals();
    test_known_text();
    run_json("object", NULL, runs);
    run_json("schema_flat",
             "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":"
             "\"string\"},\"age\":{\"type\":\"integer\"},\"ok\":{\"type\":"
             "\"boolean\"}},\"required\":[\"name\",\"age\",\"ok\"],"
             "\"additionalProperties\":false}", runs);
    run_json("schema_nested",
             "{\"type\":\"object\",\"properties\":{\"items\":{\"type\":"
             "\"array\",\"items\":{\"type\":\"object\",\"properties\":{"
             "\"id\":{\"type\":\"integer\"},\"tags\":{\"type\":\"array\","
             "\"items\":{\"enum\":[\"red\",\"green\",null,3]},\"minItems\":1,"
             "\"maxItems\":2}},\"required\":[\"id\",\"tags\"]},"
             "\"minItems\":2}},\"required\":[\"items\"]}", runs);
    run_json("schema_unions",
             "{\"type\":[\"array\",\"null\"],\"items\":{\"type\":[\"number\","
             "\"string\"]}}", runs);
    run_json("schema_free_values",
             "{\"type\":\"object\",\"additionalProperties\":{\"type\":"
             "\"number\"}}", runs);
    run_json("schema_string", "{\"type\":\"string\"}", runs);
    run_dsml("any_function", NULL, 1, NULL, runs);
    run_dsml("named_function", "get_weather", 0, NULL, runs);
    run_dsml("after_thinking", NULL, 1, "</think>", runs / 2);

    sg_vocab_free(voc);
    sg_tokenizer_free(tok);
    free(logits);
    free(probe);
    return check_finish();
}
