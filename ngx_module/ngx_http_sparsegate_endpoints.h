/*
 * The endpoints, each a content phase in its own right: the handler
 * (handler.c) has checked access and the method and, for a POST, read the
 * body.  Each returns NGX_DONE when it answers later, else what to finalize
 * the request with.
 */
#ifndef NGX_HTTP_SPARSEGATE_ENDPOINTS_H
#define NGX_HTTP_SPARSEGATE_ENDPOINTS_H

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_sparsegate_conf.h"


/* openai.c */
ngx_int_t ngx_http_sparsegate_chat(ngx_http_request_t *r);
ngx_int_t ngx_http_sparsegate_completions(ngx_http_request_t *r);

/* tokenize.c */
ngx_int_t ngx_http_sparsegate_tokenize(ngx_http_request_t *r);
ngx_int_t ngx_http_sparsegate_detokenize(ngx_http_request_t *r);

/* rag.c */
ngx_int_t ngx_http_sparsegate_rag(ngx_http_request_t *r);

/* info.c */
ngx_int_t ngx_http_sparsegate_models(ngx_http_request_t *r);
ngx_int_t ngx_http_sparsegate_model(ngx_http_request_t *r);
ngx_int_t ngx_http_sparsegate_health(ngx_http_request_t *r);
ngx_int_t ngx_http_sparsegate_metrics(ngx_http_request_t *r);

/* status.c */
ngx_int_t ngx_http_sparsegate_status(ngx_http_request_t *r);

/* collections.c */
ngx_int_t ngx_http_sparsegate_collections(ngx_http_request_t *r);

/* ui.c: the page's files, read at configuration time */
ngx_int_t ngx_http_sparsegate_ui(ngx_http_request_t *r);
char *ngx_http_sparsegate_ui_load(ngx_conf_t *cf,
    ngx_http_sparsegate_loc_conf_t *slcf);

#endif /* NGX_HTTP_SPARSEGATE_ENDPOINTS_H */
