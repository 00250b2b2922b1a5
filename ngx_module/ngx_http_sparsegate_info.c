/*
 * The GET endpoints: /v1/models, /v1/models/{model}, /health and /metrics
 * (Prometheus text).
 */

#include <cjson/cJSON.h>

#include "ngx_http_sparsegate_endpoints.h"
#include "ngx_http_sparsegate_json.h"
#include "ngx_http_sparsegate_conf.h"
#include "ngx_http_sparsegate_counters.h"
#include "ngx_http_sparsegate_engine.h"
#include "ngx_http_sparsegate_errors.h"
#include "ngx_http_sparsegate_send.h"
#include "ngx_http_sparsegate_store.h"


static cJSON *
ngx_http_sparsegate_model_object(ngx_http_request_t *r)
{
    cJSON                            *m;
    ngx_http_sparsegate_main_conf_t  *smcf;

    smcf = ngx_http_get_module_main_conf(r, ngx_http_sparsegate_module);

    m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "id", (char *) smcf->model_name.data);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", (double) ngx_cached_time->sec);
    cJSON_AddStringToObject(m, "owned_by", "sparsegate");
    return m;
}


ngx_int_t
ngx_http_sparsegate_models(ngx_http_request_t *r)
{
    cJSON                            *root, *data;
    ngx_int_t                         rc;
    ngx_http_sparsegate_main_conf_t  *smcf;

    smcf = ngx_http_get_module_main_conf(r, ngx_http_sparsegate_module);

    root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "object", "list");
    data = cJSON_AddArrayToObject(root, "data");
    if (smcf->model_name.len > 0) {
        ngx_http_sparsegate_json_push(data,
                                      ngx_http_sparsegate_model_object(r));
    }

    rc = ngx_http_sparsegate_send_json(r, NGX_HTTP_OK, root);
    cJSON_Delete(root);
    return rc;
}


/* The model named by what follows the location's prefix (a location such
 * as "location ^~ /v1/models/"). */
ngx_int_t
ngx_http_sparsegate_model(ngx_http_request_t *r)
{
    cJSON                            *m;
    ngx_str_t                         id, *name;
    ngx_int_t                         rc;
    ngx_http_core_loc_conf_t         *clcf;
    ngx_http_sparsegate_main_conf_t  *smcf;

    smcf = ngx_http_get_module_main_conf(r, ngx_http_sparsegate_module);
    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);
    name = &smcf->model_name;

    id.data = r->uri.data + ngx_min(clcf->name.len, r->uri.len);
    id.len = r->uri.data + r->uri.len - id.data;

    if (id.len != name->len || ngx_strncmp(id.data, name->data, id.len) != 0)
    {
        return ngx_http_sparsegate_error(r, NGX_HTTP_NOT_FOUND,
                   NGX_HTTP_SG_ERR_NOT_FOUND, "model",
                   "The model '%V' does not exist", &id);
    }

    m = ngx_http_sparsegate_model_object(r);
    rc = ngx_http_sparsegate_send_json(r, NGX_HTTP_OK, m);
    cJSON_Delete(m);
    return rc;
}


/* /health: whether the gateway can serve, and why not.  The engine's
 * state, and the store's from a probe (a listing of one passage) made now:
 * 200 {"status": "ok"} when both serve, else 503 {"status":
 * "unavailable", "reason": ...}; each part's own state besides. */

typedef struct {
    ngx_http_request_t           *request;
    ngx_http_sparsegate_query_t   probe;
} ngx_http_sparsegate_health_t;


static ngx_int_t
ngx_http_sparsegate_health_send(ngx_http_sparsegate_health_t *h,
    ngx_int_t probed)
{
    int                  code;
    char                 err[256];
    cJSON               *root, *engine, *stores, *st;
    ngx_int_t            rc;
    const char          *down, *reason;
    sg_passage_list      none;

    down = ngx_http_sparsegate_engine_unavailable();
    reason = down;

    code = SG_STORE_OK;
    if (probed == NGX_ERROR) {
        code = SG_STORE_EFAIL;
        ngx_cpystrn((u_char *) err, (u_char *) "cannot start a query",
                    sizeof(err));
    } else if (probed == NGX_OK && h->probe.query != NULL) {
        /* (none: every pooled connection was busy serving) */
        ngx_memzero(&none, sizeof(sg_passage_list));
        code = ngx_http_sparsegate_query_result(&h->probe, &none, err,
                                                sizeof(err));
        sg_passage_list_free(&none);
    }
    if (code != SG_STORE_OK && reason == NULL) {
        reason = err;
    }

    root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "status", reason ? "unavailable" : "ok");
    if (reason != NULL) {
        cJSON_AddStringToObject(root, "reason", reason);
    }

    engine = cJSON_AddObjectToObject(root, "engine");
    cJSON_AddStringToObject(engine, "status", down ? "down" : "ok");
    if (down != NULL) {
        cJSON_AddStringToObject(engine, "reason", down);
    }

    stores = cJSON_AddArrayToObject(root, "stores");
    if (probed != NGX_DECLINED) {
        st = cJSON_CreateObject();
        cJSON_AddStringToObject(st, "kind",
                                sg_astore_kind(ngx_http_sparsegate_store()));
        cJSON_AddStringToObject(st, "status",
                                code == SG_STORE_OK ? "ok" : "down");
        if (code != SG_STORE_OK) {
            cJSON_AddStringToObject(st, "reason", err);
        }
        if (!cJSON_AddItemToArray(stores, st)) {
            cJSON_Delete(st);
        }
    }

    rc = ngx_http_sparsegate_send_json(h->request,
                                       reason ? NGX_HTTP_SERVICE_UNAVAILABLE
                                              : NGX_HTTP_OK, root);
    cJSON_Delete(root);
    return rc;
}


static void
ngx_http_sparsegate_health_probed(void *data)
{
    ngx_http_sparsegate_health_t *h = data;

    ngx_http_sparsegate_finalize(h->request,
                                 ngx_http_sparsegate_health_send(h, NGX_OK));
}


static void
ngx_http_sparsegate_health_cleanup(void *data)
{
    ngx_http_sparsegate_health_t *h = data;

    ngx_http_sparsegate_query_close(&h->probe);
}


ngx_int_t
ngx_http_sparsegate_health(ngx_http_request_t *r)
{
    ngx_int_t                      rc;
    ngx_pool_cleanup_t            *cln;
    ngx_http_sparsegate_health_t  *h;

    cln = ngx_pool_cleanup_add(r->pool,
                               sizeof(ngx_http_sparsegate_health_t));
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    h = cln->data;
    ngx_memzero(h, sizeof(ngx_http_sparsegate_health_t));
    h->request = r;
    cln->handler = ngx_http_sparsegate_health_cleanup;

    rc = ngx_http_sparsegate_store_probe(&h->probe, r,
                                         ngx_http_sparsegate_health_probed,
                                         h);
    if (rc != NGX_AGAIN) {
        return ngx_http_sparsegate_health_send(h, rc);
    }

    /* answered by ngx_http_sparsegate_health_probed */
    r->main->count++;
    return NGX_DONE;
}


ngx_int_t
ngx_http_sparsegate_metrics(ngx_http_request_t *r)
{
    u_char  *text;
    size_t   len;

    ngx_http_sparsegate_engine_publish();

    text = ngx_http_sparsegate_counters_text(r->pool, &len);
    if (text == NULL) {
        return ngx_http_sparsegate_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                   NGX_HTTP_SG_ERR_ENGINE, NULL, "metrics are not set up");
    }

    return ngx_http_sparsegate_send_text(r, NGX_HTTP_OK,
                                         "text/plain; version=0.0.4",
                                         text, len);
}
