/*
 * Counters in shared memory and their Prometheus text.
 */

#include <cjson/cJSON.h>

#include "ngx_http_sparsegate_counters.h"


#define NGX_HTTP_SG_GAUGES_N     10
#define NGX_HTTP_SG_COUNTERS_AT  7      /* the engines' totals from here */


/* gauge slots: the workers, and old ones still finishing after reloads */
#define NGX_HTTP_SG_MAX_WORKERS  128

static const double  ngx_http_sparsegate_ttft_bounds[] = {
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60
};
#define NGX_HTTP_SG_TTFT_N  (sizeof(ngx_http_sparsegate_ttft_bounds) \
                             / sizeof(double))

static const double  ngx_http_sparsegate_itl_bounds[] = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5
};
#define NGX_HTTP_SG_ITL_N  (sizeof(ngx_http_sparsegate_itl_bounds) \
                            / sizeof(double))

static const char  *ngx_http_sparsegate_count_labels[NGX_HTTP_SG_COUNT_N] = {
    [NGX_HTTP_SG_COUNT_CHAT] = "chat_completions",
    [NGX_HTTP_SG_COUNT_COMPLETIONS] = "completions",
    [NGX_HTTP_SG_COUNT_RAG] = "rag",
    [NGX_HTTP_SG_COUNT_MODELS] = "models",
    [NGX_HTTP_SG_COUNT_HEALTH] = "health",
    [NGX_HTTP_SG_COUNT_METRICS] = "metrics",
    [NGX_HTTP_SG_COUNT_TOKENIZE] = "tokenize",
    [NGX_HTTP_SG_COUNT_STATUS] = "status",
    [NGX_HTTP_SG_COUNT_COLLECTIONS] = "collections",
    [NGX_HTTP_SG_COUNT_UI] = "ui",
    [NGX_HTTP_SG_COUNT_OTHER] = "other",
};

static const char  *ngx_http_sparsegate_error_labels[NGX_HTTP_SG_ERR_N] = {
    [NGX_HTTP_SG_ERR_BAD_REQUEST] = "bad_request",
    [NGX_HTTP_SG_ERR_AUTH] = "auth",
    [NGX_HTTP_SG_ERR_NOT_FOUND] = "not_found",
    [NGX_HTTP_SG_ERR_TOO_LARGE] = "too_large",
    [NGX_HTTP_SG_ERR_CONTEXT_LENGTH] = "context_length",
    [NGX_HTTP_SG_ERR_QUEUE_FULL] = "queue_full",
    [NGX_HTTP_SG_ERR_ENGINE] = "engine",
    [NGX_HTTP_SG_ERR_STORE] = "store",
    [NGX_HTTP_SG_ERR_TIMEOUT] = "timeout",
    [NGX_HTTP_SG_ERR_CLIENT_CLOSED] = "client_closed",
    [NGX_HTTP_SG_ERR_NO_MEMORY] = "out_of_memory",
};


typedef struct {
    ngx_atomic_t  pid;
    ngx_atomic_t  queued;
    ngx_atomic_t  running;
    ngx_atomic_t  active;
    ngx_atomic_t  kv_total;
    ngx_atomic_t  kv_used;
    ngx_atomic_t  kv_cached;
    ngx_atomic_t  paused;
    ngx_atomic_t  done;
    ngx_atomic_t  cancelled;
    ngx_atomic_t  refused;
} ngx_http_sparsegate_worker_gauges_t;


typedef struct {
    ngx_atomic_t  count;
    ngx_atomic_t  sum_us;
    ngx_atomic_t  buckets[16];
} ngx_http_sparsegate_hist_t;


typedef struct {
    ngx_atomic_t                         requests[NGX_HTTP_SG_COUNT_N];
    ngx_atomic_t                         errors[NGX_HTTP_SG_ERR_N];
    ngx_atomic_t                         prompt_tokens;
    ngx_atomic_t                         cached_tokens;
    ngx_atomic_t                         completion_tokens;
    ngx_http_sparsegate_hist_t           ttft;
    ngx_http_sparsegate_hist_t           itl;
    ngx_http_sparsegate_worker_gauges_t  workers[NGX_HTTP_SG_MAX_WORKERS];
} ngx_http_sparsegate_shm_t;


static ngx_http_sparsegate_shm_t  *ngx_http_sparsegate_shm;
/* this process's slot, or NULL */
static ngx_http_sparsegate_worker_gauges_t  *ngx_http_sparsegate_mine;


/* The per-worker gauges, summed over the workers: name, help; the last
 * three (from NGX_HTTP_SG_COUNTERS_AT) are counters (the engines'
 * totals). */
static const char  *ngx_http_sparsegate_gauges[NGX_HTTP_SG_GAUGES_N][2] = {
    { "sparsegate_queue_depth", "requests waiting in the engines' queues" },
    { "sparsegate_running_sequences", "sequences being generated" },
    { "sparsegate_active_requests", "generations the gateway is serving "
      "(including ones whose client left and await cancellation)" },
    { "sparsegate_kv_blocks_total", "KV cache blocks in the pools" },
    { "sparsegate_kv_blocks_used", "KV cache blocks in use" },
    { "sparsegate_kv_blocks_cached", "KV cache blocks held only by the "
      "prefix cache" },
    { "sparsegate_paused_sequences", "sequences paused while their client "
      "cannot take more output" },
    { "sparsegate_engine_requests_done", "requests the engines finished" },
    { "sparsegate_engine_requests_cancelled", "requests the engines "
      "cancelled" },
    { "sparsegate_engine_requests_refused", "requests the engines refused" },
};


size_t
ngx_http_sparsegate_counters_size(void)
{
    return sizeof(ngx_http_sparsegate_shm_t) + 16 * ngx_pagesize;
}


ngx_int_t
ngx_http_sparsegate_counters_init_zone(ngx_shm_zone_t *zone, void *data)
{
    ngx_slab_pool_t            *shpool;
    ngx_http_sparsegate_shm_t  *m;

    if (data != NULL) {
        /* a reload: keep counting where the old cycle was */
        zone->data = data;
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) zone->shm.addr;
    m = ngx_slab_calloc(shpool, sizeof(ngx_http_sparsegate_shm_t));
    if (m == NULL) {
        return NGX_ERROR;
    }
    zone->data = m;
    return NGX_OK;
}


/* A slot's process is alive (a zombie counts until the master reaps it). */
static ngx_uint_t
ngx_http_sparsegate_alive(ngx_pid_t pid)
{
    return kill(pid, 0) == 0 || ngx_errno != NGX_ESRCH;
}


static void
ngx_http_sparsegate_clear_slot(ngx_http_sparsegate_worker_gauges_t *g)
{
    g->queued = 0;
    g->running = 0;
    g->active = 0;
    g->kv_total = 0;
    g->kv_used = 0;
    g->kv_cached = 0;
    g->paused = 0;
    g->done = 0;
    g->cancelled = 0;
    g->refused = 0;
}


void
ngx_http_sparsegate_counters_attach(ngx_shm_zone_t *zone)
{
    ngx_uint_t                            i;
    ngx_atomic_uint_t                     pid;
    ngx_http_sparsegate_worker_gauges_t  *g;

    ngx_http_sparsegate_shm = zone ? zone->data : NULL;
    ngx_http_sparsegate_mine = NULL;
    if (ngx_http_sparsegate_shm == NULL) {
        return;
    }

    for (i = 0; i < NGX_HTTP_SG_MAX_WORKERS; i++) {
        g = &ngx_http_sparsegate_shm->workers[i];
        pid = g->pid;

        /* a worker that was killed ran no exit handler: its share goes */
        if (pid != 0 && !ngx_http_sparsegate_alive((ngx_pid_t) pid)
            && ngx_atomic_cmp_set(&g->pid, pid, 0))
        {
            ngx_http_sparsegate_clear_slot(g);
        }
    }

    for (i = 0; i < NGX_HTTP_SG_MAX_WORKERS; i++) {
        g = &ngx_http_sparsegate_shm->workers[i];
        if (g->pid == 0 && ngx_atomic_cmp_set(&g->pid, 0, ngx_pid)) {
            ngx_http_sparsegate_clear_slot(g);
            ngx_http_sparsegate_mine = g;
            return;
        }
    }

    ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                  "sparsegate: all %d gauge slots taken, this worker's "
                  "gauges are not counted", NGX_HTTP_SG_MAX_WORKERS);
}


void
ngx_http_sparsegate_counters_worker_exit(void)
{
    ngx_http_sparsegate_worker_gauges_t  *g;

    g = ngx_http_sparsegate_mine;
    if (g != NULL && g->pid == (ngx_atomic_uint_t) ngx_pid) {
        ngx_http_sparsegate_clear_slot(g);
        (void) ngx_atomic_cmp_set(&g->pid, ngx_pid, 0);
    }
    ngx_http_sparsegate_mine = NULL;
}


void
ngx_http_sparsegate_count_request(ngx_http_sparsegate_count_e ep)
{
    if (ngx_http_sparsegate_shm) {
        (void) ngx_atomic_fetch_add(&ngx_http_sparsegate_shm->requests[ep], 1);
    }
}


void
ngx_http_sparsegate_count_error(ngx_http_sparsegate_error_e kind)
{
    if (ngx_http_sparsegate_shm) {
        (void) ngx_atomic_fetch_add(&ngx_http_sparsegate_shm->errors[kind], 1);
    }
}


void
ngx_http_sparsegate_count_tokens(ngx_int_t prompt, ngx_int_t cached,
    ngx_int_t completion)
{
    ngx_http_sparsegate_shm_t  *m = ngx_http_sparsegate_shm;

    if (m == NULL) {
        return;
    }
    (void) ngx_atomic_fetch_add(&m->prompt_tokens, prompt);
    (void) ngx_atomic_fetch_add(&m->cached_tokens, cached);
    (void) ngx_atomic_fetch_add(&m->completion_tokens, completion);
}


static void
ngx_http_sparsegate_observe(ngx_http_sparsegate_hist_t *h,
    const double *bounds, ngx_uint_t n, double seconds)
{
    ngx_uint_t  i;

    for (i = 0; i < n && seconds > bounds[i]; i++) { /* void */ }
    (void) ngx_atomic_fetch_add(&h->buckets[i], 1);      /* i == n: +Inf */
    (void) ngx_atomic_fetch_add(&h->count, 1);
    (void) ngx_atomic_fetch_add(&h->sum_us,
                                (ngx_atomic_int_t) (seconds * 1e6));
}


void
ngx_http_sparsegate_observe_ttft(double seconds)
{
    if (ngx_http_sparsegate_shm) {
        ngx_http_sparsegate_observe(&ngx_http_sparsegate_shm->ttft,
                                    ngx_http_sparsegate_ttft_bounds,
                                    NGX_HTTP_SG_TTFT_N, seconds);
    }
}


void
ngx_http_sparsegate_observe_itl(double seconds)
{
    if (ngx_http_sparsegate_shm) {
        ngx_http_sparsegate_observe(&ngx_http_sparsegate_shm->itl,
                                    ngx_http_sparsegate_itl_bounds,
                                    NGX_HTTP_SG_ITL_N, seconds);
    }
}


void
ngx_http_sparsegate_gauge_jobs(ngx_uint_t jobs)
{
    if (ngx_http_sparsegate_mine != NULL) {
        ngx_http_sparsegate_mine->active = jobs;
    }
}


void
ngx_http_sparsegate_gauge_engine(const ngx_http_sparsegate_engine_gauges_t *e)
{
    ngx_http_sparsegate_worker_gauges_t  *g;

    g = ngx_http_sparsegate_mine;
    if (g == NULL) {
        return;
    }
    g->queued = e->queued;
    g->running = e->running;
    g->kv_total = e->kv_total;
    g->kv_used = e->kv_used;
    g->kv_cached = e->kv_cached;
    g->paused = e->paused;
    g->done = e->done;
    g->cancelled = e->cancelled;
    g->refused = e->refused;
}


const char *
ngx_http_sparsegate_error_label(ngx_http_sparsegate_error_e kind)
{
    return ngx_http_sparsegate_error_labels[kind];
}


static void
ngx_http_sparsegate_sum_gauges(ngx_http_sparsegate_shm_t *m,
    ngx_atomic_uint_t *sum)
{
    ngx_uint_t                            i;
    ngx_http_sparsegate_worker_gauges_t  *g;

    ngx_memzero(sum, NGX_HTTP_SG_GAUGES_N * sizeof(ngx_atomic_uint_t));
    for (i = 0; i < NGX_HTTP_SG_MAX_WORKERS; i++) {
        g = &m->workers[i];
        if (g->pid == 0
            || !ngx_http_sparsegate_alive((ngx_pid_t) g->pid))
        {
            continue;
        }
        sum[0] += g->queued;
        sum[1] += g->running;
        sum[2] += g->active;
        sum[3] += g->kv_total;
        sum[4] += g->kv_used;
        sum[5] += g->kv_cached;
        sum[6] += g->paused;
        sum[7] += g->done;
        sum[8] += g->cancelled;
        sum[9] += g->refused;
    }
}


static u_char *
ngx_http_sparsegate_print_hist(u_char *p, u_char *end, const char *name,
    const char *help, ngx_http_sparsegate_hist_t *h, const double *bounds,
    ngx_uint_t n)
{
    ngx_uint_t         i;
    ngx_atomic_uint_t  cum;

    p = ngx_slprintf(p, end, "# HELP %s %s\n# TYPE %s histogram\n",
                     name, help, name);
    cum = 0;
    for (i = 0; i < n; i++) {
        cum += h->buckets[i];
        p = ngx_slprintf(p, end, "%s_bucket{le=\"%.4f\"} %uA\n", name,
                         bounds[i], cum);
    }
    cum += h->buckets[n];
    p = ngx_slprintf(p, end, "%s_bucket{le=\"+Inf\"} %uA\n", name, cum);
    p = ngx_slprintf(p, end, "%s_sum %.6f\n%s_count %uA\n", name,
                     (double) h->sum_us / 1e6, name, h->count);
    return p;
}


u_char *
ngx_http_sparsegate_counters_text(ngx_pool_t *pool, size_t *len)
{
    u_char                               *buf, *p, *end;
    size_t                                size;
    ngx_uint_t                            i;
    ngx_atomic_uint_t                     sum[NGX_HTTP_SG_GAUGES_N];
    ngx_http_sparsegate_shm_t            *m;

    m = ngx_http_sparsegate_shm;
    if (m == NULL) {
        return NULL;
    }

    size = 16384;
    buf = ngx_pnalloc(pool, size);
    if (buf == NULL) {
        return NULL;
    }
    p = buf;
    end = buf + size;

    p = ngx_slprintf(p, end, "# HELP sparsegate_requests_total HTTP "
                     "requests by endpoint\n"
                     "# TYPE sparsegate_requests_total counter\n");
    for (i = 0; i < NGX_HTTP_SG_COUNT_N; i++) {
        p = ngx_slprintf(p, end,
                         "sparsegate_requests_total{endpoint=\"%s\"} %uA\n",
                         ngx_http_sparsegate_count_labels[i],
                         m->requests[i]);
    }

    p = ngx_slprintf(p, end, "# HELP sparsegate_errors_total errors by "
                     "kind\n# TYPE sparsegate_errors_total counter\n");
    for (i = 0; i < NGX_HTTP_SG_ERR_N; i++) {
        p = ngx_slprintf(p, end,
                         "sparsegate_errors_total{kind=\"%s\"} %uA\n",
                         ngx_http_sparsegate_error_labels[i], m->errors[i]);
    }

    p = ngx_slprintf(p, end,
            "# HELP sparsegate_prompt_tokens_total prompt tokens of "
            "finished requests\n"
            "# TYPE sparsegate_prompt_tokens_total counter\n"
            "sparsegate_prompt_tokens_total %uA\n"
            "# HELP sparsegate_generated_tokens_total completion tokens\n"
            "# TYPE sparsegate_generated_tokens_total counter\n"
            "sparsegate_generated_tokens_total %uA\n"
            "# HELP sparsegate_prefix_cache_hit_tokens_total prompt tokens "
            "served by the prefix cache\n"
            "# TYPE sparsegate_prefix_cache_hit_tokens_total counter\n"
            "sparsegate_prefix_cache_hit_tokens_total %uA\n",
            m->prompt_tokens, m->completion_tokens, m->cached_tokens);

    p = ngx_http_sparsegate_print_hist(p, end,
            "sparsegate_time_to_first_token_seconds",
            "time from submission to the first generated token", &m->ttft,
            ngx_http_sparsegate_ttft_bounds, NGX_HTTP_SG_TTFT_N);
    p = ngx_http_sparsegate_print_hist(p, end,
            "sparsegate_inter_token_latency_seconds",
            "time between two generated tokens of one request", &m->itl,
            ngx_http_sparsegate_itl_bounds, NGX_HTTP_SG_ITL_N);

    ngx_http_sparsegate_sum_gauges(m, sum);
    for (i = 0; i < NGX_HTTP_SG_GAUGES_N; i++) {
        p = ngx_slprintf(p, end, "# HELP %s %s\n# TYPE %s %s\n%s %uA\n",
                         ngx_http_sparsegate_gauges[i][0],
                         ngx_http_sparsegate_gauges[i][1],
                         ngx_http_sparsegate_gauges[i][0],
                         i >= NGX_HTTP_SG_COUNTERS_AT ? "counter" : "gauge",
                         ngx_http_sparsegate_gauges[i][0], sum[i]);
    }

    *len = p - buf;
    return buf;
}


static cJSON *
ngx_http_sparsegate_hist_json(ngx_http_sparsegate_hist_t *h,
    const double *bounds, ngx_uint_t n)
{
    cJSON              *o, *le, *buckets;
    ngx_uint_t          i;
    ngx_atomic_uint_t   cum;

    o = cJSON_CreateObject();
    le = cJSON_AddArrayToObject(o, "le");
    buckets = cJSON_AddArrayToObject(o, "buckets");
    if (le == NULL || buckets == NULL) {
        cJSON_Delete(o);
        return NULL;
    }

    cum = 0;
    for (i = 0; i <= n; i++) {
        cum += h->buckets[i];
        if (i < n) {
            cJSON_AddItemToArray(le, cJSON_CreateNumber(bounds[i]));
        }
        cJSON_AddItemToArray(buckets, cJSON_CreateNumber((double) cum));
    }
    cJSON_AddNumberToObject(o, "sum", (double) h->sum_us / 1e6);
    cJSON_AddNumberToObject(o, "count", (double) h->count);
    return o;
}


cJSON *
ngx_http_sparsegate_counters_json(void)
{
    cJSON                      *o, *req, *err;
    ngx_uint_t                  i;
    ngx_atomic_uint_t           sum[NGX_HTTP_SG_GAUGES_N];
    ngx_http_sparsegate_shm_t  *m;

    m = ngx_http_sparsegate_shm;
    if (m == NULL) {
        return NULL;
    }

    o = cJSON_CreateObject();
    req = cJSON_AddObjectToObject(o, "sparsegate_requests_total");
    err = cJSON_AddObjectToObject(o, "sparsegate_errors_total");
    if (req == NULL || err == NULL) {
        cJSON_Delete(o);
        return NULL;
    }
    for (i = 0; i < NGX_HTTP_SG_COUNT_N; i++) {
        cJSON_AddNumberToObject(req, ngx_http_sparsegate_count_labels[i],
                                (double) m->requests[i]);
    }
    for (i = 0; i < NGX_HTTP_SG_ERR_N; i++) {
        cJSON_AddNumberToObject(err, ngx_http_sparsegate_error_labels[i],
                                (double) m->errors[i]);
    }

    cJSON_AddNumberToObject(o, "sparsegate_prompt_tokens_total",
                            (double) m->prompt_tokens);
    cJSON_AddNumberToObject(o, "sparsegate_generated_tokens_total",
                            (double) m->completion_tokens);
    cJSON_AddNumberToObject(o, "sparsegate_prefix_cache_hit_tokens_total",
                            (double) m->cached_tokens);

    cJSON_AddItemToObject(o, "sparsegate_time_to_first_token_seconds",
        ngx_http_sparsegate_hist_json(&m->ttft,
                                      ngx_http_sparsegate_ttft_bounds,
                                      NGX_HTTP_SG_TTFT_N));
    cJSON_AddItemToObject(o, "sparsegate_inter_token_latency_seconds",
        ngx_http_sparsegate_hist_json(&m->itl,
                                      ngx_http_sparsegate_itl_bounds,
                                      NGX_HTTP_SG_ITL_N));

    ngx_http_sparsegate_sum_gauges(m, sum);
    for (i = 0; i < NGX_HTTP_SG_GAUGES_N; i++) {
        cJSON_AddNumberToObject(o, ngx_http_sparsegate_gauges[i][0],
                                (double) sum[i]);
    }

    return o;
}
