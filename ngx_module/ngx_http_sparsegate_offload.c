/*
 * Work in nginx's thread pool.  The request is blocked (r->main->blocked)
 * meanwhile, as nginx's own threaded file I/O does, so a client that
 * leaves cannot free it under the thread.
 */

#include "ngx_http_sparsegate_offload.h"
#include "ngx_http_sparsegate_conf.h"

#if (NGX_THREADS)
#include <ngx_thread_pool.h>


typedef struct {
    ngx_http_request_t             *request;
    ngx_http_sparsegate_work_pt     work;
    ngx_http_sparsegate_done_pt     done;
    void                           *data;
} ngx_http_sparsegate_offload_t;


static void
ngx_http_sparsegate_offload_thread(void *data, ngx_log_t *log)
{
    ngx_http_sparsegate_offload_t *o = data;

    o->work(o->data);
}


static void
ngx_http_sparsegate_offload_event(ngx_event_t *ev)
{
    ngx_connection_t               *c;
    ngx_http_request_t             *r;
    ngx_http_sparsegate_offload_t  *o;

    o = ev->data;
    r = o->request;
    c = r->connection;

    r->main->blocked--;
    r->aio = 0;

    if (r->connection->error) {
        /* the client left while the thread ran: nginx parked the request
         * on its finalizer until now */
        r->write_event_handler(r);
        ngx_http_run_posted_requests(c);
        return;
    }

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "sparsegate offload: back on the worker");

    o->done(r, o->data);
    ngx_http_run_posted_requests(c);
}

#endif


ngx_int_t
ngx_http_sparsegate_offload(ngx_http_request_t *r,
    ngx_http_sparsegate_work_pt work, ngx_http_sparsegate_done_pt done,
    void *data)
{
#if (NGX_THREADS)
    ngx_thread_task_t                *task;
    ngx_http_sparsegate_offload_t    *o;
    ngx_http_sparsegate_main_conf_t  *smcf;

    smcf = ngx_http_get_module_main_conf(r, ngx_http_sparsegate_module);
    if (smcf->thread_pool == NULL) {
        return NGX_DECLINED;
    }

    task = ngx_thread_task_alloc(r->pool,
                                 sizeof(ngx_http_sparsegate_offload_t));
    if (task == NULL) {
        return NGX_ERROR;
    }
    o = task->ctx;
    o->request = r;
    o->work = work;
    o->done = done;
    o->data = data;

    task->handler = ngx_http_sparsegate_offload_thread;
    task->event.handler = ngx_http_sparsegate_offload_event;
    task->event.data = o;

    if (ngx_thread_task_post(smcf->thread_pool, task) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "sparsegate offload: posted to the thread pool");

    r->main->blocked++;
    r->aio = 1;
    return NGX_DONE;
#else
    return NGX_DECLINED;
#endif
}
