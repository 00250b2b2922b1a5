/*
 * The requests this worker serves now: a list of entries their owners
 * keep current.
 */

#include "ngx_http_sparsegate_running.h"


static ngx_queue_t  ngx_http_sparsegate_running;
static ngx_uint_t   ngx_http_sparsegate_running_n;
static uint64_t     ngx_http_sparsegate_running_seq;


void
ngx_http_sparsegate_running_add(ngx_http_sparsegate_running_t *e,
    ngx_http_request_t *r, const char *endpoint, const char *phase)
{
    if (e->linked) {
        return;
    }
    if (ngx_http_sparsegate_running.next == NULL) {
        ngx_queue_init(&ngx_http_sparsegate_running);
    }

    e->endpoint = endpoint;
    e->connection = r->connection->number;
    e->start_sec = r->start_sec;
    e->start_msec = r->start_msec;
    e->prompt_tokens = -1;
    e->cached_tokens = -1;
    ngx_http_sparsegate_running_phase(e, phase);

    ngx_queue_insert_tail(&ngx_http_sparsegate_running, &e->queue);
    ngx_http_sparsegate_running_n++;
    e->linked = 1;
}


void
ngx_http_sparsegate_running_phase(ngx_http_sparsegate_running_t *e,
    const char *phase)
{
    e->phase = phase;
    e->order = ++ngx_http_sparsegate_running_seq;
}


void
ngx_http_sparsegate_running_tokens(ngx_http_sparsegate_running_t *e,
    ngx_int_t prompt, ngx_int_t cached, ngx_int_t generated)
{
    e->prompt_tokens = prompt;
    e->cached_tokens = cached;
    e->generated_tokens = generated;
}


void
ngx_http_sparsegate_running_remove(ngx_http_sparsegate_running_t *e)
{
    if (!e->linked) {
        return;
    }

    ngx_queue_remove(&e->queue);
    e->linked = 0;
    ngx_http_sparsegate_running_n--;
}


ngx_queue_t *
ngx_http_sparsegate_running_list(ngx_uint_t *n)
{
    if (ngx_http_sparsegate_running.next == NULL) {
        ngx_queue_init(&ngx_http_sparsegate_running);
    }

    *n = ngx_http_sparsegate_running_n;
    return &ngx_http_sparsegate_running;
}
