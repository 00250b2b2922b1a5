/*
 * OpenAI's response shapes: chat.completion, text_completion and their
 * chunks; the message's reasoning_content (DeepSeek's API) and tool_calls;
 * logprobs (chat: content[] of token, logprob, bytes, top_logprobs;
 * completions: tokens, token_logprobs, top_logprobs, text_offset); usage
 * with prompt_tokens_details.cached_tokens and
 * completion_tokens_details.reasoning_tokens; a RAG answer's citations.
 */

#include <cjson/cJSON.h>

#include "ngx_http_sparsegate_response.h"
#include "ngx_http_sparsegate_counters.h"
#include "ngx_http_sparsegate_json.h"
#include "ngx_http_sparsegate_send.h"


/* The common head of every response object and chunk. */
static cJSON *
ngx_http_sparsegate_reply_head(ngx_http_sparsegate_reply_t *rp,
    ngx_uint_t chunk)
{
    cJSON       *root;
    const char  *object;

    if (rp->format == NGX_HTTP_SG_FMT_COMPLETION) {
        object = "text_completion";
    } else {
        object = chunk ? "chat.completion.chunk" : "chat.completion";
    }

    root = cJSON_CreateObject();
    if (root == NULL) {
        return NULL;
    }
    cJSON_AddStringToObject(root, "id", rp->id);
    cJSON_AddStringToObject(root, "object", object);
    cJSON_AddNumberToObject(root, "created", (double) rp->created);
    cJSON_AddStringToObject(root, "model", rp->model);
    cJSON_AddStringToObject(root, "system_fingerprint", "sparsegate");
    return root;
}


static cJSON *
ngx_http_sparsegate_reply_usage(ngx_http_sparsegate_reply_t *rp,
    const ngx_http_sparsegate_usage_t *usage)
{
    cJSON  *u, *d;

    u = cJSON_CreateObject();
    cJSON_AddNumberToObject(u, "prompt_tokens", usage->prompt_tokens);
    cJSON_AddNumberToObject(u, "completion_tokens", usage->completion_tokens);
    cJSON_AddNumberToObject(u, "total_tokens",
                            usage->prompt_tokens + usage->completion_tokens);
    d = cJSON_AddObjectToObject(u, "prompt_tokens_details");
    if (d != NULL) {
        cJSON_AddNumberToObject(d, "cached_tokens", usage->cached_tokens);
    }
    if (rp->format != NGX_HTTP_SG_FMT_COMPLETION) {
        d = cJSON_AddObjectToObject(u, "completion_tokens_details");
        if (d != NULL) {
            cJSON_AddNumberToObject(d, "reasoning_tokens",
                                    usage->reasoning_tokens);
        }
    }
    return u;
}


/* A string of the request's pool memory as a JSON string (generated text
 * holds no NUL; its pieces are not terminated where they end).  The copy
 * goes through cJSON's allocator so that its failure is counted as the
 * builder's: a reply never goes out with a field missing. */
static cJSON *
ngx_http_sparsegate_reply_str(const ngx_str_t *s)
{
    char   *p;
    cJSON  *v;

    p = cJSON_malloc(s->len + 1);
    if (p == NULL) {
        return NULL;
    }
    ngx_memcpy(p, s->data, s->len);
    p[s->len] = '\0';
    v = cJSON_CreateString(p);
    cJSON_free(p);
    return v;
}


static void
ngx_http_sparsegate_add_str(cJSON *obj, const char *name, const ngx_str_t *s)
{
    ngx_http_sparsegate_json_add(obj, name, ngx_http_sparsegate_reply_str(s));
}


static cJSON *
ngx_http_sparsegate_lp_bytes(const ngx_str_t *b)
{
    size_t  i;
    cJSON  *arr;

    arr = cJSON_CreateArray();
    for (i = 0; arr && i < b->len; i++) {
        ngx_http_sparsegate_json_push(arr, cJSON_CreateNumber(b->data[i]));
    }
    return arr;
}


/* A finite number for JSON (a masked token's -inf never appears, but a
 * number must be one). */
static double
ngx_http_sparsegate_lp_value(float lp)
{
    return lp > -9999.0f ? (double) lp : -9999.0;
}


/* chat: {"content": [{token, logprob, bytes, top_logprobs}], "refusal"} */
static cJSON *
ngx_http_sparsegate_chat_logprobs(const ngx_http_sparsegate_delta_t *d)
{
    cJSON                                *lp, *content, *e, *tops, *t;
    ngx_uint_t                            i, k;
    const ngx_http_sparsegate_logprob_t  *l;

    lp = cJSON_CreateObject();
    content = cJSON_AddArrayToObject(lp, "content");
    for (i = 0; content && i < d->n_logprobs; i++) {
        l = &d->logprobs[i];
        e = cJSON_CreateObject();
        ngx_http_sparsegate_add_str(e, "token", &l->chosen.text);
        cJSON_AddNumberToObject(e, "logprob",
                      ngx_http_sparsegate_lp_value(l->chosen.logprob));
        ngx_http_sparsegate_json_add(e, "bytes",
            ngx_http_sparsegate_lp_bytes(&l->chosen.bytes));
        tops = cJSON_AddArrayToObject(e, "top_logprobs");
        for (k = 0; tops && k < l->n_top; k++) {
            t = cJSON_CreateObject();
            ngx_http_sparsegate_add_str(t, "token", &l->top[k].text);
            cJSON_AddNumberToObject(t, "logprob",
                          ngx_http_sparsegate_lp_value(l->top[k].logprob));
            ngx_http_sparsegate_json_add(t, "bytes",
                                         ngx_http_sparsegate_lp_bytes(
                                             &l->top[k].bytes));
            ngx_http_sparsegate_json_push(tops, t);
        }
        ngx_http_sparsegate_json_push(content, e);
    }
    cJSON_AddNullToObject(lp, "refusal");
    return lp;
}


/* completions: {tokens, token_logprobs, top_logprobs, text_offset} */
static cJSON *
ngx_http_sparsegate_text_logprobs(const ngx_http_sparsegate_delta_t *d)
{
    char                                 *name;
    cJSON                                *lp, *tokens, *values, *tops, *off;
    cJSON                                *t;
    ngx_uint_t                            i, k;
    const ngx_http_sparsegate_logprob_t  *l;

    lp = cJSON_CreateObject();
    tokens = cJSON_AddArrayToObject(lp, "tokens");
    values = cJSON_AddArrayToObject(lp, "token_logprobs");
    tops = cJSON_AddArrayToObject(lp, "top_logprobs");
    off = cJSON_AddArrayToObject(lp, "text_offset");
    if (off == NULL) {
        return lp;
    }
    for (i = 0; i < d->n_logprobs; i++) {
        l = &d->logprobs[i];
        ngx_http_sparsegate_json_push(tokens,
            ngx_http_sparsegate_reply_str(&l->chosen.text));
        ngx_http_sparsegate_json_push(values, cJSON_CreateNumber(
            ngx_http_sparsegate_lp_value(l->chosen.logprob)));
        t = cJSON_CreateObject();
        for (k = 0; t && k < l->n_top; k++) {
            name = cJSON_malloc(l->top[k].text.len + 1);
            if (name == NULL) {
                break;
            }
            ngx_memcpy(name, l->top[k].text.data, l->top[k].text.len);
            name[l->top[k].text.len] = '\0';
            if (!cJSON_HasObjectItem(t, name)) {
                cJSON_AddNumberToObject(t, name,
                          ngx_http_sparsegate_lp_value(l->top[k].logprob));
            }
            cJSON_free(name);
        }
        ngx_http_sparsegate_json_push(tops, t);
        ngx_http_sparsegate_json_push(off,
            cJSON_CreateNumber((double) l->text_offset));
    }
    return lp;
}


static cJSON *
ngx_http_sparsegate_reply_logprobs(ngx_http_sparsegate_reply_t *rp,
    const ngx_http_sparsegate_delta_t *d)
{
    if (!rp->logprobs) {
        return cJSON_CreateNull();
    }
    return rp->format == NGX_HTTP_SG_FMT_COMPLETION
           ? ngx_http_sparsegate_text_logprobs(d)
           : ngx_http_sparsegate_chat_logprobs(d);
}


/* tool_calls entries: whole ones in a message; in a chunk, a call's
 * head (id, type, name, arguments "") or its arguments */
static cJSON *
ngx_http_sparsegate_reply_call(const ngx_http_sparsegate_call_t *c,
    ngx_uint_t head, ngx_uint_t args, ngx_uint_t chunk)
{
    cJSON      *tc, *fn;
    ngx_str_t   empty = ngx_string("");

    tc = cJSON_CreateObject();
    if (chunk) {
        cJSON_AddNumberToObject(tc, "index", (double) c->index);
    }
    if (head) {
        ngx_http_sparsegate_add_str(tc, "id", &c->id);
        cJSON_AddStringToObject(tc, "type", "function");
    }
    fn = cJSON_AddObjectToObject(tc, "function");
    if (fn != NULL) {
        if (head) {
            ngx_http_sparsegate_add_str(fn, "name", &c->name);
        }
        ngx_http_sparsegate_add_str(fn, "arguments",
                                    args ? &c->arguments : &empty);
    }
    return tc;
}


/* One chunk of one choice: text and/or reasoning, one call's part, or
 * only a finish reason (or, role, the first). */
static ngx_int_t
ngx_http_sparsegate_reply_chunk(ngx_http_request_t *r,
    ngx_http_sparsegate_reply_t *rp, const ngx_http_sparsegate_delta_t *d,
    ngx_uint_t role, const ngx_http_sparsegate_call_t *call,
    ngx_uint_t call_head, const char *finish)
{
    cJSON       *root, *choices, *choice, *delta, *calls;
    ngx_int_t    rc;
    ngx_uint_t   failed;

    failed = ngx_http_sparsegate_json_failures();
    root = ngx_http_sparsegate_reply_head(rp, 1);
    if (root == NULL) {
        return NGX_ERROR;
    }
    choices = cJSON_AddArrayToObject(root, "choices");
    choice = cJSON_CreateObject();
    if (choices == NULL || choice == NULL) {
        cJSON_Delete(choice);
        cJSON_Delete(root);
        return NGX_ERROR;
    }
    ngx_http_sparsegate_json_push(choices, choice);
    cJSON_AddNumberToObject(choice, "index", (double) d->index);

    if (rp->format == NGX_HTTP_SG_FMT_COMPLETION) {
        ngx_http_sparsegate_add_str(choice, "text", &d->content);
    } else {
        delta = cJSON_AddObjectToObject(choice, "delta");
        if (role) {
            cJSON_AddStringToObject(delta, "role", "assistant");
            cJSON_AddStringToObject(delta, "content", "");
        }
        if (d->reasoning.len > 0) {
            ngx_http_sparsegate_add_str(delta, "reasoning_content",
                                        &d->reasoning);
        }
        if (d->content.len > 0) {
            ngx_http_sparsegate_add_str(delta, "content", &d->content);
        }
        if (call != NULL) {
            calls = cJSON_AddArrayToObject(delta, "tool_calls");
            ngx_http_sparsegate_json_push(calls,
                ngx_http_sparsegate_reply_call(call, call_head, !call_head,
                                               1));
        }
    }
    ngx_http_sparsegate_json_add(choice, "logprobs", rp->logprobs && !role
                                 && call == NULL
                                 ? ngx_http_sparsegate_reply_logprobs(rp, d)
                                 : cJSON_CreateNull());
    if (finish) {
        cJSON_AddStringToObject(choice, "finish_reason", finish);
    } else {
        cJSON_AddNullToObject(choice, "finish_reason");
    }
    if (rp->include_usage) {
        cJSON_AddNullToObject(root, "usage");
    }
    if (role && rp->citations && d->index == 0) {
        ngx_http_sparsegate_json_add(root, "citations",
                                     cJSON_Parse(rp->citations));
    }

    /* a chunk that lost a part for want of memory is not sent: the text
     * would go missing from a stream that still looks whole */
    rc = ngx_http_sparsegate_json_failures() == failed
         ? ngx_http_sparsegate_sse_json(r, root) : NGX_ERROR;
    cJSON_Delete(root);
    return rc;
}


ngx_int_t
ngx_http_sparsegate_reply_start(ngx_http_request_t *r,
    ngx_http_sparsegate_reply_t *rp, ngx_uint_t n_choices)
{
    ngx_int_t                    rc;
    ngx_uint_t                   i;
    ngx_http_sparsegate_delta_t  d;

    rc = ngx_http_sparsegate_sse_start(r);
    if (rc == NGX_ERROR || rc > NGX_OK) {
        return rc;
    }
    if (rp->format == NGX_HTTP_SG_FMT_COMPLETION) {
        return NGX_OK;
    }
    ngx_memzero(&d, sizeof(ngx_http_sparsegate_delta_t));
    for (i = 0; i < n_choices; i++) {
        d.index = i;
        if (ngx_http_sparsegate_reply_chunk(r, rp, &d, 1, NULL, 0, NULL)
            == NGX_ERROR)
        {
            return NGX_ERROR;
        }
    }
    return NGX_OK;
}


ngx_int_t
ngx_http_sparsegate_reply_delta(ngx_http_request_t *r,
    ngx_http_sparsegate_reply_t *rp, const ngx_http_sparsegate_delta_t *d)
{
    ngx_uint_t  i, text;

    text = d->reasoning.len > 0 || d->content.len > 0 || d->n_logprobs > 0;

    /* the text and its logprobs, with the finish when no call follows */
    if (text || (d->finish_reason && d->n_calls == 0)) {
        if (ngx_http_sparsegate_reply_chunk(r, rp, d, 0, NULL, 0,
                                            d->n_calls ? NULL
                                                       : d->finish_reason)
            == NGX_ERROR)
        {
            return NGX_ERROR;
        }
    }
    for (i = 0; i < d->n_calls; i++) {
        if (ngx_http_sparsegate_reply_chunk(r, rp, d, 0, &d->calls[i], 1,
                                            NULL)
            == NGX_ERROR
            || ngx_http_sparsegate_reply_chunk(r, rp, d, 0, &d->calls[i], 0,
                                   i + 1 == d->n_calls ? d->finish_reason
                                                       : NULL)
               == NGX_ERROR)
        {
            return NGX_ERROR;
        }
    }
    return NGX_OK;
}


static ngx_int_t
ngx_http_sparsegate_reply_object(ngx_http_request_t *r,
    ngx_http_sparsegate_reply_t *rp, const ngx_http_sparsegate_delta_t *d,
    ngx_uint_t n, const ngx_http_sparsegate_usage_t *usage)
{
    cJSON       *root, *choices, *choice, *msg, *calls;
    ngx_int_t    rc;
    ngx_uint_t   i, k, failed;

    failed = ngx_http_sparsegate_json_failures();
    root = ngx_http_sparsegate_reply_head(rp, 0);
    if (root == NULL) {
        goto oom;
    }
    choices = cJSON_AddArrayToObject(root, "choices");
    for (i = 0; choices && i < n; i++) {
        choice = cJSON_CreateObject();
        ngx_http_sparsegate_json_push(choices, choice);
        cJSON_AddNumberToObject(choice, "index", (double) d[i].index);

        if (rp->format == NGX_HTTP_SG_FMT_COMPLETION) {
            ngx_http_sparsegate_add_str(choice, "text", &d[i].content);
        } else {
            msg = cJSON_AddObjectToObject(choice, "message");
            cJSON_AddStringToObject(msg, "role", "assistant");
            if (d[i].n_calls > 0 && d[i].content.len == 0) {
                cJSON_AddNullToObject(msg, "content");
            } else {
                ngx_http_sparsegate_add_str(msg, "content", &d[i].content);
            }
            if (rp->reasoning) {
                ngx_http_sparsegate_add_str(msg, "reasoning_content",
                                            &d[i].reasoning);
            }
            if (d[i].n_calls > 0) {
                calls = cJSON_AddArrayToObject(msg, "tool_calls");
                for (k = 0; calls && k < d[i].n_calls; k++) {
                    ngx_http_sparsegate_json_push(calls,
                        ngx_http_sparsegate_reply_call(&d[i].calls[k], 1, 1,
                                                       0));
                }
            }
        }
        ngx_http_sparsegate_json_add(choice, "logprobs",
            ngx_http_sparsegate_reply_logprobs(rp, &d[i]));
        cJSON_AddStringToObject(choice, "finish_reason",
                                d[i].finish_reason ? d[i].finish_reason
                                                   : "stop");
    }
    ngx_http_sparsegate_json_add(root, "usage",
                                 ngx_http_sparsegate_reply_usage(rp, usage));

    if (rp->citations) {
        ngx_http_sparsegate_json_add(root, "citations",
                                     cJSON_Parse(rp->citations));
    }

    if (ngx_http_sparsegate_json_failures() != failed) {
        cJSON_Delete(root);
        goto oom;
    }
    rc = ngx_http_sparsegate_send_json(r, NGX_HTTP_OK, root);
    cJSON_Delete(root);
    if (rc != NGX_HTTP_INTERNAL_SERVER_ERROR) {
        return rc;
    }

oom:

    /* the response could not be built: nothing was sent yet */
    return ngx_http_sparsegate_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                     NGX_HTTP_SG_ERR_NO_MEMORY, NULL,
                                     "out of memory for the response");
}


ngx_int_t
ngx_http_sparsegate_reply_finish(ngx_http_request_t *r,
    ngx_http_sparsegate_reply_t *rp, const ngx_http_sparsegate_delta_t *d,
    ngx_uint_t n, const ngx_http_sparsegate_usage_t *usage)
{
    cJSON       *root;
    ngx_int_t    rc;
    ngx_uint_t   failed;

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "sparsegate response: %s ends, %ui choices, %i "
                   "completion tokens", rp->id, n, usage->completion_tokens);

    if (!rp->stream) {
        return ngx_http_sparsegate_reply_object(r, rp, d, n, usage);
    }

    if (rp->include_usage) {
        failed = ngx_http_sparsegate_json_failures();
        root = ngx_http_sparsegate_reply_head(rp, 1);
        if (root == NULL) {
            return NGX_ERROR;
        }
        cJSON_AddArrayToObject(root, "choices");
        ngx_http_sparsegate_json_add(root, "usage",
            ngx_http_sparsegate_reply_usage(rp, usage));
        rc = ngx_http_sparsegate_json_failures() == failed
             ? ngx_http_sparsegate_sse_json(r, root) : NGX_ERROR;
        cJSON_Delete(root);
        if (rc == NGX_ERROR) {
            return NGX_ERROR;
        }
    }

    return ngx_http_sparsegate_sse(r, "[DONE]", sizeof("[DONE]") - 1, 1);
}


ngx_int_t
ngx_http_sparsegate_reply_error(ngx_http_request_t *r,
    ngx_http_sparsegate_reply_t *rp, ngx_uint_t status,
    ngx_http_sparsegate_error_e kind, const char *msg)
{
    u_char      *json;
    size_t       len;
    ngx_uint_t   level;

    if (!rp->stream || !r->header_sent) {
        return ngx_http_sparsegate_error(r, status, kind, NULL, "%s", msg);
    }

    /* mid-stream: an error event, then the end of the stream */
    ngx_http_sparsegate_count_error(kind);
    level = (status >= 500) ? NGX_LOG_ERR : NGX_LOG_INFO;
    ngx_log_error(level, r->connection->log, 0,
                  "sparsegate: %ui %s mid-stream: %s",
                  status, ngx_http_sparsegate_error_label(kind), msg);

    json = ngx_http_sparsegate_error_json(kind, NULL, msg, &len);
    if (json != NULL) {
        (void) ngx_http_sparsegate_sse(r, (char *) json, len, 0);
        free(json);
    }
    return ngx_http_sparsegate_sse(r, "[DONE]", sizeof("[DONE]") - 1, 1);
}
