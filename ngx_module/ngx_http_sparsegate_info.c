/*
 * The GET endpoints: /v1/models, /v1/models/{model}, /health and /metrics
 * (Prometheus text).
 */

#include <cjson/cJSON.h>

#include "ngx_http_sparsegate_endpoints.h"
#include "ngx_http_sparsegate_conf.h"
#include "ngx_http_sparsegate_counters.h"
#include "ngx_http_sparsegate_engine.h"
#include "ngx_http_sparsegate_errors.h"
#include "ngx_http_sparsegate_send.h"


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
        cJSON_AddItemToArray(data, ngx_http_sparsegate_model_object(r));
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


ngx_int_t
ngx_http_sparsegate_health(ngx_http_request_t *r)
{
    u_char       buf[512];
    size_t       n;
    const char  *reason;

    static u_char  ok[] = "{\"status\":\"ok\"}\n";

    reason = ngx_http_sparsegate_engine_unavailable();
    if (reason == NULL) {
        return ngx_http_sparsegate_send_text(r, NGX_HTTP_OK,
                                             "application/json", ok,
                                             sizeof(ok) - 1);
    }

    n = ngx_snprintf(buf, sizeof(buf),
                     "{\"status\":\"unavailable\",\"reason\":\"%s\"}\n",
                     reason) - buf;
    return ngx_http_sparsegate_send_text(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                         "application/json", buf, n);
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
