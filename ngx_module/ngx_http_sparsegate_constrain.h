/*
 * Output formats that constrained decoding enforces: "response_format"
 * ({"type": "text"}, {"type": "json_object"}, {"type": "json_schema",
 * "json_schema": {"name", "schema", "strict", "description"}}) and a
 * tool_choice that must call ("required", or a named function): compiled
 * into a grammar (grammar.h) for the engine.  The vocabulary is sorted
 * when a worker starts; compiled grammars are kept (the last 16 used), so a
 * schema sent again reuses its cached masks.
 */
#ifndef NGX_HTTP_SPARSEGATE_CONSTRAIN_H
#define NGX_HTTP_SPARSEGATE_CONSTRAIN_H

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <cjson/cJSON.h>

#include "ngx_http_sparsegate_conf.h"
#include "ngx_http_sparsegate_errors.h"
#include "grammar.h"


typedef struct {
    ngx_uint_t   json;          /* the output is JSON */
    char        *schema;        /* json_schema's schema (pool), or NULL:
                                   any object */
} ngx_http_sparsegate_rformat_t;


/* "response_format" of the body; rf->json 0 when absent or "text". */
ngx_int_t ngx_http_sparsegate_parse_response_format(ngx_http_request_t *r,
    cJSON *root, ngx_http_sparsegate_rformat_t *rf,
    ngx_http_sparsegate_fault_t *f);

/* The grammar for the request (a reference the request's pool drops), or
 * *out NULL when nothing constrains it: rf's JSON, or, with tools and
 * must_call, DSML calls of tools (only the function named, when named;
 * one call unless parallel); thinking lets the reasoning come first. */
ngx_int_t ngx_http_sparsegate_grammar(ngx_http_request_t *r,
    const ngx_http_sparsegate_rformat_t *rf, const char *tools,
    ngx_uint_t must_call, const char *named, ngx_uint_t parallel,
    ngx_uint_t thinking, sg_grammar **out, ngx_http_sparsegate_fault_t *f);

/* The worker starts: the vocabulary sorted for the masks' walks (about
 * 0.1 s, before any request waits on it). */
void ngx_http_sparsegate_constrain_init_process(ngx_cycle_t *cycle,
    ngx_http_sparsegate_main_conf_t *smcf);
/* The worker is exiting: the vocabulary and the grammars kept. */
void ngx_http_sparsegate_constrain_exit_process(void);

#endif /* NGX_HTTP_SPARSEGATE_CONSTRAIN_H */
