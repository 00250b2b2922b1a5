/*
 * Byte-level BPE tokenizer driven by a Hugging Face tokenizer.json (the real
 * DeepSeek-V3/V3.2 one), with its pre-tokenizer regexes run by PCRE2, added
 * and special tokens, streaming detokenization and the DeepSeek-V3.2 chat
 * format.  A loaded tokenizer is read-only and shared across threads.
 */
#ifndef SG_TOKENIZER_H
#define SG_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

typedef struct sg_tokenizer sg_tokenizer;

/* -1 with a message naming the file (and field) on error. */
int sg_tokenizer_load(const char *path, sg_tokenizer **out, char *err,
    int errlen);
void sg_tokenizer_free(sg_tokenizer *t);

/* Encodes bytes (any, invalid UTF-8 too).  special: 1 = added/special token
 * strings in the text become their ids (as HF does by default), 0 = they are
 * encoded as plain text.  *ids is malloc'ed; returns 0 or -1 (out of memory). */
int sg_tokenizer_encode(const sg_tokenizer *t, const char *text, size_t len,
    int special, int32_t **ids, size_t *n_ids);

/* The length of the longest prefix of s[0, n) that is valid UTF-8 (RFC
 * 3629: no overlongs, surrogates or code points past U+10FFFF); n when all
 * of it is. */
size_t sg_utf8_valid_prefix(const char *s, size_t n);
/* Bytes as valid UTF-8 text: every ill-formed sequence (each maximal
 * subpart) replaced by U+FFFD, as sg_tokenizer_decode_text does (malloc'ed,
 * NUL-terminated; NULL when out of memory). */
char *sg_utf8_lossy(const char *s, size_t n, size_t *len);

/* The same with added tokens recognized only wholly inside the given
 * spans ([start, end) byte pairs, sorted, not overlapping): the markup of
 * a chat prompt, so that the same strings in a message's content stay
 * text.  The text between added tokens is one run, whatever the spans, so
 * without such strings in the content the ids are encode(special = 1)'s. */
int sg_tokenizer_encode_spans(const sg_tokenizer *t, const char *text,
    size_t len, const size_t *spans, int n_spans, int32_t **ids,
    size_t *n_ids);

/* Decodes ids to their bytes (malloc'ed, NUL-terminated), which need not
 * be valid UTF-8; unknown ids are skipped.  Returns 0 or -1.  decode(encode(
 * bytes)) gives the bytes back. */
int sg_tokenizer_decode(const sg_tokenizer *t, const int32_t *ids,
    size_t n_ids, char **text, size_t *len);
/* Decodes ids to text as Hugging Face's decoder does: decode()'s bytes with
 * every ill-formed UTF-8 sequence (each maximal subpart, as WHATWG and
 * Unicode say) replaced by U+FFFD, so the text is always valid UTF-8.
 * Returns 0 or -1. */
int sg_tokenizer_decode_text(const sg_tokenizer *t, const int32_t *ids,
    size_t n_ids, char **text, size_t *len);

int sg_tokenizer_vocab_size(const sg_tokenizer *t);   /* max id + 1 */
int32_t sg_tokenizer_token_id(const sg_tokenizer *t, const char *token);
/* One id's bytes (valid while the tokenizer lives): 0 no such id, 1 a
 * vocabulary token, 2 an added token. */
int sg_tokenizer_token(const sg_tokenizer *t, int32_t id, const char **bytes,
    size_t *len);
int32_t sg_tokenizer_bos(const sg_tokenizer *t);
int32_t sg_tokenizer_eos(const sg_tokenizer *t);
/* A hash of vocab + merges + added tokens: keys caches of token ids. */
uint64_t sg_tokenizer_hash(const sg_tokenizer *t);
/* Bytes of the longest token (128 for DeepSeek's vocabulary). */
size_t sg_tokenizer_max_token_len(const sg_tokenizer *t);

/* Streaming detokenizer: push ids one by one, get valid UTF-8 text made of
 * whole characters; the concatenation of all outputs + finish equals
 * sg_tokenizer_decode_text().  The start of a character that a later token
 * may complete is held back until it is complete (written then) or cannot
 * be (U+FFFD, then what follows); finish writes U+FFFD for a character the
 * text ends inside of. */
typedef struct sg_detok {
    const sg_tokenizer *t;
    char                pending[8];
    int                 n_pending;
} sg_detok;

void sg_detok_init(sg_detok *d, const sg_tokenizer *t);
/* Appends to out (up to cap bytes); returns bytes written.  One push
 * writes at most 3 * (sg_tokenizer_max_token_len() + 3) bytes (each byte
 * in gives at most 3 out: a lone bad byte is U+FFFD): give at least that
 * much room (bytes past cap would be lost). */
size_t sg_detok_push(sg_detok *d, int32_t id, char *out, size_t cap);
/* The end: at most 3 bytes. */
size_t sg_detok_finish(sg_detok *d, char *out, size_t cap);

/* The DeepSeek-V3.2 chat format. */
typedef struct sg_chat_msg {
    const char *role;      /* "system", "user", "assistant" */
    const char *content;
} sg_chat_msg;

/* Builds the prompt text for the messages and the generation prompt (the
 * V3.1 form; the RAG context builder's); thinking selects "<think>" vs
 * "</think>".  The result is malloc'ed.  The text holds the template's
 * markers as special-token strings, and so may the messages: encode it
 * with the spans of sg_chat_format_spans (sg_tokenizer_encode_spans), never
 * with special = 1, or a message that spells "<｜Assistant｜>" becomes a
 * turn. */
int sg_chat_format(const sg_chat_msg *msgs, int n, int thinking, char **out,
    size_t *len);
/* The same, and the spans where the template's own markers are in it
 * ([start, end) pairs, sorted, malloc'ed; spans may be NULL). */
int sg_chat_format_spans(const sg_chat_msg *msgs, int n, int thinking,
    char **out, size_t *len, size_t **spans, int *n_spans);
/* 0 when every special token the template writes (begin and end of
 * sentence, User, Assistant) is one token of t; -1 with a message naming
 * the one that is not. */
int sg_chat_check(const sg_tokenizer *t, char *err, int errlen);

/*
 * DeepSeek-V3.2's own chat encoding, as its model repository publishes it
 * (encoding/encoding_dsv32.py: encode_messages, render_message,
 * render_tools, encode_arguments_to_dsml, drop_thinking_messages), with
 * its tool calls (DSML) and thinking mode; chat_v32.c follows it function
 * by function.
 */
typedef struct sg_chat_call {
    const char *name;
    const char *arguments;      /* a JSON object's text */
} sg_chat_call;

typedef struct sg_chat_message {
    const char         *role;   /* system, developer, user, assistant,
                                   tool */
    const char         *content;    /* NULL: none */
    const char         *reasoning;  /* assistant: reasoning_content */
    const sg_chat_call *calls;      /* assistant: tool_calls */
    int                 n_calls;
    const char         *tools;      /* system, developer: the JSON array
                                       of OpenAI tools, or NULL */
    const char         *response_format;   /* system, developer: a JSON
                                              schema, or NULL */
} sg_chat_message;

/* The prompt of a conversation in "thinking" (1) or "chat" (0) mode, with
 * the spans where its markup lies (the template's own text: special tokens
 * are recognized there only, see sg_tokenizer_encode_spans).  text and
 * spans are malloc'ed; -1 with the published encoding's complaint, naming
 * the message, in err; SG_CHAT_ENOMEM when memory ran out (the request
 * was fine: retry later). */
#define SG_CHAT_ENOMEM  -2
typedef struct sg_chat_prompt {
    char   *text;
    size_t  len;
    size_t *spans;              /* [start, end) pairs */
    int     n_spans;
} sg_chat_prompt;

int sg_chat_render(const sg_chat_message *msgs, int n, int thinking,
    sg_chat_prompt *out, char *err, int errlen);
void sg_chat_prompt_free(sg_chat_prompt *p);
/* Render and encode in one: the ids (malloc'ed); errors as sg_chat_render. */
int sg_chat_encode(const sg_tokenizer *t, const sg_chat_message *msgs,
    int n, int thinking, int32_t **ids, size_t *n_ids, char *err,
    int errlen);

/*
 * A completion parsed as the published parse_message_from_completion_text
 * does, streamed: reasoning up to "</think>" (thinking mode), then content;
 * with tools, "\n\n<｜DSML｜function_calls" opens a block of invokes, each
 * given as a call once its "</｜DSML｜invoke>" has come and it parsed
 * (parse_tool_calls' rules), its arguments as decode_dsml_to_arguments
 * writes them and checked to be JSON.  Text that may still become a marker
 * is held back.  A block that does not parse, or is cut short, is content
 * (from where the calls given so far end); text after a block is content.
 */
typedef enum {
    SG_CHAT_REASONING = 1,
    SG_CHAT_CONTENT,
    SG_CHAT_CALL                /* s: the name; args: the arguments */
} sg_chat_part;

typedef void (*sg_chat_emit_fn)(void *ctx, sg_chat_part part, int call,
    const char *s, size_t n, const char *args, size_t n_args);

typedef struct sg_chat_parser sg_chat_parser;

sg_chat_parser *sg_chat_parser_new(int thinking, int tools);
void sg_chat_parser_free(sg_chat_parser *p);
/* More text; last = 1 at the end (everything held back is given).  Parts
 * go to emit as soon as they are known; -1 when out of memory. */
int sg_chat_parser_push(sg_chat_parser *p, const char *s, size_t n,
    int last, sg_chat_emit_fn emit, void *ctx);
/* 1 while the text so far is reasoning. */
int sg_chat_parser_reasoning(const sg_chat_parser *p);

/* json.dumps(s, ensure_ascii=False) of DeepSeek's to_json: malloc'ed,
 * NUL-terminated. */
char *sg_chat_json_string(const char *s, size_t n, size_t *len);

#endif
