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

/* Decodes ids to bytes (malloc'ed, NUL-terminated); unknown ids are
 * skipped.  Returns 0 or -1. */
int sg_tokenizer_decode(const sg_tokenizer *t, const int32_t *ids,
    size_t n_ids, char **text, size_t *len);

int sg_tokenizer_vocab_size(const sg_tokenizer *t);   /* max id + 1 */
int32_t sg_tokenizer_token_id(const sg_tokenizer *t, const char *token);
int32_t sg_tokenizer_bos(const sg_tokenizer *t);
int32_t sg_tokenizer_eos(const sg_tokenizer *t);
/* A hash of vocab + merges + added tokens: keys caches of token ids. */
uint64_t sg_tokenizer_hash(const sg_tokenizer *t);
/* Bytes of the longest token (128 for DeepSeek's vocabulary). */
size_t sg_tokenizer_max_token_len(const sg_tokenizer *t);

/* Streaming detokenizer: push ids one by one, get only complete UTF-8
 * characters; the concatenation of all outputs + finish equals decode(). */
typedef struct sg_detok {
    const sg_tokenizer *t;
    char                pending[8];
    int                 n_pending;
} sg_detok;

void sg_detok_init(sg_detok *d, const sg_tokenizer *t);
/* Appends to out (up to cap bytes); returns bytes written.  One push
 * writes at most sg_tokenizer_max_token_len() + 3 bytes: give at least
 * that much room (bytes past cap would be lost). */
size_t sg_detok_push(sg_detok *d, int32_t id, char *out, size_t cap);
size_t sg_detok_finish(sg_detok *d, char *out, size_t cap);

/* The DeepSeek-V3.2 chat format. */
typedef struct sg_chat_msg {
    const char *role;      /* "system", "user", "assistant" */
    const char *content;
} sg_chat_msg;

/* Builds the prompt text (with special-token strings) for the messages and
 * the generation prompt; thinking selects "<think>" vs "</think>".  The
 * result is malloc'ed; encode it with special = 1. */
int sg_chat_format(const sg_chat_msg *msgs, int n, int thinking, char **out,
    size_t *len);

#endif
