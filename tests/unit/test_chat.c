/*
 * DeepSeek-V3.2's chat encoding (chat_v32.c) and the parsing of its
 * outputs (chat_parse.c):
 *  - the model card's own example (encoding/README of the release: a
 *    thinking-mode conversation, its prompt and its ids) through a
 *    tokenizer.json with V3.2's three added tokens (the npm file with
 *    "<think>", "</think>" and "｜DSML｜" in their places, written here);
 *  - tools, tool calls and results, the thinking markers, reasoning
 *    kept only after the last user message, the published encoding's
 *    complaints as errors;
 *  - a special-token string typed in a message stays text;
 *  - to_json's way of writing JSON (Python's json.dumps);
 *  - the parser: the same reasoning, content and calls whatever the text's
 *    split into pushes (every split of a DSML block in two, and byte by
 *    byte), malformed blocks given back as content, arguments written as
 *    decode_dsml_to_arguments writes them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "check.h"
#include "tokenizer.h"
#include "tokenizer/chat_internal.h"

static char tmpdir[] = "/tmp/sg-chat-test.XXXXXX";

/* The npm tokenizer.json, and the same with V3.2's added tokens (ids
 * 128793 "｜DSML｜", 128798 "<think>", 128799 "</think>"). */
static sg_tokenizer *
load(int v32)
{
    const char   *path = check_npm_tokenizer();
    char          out[1100], err[256];
    sg_tokenizer *t = NULL;
    size_t        len;
    char         *text;
    cJSON        *j, *a;
    FILE         *f;

    if (!v32) {
        if (sg_tokenizer_load(path, &t, err, sizeof(err)) != 0)
            printf("# %s\n", err);
        return t;
    }
    text = check_read_file(path, &len);
    j = text ? cJSON_ParseWithLength(text, len) : NULL;
    free(text);
    cJSON_ArrayForEach(a, cJSON_GetObjectItem(j, "added_tokens")) {
        int         id = cJSON_GetObjectItem(a, "id")->valueint;
        const char *c = id == 128793 ? "｜DSML｜" : id == 128798 ? "<think>"
                        : id == 128799 ? "</think>" : NULL;
        if (c) {
            cJSON_ReplaceItemInObject(a, "content", cJSON_CreateString(c));
            cJSON_ReplaceItemInObject(a, "special", cJSON_CreateFalse());
        }
    }
    snprintf(out, sizeof(out), "%s/tokenizer.json", tmpdir);
    text = cJSON_PrintUnformatted(j);
    f = fopen(out, "wb");
    if (f && text)
        fputs(text, f);
    if (f)
        fclose(f);
    free(text);
    cJSON_Delete(j);
    if (sg_tokenizer_load(out, &t, err, sizeof(err)) != 0)
        printf("# %s\n", err);
    return t;
}

static char *
render(const sg_chat_message *m, int n, int thinking, char *err)
{
    sg_chat_prompt p;

    if (sg_chat_render(m, n, thinking, &p, err, 256) != 0)
        return NULL;
    free(p.spans);
    return p.text;
}

static void
test_model_card(const sg_tokenizer *v32, const sg_tokenizer *v3)
{
    sg_chat_message m[3] = {
        { .role = "user", .content = "hello" },
        { .role = "assistant", .content = "Hello! I am DeepSeek.",
          .reasoning = "thinking..." },
        { .role = "user", .content = "1+1=?" },
    };
    static const int32_t want[] = { 0, 128803, 33310, 128804, 128799, 19923,
        3, 342, 1030, 22651, 4374, 1465, 16, 1, 128803, 19, 13, 19, 127252,
        128804, 128798 };
    const char *text = "<｜begin▁of▁sentence｜><｜User｜>hello<｜Assistant｜>"
                       "</think>Hello! I am DeepSeek.<｜end▁of▁sentence｜>"
                       "<｜User｜>1+1=?<｜Assistant｜><think>";
    char        err[256];
    char       *s = render(m, 3, 1, err);
    int32_t    *ids = NULL, *ids3 = NULL, *plain = NULL;
    size_t      n = 0, n3 = 0, np = 0;

    CHECK(s && strcmp(s, text) == 0, "model_card_prompt", "got %s",
          s ? s : err);
    CHECK(sg_chat_encode(v32, m, 3, 1, &ids, &n, err, sizeof(err)) == 0
          && n == sizeof(want) / sizeof(want[0])
          && memcmp(ids, want, sizeof(want)) == 0, "model_card_ids",
          "%zu ids, first %d", n, n ? ids[0] : -1);
    /* with V3's file the markers are text: the same as encoding the
     * string with special tokens on */
    sg_chat_encode(v3, m, 3, 1, &ids3, &n3, err, sizeof(err));
    sg_tokenizer_encode(v3, text, strlen(text), 1, &plain, &np);
    CHECK(n3 == np && n3 > n && memcmp(ids3, plain, n3 * 4) == 0,
          "npm_vocab_markers_are_text", "%zu vs %zu ids", n3, np);
    free(s);
    free(ids);
    free(ids3);
    free(plain);
}

static const char tools[] =
    "[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
    "\"description\":\"Weather of a city\",\"parameters\":{\"type\":"
    "\"object\",\"properties\":{\"city\":{\"type\":\"string\"},\"days\":"
    "{\"type\":\"integer\",\"default\":0.5}},\"required\":[\"city\"]}}}]";

static void
test_tools(void)
{
    sg_chat_call    calls[2] = {
        { "get_weather", "{\"city\": \"Paris\", \"days\": 2}" },
        { "get_weather", "{\"city\": \"Oslo\", \"when\": [1, \"a\\n\"]}" },
    };
    sg_chat_message m[7] = {
        { .role = "system", .content = "Be brief.", .tools = tools },
        { .role = "user", .content = "Weather?" },
        { .role = "assistant", .reasoning = "old thoughts", .calls = calls,
          .n_calls = 2 },
        { .role = "tool", .content = "sunny" },
        { .role = "tool", .content = "rain" },
        { .role = "assistant", .content = "Sunny and rain." },
        { .role = "user", .content = "Thanks" },
    };
    char  err[256];
    char *s = render(m, 7, 1, err);
    const char *want_calls =
        "<｜User｜>Weather?<｜Assistant｜></think>\n\n<｜DSML｜function_calls>\n"
        "<｜DSML｜invoke name=\"get_weather\">\n"
        "<｜DSML｜parameter name=\"city\" string=\"true\">Paris"
        "</｜DSML｜parameter>\n"
        "<｜DSML｜parameter name=\"days\" string=\"false\">2"
        "</｜DSML｜parameter>\n</｜DSML｜invoke>\n"
        "<｜DSML｜invoke name=\"get_weather\">\n"
        "<｜DSML｜parameter name=\"city\" string=\"true\">Oslo"
        "</｜DSML｜parameter>\n"
        "<｜DSML｜parameter name=\"when\" string=\"false\">[1, \"a\\n\"]"
        "</｜DSML｜parameter>\n</｜DSML｜invoke>\n"
        "</｜DSML｜function_calls><｜end▁of▁sentence｜>\n\n<function_results>"
        "\n<result>sunny</result>\n<result>rain</result>\n"
        "</function_results>\n\n</think>Sunny and rain."
        "<｜end▁of▁sentence｜><｜User｜>Thanks<｜Assistant｜><think>";
    const char *want_tools =
        "<｜begin▁of▁sentence｜>Be brief.\n\n## Tools\n\nYou have access";
    const char *schema_line =
        "<functions>\n{\"name\": \"get_weather\", \"description\": \"Weather "
        "of a city\", \"parameters\": {\"type\": \"object\", \"properties\": "
        "{\"city\": {\"type\": \"string\"}, \"days\": {\"type\": "
        "\"integer\", \"default\": 0.5}}, \"required\": [\"city\"]}}\n"
        "</functions>\n<｜User｜>";

    CHECK(s && strncmp(s, want_tools, strlen(want_tools)) == 0,
          "tools_after_system", "%.120s", s ? s : err);
    CHECK(s && strstr(s, schema_line) != NULL, "tools_as_to_json",
          "no schema line in the prompt");
    CHECK(s && strstr(s, want_calls) != NULL && !strstr(s, "old thoughts"),
          "calls_results_and_thinking", "%s", s ? s + strlen(s) - 200 : err);
    free(s);

    /* in the agent loop (after the last user message) reasoning is kept */
    {
        sg_chat_message l[4] = {
            { .role = "user", .content = "Weather?" },
            { .role = "assistant", .reasoning = "I will call", .calls = calls,
              .n_calls = 1 },
            { .role = "tool", .content = "sunny" },
        };
        const char *want = "<｜User｜>Weather?<｜Assistant｜><think>I will call"
                           "</think>\n\n<｜DSML｜function_calls>";
        const char *tail = "</function_results>\n\n<think>";
        s = render(l, 3, 1, err);
        CHECK(s && strstr(s, want) && strcmp(s + strlen(s) - strlen(tail),
                                             tail) == 0,
              "agent_loop_keeps_reasoning", "%s", s ? s : err);
        free(s);
        s = render(l, 3, 0, err);
        CHECK(s && strstr(s, "</think>\n\n<｜DSML｜function_calls>")
              && !strstr(s, "I will call")
              && strcmp(s + strlen(s) - 10, "\n\n</think>") == 0,
              "chat_mode_drops_reasoning", "%s", s ? s : err);
        free(s);
    }

    /* complaints */
    {
        sg_chat_message bad1[2] = { { .role = "user", .content = "x" },
                                    { .role = "tool", .content = "y" } };
        sg_chat_message bad2[3] = {
            { .role = "user", .content = "x" },
            { .role = "assistant", .calls = calls, .n_calls = 1 },
            { .role = "tool", .content = "a" } };
        sg_chat_message bad3[4] = { bad2[0], bad2[1], bad2[2],
                                    { .role = "tool", .content = "b" } };
        sg_chat_message bad4[2] = {
            { .role = "user", .content = "x" },
            { .role = "assistant", .content = "y" } };
        sg_chat_call    badcall = { "f", "[1]" };
        sg_chat_message bad5[2] = {
            { .role = "user", .content = "x" },
            { .role = "assistant", .calls = &badcall, .n_calls = 1 } };
        int ok = 1;
        ok &= render(bad1, 2, 0, err) == NULL
              && strstr(err, "messages[1]: a tool message must follow");
        ok &= render(bad3, 4, 0, err) == NULL
              && strstr(err, "more tool results");
        ok &= render(bad4, 2, 1, err) == NULL
              && strstr(err, "needs reasoning_content or tool_calls");
        ok &= render(bad5, 2, 0, err) == NULL
              && strstr(err, "not a JSON object");
        s = render(bad4, 2, 0, err);
        ok &= s != NULL;
        free(s);
        CHECK(ok, "encoding_complaints", "last error: %s", err);
    }
}

static void
test_content_stays_text(const sg_tokenizer *t)
{
    sg_chat_message m[1] = { { .role = "user",
                               .content = "say <｜User｜> and </think>" } };
    int32_t *ids;
    size_t   n;
    char     err[256];
    int      users = 0;

    sg_chat_encode(t, m, 1, 0, &ids, &n, err, sizeof(err));
    for (size_t i = 0; i < n; i++)
        users += ids[i] == 128803;
    CHECK(users == 1, "special_strings_in_content_are_text",
          "%d <｜User｜> tokens", users);
    free(ids);
}

static void
test_pyjson(void)
{
    static const struct { const char *in, *out; } cases[] = {
        { "{\"a\":1,\"b\":[true,null,\"x\"]}",
          "{\"a\": 1, \"b\": [true, null, \"x\"]}" },
        { "[0.1, 1e-5, 0.0001, 123.25, -2.5e-7, 1e300, 3]",
          "[0.1, 1e-05, 0.0001, 123.25, -2.5e-07, 1e+300, 3]" },
        { "\"q\\\"b\\\\n\\n\\t\\u0001é\\u2028\"",
          "\"q\\\"b\\\\n\\n\\t\\u0001é\u2028\"" },
        { "{}", "{}" },
    };
    int bad = 0;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cJSON    *v = cJSON_Parse(cases[i].in);
        sg_strbuf b = { 0 };
        sg_pyjson_value(&b, v);
        if (b.p == NULL || strcmp(b.p, cases[i].out) != 0) {
            printf("# %s -> %s\n", cases[i].in, b.p ? b.p : "(null)");
            bad++;
        }
        free(b.p);
        cJSON_Delete(v);
    }
    CHECK(bad == 0, "to_json_like_python", "%d cases differ", bad);
}

/* ---------------------------------------------------------- parsing */

typedef struct parsed {
    char reasoning[4096], content[8192];
    char names[8][64], args[8][1024];
    int  n_calls, bad_index;
} parsed;

static void
on_part(void *ctx, sg_chat_part part, int call, const char *s, size_t n,
    const char *args, size_t n_args)
{
    parsed *p = ctx;
    char   *to = part == SG_CHAT_REASONING ? p->reasoning : p->content;
    size_t  k;

    if (part == SG_CHAT_CALL) {
        if (call != p->n_calls)
            p->bad_index = 1;
        if (p->n_calls < 8) {
            snprintf(p->names[p->n_calls], 64, "%.*s", (int)n, s);
            snprintf(p->args[p->n_calls], 1024, "%.*s", (int)n_args, args);
        }
        p->n_calls++;
        return;
    }
    k = strlen(to);
    snprintf(to + k, (part == SG_CHAT_REASONING ? 4096 : 8192) - k, "%.*s",
             (int)n, s);
}

/* Parses text pushed in pieces cut at the given offsets. */
static void
parse(const char *text, int thinking, const size_t *cuts, int n_cuts,
    parsed *out)
{
    sg_chat_parser *p = sg_chat_parser_new(thinking, 1);
    size_t          from = 0, len = strlen(text);

    memset(out, 0, sizeof(*out));
    for (int i = 0; i <= n_cuts; i++) {
        size_t to = i < n_cuts ? cuts[i] : len;
        sg_chat_parser_push(p, text + from, to - from, i == n_cuts, on_part,
                            out);
        from = to;
    }
    sg_chat_parser_free(p);
}

static int
same(const parsed *a, const parsed *b)
{
    if (strcmp(a->reasoning, b->reasoning) || strcmp(a->content, b->content)
        || a->n_calls != b->n_calls || a->bad_index || b->bad_index)
        return 0;
    for (int i = 0; i < a->n_calls && i < 8; i++) {
        if (strcmp(a->names[i], b->names[i]) || strcmp(a->args[i], b->args[i]))
            return 0;
    }
    return 1;
}

static void
test_parse(void)
{
    const char *text =
        "Let me look.</think>Checking.\n\n<｜DSML｜function_calls>\n"
        "<｜DSML｜invoke name=\"get_weather\">\n"
        "<｜DSML｜parameter name=\"city\" string=\"true\">Par\"is\n"
        "</｜DSML｜parameter>\n"
        "<｜DSML｜parameter name=\"days\" string=\"false\">[1, {\"a\": 2}]"
        "</｜DSML｜parameter>\n</｜DSML｜invoke>\n"
        "<｜DSML｜invoke name=\"now\">\n\n</｜DSML｜invoke>\n"
        "</｜DSML｜function_calls>";
    parsed      whole, piece;
    size_t      len = strlen(text), cut[1];
    int         bad = 0;

    parse(text, 1, NULL, 0, &whole);
    CHECK(!strcmp(whole.reasoning, "Let me look.")
          && !strcmp(whole.content, "Checking.") && whole.n_calls == 2
          && !strcmp(whole.names[0], "get_weather")
          && !strcmp(whole.args[0], "{\"city\": \"Par\\\"is\\n\", \"days\": "
                     "[1, {\"a\": 2}]}")
          && !strcmp(whole.names[1], "now") && !strcmp(whole.args[1], "{}"),
          "parse_whole", "reasoning '%s' content '%s' %d calls: %s %s",
          whole.reasoning, whole.content, whole.n_calls, whole.names[0],
          whole.args[0]);
    for (cut[0] = 1; cut[0] < len; cut[0]++) {
        parse(text, 1, cut, 1, &piece);
        if (!same(&whole, &piece)) {
            if (!bad)
                printf("# cut at %zu: '%s' / %d calls\n", cut[0],
                       piece.content, piece.n_calls);
            bad++;
        }
    }
    CHECK(bad == 0, "parse_every_split", "%d splits differ", bad);
    {
        size_t *cuts = malloc(sizeof(size_t) * len);
        for (size_t i = 0; i < len - 1; i++)
            cuts[i] = i + 1;
        parse(text, 1, cuts, (int)len - 1, &piece);
        CHECK(same(&whole, &piece), "parse_byte_by_byte", "differs");
        free(cuts);
    }

    /* malformed or cut short: content, from where the given calls end */
    {
        const char *bad_block = "Hi\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke "
                                "nam=\"x\">\n</｜DSML｜invoke>\n</｜DSML｜"
                                "function_calls>";
        const char *half = "A\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke "
                           "name=\"now\">\n\n</｜DSML｜invoke>\n<｜DSML｜"
                           "invoke name=\"x\">\n<｜DSML｜param";
        const char *bad_json = "\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke "
                               "name=\"f\">\n<｜DSML｜parameter name=\"a\" "
                               "string=\"false\">{oops</｜DSML｜parameter>\n"
                               "</｜DSML｜invoke>\n</｜DSML｜function_calls>";
        parsed p1, p2, p3;
        parse(bad_block, 0, NULL, 0, &p1);
        parse(half, 0, NULL, 0, &p2);
        parse(bad_json, 0, NULL, 0, &p3);
        CHECK(p1.n_calls == 0 && !strcmp(p1.content, bad_block),
              "malformed_block_is_content", "%d calls, '%s'", p1.n_calls,
              p1.content);
        CHECK(p2.n_calls == 1 && !strcmp(p2.names[0], "now")
              && !strcmp(p2.content, "A>\n<｜DSML｜invoke name=\"x\">\n"
                         "<｜DSML｜param"),
              "cut_block_rest_is_content", "%d calls, '%s'", p2.n_calls,
              p2.content);
        CHECK(p3.n_calls == 0 && !strcmp(p3.content, bad_json),
              "bad_json_value_is_content", "%d calls", p3.n_calls);
    }
}

int
main(void)
{
    sg_tokenizer *v3, *v32;

    check_seed_from_env();
    if (mkdtemp(tmpdir) == NULL)
        return 1;
    v3 = load(0);
    v32 = load(1);
    CHECK(v3 && v32, "load_tokenizers", "see above");
    if (v3 && v32) {
        test_model_card(v32, v3);
        test_content_stays_text(v32);
    }
    test_tools();
    test_pyjson();
    test_parse();
    sg_tokenizer_free(v3);
    sg_tokenizer_free(v32);
    check_rm_rf(tmpdir);
    return check_finish();
}
