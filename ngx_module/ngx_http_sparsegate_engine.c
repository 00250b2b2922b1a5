/*
 * The engine bridge: the engine's API is spoken here and nowhere else in
 * the module.
 */

#include "ngx_http_sparsegate_engine.h"
#include "ngx_http_sparsegate_counters.h"

#include <unistd.h>

#include "sparsegate.h"


#if (NGX_HTTP_SG_MAX_TOP_LOGPROBS != SG_MAX_TOP_LOGPROBS)
#error "NGX_HTTP_SG_MAX_TOP_LOGPROBS differs from the engine's"
#endif


/* Events moved out per drain call, and drain calls per wake-up: bounded,
 * the level-triggered eventfd brings the worker back for the rest. */
#define NGX_HTTP_SG_DRAIN_BATCH   64
#define NGX_HTTP_SG_DRAIN_ROUNDS  64


static void ngx_http_sparsegate_engine_readable(ngx_event_t *ev);
static void ngx_http_sparsegate_tokenizer_cleanup(void *data);


/* Per worker process: one engine and its eventfd's connection. */
static sg_engine         *ngx_http_sparsegate_the_engine;
static ngx_connection_t  *ngx_http_sparsegate_engine_conn;
static char               ngx_http_sparsegate_engine_err[256];


/* ------------------------------------------------- configuration time */

void
ngx_http_sparsegate_engine_conf_defaults(ngx_http_sparsegate_main_conf_t *smcf)
{
    if (smcf->kv_cache_size == NGX_CONF_UNSET) {
        smcf->kv_cache_size = (off_t) SG_DEFAULT_KV_BYTES;
    }

    ngx_conf_init_value(smcf->max_queue, SG_DEFAULT_MAX_QUEUE);
    ngx_conf_init_value(smcf->max_running, SG_DEFAULT_MAX_RUNNING);
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


/*
 * The device group's memory plan, checked by nginx -t (sg_engine_plan_make:
 * config.json and the checkpoint's headers, no weights read).  On GPUs
 * every device holds its rank's weights, the cache pool
 * (sparsegate_kv_cache_size) and the forward pass's working memory;
 * without sparsegate_device_memory the GPUs are not asked (that would start
 * CUDA in the master) and only the device list is checked.  Host ranks
 * share one mapping of the weights: the host's memory (or the devices'
 * total) must hold them once plus every rank's pool and working memory.
 * A configuration that cannot fit is refused with the numbers.
 */
char *
ngx_http_sparsegate_engine_conf_plan(ngx_conf_t *cf,
    ngx_http_sparsegate_main_conf_t *smcf)
{
    char                               err[256];
    u_char                             s[5][32], more[96];
    off_t                              have;
    double                             need, kv;
    sg_engine_opts                     o;
    sg_engine_plan                     p;

    /* what the worker's engine will be started with (engine_start) */
    sg_engine_opts_default(&o);
    o.model_dir = (char *) smcf->model.data;
    o.backend = smcf->backend == 1 ? "cuda" : "cpu";
    o.devices = smcf->devices.len ? (char *) smcf->devices.data : NULL;
    o.max_running = (int) smcf->max_running;
    o.max_context = (int) smcf->max_context;

    have = smcf->device_memory;
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
        return NGX_CONF_ERROR;
    }

    if (have == NGX_CONF_UNSET) {
        ngx_log_error(NGX_LOG_NOTICE, cf->log, 0,
                      "sparsegate: %d device(s), %s of weights each; set "
                      "sparsegate_device_memory to have nginx -t check that "
                      "they fit", p.n_ranks,
                      ngx_http_sparsegate_size(s[0], p.rank_weight_bytes));
        return NGX_CONF_OK;
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
            return NGX_CONF_ERROR;
        }
        return NGX_CONF_OK;
    }

    /* host ranks: the weights once, every rank's pool and buffers */
    need = (double) p.weight_bytes
           + p.n_ranks * (kv + (double) p.work_bytes);
    if (smcf->device_memory != NGX_CONF_UNSET) {
        have = smcf->device_memory * p.n_ranks;
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
                      smcf->device_memory != NGX_CONF_UNSET
                      ? "sparsegate_device_memory gives"
                      : "this machine has",
                      ngx_http_sparsegate_size(s[4], have));
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* config.json read now, so nginx -t reports a bad checkpoint with
 * file:line; the weights load in each worker. */
char *
ngx_http_sparsegate_engine_conf_model(ngx_conf_t *cf,
    ngx_http_sparsegate_main_conf_t *smcf)
{
    char            err[256];
    sg_model_info   info;

    /* smcf->model is NUL-terminated: directive arguments are */
    if (sg_model_info_load((char *) smcf->model.data, &info, err,
                           sizeof(err))
        != 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "sparsegate_model \"%V\": %s", &smcf->model, err);
        return NGX_CONF_ERROR;
    }

    /* the weights' files against their headers: a truncated file fails
     * here, not in every worker (which would then answer 503) */
    if (sg_model_check_files((char *) smcf->model.data, err, sizeof(err))
        != 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "sparsegate_model \"%V\": %s", &smcf->model, err);
        return NGX_CONF_ERROR;
    }

    smcf->model_context = info.max_position_embeddings;
    smcf->vocab_size = info.vocab_size;
    return NGX_CONF_OK;
}


/* The tokenizer and the model go together: every id the tokenizer makes
 * is one the model has (else every request would be refused as the
 * client's fault), and the chat template's special tokens are tokens. */
char *
ngx_http_sparsegate_engine_conf_check(ngx_conf_t *cf,
    ngx_http_sparsegate_main_conf_t *smcf)
{
    int   ids;
    char  err[256];

    ids = sg_tokenizer_vocab_size(smcf->tokenizer);
    if (ids > smcf->vocab_size) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "sparsegate: the tokenizer \"%V\" makes ids up to %d "
                      "but the model \"%V\" has vocab_size %i "
                      "(config.json): they do not go together",
                      &smcf->tokenizer_path, ids - 1, &smcf->model,
                      smcf->vocab_size);
        return NGX_CONF_ERROR;
    }

    if (sg_chat_check(smcf->tokenizer, err, sizeof(err)) != 0) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "sparsegate: the tokenizer \"%V\": %s",
                      &smcf->tokenizer_path, err);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


char *
ngx_http_sparsegate_engine_conf_tokenizer(ngx_conf_t *cf,
    ngx_http_sparsegate_main_conf_t *smcf, ngx_str_t *path)
{
    char                 err[256];
    ngx_pool_cleanup_t  *cln;

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        return NGX_CONF_ERROR;
    }

    if (sg_tokenizer_load((char *) path->data, &smcf->tokenizer, err,
                          sizeof(err))
        != 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "sparsegate: cannot load tokenizer: %s", err);
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_http_sparsegate_tokenizer_cleanup;
    cln->data = smcf->tokenizer;
    smcf->tokenizer_hash = sg_tokenizer_hash(smcf->tokenizer);

    return NGX_CONF_OK;
}


static void
ngx_http_sparsegate_tokenizer_cleanup(void *data)
{
    sg_tokenizer_free(data);
}


/* -------------------------------------------------------- worker life */

void
ngx_http_sparsegate_engine_start(ngx_cycle_t *cycle,
    ngx_http_sparsegate_main_conf_t *smcf)
{
    ngx_int_t          fd;
    sg_engine_opts     o;
    ngx_connection_t  *c;

    sg_engine_opts_default(&o);
    o.model_dir = (char *) smcf->model.data;
    o.backend = smcf->backend == 1 ? "cuda" : "cpu";
    o.device = (int) smcf->device;
    o.devices = smcf->devices.len ? (char *) smcf->devices.data : NULL;
    o.n_threads = (int) smcf->threads;
    o.dense = (int) smcf->dense;
    o.window = (int) smcf->window;
    o.index_share = (int) smcf->index_share;
    o.kv_bytes = (size_t) smcf->kv_cache_size;
    o.max_queue = (int) smcf->max_queue;
    o.max_running = (int) smcf->max_running;
    o.max_context = (int) smcf->max_context;
    o.prefix_cache = 1;

    if (sg_engine_start(&o, &ngx_http_sparsegate_the_engine,
                        ngx_http_sparsegate_engine_err,
                        sizeof(ngx_http_sparsegate_engine_err))
        != 0)
    {
        ngx_http_sparsegate_the_engine = NULL;
        ngx_log_error(NGX_LOG_ALERT, cycle->log, 0,
                      "sparsegate: engine for \"%V\" did not start: %s",
                      &smcf->model, ngx_http_sparsegate_engine_err);
        return;
    }

    fd = sg_engine_fd(ngx_http_sparsegate_the_engine);
    c = ngx_get_connection(fd, cycle->log);
    if (c == NULL) {
        ngx_snprintf((u_char *) ngx_http_sparsegate_engine_err,
                     sizeof(ngx_http_sparsegate_engine_err),
                     "no free connection for the engine's eventfd%Z");
        sg_engine_stop(ngx_http_sparsegate_the_engine);
        ngx_http_sparsegate_the_engine = NULL;
        return;
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
        return;
    }
    ngx_http_sparsegate_engine_conn = c;

    ngx_log_error(NGX_LOG_NOTICE, cycle->log, 0,
                  "sparsegate: engine started for \"%V\"", &smcf->model);
}


void
ngx_http_sparsegate_engine_stop(void)
{
    ngx_connection_t  *c;

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
}


const char *
ngx_http_sparsegate_engine_unavailable(void)
{
    if (ngx_http_sparsegate_the_engine != NULL) {
        return NULL;
    }
    return ngx_http_sparsegate_engine_err[0]
           ? ngx_http_sparsegate_engine_err : "no sparsegate_model configured";
}


/* ------------------------------------------------------- generations */

ngx_int_t
ngx_http_sparsegate_engine_submit(ngx_http_sparsegate_engine_client_t *c,
    const int32_t *ids, size_t n_ids, const ngx_http_sparsegate_sampling_t *s,
    ngx_http_sparsegate_fault_t *f)
{
    int         rc;
    char        err[160];
    sg_request  req;

    if (ngx_http_sparsegate_the_engine == NULL) {
        return ngx_http_sparsegate_fault(f, NGX_HTTP_SERVICE_UNAVAILABLE,
                   NGX_HTTP_SG_ERR_ENGINE, NULL, "engine unavailable: %s",
                   ngx_http_sparsegate_engine_unavailable());
    }

    ngx_memzero(&req, sizeof(sg_request));
    req.prompt = ids;
    req.n_prompt = (int) n_ids;
    req.max_tokens = (int) s->max_tokens;
    req.temperature = s->temperature;
    req.top_p = s->top_p;
    req.seed = s->seed;
    req.ignore_eos = (int) s->ignore_eos;
    req.top_k = (int) s->top_k;
    req.min_p = s->min_p;
    req.presence_penalty = s->presence_penalty;
    req.frequency_penalty = s->frequency_penalty;
    req.repetition_penalty = s->repetition_penalty;
    req.bias_ids = s->bias_ids;
    req.bias_values = s->bias_values;
    req.n_bias = (int) s->n_bias;
    req.logprobs = (int) s->logprobs;
    req.top_logprobs = (int) s->top_logprobs;
    req.grammar = s->grammar;
    req.script = s->script;
    req.n_script = (int) s->n_script;
    req.user = c;
    req.cache_salt = s->cache_salt.data;
    req.cache_salt_len = s->cache_salt.len;

    rc = sg_engine_submit(ngx_http_sparsegate_the_engine, &req, &c->id, err,
                          sizeof(err));
    switch (rc) {

    case SG_OK:
        ngx_log_debug3(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                       "sparsegate engine: submitted #%uL, %uz prompt "
                       "tokens, max_tokens %i", c->id, n_ids, s->max_tokens);
        return NGX_OK;

    case SG_EBUSY:
        return ngx_http_sparsegate_fault(f, NGX_HTTP_TOO_MANY_REQUESTS,
                   NGX_HTTP_SG_ERR_QUEUE_FULL, NULL,
                   "the engine's queue is full: %s", err);

    case SG_ETOOLONG:
        return ngx_http_sparsegate_fault(f, NGX_HTTP_BAD_REQUEST,
                   NGX_HTTP_SG_ERR_CONTEXT_LENGTH, "messages", "%s", err);

    case SG_EINVAL:
        return ngx_http_sparsegate_fault(f, NGX_HTTP_BAD_REQUEST,
                   NGX_HTTP_SG_ERR_BAD_REQUEST, NULL, "%s", err);

    case SG_ENOMEM:
        return ngx_http_sparsegate_fault(f, NGX_HTTP_SERVICE_UNAVAILABLE,
                   NGX_HTTP_SG_ERR_NO_MEMORY, NULL, "%s", err);

    default:
        return ngx_http_sparsegate_fault(f, NGX_HTTP_INTERNAL_SERVER_ERROR,
                   NGX_HTTP_SG_ERR_ENGINE, NULL, "engine error: %s", err);
    }
}


void
ngx_http_sparsegate_engine_pause(ngx_http_sparsegate_engine_client_t *c,
    ngx_uint_t paused)
{
    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "sparsegate engine: %s #%uL",
                   paused ? "pause" : "resume", c->id);

    if (ngx_http_sparsegate_the_engine != NULL) {
        sg_engine_pause(ngx_http_sparsegate_the_engine, c->id, (int) paused);
    }
}


void
ngx_http_sparsegate_engine_cancel(ngx_http_sparsegate_engine_client_t *c)
{
    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "sparsegate engine: cancel #%uL", c->id);

    if (ngx_http_sparsegate_the_engine != NULL) {
        sg_engine_cancel(ngx_http_sparsegate_the_engine, c->id);
    }
}


/* The eventfd is readable: hand every waiting event to its client.  A
 * callback may end its request and free its client: nothing of it is
 * touched after the call. */
static void
ngx_http_sparsegate_engine_readable(ngx_event_t *ev)
{
    int                                   n, i, rounds;
    sg_event                              evs[NGX_HTTP_SG_DRAIN_BATCH], *e;
    ngx_http_sparsegate_token_lp_t        lp;
    ngx_http_sparsegate_engine_done_t     done;
    ngx_http_sparsegate_engine_client_t  *c;

    if (ngx_http_sparsegate_the_engine == NULL) {
        return;
    }

    for (rounds = 0; rounds < NGX_HTTP_SG_DRAIN_ROUNDS; rounds++) {
        n = sg_engine_drain(ngx_http_sparsegate_the_engine, evs,
                            NGX_HTTP_SG_DRAIN_BATCH);
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ev->log, 0,
                       "sparsegate engine: %d events", n);
        if (n <= 0) {
            break;
        }

        for (i = 0; i < n; i++) {
            e = &evs[i];
            c = e->user;
            if (c == NULL) {
                continue;
            }

            switch (e->kind) {

            case SG_EV_TOKEN:
                /* logprobs filled only for a request that asked */
                c->cached_tokens = e->cached_tokens;
                lp.logprob = e->logprob;
                lp.n_top = (ngx_uint_t) e->n_top;
                ngx_memcpy(lp.top_ids, e->top_ids,
                           e->n_top * sizeof(int32_t));
                ngx_memcpy(lp.top_logprobs, e->top_logprobs,
                           e->n_top * sizeof(float));
                c->token(c, e->token, &lp);
                break;

            case SG_EV_DONE:
                done.finish = e->finish == SG_FINISH_LENGTH
                              ? NGX_HTTP_SG_FINISH_LENGTH
                              : e->finish == SG_FINISH_CANCELLED
                              ? NGX_HTTP_SG_FINISH_CANCELLED
                              : NGX_HTTP_SG_FINISH_STOP;
                done.prompt_tokens = e->prompt_tokens;
                done.cached_tokens = e->cached_tokens;
                done.completion_tokens = e->completion_tokens;
                c->done(c, &done);
                break;

            case SG_EV_ERROR:
                c->error(c, e->error == SG_ENOMEM
                            ? NGX_HTTP_SERVICE_UNAVAILABLE
                            : NGX_HTTP_INTERNAL_SERVER_ERROR, e->message);
                break;
            }
        }

        if (n < NGX_HTTP_SG_DRAIN_BATCH) {
            break;
        }
    }

    ngx_http_sparsegate_engine_publish();
}


ngx_int_t
ngx_http_sparsegate_engine_read(ngx_http_sparsegate_engine_gauges_t *g)
{
    sg_engine_stats  st;

    if (ngx_http_sparsegate_the_engine == NULL) {
        return NGX_DECLINED;
    }

    sg_engine_get_stats(ngx_http_sparsegate_the_engine, &st);
    g->queued = st.queued;
    g->running = st.running;
    g->kv_total = st.kv_blocks_total;
    g->kv_used = st.kv_blocks_used;
    g->kv_cached = st.kv_blocks_cached;
    g->paused = st.paused;
    g->done = st.requests_done;
    g->cancelled = st.requests_cancelled;
    g->refused = st.requests_refused;
    g->kv_block_bytes = st.kv_block_bytes;
    g->kv_evicted = st.kv_blocks_evicted;
    g->prompt_tokens = st.prompt_tokens;
    g->cached_tokens = st.cached_tokens;
    g->generated_tokens = st.generated_tokens;
    return NGX_OK;
}


void
ngx_http_sparsegate_engine_publish(void)
{
    ngx_http_sparsegate_engine_gauges_t  g;

    if (ngx_http_sparsegate_engine_read(&g) == NGX_OK) {
        ngx_http_sparsegate_gauge_engine(&g);
    }
}
