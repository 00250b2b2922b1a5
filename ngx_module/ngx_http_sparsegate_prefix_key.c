/*
 * $sparsegate_prefix_key: which part of a request's prompt other requests
 * are likely to share, as a 16-hex-digit hash, so that an nginx in front
 * of several gateways can send requests that share a prefix to the same
 * gateway, where its KV is cached:
 *
 *   upstream gateways {
 *       hash $sparsegate_prefix_key consistent;
 *       server 10.0.0.1:8080;
 *       server 10.0.0.2:8080;
 *   }
 *
 * nginx evaluates the key when it picks the upstream, after it has read
 * the request body (proxy_request_buffering on, the default).  The key:
 *   /v1/rag            the collection, the doc_ids and the filter: what
 *                      decides the shared block of passages (retrieval's
 *                      context builder puts it first);
 *   chat messages      the system messages when they are long (at least
 *                      NGX_HTTP_SG_KEY_LONG bytes: documents, worth a
 *                      cache), else the system messages and the first user
 *                      message: one conversation keeps its gateway turn
 *                      after turn, and different conversations under one
 *                      short system prompt still spread;
 *   a prompt           its first NGX_HTTP_SG_KEY_LONG bytes;
 * each text counted up to NGX_HTTP_SG_KEY_LONG bytes.  A request with no
 * body or no such field gets a key of its connection (requests spread as
 * with round robin).
 */

#include "ngx_http_sparsegate_prefix_key.h"
#include "ngx_http_sparsegate_params.h"

#include <cjson/cJSON.h>


#define NGX_HTTP_SG_KEY_LONG  4096


static ngx_int_t ngx_http_sparsegate_prefix_key_get(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);


static ngx_str_t  ngx_http_sparsegate_prefix_key_name =
    ngx_string("sparsegate_prefix_key");


ngx_int_t
ngx_http_sparsegate_prefix_key_add(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var;

    var = ngx_http_add_variable(cf, &ngx_http_sparsegate_prefix_key_name, 0);
    if (var == NULL) {
        return NGX_ERROR;
    }
    var->get_handler = ngx_http_sparsegate_prefix_key_get;

    return NGX_OK;
}


/* FNV-1a, 64 bits, over what the key covers. */
static void
ngx_http_sparsegate_key_add(uint64_t *h, const char *s, size_t max)
{
    size_t  i;

    for (i = 0; s && s[i] && i < max; i++) {
        *h = (*h ^ (u_char) s[i]) * 0x100000001b3ULL;
    }
    /* a separator, so that ("ab", "c") and ("a", "bc") differ */
    *h = (*h ^ 0x1f) * 0x100000001b3ULL;
}


/* A message's content: a string, or text parts; returns its length. */
static size_t
ngx_http_sparsegate_key_content(uint64_t *h, cJSON *content)
{
    size_t   len;
    cJSON   *part, *text;

    if (cJSON_IsString(content)) {
        ngx_http_sparsegate_key_add(h, content->valuestring,
                                    NGX_HTTP_SG_KEY_LONG);
        return ngx_strlen(content->valuestring);
    }

    len = 0;
    cJSON_ArrayForEach(part, content) {
        text = cJSON_GetObjectItemCaseSensitive(part, "text");
        if (cJSON_IsString(text) && len < NGX_HTTP_SG_KEY_LONG) {
            ngx_http_sparsegate_key_add(h, text->valuestring,
                                        NGX_HTTP_SG_KEY_LONG - len);
            len += ngx_strlen(text->valuestring);
        }
    }
    return len;
}


static int
ngx_http_sparsegate_key_is(cJSON *m, const char *role)
{
    cJSON  *r = cJSON_GetObjectItemCaseSensitive(m, "role");

    return cJSON_IsString(r) && ngx_strcmp(r->valuestring, role) == 0;
}


/* The key of a chat request; 0 when it has no messages. */
static ngx_int_t
ngx_http_sparsegate_key_chat(uint64_t *h, cJSON *messages)
{
    size_t   sys;
    cJSON   *m;

    if (!cJSON_IsArray(messages) || cJSON_GetArraySize(messages) == 0) {
        return 0;
    }

    ngx_http_sparsegate_key_add(h, "chat", 8);
    sys = 0;
    cJSON_ArrayForEach(m, messages) {
        if (ngx_http_sparsegate_key_is(m, "system")) {
            sys += ngx_http_sparsegate_key_content(h,
                       cJSON_GetObjectItemCaseSensitive(m, "content"));
        }
    }
    if (sys >= NGX_HTTP_SG_KEY_LONG) {
        return 1;
    }
    cJSON_ArrayForEach(m, messages) {
        if (ngx_http_sparsegate_key_is(m, "user")) {
            ngx_http_sparsegate_key_content(h,
                cJSON_GetObjectItemCaseSensitive(m, "content"));
            break;
        }
    }
    return 1;
}


/* The key of a /v1/rag request; 0 when it names no collection. */
static ngx_int_t
ngx_http_sparsegate_key_rag(uint64_t *h, cJSON *root)
{
    char   *filter;
    cJSON  *collection, *ids, *id;

    collection = cJSON_GetObjectItemCaseSensitive(root, "collection");
    if (!cJSON_IsString(collection)) {
        return 0;
    }

    ngx_http_sparsegate_key_add(h, "rag", 8);
    ngx_http_sparsegate_key_add(h, collection->valuestring, (size_t) -1);

    ids = cJSON_GetObjectItemCaseSensitive(root, "doc_ids");
    cJSON_ArrayForEach(id, ids) {
        if (cJSON_IsString(id)) {
            ngx_http_sparsegate_key_add(h, id->valuestring, (size_t) -1);
        }
    }

    filter = cJSON_PrintUnformatted(
                 cJSON_GetObjectItemCaseSensitive(root, "filter"));
    if (filter) {
        ngx_http_sparsegate_key_add(h, filter, (size_t) -1);
        cJSON_free(filter);
    }
    return 1;
}


static ngx_int_t
ngx_http_sparsegate_prefix_key_get(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char    *body, *p;
    size_t     len;
    uint64_t   h;
    cJSON     *root, *prompt;
    ngx_int_t  found;

    h = 0xcbf29ce484222325ULL;
    found = 0;
    root = NULL;

    if (ngx_http_sparsegate_read_body(r, &body, &len) == NGX_OK && len > 0) {
        root = cJSON_ParseWithLength((char *) body, len);
    }

    if (cJSON_IsObject(root)) {
        prompt = cJSON_GetObjectItemCaseSensitive(root, "prompt");
        found = ngx_http_sparsegate_key_rag(&h, root)
                || ngx_http_sparsegate_key_chat(&h,
                       cJSON_GetObjectItemCaseSensitive(root, "messages"));
        if (!found && cJSON_IsString(prompt)) {
            ngx_http_sparsegate_key_add(&h, "prompt", 8);
            ngx_http_sparsegate_key_add(&h, prompt->valuestring,
                                        NGX_HTTP_SG_KEY_LONG);
            found = 1;
        }
    }
    cJSON_Delete(root);

    if (!found) {
        /* nothing shared to follow: spread like round robin */
        h = (uint64_t) r->connection->number * 0x9e3779b97f4a7c15ULL
            + r->connection->requests;
    }

    p = ngx_pnalloc(r->pool, 16);
    if (p == NULL) {
        return NGX_ERROR;
    }
    v->len = ngx_sprintf(p, "%016uxL", h) - p;
    v->data = p;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_OK;
}
