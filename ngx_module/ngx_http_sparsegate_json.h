/*
 * cJSON's allocations through the module: cJSON answers the same NULL for
 * malformed JSON as for a parse that ran out of memory, and a builder's
 * cJSON_Add* calls that cannot allocate quietly add nothing; a count of
 * the failed allocations tells both apart.
 */
#ifndef NGX_HTTP_SPARSEGATE_JSON_H
#define NGX_HTTP_SPARSEGATE_JSON_H

#include <ngx_config.h>
#include <ngx_core.h>

#include <cjson/cJSON.h>


/* The worker's start: cJSON's allocations go through the module. */
void ngx_http_sparsegate_json_init(void);
/* Allocations cJSON could not have, so far (compare before and after). */
ngx_uint_t ngx_http_sparsegate_json_failures(void);
/* An item into an object or an array; one that cannot be added (out of
 * memory, or no container) is freed and counted as a failure. */
void ngx_http_sparsegate_json_add(cJSON *object, const char *key,
    cJSON *item);
void ngx_http_sparsegate_json_push(cJSON *array, cJSON *item);

#endif /* NGX_HTTP_SPARSEGATE_JSON_H */
