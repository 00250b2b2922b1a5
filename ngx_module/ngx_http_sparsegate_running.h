/*
 * The requests this worker serves now, as /v1/status lists them (like
 * llama.cpp's /slots): each with its phase, its token counts and its age.
 * An entry lives in its owner's memory (a RAG request's state, a job) and
 * is linked here while the owner works; the owner keeps it current through
 * the calls below.  Per worker: each worker lists its own requests.
 */
#ifndef NGX_HTTP_SPARSEGATE_RUNNING_H
#define NGX_HTTP_SPARSEGATE_RUNNING_H

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


typedef struct ngx_http_sparsegate_running_s  ngx_http_sparsegate_running_t;

struct ngx_http_sparsegate_running_s {
    ngx_queue_t                     queue;       /* in this worker's list */

    const char                     *endpoint;    /* static text */
    const char                     *phase;       /* static text */
    const char                     *id;          /* the response's, or NULL */
    ngx_atomic_uint_t               connection;  /* nginx's "*N" */
    time_t                          start_sec;   /* the request's start */
    ngx_msec_t                      start_msec;
    uint64_t                        order;       /* of entering a phase
                                                    that waits on the
                                                    engine: FIFO */
    ngx_int_t                       prompt_tokens;     /* -1: not yet */
    ngx_int_t                       cached_tokens;     /* -1: not yet */
    ngx_int_t                       generated_tokens;
    unsigned                        stream:1;
    unsigned                        linked:1;
};


/* Links e (zeroed by its owner) for the request r, in phase. */
void ngx_http_sparsegate_running_add(ngx_http_sparsegate_running_t *e,
    ngx_http_request_t *r, const char *endpoint, const char *phase);
/* The phase e has entered (static text). */
void ngx_http_sparsegate_running_phase(ngx_http_sparsegate_running_t *e,
    const char *phase);
/* Token counts as far as they are known (-1: unknown). */
void ngx_http_sparsegate_running_tokens(ngx_http_sparsegate_running_t *e,
    ngx_int_t prompt, ngx_int_t cached, ngx_int_t generated);
/* Unlinks e; safe when it is not linked. */
void ngx_http_sparsegate_running_remove(ngx_http_sparsegate_running_t *e);

/* The list, in the order added (ngx_queue_head() to ngx_queue_sentinel();
 * each element is the queue member of an entry), and how many it holds. */
ngx_queue_t *ngx_http_sparsegate_running_list(ngx_uint_t *n);

#endif /* NGX_HTTP_SPARSEGATE_RUNNING_H */
