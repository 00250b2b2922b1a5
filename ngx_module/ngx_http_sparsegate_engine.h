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


/* How to generate. */
typedef struct {
    ngx_int_t                  max_tokens;
    float                      temperature;  /* 0: greedy */
    float                      top_p;        /* 1: off */
    uint64_t                   seed;
    ngx_uint_t                 ignore_eos;
} ngx_http_sparsegate_sampling_t;


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
                        int32_t token);
    void       (*done)(ngx_http_sparsegate_engine_client_t *c,
                       const ngx_http_sparsegate_engine_done_t *d);
    void       (*error)(ngx_http_sparsegate_engine_client_t *c,
                        const char *message);
    uint64_t     id;                         /* set by submit */
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

/* worker life: a worker without an engine stays up and answers 503 */
void ngx_http_sparsegate_engine_start(ngx_cycle_t *cycle,
    ngx_http_sparsegate_main_conf_t *smcf);
void ngx_http_sparsegate_engine_stop(void);
/* NULL while the engine runs, else why it does not */
const char *ngx_http_sparsegate_engine_unavailable(void);

/* NGX_OK, or NGX_ERROR with f saying how to answer (429 when full) */
ngx_int_t ngx_http_sparsegate_engine_submit(
    ngx_http_sparsegate_engine_client_t *c, const int32_t *ids, size_t n_ids,
    const ngx_http_sparsegate_sampling_t *s, ngx_http_sparsegate_fault_t *f);
void ngx_http_sparsegate_engine_cancel(ngx_http_sparsegate_engine_client_t *c);

/* the engine's gauges into the counters */
void ngx_http_sparsegate_engine_publish(void);

#endif /* NGX_HTTP_SPARSEGATE_ENGINE_H */
