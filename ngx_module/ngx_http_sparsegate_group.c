/*
 * The device group of a worker's engine, and what nginx -t checks of it.
 *
 *   sparsegate_devices 0-7;            one engine over these devices: one
 *                                      rank each, attention data-parallel,
 *                                      routed experts spread (with
 *                                      sparsegate_backend cpu: host ranks,
 *                                      NUMA nodes when there are several)
 *   sparsegate_device_memory 140g;     one device's memory (nginx sizes:
 *                                      g = GiB), for the check below
 *
 * At nginx -t the memory plan (sg_engine_plan_make: config.json and the
 * checkpoint's headers, no weights read) must fit: on GPUs every device
 * holds its rank's weights, the cache pool (sparsegate_kv_cache_size) and
 * the forward pass's working memory; without sparsegate_device_memory the
 * GPUs are not asked (that would start CUDA in the master) and only the
 * device list is checked.  Host ranks share one mapping of the weights:
 * the host's memory (or the devices' total) must hold them once plus every
 * rank's pool and working memory.  A configuration that cannot fit is
 * refused with the numbers.
 */

#include <unistd.h>

#include "ngx_http_sparsegate.h"
#include "ngx_http_sparsegate_group.h"


typedef struct {
    ngx_str_t   devices;
    off_t       device_memory;
} ngx_http_sparsegate_group_conf_t;


static ngx_int_t ngx_http_sparsegate_group_preconf(ngx_conf_t *cf);
static ngx_int_t ngx_http_sparsegate_group_postconf(ngx_conf_t *cf);
static void *ngx_http_sparsegate_group_create_conf(ngx_conf_t *cf);


static ngx_command_t  ngx_http_sparsegate_group_commands[] = {

    { ngx_string("sparsegate_devices"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_sparsegate_group_conf_t, devices),
      NULL },

    { ngx_string("sparsegate_device_memory"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_off_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_sparsegate_group_conf_t, device_memory),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_sparsegate_group_module_ctx = {
    ngx_http_sparsegate_group_preconf,     /* preconfiguration */
    ngx_http_sparsegate_group_postconf,    /* postconfiguration */

    ngx_http_sparsegate_group_create_conf, /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    NULL,                                  /* create location configuration */
    NULL                                   /* merge location configuration */
};


ngx_module_t  ngx_http_sparsegate_group_module = {
    NGX_MODULE_V1,
    &ngx_http_sparsegate_group_module_ctx, /* module context */
    ngx_http_sparsegate_group_commands,    /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static void *
ngx_http_sparsegate_group_create_conf(ngx_conf_t *cf)
{
    ngx_http_sparsegate_group_conf_t  *gcf;

    gcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_sparsegate_group_conf_t));
    if (gcf == NULL) {
        return NULL;
    }

    gcf->device_memory = NGX_CONF_UNSET;

    return gcf;
}


static ngx_int_t
ngx_http_sparsegate_group_preconf(ngx_conf_t *cf)
{
    return ngx_http_sparsegate_prefix_key_add(cf);
}


char *
ngx_http_sparsegate_devices(ngx_cycle_t *cycle)
{
    ngx_http_sparsegate_group_conf_t  *gcf;

    gcf = ngx_http_cycle_get_module_main_conf(cycle,
                                              ngx_http_sparsegate_group_module);
    if (gcf == NULL || gcf->devices.len == 0) {
        return NULL;
    }

    /* ngx_conf_set_str_slot's value is the argument, NUL-terminated */
    return (char *) gcf->devices.data;
}


/* "101.7 GB" or "256 MB", NUL-terminated in buf (room for 32). */
static u_char *
ngx_http_sparsegate_size(u_char *buf, double bytes)
{
    if (bytes >= 1e9) {
        ngx_sprintf(buf, "%.1f GB%Z", bytes / 1e9);
    } else {
        ngx_sprintf(buf, "%.0f MB%Z", bytes / 1e6);
    }
    return buf;
}


static ngx_int_t
ngx_http_sparsegate_group_postconf(ngx_conf_t *cf)
{
    char                               err[256];
    u_char                             s[5][32], more[96];
    off_t                              have;
    double                             need, kv;
    sg_engine_opts                     o;
    sg_engine_plan                     p;
    ngx_http_sparsegate_main_conf_t   *smcf;
    ngx_http_sparsegate_group_conf_t  *gcf;

    smcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_sparsegate_module);
    gcf = ngx_http_conf_get_module_main_conf(cf,
                                             ngx_http_sparsegate_group_module);

    if (smcf == NULL || !smcf->configured) {
        if (gcf->devices.len) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "sparsegate_devices without sparsegate_model");
            return NGX_ERROR;
        }
        return NGX_OK;
    }

    /* what the worker's engine will be started with (module.c) */
    sg_engine_opts_default(&o);
    o.model_dir = (char *) smcf->model.data;
    o.backend = smcf->backend == 1 ? "cuda" : "cpu";
    o.devices = gcf->devices.len ? (char *) gcf->devices.data : NULL;
    o.max_running = (int) smcf->max_running;
    o.max_context = (int) smcf->max_context;

    have = gcf->device_memory;
    if (have == NGX_CONF_UNSET && smcf->backend == 0) {
        /* host ranks: the machine's memory */
        have = (off_t) sysconf(_SC_PHYS_PAGES) * sysconf(_SC_PAGESIZE);
    }

    if (sg_engine_plan_make(&o, have > 0 ? (size_t) have : 0, &p, err,
                            sizeof(err))
        != 0)
    {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0, "sparsegate: %s%s", err,
                      o.devices ? " (sparsegate_devices)" : "");
        return NGX_ERROR;
    }

    if (have == NGX_CONF_UNSET) {
        ngx_log_error(NGX_LOG_NOTICE, cf->log, 0,
                      "sparsegate: %d device(s), %s of weights each; set "
                      "sparsegate_device_memory to have nginx -t check that "
                      "they fit", p.n_ranks,
                      ngx_http_sparsegate_size(s[0], p.rank_weight_bytes));
        return NGX_OK;
    }

    kv = (double) smcf->kv_cache_size;

    if (smcf->backend == 1) {
        need = (double) p.rank_weight_bytes + kv + (double) p.work_bytes;
        if (need > (double) have) {
            if (p.min_devices) {
                ngx_sprintf(more, "the model needs at least %d devices of "
                            "that size%Z", p.min_devices);
            } else {
                ngx_sprintf(more, "no number of devices of that size holds "
                            "it%Z");
            }
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "sparsegate: the model needs %s on each of %d "
                          "device(s) (weights %s + sparsegate_kv_cache_size "
                          "%s + working memory and runtime %s) but "
                          "sparsegate_device_memory is %s; %s",
                          ngx_http_sparsegate_size(s[0], need), p.n_ranks,
                          ngx_http_sparsegate_size(s[1], p.rank_weight_bytes),
                          ngx_http_sparsegate_size(s[2], kv),
                          ngx_http_sparsegate_size(s[3], p.work_bytes),
                          ngx_http_sparsegate_size(s[4], have), more);
            return NGX_ERROR;
        }
        return NGX_OK;
    }

    /* host ranks: the weights once, every rank's pool and buffers */
    need = (double) p.weight_bytes
           + p.n_ranks * (kv + (double) p.work_bytes);
    if (gcf->device_memory != NGX_CONF_UNSET) {
        have = gcf->device_memory * p.n_ranks;
    }
    if (need > (double) have) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "sparsegate: the model needs %s of host memory "
                      "(weights %s once + %d rank(s) x "
                      "(sparsegate_kv_cache_size %s + working memory %s)) "
                      "but %s %s",
                      ngx_http_sparsegate_size(s[0], need),
                      ngx_http_sparsegate_size(s[1], p.weight_bytes),
                      p.n_ranks, ngx_http_sparsegate_size(s[2], kv),
                      ngx_http_sparsegate_size(s[3], p.work_bytes),
                      gcf->device_memory != NGX_CONF_UNSET
                      ? "sparsegate_device_memory gives"
                      : "this machine has",
                      ngx_http_sparsegate_size(s[4], have));
        return NGX_ERROR;
    }

    return NGX_OK;
}
