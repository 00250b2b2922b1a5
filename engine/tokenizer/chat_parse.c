/*
 * A completion of DeepSeek-V3.2 parsed as the model repository's
 * encoding/encoding_dsv32.py parses one, but as it streams in:
 *
 *   parse_message_from_completion_text   sg_chat_parser_push: reasoning up
 *                                        to "</think>", content up to
 *                                        "\n\n<｜DSML｜function_calls"
 *   parse_tool_calls                     parse_block, parse_invoke
 *   _read_until_stop                     until
 *   decode_dsml_to_arguments             arguments
 *
 * That code asserts on what it does not expect; here such a block is given
 * back as content, from where the calls already given end (a call is given
 * once its invoke has closed and parsed).  The published parser wants
 * nothing but EOS after a block: text there is content here, and may open
 * another block.
 */
#include <stdlib.h>
#include <string.h>

#include "chat_internal.h"
#include "tokenizer.h"

#define DSML        "｜DSML｜"
#define END_THINK   "</think>"
#define CALLS_OPEN  "\n\n<" DSML "function_calls"
#define CALLS_END   "</" DSML "function_calls>"
#define INVOKE      "<" DSML "invoke"
#define INVOKE_END  "</" DSML "invoke"
#define PARAM       "<" DSML "parameter"
#define PARAM_END   "/" DSML "parameter"

enum { REASONING, CONTENT, BLOCK, TEXT_ONLY };

struct sg_chat_parser {
    int     mode;
    int     tools;
    int     calls;          /* calls given so far */
    char   *buf;            /* text not given yet */
    size_t  len, cap;
    size_t  pos;            /* BLOCK: where parsing goes on in buf */
};

typedef struct emitter {
    sg_chat_emit_fn  fn;
    void            *ctx;
} emitter;

sg_chat_parser *
sg_chat_parser_new(int thinking, int tools)
{
    sg_chat_parser *p = calloc(1, sizeof(*p));

    if (p == NULL)
        return NULL;
    p->mode = thinking ? REASONING : CONTENT;
    p->tools = tools;
    return p;
}

void
sg_chat_parser_free(sg_chat_parser *p)
{
    if (p == NULL)
        return;
    free(p->buf);
    free(p);
}

int
sg_chat_parser_reasoning(const sg_chat_parser *p)
{
    return p->mode == REASONING;
}

char *
sg_chat_json_string(const char *s, size_t n, size_t *len)
{
    sg_strbuf b = { 0 };

    sg_pyjson_str(&b, s, n);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    *len = b.n;
    return b.p;
}

static void
give(emitter *e, sg_chat_part part, const char *s, size_t n)
{
    if (n > 0)
        e->fn(e->ctx, part, -1, s, n, NULL, 0);
}

/* Drops the first n bytes of the buffer. */
static void
consume(sg_chat_parser *p, size_t n)
{
    memmove(p->buf, p->buf + n, p->len - n);
    p->len -= n;
}

static const char *
find(const char *s, size_t n, const char *what)
{
    size_t m = strlen(what);

    if (m > n)
        return NULL;
    for (size_t i = 0; i + m <= n; i++) {
        if (s[i] == what[0] && memcmp(s + i, what, m) == 0)
            return s + i;
    }
    return NULL;
}

/* The length of the longest end of s that begins what (and is shorter
 * than it): text to hold back, as the next text may complete it. */
static size_t
partial_end(const char *s, size_t n, const char *what)
{
    size_t m = strlen(what);

    for (size_t k = m - 1 < n ? m - 1 : n; k > 0; k--) {
        if (memcmp(s + n - k, what, k) == 0)
            return k;
    }
    return 0;
}

/* _read_until_stop: the first of the stops at or after from; -1 when none
 * (yet); *at gets its start. */
static int
until(const char *s, size_t n, size_t from, const char *const *stops,
    int n_stops, size_t *at)
{
    int best = -1;

    for (int i = 0; i < n_stops; i++) {
        const char *hit = find(s + from, n - from, stops[i]);
        if (hit != NULL && (best < 0 || (size_t)(hit - s) < *at)) {
            best = i;
            *at = hit - s;
        }
    }
    return best;
}

enum { PARSED, MORE, BAD };

static int
is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f'
           || c == '\v';
}

/* decode_dsml_to_arguments: {"key": value, ...} with to_json of each key
 * and of string values, other values as they are (checked to be JSON). */
static int
add_argument(sg_strbuf *args, const char *name, size_t name_len,
    const char *value, size_t value_len, int string)
{
    cJSON *v;

    if (args->n > 1)
        sg_strbuf_add(args, ", ", 2);
    sg_pyjson_str(args, name, name_len);
    sg_strbuf_add(args, ": ", 2);
    if (string) {
        sg_pyjson_str(args, value, value_len);
        return 0;
    }
    v = cJSON_ParseWithLengthOpts(value, value_len, NULL, 0);
    if (v == NULL)
        return -1;
    cJSON_Delete(v);
    sg_strbuf_add(args, value, value_len);
    return 0;
}

/* One invoke from s[from] (just past "<｜DSML｜invoke"), as parse_tool_calls
 * reads it, up to and including "</｜DSML｜invoke": *end past it. */
static int
parse_invoke(const char *s, size_t n, size_t from, size_t *end,
    emitter *e, int index)
{
    static const char *const name_stops[] = { PARAM, INVOKE_END };
    static const char *const value_stops[] = { PARAM_END };
    sg_strbuf   args = { 0 }, seen = { 0 };
    const char *c, *name;
    size_t      at = 0, k, name_len;
    int         stop, rc = BAD;

    stop = until(s, n, from, name_stops, 2, &at);
    if (stop < 0)
        return MORE;
    /* ^\s*name="(.*?)">\n$ ($: at the end or before a last "\n") */
    c = s + from;
    k = at - from;
    while (k > 0 && is_space(*c)) {
        c++;
        k--;
    }
    if (k >= 1 && c[k - 1] == '\n' && k >= 4 && memcmp(c + k - 4, "\">\n\n", 4)
        == 0)
        k--;
    if (k < 9 || memcmp(c, "name=\"", 6) != 0
        || memcmp(c + k - 3, "\">\n", 3) != 0)
        return BAD;
    name = c + 6;
    name_len = k - 9;
    from = at + strlen(name_stops[stop]);

    sg_strbuf_add(&args, "{", 1);
    while (stop == 0) {
        const char *q, *pn, *v;
        size_t      qn, pn_len = 0, v_len, vat = 0;
        int         string;

        if (until(s, n, from, value_stops, 1, &vat) < 0) {
            rc = MORE;
            goto out;
        }
        /* ^ name="(.*?)" string="(true|false)">(.*?)<$ */
        q = s + from;
        qn = vat - from;
        if (qn >= 2 && q[qn - 1] == '\n' && q[qn - 2] == '<')
            qn--;
        if (qn < 8 || memcmp(q, " name=\"", 7) != 0 || q[qn - 1] != '<')
            goto out;
        pn = q + 7;
        v = NULL;
        string = 0;
        for (const char *x = pn; x < q + qn - 1; x++) {
            if (*x != '"')
                continue;
            if ((size_t)(q + qn - x) >= 16
                && memcmp(x, "\" string=\"true\">", 16) == 0)
            {
                v = x + 16;
                string = 1;
            } else if ((size_t)(q + qn - x) >= 17
                       && memcmp(x, "\" string=\"false\">", 17) == 0)
            {
                v = x + 17;
            }
            if (v != NULL) {
                pn_len = x - pn;
                break;
            }
        }
        if (v == NULL || v > q + qn - 1)
            goto out;
        v_len = q + qn - 1 - v;
        /* a name twice: "Duplicate parameter name" */
        sg_strbuf_add(&seen, "\n", 1);
        sg_strbuf_add(&seen, pn, pn_len);
        sg_strbuf_add(&seen, "\n", 1);
        if (seen.p != NULL
            && find(seen.p, seen.n - pn_len - 2, seen.p + seen.n - pn_len - 2)
               != NULL)
            goto out;
        if (add_argument(&args, pn, pn_len, v, v_len, string) != 0)
            goto out;
        from = vat + strlen(PARAM_END);
        stop = until(s, n, from, name_stops, 2, &at);
        if (stop < 0) {
            rc = MORE;
            goto out;
        }
        if (at - from != 2 || memcmp(s + from, ">\n", 2) != 0)
            goto out;
        from = at + strlen(name_stops[stop]);
    }
    sg_strbuf_add(&args, "}", 1);
    if (args.oom)
        goto out;
    e->fn(e->ctx, SG_CHAT_CALL, index, name, name_len, args.p, args.n);
    *end = from;
    rc = PARSED;
out:
    free(args.p);
    free(seen.p);
    return rc;
}

/* The block from p->pos on: each ">\n" + invoke given as it completes;
 * "</｜DSML｜function_calls>" ends it. */
static int
parse_block(sg_chat_parser *p, emitter *e)
{
    static const char *const stops[] = { INVOKE, CALLS_END };
    size_t at = 0, end;
    int    stop, rc;

    for (;;) {
        stop = until(p->buf, p->len, p->pos, stops, 2, &at);
        if (p->len - p->pos >= 2 && memcmp(p->buf + p->pos, ">\n", 2) != 0)
            return BAD;
        if (stop < 0)
            return MORE;
        if (at - p->pos != 2)
            return BAD;
        if (stop == 1) {
            consume(p, at + strlen(CALLS_END));
            p->pos = 0;
            p->mode = CONTENT;
            return PARSED;
        }
        rc = parse_invoke(p->buf, p->len, at + strlen(INVOKE), &end, e,
                          p->calls);
        if (rc != PARSED)
            return rc;
        p->calls++;
        /* the calls given are done with: a later failure gives back the
         * text from here */
        consume(p, end);
        p->pos = 0;
    }
}

/* Gives the text before marker as part; 1 when the marker is there (at
 * the buffer's start now), 0 when all that can be given was (the end
 * that may begin the marker held back, unless last). */
static int
until_marker(sg_chat_parser *p, emitter *e, sg_chat_part part,
    const char *marker, int last)
{
    const char *hit = find(p->buf, p->len, marker);
    size_t      hold;

    if (hit != NULL) {
        give(e, part, p->buf, hit - p->buf);
        consume(p, hit - p->buf);
        return 1;
    }
    hold = last ? 0 : partial_end(p->buf, p->len, marker);
    give(e, part, p->buf, p->len - hold);
    consume(p, p->len - hold);
    return 0;
}

int
sg_chat_parser_push(sg_chat_parser *p, const char *s, size_t n, int last,
    sg_chat_emit_fn fn, void *ctx)
{
    emitter     e = { fn, ctx };

    if (p->len + n + 1 > p->cap) {
        size_t cap = p->cap ? p->cap : 256;
        char  *b;
        while (cap < p->len + n + 1)
            cap *= 2;
        b = realloc(p->buf, cap);
        if (b == NULL)
            return -1;
        p->buf = b;
        p->cap = cap;
    }
    memcpy(p->buf + p->len, s, n);
    p->len += n;

    for (;;) {
        switch (p->mode) {

        case REASONING:
            if (!until_marker(p, &e, SG_CHAT_REASONING, END_THINK, last))
                return 0;
            consume(p, strlen(END_THINK));
            p->mode = CONTENT;
            continue;

        case CONTENT:
            if (!p->tools) {
                give(&e, SG_CHAT_CONTENT, p->buf, p->len);
                p->len = 0;
                return 0;
            }
            if (!until_marker(p, &e, SG_CHAT_CONTENT, CALLS_OPEN, last))
                return 0;
            p->pos = strlen(CALLS_OPEN);
            p->mode = BLOCK;
            continue;

        case BLOCK:
            switch (parse_block(p, &e)) {
            case PARSED:
                continue;
            case MORE:
                if (!last)
                    return 0;
                p->mode = TEXT_ONLY;            /* cut short */
                continue;
            default:
                p->mode = TEXT_ONLY;
                continue;
            }

        default:                    /* TEXT_ONLY */
            give(&e, SG_CHAT_CONTENT, p->buf, p->len);
            p->len = 0;
            return 0;
        }
    }
}
