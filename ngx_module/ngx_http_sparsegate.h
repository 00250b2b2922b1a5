/*
 * SparseGate nginx module: what its files share.
 *
 *   ngx_http_sparsegate_module.c   directives, configuration, the engine
 *                                  bridge (eventfd -> events -> jobs)
 *   ngx_http_sparsegate_request.c  endpoint dispatch, API keys, bodies
 *   ngx_http_sparsegate_openai.c   /v1/chat/completions, /v1/completions,
 *                                  /v1/models: requests in
 *   ngx_http_sparsegate_response.c JSON or SSE out, stop strings
 *   ngx_http_sparsegate_rag.c      /v1/rag: store query on the event loop,
 *                                  context building, then a generation
 *   ngx_http_sparsegate_metrics.c  counters in shared memory, /metrics
 *   ngx_http_sparsegate_errors.c   OpenAI-shaped error responses
 *   ngx_http_sparsegate_offload.c  CPU-heavy steps in nginx's thread pool
 *
 * A "job" is one generation.  It lives in malloc'ed memory, not in the
 * request pool, because the engine may still report on it after the client
 * has gone: the job is freed once both the request and the engine are done
 * with it.
 */
#ifndef NGX_HTTP_SPARSEGATE_H
#define NGX_HTTP_SPARSEGATE_H

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <cjson/cJSON.h>

#include "sparsegate.h"
#include "tokenizer.h"
#include "store.h"


typedef struct {
    ngx_str_t            model;
    ngx_str_t            tokenizer_path;
    ngx_uint_t           backend;          /* 0 cpu, 1 cuda */
    ngx_int_t            device;
    ngx_int_t            threads;
    off_t                kv_cache_size;    /* off_t: takes "g" units */
    ngx_int_t            max_context;
    ngx_int_t            max_queue;
    ngx_int_t            max_running;
    ngx_int_t            index_share;
    ngx_str_t            model_name;
    ngx_str_t            store;
    ngx_msec_t           store_timeout;
    ngx_int_t            dense;
    ngx_int_t            window;

    /* loaded at configuration time (read-only, shared after fork) */
    sg_tokenizer        *tokenizer;
    sg_config            model_config;
    ngx_flag_t           configured;       /* a sparsegate_model was given */

    ngx_shm_zone_t      *shm_zone;         /* metrics */
    void                *thread_pool;      /* ngx_thread_pool_t, or NULL */
} ngx_http_sparsegate_main_conf_t;


typedef struct {
    ngx_flag_t           enable;           /* sparsegate_api */
    ngx_array_t         *api_keys;         /* of ngx_str_t */
    ngx_int_t            max_tokens;
    ngx_int_t            context_budget;
    ngx_msec_t           timeout;
} ngx_http_sparsegate_loc_conf_t;


typedef enum {
    NGX_HTTP_SG_EP_CHAT = 0,
    NGX_HTTP_SG_EP_COMPLETIONS,
    NGX_HTTP_SG_EP_RAG,
    NGX_HTTP_SG_EP_MODELS,
    NGX_HTTP_SG_EP_HEALTH,
    NGX_HTTP_SG_EP_METRICS,
    NGX_HTTP_SG_EP_OTHER,
    NGX_HTTP_SG_EP_N
} ngx_http_sparsegate_endpoint_e;


typedef enum {
    NGX_HTTP_SG_ERR_BAD_REQUEST = 0,
    NGX_HTTP_SG_ERR_AUTH,
    NGX_HTTP_SG_ERR_NOT_FOUND,
    NGX_HTTP_SG_ERR_TOO_LARGE,
    NGX_HTTP_SG_ERR_CONTEXT_LENGTH,
    NGX_HTTP_SG_ERR_QUEUE_FULL,
    NGX_HTTP_SG_ERR_ENGINE,
    NGX_HTTP_SG_ERR_STORE,
    NGX_HTTP_SG_ERR_TIMEOUT,
    NGX_HTTP_SG_ERR_CLIENT_CLOSED,
    NGX_HTTP_SG_ERR_N
} ngx_http_sparsegate_error_e;


#define NGX_HTTP_SG_MAX_STOPS  4

typedef struct ngx_http_sparsegate_job_s  ngx_http_sparsegate_job_t;

/* What the response looks like, filled by the endpoint that made the job. */
typedef enum {
    NGX_HTTP_SG_FMT_CHAT = 0,
    NGX_HTTP_SG_FMT_COMPLETION,
    NGX_HTTP_SG_FMT_RAG
} ngx_http_sparsegate_format_e;

struct ngx_http_sparsegate_job_s {
    ngx_http_request_t          *request;   /* NULL once the client is gone */
    ngx_http_sparsegate_job_t   *next;      /* live jobs of this worker */
    ngx_http_sparsegate_job_t   *prev;

    uint64_t                     engine_id;
    ngx_http_sparsegate_format_e format;
    unsigned                     submitted:1;
    unsigned                     engine_done:1;
    unsigned                     stream:1;
    unsigned                     include_usage:1;
    unsigned                     stopped:1;     /* a stop string matched */
    unsigned                     headers_sent:1;
    unsigned                     got_token:1;
    unsigned                     failed:1;      /* an error was answered */

    sg_detok                     detok;
    u_char                      *text;          /* generated text (malloc) */
    size_t                       text_len;
    size_t                       text_cap;
    size_t                       emitted;       /* bytes already streamed */
    char                        *stops[NGX_HTTP_SG_MAX_STOPS];
    ngx_uint_t                   n_stops;
    size_t                       max_stop_len;

    int                          prompt_tokens;
    int                          cached_tokens;
    int                          completion_tokens;
    int                          finish;        /* sg_finish_reason */

    ngx_msec_t                   t_submit;
    ngx_msec_t                   t_last;        /* last token, ms */
    struct timeval               tv_submit;
    struct timeval               tv_last;

    char                         id[48];
    time_t                       created;
    char                        *citations;     /* RAG: JSON array text */

    ngx_event_t                  timeout;       /* generation deadline */
};


typedef struct {
    ngx_http_sparsegate_job_t   *job;
    ngx_http_sparsegate_endpoint_e endpoint;
    void                        *rag;           /* rag.c's state */
} ngx_http_sparsegate_ctx_t;


extern ngx_module_t  ngx_http_sparsegate_module;

/* module.c: the per-worker engine and store */
sg_engine *ngx_http_sparsegate_engine(void);
const char *ngx_http_sparsegate_engine_error(void);
sg_astore *ngx_http_sparsegate_astore(void);
const ngx_str_t *ngx_http_sparsegate_model_name(
    ngx_http_sparsegate_main_conf_t *smcf);

/* request.c */
ngx_int_t ngx_http_sparsegate_handler(ngx_http_request_t *r);

/* module.c: jobs */
ngx_http_sparsegate_job_t *ngx_http_sparsegate_job_create(
    ngx_http_request_t *r, ngx_http_sparsegate_format_e format);
ngx_int_t ngx_http_sparsegate_job_submit(ngx_http_request_t *r,
    ngx_http_sparsegate_job_t *job, sg_request *req);
ngx_int_t ngx_http_sparsegate_read_body(ngx_http_request_t *r,
    u_char **data, size_t *len);
cJSON *ngx_http_sparsegate_parse_body(ngx_http_request_t *r,
    ngx_int_t *rc);
ngx_int_t ngx_http_sparsegate_check_auth(ngx_http_request_t *r,
    ngx_int_t *rc);

/* openai.c, response.c */
ngx_int_t ngx_http_sparsegate_stream_start(ngx_http_sparsegate_job_t *job);
ngx_int_t ngx_http_sparsegate_chat(ngx_http_request_t *r);
ngx_int_t ngx_http_sparsegate_completions(ngx_http_request_t *r);
ngx_int_t ngx_http_sparsegate_models(ngx_http_request_t *r);
ngx_int_t ngx_http_sparsegate_generate(ngx_http_request_t *r, cJSON *root,
    ngx_http_sparsegate_job_t *job, int32_t *ids, size_t n_ids);
ngx_int_t ngx_http_sparsegate_check_model(ngx_http_request_t *r,
    cJSON *root, ngx_int_t *rc);
void ngx_http_sparsegate_job_token(ngx_http_sparsegate_job_t *job,
    int32_t token);
void ngx_http_sparsegate_job_done(ngx_http_sparsegate_job_t *job,
    const sg_event *ev);
void ngx_http_sparsegate_job_fail(ngx_http_sparsegate_job_t *job,
    ngx_uint_t status, ngx_http_sparsegate_error_e kind, const char *msg);
ngx_int_t ngx_http_sparsegate_send_json(ngx_http_request_t *r,
    ngx_uint_t status, cJSON *json);
ngx_int_t ngx_http_sparsegate_send_text(ngx_http_request_t *r,
    ngx_uint_t status, const char *type, u_char *data, size_t len);

/* offload.c: work() runs in a thread, done() back on the worker */
typedef void (*ngx_http_sparsegate_work_pt)(void *data);
typedef void (*ngx_http_sparsegate_done_pt)(ngx_http_request_t *r,
    void *data);

/* text at least this long is tokenized in a thread */
#define NGX_HTTP_SG_OFFLOAD_BYTES  16384

ngx_int_t ngx_http_sparsegate_offload(ngx_http_request_t *r,
    ngx_http_sparsegate_work_pt work, ngx_http_sparsegate_done_pt done,
    void *data);

/* rag.c */
ngx_int_t ngx_http_sparsegate_rag(ngx_http_request_t *r);
void ngx_http_sparsegate_rag_cleanup(void *rag);

/* errors.c */
ngx_int_t ngx_http_sparsegate_error(ngx_http_request_t *r,
    ngx_uint_t status, ngx_http_sparsegate_error_e kind, const char *param,
    const char *fmt, ...);
u_char *ngx_http_sparsegate_error_json(ngx_http_sparsegate_error_e kind,
    ngx_uint_t status, const char *param, const char *message, size_t *len);
const char *ngx_http_sparsegate_error_name(ngx_http_sparsegate_error_e kind);

/* metrics.c */
ngx_int_t ngx_http_sparsegate_metrics_init_zone(ngx_shm_zone_t *zone,
    void *data);
size_t ngx_http_sparsegate_metrics_size(void);
void ngx_http_sparsegate_metrics_attach(ngx_shm_zone_t *zone);
void ngx_http_sparsegate_count_request(ngx_http_sparsegate_endpoint_e ep);
void ngx_http_sparsegate_count_error(ngx_http_sparsegate_error_e kind);
void ngx_http_sparsegate_count_tokens(int prompt, int cached,
    int completion);
void ngx_http_sparsegate_observe_ttft(double seconds);
void ngx_http_sparsegate_observe_itl(double seconds);
void ngx_http_sparsegate_publish_engine(ngx_int_t active_jobs);
void ngx_http_sparsegate_metrics_worker_exit(void);
ngx_int_t ngx_http_sparsegate_metrics(ngx_http_request_t *r);

#endif /* NGX_HTTP_SPARSEGATE_H */
