/*
 * cJSON's allocations, counted when they fail.
 */

#include <cjson/cJSON.h>

#include "ngx_http_sparsegate_json.h"


static ngx_uint_t  ngx_http_sparsegate_json_failed;


static void *
ngx_http_sparsegate_json_alloc(size_t size)
{
    void  *p;

    p = malloc(size);
    if (p == NULL) {
        ngx_http_sparsegate_json_failed++;
    }
    return p;
}


static void
ngx_http_sparsegate_json_free(void *p)
{
    free(p);
}


void
ngx_http_sparsegate_json_init(void)
{
    cJSON_Hooks  hooks;

    hooks.malloc_fn = ngx_http_sparsegate_json_alloc;
    hooks.free_fn = ngx_http_sparsegate_json_free;
    cJSON_InitHooks(&hooks);
}


ngx_uint_t
ngx_http_sparsegate_json_failures(void)
{
    return ngx_http_sparsegate_json_failed;
}


void
ngx_http_sparsegate_json_add(cJSON *object, const char *key, cJSON *item)
{
    /* cJSON leaves an item it could not add (no memory for the key, or
     * no object) to the caller */
    if (item != NULL
        && (object == NULL || !cJSON_AddItemToObject(object, key, item)))
    {
        cJSON_Delete(item);
        ngx_http_sparsegate_json_failed++;
    }
}


void
ngx_http_sparsegate_json_push(cJSON *array, cJSON *item)
{
    if (item != NULL && (array == NULL || !cJSON_AddItemToArray(array, item)))
    {
        cJSON_Delete(item);
        ngx_http_sparsegate_json_failed++;
    }
}
