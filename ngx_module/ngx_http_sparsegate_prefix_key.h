/*
 * $sparsegate_prefix_key: a hash of the part of a request's prompt that
 * other requests are likely to share, for an upstream's consistent hash
 * in front of several gateways (conf/sparsegate-upstream.conf).
 */
#ifndef NGX_HTTP_SPARSEGATE_PREFIX_KEY_H
#define NGX_HTTP_SPARSEGATE_PREFIX_KEY_H

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


/* Registers the variable (the module's preconfiguration). */
ngx_int_t ngx_http_sparsegate_prefix_key_add(ngx_conf_t *cf);

#endif /* NGX_HTTP_SPARSEGATE_PREFIX_KEY_H */
