/*
 * The response side of every generation: JSON at the end, or SSE
 * "data: {chunk}" events as tokens arrive, then "data: [DONE]"; usage with
 * prompt_tokens_details.cached_tokens; finish_reason.
 *
 * Stop strings are matched on the generated text: text that could still
 * become a stop string is held back from the stream until it cannot.
 */

#include "ngx_http_sparsegate.h"


ngx_int_t
ngx_http_sparsegate_send_text(ngx_http_request_t *r, ngx_uint_t status,
    const char *type, u_char *data, size_t len)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    r->headers_out.status = status;
    r->headers_out.content_length_n = len;
    r->headers_out.content_type.data = (u_char *) type;
    r->headers_out.content_type.len = ngx_strlen(type);
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    if (r->method == NGX_HTTP_HEAD || len == 0) {
        r->header_only = (r->method == NGX_HTTP_HEAD);
        rc = ngx_http_send_header(r);
        if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
            return rc;
        }
        return ngx_http_send_special(r, NGX_HTTP_LAST);
    }

    b = ngx_create_temp_buf(r->pool, len);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    b->last = ngx_cpymem(b->pos, data, len);
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    rc = ngx_http_send_header(r);
    if (rc == NGX_ERROR || rc > NGX_OK) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;
    return ngx_http_output_filter(r, &out);
}


ngx_int_t
ngx_http_sparsegate_send_json(ngx_http_request_t *r, ngx_uint_t status,
    cJSON *json)
{
    char       *text;
    ngx_int_t   rc;

    text = cJSON_PrintUnformatted(json);
    if (text == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    rc = ngx_http_sparsegate_send_text(r, status, "application/json",
                                       (u_char *) text, ngx_strlen(text));
    free(text);
    return rc;
}


/* One SSE event "data: <payload>\n\n", flushed at once. */
static ngx_int_t
ngx_http_sparsegate_sse(ngx_http_request_t *r, const char *payload,
    size_t len, ngx_uint_t last)
{
    ngx_buf_t    *b;
    ngx_chain_t   out;

    b = ngx_create_temp_buf(r->pool, len + sizeof("data: \n\n") - 1);
    if (b == NULL) {
        return NGX_ERROR;
    }
    b->last = ngx_cpymem(b->last, "data: ", sizeof("data: ") - 1);
    b->last = ngx_cpymem(b->last, payload, len);
    b->last = ngx_cpymem(b->last, "\n\n", 2);
    b->flush = 1;
    if (last) {
        b->last_buf = 1;
        b->last_in_chain = 1;
    }

    out.buf = b;
    out.next = NULL;
    return ngx_http_output_filter(r, &out);
}


static ngx_int_t
ngx_http_sparsegate_sse_json(ngx_http_request_t *r, cJSON *json)
{
    char       *text;
    ngx_int_t   rc;

    text = cJSON_PrintUnformatted(json);
    if (text == NULL) {
        return NGX_ERROR;
    }
    rc = ngx_http_sparsegate_sse(r, text, ngx_strlen(text), 0);
    free(text);
    return rc;
}


static ngx_int_t
ngx_http_sparsegate_sse_headers(ngx_http_request_t *r)
{
    ngx_table_elt_t  *h;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = -1;
    ngx_str_set(&r->headers_out.content_type, "text/event-stream");
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }
    h->hash = 1;
    ngx_str_set(&h->key, "Cache-Control");
    ngx_str_set(&h->value, "no-cache");

    /* a proxy in front must not buffer the stream */
    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }
    h->hash = 1;
    ngx_str_set(&h->key, "X-Accel-Buffering");
    ngx_str_set(&h->value, "no");

    return ngx_http_send_header(r);
}


/* The common head of every response object and chunk. */
static cJSON *
ngx_http_sparsegate_response_head(ngx_http_sparsegate_job_t *job,
    ngx_uint_t chunk)
{
    cJSON                            *root;
    const char                       *object;
    const ngx_str_t                  *name;
    ngx_http_sparsegate_main_conf_t  *smcf;

    smcf = ngx_http_get_module_main_conf(job->request,
                                         ngx_http_sparsegate_module);
    name = ngx_http_sparsegate_model_name(smcf);

    if (job->format == NGX_HTTP_SG_FMT_COMPLETION) {
        object = "text_completion";
    } else {
        object = chunk ? "chat.completion.chunk" : "chat.completion";
    }

    root = cJSON_CreateObject();
    if (root == NULL) {
        return NULL;
    }
    cJSON_AddStringToObject(root, "id", job->id);
    cJSON_AddStringToObject(root, "object", object);
    cJSON_AddNumberToObject(root, "created", (double) job->created);
    /* configuration strings are NUL-terminated */
    cJSON_AddStringToObject(root, "model", (char *) name->data);
    cJSON_AddStringToObject(root, "system_fingerprint", "sparsegate");
    return root;
}


static cJSON *
ngx_http_sparsegate_usage(ngx_http_sparsegate_job_t *job)
{
    cJSON  *u, *d;

    u = cJSON_CreateObject();
    cJSON_AddNumberToObject(u, "prompt_tokens", job->prompt_tokens);
    cJSON_AddNumberToObject(u, "completion_tokens", job->completion_tokens);
    cJSON_AddNumberToObject(u, "total_tokens",
                            job->prompt_tokens + job->completion_tokens);
    d = cJSON_AddObjectToObject(u, "prompt_tokens_details");
    if (d != NULL) {
        cJSON_AddNumberToObject(d, "cached_tokens", job->cached_tokens);
    }
    return u;
}


/* A chunk carrying text (or only a finish reason). */
static ngx_int_t
ngx_http_sparsegate_emit(ngx_http_sparsegate_job_t *job, const u_char *text,
    size_t len, const char *finish, ngx_uint_t role)
{
    char       *s;
    cJSON      *root, *choices, *choice, *delta;
    ngx_int_t   rc;

    s = malloc(len + 1);
    if (s == NULL) {
        return NGX_ERROR;
    }
    ngx_memcpy(s, text, len);
    s[len] = '\0';

    root = ngx_http_sparsegate_response_head(job, 1);
    if (root == NULL) {
        free(s);
        return NGX_ERROR;
    }
    choices = cJSON_AddArrayToObject(root, "choices");
    choice = cJSON_CreateObject();
    cJSON_AddItemToArray(choices, choice);

    if (job->format == NGX_HTTP_SG_FMT_COMPLETION) {
        cJSON_AddStringToObject(choice, "text", s);
        cJSON_AddNumberToObject(choice, "index", 0);
    } else {
        cJSON_AddNumberToObject(choice, "index", 0);
        delta = cJSON_AddObjectToObject(choice, "delta");
        if (role) {
            cJSON_AddStringToObject(delta, "role", "assistant");
        }
        if (len > 0 || role) {
            cJSON_AddStringToObject(delta, "content", s);
        }
    }
    cJSON_AddNullToObject(choice, "logprobs");
    if (finish) {
        cJSON_AddStringToObject(choice, "finish_reason", finish);
    } else {
        cJSON_AddNullToObject(choice, "finish_reason");
    }
    if (job->include_usage) {
        cJSON_AddNullToObject(root, "usage");
    }
    if (role && job->citations) {
        cJSON_AddItemToObject(root, "citations",
                              cJSON_Parse(job->citations));
    }

    rc = ngx_http_sparsegate_sse_json(job->request, root);
    cJSON_Delete(root);
    free(s);
    return rc;
}


/* A stream's head: the response headers and the first (role) chunk.
 * NGX_OK, or what to finalize the request with. */
ngx_int_t
ngx_http_sparsegate_stream_start(ngx_http_sparsegate_job_t *job)
{
    ngx_int_t  rc;

    rc = ngx_http_sparsegate_sse_headers(job->request);
    if (rc == NGX_ERROR || rc > NGX_OK) {
        return rc;
    }
    if (ngx_http_sparsegate_emit(job, (u_char *) "", 0, NULL,
                                 job->format != NGX_HTTP_SG_FMT_COMPLETION)
        == NGX_ERROR)
    {
        return NGX_ERROR;
    }
    return NGX_OK;
}


/* Streams the text that can no longer turn into a stop string. */
static ngx_int_t
ngx_http_sparsegate_emit_ready(ngx_http_sparsegate_job_t *job, ngx_uint_t all)
{
    size_t  safe;

    safe = job->text_len;
    if (!all && job->max_stop_len > 1) {
        safe = (job->text_len > job->max_stop_len - 1)
               ? job->text_len - (job->max_stop_len - 1) : 0;
        /* never split a UTF-8 character */
        while (safe > job->emitted && (job->text[safe] & 0xc0) == 0x80) {
            safe--;
        }
    }
    if (safe <= job->emitted) {
        return NGX_OK;
    }

    if (ngx_http_sparsegate_emit(job, job->text + job->emitted,
                                 safe - job->emitted, NULL, 0)
        == NGX_ERROR)
    {
        return NGX_ERROR;
    }
    job->emitted = safe;
    return NGX_OK;
}


static ngx_int_t
ngx_http_sparsegate_append(ngx_http_sparsegate_job_t *job, const char *s,
    size_t n)
{
    u_char  *p;
    size_t   cap;

    if (job->text_len + n + 1 > job->text_cap) {
        cap = ngx_max(job->text_cap * 2, job->text_len + n + 256);
        p = realloc(job->text, cap);
        if (p == NULL) {
            return NGX_ERROR;
        }
        job->text = p;
        job->text_cap = cap;
    }
    ngx_memcpy(job->text + job->text_len, s, n);
    job->text_len += n;
    job->text[job->text_len] = '\0';
    return NGX_OK;
}


/* Looks for a stop string in the text added since the last look. */
static void
ngx_http_sparsegate_match_stops(ngx_http_sparsegate_job_t *job,
    size_t old_len)
{
    size_t       from, slen, best;
    u_char      *hit;
    ngx_uint_t   i;

    /* no text yet (a first token that decodes to no bytes): job->text is
     * still NULL and ngx_strlcasestrn would wrap its end pointer */
    if (job->n_stops == 0 || job->text_len == 0) {
        return;
    }
    from = old_len > job->max_stop_len ? old_len - job->max_stop_len : 0;
    best = (size_t) -1;

    for (i = 0; i < job->n_stops; i++) {
        slen = ngx_strlen(job->stops[i]);
        hit = ngx_strlcasestrn(job->text + from, job->text + job->text_len,
                               (u_char *) job->stops[i], slen - 1);
        /* ngx_strlcasestrn ignores case: confirm the exact bytes */
        while (hit != NULL
               && ngx_strncmp(hit, job->stops[i], slen) != 0)
        {
            hit = ngx_strlcasestrn(hit + 1, job->text + job->text_len,
                                   (u_char *) job->stops[i], slen - 1);
        }
        if (hit != NULL && (size_t) (hit - job->text) < best) {
            best = hit - job->text;
        }
    }

    if (best != (size_t) -1) {
        job->text_len = best;
        job->text[best] = '\0';
        job->stopped = 1;
        if (job->emitted > best) {
            job->emitted = best;
        }
        if (ngx_http_sparsegate_engine() != NULL) {
            sg_engine_cancel(ngx_http_sparsegate_engine(), job->engine_id);
        }
    }
}


void
ngx_http_sparsegate_job_token(ngx_http_sparsegate_job_t *job, int32_t token)
{
    char                              buf[1024];
    size_t                            n, old_len;
    double                            dt;
    struct timeval                    tv;
    ngx_http_sparsegate_main_conf_t  *smcf;

    if (job->stopped || job->failed) {
        return;
    }

    ngx_gettimeofday(&tv);
    if (!job->got_token) {
        dt = (tv.tv_sec - job->tv_submit.tv_sec)
             + (tv.tv_usec - job->tv_submit.tv_usec) / 1e6;
        ngx_http_sparsegate_observe_ttft(dt);
        job->got_token = 1;
    } else {
        dt = (tv.tv_sec - job->tv_last.tv_sec)
             + (tv.tv_usec - job->tv_last.tv_usec) / 1e6;
        ngx_http_sparsegate_observe_itl(dt);
    }
    job->tv_last = tv;
    job->completion_tokens++;

    smcf = ngx_http_get_module_main_conf(job->request,
                                         ngx_http_sparsegate_module);
    if (job->detok.t == NULL) {
        sg_detok_init(&job->detok, smcf->tokenizer);
    }
    n = sg_detok_push(&job->detok, token, buf, sizeof(buf));

    old_len = job->text_len;
    if (n > 0 && ngx_http_sparsegate_append(job, buf, n) != NGX_OK) {
        ngx_http_sparsegate_job_fail(job, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                     NGX_HTTP_SG_ERR_ENGINE, "out of memory");
        return;
    }
    ngx_http_sparsegate_match_stops(job, old_len);

    if (job->stream
        && ngx_http_sparsegate_emit_ready(job, job->stopped) != NGX_OK)
    {
        ngx_http_finalize_request(job->request, NGX_ERROR);
    }
}


static const char *
ngx_http_sparsegate_finish_reason(ngx_http_sparsegate_job_t *job)
{
    if (job->stopped) {
        return "stop";
    }
    return job->finish == SG_FINISH_LENGTH ? "length" : "stop";
}


static cJSON *
ngx_http_sparsegate_final_json(ngx_http_sparsegate_job_t *job)
{
    cJSON  *root, *choices, *choice, *msg;

    root = ngx_http_sparsegate_response_head(job, 0);
    if (root == NULL) {
        return NULL;
    }
    choices = cJSON_AddArrayToObject(root, "choices");
    choice = cJSON_CreateObject();
    cJSON_AddItemToArray(choices, choice);
    cJSON_AddNumberToObject(choice, "index", 0);

    if (job->format == NGX_HTTP_SG_FMT_COMPLETION) {
        cJSON_AddStringToObject(choice, "text",
                                job->text ? (char *) job->text : "");
    } else {
        msg = cJSON_AddObjectToObject(choice, "message");
        cJSON_AddStringToObject(msg, "role", "assistant");
        cJSON_AddStringToObject(msg, "content",
                                job->text ? (char *) job->text : "");
    }
    cJSON_AddNullToObject(choice, "logprobs");
    cJSON_AddStringToObject(choice, "finish_reason",
                            ngx_http_sparsegate_finish_reason(job));
    cJSON_AddItemToObject(root, "usage", ngx_http_sparsegate_usage(job));

    if (job->citations) {
        cJSON_AddItemToObject(root, "citations", cJSON_Parse(job->citations));
    }
    return root;
}


void
ngx_http_sparsegate_job_done(ngx_http_sparsegate_job_t *job,
    const sg_event *ev)
{
    char                 buf[64];
    size_t               n;
    cJSON               *root, *usage;
    ngx_int_t            rc;
    ngx_http_request_t  *r;

    r = job->request;
    job->finish = ev->finish;
    job->prompt_tokens = ev->prompt_tokens;
    job->cached_tokens = ev->cached_tokens;
    if (!job->stopped && ev->completion_tokens > job->completion_tokens) {
        job->completion_tokens = ev->completion_tokens;
    }

    if (job->failed) {
        return;
    }

    ngx_http_sparsegate_count_tokens(job->prompt_tokens, job->cached_tokens,
                                     job->completion_tokens);

    if (!job->stopped && job->detok.t != NULL) {
        n = sg_detok_finish(&job->detok, buf, sizeof(buf));
        if (n > 0) {
            (void) ngx_http_sparsegate_append(job, buf, n);
        }
    }

    if (job->timeout.timer_set) {
        ngx_del_timer(&job->timeout);
    }

    if (!job->stream) {
        root = ngx_http_sparsegate_final_json(job);
        if (root == NULL) {
            ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }
        rc = ngx_http_sparsegate_send_json(r, NGX_HTTP_OK, root);
        cJSON_Delete(root);
        ngx_http_finalize_request(r, rc);
        return;
    }

    if (ngx_http_sparsegate_emit_ready(job, 1) != NGX_OK
        || ngx_http_sparsegate_emit(job, (u_char *) "", 0,
                                    ngx_http_sparsegate_finish_reason(job),
                                    0)
           == NGX_ERROR)
    {
        ngx_http_finalize_request(r, NGX_ERROR);
        return;
    }

    if (job->include_usage) {
        root = ngx_http_sparsegate_response_head(job, 1);
        if (root != NULL) {
            cJSON_AddArrayToObject(root, "choices");
            usage = ngx_http_sparsegate_usage(job);
            cJSON_AddItemToObject(root, "usage", usage);
            rc = ngx_http_sparsegate_sse_json(r, root);
            cJSON_Delete(root);
            if (rc == NGX_ERROR) {
                ngx_http_finalize_request(r, NGX_ERROR);
                return;
            }
        }
    }

    rc = ngx_http_sparsegate_sse(r, "[DONE]", sizeof("[DONE]") - 1, 1);
    ngx_http_finalize_request(r, rc);
}


void
ngx_http_sparsegate_job_fail(ngx_http_sparsegate_job_t *job,
    ngx_uint_t status, ngx_http_sparsegate_error_e kind, const char *msg)
{
    u_char              *json;
    size_t               len;
    ngx_int_t            rc;
    ngx_http_request_t  *r;

    r = job->request;
    if (r == NULL || job->failed) {
        return;
    }
    job->failed = 1;

    if (job->timeout.timer_set) {
        ngx_del_timer(&job->timeout);
    }

    if (!job->stream || !r->header_sent) {
        rc = ngx_http_sparsegate_error(r, status, kind, NULL, "%s", msg);
        ngx_http_finalize_request(r, rc);
        return;
    }

    /* mid-stream: an error event, then the end of the stream */
    ngx_http_sparsegate_count_error(kind);
    json = ngx_http_sparsegate_error_json(kind, status, NULL, msg, &len);
    if (json != NULL) {
        (void) ngx_http_sparsegate_sse(r, (char *) json, len, 0);
        free(json);
    }
    rc = ngx_http_sparsegate_sse(r, "[DONE]", sizeof("[DONE]") - 1, 1);
    ngx_http_finalize_request(r, rc);
}
