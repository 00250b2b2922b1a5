/*
 * POST /v1/chat/completions and POST /v1/completions: every field of the
 * request known (or a 400 naming it), its options into a job, its output
 * format into a grammar, its prompt (messages through DeepSeek-V3.2's
 * encoding) into token ids; all handed to a job.
 */

#include "ngx_http_sparsegate_endpoints.h"
#include "ngx_http_sparsegate_conf.h"
#include "ngx_http_sparsegate_constrain.h"
#include "ngx_http_sparsegate_encode.h"
#include "ngx_http_sparsegate_job.h"
#include "ngx_http_sparsegate_messages.h"
#include "ngx_http_sparsegate_params.h"


static const char *const  ngx_http_sparsegate_chat_fields[] = {
    "model", "messages", "max_tokens", "max_completion_tokens",
    "temperature", "top_p", "top_k", "min_p", "n", "stream",
    "stream_options", "stop", "seed", "presence_penalty",
    "frequency_penalty", "repetition_penalty", "logit_bias", "logprobs",
    "top_logprobs", "response_format", "tools", "tool_choice",
    "parallel_tool_calls", "thinking", "chat_template_kwargs", "ignore_eos",
    "cache_salt", NULL
};

static const char *const  ngx_http_sparsegate_completion_fields[] = {
    "model", "prompt", "max_tokens", "temperature", "top_p", "top_k",
    "min_p", "n", "stream", "stream_options", "stop", "seed",
    "presence_penalty", "frequency_penalty", "repetition_penalty",
    "logit_bias", "logprobs", "response_format", "ignore_eos", "cache_salt",
    NULL
};


/* The prompt is encoded: generate. */
static ngx_int_t
ngx_http_sparsegate_openai_run(ngx_http_request_t *r, void *data,
    const char *text, size_t len, const int32_t *ids, size_t n_ids)
{
    return ngx_http_sparsegate_job_run(r, data, ids, n_ids);
}


ngx_int_t
ngx_http_sparsegate_chat(ngx_http_request_t *r)
{
    cJSON                           *root;
    ngx_int_t                        rc;
    ngx_http_sparsegate_chat_t       chat;
    ngx_http_sparsegate_fault_t      f;
    ngx_http_sparsegate_rformat_t    rf;
    ngx_http_sparsegate_job_opts_t  *o;

    root = ngx_http_sparsegate_parse_body(r, &f);
    if (root == NULL) {
        return ngx_http_sparsegate_send_fault(r, &f);
    }

    o = ngx_palloc(r->pool, sizeof(ngx_http_sparsegate_job_opts_t));

    if (o == NULL
        || ngx_http_sparsegate_check_fields(r, root,
                                            ngx_http_sparsegate_chat_fields,
                                            "", &f) != NGX_OK
        || ngx_http_sparsegate_parse_model(r, root, &f) != NGX_OK
        || ngx_http_sparsegate_parse_response_format(r, root, &rf, &f)
           != NGX_OK
        || ngx_http_sparsegate_parse_chat(r, root, rf.schema, &chat, &f)
           != NGX_OK
        || ngx_http_sparsegate_parse_job_opts(r, root, NGX_HTTP_SG_FMT_CHAT,
                                              o, &f)
           != NGX_OK)
    {
        goto fault;
    }

    if (rf.json && chat.tool_choice == NGX_HTTP_SG_TOOLS_AUTO) {
        ngx_http_sparsegate_fault(&f, NGX_HTTP_BAD_REQUEST,
            NGX_HTTP_SG_ERR_BAD_REQUEST, "response_format",
            "a JSON 'response_format' leaves no room for tool calls: with "
            "'tools', set 'tool_choice' to \"none\"");
        goto fault;
    }
    if (ngx_http_sparsegate_grammar(r, &rf, chat.tools,
                                    chat.tool_choice
                                    == NGX_HTTP_SG_TOOLS_REQUIRED,
                                    chat.tool_name, chat.parallel,
                                    chat.thinking, &o->sampling.grammar, &f)
        != NGX_OK)
    {
        goto fault;
    }
    o->thinking = chat.thinking;
    o->tools = chat.tool_choice != NGX_HTTP_SG_TOOLS_NONE;

    ngx_log_debug4(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "sparsegate chat: %ui messages, thinking %ui, tools %ui, "
                   "constrained %d", chat.n, chat.thinking,
                   (ngx_uint_t) chat.tool_choice,
                   o->sampling.grammar != NULL);

    /* the encoding copies the messages: the JSON is done with after it */
    rc = ngx_http_sparsegate_encode_chat(r, chat.msgs, chat.n, chat.thinking,
                                         ngx_http_sparsegate_openai_run, o);
    cJSON_Delete(root);
    return rc;

fault:

    cJSON_Delete(root);
    return o ? ngx_http_sparsegate_send_fault(r, &f)
             : NGX_HTTP_INTERNAL_SERVER_ERROR;
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
    ngx_http_sparsegate_rformat_t    rf;
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
    if (ngx_http_sparsegate_check_fields(r, root,
                                         ngx_http_sparsegate_completion_fields,
                                         "", &f) != NGX_OK
        || ngx_http_sparsegate_parse_model(r, root, &f) != NGX_OK)
    {
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
        if (ngx_http_sparsegate_parse_ids(r, prompt, "prompt", &ids, &n_ids,
                                          &f)
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
        != NGX_OK
        || ngx_http_sparsegate_parse_response_format(r, root, &rf, &f)
           != NGX_OK
        || ngx_http_sparsegate_grammar(r, &rf, NULL, 0, NULL, 1, 0,
                                       &o->sampling.grammar, &f)
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
