/*
 * Endpoints bound by configuration: "sparsegate_api ENDPOINT;" makes a
 * location serve one endpoint, whatever its URI ends with, under that
 * location's access rules (allow/deny, auth_request, ... and its
 * sparsegate_api_key list, checked for every endpoint alike).
 */
#ifndef NGX_HTTP_SPARSEGATE_HANDLER_H
#define NGX_HTTP_SPARSEGATE_HANDLER_H

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_sparsegate_conf.h"


/* the directives' handlers (module.c's command table) */
char *ngx_http_sparsegate_api(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_sparsegate_api_key(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
/* module.c's merge, for what an endpoint reads at configuration time */
char *ngx_http_sparsegate_endpoint_merge(ngx_conf_t *cf,
    ngx_http_sparsegate_loc_conf_t *prev,
    ngx_http_sparsegate_loc_conf_t *conf);

#endif /* NGX_HTTP_SPARSEGATE_HANDLER_H */
