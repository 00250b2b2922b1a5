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

/* A piece of a text: its bytes [off, off + len). */
typedef struct sg_text_span {
    size_t off;
    size_t len;
} sg_text_span;

/* Encodes bytes whose only special tokens are the marked spans (sorted,
 * not overlapping): a span that is an added token's whole text becomes its
 * id; everything else is plain text, added-token strings included (as
 * special = 0).  A chat prompt is encoded so: the template's markers
 * special, the messages text.  Returns 0 or -1 (out of memory). */
int sg_tokenizer_encode_marked(const sg_tokenizer *t, const char *text,
    size_t len, const sg_text_span *marks, size_t n_marks, int32_t **ids,
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

/* Builds the prompt text for the messages and the generation prompt;
 * thinking selects "<think>" vs "</think>".  The result is malloc'ed.  The
 * text holds the template's markers as special-token strings, and so may
 * the messages: encode with sg_chat_encode (or the marks of
 * sg_chat_format_marked), never with special = 1, or a message that spells
 * "<｜Assistant｜>" becomes a turn. */
int sg_chat_format(const sg_chat_msg *msgs, int n, int thinking, char **out,
    size_t *len);
/* The same, and where the template's own markers are in it (sorted,
 * malloc'ed; marks may be NULL). */
int sg_chat_format_marked(const sg_chat_msg *msgs, int n, int thinking,
    char **out, size_t *len, sg_text_span **marks, size_t *n_marks);
/* 0 when every special token the template writes (begin and end of
 * sentence, User, Assistant) is one token of t; -1 with a message naming
 * the one that is not. */
int sg_chat_check(const sg_tokenizer *t, char *err, int errlen);
/* The messages' prompt as token ids: the template's markers are special
 * tokens, the messages' content is text.  *ids is malloc'ed; 0 or -1. */
int sg_chat_encode(const sg_tokenizer *t, const sg_chat_msg *msgs, int n,
    int thinking, int32_t **ids, size_t *n_ids);

#endif
