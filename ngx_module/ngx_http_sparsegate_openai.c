/*
 * The OpenAI-compatible endpoints: POST /v1/chat/completions,
 * POST /v1/completions, GET /v1/models: request parsing and validation,
 * and ngx_http_sparsegate_generate(), which every generating endpoint
 * (/v1/rag too) ends in.  The response side is ngx_http_sparsegate_response.c.
 */

#include "ngx_http_sparsegate.h"


/* A request error found while parsing, answered by the caller. */
typedef struct {
    ngx_uint_t                   status;
    ngx_http_sparsegate_error_e  kind;
    const char                  *param;
    char                         msg[512];
} ngx_http_sparsegate_fault_t;


static ngx_int_t
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
    *p = '\0';
    return NGX_ERROR;
}


static ngx_int_t
ngx_http_sparsegate_send_fault(ngx_http_request_t *r,
    ngx_http_sparsegate_fault_t *f)
{
    return ngx_http_sparsegate_error(r, f->status, f->kind, f->param, "%s",
                                     f->msg);
}


/* "model" must name the served model: 404 otherwise, as OpenAI does.
 * NGX_OK, or NGX_ERROR with the error answered and *rc what to finalize
 * the request with. */
ngx_int_t
ngx_http_sparsegate_check_model(ngx_http_request_t *r, cJSON *root,
    ngx_int_t *rc)
{
    cJSON                            *model;
    const ngx_str_t                  *name;
    ngx_http_sparsegate_main_conf_t  *smcf;

    smcf = ngx_http_get_module_main_conf(r, ngx_http_sparsegate_module);
    name = ngx_http_sparsegate_model_name(smcf);

    model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (model == NULL || cJSON_IsNull(model)) {
        return NGX_OK;        /* the only model */
    }
    if (!cJSON_IsString(model)) {
        *rc = ngx_http_sparsegate_error(r, NGX_HTTP_BAD_REQUEST,
                  NGX_HTTP_SG_ERR_BAD_REQUEST, "model",
                  "'model' must be a string");
        return NGX_ERROR;
    }
    if (ngx_strlen(model->valuestring) != name->len
        || ngx_strncmp(model->valuestring, name->data, name->len) != 0)
    {
        *rc = ngx_http_sparsegate_error(r, NGX_HTTP_NOT_FOUND,
                  NGX_HTTP_SG_ERR_NOT_FOUND, "model",
                  "The model '%s' does not exist: this server serves "
                  "'%V'", model->valuestring, name);
        return NGX_ERROR;
    }
    return NGX_OK;
}


/* A number field within [lo, hi]; *present = 0 when absent or null. */
static ngx_int_t
ngx_http_sparsegate_number(cJSON *root, const char *name, double lo,
    double hi, ngx_uint_t integer, double *out, ngx_uint_t *present,
    ngx_http_sparsegate_fault_t *f)
{
    cJSON  *it;

    *present = 0;
    it = cJSON_GetObjectItemCaseSensitive(root, name);
    if (it == NULL || cJSON_IsNull(it)) {
        return NGX_OK;
    }
    if (!cJSON_IsNumber(it)) {
        return ngx_http_sparsegate_fault(f, NGX_HTTP_BAD_REQUEST,
                   NGX_HTTP_SG_ERR_BAD_REQUEST, name,
                   "'%s' must be a number", name);
    }
    if (it->valuedouble < lo || it->valuedouble > hi
        || (integer && it->valuedouble != (double) (int64_t) it->valuedouble))
    {
        return ngx_http_sparsegate_fault(f, NGX_HTTP_BAD_REQUEST,
                   NGX_HTTP_SG_ERR_BAD_REQUEST, name,
                   "'%s' must be %s from %.2f to %.2f", name,
                   integer ? "an integer" : "a number", lo, hi);
    }
    *out = it->valuedouble;
    *present = 1;
    return NGX_OK;
}


static ngx_int_t
ngx_http_sparsegate_bool(cJSON *root, const char *name, ngx_uint_t *out,
    ngx_http_sparsegate_fault_t *f)
{
    cJSON  *it;

    it = cJSON_GetObjectItemCaseSensitive(root, name);
    if (it == NULL || cJSON_IsNull(it)) {
        return NGX_OK;
    }
    if (!cJSON_IsBool(it)) {
        return ngx_http_sparsegate_fault(f, NGX_HTTP_BAD_REQUEST,
                   NGX_HTTP_SG_ERR_BAD_REQUEST, name,
                   "'%s' must be true or false", name);
    }
    *out = cJSON_IsTrue(it) ? 1 : 0;
    return NGX_OK;
}


static ngx_int_t
ngx_http_sparsegate_add_stop(cJSON *it, ngx_http_sparsegate_job_t *job,
    ngx_http_sparsegate_fault_t *f)
{
    size_t  len;

    if (!cJSON_IsString(it) || it->valuestring[0] == '\0') {
        return ngx_http_sparsegate_fault(f, NGX_HTTP_BAD_REQUEST,
                   NGX_HTTP_SG_ERR_BAD_REQUEST, "stop",
                   "every 'stop' entry must be a non-empty string");
    }
    len = ngx_strlen(it->valuestring);
    job->stops[job->n_stops] = strdup(it->valuestring);
    if (job->stops[job->n_stops] == NULL) {
        return ngx_http_sparsegate_fault(f, NGX_HTTP_INTERNAL_SERVER_ERROR,
                   NGX_HTTP_SG_ERR_ENGINE, NULL, "out of memory");
    }
    job->n_stops++;
    job->max_stop_len = ngx_max(job->max_stop_len, len);
    return NGX_OK;
}


static ngx_int_t
ngx_http_sparsegate_stops(cJSON *root, ngx_http_sparsegate_job_t *job,
    ngx_http_sparsegate_fault_t *f)
{
    cJSON  *stop, *it;

    stop = cJSON_GetObjectItemCaseSensitive(root, "stop");
    if (stop == NULL || cJSON_IsNull(stop)) {
        return NGX_OK;
    }
    if (cJSON_IsString(stop)) {
        return ngx_http_sparsegate_add_stop(stop, job, f);
    }
    if (!cJSON_IsArray(stop)
        || cJSON_GetArraySize(stop) > NGX_HTTP_SG_MAX_STOPS)
    {
        return ngx_http_sparsegate_fault(f, NGX_HTTP_BAD_REQUEST,
                   NGX_HTTP_SG_ERR_BAD_REQUEST, "stop",
                   "'stop' must be a string or an array of up to %d "
                   "strings", NGX_HTTP_SG_MAX_STOPS);
    }
    cJSON_ArrayForEach(it, stop) {
        if (ngx_http_sparsegate_add_stop(it, job, f) != NGX_OK) {
            return NGX_ERROR;
        }
    }
    return NGX_OK;
}


/*
 * The part every generating endpoint shares: sampling options, limits,
 * submission, and for a stream the response head.  Returns NGX_DONE when
 * the job runs, or what to finalize the request with.
 */
ngx_int_t
ngx_http_sparsegate_generate(ngx_http_request_t *r, cJSON *root,
    ngx_http_sparsegate_job_t *job, int32_t *ids, size_t n_ids)
{
    double                            v;
    ngx_int_t                         rc, limit;
    ngx_uint_t                        present, flag;
    sg_request                        req;
    cJSON                            *so;
    const sg_model_info              *cfg;
    ngx_http_sparsegate_fault_t       f;
    ngx_http_sparsegate_loc_conf_t   *slcf;
    ngx_http_sparsegate_main_conf_t  *smcf;

    smcf = ngx_http_get_module_main_conf(r, ngx_http_sparsegate_module);
    slcf = ngx_http_get_module_loc_conf(r, ngx_http_sparsegate_module);

    ngx_memzero(&req, sizeof(req));
    req.prompt = ids;
    req.n_prompt = (int) n_ids;
    req.temperature = 1.0f;
    req.top_p = 1.0f;
    req.seed = ((uint64_t) ngx_random() << 32) ^ (uint64_t) ngx_random();

    cfg = sg_engine_model_info(ngx_http_sparsegate_engine());
    limit = smcf->max_context > 0 ? smcf->max_context
                                  : cfg->max_position_embeddings;

    if (ngx_http_sparsegate_number(root, "temperature", 0, 2, 0, &v,
                                   &present, &f) != NGX_OK)
    {
        goto fault;
    }
    if (present) {
        req.temperature = (float) v;
    }
    if (ngx_http_sparsegate_number(root, "top_p", 0, 1, 0, &v, &present, &f)
        != NGX_OK)
    {
        goto fault;
    }
    if (present) {
        if (v <= 0) {
            ngx_http_sparsegate_fault(&f, NGX_HTTP_BAD_REQUEST,
                NGX_HTTP_SG_ERR_BAD_REQUEST, "top_p",
                "'top_p' must be greater than 0");
            goto fault;
        }
        req.top_p = (float) v;
    }
    if (ngx_http_sparsegate_number(root, "seed", -9.2e18, 9.2e18, 1, &v,
                                   &present, &f) != NGX_OK)
    {
        goto fault;
    }
    if (present) {
        req.seed = (uint64_t) (int64_t) v;
    }
    if (ngx_http_sparsegate_number(root, "n", 1, 1, 1, &v, &present, &f)
        != NGX_OK)
    {
        f.msg[0] = '\0';
        ngx_http_sparsegate_fault(&f, NGX_HTTP_BAD_REQUEST,
            NGX_HTTP_SG_ERR_BAD_REQUEST, "n",
            "only 'n': 1 is supported");
        goto fault;
    }

    req.max_tokens = -1;
    if (ngx_http_sparsegate_number(root, "max_completion_tokens", 1, 1e9, 1,
                                   &v, &present, &f) != NGX_OK)
    {
        goto fault;
    }
    if (!present
        && ngx_http_sparsegate_number(root, "max_tokens", 1, 1e9, 1, &v,
                                      &present, &f) != NGX_OK)
    {
        goto fault;
    }
    if (present) {
        if (v > slcf->max_tokens) {
            ngx_http_sparsegate_fault(&f, NGX_HTTP_BAD_REQUEST,
                NGX_HTTP_SG_ERR_BAD_REQUEST, "max_tokens",
                "max_tokens %.0f is over this server's limit of %i "
                "(sparsegate_max_tokens)", v, slcf->max_tokens);
            goto fault;
        }
        req.max_tokens = (int) v;
    }

    flag = 0;
    if (ngx_http_sparsegate_bool(root, "stream", &flag, &f) != NGX_OK) {
        goto fault;
    }
    job->stream = flag;
    so = cJSON_GetObjectItemCaseSensitive(root, "stream_options");
    if (so != NULL && cJSON_IsObject(so)) {
        flag = 0;
        if (ngx_http_sparsegate_bool(so, "include_usage", &flag, &f)
            != NGX_OK)
        {
            f.param = "stream_options.include_usage";
            goto fault;
        }
        job->include_usage = flag;
    }
    flag = 0;
    if (ngx_http_sparsegate_bool(root, "ignore_eos", &flag, &f) != NGX_OK) {
        goto fault;
    }
    req.ignore_eos = (int) flag;

    if (ngx_http_sparsegate_stops(root, job, &f) != NGX_OK) {
        goto fault;
    }

    /* limits, with the numbers in the message (OpenAI's wording) */
    if (req.max_tokens < 0) {
        req.max_tokens = (int) ngx_min(slcf->max_tokens,
                                       limit - (ngx_int_t) n_ids);
    }
    if ((ngx_int_t) n_ids + req.max_tokens > limit || req.max_tokens <= 0) {
        ngx_http_sparsegate_fault(&f, NGX_HTTP_BAD_REQUEST,
            NGX_HTTP_SG_ERR_CONTEXT_LENGTH, "messages",
            "This model's maximum context length is %i tokens. However, "
            "you requested %i tokens (%uz in the messages, %d in the "
            "completion). Please reduce the length of the messages or "
            "completion.", limit,
            (ngx_int_t) n_ids + ngx_max(req.max_tokens, 1), n_ids,
            ngx_max(req.max_tokens, 1));
        goto fault;
    }

    rc = ngx_http_sparsegate_job_submit(r, job, &req);
    if (rc != NGX_DONE) {
        return rc;
    }

    if (job->stream) {
        rc = ngx_http_sparsegate_stream_start(job);
        if (rc != NGX_OK) {
            return rc;
        }
    }

    return NGX_DONE;

fault:
    return ngx_http_sparsegate_send_fault(r, &f);
}


/* Message content: a string, or an array of {"type":"text","text":...}. */
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


static ngx_int_t
ngx_http_sparsegate_run(ngx_http_request_t *r, cJSON *root,
    ngx_http_sparsegate_format_e format, int32_t *ids, size_t n_ids)
{
    ngx_int_t                   rc;
    ngx_http_sparsegate_job_t  *job;

    job = ngx_http_sparsegate_job_create(r, format);
    if (job == NULL) {
        free(ids);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    rc = ngx_http_sparsegate_generate(r, root, job, ids, n_ids);
    free(ids);
    return rc;
}


/* Tokenizing a long prompt off the worker (see offload.c). */
typedef struct {
    cJSON                         *root;
    char                          *text;
    size_t                         len;
    ngx_uint_t                     own_text;
    int32_t                       *ids;
    size_t                         n_ids;
    int                            failed;
    ngx_http_sparsegate_format_e   format;
    const sg_tokenizer            *tokenizer;
} ngx_http_sparsegate_encoding_t;


static void
ngx_http_sparsegate_encoding_cleanup(void *data)
{
    ngx_http_sparsegate_encoding_t *enc = data;

    cJSON_Delete(enc->root);
    if (enc->own_text) {
        free(enc->text);
    }
    free(enc->ids);
}


static void
ngx_http_sparsegate_encoding_work(void *data)
{
    ngx_http_sparsegate_encoding_t *enc = data;

    enc->failed = sg_tokenizer_encode(enc->tokenizer, enc->text, enc->len, 1,
                                      &enc->ids, &enc->n_ids) != 0;
}


static ngx_int_t
ngx_http_sparsegate_encoded(ngx_http_request_t *r, cJSON *root,
    ngx_http_sparsegate_format_e format, int failed, int32_t *ids,
    size_t n_ids)
{
    if (failed) {
        free(ids);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    if (n_ids == 0) {
        free(ids);
        return ngx_http_sparsegate_error(r, NGX_HTTP_BAD_REQUEST,
                   NGX_HTTP_SG_ERR_BAD_REQUEST, "prompt",
                   "the prompt encodes to no tokens");
    }
    return ngx_http_sparsegate_run(r, root, format, ids, n_ids);
}


static void
ngx_http_sparsegate_encoding_done(ngx_http_request_t *r, void *data)
{
    ngx_int_t                        rc;
    ngx_http_sparsegate_encoding_t  *enc = data;

    rc = ngx_http_sparsegate_encoded(r, enc->root, enc->format, enc->failed,
                                     enc->ids, enc->n_ids);
    enc->ids = NULL;              /* freed by the above */
    if (rc != NGX_DONE) {
        ngx_http_finalize_request(r, rc);
    }
}


/*
 * Encodes text (special tokens on) and runs the generation.  A long text is
 * encoded in a thread: then *root passes to the request (*root = NULL) and
 * so does text when own_text.
 */
static ngx_int_t
ngx_http_sparsegate_encode_run(ngx_http_request_t *r, cJSON **root,
    char *text, size_t len, ngx_uint_t own_text,
    ngx_http_sparsegate_format_e format)
{
    int                               failed;
    size_t                            n_ids;
    int32_t                          *ids;
    ngx_int_t                         rc;
    ngx_pool_cleanup_t               *cln;
    ngx_http_sparsegate_encoding_t   *enc;
    ngx_http_sparsegate_main_conf_t  *smcf;

    smcf = ngx_http_get_module_main_conf(r, ngx_http_sparsegate_module);

    if (len < NGX_HTTP_SG_OFFLOAD_BYTES || smcf->thread_pool == NULL) {
        ids = NULL;
        n_ids = 0;
        failed = sg_tokenizer_encode(smcf->tokenizer, text, len, 1, &ids,
                                     &n_ids) != 0;
        if (own_text) {
            free(text);
        }
        return ngx_http_sparsegate_encoded(r, *root, format, failed, ids,
                                           n_ids);
    }

    cln = ngx_pool_cleanup_add(r->pool,
                               sizeof(ngx_http_sparsegate_encoding_t));
    if (cln == NULL) {
        if (own_text) {
            free(text);
        }
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    enc = cln->data;
    ngx_memzero(enc, sizeof(*enc));
    enc->root = *root;
    enc->text = text;
    enc->len = len;
    enc->own_text = own_text;
    enc->format = format;
    enc->tokenizer = smcf->tokenizer;
    cln->handler = ngx_http_sparsegate_encoding_cleanup;
    *root = NULL;

    rc = ngx_http_sparsegate_offload(r, ngx_http_sparsegate_encoding_work,
                                     ngx_http_sparsegate_encoding_done, enc);
    if (rc == NGX_DONE) {
        r->read_event_handler = ngx_http_test_reading;
        return NGX_DONE;
    }
    return NGX_HTTP_INTERNAL_SERVER_ERROR;
}


ngx_int_t
ngx_http_sparsegate_chat(ngx_http_request_t *r)
{
    int                           n;
    char                         *prompt;
    size_t                        len;
    cJSON                        *root, *messages, *m, *role, *content;
    ngx_int_t                     rc;
    ngx_uint_t                    i, thinking;
    sg_chat_msg                  *msgs;
    ngx_http_sparsegate_fault_t   f;

    root = ngx_http_sparsegate_parse_body(r, &rc);
    if (root == NULL) {
        return rc;
    }

    if (ngx_http_sparsegate_check_model(r, root, &rc) != NGX_OK) {
        goto done;
    }

    messages = cJSON_GetObjectItemCaseSensitive(root, "messages");
    n = cJSON_GetArraySize(messages);
    if (!cJSON_IsArray(messages) || n == 0) {
        rc = ngx_http_sparsegate_error(r, NGX_HTTP_BAD_REQUEST,
                 NGX_HTTP_SG_ERR_BAD_REQUEST, "messages",
                 "'messages' must be a non-empty array");
        goto done;
    }

    msgs = ngx_pcalloc(r->pool, n * sizeof(sg_chat_msg));
    if (msgs == NULL) {
        rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        goto done;
    }

    i = 0;
    cJSON_ArrayForEach(m, messages) {
        role = cJSON_GetObjectItemCaseSensitive(m, "role");
        content = cJSON_GetObjectItemCaseSensitive(m, "content");
        if (!cJSON_IsString(role)
            || (ngx_strcmp(role->valuestring, "system") != 0
                && ngx_strcmp(role->valuestring, "developer") != 0
                && ngx_strcmp(role->valuestring, "user") != 0
                && ngx_strcmp(role->valuestring, "assistant") != 0))
        {
            rc = ngx_http_sparsegate_error(r, NGX_HTTP_BAD_REQUEST,
                     NGX_HTTP_SG_ERR_BAD_REQUEST, "messages",
                     "messages[%ui].role must be \"system\", \"user\" or "
                     "\"assistant\"", i);
            goto done;
        }
        msgs[i].role = ngx_strcmp(role->valuestring, "developer") == 0
                       ? "system" : role->valuestring;
        msgs[i].content = ngx_http_sparsegate_content(r, content);
        if (msgs[i].content == NULL) {
            rc = ngx_http_sparsegate_error(r, NGX_HTTP_BAD_REQUEST,
                     NGX_HTTP_SG_ERR_BAD_REQUEST, "messages",
                     "messages[%ui].content must be a string or an array "
                     "of text parts", i);
            goto done;
        }
        i++;
    }

    thinking = 0;
    if (ngx_http_sparsegate_bool(root, "thinking", &thinking, &f) != NGX_OK) {
        rc = ngx_http_sparsegate_send_fault(r, &f);
        goto done;
    }

    if (sg_chat_format(msgs, n, (int) thinking, &prompt, &len) != 0) {
        rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        goto done;
    }
    rc = ngx_http_sparsegate_encode_run(r, &root, prompt, len, 1,
                                        NGX_HTTP_SG_FMT_CHAT);

done:
    cJSON_Delete(root);
    return rc;
}


ngx_int_t
ngx_http_sparsegate_completions(ngx_http_request_t *r)
{
    int        vocab;
    size_t     n_ids, i;
    cJSON     *root, *prompt, *it;
    int32_t   *ids;
    ngx_int_t  rc;
    ngx_http_sparsegate_main_conf_t  *smcf;

    smcf = ngx_http_get_module_main_conf(r, ngx_http_sparsegate_module);

    root = ngx_http_sparsegate_parse_body(r, &rc);
    if (root == NULL) {
        return rc;
    }

    if (ngx_http_sparsegate_check_model(r, root, &rc) != NGX_OK) {
        goto done;
    }

    prompt = cJSON_GetObjectItemCaseSensitive(root, "prompt");

    /* ["one string"] and [[ids]] are the single-prompt array forms */
    if (cJSON_IsArray(prompt) && cJSON_GetArraySize(prompt) == 1
        && (cJSON_IsString(prompt->child) || cJSON_IsArray(prompt->child)))
    {
        prompt = prompt->child;
    }

    if (cJSON_IsString(prompt)) {
        rc = ngx_http_sparsegate_encode_run(r, &root, prompt->valuestring,
                                            ngx_strlen(prompt->valuestring),
                                            0, NGX_HTTP_SG_FMT_COMPLETION);
        goto done;

    } else if (cJSON_IsArray(prompt) && cJSON_GetArraySize(prompt) > 0) {
        /* token ids */
        vocab = sg_engine_model_info(ngx_http_sparsegate_engine())->vocab_size;
        n_ids = cJSON_GetArraySize(prompt);
        ids = malloc(n_ids * sizeof(int32_t));
        if (ids == NULL) {
            rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
            goto done;
        }
        i = 0;
        cJSON_ArrayForEach(it, prompt) {
            if (!cJSON_IsNumber(it) || it->valuedouble < 0
                || it->valuedouble >= vocab
                || it->valuedouble != (double) (int) it->valuedouble)
            {
                free(ids);
                rc = ngx_http_sparsegate_error(r, NGX_HTTP_BAD_REQUEST,
                         NGX_HTTP_SG_ERR_BAD_REQUEST, "prompt",
                         "prompt[%uz] is not a token id below the vocabulary "
                         "size %d", i, vocab);
                goto done;
            }
            ids[i++] = (int32_t) it->valuedouble;
        }

    } else {
        rc = ngx_http_sparsegate_error(r, NGX_HTTP_BAD_REQUEST,
                 NGX_HTTP_SG_ERR_BAD_REQUEST, "prompt",
                 "'prompt' must be a non-empty string, one string in an "
                 "array, or an array of token ids");
        goto done;
    }

    if (n_ids == 0) {
        free(ids);
        rc = ngx_http_sparsegate_error(r, NGX_HTTP_BAD_REQUEST,
                 NGX_HTTP_SG_ERR_BAD_REQUEST, "prompt",
                 "the prompt encodes to no tokens");
        goto done;
    }

    (void) smcf;
    rc = ngx_http_sparsegate_run(r, root, NGX_HTTP_SG_FMT_COMPLETION, ids,
                                 n_ids);

done:
    cJSON_Delete(root);
    return rc;
}


ngx_int_t
ngx_http_sparsegate_models(ngx_http_request_t *r)
{
    char                             *name;
    u_char                           *p, *tail;
    cJSON                            *root, *data, *m;
    ngx_int_t                         rc;
    const ngx_str_t                  *model;
    ngx_http_sparsegate_main_conf_t  *smcf;

    smcf = ngx_http_get_module_main_conf(r, ngx_http_sparsegate_module);
    model = ngx_http_sparsegate_model_name(smcf);

    name = ngx_pnalloc(r->pool, model->len + 1);
    if (name == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    ngx_memcpy(name, model->data, model->len);
    name[model->len] = '\0';

    m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "id", name);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", (double) ngx_cached_time->sec);
    cJSON_AddStringToObject(m, "owned_by", "sparsegate");

    /* GET /v1/models/{id} */
    p = ngx_strlcasestrn(r->uri.data, r->uri.data + r->uri.len,
                         (u_char *) "/models/", sizeof("/models/") - 2);
    if (p != NULL) {
        tail = p + sizeof("/models/") - 1;
        if ((size_t) (r->uri.data + r->uri.len - tail) != model->len
            || ngx_strncmp(tail, model->data, model->len) != 0)
        {
            cJSON_Delete(m);
            return ngx_http_sparsegate_error(r, NGX_HTTP_NOT_FOUND,
                       NGX_HTTP_SG_ERR_NOT_FOUND, "model",
                       "The model '%*s' does not exist",
                       (size_t) (r->uri.data + r->uri.len - tail), tail);
        }
        rc = ngx_http_sparsegate_send_json(r, NGX_HTTP_OK, m);
        cJSON_Delete(m);
        return rc;
    }

    root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "object", "list");
    data = cJSON_AddArrayToObject(root, "data");
    if (model->len > 0) {
        cJSON_AddItemToArray(data, m);
    } else {
        cJSON_Delete(m);
    }

    rc = ngx_http_sparsegate_send_json(r, NGX_HTTP_OK, root);
    cJSON_Delete(root);
    return rc;
}
