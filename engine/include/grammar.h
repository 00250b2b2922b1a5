/*
 * Constrained decoding: a grammar says, at each step of a generation,
 * which tokens keep the output a valid prefix of its language, and when it
 * is complete.  Two languages are built here: a JSON value (any object, or
 * one a JSON Schema describes) and DeepSeek-V3.2's DSML tool calls (the
 * "<｜DSML｜function_calls>" block of encoding_dsv32.py, its parameters
 * typed by each function's JSON Schema); either may be preceded by free
 * text up to a marker (the reasoning of thinking mode, up to "</think>").
 *
 * A host compiles a grammar from a tokenizer's vocabulary (sg_vocab) and
 * hands it to the engine in sg_request.grammar; the engine keeps each
 * request's own state and runs the token masks on its threads.  A grammar
 * is reference-counted (atomically): the host may keep one for many
 * requests.  Its mask cache is used under a lock (a device group's ranks
 * sample on their own threads).
 *
 * The budget: every allowed token leaves a completion that fits in the
 * tokens still allowed (max_tokens), so a generation that runs out of
 * tokens still ends complete: each token is at least one byte and every
 * byte is a token, so the fewest bytes to finish bound the tokens needed.
 */
#ifndef SG_GRAMMAR_H
#define SG_GRAMMAR_H

#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"

typedef struct sg_vocab sg_vocab;
typedef struct sg_grammar sg_grammar;
typedef struct sg_grammar_state sg_grammar_state;

/* A tokenizer's tokens as byte strings, sorted for the masks' walk: the
 * vocabulary's tokens and, of its added tokens, only "<think>", "</think>"
 * and "｜DSML｜" (DeepSeek-V3.2's); n_vocab is the model's (ids past the
 * tokenizer's are never allowed).  Read-only once made: share it. */
sg_vocab *sg_vocab_new(const sg_tokenizer *t, int n_vocab, char *err,
    int errlen);
void sg_vocab_free(sg_vocab *v);

/* Options of both languages. */
typedef struct sg_grammar_opts {
    const char *gate;       /* free text up to and including this marker
                               comes first ("</think>"), or NULL */
} sg_grammar_opts;

/* A JSON value: schema is a JSON Schema (JSON text), or NULL for any JSON
 * object.  Keywords: type (one or a list), properties, required,
 * additionalProperties, items, minItems, maxItems, enum, const, and the
 * annotations title, description, default, examples, $schema, $id,
 * $comment; any other is refused with its path in err.  Objects get only
 * the properties listed (any order, each once, the required ones always);
 * without "properties", any keys with values of additionalProperties' schema
 * (any value when it is absent or true).  NULL with err on error. */
sg_grammar *sg_grammar_json(const sg_vocab *v, const char *schema,
    size_t len, const sg_grammar_opts *o, char *err, int errlen);

/* DSML tool calls: tools is the JSON array of OpenAI tools ({"type":
 * "function", "function": {name, description, parameters}}); only names
 * the one function that may be called (NULL: any); parallel 0 allows one
 * call.  The output is exactly "\n\n<｜DSML｜function_calls>\n", invokes,
 * "</｜DSML｜function_calls>" (encoding_dsv32.py's tool_calls_template,
 * tool_call_template and encode_arguments_to_dsml); a parameter is
 * string="true" with raw text when its schema allows a string, else
 * string="false" with a JSON value of its schema. */
sg_grammar *sg_grammar_tool_calls(const sg_vocab *v, const char *tools,
    size_t len, const char *only, int parallel, const sg_grammar_opts *o,
    char *err, int errlen);

sg_grammar *sg_grammar_ref(sg_grammar *g);
void sg_grammar_unref(sg_grammar *g);

/* The fewest bytes of a complete output: max_tokens below it cannot end
 * complete. */
int sg_grammar_min_bytes(const sg_grammar *g);

/* The mask cache's counters (the engine's thread writes them). */
typedef struct sg_grammar_stats {
    uint64_t masks;         /* masks asked for */
    uint64_t misses;        /* computed by a walk of the vocabulary */
    int      cached;        /* states held */
} sg_grammar_stats;
void sg_grammar_get_stats(const sg_grammar *g, sg_grammar_stats *st);

/* ---- a generation's state (the engine's side) */

sg_grammar_state *sg_grammar_state_new(sg_grammar *g);
void sg_grammar_state_free(sg_grammar_state *s);
/* Sets the logits of every token not allowed now to -inf, given the
 * tokens left including this one (>= 1); returns how many are allowed (0:
 * none, a dead end that the budget rule never reaches). */
int sg_grammar_mask(sg_grammar_state *s, int tokens_left, float *logits,
    int n_vocab);
/* The chosen token: 0 accepted, 1 accepted and the output is complete
 * with nothing allowed after it (the generation ends), -1 not allowed
 * (the state is unchanged). */
int sg_grammar_advance(sg_grammar_state *s, int32_t token);

#endif
