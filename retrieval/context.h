/*
 * The context builder: turns retrieved passages and a question into a
 * chat prompt that fits a token budget, lays it out for prefix-cache reuse,
 * and keeps citations.
 *
 * Layout (the chat format of engine/include/tokenizer.h):
 *   system:  a fixed instruction (same bytes for every request)
 *   user:    "Passages:\n\n"
 *            SHARED block:    passages of the collection in canonical order
 *                             (collection, id), the same for every question
 *                             over that collection
 *            RETRIEVED block: the question's ranked passages not already in
 *                             the shared block, chosen best-score first,
 *                             then laid out in canonical order
 *            "Question: ..."  (last)
 * Two questions over one collection therefore share system + shared block
 * byte for byte (when the collection fits the budget, the shared block is
 * all of it and every retrieved passage is already inside: the prompts
 * differ only in the question).  shared_fraction sets how much of the
 * budget the shared block may take when the collection does not fit; the
 * retrieved block gets the rest, and any budget it leaves unused extends
 * the shared block.
 *
 * Passage block text (also what the Redis token cache stores ids of):
 *   "[passage <id> | doc <doc_id> | <title>]\n<text>\n\n"
 * Duplicates (same id, or same text) are dropped, first one kept.
 */
#ifndef SG_CONTEXT_H
#define SG_CONTEXT_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"
#include "tokenizer.h"

/* Encodes text to token ids (malloc'ed *ids); 0 or -1.  Only the spans
 * ([start, end) pairs) may hold special tokens, as in
 * sg_tokenizer_encode_spans: the builder gives the chat template's own
 * markers and nothing else, so passages, the question and the system
 * prompt are plain text (a passage that spells "<｜User｜>" gets no new
 * turn).  The real one wraps sg_tokenizer_encode_spans; tests may pass a
 * stand-in. */
typedef int (*sg_ctx_encode_fn)(void *ud, const char *text, size_t len,
    const size_t *spans, int n_spans, int32_t **ids, size_t *n_ids);

/* Adapter: ud is a const sg_tokenizer *. */
int sg_ctx_tokenizer_encode(void *ud, const char *text, size_t len,
    const size_t *spans, int n_spans, int32_t **ids, size_t *n_ids);

/* Makes the chat prompt from messages and the spans of the template's
 * markers in it (same contract as sg_chat_format_spans); NULL in the
 * options = sg_chat_format_spans. */
typedef int (*sg_ctx_format_fn)(const sg_chat_msg *msgs, int n, int thinking,
    char **out, size_t *len, size_t **spans, int *n_spans);

/* The defaults, written once (sg_ctx_opts_default, the nginx module's
 * sparsegate_context_budget): a prompt budget of 32768 tokens, 92% of the
 * passage budget for the shared block. */
#define SG_CTX_BUDGET           32768
#define SG_CTX_SHARED_FRACTION  0.92

typedef struct sg_ctx_opts {
    int               budget;          /* prompt tokens; 0 = SG_CTX_BUDGET */
    int               model_limit;     /* hard cap (context - max_tokens);
                                          0 = none; budget = min of both */
    double            shared_fraction; /* (0, 1]: share of the passage budget
                                          the shared block may take before
                                          retrieved passages; <= 0 = 0.92
                                          (no shared block: pass shared =
                                          NULL) */
    const char       *system_prompt;   /* NULL = the built-in one */
    int               thinking;
    sg_ctx_encode_fn  encode;          /* required */
    void             *encode_ud;
    sg_ctx_format_fn  format;          /* NULL = sg_chat_format_spans */
} sg_ctx_opts;

void sg_ctx_opts_default(sg_ctx_opts *o);

typedef struct sg_citation {
    char   *id;
    char   *doc_id;
    char   *title;
    char   *collection;
    double  score;         /* search score (0 for shared-only passages) */
    int     rank;          /* 0-based rank in the retrieved list; -1 = none */
    int     shared;        /* 1: in the shared block */
    int     n_tokens;      /* tokens of its block */
} sg_citation;

typedef struct sg_context {
    char        *prompt;          /* full prompt text, special tokens as text */
    size_t       prompt_len;
    int32_t     *ids;             /* the prompt's token ids (n_tokens) */
    int          n_tokens;
    int          prefix_tokens;   /* ids before the first question-specific
                                     token: system + shared block */
    sg_citation *cites;           /* every passage in the prompt, in order */
    size_t       n_cites;
    int          n_shared;        /* passages in the shared block */
    int          n_retrieved;     /* passages in the retrieved block */
    int          dropped_dupes;
    int          dropped_budget;  /* retrieved passages left out for room */
    int          encoded;         /* passages tokenized here (cache misses) */
} sg_context;

/*
 * Builds the prompt.  shared may be NULL (no shared block); ranked is the
 * search result, best first.  Passages without tokens (n_tokens < 0) are
 * encoded here and their tokens stored back into the lists, so the caller
 * can put them into the token cache afterwards.  The prompt ids are the
 * concatenation of the encodings of its pieces (head, blocks, tail), so
 * cached blocks are never re-encoded; n_tokens <= the budget always.
 * Returns 0, or an SG_CTX_E* code with a message.
 */
#define SG_CTX_EFAIL     -1     /* the options or the format (a bug) */
#define SG_CTX_ETOOLONG  -2     /* the question and the template alone are
                                   over the budget: the request's fault */
#define SG_CTX_ENOMEM    -3     /* out of memory (the encoder fails only
                                   so): try again later */
int sg_context_build(sg_passage_list *shared, sg_passage_list *ranked,
    const char *question, const sg_ctx_opts *o, sg_context *out, char *err,
    int errlen);
void sg_context_free(sg_context *c);

/* The block text of one passage (malloc'ed, NUL-terminated). */
char *sg_ctx_block(const sg_passage *p, size_t *len);

/* Tokens two prompts share from the start (for measuring prefix reuse). */
size_t sg_ctx_common_prefix(const int32_t *a, size_t na, const int32_t *b,
    size_t nb);

#endif
