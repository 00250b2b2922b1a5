/*
 * GET /v1/status: what /metrics has, as JSON under the same names, plus
 * this worker's engine and the requests it serves now, each with its
 * phase, token counts and age (as llama.cpp's /slots).  The page's engine
 * view polls it.
 */

#include <cjson/cJSON.h>

#include "ngx_http_sparsegate_endpoints.h"
#include "ngx_http_sparsegate_conf.h"
#include "ngx_http_sparsegate_counters.h"
#include "ngx_http_sparsegate_engine.h"
#include "ngx_http_sparsegate_errors.h"
#include "ngx_http_sparsegate_running.h"
#include "ngx_http_sparsegate_send.h"


static cJSON *
ngx_http_sparsegate_status_engine(ngx_http_sparsegate_engine_gauges_t *g,
    ngx_int_t up)
{
    cJSON       *o;
    const char  *reason;

    o = cJSON_CreateObject();
    reason = ngx_http_sparsegate_engine_unavailable();
    cJSON_AddBoolToObject(o, "available", reason == NULL);
    if (reason != NULL) {
        cJSON_AddStringToObject(o, "reason", reason);
    }
    if (up != NGX_OK) {
        return o;
    }

    cJSON_AddNumberToObject(o, "queued", (double) g->queued);
    cJSON_AddNumberToObject(o, "running", (double) g->running);
    cJSON_AddNumberToObject(o, "kv_blocks_total", (double) g->kv_total);
    cJSON_AddNumberToObject(o, "kv_blocks_used", (double) g->kv_used);
    cJSON_AddNumberToObject(o, "kv_blocks_cached", (double) g->kv_cached);
    cJSON_AddNumberToObject(o, "kv_block_bytes", (double) g->kv_block_bytes);
    cJSON_AddNumberToObject(o, "kv_blocks_evicted", (double) g->kv_evicted);
    cJSON_AddNumberToObject(o, "prompt_tokens", (double) g->prompt_tokens);
    cJSON_AddNumberToObject(o, "cached_tokens", (double) g->cached_tokens);
    cJSON_AddNumberToObject(o, "generated_tokens",
                            (double) g->generated_tokens);
    cJSON_AddNumberToObject(o, "requests_done", (double) g->done);
    cJSON_AddNumberToObject(o, "requests_cancelled", (double) g->cancelled);
    cJSON_AddNumberToObject(o, "requests_refused", (double) g->refused);
    return o;
}


/*
 * A job submitted and without a token yet is in the engine's queue or
 * prefilling.  The scheduler admits from the head of its queue only
 * (FIFO), so the queue holds the most recently submitted of them: the
 * newest "queued" entries in phase "prefill" are the queued ones.
 */
static const char *
ngx_http_sparsegate_status_phase(ngx_http_sparsegate_running_t *e,
    ngx_queue_t *all, ngx_uint_t queued)
{
    ngx_uint_t                      newer;
    ngx_queue_t                    *q;
    ngx_http_sparsegate_running_t  *o;

    if (ngx_strcmp(e->phase, "prefill") != 0) {
        return e->phase;
    }

    newer = 0;
    for (q = ngx_queue_head(all); q != ngx_queue_sentinel(all);
         q = ngx_queue_next(q))
    {
        o = ngx_queue_data(q, ngx_http_sparsegate_running_t, queue);
        if (o->order > e->order && ngx_strcmp(o->phase, "prefill") == 0) {
            newer++;
        }
    }
    return newer < queued ? "queued" : "prefill";
}


static cJSON *
ngx_http_sparsegate_status_requests(ngx_uint_t queued)
{
    cJSON                          *arr, *o;
    ngx_int_t                       age;
    ngx_uint_t                      n;
    ngx_time_t                     *tp;
    ngx_queue_t                    *all, *q;
    ngx_http_sparsegate_running_t  *e;

    arr = cJSON_CreateArray();
    all = ngx_http_sparsegate_running_list(&n);
    tp = ngx_timeofday();

    for (q = ngx_queue_head(all); q != ngx_queue_sentinel(all);
         q = ngx_queue_next(q))
    {
        e = ngx_queue_data(q, ngx_http_sparsegate_running_t, queue);
        o = cJSON_CreateObject();
        if (o == NULL) {
            break;
        }
        age = (ngx_int_t) (tp->sec - e->start_sec) * 1000
              + (ngx_int_t) tp->msec - (ngx_int_t) e->start_msec;
        if (e->id != NULL) {
            cJSON_AddStringToObject(o, "id", e->id);
        } else {
            cJSON_AddNullToObject(o, "id");
        }
        cJSON_AddNumberToObject(o, "connection", (double) e->connection);
        cJSON_AddStringToObject(o, "endpoint", e->endpoint);
        cJSON_AddStringToObject(o, "phase",
            ngx_http_sparsegate_status_phase(e, all, queued));
        cJSON_AddBoolToObject(o, "stream", e->stream);
        cJSON_AddNumberToObject(o, "age_ms", (double) ngx_max(age, 0));
        if (e->prompt_tokens >= 0) {
            cJSON_AddNumberToObject(o, "prompt_tokens",
                                    (double) e->prompt_tokens);
        } else {
            cJSON_AddNullToObject(o, "prompt_tokens");
        }
        if (e->cached_tokens >= 0) {
            cJSON_AddNumberToObject(o, "cached_tokens",
                                    (double) e->cached_tokens);
        } else {
            cJSON_AddNullToObject(o, "cached_tokens");
        }
        cJSON_AddNumberToObject(o, "generated_tokens",
                                (double) e->generated_tokens);
        cJSON_AddItemToArray(arr, o);
    }

    return arr;
}


ngx_int_t
ngx_http_sparsegate_status(ngx_http_request_t *r)
{
    cJSON                                *root, *metrics;
    ngx_int_t                             rc, up;
    ngx_time_t                           *tp;
    ngx_http_sparsegate_main_conf_t      *smcf;
    ngx_http_sparsegate_engine_gauges_t   g;

    smcf = ngx_http_get_module_main_conf(r, ngx_http_sparsegate_module);

    ngx_http_sparsegate_engine_publish();

    metrics = ngx_http_sparsegate_counters_json();
    if (metrics == NULL) {
        return ngx_http_sparsegate_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                   NGX_HTTP_SG_ERR_ENGINE, NULL, "metrics are not set up");
    }

    ngx_memzero(&g, sizeof(g));
    up = ngx_http_sparsegate_engine_read(&g);
    tp = ngx_timeofday();

    root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "object", "sparsegate.status");
    cJSON_AddStringToObject(root, "model", (char *) smcf->model_name.data);
    cJSON_AddNumberToObject(root, "time",
                            (double) tp->sec + (double) tp->msec / 1000);
    cJSON_AddNumberToObject(root, "worker", (double) ngx_pid);
    cJSON_AddItemToObject(root, "engine",
                          ngx_http_sparsegate_status_engine(&g, up));
    cJSON_AddItemToObject(root, "metrics", metrics);
    cJSON_AddItemToObject(root, "requests",
                          ngx_http_sparsegate_status_requests(g.queued));

    rc = ngx_http_sparsegate_send_json(r, NGX_HTTP_OK, root);
    cJSON_Delete(root);
    return rc;
}
