/*
 * Request bodies and the options every generating endpoint shares.
 */

#include "ngx_http_sparsegate_params.h"
#include "ngx_http_sparsegate_conf.h"
#include "ngx_http_sparsegate_json.h"

#include <stdlib.h>


/* The whole body in one buffer (pool memory, NUL-terminated), from memory
 * or from the temp file nginx spooled a large body into; NGX_DECLINED when
 * out of memory, NGX_ERROR when the file cannot be read. */
ngx_int_t
ngx_http_sparsegate_read_body(ngx_http_request_t *r, u_char **data,
    size_t *len)
{
    off_t         size;
    u_char       *p;
    ssize_t       n;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    *data = NULL;
    *len = 0;
    if (r->request_body == NULL || r->request_body->bufs == NULL) {
        return NGX_OK;
    }

    size = 0;
    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        size += ngx_buf_size(cl->buf);
    }

    p = ngx_pnalloc(r->pool, (size_t) size + 1);
    if (p == NULL) {
        return NGX_DECLINED;
    }
    *data = p;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;
        if (ngx_buf_in_memory(b)) {
            p = ngx_cpymem(p, b->pos, b->last - b->pos);
            continue;
        }
        if (b->in_file) {
            /* a local temp file: a short read, as nginx's own modules do */
            n = ngx_read_file(b->file, p, (size_t) (b->file_last - b->file_pos),
                              b->file_pos);
            if (n != b->file_last - b->file_pos) {
                ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                              "sparsegate: short read of the request body "
                              "temp file");
                return NGX_ERROR;
            }
            p += n;
        }
    }

    *p = '\0';
    *len = p - *data;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "sparsegate params: body of %uz bytes", *len);
    return NGX_OK;
}


/* 1 when a string of the JSON text holds a NUL ("\u0000", or a raw 0
 * byte), which a C string would cut short; *key gets the top-level key it
 * is under (the text parsed as an object already). */
static ngx_uint_t
ngx_http_sparsegate_json_nul(u_char *p, size_t len, ngx_str_t *key)
{
    u_char      *end, *start;
    ngx_uint_t   depth, want_key, is_key, nul;

    end = p + len;
    depth = 0;
    want_key = 0;
    ngx_str_null(key);

    for ( /* void */ ; p < end; p++) {

        switch (*p) {

        case '"':
            is_key = (depth == 1 && want_key);
            start = ++p;
            nul = 0;
            for ( /* void */ ; p < end && *p != '"'; p++) {
                if (*p == '\\') {
                    nul |= (end - p > 5
                            && ngx_strncmp(p + 1, "u0000", 5) == 0);
                    p++;
                    continue;
                }
                nul |= (*p == '\0');
            }
            if (is_key) {
                key->data = start;
                key->len = p - start;
                want_key = 0;
            }
            if (nul) {
                return 1;
            }
            break;

        case '{':
            want_key = (++depth == 1);
            break;

        case '[':
            depth++;
            break;

        case '}':
        case ']':
            depth--;
            break;

        case ',':
            want_key = (depth == 1);
            break;
        }
    }

    return 0;
}


cJSON *
ngx_http_sparsegate_parse_body(ngx_http_request_t *r,
    ngx_http_sparsegate_fault_t *f)
{
    u_char       *data, *param;
    size_t        len, valid;
    cJSON        *root;
    ngx_int_t     rc;
    ngx_str_t     key;
    ngx_uint_t    failed;
    const char   *where;

    rc = ngx_http_sparsegate_read_body(r, &data, &len);
    if (rc == NGX_DECLINED) {
        (void) ngx_http_sparsegate_fault(f, NGX_HTTP_SERVICE_UNAVAILABLE,
                   NGX_HTTP_SG_ERR_NO_MEMORY, NULL,
                   "out of memory for the request body");
        return NULL;
    }
    if (rc != NGX_OK) {
        (void) ngx_http_sparsegate_fault(f, NGX_HTTP_INTERNAL_SERVER_ERROR,
                   NGX_HTTP_SG_ERR_ENGINE, NULL,
                   "cannot read the request body");
        return NULL;
    }
    if (len == 0) {
        (void) ngx_http_sparsegate_fault(f, NGX_HTTP_BAD_REQUEST,
                   NGX_HTTP_SG_ERR_BAD_REQUEST, NULL,
                   "the request body is empty: send a JSON object");
        return NULL;
    }

    /* JSON is UTF-8 (RFC 8259): bytes that are not never reach the
     * tokenizer, or an error message that quotes them */
    valid = sg_utf8_valid_prefix((char *) data, len);
    if (valid != len) {
        (void) ngx_http_sparsegate_fault(f, NGX_HTTP_BAD_REQUEST,
                   NGX_HTTP_SG_ERR_BAD_REQUEST, NULL,
                   "the request body is not valid UTF-8 (byte %uz)", valid);
        return NULL;
    }
    failed = ngx_http_sparsegate_json_failures();
    root = cJSON_ParseWithLengthOpts((char *) data, len, &where, 0);
    if (root == NULL && ngx_http_sparsegate_json_failures() != failed) {
        (void) ngx_http_sparsegate_fault(f, NGX_HTTP_SERVICE_UNAVAILABLE,
                   NGX_HTTP_SG_ERR_NO_MEMORY, NULL,
                   "out of memory for the request's JSON");
        return NULL;
    }
    if (root == NULL || !cJSON_IsObject(root)) {
        (void) ngx_http_sparsegate_fault(f, NGX_HTTP_BAD_REQUEST,
                   NGX_HTTP_SG_ERR_BAD_REQUEST, NULL,
                   "the request body is not a JSON object (error near "
                   "byte %uz)", root ? (size_t) 0
                                     : (size_t) (where - (char *) data));
        cJSON_Delete(root);
        return NULL;
    }

    if (ngx_http_sparsegate_json_nul(data, len, &key)) {
        cJSON_Delete(root);
        param = ngx_pnalloc(r->pool, key.len + 1);
        if (param != NULL) {
            ngx_cpystrn(param, key.data, key.len + 1);
        }
        (void) ngx_http_sparsegate_fault(f, NGX_HTTP_BAD_REQUEST,
                   NGX_HTTP_SG_ERR_BAD_REQUEST, (char *) param,
                   "'%V' holds a NUL character (\\u0000): no string of a "
                   "request may", &key);
        return NULL;
    }

    return root;
}


ngx_int_t
ngx_http_sparsegate_parse_model(ngx_http_request_t *r, cJSON *root,
    ngx_http_sparsegate_fault_t *f)
{
    cJSON                            *model;
    ngx_str_t                        *name;
    ngx_http_sparsegate_main_conf_t  *smcf;

    smcf = ngx_http_get_module_main_conf(r, ngx_http_sparsegate_module);
    name = &smcf->model_name;

    model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (model == NULL || cJSON_IsNull(model)) {
        return NGX_OK;        /* the only model */
    }
    if (!cJSON_IsString(model)) {
        return ngx_http_sparsegate_fault(f, NGX_HTTP_BAD_REQUEST,
                   NGX_HTTP_SG_ERR_BAD_REQUEST, "model",
                   "'model' must be a string");
    }
    if (ngx_strlen(model->valuestring) != name->len
        || ngx_strncmp(model->valuestring, name->data, name->len) != 0)
    {
        return ngx_http_sparsegate_fault(f, NGX_HTTP_NOT_FOUND,
                   NGX_HTTP_SG_ERR_NOT_FOUND, "model",
                   "The model '%s' does not exist: this server serves "
                   "'%V'", model->valuestring, name);
    }
    return NGX_OK;
}


ngx_int_t
ngx_http_sparsegate_check_fields(ngx_http_request_t *r, cJSON *obj,
    const char *const *known, const char *at, ngx_http_sparsegate_fault_t *f)
{
    u_char                          *name;
    cJSON                           *it;
    ngx_uint_t                       i;
    ngx_http_sparsegate_loc_conf_t  *slcf;

    slcf = ngx_http_get_module_loc_conf(r, ngx_http_sparsegate_module);

    cJSON_ArrayForEach(it, obj) {
        if (cJSON_IsNull(it)) {
            continue;                    /* null: not given */
        }
        for (i = 0; known[i] != NULL; i++) {
            if (ngx_strcmp(known[i], it->string) == 0) {
                break;
            }
        }
        if (known[i] != NULL
            || (slcf->test_hooks && at[0] == '\0'
                && ngx_strcmp(it->string, "sparsegate_script") == 0))
        {
            continue;
        }
        /* the name outlives the JSON: the error is sent after it is
         * deleted */
        name = ngx_pnalloc(r->pool, ngx_strlen(at) + ngx_strlen(it->string)
                                    + 1);
        if (name != NULL) {
            *ngx_sprintf(name, "%s%s", at, it->string) = '\0';
        }
        return ngx_http_sparsegate_fault(f, NGX_HTTP_BAD_REQUEST,
                   NGX_HTTP_SG_ERR_BAD_REQUEST,
                   name ? (char *) name : NULL,
                   "Unrecognized request argument supplied: %s%s (this "
                   "server does not implement it)", at, it->string);
    }
    return NGX_OK;
}


ngx_int_t
ngx_http_sparsegate_parse_number(cJSON *root, const char *name, double lo,
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


ngx_int_t
ngx_http_sparsegate_parse_bool(cJSON *root, const char *name,
    ngx_uint_t *out, ngx_http_sparsegate_fault_t *f)
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
ngx_http_sparsegate_parse_stop(ngx_http_request_t *r, cJSON *it,
    ngx_http_sparsegate_job_opts_t *o, ngx_http_sparsegate_fault_t *f)
{
    ngx_str_t  *s;

    if (!cJSON_IsString(it) || it->valuestring[0] == '\0') {
        return ngx_http_sparsegate_fault(f, NGX_HTTP_BAD_REQUEST,
                   NGX_HTTP_SG_ERR_BAD_REQUEST, "stop",
                   "every 'stop' entry must be a non-empty string");
    }

    s = &o->stops[o->n_stops];
    s->len = ngx_strlen(it->valuestring);
    s->data = ngx_pnalloc(r->pool, s->len);
    if (s->data == NULL) {
        return ngx_http_sparsegate_fault_oom(f);
    }
    ngx_memcpy(s->data, it->valuestring, s->len);
    o->n_stops++;
    return NGX_OK;
}


static ngx_int_t
ngx_http_sparsegate_parse_stops(ngx_http_request_t *r, cJSON *root,
    ngx_http_sparsegate_job_opts_t *o, ngx_http_sparsegate_fault_t *f)
{
    cJSON  *stop, *it;

    stop = cJSON_GetObjectItemCaseSensitive(root, "stop");
    if (stop == NULL || cJSON_IsNull(stop)) {
        return NGX_OK;
    }
    if (cJSON_IsString(stop)) {
        return ngx_http_sparsegate_parse_stop(r, stop, o, f);
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
        if (ngx_http_sparsegate_parse_stop(r, it, o, f) != NGX_OK) {
            return NGX_ERROR;
        }
    }
    return NGX_OK;
}


/* logit_bias: {"token id": bias from -100 to 100}. */
static ngx_int_t
ngx_http_sparsegate_parse_bias(ngx_http_request_t *r, cJSON *root,
    ngx_http_sparsegate_sampling_t *s, ngx_http_sparsegate_fault_t *f)
{
    char                             *end;
    long                              id;
    cJSON                            *lb, *it;
    ngx_uint_t                        n;
    ngx_http_sparsegate_main_conf_t  *smcf;

    smcf = ngx_http_get_module_main_conf(r, ngx_http_sparsegate_module);

    lb = cJSON_GetObjectItemCaseSensitive(root, "logit_bias");
    if (lb == NULL || cJSON_IsNull(lb)) {
        return NGX_OK;
    }
    n = cJSON_GetArraySize(lb);
    if (!cJSON_IsObject(lb) || n > 1024) {
        return ngx_http_sparsegate_fault(f, NGX_HTTP_BAD_REQUEST,
                   NGX_HTTP_SG_ERR_BAD_REQUEST, "logit_bias",
                   "'logit_bias' must be an object of up to 1024 token "
                   "ids and biases");
    }
    s->bias_ids = ngx_palloc(r->pool, (n + 1) * sizeof(int32_t));
    s->bias_values = ngx_palloc(r->pool, (n + 1) * sizeof(float));
    if (s->bias_ids == NULL || s->bias_values == NULL) {
        return ngx_http_sparsegate_fault_oom(f);
    }
    cJSON_ArrayForEach(it, lb) {
        id = strtol(it->string, &end, 10);
        if (*it->string == '\0' || *end != '\0' || id < 0
            || id >= smcf->vocab_size || !cJSON_IsNumber(it)
            || it->valuedouble < -100 || it->valuedouble > 100)
        {
            return ngx_http_sparsegate_fault(f, NGX_HTTP_BAD_REQUEST,
                       NGX_HTTP_SG_ERR_BAD_REQUEST, "logit_bias",
                       "logit_bias[\"%s\"]: a token id below %i with a "
                       "bias from -100 to 100", it->string,
                       smcf->vocab_size);
        }
        s->bias_ids[s->n_bias] = (int32_t) id;
        s->bias_values[s->n_bias++] = (float) it->valuedouble;
    }
    return NGX_OK;
}


/* logprobs: chat and rag: a boolean, with top_logprobs 0..20;
 * completions: the number of alternatives, 0..20. */
static ngx_int_t
ngx_http_sparsegate_parse_logprobs(cJSON *root,
    ngx_http_sparsegate_format_e format, ngx_http_sparsegate_sampling_t *s,
    ngx_http_sparsegate_fault_t *f)
{
    double      v;
    ngx_uint_t  present, flag;

    if (format == NGX_HTTP_SG_FMT_COMPLETION) {
        if (ngx_http_sparsegate_parse_number(root, "logprobs", 0,
                                             NGX_HTTP_SG_MAX_TOP, 1, &v,
                                             &present, f)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
        s->logprobs = present;
        s->top_logprobs = present ? (ngx_uint_t) v : 0;
        return NGX_OK;
    }

    flag = 0;
    if (ngx_http_sparsegate_parse_bool(root, "logprobs", &flag, f) != NGX_OK
        || ngx_http_sparsegate_parse_number(root, "top_logprobs", 0,
                                            NGX_HTTP_SG_MAX_TOP, 1, &v,
                                            &present, f)
           != NGX_OK)
    {
        return NGX_ERROR;
    }
    if (present && !flag) {
        return ngx_http_sparsegate_fault(f, NGX_HTTP_BAD_REQUEST,
                   NGX_HTTP_SG_ERR_BAD_REQUEST, "top_logprobs",
                   "'top_logprobs' needs 'logprobs': true");
    }
    s->logprobs = flag;
    s->top_logprobs = present ? (ngx_uint_t) v : 0;
    return NGX_OK;
}


/* sparsegate_script (sparsegate_test_hooks only): text, encoded with the
 * model's tokenizer, or token ids; the engine emits these tokens instead
 * of sampling. */
static ngx_int_t
ngx_http_sparsegate_parse_script(ngx_http_request_t *r, cJSON *root,
    ngx_http_sparsegate_sampling_t *s, ngx_http_sparsegate_fault_t *f)
{
    size_t                            n, i;
    cJSON                            *sc, *it;
    int32_t                          *ids;
    ngx_http_sparsegate_loc_conf_t   *slcf;
    ngx_http_sparsegate_main_conf_t  *smcf;

    slcf = ngx_http_get_module_loc_conf(r, ngx_http_sparsegate_module);
    smcf = ngx_http_get_module_main_conf(r, ngx_http_sparsegate_module);

    sc = cJSON_GetObjectItemCaseSensitive(root, "sparsegate_script");
    if (!slcf->test_hooks || sc == NULL || cJSON_IsNull(sc)) {
        return NGX_OK;
    }
    if (cJSON_IsString(sc)) {
        if (sg_tokenizer_encode(smcf->tokenizer, sc->valuestring,
                                ngx_strlen(sc->valuestring), 1, &ids, &n)
            != 0)
        {
            return ngx_http_sparsegate_fault_oom(f);
        }
        s->script = ngx_palloc(r->pool, (n + 1) * sizeof(int32_t));
        if (s->script != NULL) {
            ngx_memcpy(s->script, ids, n * sizeof(int32_t));
        }
        free(ids);
        s->n_script = n;
        return NGX_OK;
    }
    n = cJSON_GetArraySize(sc);
    s->script = ngx_palloc(r->pool, (n + 1) * sizeof(int32_t));
    if (!cJSON_IsArray(sc) || s->script == NULL) {
        return ngx_http_sparsegate_fault(f, NGX_HTTP_BAD_REQUEST,
                   NGX_HTTP_SG_ERR_BAD_REQUEST, "sparsegate_script",
                   "'sparsegate_script' must be a string or token ids");
    }
    i = 0;
    cJSON_ArrayForEach(it, sc) {
        if (!cJSON_IsNumber(it) || it->valuedouble < 0
            || it->valuedouble >= smcf->vocab_size)
        {
            return ngx_http_sparsegate_fault(f, NGX_HTTP_BAD_REQUEST,
                       NGX_HTTP_SG_ERR_BAD_REQUEST, "sparsegate_script",
                       "sparsegate_script[%uz] is not a token id", i);
        }
        s->script[i++] = (int32_t) it->valuedouble;
    }
    s->n_script = n;
    return NGX_OK;
}


/* The sampling fields beyond temperature and top_p. */
static ngx_int_t
ngx_http_sparsegate_parse_sampling(ngx_http_request_t *r, cJSON *root,
    ngx_http_sparsegate_format_e format, ngx_http_sparsegate_job_opts_t *o,
    ngx_http_sparsegate_fault_t *f)
{
    double                           v;
    ngx_uint_t                       present;
    ngx_http_sparsegate_sampling_t  *s = &o->sampling;

    if (format != NGX_HTTP_SG_FMT_RAG) {
        /* -1 and 0 are "off", as in vLLM */
        if (ngx_http_sparsegate_parse_number(root, "top_k", -1, 1e6, 1, &v,
                                             &present, f) != NGX_OK)
        {
            return NGX_ERROR;
        }
        s->top_k = present && v > 0 ? (ngx_int_t) v : 0;
    }
    if (ngx_http_sparsegate_parse_number(root, "min_p", 0, 1, 0, &v,
                                         &present, f) != NGX_OK)
    {
        return NGX_ERROR;
    }
    s->min_p = present ? (float) v : 0;
    if (ngx_http_sparsegate_parse_number(root, "presence_penalty", -2, 2, 0,
                                         &v, &present, f) != NGX_OK)
    {
        return NGX_ERROR;
    }
    s->presence_penalty = present ? (float) v : 0;
    if (ngx_http_sparsegate_parse_number(root, "frequency_penalty", -2, 2, 0,
                                         &v, &present, f) != NGX_OK)
    {
        return NGX_ERROR;
    }
    s->frequency_penalty = present ? (float) v : 0;
    if (ngx_http_sparsegate_parse_number(root, "repetition_penalty", 0.01,
                                         100, 0, &v, &present, f) != NGX_OK)
    {
        return NGX_ERROR;
    }
    s->repetition_penalty = present ? (float) v : 0;

    if (ngx_http_sparsegate_parse_bias(r, root, s, f) != NGX_OK
        || ngx_http_sparsegate_parse_logprobs(root, format, s, f) != NGX_OK
        || ngx_http_sparsegate_parse_script(r, root, s, f) != NGX_OK)
    {
        return NGX_ERROR;
    }
    return NGX_OK;
}


/*
 * The prefix cache's namespace: the tenant (the digest of the API key the
 * location accepted, so that no key can learn another's prompts from
 * cached_tokens) and the request's "cache_salt" (as vLLM offers: requests
 * share cached prefixes only with the same salt).  The bytes: 'k' and the
 * digest, or '-' without a key, then the salt; none at all (the shared
 * namespace) without a key or a salt.
 */
static ngx_int_t
ngx_http_sparsegate_parse_cache_salt(ngx_http_request_t *r, cJSON *root,
    ngx_http_sparsegate_job_opts_t *o, ngx_http_sparsegate_fault_t *f)
{
    u_char                     *p;
    size_t                      len;
    cJSON                      *salt;
    ngx_http_sparsegate_ctx_t  *ctx;

    salt = cJSON_GetObjectItemCaseSensitive(root, "cache_salt");
    if (salt != NULL && !cJSON_IsNull(salt)
        && (!cJSON_IsString(salt) || salt->valuestring[0] == '\0'
            || ngx_strlen(salt->valuestring) > NGX_HTTP_SG_MAX_CACHE_SALT))
    {
        return ngx_http_sparsegate_fault(f, NGX_HTTP_BAD_REQUEST,
                   NGX_HTTP_SG_ERR_BAD_REQUEST, "cache_salt",
                   "'cache_salt' must be a non-empty string of at most %d "
                   "bytes", NGX_HTTP_SG_MAX_CACHE_SALT);
    }
    len = cJSON_IsString(salt) ? ngx_strlen(salt->valuestring) : 0;

    ctx = ngx_http_get_module_ctx(r, ngx_http_sparsegate_module);
    if (len == 0 && (ctx == NULL || !ctx->keyed)) {
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, 1 + sizeof(ctx->tenant) + len);
    if (p == NULL) {
        return ngx_http_sparsegate_fault_oom(f);
    }
    o->sampling.cache_salt.data = p;
    if (ctx != NULL && ctx->keyed) {
        *p++ = 'k';
        p = ngx_cpymem(p, ctx->tenant, sizeof(ctx->tenant));
    } else {
        *p++ = '-';
    }
    p = ngx_cpymem(p, len ? salt->valuestring : "", len);
    o->sampling.cache_salt.len = p - o->sampling.cache_salt.data;
    return NGX_OK;
}


ngx_int_t
ngx_http_sparsegate_parse_job_opts(ngx_http_request_t *r, cJSON *root,
    ngx_http_sparsegate_format_e format, ngx_http_sparsegate_job_opts_t *o,
    ngx_http_sparsegate_fault_t *f)
{
    static const char *const         stream_fields[] = { "include_usage",
                                                         NULL };
    double                           v;
    cJSON                           *so;
    ngx_uint_t                       present, flag;
    ngx_http_sparsegate_loc_conf_t  *slcf;

    slcf = ngx_http_get_module_loc_conf(r, ngx_http_sparsegate_module);

    ngx_memzero(o, sizeof(ngx_http_sparsegate_job_opts_t));
    o->format = format;
    o->sampling.temperature = 1.0f;
    o->sampling.top_p = 1.0f;
    o->sampling.seed = ((uint64_t) ngx_random() << 32)
                       ^ (uint64_t) ngx_random();
    o->sampling.max_tokens = -1;

    if (ngx_http_sparsegate_parse_number(root, "temperature", 0, 2, 0, &v,
                                         &present, f) != NGX_OK)
    {
        return NGX_ERROR;
    }
    if (present) {
        o->sampling.temperature = (float) v;
    }

    if (ngx_http_sparsegate_parse_number(root, "top_p", 0, 1, 0, &v,
                                         &present, f) != NGX_OK)
    {
        return NGX_ERROR;
    }
    if (present) {
        if (v <= 0) {
            return ngx_http_sparsegate_fault(f, NGX_HTTP_BAD_REQUEST,
                       NGX_HTTP_SG_ERR_BAD_REQUEST, "top_p",
                       "'top_p' must be greater than 0");
        }
        o->sampling.top_p = (float) v;
    }

    if (ngx_http_sparsegate_parse_number(root, "seed", -9.2e18, 9.2e18, 1,
                                         &v, &present, f) != NGX_OK)
    {
        return NGX_ERROR;
    }
    if (present) {
        o->sampling.seed = (uint64_t) (int64_t) v;
    }

    if (ngx_http_sparsegate_parse_number(root, "n", 1, NGX_HTTP_SG_MAX_CHOICES,
                                         1, &v, &present, f) != NGX_OK)
    {
        return NGX_ERROR;
    }
    o->n = present ? (ngx_uint_t) v : 1;

    if (ngx_http_sparsegate_parse_sampling(r, root, format, o, f) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (ngx_http_sparsegate_parse_number(root, "max_completion_tokens", 1,
                                         1e9, 1, &v, &present, f) != NGX_OK)
    {
        return NGX_ERROR;
    }
    if (!present
        && ngx_http_sparsegate_parse_number(root, "max_tokens", 1, 1e9, 1,
                                            &v, &present, f) != NGX_OK)
    {
        return NGX_ERROR;
    }
    if (present) {
        if (v > slcf->max_tokens) {
            return ngx_http_sparsegate_fault(f, NGX_HTTP_BAD_REQUEST,
                       NGX_HTTP_SG_ERR_BAD_REQUEST, "max_tokens",
                       "max_tokens %.0f is over this server's limit of %i "
                       "(sparsegate_max_tokens)", v, slcf->max_tokens);
        }
        o->sampling.max_tokens = (ngx_int_t) v;
    }

    flag = 0;
    if (ngx_http_sparsegate_parse_bool(root, "stream", &flag, f) != NGX_OK) {
        return NGX_ERROR;
    }
    o->stream = flag;

    so = cJSON_GetObjectItemCaseSensitive(root, "stream_options");
    if (so != NULL && !cJSON_IsNull(so)) {
        if (!cJSON_IsObject(so) || !o->stream) {
            return ngx_http_sparsegate_fault(f, NGX_HTTP_BAD_REQUEST,
                       NGX_HTTP_SG_ERR_BAD_REQUEST, "stream_options",
                       "'stream_options' must be an object, and is only "
                       "allowed when 'stream' is true");
        }
        if (ngx_http_sparsegate_check_fields(r, so, stream_fields,
                                             "stream_options.", f)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
        flag = 0;
        if (ngx_http_sparsegate_parse_bool(so, "include_usage", &flag, f)
            != NGX_OK)
        {
            f->param = "stream_options.include_usage";
            return NGX_ERROR;
        }
        o->include_usage = flag;
    }

    flag = 0;
    if (ngx_http_sparsegate_parse_bool(root, "ignore_eos", &flag, f)
        != NGX_OK)
    {
        return NGX_ERROR;
    }
    o->sampling.ignore_eos = flag;

    if (ngx_http_sparsegate_parse_stops(r, root, o, f) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_http_sparsegate_parse_cache_salt(r, root, o, f) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_log_debug5(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "sparsegate params: max_tokens %i, temperature %.2f, "
                   "stream %ui, %ui stop strings, seed %uL",
                   o->sampling.max_tokens, (double) o->sampling.temperature,
                   (ngx_uint_t) o->stream, o->n_stops, o->sampling.seed);

    return NGX_OK;
}


ngx_int_t
ngx_http_sparsegate_parse_ids(ngx_http_request_t *r, cJSON *prompt,
    const char *name, int32_t **out, size_t *n_out,
    ngx_http_sparsegate_fault_t *f)
{
    size_t                            n, i;
    cJSON                            *it;
    int32_t                          *ids;
    ngx_int_t                         vocab;
    ngx_http_sparsegate_main_conf_t  *smcf;

    smcf = ngx_http_get_module_main_conf(r, ngx_http_sparsegate_module);
    vocab = smcf->vocab_size;

    n = cJSON_GetArraySize(prompt);
    ids = malloc((n + 1) * sizeof(int32_t));
    if (ids == NULL) {
        return ngx_http_sparsegate_fault_oom(f);
    }

    i = 0;
    cJSON_ArrayForEach(it, prompt) {
        if (!cJSON_IsNumber(it) || it->valuedouble < 0
            || it->valuedouble >= vocab
            || it->valuedouble != (double) (int) it->valuedouble)
        {
            free(ids);
            return ngx_http_sparsegate_fault(f, NGX_HTTP_BAD_REQUEST,
                       NGX_HTTP_SG_ERR_BAD_REQUEST, name,
                       "%s[%uz] is not a token id below the vocabulary "
                       "size %i", name, i, vocab);
        }
        ids[i++] = (int32_t) it->valuedouble;
    }

    *out = ids;
    *n_out = n;
    return NGX_OK;
}
