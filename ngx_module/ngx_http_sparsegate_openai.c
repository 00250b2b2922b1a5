/*
 * POST /v1/chat/completions and POST /v1/completions: the request's fields
 * into job options and a prompt, the prompt into token ids, both handed to
 * a job.
 */

#include "ngx_http_sparsegate_endpoints.h"
#include "ngx_http_sparsegate_conf.h"
#include "ngx_http_sparsegate_encode.h"
#include "ngx_http_sparsegate_job.h"
#include "ngx_http_sparsegate_params.h"


/* The prompt is encoded: generate. */
static ngx_int_t
ngx_http_sparsegate_openai_run(ngx_http_request_t *r, void *data,
    const int32_t *ids, size_t n_ids)
{
    return ngx_http_sparsegate_job_run(r, data, ids, n_ids);
}


/* Message content: a string, or an array of {"type":"text","text":...}
 * (joined in pool memory). */
static char *
ngx_http_sparsegate_content(ngx_http_request_t *r, cJSON *content)
{
    u_char  *s, *p;
    size_t   len;
    cJSON   *part, *text;

    if (cJSON_IsString(content)) {
        return content->valuestring;
    }
    if (!cJSON_IsArray(content)) {
        return NULL;
    }

    len = 0;
    cJSON_ArrayForEach(part, content) {
        text = cJSON_GetObjectItemCaseSensitive(part, "text");
        if (!cJSON_IsString(text)) {
            return NULL;
        }
        len += ngx_strlen(text->valuestring);
    }
    s = ngx_pnalloc(r->pool, len + 1);
    if (s == NULL) {
        return NULL;
    }
    p = s;
    cJSON_ArrayForEach(part, content) {
        text = cJSON_GetObjectItemCaseSensitive(part, "text");
        p = ngx_cpymem(p, text->valuestring, ngx_strlen(text->valuestring));
    }
    *p = '\0';
    return (char *) s;
}


/* "messages" into the chat template's messages (pointing into root). */
static ngx_int_t
ngx_http_sparsegate_parse_messages(ngx_http_request_t *r, cJSON *root,
    sg_chat_msg **out, ngx_uint_t *n_out, ngx_http_sparsegate_fault_t *f)
{
    int           n;
    cJSON        *messages, *m, *role, *content;
    ngx_uint_t    i;
    const char   *name;
    sg_chat_msg  *msgs;

    messages = cJSON_GetObjectItemCaseSensitive(root, "messages");
    n = cJSON_GetArraySize(messages);
    if (!cJSON_IsArray(messages) || n == 0) {
        return ngx_http_sparsegate_fault(f, NGX_HTTP_BAD_REQUEST,
                   NGX_HTTP_SG_ERR_BAD_REQUEST, "messages",
                   "'messages' must be a non-empty array");
    }

    msgs = ngx_pcalloc(r->pool, n * sizeof(sg_chat_msg));
    if (msgs == NULL) {
        return ngx_http_sparsegate_fault(f, NGX_HTTP_INTERNAL_SERVER_ERROR,
                   NGX_HTTP_SG_ERR_ENGINE, NULL, "out of memory");
    }

    i = 0;
    cJSON_ArrayForEach(m, messages) {
        role = cJSON_GetObjectItemCaseSensitive(m, "role");
        content = cJSON_GetObjectItemCaseSensitive(m, "content");
        name = cJSON_IsString(role) ? role->valuestring : "";
        if (ngx_strcmp(name, "system") != 0
            && ngx_strcmp(name, "developer") != 0
            && ngx_strcmp(name, "user") != 0
            && ngx_strcmp(name, "assistant") != 0)
        {
            return ngx_http_sparsegate_fault(f, NGX_HTTP_BAD_REQUEST,
                       NGX_HTTP_SG_ERR_BAD_REQUEST, "messages",
                       "messages[%ui].role must be \"system\", \"user\" or "
                       "\"assistant\"", i);
        }
        msgs[i].role = ngx_strcmp(name, "developer") == 0 ? "system" : name;
        msgs[i].content = ngx_http_sparsegate_content(r, content);
        if (msgs[i].content == NULL) {
            return ngx_http_sparsegate_fault(f, NGX_HTTP_BAD_REQUEST,
                       NGX_HTTP_SG_ERR_BAD_REQUEST, "messages",
                       "messages[%ui].content must be a string or an array "
                       "of text parts", i);
        }
        i++;
    }

    *out = msgs;
    *n_out = i;
    return NGX_OK;
}


ngx_int_t
ngx_http_sparsegate_chat(ngx_http_request_t *r)
{
    cJSON                           *root;
    ngx_int_t                        rc;
    ngx_uint_t                       n, thinking;
    sg_chat_msg                     *msgs;
    ngx_http_sparsegate_fault_t      f;
    ngx_http_sparsegate_job_opts_t  *o;

    root = ngx_http_sparsegate_parse_body(r, &f);
    if (root == NULL) {
        return ngx_http_sparsegate_send_fault(r, &f);
    }

    o = ngx_palloc(r->pool, sizeof(ngx_http_sparsegate_job_opts_t));
    msgs = NULL;
    n = 0;
    thinking = 0;

    if (o == NULL
        || ngx_http_sparsegate_parse_model(r, root, &f) != NGX_OK
        || ngx_http_sparsegate_parse_messages(r, root, &msgs, &n, &f)
           != NGX_OK
        || ngx_http_sparsegate_parse_bool(root, "thinking", &thinking, &f)
           != NGX_OK
        || ngx_http_sparsegate_parse_job_opts(r, root, NGX_HTTP_SG_FMT_CHAT,
                                              o, &f)
           != NGX_OK)
    {
        cJSON_Delete(root);
        return o ? ngx_http_sparsegate_send_fault(r, &f)
                 : NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "sparsegate chat: %ui messages, thinking %ui", n,
                   thinking);

    /* the template copies the messages: the JSON is done with after it */
    rc = ngx_http_sparsegate_encode_chat(r, msgs, n, thinking,
                                         ngx_http_sparsegate_openai_run, o);
    cJSON_Delete(root);
    return rc;
}


/* "prompt" as token ids, checked against the vocabulary (malloc'ed). */
static ngx_int_t
ngx_http_sparsegate_parse_ids(ngx_http_request_t *r, cJSON *prompt,
    int32_t **out, size_t *n_out, ngx_http_sparsegate_fault_t *f)
{
    size_t                            n, i;
    cJSON                            *it;
    int32_t                          *ids;
    ngx_int_t                         vocab;
    ngx_http_sparsegate_main_conf_t  *smcf;

    smcf = ngx_http_get_module_main_conf(r, ngx_http_sparsegate_module);
    vocab = smcf->vocab_size;

    n = cJSON_GetArraySize(prompt);
    ids = malloc(n * sizeof(int32_t));
    if (ids == NULL) {
        return ngx_http_sparsegate_fault(f, NGX_HTTP_INTERNAL_SERVER_ERROR,
                   NGX_HTTP_SG_ERR_ENGINE, NULL, "out of memory");
    }

    i = 0;
    cJSON_ArrayForEach(it, prompt) {
        if (!cJSON_IsNumber(it) || it->valuedouble < 0
            || it->valuedouble >= vocab
            || it->valuedouble != (double) (int) it->valuedouble)
        {
            free(ids);
            return ngx_http_sparsegate_fault(f, NGX_HTTP_BAD_REQUEST,
                       NGX_HTTP_SG_ERR_BAD_REQUEST, "prompt",
                       "prompt[%uz] is not a token id below the vocabulary "
                       "size %i", i, vocab);
        }
        ids[i++] = (int32_t) it->valuedouble;
    }

    *out = ids;
    *n_out = n;
    return NGX_OK;
}


ngx_int_t
ngx_http_sparsegate_completions(ngx_http_request_t *r)
{
    char                            *text;
    size_t                           n_ids, len;
    cJSON                           *root, *prompt;
    int32_t                         *ids;
    ngx_int_t                        rc;
    ngx_http_sparsegate_fault_t      f;
    ngx_http_sparsegate_job_opts_t  *o;

    root = ngx_http_sparsegate_parse_body(r, &f);
    if (root == NULL) {
        return ngx_http_sparsegate_send_fault(r, &f);
    }

    ids = NULL;
    n_ids = 0;
    text = NULL;
    len = 0;
    o = ngx_palloc(r->pool, sizeof(ngx_http_sparsegate_job_opts_t));
    if (o == NULL) {
        rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        goto done;
    }
    if (ngx_http_sparsegate_parse_model(r, root, &f) != NGX_OK) {
        goto fault;
    }

    prompt = cJSON_GetObjectItemCaseSensitive(root, "prompt");

    /* ["one string"] and [[ids]] are the single-prompt array forms */
    if (cJSON_IsArray(prompt) && cJSON_GetArraySize(prompt) == 1
        && (cJSON_IsString(prompt->child) || cJSON_IsArray(prompt->child)))
    {
        prompt = prompt->child;
    }

    if (cJSON_IsString(prompt)) {
        len = ngx_strlen(prompt->valuestring);
        text = malloc(len + 1);
        if (text == NULL) {
            rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
            goto done;
        }
        ngx_memcpy(text, prompt->valuestring, len + 1);

    } else if (cJSON_IsArray(prompt) && cJSON_GetArraySize(prompt) > 0) {
        if (ngx_http_sparsegate_parse_ids(r, prompt, &ids, &n_ids, &f)
            != NGX_OK)
        {
            goto fault;
        }

    } else {
        ngx_http_sparsegate_fault(&f, NGX_HTTP_BAD_REQUEST,
            NGX_HTTP_SG_ERR_BAD_REQUEST, "prompt",
            "'prompt' must be a non-empty string, one string in an array, "
            "or an array of token ids");
        goto fault;
    }

    if (ngx_http_sparsegate_parse_job_opts(r, root,
                                           NGX_HTTP_SG_FMT_COMPLETION, o, &f)
        != NGX_OK)
    {
        goto fault;
    }

    if (text != NULL) {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "sparsegate completions: a text prompt of %uz bytes",
                       len);
        rc = ngx_http_sparsegate_encode(r, text, len,
                                        ngx_http_sparsegate_openai_run, o);
        text = NULL;
        goto done;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "sparsegate completions: a prompt of %uz token ids",
                   n_ids);
    rc = ngx_http_sparsegate_job_run(r, o, ids, n_ids);
    goto done;

fault:
    rc = ngx_http_sparsegate_send_fault(r, &f);

done:
    free(text);
    free(ids);
    cJSON_Delete(root);
    return rc;
}
