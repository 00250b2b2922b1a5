/*
 * Fault injection in test builds: the request's countdown, and nginx's
 * pool calls of the module routed through it.
 */

#include "ngx_http_sparsegate_fault.h"

#include "sg_fault.h"


#if (SG_FAULT_INJECTION)

static void ngx_http_sparsegate_fault_done(void *data);


/* nginx's allocations the module asks for, as the module's own: with
 * -Wl,--wrap=ngx_palloc the module's calls come here and __real_ngx_palloc
 * is nginx's */
void *__real_ngx_palloc(ngx_pool_t *pool, size_t size);
void *__real_ngx_pnalloc(ngx_pool_t *pool, size_t size);
void *__real_ngx_pcalloc(ngx_pool_t *pool, size_t size);
ngx_pool_cleanup_t *__real_ngx_pool_cleanup_add(ngx_pool_t *p, size_t size);
ngx_buf_t *__real_ngx_create_temp_buf(ngx_pool_t *pool, size_t size);
ngx_chain_t *__real_ngx_alloc_chain_link(ngx_pool_t *pool);

void *__wrap_ngx_palloc(ngx_pool_t *pool, size_t size);
void *__wrap_ngx_pnalloc(ngx_pool_t *pool, size_t size);
void *__wrap_ngx_pcalloc(ngx_pool_t *pool, size_t size);
ngx_pool_cleanup_t *__wrap_ngx_pool_cleanup_add(ngx_pool_t *p, size_t size);
ngx_buf_t *__wrap_ngx_create_temp_buf(ngx_pool_t *pool, size_t size);
ngx_chain_t *__wrap_ngx_alloc_chain_link(ngx_pool_t *pool);


void *
__wrap_ngx_palloc(ngx_pool_t *pool, size_t size)
{
    return sg_fault_hit() ? NULL : __real_ngx_palloc(pool, size);
}


void *
__wrap_ngx_pnalloc(ngx_pool_t *pool, size_t size)
{
    return sg_fault_hit() ? NULL : __real_ngx_pnalloc(pool, size);
}


void *
__wrap_ngx_pcalloc(ngx_pool_t *pool, size_t size)
{
    return sg_fault_hit() ? NULL : __real_ngx_pcalloc(pool, size);
}


ngx_pool_cleanup_t *
__wrap_ngx_pool_cleanup_add(ngx_pool_t *p, size_t size)
{
    return sg_fault_hit() ? NULL : __real_ngx_pool_cleanup_add(p, size);
}


ngx_buf_t *
__wrap_ngx_create_temp_buf(ngx_pool_t *pool, size_t size)
{
    return sg_fault_hit() ? NULL : __real_ngx_create_temp_buf(pool, size);
}


ngx_chain_t *
__wrap_ngx_alloc_chain_link(ngx_pool_t *pool)
{
    return sg_fault_hit() ? NULL : __real_ngx_alloc_chain_link(pool);
}


void
ngx_http_sparsegate_fault_arm(ngx_http_request_t *r)
{
    ngx_int_t            n;
    ngx_uint_t           i;
    ngx_list_part_t     *part;
    ngx_table_elt_t     *h;
    ngx_pool_cleanup_t  *cln;

    part = &r->headers_in.headers.part;
    h = part->elts;
    for (i = 0; /* void */; i++) {
        if (i >= part->nelts) {
            if (part->next == NULL) {
                return;
            }
            part = part->next;
            h = part->elts;
            i = 0;
        }
        if (h[i].key.len == sizeof("X-Sparsegate-Fault") - 1
            && ngx_strncasecmp(h[i].key.data, (u_char *) "X-Sparsegate-Fault",
                               h[i].key.len) == 0)
        {
            break;
        }
    }

    n = ngx_atoi(h[i].value.data, h[i].value.len);
    cln = __real_ngx_pool_cleanup_add(r->pool, 0);
    if (n <= 0 || cln == NULL) {
        return;
    }
    cln->handler = ngx_http_sparsegate_fault_done;
    cln->data = r->connection->log;

    sg_fault_arm_host(n);
}


/* The request's end: the countdown stops, and the log says what it did. */
static void
ngx_http_sparsegate_fault_done(void *data)
{
    ngx_log_t  *log = data;
    long        counted;

    counted = sg_fault_disarm();
    ngx_log_error(NGX_LOG_NOTICE, log, 0, "sparsegate fault: %s, %l "
                  "allocations counted",
                  sg_fault_fired() ? "fired" : "not reached", counted);
}

#else

void
ngx_http_sparsegate_fault_arm(ngx_http_request_t *r)
{
}

#endif
