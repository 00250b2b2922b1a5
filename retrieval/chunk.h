/*
 * Cutting a document into passages of about N tokens on paragraph, then
 * sentence, then word boundaries.  Token counts are estimated from the
 * text (about 4 bytes a token for English under the DeepSeek tokenizer)
 * unless a counter is given: ingest does not need the tokenizer.
 */
#ifndef SG_CHUNK_H
#define SG_CHUNK_H

#include <stddef.h>

typedef long (*sg_chunk_count_fn)(void *ud, const char *text, size_t len);

typedef struct sg_chunks {
    char   **v;       /* NUL-terminated passage texts */
    size_t   n;
    size_t   cap;
} sg_chunks;

/* 0 or -1 (out of memory).  max_tokens <= 0: 256.  count NULL: estimate. */
int sg_chunk_text(const char *text, int max_tokens, sg_chunk_count_fn count,
    void *ud, sg_chunks *out);
void sg_chunks_free(sg_chunks *c);

/* The estimate: bytes / 4, at least 1 for non-empty text. */
long sg_chunk_estimate(void *ud, const char *text, size_t len);

#endif
