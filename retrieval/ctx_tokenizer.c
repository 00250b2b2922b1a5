/*
 * The context builder's encoder over the engine's tokenizer (its own file:
 * a program that never uses it does not need the tokenizer linked).
 */
#include "context.h"
#include "tokenizer.h"

int
sg_ctx_tokenizer_encode(void *ud, const char *text, size_t len,
    const size_t *spans, int n_spans, int32_t **ids, size_t *n_ids)
{
    return sg_tokenizer_encode_spans((const sg_tokenizer *)ud, text, len,
                                     spans, n_spans, ids, n_ids);
}
