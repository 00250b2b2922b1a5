/*
 * The job unit.  A job lives in malloc'ed memory, not in the request's
 * pool, because the engine may still report on it after the client has
 * gone: it is freed once both the request and the engine are done with it.
 *
 *   run -> create -> submit -> token ... -> done -> response -> finalize
 *   a stop string: cancel; the engine's cancelled done ends the response
 *   the deadline: cancel, and a 504 (or an error event mid-stream)
 *   the client gone: cancel; the engine's cancelled done frees the job
 */

#include "ngx_http_sparsegate_job.h"
#include "ngx_http_sparsegate_counters.h"


typedef struct ngx_http_sparsegate_job_s  ngx_http_sparsegate_job_t;

struct ngx_http_sparsegate_job_s {
    ngx_http_sparsegate_engine_client_t   client;   /* the engine's events */
    ngx_http_request_t                   *request;  /* NULL once it is gone */
    ngx_pool_cleanup_t                   *cleanup;  /* in the request pool */
    ngx_http_sparsegate_job_t            *next;     /* this worker's jobs */
    ngx_http_sparsegate_job_t            *prev;

    ngx_http_sparsegate_reply_t           reply;
    ngx_http_sparsegate_text_t            text;
    ngx_http_sparsegate_usage_t           usage;
    ngx_http_sparsegate_finish_e          finish;

    unsigned                              submitted:1;
    unsigned                              engine_done:1;
    unsigned                              failed:1;    /* error answered */
    unsigned                              got_token:1;

    struct timeval                        tv_submit;
    struct timeval                        tv_last;     /* last token */
    ngx_event_t                           timeout;     /* sparsegate_timeout */
};


static ngx_http_sparsegate_job_t *ngx_http_sparsegate_job_create(
    ngx_http_request_t *r, const ngx_http_sparsegate_job_opts_t *o);
static void ngx_http_sparsegate_job_free(ngx_http_sparsegate_job_t *job);
static void ngx_http_sparsegate_job_request_gone(void *data);
static void ngx_http_sparsegate_job_timeout(ngx_event_t *ev);
static void ngx_http_sparsegate_job_writer(ngx_http_request_t *r);
static void ngx_http_sparsegate_job_token(
    ngx_http_sparsegate_engine_client_t *c, int32_t token);
static void ngx_http_sparsegate_job_done(
    ngx_http_sparsegate_engine_client_t *c,
    const ngx_http_sparsegate_engine_done_t *d);
static void ngx_http_sparsegate_job_error(
    ngx_http_sparsegate_engine_client_t *c, const char *message);
static void ngx_http_sparsegate_job_fail(ngx_http_sparsegate_job_t *job,
    ngx_uint_t status, ngx_http_sparsegate_error_e kind, const char *msg);


/* This worker's live jobs (including those whose client has left). */
static ngx_http_sparsegate_job_t  *ngx_http_sparsegate_jobs;
static ngx_uint_t                  ngx_http_sparsegate_n_jobs;
static uint64_t                    ngx_http_sparsegate_job_seq;


#define ngx_http_sparsegate_job_of(c)                                        \
    ((ngx_http_sparsegate_job_t *)                                           \
     ((u_char *) (c) - offsetof(ngx_http_sparsegate_job_t, client)))


ngx_int_t
ngx_http_sparsegate_job_run(ngx_http_request_t *r,
    const ngx_http_sparsegate_job_opts_t *o, const int32_t *ids,
    size_t n_ids)
{
    ngx_int_t                         rc, limit, want;
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

    job = ngx_http_sparsegate_job_create(r, o);
    if (job == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_sparsegate_engine_submit(&job->client, ids, n_ids, &s, &f)
        != NGX_OK)
    {
        /* the request's end frees the job */
        return ngx_http_sparsegate_send_fault(r, &f);
    }

    job->submitted = 1;
    job->usage.prompt_tokens = (ngx_int_t) n_ids;
    ngx_gettimeofday(&job->tv_submit);

    ngx_log_debug4(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "sparsegate job %s: engine #%uL, %uz prompt tokens, "
                   "max_tokens %i", job->reply.id, job->client.id, n_ids,
                   s.max_tokens);

    /* wait: notice a client that leaves, flush output when it can take it */
    r->read_event_handler = ngx_http_test_reading;
    r->write_event_handler = ngx_http_sparsegate_job_writer;

    if (job->reply.stream) {
        rc = ngx_http_sparsegate_reply_start(r, &job->reply);
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
    ngx_pool_cleanup_t               *cln;
    ngx_http_sparsegate_job_t        *job;
    ngx_http_sparsegate_loc_conf_t   *slcf;
    ngx_http_sparsegate_main_conf_t  *smcf;

    smcf = ngx_http_get_module_main_conf(r, ngx_http_sparsegate_module);
    slcf = ngx_http_get_module_loc_conf(r, ngx_http_sparsegate_module);

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    job = calloc(1, sizeof(ngx_http_sparsegate_job_t));
    if (job == NULL) {
        return NULL;
    }

    if (ngx_http_sparsegate_text_init(&job->text, smcf->tokenizer, o->stops,
                                      o->n_stops)
        != NGX_OK)
    {
        ngx_http_sparsegate_text_free(&job->text);
        free(job);
        return NULL;
    }

    if (o->citations.len > 0) {
        job->reply.citations = malloc(o->citations.len + 1);
        if (job->reply.citations == NULL) {
            ngx_http_sparsegate_text_free(&job->text);
            free(job);
            return NULL;
        }
        ngx_memcpy(job->reply.citations, o->citations.data,
                   o->citations.len);
        job->reply.citations[o->citations.len] = '\0';
    }

    job->client.token = ngx_http_sparsegate_job_token;
    job->client.done = ngx_http_sparsegate_job_done;
    job->client.error = ngx_http_sparsegate_job_error;

    job->request = r;
    job->cleanup = cln;
    job->reply.format = o->format;
    job->reply.stream = o->stream;
    job->reply.include_usage = o->include_usage;
    job->reply.model = (char *) smcf->model_name.data;
    job->reply.created = ngx_time();
    ngx_snprintf((u_char *) job->reply.id, sizeof(job->reply.id),
                 "%s-%P%016xL%Z",
                 o->format == NGX_HTTP_SG_FMT_CHAT ? "chatcmpl"
                 : o->format == NGX_HTTP_SG_FMT_RAG ? "rag" : "cmpl",
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
    ngx_http_sparsegate_gauge_jobs(ngx_http_sparsegate_n_jobs);

    cln->handler = ngx_http_sparsegate_job_request_gone;
    cln->data = job;

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

    ngx_http_sparsegate_text_free(&job->text);
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


/* The request is going away (answered, failed, or the client left). */
static void
ngx_http_sparsegate_job_request_gone(void *data)
{
    ngx_http_sparsegate_job_t *job = data;

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, job->request->connection->log, 0,
                   "sparsegate job %s: request gone, submitted:%d "
                   "engine done:%d", job->reply.id, job->submitted,
                   job->engine_done);

    if (job->timeout.timer_set) {
        ngx_del_timer(&job->timeout);
    }
    job->request = NULL;

    if (job->submitted && !job->engine_done) {
        /* the engine frees its blocks at the next step and answers with a
         * cancelled done, which frees the job */
        if (!job->failed) {
            ngx_http_sparsegate_count_error(NGX_HTTP_SG_ERR_CLIENT_CLOSED);
        }
        ngx_http_sparsegate_engine_cancel(&job->client);
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
    if (job->submitted) {
        ngx_http_sparsegate_engine_cancel(&job->client);
    }
    ngx_http_sparsegate_job_fail(job, NGX_HTTP_GATEWAY_TIME_OUT,
                                 NGX_HTTP_SG_ERR_TIMEOUT,
                                 "generation timed out (sparsegate_timeout)");
}


/* The client can take more output: flush what waits. */
static void
ngx_http_sparsegate_job_writer(ngx_http_request_t *r)
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


static double
ngx_http_sparsegate_seconds_since(struct timeval *from, struct timeval *now)
{
    return (now->tv_sec - from->tv_sec) + (now->tv_usec - from->tv_usec) / 1e6;
}


static void
ngx_http_sparsegate_job_token(ngx_http_sparsegate_engine_client_t *c,
    int32_t token)
{
    size_t                      len;
    u_char                     *text;
    ngx_int_t                   rc;
    struct timeval              tv;
    ngx_http_request_t         *r;
    ngx_http_sparsegate_job_t  *job;

    job = ngx_http_sparsegate_job_of(c);
    r = job->request;
    if (r == NULL || job->text.stopped || job->failed) {
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

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "sparsegate job %s: token %i (#%i)", job->reply.id,
                   (ngx_int_t) token, job->usage.completion_tokens);

    rc = ngx_http_sparsegate_text_push(&job->text, token);
    if (rc == NGX_ERROR) {
        ngx_http_sparsegate_job_fail(job, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                     NGX_HTTP_SG_ERR_ENGINE, "out of memory");
        return;
    }
    if (rc == NGX_DONE) {
        /* a stop string: the engine answers with a cancelled done */
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "sparsegate job %s: stop string", job->reply.id);
        ngx_http_sparsegate_engine_cancel(&job->client);
    }

    if (!job->reply.stream) {
        return;
    }
    ngx_http_sparsegate_text_next(&job->text, 0, &text, &len);
    if (len > 0
        && ngx_http_sparsegate_reply_text(r, &job->reply, text, len)
           != NGX_OK)
    {
        ngx_http_finalize_request(r, NGX_ERROR);
    }
}


static void
ngx_http_sparsegate_job_done(ngx_http_sparsegate_engine_client_t *c,
    const ngx_http_sparsegate_engine_done_t *d)
{
    size_t                      len;
    u_char                     *text;
    ngx_int_t                   rc;
    const char                 *reason;
    ngx_http_request_t         *r;
    ngx_http_sparsegate_job_t  *job;

    job = ngx_http_sparsegate_job_of(c);
    job->engine_done = 1;

    r = job->request;
    if (r == NULL) {
        ngx_http_sparsegate_job_free(job);
        return;
    }

    job->finish = d->finish;
    job->usage.prompt_tokens = d->prompt_tokens;
    job->usage.cached_tokens = d->cached_tokens;
    if (!job->text.stopped
        && d->completion_tokens > job->usage.completion_tokens)
    {
        job->usage.completion_tokens = d->completion_tokens;
    }

    ngx_log_debug5(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "sparsegate job %s: done, finish %d, prompt %i "
                   "(cached %i), completion %i", job->reply.id, d->finish,
                   d->prompt_tokens, d->cached_tokens,
                   job->usage.completion_tokens);

    if (job->failed) {
        /* answered already; the request's end frees the job */
        return;
    }

    ngx_http_sparsegate_count_tokens(job->usage.prompt_tokens,
                                     job->usage.cached_tokens,
                                     job->usage.completion_tokens);

    (void) ngx_http_sparsegate_text_finish(&job->text);

    if (job->timeout.timer_set) {
        ngx_del_timer(&job->timeout);
    }

    reason = (job->text.stopped || job->finish != NGX_HTTP_SG_FINISH_LENGTH)
             ? "stop" : "length";

    if (job->reply.stream) {
        ngx_http_sparsegate_text_next(&job->text, 1, &text, &len);
    } else {
        text = job->text.data;
        len = job->text.len;
    }

    /* may free the job: nothing of it is touched after this */
    rc = ngx_http_sparsegate_reply_finish(r, &job->reply, text, len, reason,
                                          &job->usage);
    ngx_http_finalize_request(r, rc);
}


static void
ngx_http_sparsegate_job_error(ngx_http_sparsegate_engine_client_t *c,
    const char *message)
{
    ngx_http_sparsegate_job_t  *job;

    job = ngx_http_sparsegate_job_of(c);
    job->engine_done = 1;

    if (job->request == NULL) {
        ngx_http_sparsegate_job_free(job);
        return;
    }

    ngx_http_sparsegate_job_fail(job, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                 NGX_HTTP_SG_ERR_ENGINE, message);
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
    ngx_http_finalize_request(r, rc);
}
