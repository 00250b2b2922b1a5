/*
 * Errors in OpenAI's shape; every one is counted by kind for /metrics.
 */

#include <cjson/cJSON.h>

#include "ngx_http_sparsegate_errors.h"
#include "ngx_http_sparsegate_counters.h"
#include "ngx_http_sparsegate_json.h"
#include "ngx_http_sparsegate_send.h"
#include "tokenizer.h"


static const struct {
    const char  *type;      /* OpenAI error type */
    const char  *code;      /* OpenAI error code */
} ngx_http_sparsegate_errors[NGX_HTTP_SG_ERR_N] = {
    [NGX_HTTP_SG_ERR_BAD_REQUEST] = { "invalid_request_error", NULL },
    [NGX_HTTP_SG_ERR_AUTH] = { "invalid_request_error", "invalid_api_key" },
    [NGX_HTTP_SG_ERR_NOT_FOUND] = { "invalid_request_error",
                                    "model_not_found" },
    [NGX_HTTP_SG_ERR_TOO_LARGE] = { "invalid_request_error",
                                    "request_too_large" },
    [NGX_HTTP_SG_ERR_CONTEXT_LENGTH] = { "invalid_request_error",
                                         "context_length_exceeded" },
    [NGX_HTTP_SG_ERR_QUEUE_FULL] = { "rate_limit_error",
                                     "rate_limit_exceeded" },
    [NGX_HTTP_SG_ERR_ENGINE] = { "server_error", "engine_error" },
    [NGX_HTTP_SG_ERR_STORE] = { "server_error", "store_error" },
    [NGX_HTTP_SG_ERR_TIMEOUT] = { "server_error", "timeout" },
    [NGX_HTTP_SG_ERR_CLIENT_CLOSED] = { "server_error", "client_closed" },
    [NGX_HTTP_SG_ERR_NO_MEMORY] = { "server_error", "out_of_memory" },
};


static const char  ngx_http_sparsegate_oom_json[] =
    "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\","
    "\"param\":null,\"code\":\"out_of_memory\"}}";


ngx_int_t
ngx_http_sparsegate_fault(ngx_http_sparsegate_fault_t *f, ngx_uint_t status,
    ngx_http_sparsegate_error_e kind, const char *param, const char *fmt, ...)
{
    u_char   *p;
    va_list   args;

    f->status = status;
    f->kind = kind;
    f->param = param;
    va_start(args, fmt);
    p = ngx_vslprintf((u_char *) f->msg, (u_char *) f->msg + sizeof(f->msg)
                      - 1, fmt, args);
    va_end(args);

    /* a message cut at the buffer's end may end inside a character the
     * client sent (a long model name): the answer must stay UTF-8 */
    p = (u_char *) f->msg + sg_utf8_valid_prefix(f->msg,
                                                 p - (u_char *) f->msg);
    *p = '\0';
    return NGX_ERROR;
}


ngx_int_t
ngx_http_sparsegate_fault_oom(ngx_http_sparsegate_fault_t *f)
{
    return ngx_http_sparsegate_fault(f, NGX_HTTP_SERVICE_UNAVAILABLE,
                                     NGX_HTTP_SG_ERR_NO_MEMORY, NULL,
                                     "out of memory");
}


u_char *
ngx_http_sparsegate_error_json(ngx_http_sparsegate_error_e kind,
    const char *param, const char *message, size_t *len)
{
    char        *text;
    cJSON       *root, *err;
    ngx_uint_t   failed;
    const char  *code;

    code = ngx_http_sparsegate_errors[kind].code;
    if (kind == NGX_HTTP_SG_ERR_NOT_FOUND
        && (param == NULL || ngx_strcmp(param, "model") != 0))
    {
        code = "not_found";
    }

    failed = ngx_http_sparsegate_json_failures();
    root = cJSON_CreateObject();
    err = cJSON_AddObjectToObject(root, "error");
    if (err == NULL) {
        cJSON_Delete(root);
        return NULL;
    }
    cJSON_AddStringToObject(err, "message", message);
    cJSON_AddStringToObject(err, "type", ngx_http_sparsegate_errors[kind].type);
    if (param != NULL) {
        cJSON_AddStringToObject(err, "param", param);
    } else {
        cJSON_AddNullToObject(err, "param");
    }
    if (code != NULL) {
        cJSON_AddStringToObject(err, "code", code);
    } else {
        cJSON_AddNullToObject(err, "code");
    }

    text = ngx_http_sparsegate_json_failures() == failed
           ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (text == NULL) {
        return NULL;
    }
    *len = ngx_strlen(text);
    return (u_char *) text;
}


static ngx_int_t
ngx_http_sparsegate_send_error(ngx_http_request_t *r, ngx_uint_t status,
    ngx_http_sparsegate_error_e kind, const char *param, const char *msg)
{
    u_char           *json;
    size_t            len;
    ngx_int_t         rc;
    ngx_uint_t        level;
    ngx_table_elt_t  *h;

    ngx_http_sparsegate_count_error(kind);

    level = (status >= 500) ? NGX_LOG_ERR : NGX_LOG_INFO;
    ngx_log_error(level, r->connection->log, 0, "sparsegate: %ui %s: %s",
                  status, ngx_http_sparsegate_error_label(kind), msg);

    if (r->header_sent) {
        return NGX_ERROR;
    }

    /* try again later: the queue was full, or memory ran out */
    if (status == NGX_HTTP_TOO_MANY_REQUESTS
        || status == NGX_HTTP_SERVICE_UNAVAILABLE)
    {
        h = ngx_list_push(&r->headers_out.headers);
        if (h != NULL) {
            h->hash = 1;
            ngx_str_set(&h->key, "Retry-After");
            ngx_str_set(&h->value, "1");
        }
    }

    json = ngx_http_sparsegate_error_json(kind, param, msg, &len);
    if (json == NULL) {
        /* no memory for the JSON: an answer that needs none */
        return ngx_http_sparsegate_send_text(r,
                   NGX_HTTP_SERVICE_UNAVAILABLE, "application/json",
                   (u_char *) ngx_http_sparsegate_oom_json,
                   sizeof(ngx_http_sparsegate_oom_json) - 1);
    }

    rc = ngx_http_sparsegate_send_text(r, status, "application/json", json,
                                       len);
    free(json);
    return rc;
}


ngx_int_t
ngx_http_sparsegate_error(ngx_http_request_t *r, ngx_uint_t status,
    ngx_http_sparsegate_error_e kind, const char *param, const char *fmt, ...)
{
    u_char   msg[1024], *p;
    va_list  args;

    va_start(args, fmt);
    p = ngx_vslprintf(msg, msg + sizeof(msg) - 1, fmt, args);
    va_end(args);
    *p = '\0';

    return ngx_http_sparsegate_send_error(r, status, kind, param,
                                          (char *) msg);
}


ngx_int_t
ngx_http_sparsegate_send_fault(ngx_http_request_t *r,
    ngx_http_sparsegate_fault_t *f)
{
    return ngx_http_sparsegate_send_error(r, f->status, f->kind, f->param,
                                          f->msg);
}
