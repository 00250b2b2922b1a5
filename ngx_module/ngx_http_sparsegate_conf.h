/*
 * The module's configuration: what the directives set (module.c reads
 * them), shared read-only by every file after the configuration cycle; and
 * the request context every file may read.
 */
#ifndef NGX_HTTP_SPARSEGATE_CONF_H
#define NGX_HTTP_SPARSEGATE_CONF_H

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "tokenizer.h"


/* One row of the endpoint table (handler.c): what a location serves. */
typedef struct ngx_http_sparsegate_endpoint_s  ngx_http_sparsegate_endpoint_t;


typedef struct {
    ngx_str_t            model;            /* checkpoint directory */
    ngx_str_t            tokenizer_path;
    ngx_uint_t           backend;          /* 0 cpu, 1 cuda */
    ngx_int_t            device;
    ngx_int_t            threads;
    off_t                kv_cache_size;    /* off_t: takes "g" units */
    ngx_int_t            max_context;      /* 0: the model's own */
    ngx_int_t            max_queue;
    ngx_int_t            max_running;
    ngx_int_t            index_share;
    ngx_str_t            devices;      /* sparsegate_devices, "" = one */
    off_t                device_memory; /* one device's, for nginx -t */
    ngx_flag_t           dense;
    ngx_flag_t           window;       /* sliding-window baseline */
    ngx_str_t            model_name;       /* NUL-terminated */
    ngx_str_t            store;
    ngx_msec_t           store_timeout;

    /* read at configuration time (shared read-only after fork) */
    ngx_flag_t           configured;       /* a sparsegate_model was given */
    ngx_int_t            model_context;    /* max_position_embeddings */
    ngx_int_t            vocab_size;
    ngx_int_t            context_limit;    /* prompt + completion tokens */
    sg_tokenizer        *tokenizer;
    uint64_t             tokenizer_hash;   /* keys the token cache */

    ngx_shm_zone_t      *shm_zone;         /* counters */
    void                *thread_pool;      /* ngx_thread_pool_t, or NULL */
} ngx_http_sparsegate_main_conf_t;


typedef struct {
    const ngx_http_sparsegate_endpoint_t  *endpoint;   /* sparsegate_api */
    ngx_array_t         *api_keys;         /* of key digests; NULL: open */
    ngx_int_t            max_tokens;
    ngx_int_t            context_budget;
    ngx_msec_t           timeout;
    ngx_flag_t           test_hooks;       /* sparsegate_script accepted */
    ngx_str_t            ui_root;          /* sparsegate_ui_root */
    ngx_array_t         *ui_files;         /* the page's, in memory */
} ngx_http_sparsegate_loc_conf_t;


/* A request's own state, in its module context: what the handler learns
 * that the files below read (the tenant), and the job that answers it. */
typedef struct {
    u_char               tenant[32];       /* SHA-256 of the API key the
                                              location accepted */
    unsigned             keyed:1;          /* tenant is set */
    void                *job;              /* job.c's, while it runs */
} ngx_http_sparsegate_ctx_t;


extern ngx_module_t  ngx_http_sparsegate_module;


/* The request's context, made on first use; NULL when out of memory. */
static ngx_inline ngx_http_sparsegate_ctx_t *
ngx_http_sparsegate_ctx(ngx_http_request_t *r)
{
    ngx_http_sparsegate_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_sparsegate_module);
    if (ctx == NULL) {
        ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_sparsegate_ctx_t));
        if (ctx != NULL) {
            ngx_http_set_ctx(r, ctx, ngx_http_sparsegate_module);
        }
    }
    return ctx;
}

#endif /* NGX_HTTP_SPARSEGATE_CONF_H */
