/*
 * A request's JSON body and the fields every generating endpoint shares
 * (model, sampling, stream, stop): parsed into options, never written back.
 */
#ifndef NGX_HTTP_SPARSEGATE_PARAMS_H
#define NGX_HTTP_SPARSEGATE_PARAMS_H

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <cjson/cJSON.h>

#include "ngx_http_sparsegate_errors.h"
#include "ngx_http_sparsegate_job.h"


/* The whole body in one buffer (pool memory, NUL-terminated), from memory
 * or from nginx's temp file; NGX_OK with *len 0 when there is none. */
ngx_int_t ngx_http_sparsegate_read_body(ngx_http_request_t *r, u_char **data,
    size_t *len);

/* The body (read by the handler) as a JSON object the caller deletes, or
 * NULL with f filled (400 for malformed JSON, 503 out of memory). */
cJSON *ngx_http_sparsegate_parse_body(ngx_http_request_t *r,
    ngx_http_sparsegate_fault_t *f);

/* "model" names the served model or is absent: NGX_OK, else NGX_ERROR and
 * f (404, as OpenAI answers). */
ngx_int_t ngx_http_sparsegate_parse_model(ngx_http_request_t *r,
    cJSON *root, ngx_http_sparsegate_fault_t *f);

/* Every member of obj is one of known (NULL-terminated) or null (not
 * given), "sparsegate_script" too where sparsegate_test_hooks is on (at the
 * top level); else NGX_ERROR and f: a 400
 * naming the field (at names where it is, "" at the top), as OpenAI
 * answers an argument it does not know.  A field the gateway does not
 * implement is never ignored. */
ngx_int_t ngx_http_sparsegate_check_fields(ngx_http_request_t *r,
    cJSON *obj, const char *const *known, const char *at,
    ngx_http_sparsegate_fault_t *f);

/* The generation's options: temperature, top_p, top_k (not for rag, whose
 * top_k is the search's), min_p, presence_penalty, frequency_penalty,
 * repetition_penalty, logit_bias, seed, n, max_tokens (or
 * max_completion_tokens), stream, stream_options, ignore_eos, stop,
 * logprobs (chat and rag: true/false with top_logprobs; completions: how
 * many alternatives), the test hooks' sparsegate_script; copied into the
 * request's pool.  NGX_OK, or NGX_ERROR and f. */
/* The longest cache_salt taken. */
#define NGX_HTTP_SG_MAX_CACHE_SALT  1024

/* The generation's options: temperature, top_p, seed, n, max_tokens (or
 * max_completion_tokens), stream, stream_options, ignore_eos, stop,
 * cache_salt with the request's tenant (copied into the request's pool).
 * NGX_OK, or NGX_ERROR and f. */
ngx_int_t ngx_http_sparsegate_parse_job_opts(ngx_http_request_t *r,
    cJSON *root, ngx_http_sparsegate_format_e format,
    ngx_http_sparsegate_job_opts_t *o, ngx_http_sparsegate_fault_t *f);

/* A number field within [lo, hi]; *present = 0 when absent or null. */
ngx_int_t ngx_http_sparsegate_parse_number(cJSON *root, const char *name,
    double lo, double hi, ngx_uint_t integer, double *out,
    ngx_uint_t *present, ngx_http_sparsegate_fault_t *f);

/* Token ids (the array given as name), each below the vocabulary size:
 * malloc'ed.  NGX_OK, or NGX_ERROR and f. */
ngx_int_t ngx_http_sparsegate_parse_ids(ngx_http_request_t *r, cJSON *arr,
    const char *name, int32_t **out, size_t *n_out,
    ngx_http_sparsegate_fault_t *f);

/* A boolean field; *out untouched when absent or null. */
ngx_int_t ngx_http_sparsegate_parse_bool(cJSON *root, const char *name,
    ngx_uint_t *out, ngx_http_sparsegate_fault_t *f);

#endif /* NGX_HTTP_SPARSEGATE_PARAMS_H */
