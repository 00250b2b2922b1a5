/*
 * Errors in OpenAI's shape, so that its client libraries raise the right
 * exception class with a readable message:
 *   {"error": {"message": "...", "type": "...", "param": ..., "code": ...}}
 * Every error is also counted by kind for /metrics.
 */

#include "ngx_http_sparsegate.h"


static const struct {
    const char  *name;      /* metrics label */
    const char  *type;      /* OpenAI error type */
    const char  *code;      /* OpenAI error code */
} ngx_http_sparsegate_errors[NGX_HTTP_SG_ERR_N] = {
    { "bad_request", "invalid_request_error", NULL },
    { "auth", "invalid_request_error", "invalid_api_key" },
    { "not_found", "invalid_request_error", "model_not_found" },
    { "too_large", "invalid_request_error", "request_too_large" },
    { "context_length", "invalid_request_error", "context_length_exceeded" },
    { "queue_full", "rate_limit_error", "rate_limit_exceeded" },
    { "engine", "server_error", "engine_error" },
    { "store", "server_error", "store_error" },
    { "timeout", "server_error", "timeout" },
    { "client_closed", "server_error", "client_closed" },
};


const char *
ngx_http_sparsegate_error_name(ngx_http_sparsegate_error_e kind)
{
    return ngx_http_sparsegate_errors[kind].name;
}


/* The JSON text (malloc'ed) of one error. */
u_char *
ngx_http_sparsegate_error_json(ngx_http_sparsegate_error_e kind,
    ngx_uint_t status, const char *param, const char *message, size_t *len)
{
    char        *text;
    cJSON       *root, *err;
    const char  *code;

    code = ngx_http_sparsegate_errors[kind].code;
    if (kind == NGX_HTTP_SG_ERR_NOT_FOUND
        && (param == NULL || ngx_strcmp(param, "model") != 0))
    {
        code = "not_found";
    }

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

    text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (text == NULL) {
        return NULL;
    }
    *len = ngx_strlen(text);
    (void) status;
    return (u_char *) text;
}


/* Sends the error as the whole response; returns what the content handler
 * returns (or finalizes with). */
ngx_int_t
ngx_http_sparsegate_error(ngx_http_request_t *r, ngx_uint_t status,
    ngx_http_sparsegate_error_e kind, const char *param, const char *fmt, ...)
{
    u_char    msg[1024], *json, *p;
    size_t    len;
    va_list   args;
    ngx_int_t rc;
    ngx_uint_t level;

    va_start(args, fmt);
    p = ngx_vslprintf(msg, msg + sizeof(msg) - 1, fmt, args);
    va_end(args);
    *p = '\0';

    ngx_http_sparsegate_count_error(kind);

    level = (status >= 500) ? NGX_LOG_ERR : NGX_LOG_INFO;
    ngx_log_error(level, r->connection->log, 0, "sparsegate: %ui %s: %s",
                  status, ngx_http_sparsegate_errors[kind].name, msg);

    if (r->header_sent) {
        return NGX_ERROR;
    }

    json = ngx_http_sparsegate_error_json(kind, status, param, (char *) msg,
                                          &len);
    if (json == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_http_sparsegate_send_text(r, status, "application/json", json,
                                       len);
    free(json);
    return rc;
}
