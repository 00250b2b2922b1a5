/*
 * SparseGate's nginx module: its directives, its configuration's life
 * (create, merge, check) and each worker's start and exit.
 *
 * The module's layers; a file calls only files of the rows below its own
 * (docs/gateway.md follows one request through them):
 *
 *   module.c                    directives, configuration, worker life
 *   handler.c                   endpoints bound by configuration, access,
 *                               method, body, dispatch
 *   prefix_key.c                $sparsegate_prefix_key, an upstream's hash
 *   openai.c rag.c info.c status.c collections.c ui.c tokenize.c
 *                               the endpoints (endpoints.h)
 *   messages.c constrain.c encode.c    chats for the V3.2 encoding; output
 *                               formats into grammars; text into ids
 *   params.c                    request JSON: its fields, the generation's
 *                               options
 *   job.c                       one generation's whole life
 *   choice.c                    one choice: reasoning, content, tool
 *                               calls, logprobs
 *   response.c text.c           OpenAI response shapes; text, stop strings
 *   engine.c store.c            the worker's engine and store on the
 *                               event loop
 *   errors.c offload.c          OpenAI-shaped errors; nginx's thread pool
 *   send.c counters.c running.c json.c
 *                               bytes out; counters for /metrics; the
 *                               requests running now (/v1/status); cJSON's
 *                               allocations
 *   fault.c                     fault injection (test builds)
 */

#include "ngx_http_sparsegate_conf.h"
#include "ngx_http_sparsegate_constrain.h"
#include "ngx_http_sparsegate_counters.h"
#include "ngx_http_sparsegate_engine.h"
#include "ngx_http_sparsegate_handler.h"
#include "ngx_http_sparsegate_job.h"
#include "ngx_http_sparsegate_json.h"
#include "ngx_http_sparsegate_prefix_key.h"
#include "ngx_http_sparsegate_store.h"

#include "context.h"          /* SG_CTX_BUDGET */

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
static char *ngx_http_sparsegate_test_hooks_slot(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static ngx_int_t ngx_http_sparsegate_init_process(ngx_cycle_t *cycle);
static void ngx_http_sparsegate_exit_process(ngx_cycle_t *cycle);


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

    { ngx_string("sparsegate_devices"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_sparsegate_main_conf_t, devices),
      NULL },

    { ngx_string("sparsegate_device_memory"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_off_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_sparsegate_main_conf_t, device_memory),
      NULL },

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
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS|NGX_CONF_TAKE1,
      ngx_http_sparsegate_api,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("sparsegate_api_key"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_sparsegate_api_key,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
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

    /* tests only: a request's "sparsegate_script" says what the engine
     * emits (nginx -t warns) */
    { ngx_string("sparsegate_test_hooks"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_http_sparsegate_test_hooks_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_sparsegate_loc_conf_t, test_hooks),
      NULL },

    { ngx_string("sparsegate_ui_root"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_sparsegate_loc_conf_t, ui_root),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_sparsegate_module_ctx = {
    ngx_http_sparsegate_prefix_key_add,    /* preconfiguration */
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
    smcf->device_memory = NGX_CONF_UNSET;

    return smcf;
}


static char *
ngx_http_sparsegate_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_sparsegate_main_conf_t *smcf = conf;

    u_char     *p;
    ngx_str_t   path, name = ngx_string("sparsegate_metrics");

    ngx_conf_init_uint_value(smcf->backend, 0);
    ngx_conf_init_value(smcf->device, 0);
    ngx_conf_init_value(smcf->threads, 0);
    ngx_conf_init_value(smcf->max_context, 0);
    ngx_http_sparsegate_engine_conf_defaults(smcf);
    ngx_conf_init_msec_value(smcf->store_timeout, SG_STORE_TIMEOUT_MS);
    ngx_conf_init_value(smcf->dense, 0);
    ngx_conf_init_value(smcf->window, 0);
    ngx_conf_init_value(smcf->index_share, 1);

    if (smcf->dense && smcf->window) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "sparsegate: \"sparsegate_dense_attention\" and "
                           "\"sparsegate_window_attention\" exclude each "
                           "other");
        return NGX_CONF_ERROR;
    }

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

        if (ngx_http_sparsegate_engine_conf_tokenizer(cf, smcf, &path)
            != NGX_CONF_OK)
        {
            return NGX_CONF_ERROR;
        }
    }

    if (smcf->configured
        && ngx_http_sparsegate_engine_conf_check(cf, smcf) != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    if (smcf->configured && smcf->max_context > smcf->model_context) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "sparsegate: sparsegate_max_context %i is over the "
                      "model's max_position_embeddings %i",
                      smcf->max_context, smcf->model_context);
        return NGX_CONF_ERROR;
    }
    smcf->context_limit = smcf->max_context > 0 ? smcf->max_context
                                                : smcf->model_context;

    if (smcf->configured) {
        if (ngx_http_sparsegate_engine_conf_plan(cf, smcf) != NGX_CONF_OK) {
            return NGX_CONF_ERROR;
        }

    } else if (smcf->devices.len) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "sparsegate_devices without sparsegate_model");
        return NGX_CONF_ERROR;
    }

    if (smcf->model_name.len == 0 && smcf->model.len > 0) {
        /* the checkpoint directory's base name (NUL-terminated with it) */
        p = smcf->model.data + smcf->model.len;
        while (p > smcf->model.data && p[-1] != '/') {
            p--;
        }
        smcf->model_name.data = p;
        smcf->model_name.len = smcf->model.data + smcf->model.len - p;
    }
    if (smcf->model_name.data == NULL) {
        ngx_str_set(&smcf->model_name, "");
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
                                           ngx_http_sparsegate_counters_size(),
                                           &ngx_http_sparsegate_module);
    if (smcf->shm_zone == NULL) {
        return NGX_CONF_ERROR;
    }
    smcf->shm_zone->init = ngx_http_sparsegate_counters_init_zone;

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

    slcf->endpoint = NGX_CONF_UNSET_PTR;
    slcf->api_keys = NGX_CONF_UNSET_PTR;
    slcf->max_tokens = NGX_CONF_UNSET;
    slcf->context_budget = NGX_CONF_UNSET;
    slcf->timeout = NGX_CONF_UNSET_MSEC;
    slcf->test_hooks = NGX_CONF_UNSET;

    return slcf;
}


static char *
ngx_http_sparsegate_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_sparsegate_loc_conf_t *prev = parent;
    ngx_http_sparsegate_loc_conf_t *conf = child;

    ngx_conf_merge_ptr_value(conf->endpoint, prev->endpoint, NULL);
    ngx_conf_merge_ptr_value(conf->api_keys, prev->api_keys, NULL);
    ngx_conf_merge_value(conf->max_tokens, prev->max_tokens, 4096);
    ngx_conf_merge_value(conf->context_budget, prev->context_budget,
                         SG_CTX_BUDGET);
    ngx_conf_merge_msec_value(conf->timeout, prev->timeout, 600000);
    ngx_conf_merge_value(conf->test_hooks, prev->test_hooks, 0);
    ngx_conf_merge_str_value(conf->ui_root, prev->ui_root, "");

    return ngx_http_sparsegate_endpoint_merge(cf, prev, conf);
}


/* sparsegate_model DIR: its config.json is checked now, so nginx -t
 * reports a bad checkpoint with file:line; the weights load in each
 * worker. */
static char *
ngx_http_sparsegate_model_slot(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_sparsegate_main_conf_t *smcf = conf;

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

    if (ngx_http_sparsegate_engine_conf_model(cf, smcf) != NGX_CONF_OK) {
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

    return ngx_http_sparsegate_engine_conf_tokenizer(cf, smcf,
                                                     &smcf->tokenizer_path);
}


/* sparsegate_store URI: parsed (and a sqlite file checked to be a store)
 * now, so a bad URI or file fails nginx -t; connections are made by the
 * workers. */
static char *
ngx_http_sparsegate_store_slot(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_sparsegate_main_conf_t *smcf = conf;

    ngx_str_t  *value;

    if (smcf->store.data != NULL) {
        return "is duplicate";
    }

    value = cf->args->elts;
    smcf->store = value[1];

    return ngx_http_sparsegate_store_check(cf, &smcf->store);
}


/* sparsegate_test_hooks on | off: on lets a request script the model's
 * output, which no production server should allow: nginx -t says so. */
static char *
ngx_http_sparsegate_test_hooks_slot(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    char                            *rv;
    ngx_http_sparsegate_loc_conf_t  *slcf = conf;

    rv = ngx_conf_set_flag_slot(cf, cmd, conf);
    if (rv == NGX_CONF_OK && slcf->test_hooks) {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "sparsegate_test_hooks is on: requests may script "
                           "the model's output (\"sparsegate_script\"); for "
                           "tests only");
    }
    return rv;
}


static ngx_int_t
ngx_http_sparsegate_init_process(ngx_cycle_t *cycle)
{
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

    ngx_http_sparsegate_counters_attach(smcf->shm_zone);
    ngx_http_sparsegate_json_init();

    if (smcf->store.len > 0) {
        ngx_http_sparsegate_store_open(cycle, smcf);
    }

    /* A worker without an engine stays up and answers 503 with the reason:
     * exiting would make the master respawn it in a loop. */
    if (smcf->configured) {
        ngx_http_sparsegate_engine_start(cycle, smcf);
    }
    if (smcf->tokenizer != NULL) {
        ngx_http_sparsegate_constrain_init_process(cycle, smcf);
    }

    return NGX_OK;
}


static void
ngx_http_sparsegate_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_sparsegate_engine_stop();
    ngx_http_sparsegate_job_exit_process();
    ngx_http_sparsegate_constrain_exit_process();
    ngx_http_sparsegate_store_close();
    ngx_http_sparsegate_counters_worker_exit();
}
