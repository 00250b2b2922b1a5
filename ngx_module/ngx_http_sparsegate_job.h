/*
 * A job is one generation, owned here from creation to free: limits,
 * submission to the engine (one request per choice), tokens to text,
 * reasoning, tool calls and logprobs (choice.c), the response (JSON or a
 * stream), the deadline, cancellation when the client leaves, and the
 * memory.  The endpoints above hand over token ids and options and are
 * done with the request.
 */
#ifndef NGX_HTTP_SPARSEGATE_JOB_H
#define NGX_HTTP_SPARSEGATE_JOB_H

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_sparsegate_engine.h"
#include "ngx_http_sparsegate_response.h"
#include "ngx_http_sparsegate_text.h"


#define NGX_HTTP_SG_MAX_CHOICES  8


/* What an endpoint asks of a generation (parsed from its JSON). */
typedef struct {
    ngx_http_sparsegate_format_e     format;
    /* max_tokens -1: as many as the context allows, up to
     * sparsegate_max_tokens; the seed is choice 0's, choice i's is seed +
     * i; arrays and the grammar are only read during the run call */
    ngx_http_sparsegate_sampling_t   sampling;
    ngx_uint_t                       n;          /* choices, >= 1 */
    unsigned                         stream:1;
    unsigned                         include_usage:1;
    unsigned                         thinking:1; /* output: reasoning first */
    unsigned                         tools:1;    /* output: DSML calls */
    ngx_uint_t                       n_stops;
    ngx_str_t                        stops[NGX_HTTP_SG_MAX_STOPS];
    ngx_str_t                        citations;  /* JSON array, or empty */
} ngx_http_sparsegate_job_opts_t;


/*
 * Runs a generation of the prompt ids for the request: checks the limits,
 * submits, and from then on answers the request itself.  The ids and the
 * options are copied.  NGX_DONE when the job runs; else the error is
 * answered and the return value is what to finalize the request with.
 */
ngx_int_t ngx_http_sparsegate_job_run(ngx_http_request_t *r,
    const ngx_http_sparsegate_job_opts_t *o, const int32_t *ids,
    size_t n_ids);

/* The worker is exiting (its engine stopped): frees the jobs left. */
void ngx_http_sparsegate_job_exit_process(void);

#endif /* NGX_HTTP_SPARSEGATE_JOB_H */
