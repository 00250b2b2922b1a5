/*
 * GET /v1/collections: the store's collections, each with its number of
 * passages, so that a client (the page) can offer them to /v1/rag.  One
 * store query on the event loop, like a search.
 *
 *   {"object": "list",
 *    "data": [{"id": "man", "object": "collection", "passages": 210}]}
 */

#include <cjson/cJSON.h>

#include "ngx_http_sparsegate_endpoints.h"
#include "ngx_http_sparsegate_conf.h"
#include "ngx_http_sparsegate_errors.h"
#include "ngx_http_sparsegate_send.h"
#include "ngx_http_sparsegate_store.h"


typedef struct {
    ngx_http_request_t           *request;
    ngx_http_sparsegate_query_t   query;
} ngx_http_sparsegate_collections_t;


static void
ngx_http_sparsegate_collections_cleanup(void *data)
{
    ngx_http_sparsegate_collections_t *c = data;

    ngx_http_sparsegate_query_close(&c->query);
}


/* The finished query's answer: the list, or the store's error. */
static ngx_int_t
ngx_http_sparsegate_collections_answer(ngx_http_sparsegate_collections_t *c)
{
    int               code;
    char              err[256];
    cJSON            *root, *data, *o;
    size_t            i;
    ngx_int_t         rc;
    sg_passage_list   list;

    ngx_memzero(&list, sizeof(sg_passage_list));
    code = ngx_http_sparsegate_query_result(&c->query, &list, err,
                                            sizeof(err));
    if (code != SG_STORE_OK) {
        sg_passage_list_free(&list);
        return ngx_http_sparsegate_error(c->request,
                   sg_store_http_status(code),
                   ngx_http_sparsegate_store_error_kind(code),
                   NULL, "store (%s): %s", sg_store_strerror(code), err);
    }

    root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "object", "list");
    data = cJSON_AddArrayToObject(root, "data");
    for (i = 0; data != NULL && i < list.n; i++) {
        o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "id", list.v[i].collection);
        cJSON_AddStringToObject(o, "object", "collection");
        cJSON_AddNumberToObject(o, "passages", list.v[i].score);
        cJSON_AddItemToArray(data, o);
    }
    sg_passage_list_free(&list);

    rc = ngx_http_sparsegate_send_json(c->request, NGX_HTTP_OK, root);
    cJSON_Delete(root);
    return rc;
}


static void
ngx_http_sparsegate_collections_done(void *data)
{
    ngx_http_sparsegate_collections_t *c = data;

    ngx_http_sparsegate_finalize(c->request,
                                 ngx_http_sparsegate_collections_answer(c));
}


ngx_int_t
ngx_http_sparsegate_collections(ngx_http_request_t *r)
{
    int                                 code;
    char                                err[256];
    ngx_int_t                           rc;
    ngx_pool_cleanup_t                 *cln;
    ngx_http_sparsegate_collections_t  *c;

    if (ngx_http_sparsegate_store() == NULL) {
        return ngx_http_sparsegate_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                   NGX_HTTP_SG_ERR_STORE, NULL,
                   "no passage store: set sparsegate_store");
    }

    cln = ngx_pool_cleanup_add(r->pool,
                               sizeof(ngx_http_sparsegate_collections_t));
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    c = cln->data;
    ngx_memzero(c, sizeof(ngx_http_sparsegate_collections_t));
    c->request = r;
    cln->handler = ngx_http_sparsegate_collections_cleanup;

    code = sg_astore_collections(ngx_http_sparsegate_store(),
                                 &c->query.query, err, sizeof(err));
    if (code != SG_STORE_OK) {
        /* a full pool too: the client asks again (Retry-After) */
        return ngx_http_sparsegate_error(r, sg_store_http_status(code),
                   ngx_http_sparsegate_store_error_kind(code), NULL,
                   "store: %s", err);
    }

    rc = ngx_http_sparsegate_query_wait(&c->query, r,
                                        ngx_http_sparsegate_collections_done,
                                        c);
    if (rc == NGX_OK) {
        return ngx_http_sparsegate_collections_answer(c);
    }
    if (rc == NGX_ERROR) {
        return ngx_http_sparsegate_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                   NGX_HTTP_SG_ERR_STORE, NULL,
                   "cannot watch the store connection");
    }

    /* answered when the query is done; a client that leaves meanwhile
     * ends the request, and the cleanup abandons the query */
    r->read_event_handler = ngx_http_test_reading;
    r->main->count++;
    return NGX_DONE;
}
