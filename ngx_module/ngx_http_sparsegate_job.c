/*
 * The job unit.  A job lives in malloc'ed memory, not in the request's
 * pool, because the engine may still report on it after the client has
 * gone: it is freed once both the request and the engine (every choice's
 * generation) are done with it.
 *
 *   run -> create -> submit (a generation per choice) -> token ... -> done
 *       -> (every choice done) response -> finalize
 *   a stop string: cancel that choice; its cancelled done ends it
 *   the deadline: cancel all, and a 504 (or an error event mid-stream)
 *   the client gone: cancel all; the last cancelled done frees the job
 *   the client slow: while its send buffer is full every choice is paused
 *   (the engine keeps their cache), resumed when the buffer drains;
 *   send_timeout ends a client that stops reading
 */

#include "ngx_http_sparsegate_job.h"
#include "ngx_http_sparsegate_choice.h"
#include "ngx_http_sparsegate_counters.h"
#include "ngx_http_sparsegate_running.h"
#include "ngx_http_sparsegate_send.h"


typedef struct ngx_http_sparsegate_job_s  ngx_http_sparsegate_job_t;

struct ngx_http_sparsegate_job_s {
    ngx_http_request_t                   *request;  /* NULL once it is gone */
    ngx_pool_cleanup_t                   *cleanup;  /* in the request pool */
    ngx_http_sparsegate_job_t            *next;     /* this worker's jobs */
    ngx_http_sparsegate_job_t            *prev;

    ngx_http_sparsegate_reply_t           reply;
    ngx_http_sparsegate_usage_t           usage;
    ngx_http_sparsegate_choice_t         *choices;
    ngx_uint_t                            n;
    ngx_uint_t                            n_submitted;
    ngx_uint_t                            n_done;   /* the engine's done or
                                                       error came */
    ngx_int_t                             prompt_all;   /* every choice's,
                                                           for /metrics */
    ngx_int_t                             cached_all;
    char                                  call_prefix[24];

    unsigned                              failed:1;    /* error answered */
    unsigned                              got_token:1;
    unsigned                              paused:1;    /* client is slow */

    ngx_http_sparsegate_running_t         running;  /* for /v1/status */

    struct timeval                        tv_submit;
    struct timeval                        tv_last;     /* last token */
    ngx_event_t                           timeout;     /* sparsegate_timeout */
};


static ngx_http_sparsegate_job_t *ngx_http_sparsegate_job_create(
    ngx_http_request_t *r, const ngx_http_sparsegate_job_opts_t *o);
static void ngx_http_sparsegate_job_free(ngx_http_sparsegate_job_t *job);
static void ngx_http_sparsegate_job_release(ngx_http_sparsegate_job_t *job,
    ngx_uint_t n_choices);
static void ngx_http_sparsegate_job_request_gone(void *data);
static void ngx_http_sparsegate_job_cancel_all(ngx_http_sparsegate_job_t *job);
static void ngx_http_sparsegate_job_pause_all(ngx_http_sparsegate_job_t *job,
    ngx_uint_t paused);
static void ngx_http_sparsegate_job_backpressure(
    ngx_http_sparsegate_job_t *job);
static void ngx_http_sparsegate_job_timeout(ngx_event_t *ev);
static void ngx_http_sparsegate_job_writer(ngx_http_request_t *r);
static void ngx_http_sparsegate_job_token(
    ngx_http_sparsegate_engine_client_t *c, int32_t token,
    const ngx_http_sparsegate_token_lp_t *lp);
static void ngx_http_sparsegate_job_done(
    ngx_http_sparsegate_engine_client_t *c,
    const ngx_http_sparsegate_engine_done_t *d);
static void ngx_http_sparsegate_job_error(
    ngx_http_sparsegate_engine_client_t *c, ngx_uint_t status,
    const char *message);
static void ngx_http_sparsegate_job_fail(ngx_http_sparsegate_job_t *job,
    ngx_uint_t status, ngx_http_sparsegate_error_e kind, const char *msg);


/* This worker's live jobs (including those whose client has left). */
static ngx_http_sparsegate_job_t  *ngx_http_sparsegate_jobs;
static ngx_uint_t                  ngx_http_sparsegate_n_jobs;
static uint64_t                    ngx_http_sparsegate_job_seq;


#define ngx_http_sparsegate_choice_of(c)                                     \
    ((ngx_http_sparsegate_choice_t *)                                        \
     ((u_char *) (c) - offsetof(ngx_http_sparsegate_choice_t, client)))


ngx_int_t
ngx_http_sparsegate_job_run(ngx_http_request_t *r,
    const ngx_http_sparsegate_job_opts_t *o, const int32_t *ids,
    size_t n_ids)
{
    ngx_int_t                         rc, limit, want;
    ngx_uint_t                        i;
    ngx_http_sparsegate_job_t        *job;
    ngx_http_sparsegate_fault_t       f;
    ngx_http_sparsegate_sampling_t    s;
    ngx_http_sparsegate_loc_conf_t   *slcf;
    ngx_http_sparsegate_main_conf_t  *smcf;

    smcf = ngx_http_get_module_main_conf(r, ngx_http_sparsegate_module);
    slcf = ngx_http_get_module_loc_conf(r, ngx_http_sparsegate_module);

    /* limits, with the numbers in the message (OpenAI's wording) */
    limit = smcf->context_limit;
    s = o->sampling;
    if (s.max_tokens < 0) {
        s.max_tokens = ngx_min(slcf->max_tokens, limit - (ngx_int_t) n_ids);
    }
    if ((ngx_int_t) n_ids + s.max_tokens > limit || s.max_tokens <= 0) {
        want = ngx_max(s.max_tokens, 1);
        return ngx_http_sparsegate_error(r, NGX_HTTP_BAD_REQUEST,
                   NGX_HTTP_SG_ERR_CONTEXT_LENGTH, "messages",
                   "This model's maximum context length is %i tokens. "
                   "However, you requested %i tokens (%uz in the messages, "
                   "%i in the completion). Please reduce the length of the "
                   "messages or completion.", limit,
                   (ngx_int_t) n_ids + want, n_ids, want);
    }
    if (s.grammar != NULL && s.max_tokens < sg_grammar_min_bytes(s.grammar))
    {
        return ngx_http_sparsegate_error(r, NGX_HTTP_BAD_REQUEST,
                   NGX_HTTP_SG_ERR_BAD_REQUEST, "max_tokens",
                   "max_tokens %i is too small for the output format asked "
                   "for: it needs up to %d tokens to be complete",
                   s.max_tokens, sg_grammar_min_bytes(s.grammar));
    }

    job = ngx_http_sparsegate_job_create(r, o);
    if (job == NULL) {
        return ngx_http_sparsegate_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                         NGX_HTTP_SG_ERR_NO_MEMORY, NULL,
                                         "out of memory");
    }

    ngx_gettimeofday(&job->tv_submit);
    job->usage.prompt_tokens = (ngx_int_t) n_ids;

    for (i = 0; i < job->n; i++) {
        ngx_http_sparsegate_sampling_t  si = s;

        si.seed = s.seed + i;
        if (ngx_http_sparsegate_engine_submit(&job->choices[i].client, ids,
                                              n_ids, &si, &f)
            != NGX_OK)
        {
            /* the request's end cancels and frees what was submitted */
            ngx_http_sparsegate_job_cancel_all(job);
            job->failed = 1;
            return ngx_http_sparsegate_send_fault(r, &f);
        }
        job->choices[i].submitted = 1;
        job->n_submitted++;
    }

    ngx_http_sparsegate_running_tokens(&job->running, (ngx_int_t) n_ids, -1,
                                       0);
    /* in the engine's queue or prefilling: /v1/status tells which */
    ngx_http_sparsegate_running_phase(&job->running, "prefill");

    ngx_log_debug5(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "sparsegate job %s: engine #%uL, %ui choices, %uz prompt "
                   "tokens, max_tokens %i", job->reply.id,
                   job->choices[0].client.id, job->n, n_ids, s.max_tokens);

    /* wait: notice a client that leaves, flush output when it can take it */
    r->read_event_handler = ngx_http_test_reading;
    r->write_event_handler = ngx_http_sparsegate_job_writer;

    if (job->reply.stream) {
        rc = ngx_http_sparsegate_reply_start(r, &job->reply, job->n);
        if (rc != NGX_OK) {
            return rc;
        }
    }

    return NGX_DONE;
}


static ngx_http_sparsegate_job_t *
ngx_http_sparsegate_job_create(ngx_http_request_t *r,
    const ngx_http_sparsegate_job_opts_t *o)
{
    ngx_uint_t                         i;
    ngx_pool_cleanup_t                *cln;
    ngx_http_sparsegate_ctx_t         *ctx;
    ngx_http_sparsegate_job_t         *job;
    ngx_http_sparsegate_choice_t      *ch;
    ngx_http_sparsegate_loc_conf_t    *slcf;
    ngx_http_sparsegate_main_conf_t   *smcf;
    ngx_http_sparsegate_choice_opts_t  co;

    smcf = ngx_http_get_module_main_conf(r, ngx_http_sparsegate_module);
    slcf = ngx_http_get_module_loc_conf(r, ngx_http_sparsegate_module);

    ctx = ngx_http_sparsegate_ctx(r);
    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (ctx == NULL || cln == NULL) {
        return NULL;
    }

    job = calloc(1, sizeof(ngx_http_sparsegate_job_t));
    if (job == NULL) {
        return NULL;
    }
    job->n = ngx_max(o->n, 1);
    job->choices = calloc(job->n, sizeof(ngx_http_sparsegate_choice_t));
    if (job->choices == NULL) {
        free(job);
        return NULL;
    }
    ngx_snprintf((u_char *) job->call_prefix, sizeof(job->call_prefix),
                 "%P%08xD%08xD%Z", ngx_pid, (uint32_t) ngx_random(),
                 (uint32_t) ++ngx_http_sparsegate_job_seq);

    ngx_memzero(&co, sizeof(ngx_http_sparsegate_choice_opts_t));
    co.tokenizer = smcf->tokenizer;
    co.format = o->format;
    co.stops = o->stops;
    co.n_stops = o->n_stops;
    co.thinking = o->thinking;
    co.tools = o->tools;
    co.logprobs = o->sampling.logprobs;
    co.call_prefix = job->call_prefix;

    for (i = 0; i < job->n; i++) {
        ch = &job->choices[i];
        if (ngx_http_sparsegate_choice_init(ch, i, &co) != NGX_OK) {
            /* each choice up to this one was zeroed, then filled */
            ngx_http_sparsegate_job_release(job, i + 1);
            return NULL;
        }
        ch->owner = job;
        ch->client.token = ngx_http_sparsegate_job_token;
        ch->client.done = ngx_http_sparsegate_job_done;
        ch->client.error = ngx_http_sparsegate_job_error;
    }

    if (o->citations.len > 0) {
        /* an answer without the citations it was built from is not the
         * answer: no room for them fails the job */
        job->reply.citations = malloc(o->citations.len + 1);
        if (job->reply.citations == NULL) {
            ngx_http_sparsegate_job_release(job, job->n);
            return NULL;
        }
        ngx_memcpy(job->reply.citations, o->citations.data,
                   o->citations.len);
        job->reply.citations[o->citations.len] = '\0';
    }

    job->request = r;
    job->cleanup = cln;
    job->reply.format = o->format;
    job->reply.stream = o->stream;
    job->reply.include_usage = o->include_usage;
    job->reply.reasoning = o->thinking;
    job->reply.logprobs = o->sampling.logprobs ? 1 : 0;
    job->reply.model = (char *) smcf->model_name.data;
    job->reply.created = ngx_time();
    ngx_snprintf((u_char *) job->reply.id, sizeof(job->reply.id),
                 "%s-%P%016xL%Z",
                 o->format == NGX_HTTP_SG_FMT_CHAT ? "chatcmpl"
                 : o->format == NGX_HTTP_SG_FMT_RAG ? "rag" : "cmpl",
                 ngx_pid, ngx_http_sparsegate_job_seq);

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
    ngx_http_sparsegate_gauge_jobs(ngx_http_sparsegate_n_jobs);

    cln->handler = ngx_http_sparsegate_job_request_gone;
    cln->data = job;
    ctx->job = job;

    job->running.id = job->reply.id;
    job->running.stream = o->stream;
    ngx_http_sparsegate_running_add(&job->running, r,
        o->format == NGX_HTTP_SG_FMT_CHAT ? "chat_completions"
        : o->format == NGX_HTTP_SG_FMT_RAG ? "rag" : "completions",
        "submit");

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "sparsegate job %s: created, %s", job->reply.id,
                   o->stream ? "streamed" : "one response");

    return job;
}


static void
ngx_http_sparsegate_job_free(ngx_http_sparsegate_job_t *job)
{
    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "sparsegate job %s: freed", job->reply.id);

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
    ngx_http_sparsegate_gauge_jobs(ngx_http_sparsegate_n_jobs);
    ngx_http_sparsegate_running_remove(&job->running);

    ngx_http_sparsegate_job_release(job, job->n);
}


/* The job's own memory: its first n_choices choices (those initialized),
 * the choice array, the citations, the job. */
static void
ngx_http_sparsegate_job_release(ngx_http_sparsegate_job_t *job,
    ngx_uint_t n_choices)
{
    ngx_uint_t  i;

    for (i = 0; i < n_choices; i++) {
        ngx_http_sparsegate_choice_free(&job->choices[i]);
    }
    free(job->choices);
    free(job->reply.citations);
    free(job);
}


void
ngx_http_sparsegate_job_exit_process(void)
{
    ngx_http_sparsegate_job_t  *job;

    while (ngx_http_sparsegate_jobs != NULL) {
        job = ngx_http_sparsegate_jobs;
        if (job->request != NULL) {
            job->cleanup->handler = NULL;
        }
        ngx_http_sparsegate_job_free(job);
    }
}


/* Cancels every choice still generating; their cancelled done events
 * follow. */
static void
ngx_http_sparsegate_job_cancel_all(ngx_http_sparsegate_job_t *job)
{
    ngx_uint_t  i;

    for (i = 0; i < job->n; i++) {
        if (job->choices[i].submitted && !job->choices[i].engine_done) {
            ngx_http_sparsegate_engine_cancel(&job->choices[i].client);
        }
    }
}


/* Pauses (1) or resumes (0) every choice still generating. */
static void
ngx_http_sparsegate_job_pause_all(ngx_http_sparsegate_job_t *job,
    ngx_uint_t paused)
{
    ngx_uint_t  i;

    job->paused = paused;
    for (i = 0; i < job->n; i++) {
        if (job->choices[i].submitted && !job->choices[i].engine_done) {
            ngx_http_sparsegate_engine_pause(&job->choices[i].client, paused);
        }
    }
}


/* What could not be sent waits in nginx's buffers: while it does, the
 * generations are paused (a client that stops reading no longer keeps its
 * sequences generating at full speed, bounded only by max_tokens);
 * job_writer resumes them once everything is sent, and send_timeout ends a
 * client that never reads again. */
static void
ngx_http_sparsegate_job_backpressure(ngx_http_sparsegate_job_t *job)
{
    ngx_event_t               *wev;
    ngx_http_request_t        *r;
    ngx_http_core_loc_conf_t  *clcf;

    r = job->request;
    if (r == NULL || job->paused || job->n_done == job->n_submitted
        || !(r->buffered || r->connection->buffered))
    {
        return;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "sparsegate job %s: client's buffer full, paused",
                   job->reply.id);

    ngx_http_sparsegate_job_pause_all(job, 1);

    wev = r->connection->write;
    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);
    if (!wev->timer_set && !wev->delayed) {
        ngx_add_timer(wev, clcf->send_timeout);
    }
    if (ngx_handle_write_event(wev, clcf->send_lowat) != NGX_OK) {
        ngx_http_sparsegate_finalize(r, NGX_ERROR);
    }
}


/* The request is going away (answered, failed, or the client left). */
static void
ngx_http_sparsegate_job_request_gone(void *data)
{
    ngx_http_sparsegate_job_t *job = data;

    ngx_http_sparsegate_ctx_t  *ctx;

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, job->request->connection->log, 0,
                   "sparsegate job %s: request gone, submitted:%ui "
                   "engine done:%ui", job->reply.id, job->n_submitted,
                   job->n_done);

    if (job->timeout.timer_set) {
        ngx_del_timer(&job->timeout);
    }
    ctx = ngx_http_get_module_ctx(job->request, ngx_http_sparsegate_module);
    if (ctx != NULL) {
        ctx->job = NULL;
    }
    job->request = NULL;

    if (job->n_done < job->n_submitted) {
        /* the engine frees its blocks at the next step and answers with a
         * cancelled done, which frees the job once all have come */
        if (!job->failed) {
            ngx_http_sparsegate_count_error(NGX_HTTP_SG_ERR_CLIENT_CLOSED);
        }
        ngx_http_sparsegate_running_phase(&job->running, "cancelling");
        ngx_http_sparsegate_job_cancel_all(job);
        return;
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
    ngx_http_sparsegate_job_cancel_all(job);
    ngx_http_sparsegate_job_fail(job, NGX_HTTP_GATEWAY_TIME_OUT,
                                 NGX_HTTP_SG_ERR_TIMEOUT,
                                 "generation timed out (sparsegate_timeout)");
}


/* The client can take more output: flush what waits. */
static void
ngx_http_sparsegate_job_writer(ngx_http_request_t *r)
{
    ngx_int_t                   rc;
    ngx_event_t                *wev;
    ngx_http_sparsegate_ctx_t  *ctx;
    ngx_http_sparsegate_job_t  *job;
    ngx_http_core_loc_conf_t   *clcf;

    wev = r->connection->write;
    if (wev->timedout) {
        r->connection->timedout = 1;
        ngx_http_sparsegate_finalize(r, NGX_HTTP_REQUEST_TIME_OUT);
        return;
    }

    rc = ngx_http_output_filter(r, NULL);
    if (rc == NGX_ERROR) {
        ngx_http_sparsegate_finalize(r, NGX_ERROR);
        return;
    }

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);
    if (r->buffered || r->connection->buffered) {
        if (!wev->delayed) {
            ngx_add_timer(wev, clcf->send_timeout);
        }
        if (ngx_handle_write_event(wev, clcf->send_lowat) != NGX_OK) {
            ngx_http_sparsegate_finalize(r, NGX_ERROR);
        }
        return;
    }

    if (wev->timer_set) {
        ngx_del_timer(wev);
    }

    /* all sent: the generations paused for this client go on */
    ctx = ngx_http_get_module_ctx(r, ngx_http_sparsegate_module);
    job = ctx ? ctx->job : NULL;
    if (job != NULL && job->paused) {
        ngx_http_sparsegate_job_pause_all(job, 0);
    }
}


static double
ngx_http_sparsegate_seconds_since(struct timeval *from, struct timeval *now)
{
    return (now->tv_sec - from->tv_sec) + (now->tv_usec - from->tv_usec) / 1e6;
}


/* A stream: what the choice adds now (all of it when last). */
static ngx_int_t
ngx_http_sparsegate_job_send(ngx_http_sparsegate_job_t *job,
    ngx_http_sparsegate_choice_t *ch, ngx_uint_t last)
{
    ngx_int_t                    rc;
    ngx_http_sparsegate_delta_t  d;

    rc = ngx_http_sparsegate_choice_delta(ch, last, &d);
    if (rc == NGX_OK) {
        rc = ngx_http_sparsegate_reply_delta(job->request, &job->reply, &d);
    }
    ngx_free(d.logprobs);
    return rc;
}


static void
ngx_http_sparsegate_job_token(ngx_http_sparsegate_engine_client_t *c,
    int32_t token, const ngx_http_sparsegate_token_lp_t *lp)
{
    ngx_int_t                      rc;
    struct timeval                 tv;
    ngx_http_request_t            *r;
    ngx_http_sparsegate_job_t     *job;
    ngx_http_sparsegate_choice_t  *ch;

    ch = ngx_http_sparsegate_choice_of(c);
    job = ch->owner;
    r = job->request;
    if (r == NULL || ch->text.stopped || job->failed) {
        return;
    }

    ngx_gettimeofday(&tv);
    if (!job->got_token) {
        ngx_http_sparsegate_observe_ttft(
            ngx_http_sparsegate_seconds_since(&job->tv_submit, &tv));
        job->got_token = 1;
    } else {
        ngx_http_sparsegate_observe_itl(
            ngx_http_sparsegate_seconds_since(&job->tv_last, &tv));
    }
    job->tv_last = tv;
    job->usage.completion_tokens++;

    if (job->usage.completion_tokens == 1) {
        ngx_http_sparsegate_running_phase(&job->running, "decode");
    }
    ngx_http_sparsegate_running_tokens(&job->running,
                                       job->usage.prompt_tokens,
                                       ch->client.cached_tokens,
                                       job->usage.completion_tokens);

    ngx_log_debug4(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "sparsegate job %s: token %i (choice %ui, #%ui)",
                   job->reply.id, (ngx_int_t) token, ch->index,
                   ch->n_tokens + 1);

    rc = ngx_http_sparsegate_choice_token(ch, token, lp);
    if (rc == NGX_ERROR) {
        ngx_http_sparsegate_job_cancel_all(job);
        ngx_http_sparsegate_job_fail(job, NGX_HTTP_SERVICE_UNAVAILABLE,
                                     NGX_HTTP_SG_ERR_NO_MEMORY,
                                     "out of memory");
        return;
    }
    if (rc == NGX_DONE) {
        /* a stop string: the engine answers with a cancelled done */
        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "sparsegate job %s: stop string (choice %ui)",
                       job->reply.id, ch->index);
        ngx_http_sparsegate_engine_cancel(&ch->client);
    }

    if (!job->reply.stream) {
        return;
    }
    if (ngx_http_sparsegate_job_send(job, ch, 0) != NGX_OK) {
        ngx_http_sparsegate_finalize(r, NGX_ERROR);
        return;
    }
    ngx_http_sparsegate_job_backpressure(job);
}


/* Every choice is done: the whole answer, or the stream's end. */
static void
ngx_http_sparsegate_job_answer(ngx_http_sparsegate_job_t *job)
{
    ngx_int_t                     rc;
    ngx_uint_t                    i;
    ngx_http_request_t           *r;
    ngx_http_sparsegate_delta_t  *d, last;

    r = job->request;
    if (job->timeout.timer_set) {
        ngx_del_timer(&job->timeout);
    }

    d = NULL;
    if (!job->reply.stream) {
        /* the last of each choice's text, then the whole messages */
        d = ngx_pcalloc(r->pool,
                        job->n * sizeof(ngx_http_sparsegate_delta_t));
        if (d == NULL) {
            ngx_http_sparsegate_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }
        for (i = 0; i < job->n; i++) {
            rc = ngx_http_sparsegate_choice_delta(&job->choices[i], 1,
                                                  &last);
            ngx_free(last.logprobs);
            if (rc != NGX_OK) {
                ngx_http_sparsegate_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
                return;
            }
            ngx_http_sparsegate_choice_message(&job->choices[i], &d[i]);
            d[i].finish_reason = last.finish_reason;
        }
    }

    job->usage.reasoning_tokens = 0;
    for (i = 0; i < job->n; i++) {
        job->usage.reasoning_tokens +=
            ngx_http_sparsegate_choice_reasoning_tokens(&job->choices[i]);
    }
    /* the engine's work: each choice's prompt, and what of it the prefix
     * cache served (the first choice's, in the response's usage) */
    ngx_http_sparsegate_count_tokens(job->prompt_all, job->cached_all,
                                     job->usage.completion_tokens);

    if (job->reply.stream) {
        /* may free the job: nothing of it is touched after this */
        rc = ngx_http_sparsegate_reply_finish(r, &job->reply, NULL, 0,
                                              &job->usage);
        ngx_http_sparsegate_finalize(r, rc);
        return;
    }

    rc = ngx_http_sparsegate_reply_finish(r, &job->reply, d, job->n,
                                          &job->usage);
    for (i = 0; i < job->n; i++) {
        ngx_free(d[i].logprobs);
    }
    ngx_http_sparsegate_finalize(r, rc);
}


/* A choice's generation is over (done or failed): its job, or NULL when
 * the request has gone (the last one frees the job). */
static ngx_http_sparsegate_job_t *
ngx_http_sparsegate_job_ended(ngx_http_sparsegate_engine_client_t *c,
    ngx_http_sparsegate_choice_t **choice)
{
    ngx_http_sparsegate_job_t     *job;
    ngx_http_sparsegate_choice_t  *ch;

    ch = ngx_http_sparsegate_choice_of(c);
    job = ch->owner;
    ch->engine_done = 1;
    job->n_done++;
    *choice = ch;

    if (job->request == NULL) {
        if (job->n_done == job->n_submitted) {
            ngx_http_sparsegate_job_free(job);
        }
        return NULL;
    }
    return job;
}


static void
ngx_http_sparsegate_job_done(ngx_http_sparsegate_engine_client_t *c,
    const ngx_http_sparsegate_engine_done_t *d)
{
    ngx_http_request_t            *r;
    ngx_http_sparsegate_job_t     *job;
    ngx_http_sparsegate_choice_t  *ch;

    job = ngx_http_sparsegate_job_ended(c, &ch);
    if (job == NULL) {
        return;
    }
    r = job->request;

    ch->finish = d->finish;
    job->usage.prompt_tokens = d->prompt_tokens;
    job->prompt_all += d->prompt_tokens;
    job->cached_all += d->cached_tokens;
    if (ch->index == 0) {
        job->usage.cached_tokens = d->cached_tokens;
    }
    if (!ch->text.stopped
        && d->completion_tokens > (ngx_int_t) ch->n_tokens)
    {
        job->usage.completion_tokens += d->completion_tokens - ch->n_tokens;
    }

    ngx_log_debug6(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "sparsegate job %s: done, finish %d, prompt %i (cached "
                   "%i), completion %i (choice %ui)", job->reply.id,
                   d->finish, d->prompt_tokens, d->cached_tokens,
                   job->usage.completion_tokens, ch->index);

    if (job->failed) {
        /* answered already; the request's end frees the job */
        return;
    }

    if (job->reply.stream && ngx_http_sparsegate_job_send(job, ch, 1)
                             != NGX_OK)
    {
        ngx_http_sparsegate_job_cancel_all(job);
        ngx_http_sparsegate_finalize(r, NGX_ERROR);
        return;
    }

    if (job->n_done == job->n_submitted) {
        ngx_http_sparsegate_job_answer(job);
    }
}


static void
ngx_http_sparsegate_job_error(ngx_http_sparsegate_engine_client_t *c,
    ngx_uint_t status, const char *message)
{
    ngx_http_sparsegate_job_t     *job;
    ngx_http_sparsegate_choice_t  *ch;

    job = ngx_http_sparsegate_job_ended(c, &ch);
    if (job == NULL) {
        return;
    }

    ngx_http_sparsegate_job_cancel_all(job);
    ngx_http_sparsegate_job_fail(job, status,
                                 status == NGX_HTTP_SERVICE_UNAVAILABLE
                                 ? NGX_HTTP_SG_ERR_NO_MEMORY
                                 : NGX_HTTP_SG_ERR_ENGINE, message);
}


/* Answers an error (the whole response, or mid-stream its end). */
static void
ngx_http_sparsegate_job_fail(ngx_http_sparsegate_job_t *job,
    ngx_uint_t status, ngx_http_sparsegate_error_e kind, const char *msg)
{
    ngx_int_t            rc;
    ngx_http_request_t  *r;

    r = job->request;
    if (r == NULL || job->failed) {
        return;
    }
    job->failed = 1;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "sparsegate job %s: fails with %ui", job->reply.id,
                   status);

    if (job->timeout.timer_set) {
        ngx_del_timer(&job->timeout);
    }

    rc = ngx_http_sparsegate_reply_error(r, &job->reply, status, kind, msg);
    ngx_http_sparsegate_finalize(r, rc);
}
