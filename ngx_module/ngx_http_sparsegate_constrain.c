/*
 * response_format and tool_choice into grammars, kept per worker.
 */

#include "ngx_http_sparsegate_constrain.h"
#include "ngx_http_sparsegate_conf.h"
#include "ngx_http_sparsegate_params.h"


#define NGX_HTTP_SG_GRAMMARS  16


typedef struct {
    char        *key;           /* malloc'ed */
    sg_grammar  *grammar;
    ngx_uint_t   used;          /* when last used (a counter) */
} ngx_http_sparsegate_kept_t;


static void ngx_http_sparsegate_grammar_cleanup(void *data);


static sg_vocab                    *ngx_http_sparsegate_vocab;
static char                         ngx_http_sparsegate_vocab_err[256];
static ngx_http_sparsegate_kept_t   ngx_http_sparsegate_kept[
                                        NGX_HTTP_SG_GRAMMARS];
static ngx_uint_t                   ngx_http_sparsegate_uses;


ngx_int_t
ngx_http_sparsegate_parse_response_format(ngx_http_request_t *r, cJSON *root,
    ngx_http_sparsegate_rformat_t *rf, ngx_http_sparsegate_fault_t *f)
{
    static const char *const  rf_fields[] = { "type", "json_schema", NULL };
    static const char *const  js_fields[] = { "name", "schema", "strict",
                                              "description", NULL };
    char                     *text;
    size_t                    len;
    cJSON                    *it, *type, *js, *schema, *name;

    ngx_memzero(rf, sizeof(ngx_http_sparsegate_rformat_t));
    it = cJSON_GetObjectItemCaseSensitive(root, "response_format");
    if (it == NULL || cJSON_IsNull(it)) {
        return NGX_OK;
    }
    type = cJSON_GetObjectItemCaseSensitive(it, "type");
    if (!cJSON_IsObject(it) || !cJSON_IsString(type)) {
        return ngx_http_sparsegate_fault(f, NGX_HTTP_BAD_REQUEST,
                   NGX_HTTP_SG_ERR_BAD_REQUEST, "response_format",
                   "'response_format' must be {\"type\": \"text\" | "
                   "\"json_object\" | \"json_schema\", ...}");
    }
    if (ngx_http_sparsegate_check_fields(r, it, rf_fields,
                                         "response_format.", f)
        != NGX_OK)
    {
        return NGX_ERROR;
    }
    if (ngx_strcmp(type->valuestring, "text") == 0) {
        return NGX_OK;
    }
    if (ngx_strcmp(type->valuestring, "json_object") == 0) {
        rf->json = 1;
        return NGX_OK;
    }
    if (ngx_strcmp(type->valuestring, "json_schema") != 0) {
        return ngx_http_sparsegate_fault(f, NGX_HTTP_BAD_REQUEST,
                   NGX_HTTP_SG_ERR_BAD_REQUEST, "response_format.type",
                   "response_format.type must be \"text\", \"json_object\" "
                   "or \"json_schema\"");
    }
    js = cJSON_GetObjectItemCaseSensitive(it, "json_schema");
    schema = cJSON_GetObjectItemCaseSensitive(js, "schema");
    name = cJSON_GetObjectItemCaseSensitive(js, "name");
    if (!cJSON_IsObject(js) || !cJSON_IsString(name)
        || !cJSON_IsObject(schema))
    {
        return ngx_http_sparsegate_fault(f, NGX_HTTP_BAD_REQUEST,
                   NGX_HTTP_SG_ERR_BAD_REQUEST, "response_format.json_schema",
                   "response_format.json_schema needs a \"name\" and a "
                   "\"schema\" object");
    }
    if (ngx_http_sparsegate_check_fields(r, js, js_fields,
                                         "response_format.json_schema.", f)
        != NGX_OK)
    {
        return NGX_ERROR;
    }
    text = cJSON_PrintUnformatted(schema);
    if (text == NULL) {
        return ngx_http_sparsegate_fault_oom(f);
    }
    len = ngx_strlen(text);
    rf->schema = ngx_pnalloc(r->pool, len + 1);
    if (rf->schema != NULL) {
        ngx_memcpy(rf->schema, text, len + 1);
    }
    free(text);
    rf->json = 1;
    return rf->schema ? NGX_OK
           : ngx_http_sparsegate_fault_oom(f);
}


void
ngx_http_sparsegate_constrain_init_process(ngx_cycle_t *cycle,
    ngx_http_sparsegate_main_conf_t *smcf)
{
    char  err[256];

    ngx_http_sparsegate_vocab = sg_vocab_new(smcf->tokenizer,
                                             (int) smcf->vocab_size, err,
                                             sizeof(err));
    if (ngx_http_sparsegate_vocab == NULL) {
        ngx_snprintf((u_char *) ngx_http_sparsegate_vocab_err,
                     sizeof(ngx_http_sparsegate_vocab_err), "%s%Z", err);
        ngx_log_error(NGX_LOG_ERR, cycle->log, 0,
                      "sparsegate: no constrained decoding: %s", err);
    }
}


/* The worker's vocabulary (sorted when it started). */
static const sg_vocab *
ngx_http_sparsegate_the_vocab(ngx_http_sparsegate_fault_t *f)
{
    if (ngx_http_sparsegate_vocab == NULL) {
        ngx_http_sparsegate_fault(f, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                  NGX_HTTP_SG_ERR_ENGINE, NULL,
                                  "constrained decoding: %s",
                                  ngx_http_sparsegate_vocab_err[0]
                                  ? ngx_http_sparsegate_vocab_err
                                  : "no tokenizer");
    }
    return ngx_http_sparsegate_vocab;
}


/* A grammar kept under key, or a new one compiled and kept. */
static sg_grammar *
ngx_http_sparsegate_kept_grammar(ngx_http_request_t *r, const char *key,
    const ngx_http_sparsegate_rformat_t *rf, const char *tools,
    const char *named, ngx_uint_t parallel, ngx_uint_t thinking,
    ngx_http_sparsegate_fault_t *f)
{
    char                         err[512];
    sg_grammar                  *g;
    ngx_uint_t                   i, oldest;
    const sg_vocab              *v;
    sg_grammar_opts              o;
    ngx_http_sparsegate_kept_t  *k;

    oldest = 0;
    for (i = 0; i < NGX_HTTP_SG_GRAMMARS; i++) {
        k = &ngx_http_sparsegate_kept[i];
        if (k->key != NULL && ngx_strcmp(k->key, key) == 0) {
            k->used = ++ngx_http_sparsegate_uses;
            return sg_grammar_ref(k->grammar);
        }
        if (k->used < ngx_http_sparsegate_kept[oldest].used) {
            oldest = i;
        }
    }

    v = ngx_http_sparsegate_the_vocab(f);
    if (v == NULL) {
        return NULL;
    }
    o.gate = thinking ? "</think>" : NULL;
    err[0] = '\0';
    if (rf != NULL) {
        g = sg_grammar_json(v, rf->schema,
                            rf->schema ? ngx_strlen(rf->schema) : 0, &o, err,
                            sizeof(err));
    } else {
        g = sg_grammar_tool_calls(v, tools, ngx_strlen(tools), named,
                                  (int) parallel, &o, err, sizeof(err));
    }
    if (g == NULL) {
        /* the schema's errors name a path below it */
        (void) ngx_http_sparsegate_fault(f, NGX_HTTP_BAD_REQUEST,
                   NGX_HTTP_SG_ERR_BAD_REQUEST,
                   rf ? "response_format" : "tools", "%s%s%s",
                   rf ? "response_format.json_schema.schema" : "",
                   rf && err[0] != '.' ? ": " : "", err);
        return NULL;
    }

    k = &ngx_http_sparsegate_kept[oldest];
    free(k->key);
    sg_grammar_unref(k->grammar);
    k->key = strdup(key);
    k->grammar = k->key ? sg_grammar_ref(g) : NULL;
    k->used = ++ngx_http_sparsegate_uses;
    return g;
}


ngx_int_t
ngx_http_sparsegate_grammar(ngx_http_request_t *r,
    const ngx_http_sparsegate_rformat_t *rf, const char *tools,
    ngx_uint_t must_call, const char *named, ngx_uint_t parallel,
    ngx_uint_t thinking, sg_grammar **out, ngx_http_sparsegate_fault_t *f)
{
    u_char              *key, *p;
    size_t               len;
    ngx_pool_cleanup_t  *cln;

    *out = NULL;
    if (rf->json && tools != NULL && must_call) {
        return ngx_http_sparsegate_fault(f, NGX_HTTP_BAD_REQUEST,
                   NGX_HTTP_SG_ERR_BAD_REQUEST, "response_format",
                   "'response_format' asks for JSON and 'tool_choice' for "
                   "a tool call: the output cannot be both");
    }
    if (!rf->json && !(tools != NULL && must_call)) {
        return NGX_OK;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return ngx_http_sparsegate_fault_oom(f);
    }

    /* what the grammar depends on, as its key */
    len = 32 + (rf->schema ? ngx_strlen(rf->schema) : 0)
          + (tools ? ngx_strlen(tools) : 0) + (named ? ngx_strlen(named) : 0);
    key = ngx_pnalloc(r->pool, len);
    if (key == NULL) {
        return ngx_http_sparsegate_fault_oom(f);
    }
    if (rf->json) {
        p = ngx_sprintf(key, "json|%ui|%s", thinking,
                        rf->schema ? rf->schema : "");
    } else {
        p = ngx_sprintf(key, "calls|%ui|%ui|%s|%s", thinking, parallel,
                        named ? named : "", tools);
    }
    *p = '\0';

    *out = ngx_http_sparsegate_kept_grammar(r, (char *) key,
                                            rf->json ? rf : NULL, tools,
                                            named, parallel, thinking, f);
    if (*out == NULL) {
        return NGX_ERROR;
    }
    cln->handler = ngx_http_sparsegate_grammar_cleanup;
    cln->data = *out;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "sparsegate constrain: %s, at least %d bytes",
                   rf->json ? "JSON" : "tool calls",
                   sg_grammar_min_bytes(*out));
    return NGX_OK;
}


static void
ngx_http_sparsegate_grammar_cleanup(void *data)
{
    sg_grammar_unref(data);
}


void
ngx_http_sparsegate_constrain_exit_process(void)
{
    ngx_uint_t  i;

    for (i = 0; i < NGX_HTTP_SG_GRAMMARS; i++) {
        free(ngx_http_sparsegate_kept[i].key);
        sg_grammar_unref(ngx_http_sparsegate_kept[i].grammar);
        ngx_http_sparsegate_kept[i].key = NULL;
        ngx_http_sparsegate_kept[i].grammar = NULL;
    }
    sg_vocab_free(ngx_http_sparsegate_vocab);
    ngx_http_sparsegate_vocab = NULL;
}
