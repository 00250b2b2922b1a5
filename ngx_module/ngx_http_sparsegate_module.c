/*
 * SparseGate: directives, configuration, worker start/stop and the bridge
 * between the engine thread and the nginx event loop.
 *
 * Each worker process starts its own engine in init_process (never in the
 * master: a CUDA context does not survive fork).  The engine signals an
 * eventfd when events wait; the worker watches it like a socket and drains
 * token / done / error events into the jobs they belong to.  The worker
 * never waits on the engine.
 */

#include "ngx_http_sparsegate.h"
#if (NGX_THREADS)
#include <ngx_thread_pool.h>
#endif


static void *ngx_http_sparsegate_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_sparsegate_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_sparsegate_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_sparsegate_merge_loc_conf(ngx_conf_t *cf,
    void *parent, void *child);
static char *ngx_http_sparsegate_model_slot(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_sparsegate_tokenizer_slot(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_sparsegate_store_slot(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_sparsegate_api(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_sparsegate_init_process(ngx_cycle_t *cycle);
static void ngx_http_sparsegate_exit_process(ngx_cycle_t *cycle);
static void ngx_http_sparsegate_engine_readable(ngx_event_t *ev);
static void ngx_http_sparsegate_job_free(ngx_http_sparsegate_job_t *job);


static ngx_conf_enum_t  ngx_http_sparsegate_backends[] = {
    { ngx_string("cpu"), 0 },
    { ngx_string("cuda"), 1 },
    { ngx_null_string, 0 }
};

static ngx_conf_num_bounds_t  ngx_http_sparsegate_positive = {
    ngx_conf_check_num_bounds, 1, -1
};

static ngx_conf_num_bounds_t  ngx_http_sparsegate_non_negative = {
    ngx_conf_check_num_bounds, 0, -1
};


static ngx_command_t  ngx_http_sparsegate_commands[] = {

    { ngx_string("sparsegate_model"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_sparsegate_model_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("sparsegate_tokenizer"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_sparsegate_tokenizer_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("sparsegate_backend"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_sparsegate_main_conf_t, backend),
      &ngx_http_sparsegate_backends },

    { ngx_string("sparsegate_device"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_sparsegate_main_conf_t, device),
      &ngx_http_sparsegate_non_negative },

    { ngx_string("sparsegate_threads"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_sparsegate_main_conf_t, threads),
      &ngx_http_sparsegate_non_negative },

    { ngx_string("sparsegate_kv_cache_size"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_off_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_sparsegate_main_conf_t, kv_cache_size),
      NULL },

    { ngx_string("sparsegate_max_context"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_sparsegate_main_conf_t, max_context),
      &ngx_http_sparsegate_positive },

    { ngx_string("sparsegate_max_queue"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_sparsegate_main_conf_t, max_queue),
      &ngx_http_sparsegate_positive },

    { ngx_string("sparsegate_max_running"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_sparsegate_main_conf_t, max_running),
      &ngx_http_sparsegate_positive },

    { ngx_string("sparsegate_dense_attention"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_sparsegate_main_conf_t, dense),
      NULL },

    { ngx_string("sparsegate_window_attention"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_sparsegate_main_conf_t, window),
      NULL },

    { ngx_string("sparsegate_index_share"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_sparsegate_main_conf_t, index_share),
      &ngx_http_sparsegate_positive },

    { ngx_string("sparsegate_model_name"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_sparsegate_main_conf_t, model_name),
      NULL },

    { ngx_string("sparsegate_store"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_sparsegate_store_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("sparsegate_store_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_sparsegate_main_conf_t, store_timeout),
      NULL },

    { ngx_string("sparsegate_api"),
      NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_sparsegate_api,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("sparsegate_api_key"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_array_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_sparsegate_loc_conf_t, api_keys),
      NULL },

    { ngx_string("sparsegate_max_tokens"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_sparsegate_loc_conf_t, max_tokens),
      &ngx_http_sparsegate_positive },

    { ngx_string("sparsegate_context_budget"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_sparsegate_loc_conf_t, context_budget),
      &ngx_http_sparsegate_positive },

    { ngx_string("sparsegate_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_sparsegate_loc_conf_t, timeout),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_sparsegate_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    ngx_http_sparsegate_create_main_conf,  /* create main configuration */
    ngx_http_sparsegate_init_main_conf,    /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_sparsegate_create_loc_conf,   /* create location configuration */
    ngx_http_sparsegate_merge_loc_conf     /* merge location configuration */
};


ngx_module_t  ngx_http_sparsegate_module = {
    NGX_MODULE_V1,
    &ngx_http_sparsegate_module_ctx,       /* module context */
    ngx_http_sparsegate_commands,          /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_sparsegate_init_process,      /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_sparsegate_exit_process,      /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


/* Per worker process: one engine, its eventfd's connection, live jobs. */
static sg_engine                  *ngx_http_sparsegate_the_engine;
static ngx_connection_t           *ngx_http_sparsegate_engine_conn;
static char                        ngx_http_sparsegate_engine_err[256];
static sg_astore                  *ngx_http_sparsegate_the_astore;
static ngx_http_sparsegate_job_t  *ngx_http_sparsegate_jobs;
static ngx_int_t                   ngx_http_sparsegate_n_jobs;
static uint64_t                    ngx_http_sparsegate_job_seq;


/* ------------------------------------------------------------------ conf */

static void *
ngx_http_sparsegate_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_sparsegate_main_conf_t  *smcf;

    smcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_sparsegate_main_conf_t));
    if (smcf == NULL) {
        return NULL;
    }

    smcf->backend = NGX_CONF_UNSET_UINT;
    smcf->device = NGX_CONF_UNSET;
    smcf->threads = NGX_CONF_UNSET;
    smcf->kv_cache_size = NGX_CONF_UNSET;
    smcf->max_context = NGX_CONF_UNSET;
    smcf->max_queue = NGX_CONF_UNSET;
    smcf->max_running = NGX_CONF_UNSET;
    smcf->store_timeout = NGX_CONF_UNSET_MSEC;
    smcf->dense = NGX_CONF_UNSET;
    smcf->window = NGX_CONF_UNSET;
    smcf->index_share = NGX_CONF_UNSET;

    return smcf;
}


static void
ngx_http_sparsegate_tokenizer_cleanup(void *data)
{
    sg_tokenizer_free(data);
}


/* Loads a tokenizer for the life of the configuration cycle. */
static char *
ngx_http_sparsegate_load_tokenizer(ngx_conf_t *cf,
    ngx_http_sparsegate_main_conf_t *smcf, ngx_str_t *path)
{
    char                 err[256];
    ngx_pool_cleanup_t  *cln;

    if (sg_tokenizer_load((char *) path->data, &smcf->tokenizer, err,
                          sizeof(err))
        != 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "sparsegate: cannot load tokenizer: %s", err);
        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        sg_tokenizer_free(smcf->tokenizer);
        smcf->tokenizer = NULL;
        return NGX_CONF_ERROR;
    }
    cln->handler = ngx_http_sparsegate_tokenizer_cleanup;
    cln->data = smcf->tokenizer;

    return NGX_CONF_OK;
}


static char *
ngx_http_sparsegate_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_sparsegate_main_conf_t *smcf = conf;

    ngx_str_t   path, name = ngx_string("sparsegate_metrics");
    u_char     *p;

    ngx_conf_init_uint_value(smcf->backend, 0);
    ngx_conf_init_value(smcf->device, 0);
    ngx_conf_init_value(smcf->threads, 0);
    if (smcf->kv_cache_size == NGX_CONF_UNSET) {
        smcf->kv_cache_size = (off_t) 1024 * 1024 * 1024;
    }
    ngx_conf_init_value(smcf->max_context, 0);
    ngx_conf_init_value(smcf->max_queue, 256);
    ngx_conf_init_value(smcf->max_running, 64);
    ngx_conf_init_msec_value(smcf->store_timeout, 5000);
    ngx_conf_init_value(smcf->dense, 0);
    ngx_conf_init_value(smcf->window, 0);

    if (smcf->dense && smcf->window) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "sparsegate: \"sparsegate_dense_attention\" and "
                           "\"sparsegate_window_attention\" exclude each "
                           "other");
        return NGX_CONF_ERROR;
    }
    ngx_conf_init_value(smcf->index_share, 1);

    if (smcf->configured && smcf->tokenizer == NULL) {
        /* the checkpoint's own tokenizer.json */
        path.len = smcf->model.len + sizeof("/tokenizer.json") - 1;
        path.data = ngx_pnalloc(cf->pool, path.len + 1);
        if (path.data == NULL) {
            return NGX_CONF_ERROR;
        }
        p = ngx_cpymem(path.data, smcf->model.data, smcf->model.len);
        ngx_memcpy(p, "/tokenizer.json", sizeof("/tokenizer.json"));
        smcf->tokenizer_path = path;

        if (ngx_http_sparsegate_load_tokenizer(cf, smcf, &path)
            != NGX_CONF_OK)
        {
            return NGX_CONF_ERROR;
        }
    }

    if (smcf->configured && smcf->max_context > 0
        && smcf->max_context > smcf->model_config.max_position_embeddings)
    {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "sparsegate: sparsegate_max_context %i is over the "
                      "model's max_position_embeddings %d",
                      smcf->max_context,
                      smcf->model_config.max_position_embeddings);
        return NGX_CONF_ERROR;
    }

#if (NGX_THREADS)
    if (smcf->configured) {
        /* nginx's "default" pool (32 threads unless nginx.conf declares
         * it): long prompts are tokenized there */
        smcf->thread_pool = ngx_thread_pool_add(cf, NULL);
        if (smcf->thread_pool == NULL) {
            return NGX_CONF_ERROR;
        }
    }
#endif

    smcf->shm_zone = ngx_shared_memory_add(cf, &name,
                                           ngx_http_sparsegate_metrics_size(),
                                           &ngx_http_sparsegate_module);
    if (smcf->shm_zone == NULL) {
        return NGX_CONF_ERROR;
    }
    smcf->shm_zone->init = ngx_http_sparsegate_metrics_init_zone;

    return NGX_CONF_OK;
}


static void *
ngx_http_sparsegate_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_sparsegate_loc_conf_t  *slcf;

    slcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_sparsegate_loc_conf_t));
    if (slcf == NULL) {
        return NULL;
    }

    slcf->enable = NGX_CONF_UNSET;
    slcf->api_keys = NGX_CONF_UNSET_PTR;
    slcf->max_tokens = NGX_CONF_UNSET;
    slcf->context_budget = NGX_CONF_UNSET;
    slcf->timeout = NGX_CONF_UNSET_MSEC;

    return slcf;
}


static char *
ngx_http_sparsegate_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_sparsegate_loc_conf_t *prev = parent;
    ngx_http_sparsegate_loc_conf_t *conf = child;

    ngx_conf_merge_value(conf->enable, prev->enable, 0);
    ngx_conf_merge_ptr_value(conf->api_keys, prev->api_keys, NULL);
    ngx_conf_merge_value(conf->max_tokens, prev->max_tokens, 4096);
    ngx_conf_merge_value(conf->context_budget, prev->context_budget, 32768);
    ngx_conf_merge_msec_value(conf->timeout, prev->timeout, 600000);

    return NGX_CONF_OK;
}


/* sparsegate_model DIR: checks config.json now, so nginx -t reports a bad
 * checkpoint with file:line; the weights load in each worker. */
static char *
ngx_http_sparsegate_model_slot(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_sparsegate_main_conf_t *smcf = conf;

    char        err[256], *file;
    size_t      len;
    ngx_str_t  *value;

    if (smcf->configured) {
        return "is duplicate";
    }

    value = cf->args->elts;
    smcf->model = value[1];
    if (ngx_conf_full_name(cf->cycle, &smcf->model, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }
    while (smcf->model.len > 1
           && smcf->model.data[smcf->model.len - 1] == '/')
    {
        smcf->model.len--;
    }
    smcf->model.data[smcf->model.len] = '\0';

    len = smcf->model.len + sizeof("/config.json");
    file = ngx_pnalloc(cf->pool, len);
    if (file == NULL) {
        return NGX_CONF_ERROR;
    }
    ngx_snprintf((u_char *) file, len, "%V/config.json%Z", &smcf->model);

    if (sg_config_load(file, &smcf->model_config, err, sizeof(err)) != 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "sparsegate_model \"%V\": %s", &smcf->model, err);
        return NGX_CONF_ERROR;
    }

    smcf->configured = 1;
    return NGX_CONF_OK;
}


static char *
ngx_http_sparsegate_tokenizer_slot(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_sparsegate_main_conf_t *smcf = conf;

    ngx_str_t  *value;

    if (smcf->tokenizer != NULL) {
        return "is duplicate";
    }

    value = cf->args->elts;
    smcf->tokenizer_path = value[1];
    if (ngx_conf_full_name(cf->cycle, &smcf->tokenizer_path, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return ngx_http_sparsegate_load_tokenizer(cf, smcf,
                                              &smcf->tokenizer_path);
}


/* sparsegate_store URI: parsed (and a sqlite file opened) now, so a bad URI
 * fails nginx -t; connections are made by the workers. */
static char *
ngx_http_sparsegate_store_slot(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_sparsegate_main_conf_t *smcf = conf;

    char        err[256];
    ngx_str_t  *value;
    sg_astore  *as;

    if (smcf->store.data != NULL) {
        return "is duplicate";
    }

    value = cf->args->elts;
    smcf->store = value[1];

    if (sg_astore_open((char *) smcf->store.data, NULL, &as, err,
                       sizeof(err))
        != 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "sparsegate_store \"%V\": %s", &smcf->store, err);
        return NGX_CONF_ERROR;
    }
    sg_astore_close(as);

    return NGX_CONF_OK;
}


static char *
ngx_http_sparsegate_api(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_sparsegate_loc_conf_t *slcf = conf;

    ngx_http_core_loc_conf_t  *clcf;

    if (slcf->enable != NGX_CONF_UNSET) {
        return "is duplicate";
    }
    slcf->enable = 1;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_sparsegate_handler;

    return NGX_CONF_OK;
}


/* --------------------------------------------------------- worker life */

sg_engine *
ngx_http_sparsegate_engine(void)
{
    return ngx_http_sparsegate_the_engine;
}


const char *
ngx_http_sparsegate_engine_error(void)
{
    return ngx_http_sparsegate_engine_err[0]
           ? ngx_http_sparsegate_engine_err : "no sparsegate_model configured";
}


sg_astore *
ngx_http_sparsegate_astore(void)
{
    return ngx_http_sparsegate_the_astore;
}


const ngx_str_t *
ngx_http_sparsegate_model_name(ngx_http_sparsegate_main_conf_t *smcf)
{
    u_char  *p;

    if (smcf->model_name.len == 0 && smcf->model.len > 0) {
        /* the checkpoint directory's base name */
        p = smcf->model.data + smcf->model.len;
        while (p > smcf->model.data && p[-1] != '/') {
            p--;
        }
        smcf->model_name.data = p;
        smcf->model_name.len = smcf->model.data + smcf->model.len - p;
    }

    return &smcf->model_name;
}


static ngx_int_t
ngx_http_sparsegate_init_process(ngx_cycle_t *cycle)
{
    char                              err[256];
    ngx_int_t                         fd;
    sg_astore_opts                    ao;
    sg_engine_opts                    o;
    ngx_connection_t                 *c;
    ngx_http_sparsegate_main_conf_t  *smcf;

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    smcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_sparsegate_module);
    if (smcf == NULL) {
        return NGX_OK;
    }

    ngx_http_sparsegate_metrics_attach(smcf->shm_zone);

    if (smcf->store.len > 0) {
        ngx_memzero(&ao, sizeof(ao));
        ao.timeout_ms = (int) smcf->store_timeout;
        if (sg_astore_open((char *) smcf->store.data, &ao,
                           &ngx_http_sparsegate_the_astore, err, sizeof(err))
            != 0)
        {
            ngx_log_error(NGX_LOG_ALERT, cycle->log, 0,
                          "sparsegate: store \"%V\": %s", &smcf->store, err);
        }
    }

    if (!smcf->configured) {
        return NGX_OK;
    }

    sg_engine_opts_default(&o);
    o.model_dir = (char *) smcf->model.data;
    o.model.backend = smcf->backend == 1 ? "cuda" : "cpu";
    o.model.device = (int) smcf->device;
    o.model.n_threads = (int) smcf->threads;
    o.model.num.dense = (int) smcf->dense;
    o.model.num.window = (int) smcf->window;
    o.model.num.index_share = (int) smcf->index_share;
    o.kv_bytes = (size_t) smcf->kv_cache_size;
    o.max_queue = (int) smcf->max_queue;
    o.max_running = (int) smcf->max_running;
    o.max_context = (int) smcf->max_context;
    o.prefix_cache = 1;

    /* A worker without an engine stays up and answers 503 with the reason:
     * exiting would make the master respawn it in a loop. */
    if (sg_engine_start(&o, &ngx_http_sparsegate_the_engine,
                        ngx_http_sparsegate_engine_err,
                        sizeof(ngx_http_sparsegate_engine_err))
        != 0)
    {
        ngx_http_sparsegate_the_engine = NULL;
        ngx_log_error(NGX_LOG_ALERT, cycle->log, 0,
                      "sparsegate: engine for \"%V\" did not start: %s",
                      &smcf->model, ngx_http_sparsegate_engine_err);
        return NGX_OK;
    }

    fd = sg_engine_fd(ngx_http_sparsegate_the_engine);
    c = ngx_get_connection(fd, cycle->log);
    if (c == NULL) {
        ngx_snprintf((u_char *) ngx_http_sparsegate_engine_err,
                     sizeof(ngx_http_sparsegate_engine_err),
                     "no free connection for the engine's eventfd%Z");
        sg_engine_stop(ngx_http_sparsegate_the_engine);
        ngx_http_sparsegate_the_engine = NULL;
        return NGX_OK;
    }

    c->read->handler = ngx_http_sparsegate_engine_readable;
    c->read->log = cycle->log;
    c->write->log = cycle->log;
    c->log = cycle->log;
    c->data = NULL;

    /* level-triggered: the handler is called again while events wait */
    if (ngx_add_event(c->read, NGX_READ_EVENT, 0) != NGX_OK) {
        ngx_free_connection(c);
        sg_engine_stop(ngx_http_sparsegate_the_engine);
        ngx_http_sparsegate_the_engine = NULL;
        ngx_snprintf((u_char *) ngx_http_sparsegate_engine_err,
                     sizeof(ngx_http_sparsegate_engine_err),
                     "cannot watch the engine's eventfd%Z");
        return NGX_OK;
    }
    ngx_http_sparsegate_engine_conn = c;

    (void) err;
    ngx_log_error(NGX_LOG_NOTICE, cycle->log, 0,
                  "sparsegate: engine started for \"%V\"", &smcf->model);

    return NGX_OK;
}


static void
ngx_http_sparsegate_exit_process(ngx_cycle_t *cycle)
{
    ngx_connection_t           *c;
    ngx_http_sparsegate_ctx_t  *ctx;
    ngx_http_sparsegate_job_t  *job;

    c = ngx_http_sparsegate_engine_conn;
    if (c != NULL) {
        /* the engine owns and closes the fd: only forget it here, else a
         * graceful stop reports "open socket left" */
        ngx_del_event(c->read, NGX_READ_EVENT, 0);
        ngx_free_connection(c);
        c->fd = (ngx_socket_t) -1;
        ngx_http_sparsegate_engine_conn = NULL;
    }

    if (ngx_http_sparsegate_the_engine != NULL) {
        sg_engine_stop(ngx_http_sparsegate_the_engine);
        ngx_http_sparsegate_the_engine = NULL;
    }

    while (ngx_http_sparsegate_jobs != NULL) {
        job = ngx_http_sparsegate_jobs;
        if (job->request != NULL) {
            ctx = ngx_http_get_module_ctx(job->request,
                                          ngx_http_sparsegate_module);
            if (ctx != NULL) {
                ctx->job = NULL;
            }
        }
        ngx_http_sparsegate_job_free(job);
    }

    if (ngx_http_sparsegate_the_astore != NULL) {
        sg_astore_close(ngx_http_sparsegate_the_astore);
        ngx_http_sparsegate_the_astore = NULL;
    }

    ngx_http_sparsegate_metrics_worker_exit();
}


/* ---------------------------------------------------------------- jobs */

static void
ngx_http_sparsegate_job_free(ngx_http_sparsegate_job_t *job)
{
    ngx_uint_t  i;

    if (job->timeout.timer_set) {
        ngx_del_timer(&job->timeout);
    }

    if (job->prev) {
        job->prev->next = job->next;
    } else {
        ngx_http_sparsegate_jobs = job->next;
    }
    if (job->next) {
        job->next->prev = job->prev;
    }
    ngx_http_sparsegate_n_jobs--;

    for (i = 0; i < job->n_stops; i++) {
        free(job->stops[i]);
    }
    free(job->text);
    free(job->citations);
    free(job);
}


/* The request is going away (finished, failed or the client left). */
static void
ngx_http_sparsegate_job_request_gone(void *data)
{
    ngx_http_sparsegate_job_t *job = data;

    if (job->timeout.timer_set) {
        ngx_del_timer(&job->timeout);
    }
    job->request = NULL;

    if (job->submitted && !job->engine_done) {
        /* the engine frees its blocks at the next step and answers with a
         * cancelled DONE, which frees the job */
        if (!job->failed) {
            ngx_http_sparsegate_count_error(NGX_HTTP_SG_ERR_CLIENT_CLOSED);
        }
        if (ngx_http_sparsegate_the_engine != NULL) {
            sg_engine_cancel(ngx_http_sparsegate_the_engine, job->engine_id);
            return;
        }
    }

    ngx_http_sparsegate_job_free(job);
}


static void
ngx_http_sparsegate_job_timeout(ngx_event_t *ev)
{
    ngx_http_sparsegate_job_t *job = ev->data;

    if (job->request == NULL) {
        return;
    }
    if (ngx_http_sparsegate_the_engine != NULL && job->submitted) {
        sg_engine_cancel(ngx_http_sparsegate_the_engine, job->engine_id);
    }
    ngx_http_sparsegate_job_fail(job, NGX_HTTP_GATEWAY_TIME_OUT,
                                 NGX_HTTP_SG_ERR_TIMEOUT,
                                 "generation timed out (sparsegate_timeout)");
}


ngx_http_sparsegate_job_t *
ngx_http_sparsegate_job_create(ngx_http_request_t *r,
    ngx_http_sparsegate_format_e format)
{
    ngx_pool_cleanup_t              *cln;
    ngx_http_sparsegate_ctx_t       *ctx;
    ngx_http_sparsegate_job_t       *job;
    ngx_http_sparsegate_loc_conf_t  *slcf;

    ctx = ngx_http_get_module_ctx(r, ngx_http_sparsegate_module);
    slcf = ngx_http_get_module_loc_conf(r, ngx_http_sparsegate_module);

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    job = calloc(1, sizeof(ngx_http_sparsegate_job_t));
    if (job == NULL) {
        return NULL;
    }

    job->request = r;
    job->format = format;
    job->created = ngx_time();
    ngx_snprintf((u_char *) job->id, sizeof(job->id), "%s-%P%016xL%Z",
                 format == NGX_HTTP_SG_FMT_CHAT ? "chatcmpl"
                 : format == NGX_HTTP_SG_FMT_RAG ? "rag" : "cmpl",
                 ngx_pid, ++ngx_http_sparsegate_job_seq);

    job->timeout.handler = ngx_http_sparsegate_job_timeout;
    job->timeout.data = job;
    job->timeout.log = r->connection->log;
    /* not cancelable: a graceful stop (reload, quit) waits for it */
    ngx_add_timer(&job->timeout, slcf->timeout);

    job->next = ngx_http_sparsegate_jobs;
    if (job->next) {
        job->next->prev = job;
    }
    ngx_http_sparsegate_jobs = job;
    ngx_http_sparsegate_n_jobs++;

    cln->handler = ngx_http_sparsegate_job_request_gone;
    cln->data = job;
    ctx->job = job;

    return job;
}


static void
ngx_http_sparsegate_writer(ngx_http_request_t *r)
{
    ngx_int_t                  rc;
    ngx_event_t               *wev;
    ngx_http_core_loc_conf_t  *clcf;

    wev = r->connection->write;
    if (wev->timedout) {
        r->connection->timedout = 1;
        ngx_http_finalize_request(r, NGX_HTTP_REQUEST_TIME_OUT);
        return;
    }

    rc = ngx_http_output_filter(r, NULL);
    if (rc == NGX_ERROR) {
        ngx_http_finalize_request(r, NGX_ERROR);
        return;
    }

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);
    if (r->buffered || r->connection->buffered) {
        if (!wev->delayed) {
            ngx_add_timer(wev, clcf->send_timeout);
        }
        if (ngx_handle_write_event(wev, clcf->send_lowat) != NGX_OK) {
            ngx_http_finalize_request(r, NGX_ERROR);
        }
        return;
    }

    if (wev->timer_set) {
        ngx_del_timer(wev);
    }
}


ngx_int_t
ngx_http_sparsegate_job_submit(ngx_http_request_t *r,
    ngx_http_sparsegate_job_t *job, sg_request *req)
{
    int         rc;
    char        err[160];
    sg_engine  *e;

    e = ngx_http_sparsegate_the_engine;
    req->user = job;

    rc = sg_engine_submit(e, req, &job->engine_id, err, sizeof(err));
    switch (rc) {

    case SG_OK:
        break;

    case SG_EBUSY:
        ngx_http_sparsegate_count_error(NGX_HTTP_SG_ERR_QUEUE_FULL);
        r->headers_out.status = NGX_HTTP_TOO_MANY_REQUESTS;
        {
            ngx_table_elt_t  *h;

            h = ngx_list_push(&r->headers_out.headers);
            if (h != NULL) {
                h->hash = 1;
                ngx_str_set(&h->key, "Retry-After");
                ngx_str_set(&h->value, "1");
            }
        }
        return ngx_http_sparsegate_error(r, NGX_HTTP_TOO_MANY_REQUESTS,
                                         NGX_HTTP_SG_ERR_QUEUE_FULL, NULL,
                                         "the engine's queue is full: %s",
                                         err);

    case SG_ETOOLONG:
        return ngx_http_sparsegate_error(r, NGX_HTTP_BAD_REQUEST,
                                         NGX_HTTP_SG_ERR_CONTEXT_LENGTH,
                                         "messages", "%s", err);

    case SG_EINVAL:
        return ngx_http_sparsegate_error(r, NGX_HTTP_BAD_REQUEST,
                                         NGX_HTTP_SG_ERR_BAD_REQUEST, NULL,
                                         "%s", err);

    default:
        return ngx_http_sparsegate_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                         NGX_HTTP_SG_ERR_ENGINE, NULL,
                                         "engine error: %s", err);
    }

    job->submitted = 1;
    job->prompt_tokens = req->n_prompt;
    job->t_submit = ngx_current_msec;
    ngx_gettimeofday(&job->tv_submit);

    /* wait: notice a client that leaves, flush output when it can take it */
    r->read_event_handler = ngx_http_test_reading;
    r->write_event_handler = ngx_http_sparsegate_writer;

    return NGX_DONE;
}


/* ------------------------------------------------------ engine bridge */

static void
ngx_http_sparsegate_engine_readable(ngx_event_t *ev)
{
    int                         n, i, rounds;
    sg_event                    evs[64];
    ngx_http_sparsegate_job_t  *job;

    if (ngx_http_sparsegate_the_engine == NULL) {
        return;
    }

    /* bounded: level-triggered events bring us back for the rest */
    for (rounds = 0; rounds < 64; rounds++) {
        n = sg_engine_drain(ngx_http_sparsegate_the_engine, evs, 64);
        if (n <= 0) {
            break;
        }

        for (i = 0; i < n; i++) {
            job = evs[i].user;
            if (job == NULL) {
                continue;
            }

            switch (evs[i].kind) {

            case SG_EV_TOKEN:
                if (job->request != NULL) {
                    ngx_http_sparsegate_job_token(job, evs[i].token);
                }
                break;

            case SG_EV_DONE:
                job->engine_done = 1;
                if (job->request == NULL) {
                    ngx_http_sparsegate_job_free(job);
                } else {
                    /* may finalize the request and so free the job */
                    ngx_http_sparsegate_job_done(job, &evs[i]);
                }
                break;

            case SG_EV_ERROR:
                job->engine_done = 1;
                if (job->request == NULL) {
                    ngx_http_sparsegate_job_free(job);
                } else {
                    ngx_http_sparsegate_job_fail(job,
                                        NGX_HTTP_INTERNAL_SERVER_ERROR,
                                        NGX_HTTP_SG_ERR_ENGINE,
                                        evs[i].message);
                }
                break;
            }
        }

        if (n < 64) {
            break;
        }
    }

    ngx_http_sparsegate_publish_engine(ngx_http_sparsegate_n_jobs);
    (void) ev;
}
