/*
 * POST /tokenize and POST /detokenize, as vLLM and llama.cpp's server offer
 * them: the exact prompt ids (and text) the gateway generates from, for a
 * text prompt (as /v1/completions encodes it) or a chat (messages, tools,
 * the thinking switch, a response schema: as /v1/chat/completions encodes
 * it); and ids back to text.
 */

#include "ngx_http_sparsegate_endpoints.h"
#include "ngx_http_sparsegate_conf.h"
#include "ngx_http_sparsegate_constrain.h"
#include "ngx_http_sparsegate_encode.h"
#include "ngx_http_sparsegate_messages.h"
#include "ngx_http_sparsegate_params.h"
#include "ngx_http_sparsegate_send.h"
#include "ngx_http_sparsegate_text.h"


static const char *const  ngx_http_sparsegate_tokenize_fields[] = {
    "model", "prompt", "messages", "tools", "tool_choice",
    "parallel_tool_calls", "thinking", "chat_template_kwargs",
    "response_format", NULL
};

static const char *const  ngx_http_sparsegate_detokenize_fields[] = {
    "model", "tokens", NULL
};


/* The answer of /tokenize: the ids and the text they encode. */
static ngx_int_t
ngx_http_sparsegate_tokenized(ngx_http_request_t *r, void *data,
    const char *text, size_t len, const int32_t *ids, size_t n_ids)
{
    char                             *s;
    cJSON                            *root, *tokens;
    size_t                            i;
    ngx_int_t                         rc;
    ngx_http_sparsegate_main_conf_t  *smcf;

    smcf = ngx_http_get_module_main_conf(r, ngx_http_sparsegate_module);

    root = cJSON_CreateObject();
    tokens = cJSON_AddArrayToObject(root, "tokens");
    s = (char *) ngx_http_sparsegate_text_sanitize((u_char *) text, len, &i);
    if (tokens == NULL || s == NULL) {
        free(s);
        cJSON_Delete(root);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    cJSON_AddNumberToObject(root, "count", (double) n_ids);
    cJSON_AddNumberToObject(root, "max_model_len",
                            (double) smcf->context_limit);
    for (i = 0; i < n_ids; i++) {
        cJSON_AddItemToArray(tokens, cJSON_CreateNumber(ids[i]));
    }
    cJSON_AddStringToObject(root, "prompt", s);
    free(s);
    rc = ngx_http_sparsegate_send_json(r, NGX_HTTP_OK, root);
    cJSON_Delete(root);
    return rc;
}


ngx_int_t
ngx_http_sparsegate_tokenize(ngx_http_request_t *r)
{
    char                           *text;
    cJSON                          *root, *prompt;
    ngx_int_t                       rc;
    ngx_http_sparsegate_chat_t      chat;
    ngx_http_sparsegate_fault_t     f;
    ngx_http_sparsegate_rformat_t   rf;

    root = ngx_http_sparsegate_parse_body(r, &f);
    if (root == NULL) {
        return ngx_http_sparsegate_send_fault(r, &f);
    }
    if (ngx_http_sparsegate_check_fields(r, root,
                                         ngx_http_sparsegate_tokenize_fields,
                                         "", &f) != NGX_OK
        || ngx_http_sparsegate_parse_model(r, root, &f) != NGX_OK)
    {
        goto fault;
    }

    prompt = cJSON_GetObjectItemCaseSensitive(root, "prompt");
    if (cJSON_IsString(prompt)
        && cJSON_GetObjectItemCaseSensitive(root, "messages") == NULL)
    {
        text = strdup(prompt->valuestring);
        cJSON_Delete(root);
        if (text == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
        return ngx_http_sparsegate_encode(r, text, ngx_strlen(text),
                                          ngx_http_sparsegate_tokenized,
                                          NULL);
    }
    if (prompt != NULL) {
        ngx_http_sparsegate_fault(&f, NGX_HTTP_BAD_REQUEST,
            NGX_HTTP_SG_ERR_BAD_REQUEST, "prompt",
            "give 'prompt' (a string) or 'messages', not both");
        goto fault;
    }

    /* the same conversation as /v1/chat/completions would encode */
    if (ngx_http_sparsegate_parse_response_format(r, root, &rf, &f)
        != NGX_OK
        || ngx_http_sparsegate_parse_chat(r, root, rf.schema, &chat, &f)
           != NGX_OK)
    {
        goto fault;
    }
    rc = ngx_http_sparsegate_encode_chat(r, chat.msgs, chat.n, chat.thinking,
                                         ngx_http_sparsegate_tokenized, NULL);
    cJSON_Delete(root);
    return rc;

fault:

    cJSON_Delete(root);
    return ngx_http_sparsegate_send_fault(r, &f);
}


ngx_int_t
ngx_http_sparsegate_detokenize(ngx_http_request_t *r)
{
    char                             *text;
    u_char                           *s;
    size_t                            n_ids, len;
    cJSON                            *root, *out;
    int32_t                          *ids;
    ngx_int_t                         rc;
    ngx_http_sparsegate_fault_t       f;
    ngx_http_sparsegate_main_conf_t  *smcf;

    smcf = ngx_http_get_module_main_conf(r, ngx_http_sparsegate_module);

    root = ngx_http_sparsegate_parse_body(r, &f);
    if (root == NULL) {
        return ngx_http_sparsegate_send_fault(r, &f);
    }
    ids = NULL;
    if (ngx_http_sparsegate_check_fields(r, root,
                                         ngx_http_sparsegate_detokenize_fields,
                                         "", &f) != NGX_OK
        || ngx_http_sparsegate_parse_model(r, root, &f) != NGX_OK)
    {
        goto fault;
    }
    if (!cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(root, "tokens"))) {
        ngx_http_sparsegate_fault(&f, NGX_HTTP_BAD_REQUEST,
            NGX_HTTP_SG_ERR_BAD_REQUEST, "tokens",
            "'tokens' must be an array of token ids");
        goto fault;
    }
    if (ngx_http_sparsegate_parse_ids(r,
            cJSON_GetObjectItemCaseSensitive(root, "tokens"), "tokens", &ids,
            &n_ids, &f)
        != NGX_OK)
    {
        goto fault;
    }
    cJSON_Delete(root);

    if (sg_tokenizer_decode(smcf->tokenizer, ids, n_ids, &text, &len) != 0) {
        free(ids);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    free(ids);
    s = ngx_http_sparsegate_text_sanitize((u_char *) text, len, &len);
    free(text);
    out = cJSON_CreateObject();
    if (s == NULL || out == NULL) {
        free(s);
        cJSON_Delete(out);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    cJSON_AddStringToObject(out, "prompt", (char *) s);
    free(s);
    rc = ngx_http_sparsegate_send_json(r, NGX_HTTP_OK, out);
    cJSON_Delete(out);
    return rc;

fault:

    free(ids);
    cJSON_Delete(root);
    return ngx_http_sparsegate_send_fault(r, &f);
}
