/*
 * The worker's engine, seen from nginx: the only file that speaks the
 * engine's API (sparsegate.h, config.h, the tokenizer's loading).
 *
 * Each worker process starts its own engine (never the master: a CUDA
 * context does not survive fork).  The engine signals an eventfd when events
 * wait; the worker watches it like a socket and hands each event to the
 * client it belongs to, through that client's callbacks, on the worker's
 * thread.  The worker never waits on the engine.
 */
#ifndef NGX_HTTP_SPARSEGATE_ENGINE_H
#define NGX_HTTP_SPARSEGATE_ENGINE_H

#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_http_sparsegate_conf.h"
#include "ngx_http_sparsegate_errors.h"

#include "grammar.h"


#define NGX_HTTP_SG_MAX_TOP_LOGPROBS  20


/* How to generate (the engine's sg_request says what each does). */
typedef struct {
    ngx_int_t                  max_tokens;
    float                      temperature;  /* 0: greedy */
    float                      top_p;        /* 1: off */
    uint64_t                   seed;
    ngx_uint_t                 ignore_eos;
    ngx_int_t                  top_k;        /* 0: off */
    float                      min_p;        /* 0: off */
    float                      presence_penalty;
    float                      frequency_penalty;
    float                      repetition_penalty;   /* 0: off */
    int32_t                   *bias_ids;     /* logit_bias */
    float                     *bias_values;
    ngx_uint_t                 n_bias;
    ngx_uint_t                 logprobs;     /* 1: tokens come with them */
    ngx_uint_t                 top_logprobs;
    sg_grammar                *grammar;      /* constrained decoding */
    int32_t                   *script;       /* test hook: tokens to emit */
    ngx_uint_t                 n_script;
    ngx_str_t                  cache_salt;   /* the prefix cache's
                                                namespace: shared when
                                                empty */
} ngx_http_sparsegate_sampling_t;


/* A token's logprobs: its own and the likeliest ones (meaningful only for
 * a generation that asked for them). */
typedef struct {
    float                      logprob;
    ngx_uint_t                 n_top;
    int32_t                    top_ids[NGX_HTTP_SG_MAX_TOP_LOGPROBS];
    float                      top_logprobs[NGX_HTTP_SG_MAX_TOP_LOGPROBS];
} ngx_http_sparsegate_token_lp_t;


typedef enum {
    NGX_HTTP_SG_FINISH_STOP = 1,             /* EOS or a stop token */
    NGX_HTTP_SG_FINISH_LENGTH,               /* max_tokens or the context */
    NGX_HTTP_SG_FINISH_CANCELLED
} ngx_http_sparsegate_finish_e;


/* The last event of a generation that ran to its end (or was cancelled). */
typedef struct {
    ngx_http_sparsegate_finish_e  finish;
    ngx_int_t                     prompt_tokens;
    ngx_int_t                     cached_tokens;
    ngx_int_t                     completion_tokens;
} ngx_http_sparsegate_engine_done_t;


typedef struct ngx_http_sparsegate_engine_client_s
    ngx_http_sparsegate_engine_client_t;

/*
 * A submitted generation.  After a successful submit exactly one of done()
 * or error() follows, after any number of token() calls; the client must
 * live until then (a cancel does not end it: a cancelled done() does).
 */
struct ngx_http_sparsegate_engine_client_s {
    void       (*token)(ngx_http_sparsegate_engine_client_t *c,
                        int32_t token,
                        const ngx_http_sparsegate_token_lp_t *lp);
    void       (*done)(ngx_http_sparsegate_engine_client_t *c,
                       const ngx_http_sparsegate_engine_done_t *d);
    /* status: 503 when the engine ran out of memory (try again later),
     * 500 when it failed */
    void       (*error)(ngx_http_sparsegate_engine_client_t *c,
                        ngx_uint_t status, const char *message);
    uint64_t     id;                         /* set by submit */
    ngx_int_t    cached_tokens;              /* the prompt tokens the
                                                prefix cache served, as
                                                the last token reported */
};


/* configuration time: the engine's defaults for the unset cache size,
 * queue and running limits */
void ngx_http_sparsegate_engine_conf_defaults(
    ngx_http_sparsegate_main_conf_t *smcf);
/* configuration time: config.json into smcf (model_context, vocab_size),
 * and the tokenizer for the life of the cycle */
char *ngx_http_sparsegate_engine_conf_model(ngx_conf_t *cf,
    ngx_http_sparsegate_main_conf_t *smcf);
char *ngx_http_sparsegate_engine_conf_tokenizer(ngx_conf_t *cf,
    ngx_http_sparsegate_main_conf_t *smcf, ngx_str_t *path);
/* configuration time: the tokenizer's ids fit the model's vocabulary, and
 * the chat template's special tokens are in it */
char *ngx_http_sparsegate_engine_conf_check(ngx_conf_t *cf,
    ngx_http_sparsegate_main_conf_t *smcf);

/* configuration time: the device group's memory plan must fit (nginx -t
 * refuses it with the numbers otherwise) */
char *ngx_http_sparsegate_engine_conf_plan(ngx_conf_t *cf,
    ngx_http_sparsegate_main_conf_t *smcf);

/* worker life: a worker without an engine stays up and answers 503 */
void ngx_http_sparsegate_engine_start(ngx_cycle_t *cycle,
    ngx_http_sparsegate_main_conf_t *smcf);
void ngx_http_sparsegate_engine_stop(void);
/* NULL while the engine runs, else why it does not */
const char *ngx_http_sparsegate_engine_unavailable(void);

/* NGX_OK, or NGX_ERROR with f saying how to answer (429 when full, 503
 * when out of memory) */
ngx_int_t ngx_http_sparsegate_engine_submit(
    ngx_http_sparsegate_engine_client_t *c, const int32_t *ids, size_t n_ids,
    const ngx_http_sparsegate_sampling_t *s, ngx_http_sparsegate_fault_t *f);
void ngx_http_sparsegate_engine_cancel(ngx_http_sparsegate_engine_client_t *c);
/* Stops (paused 1) or lets go on (0) a generation whose client cannot take
 * more output; neither can fail. */
void ngx_http_sparsegate_engine_pause(ngx_http_sparsegate_engine_client_t *c,
    ngx_uint_t paused);

/* the engine's gauges into the counters */
void ngx_http_sparsegate_engine_publish(void);
/* the engine's numbers now; NGX_DECLINED without an engine */
ngx_int_t ngx_http_sparsegate_engine_read(
    ngx_http_sparsegate_engine_gauges_t *g);

#endif /* NGX_HTTP_SPARSEGATE_ENGINE_H */
