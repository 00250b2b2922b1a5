/*
 * The module's configuration: what the directives set (module.c reads
 * them), shared read-only by every file after the configuration cycle.
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


extern ngx_module_t  ngx_http_sparsegate_module;

#endif /* NGX_HTTP_SPARSEGATE_CONF_H */
