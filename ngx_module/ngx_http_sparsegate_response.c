/*
 * OpenAI's response shapes: chat.completion, text_completion and their
 * chunks; usage with prompt_tokens_details.cached_tokens; finish_reason;
 * a RAG answer's citations.
 */

#include <cjson/cJSON.h>

#include "ngx_http_sparsegate_response.h"
#include "ngx_http_sparsegate_counters.h"
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
ngx_http_sparsegate_reply_usage(const ngx_http_sparsegate_usage_t *usage)
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
    return u;
}


/* The head with "choices": [one choice] (in *choice), and the choice's
 * text as a C string in the request's pool (in *s): generated text holds
 * no NUL, but is not terminated where a chunk ends. */
static cJSON *
ngx_http_sparsegate_reply_choice(ngx_http_request_t *r,
    ngx_http_sparsegate_reply_t *rp, ngx_uint_t chunk, const u_char *text,
    size_t len, cJSON **choice, char **s)
{
    cJSON   *root, *choices;
    u_char  *p;

    p = ngx_pnalloc(r->pool, len + 1);
    if (p == NULL) {
        return NULL;
    }
    *ngx_cpymem(p, text, len) = '\0';
    *s = (char *) p;

    root = ngx_http_sparsegate_reply_head(rp, chunk);
    if (root == NULL) {
        return NULL;
    }
    choices = cJSON_AddArrayToObject(root, "choices");
    *choice = cJSON_CreateObject();
    if (choices == NULL || *choice == NULL) {
        cJSON_Delete(*choice);
        cJSON_Delete(root);
        return NULL;
    }
    cJSON_AddItemToArray(choices, *choice);
    return root;
}


/* One chunk: text, or only a finish reason, or (role) the first one. */
static ngx_int_t
ngx_http_sparsegate_reply_chunk(ngx_http_request_t *r,
    ngx_http_sparsegate_reply_t *rp, const u_char *text, size_t len,
    const char *finish, ngx_uint_t role)
{
    char       *s;
    cJSON      *root, *choice, *delta;
    ngx_int_t   rc;

    root = ngx_http_sparsegate_reply_choice(r, rp, 1, text, len, &choice, &s);
    if (root == NULL) {
        return NGX_ERROR;
    }

    if (rp->format == NGX_HTTP_SG_FMT_COMPLETION) {
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
    if (rp->include_usage) {
        cJSON_AddNullToObject(root, "usage");
    }
    if (role && rp->citations) {
        cJSON_AddItemToObject(root, "citations", cJSON_Parse(rp->citations));
    }

    rc = ngx_http_sparsegate_sse_json(r, root);
    cJSON_Delete(root);
    return rc;
}


ngx_int_t
ngx_http_sparsegate_reply_start(ngx_http_request_t *r,
    ngx_http_sparsegate_reply_t *rp)
{
    ngx_int_t  rc;

    rc = ngx_http_sparsegate_sse_start(r);
    if (rc == NGX_ERROR || rc > NGX_OK) {
        return rc;
    }
    if (ngx_http_sparsegate_reply_chunk(r, rp, (u_char *) "", 0, NULL,
                                        rp->format
                                        != NGX_HTTP_SG_FMT_COMPLETION)
        == NGX_ERROR)
    {
        return NGX_ERROR;
    }
    return NGX_OK;
}


ngx_int_t
ngx_http_sparsegate_reply_text(ngx_http_request_t *r,
    ngx_http_sparsegate_reply_t *rp, const u_char *text, size_t len)
{
    if (ngx_http_sparsegate_reply_chunk(r, rp, text, len, NULL, 0)
        == NGX_ERROR)
    {
        return NGX_ERROR;
    }
    return NGX_OK;
}


static ngx_int_t
ngx_http_sparsegate_reply_object(ngx_http_request_t *r,
    ngx_http_sparsegate_reply_t *rp, const u_char *text, size_t len,
    const char *finish_reason, const ngx_http_sparsegate_usage_t *usage)
{
    char       *s;
    cJSON      *root, *choice, *msg;
    ngx_int_t   rc;

    root = ngx_http_sparsegate_reply_choice(r, rp, 0, text, len, &choice, &s);
    if (root == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    cJSON_AddNumberToObject(choice, "index", 0);

    if (rp->format == NGX_HTTP_SG_FMT_COMPLETION) {
        cJSON_AddStringToObject(choice, "text", s);
    } else {
        msg = cJSON_AddObjectToObject(choice, "message");
        cJSON_AddStringToObject(msg, "role", "assistant");
        cJSON_AddStringToObject(msg, "content", s);
    }
    cJSON_AddNullToObject(choice, "logprobs");
    cJSON_AddStringToObject(choice, "finish_reason", finish_reason);
    cJSON_AddItemToObject(root, "usage",
                          ngx_http_sparsegate_reply_usage(usage));

    if (rp->citations) {
        cJSON_AddItemToObject(root, "citations", cJSON_Parse(rp->citations));
    }

    rc = ngx_http_sparsegate_send_json(r, NGX_HTTP_OK, root);
    cJSON_Delete(root);
    return rc;
}


ngx_int_t
ngx_http_sparsegate_reply_finish(ngx_http_request_t *r,
    ngx_http_sparsegate_reply_t *rp, const u_char *text, size_t len,
    const char *finish_reason, const ngx_http_sparsegate_usage_t *usage)
{
    cJSON      *root;
    ngx_int_t   rc;

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "sparsegate response: %s ends (%s), %uz bytes left",
                   rp->id, finish_reason, len);

    if (!rp->stream) {
        return ngx_http_sparsegate_reply_object(r, rp, text, len,
                                                finish_reason, usage);
    }

    if ((len > 0
         && ngx_http_sparsegate_reply_chunk(r, rp, text, len, NULL, 0)
            == NGX_ERROR)
        || ngx_http_sparsegate_reply_chunk(r, rp, (u_char *) "", 0,
                                           finish_reason, 0)
           == NGX_ERROR)
    {
        return NGX_ERROR;
    }

    if (rp->include_usage) {
        root = ngx_http_sparsegate_reply_head(rp, 1);
        if (root != NULL) {
            cJSON_AddArrayToObject(root, "choices");
            cJSON_AddItemToObject(root, "usage",
                                  ngx_http_sparsegate_reply_usage(usage));
            rc = ngx_http_sparsegate_sse_json(r, root);
            cJSON_Delete(root);
            if (rc == NGX_ERROR) {
                return NGX_ERROR;
            }
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
