/*
 * SparseGate over several devices and several hosts: the group module's
 * shared declarations.
 *
 *   ngx_http_sparsegate_group.c       sparsegate_devices,
 *                                     sparsegate_device_memory, and the
 *                                     memory plan nginx -t checks
 *   ngx_http_sparsegate_prefix_key.c  $sparsegate_prefix_key, for an
 *                                     upstream's consistent hash
 */
#ifndef NGX_HTTP_SPARSEGATE_GROUP_H
#define NGX_HTTP_SPARSEGATE_GROUP_H

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


extern ngx_module_t  ngx_http_sparsegate_group_module;

/* The sparsegate_devices list as a C string, or NULL (one device). */
char *ngx_http_sparsegate_devices(ngx_cycle_t *cycle);

/* group.c's preconfiguration: registers $sparsegate_prefix_key. */
ngx_int_t ngx_http_sparsegate_prefix_key_add(ngx_conf_t *cf);

#endif /* NGX_HTTP_SPARSEGATE_GROUP_H */
