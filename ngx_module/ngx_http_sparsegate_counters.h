/*
 * Counters and histograms in a shared memory zone, so that any worker
 * answers /metrics for all of them (and they survive a reload); gauges are
 * per worker process (each owns an engine and its jobs), in a slot it
 * claims by its pid at start and frees at exit, and summed when printed
 * over the processes still alive: a killed worker's share (it ran no exit
 * handler) is dropped, and an old worker finishing its streams after a
 * reload has a slot of its own beside its successor's.
 */
#ifndef NGX_HTTP_SPARSEGATE_COUNTERS_H
#define NGX_HTTP_SPARSEGATE_COUNTERS_H

#include <ngx_config.h>
#include <ngx_core.h>

#include <cjson/cJSON.h>


/* The kinds of error: each is counted under its label, and answered with
 * its OpenAI type and code (errors.c). */
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
    NGX_HTTP_SG_ERR_NO_MEMORY,             /* 503: retry later */
    NGX_HTTP_SG_ERR_N
} ngx_http_sparsegate_error_e;


/* Requests are counted by endpoint under these labels. */
typedef enum {
    NGX_HTTP_SG_COUNT_CHAT = 0,
    NGX_HTTP_SG_COUNT_COMPLETIONS,
    NGX_HTTP_SG_COUNT_RAG,
    NGX_HTTP_SG_COUNT_MODELS,
    NGX_HTTP_SG_COUNT_HEALTH,
    NGX_HTTP_SG_COUNT_METRICS,
    NGX_HTTP_SG_COUNT_TOKENIZE,         /* tokenize and detokenize */
    NGX_HTTP_SG_COUNT_STATUS,
    NGX_HTTP_SG_COUNT_COLLECTIONS,
    NGX_HTTP_SG_COUNT_UI,
    NGX_HTTP_SG_COUNT_OTHER,
    NGX_HTTP_SG_COUNT_N
} ngx_http_sparsegate_count_e;


/* What a worker's engine reports (sg_engine_stats, in nginx's types). */
typedef struct {
    ngx_uint_t  queued;
    ngx_uint_t  running;
    ngx_uint_t  kv_total;
    ngx_uint_t  kv_used;
    ngx_uint_t  kv_cached;
    ngx_uint_t  paused;
    ngx_uint_t  done;
    ngx_uint_t  cancelled;
    ngx_uint_t  refused;
    /* not in the shared gauges: /v1/status reads them of its worker */
    ngx_uint_t  kv_block_bytes;
    ngx_uint_t  kv_evicted;
    ngx_uint_t  prompt_tokens;              /* at admission */
    ngx_uint_t  cached_tokens;              /* of those, prefix cache hits */
    ngx_uint_t  generated_tokens;           /* as each step makes them */
} ngx_http_sparsegate_engine_gauges_t;


/* configuration and worker life */
size_t ngx_http_sparsegate_counters_size(void);
ngx_int_t ngx_http_sparsegate_counters_init_zone(ngx_shm_zone_t *zone,
    void *data);
/* the worker's start: its slot claimed, those of dead workers freed */
void ngx_http_sparsegate_counters_attach(ngx_shm_zone_t *zone);
void ngx_http_sparsegate_counters_worker_exit(void);

/* counting */
void ngx_http_sparsegate_count_request(ngx_http_sparsegate_count_e ep);
void ngx_http_sparsegate_count_error(ngx_http_sparsegate_error_e kind);
void ngx_http_sparsegate_count_tokens(ngx_int_t prompt, ngx_int_t cached,
    ngx_int_t completion);
void ngx_http_sparsegate_observe_ttft(double seconds);
void ngx_http_sparsegate_observe_itl(double seconds);
void ngx_http_sparsegate_gauge_jobs(ngx_uint_t jobs);
void ngx_http_sparsegate_gauge_engine(
    const ngx_http_sparsegate_engine_gauges_t *g);

/* the metrics label of an error kind */
const char *ngx_http_sparsegate_error_label(ngx_http_sparsegate_error_e kind);

/* All of it in Prometheus text format, in pool memory; NULL without the
 * zone or memory. */
u_char *ngx_http_sparsegate_counters_text(ngx_pool_t *pool, size_t *len);

/* The same numbers as a JSON object under the same names (a histogram:
 * "le" its bounds, "buckets" cumulative with +Inf last, "sum", "count");
 * NULL without the zone or memory. */
cJSON *ngx_http_sparsegate_counters_json(void);

#endif /* NGX_HTTP_SPARSEGATE_COUNTERS_H */
