/*
 * DeepSeek-V3.2's chat encoding.  The model's repository publishes it as
 * code (encoding/encoding_dsv32.py, with test_input.json / test_output.txt)
 * and no chat template; this file follows that code function by function:
 *
 *   encode_messages          sg_chat_render (BOS, then each message)
 *   render_message           render_message (one message by its role)
 *   find_last_user_index     last_user (user and developer count)
 *   render_tools             render_tools (TOOLS_SYSTEM_TEMPLATE)
 *   tool_calls_template,     render_calls
 *   tool_call_template,
 *   encode_arguments_to_dsml
 *   drop_thinking_messages   nothing to do: render_message writes an
 *                            assistant's reasoning only after the last
 *                            user message, which that function never drops
 *   to_json                  sg_pyjson_value (chat_json.c)
 *
 * Its assertions are errors naming the message.  Where the text comes from
 * the template it is markup (special tokens are recognized there); the
 * messages' own text (content, reasoning, names, arguments, schemas) is
 * content, so a "<｜User｜>" typed by a user stays text.
 */
#include <stdlib.h>
#include <string.h>

#include "chat_internal.h"
#include "tokenizer.h"
#include "util/err.h"

#define BOS         "<｜begin▁of▁sentence｜>"
#define EOS         "<｜end▁of▁sentence｜>"
#define USER        "<｜User｜>"
#define ASSISTANT   "<｜Assistant｜>"
#define THINK       "<think>"
#define END_THINK   "</think>"
#define DSML        "｜DSML｜"

/* TOOLS_SYSTEM_TEMPLATE with its tokens written in; the tool schemas go
 * between its two parts (as test_output.txt shows the template). */
static const char tools_head[] =
    "## Tools\n"
    "\n"
    "You have access to a set of tools you can use to answer the user's "
    "question.\n"
    "You can invoke functions by writing a \"<" DSML "function_calls>\" "
    "block like the following as part of your reply to the user:\n"
    "<" DSML "function_calls>\n"
    "<" DSML "invoke name=\"$FUNCTION_NAME\">\n"
    "<" DSML "parameter name=\"$PARAMETER_NAME\" string=\"true|false\">"
    "$PARAMETER_VALUE</" DSML "parameter>\n"
    "...\n"
    "</" DSML "invoke>\n"
    "<" DSML "invoke name=\"$FUNCTION_NAME2\">\n"
    "...\n"
    "</" DSML "invoke>\n"
    "</" DSML "function_calls>\n"
    "\n"
    "String and scalar parameters should be specified as is without any "
    "escaping or quotes, while lists and objects should use JSON format. "
    "The \"string\" attribute should be set to \"true\" for string type "
    "parameters and \"false\" for other types (numbers, booleans, arrays, "
    "objects).\n"
    "\n"
    "If the thinking_mode is enabled, then after function results you "
    "should strongly consider outputting a thinking block. Here is an "
    "example:\n"
    "\n"
    "<" DSML "function_calls>\n"
    "...\n"
    "</" DSML "function_calls>\n"
    "\n"
    "<function_results>\n"
    "...\n"
    "</function_results>\n"
    "\n"
    THINK "...thinking about results" END_THINK "\n"
    "\n"
    "Here are the functions available in JSONSchema format:\n"
    "<functions>\n";
static const char tools_tail[] = "\n</functions>\n";

static const char response_format_head[] =
    "## Response Format:\n\nYou MUST strictly adhere to the following "
    "schema to reply:\n";

/* The prompt being built: text, and the spans of markup in it. */
typedef struct prompt {
    sg_strbuf  b;
    size_t    *spans;
    int        n_spans, cap_spans;
    int        oom;
} prompt;

static void
markup(prompt *p, const char *s)
{
    size_t start = p->b.n;

    sg_strbuf_str(&p->b, s);
    if (p->b.n == start)
        return;
    if (p->n_spans > 0 && p->spans[2 * p->n_spans - 1] == start) {
        p->spans[2 * p->n_spans - 1] = p->b.n;      /* extends the last */
        return;
    }
    if (p->n_spans == p->cap_spans) {
        int     cap = p->cap_spans ? 2 * p->cap_spans : 32;
        size_t *s2 = realloc(p->spans, 2 * sizeof(size_t) * cap);
        if (s2 == NULL) {
            p->oom = 1;
            return;
        }
        p->spans = s2;
        p->cap_spans = cap;
    }
    p->spans[2 * p->n_spans] = start;
    p->spans[2 * p->n_spans + 1] = p->b.n;
    p->n_spans++;
}

static void
text(prompt *p, const char *s)
{
    sg_strbuf_str(&p->b, s);
}

static int
is_role(const sg_chat_message *m, const char *role)
{
    return strcmp(m->role, role) == 0;
}

static int
last_user(const sg_chat_message *msgs, int n)
{
    for (int i = n - 1; i >= 0; i--) {
        if (is_role(&msgs[i], "user") || is_role(&msgs[i], "developer"))
            return i;
    }
    return -1;
}

/* "\n\n" + render_tools(tools): each tool's "function" as to_json writes
 * it, one a line. */
static int
render_tools(prompt *p, const char *tools, int i, char *err, int errlen)
{
    cJSON *arr = cJSON_Parse(tools), *t, *fn;
    int    first = 1;

    if (!cJSON_IsArray(arr)) {
        cJSON_Delete(arr);
        return sg_err(err, errlen, "messages[%d]: tools is not a JSON array",
                      i);
    }
    markup(p, "\n\n");
    markup(p, tools_head);
    cJSON_ArrayForEach(t, arr) {
        fn = cJSON_GetObjectItemCaseSensitive(t, "function");
        if (!cJSON_IsObject(fn)) {
            cJSON_Delete(arr);
            return sg_err(err, errlen, "messages[%d]: a tool without a "
                          "\"function\" object", i);
        }
        if (!first)
            text(p, "\n");
        sg_pyjson_value(&p->b, fn);
        first = 0;
    }
    markup(p, tools_tail);
    cJSON_Delete(arr);
    return 0;
}

/* "\n\n" + response_format_template with to_json(schema). */
static int
render_response_format(prompt *p, const char *schema, int i, char *err,
    int errlen)
{
    cJSON *v = cJSON_Parse(schema);

    if (v == NULL)
        return sg_err(err, errlen, "messages[%d]: response_format is not "
                      "JSON", i);
    markup(p, "\n\n");
    markup(p, response_format_head);
    sg_pyjson_value(&p->b, v);
    cJSON_Delete(v);
    return 0;
}

/* What a system or developer message carries: its tools, its response
 * format. */
static int
render_extras(prompt *p, const sg_chat_message *m, int i, char *err,
    int errlen)
{
    if (m->tools && render_tools(p, m->tools, i, err, errlen) != 0)
        return -1;
    if (m->response_format
        && render_response_format(p, m->response_format, i, err, errlen)
           != 0)
        return -1;
    return 0;
}

/* tool_calls_template over tool_call_template over
 * encode_arguments_to_dsml: "\n\n" first, as render_message adds it. */
static int
render_calls(prompt *p, const sg_chat_message *m, int i, char *err,
    int errlen)
{
    markup(p, "\n\n<" DSML "function_calls>\n");
    for (int c = 0; c < m->n_calls; c++) {
        const sg_chat_call *call = &m->calls[c];
        cJSON *args, *a;
        int    first = 1;

        if (call->name == NULL || call->arguments == NULL)
            return sg_err(err, errlen, "messages[%d].tool_calls[%d]: "
                          "a function needs a name and arguments", i, c);
        args = cJSON_Parse(call->arguments);
        if (!cJSON_IsObject(args)) {
            cJSON_Delete(args);
            return sg_err(err, errlen, "messages[%d].tool_calls[%d]."
                          "function.arguments: not a JSON object", i, c);
        }
        if (c > 0)
            markup(p, "\n");
        markup(p, "<" DSML "invoke name=\"");
        text(p, call->name);
        markup(p, "\">\n");
        cJSON_ArrayForEach(a, args) {
            if (!first)
                markup(p, "\n");
            markup(p, "<" DSML "parameter name=\"");
            text(p, a->string);
            markup(p, cJSON_IsString(a) ? "\" string=\"true\">"
                                        : "\" string=\"false\">");
            if (cJSON_IsString(a))
                text(p, a->valuestring);
            else
                sg_pyjson_value(&p->b, a);
            markup(p, "</" DSML "parameter>");
            first = 0;
        }
        markup(p, "\n</" DSML "invoke>");
        cJSON_Delete(args);
    }
    markup(p, "\n</" DSML "function_calls>");
    return 0;
}

static int
render_message(prompt *p, const sg_chat_message *msgs, int n, int i,
    int thinking, char *err, int errlen)
{
    const sg_chat_message *m = &msgs[i];
    int last = last_user(msgs, n);

    if (is_role(m, "system")) {
        text(p, m->content ? m->content : "");
        if (render_extras(p, m, i, err, errlen) != 0)
            return -1;

    } else if (is_role(m, "developer")) {
        if (m->content == NULL || m->content[0] == '\0')
            return sg_err(err, errlen, "messages[%d]: a developer message "
                          "needs content", i);
        markup(p, USER);
        if (render_extras(p, m, i, err, errlen) != 0)
            return -1;
        markup(p, "\n\n# The user's message is: ");
        text(p, m->content);
        markup(p, ASSISTANT);
        markup(p, i == last && thinking ? THINK : END_THINK);

    } else if (is_role(m, "user")) {
        if (m->content == NULL)
            return sg_err(err, errlen, "messages[%d]: a user message needs "
                          "content", i);
        markup(p, USER);
        text(p, m->content);
        markup(p, ASSISTANT);
        markup(p, i == last && thinking ? THINK : END_THINK);

    } else if (is_role(m, "tool")) {
        int a = i - 1, order;

        while (a >= 0 && is_role(&msgs[a], "tool"))
            a--;
        if (a < 0 || !is_role(&msgs[a], "assistant"))
            return sg_err(err, errlen, "messages[%d]: a tool message must "
                          "follow an assistant message with tool_calls", i);
        order = i - a;
        if (msgs[a].n_calls < order)
            return sg_err(err, errlen, "messages[%d]: more tool results "
                          "than messages[%d] has tool_calls (%d)", i, a,
                          msgs[a].n_calls);
        if (m->content == NULL)
            return sg_err(err, errlen, "messages[%d]: a tool message needs "
                          "content", i);
        if (order == 1)
            markup(p, "\n\n<function_results>");
        markup(p, "\n<result>");
        text(p, m->content);
        markup(p, "</result>");
        if (order == msgs[a].n_calls) {
            markup(p, "\n</function_results>");
            markup(p, i >= last && thinking ? "\n\n" THINK
                                            : "\n\n" END_THINK);
        }

    } else if (is_role(m, "assistant")) {
        if (thinking && i > last) {
            if ((m->reasoning == NULL || m->reasoning[0] == '\0')
                && m->n_calls == 0)
                return sg_err(err, errlen, "messages[%d]: in thinking mode "
                              "an assistant message after the last user "
                              "message needs reasoning_content or "
                              "tool_calls", i);
            text(p, m->reasoning ? m->reasoning : "");
            markup(p, END_THINK);
        }
        text(p, m->content ? m->content : "");
        if (m->n_calls > 0 && render_calls(p, m, i, err, errlen) != 0)
            return -1;
        markup(p, EOS);

    } else {
        return sg_err(err, errlen, "messages[%d]: unknown role \"%s\"", i,
                      m->role);
    }
    return 0;
}

void
sg_chat_prompt_free(sg_chat_prompt *p)
{
    free(p->text);
    free(p->spans);
    memset(p, 0, sizeof(*p));
}

int
sg_chat_render(const sg_chat_message *msgs, int n, int thinking,
    sg_chat_prompt *out, char *err, int errlen)
{
    prompt p;

    memset(&p, 0, sizeof(p));
    memset(out, 0, sizeof(*out));
    for (int i = 0; i < n; i++) {
        if (msgs[i].role == NULL) {
            return sg_err(err, errlen, "messages[%d]: no role", i);
        }
    }
    markup(&p, BOS);
    for (int i = 0; i < n; i++) {
        if (render_message(&p, msgs, n, i, thinking, err, errlen) != 0) {
            free(p.b.p);
            free(p.spans);
            return -1;
        }
    }
    if (p.b.oom || p.oom) {
        free(p.b.p);
        free(p.spans);
        sg_err(err, errlen, "out of memory");
        return SG_CHAT_ENOMEM;
    }
    out->text = p.b.p;
    out->len = p.b.n;
    out->spans = p.spans;
    out->n_spans = p.n_spans;
    return 0;
}

int
sg_chat_encode(const sg_tokenizer *t, const sg_chat_message *msgs, int n,
    int thinking, int32_t **ids, size_t *n_ids, char *err, int errlen)
{
    sg_chat_prompt p;
    int            rc;

    rc = sg_chat_render(msgs, n, thinking, &p, err, errlen);
    if (rc != 0)
        return rc;
    rc = sg_tokenizer_encode_spans(t, p.text, p.len, p.spans, p.n_spans, ids,
                                   n_ids);
    sg_chat_prompt_free(&p);
    if (rc != 0) {
        sg_err(err, errlen, "out of memory");
        return SG_CHAT_ENOMEM;
    }
    return 0;
}
