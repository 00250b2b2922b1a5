/*
 * CPU work that would stall the event loop (tokenizing a long prompt,
 * building a RAG context of tens of thousands of tokens: ~3 ms per
 * thousand tokens) runs in nginx's thread pool ("default", 32 threads
 * unless nginx.conf declares `thread_pool default threads=N;`).
 */
#ifndef NGX_HTTP_SPARSEGATE_OFFLOAD_H
#define NGX_HTTP_SPARSEGATE_OFFLOAD_H

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


/* text at least this long is tokenized in a thread */
#define NGX_HTTP_SG_OFFLOAD_BYTES  16384


/* work() runs in a thread, done() back on the worker */
typedef void (*ngx_http_sparsegate_work_pt)(void *data);
typedef void (*ngx_http_sparsegate_done_pt)(ngx_http_request_t *r,
    void *data);


/* NGX_DONE when the work was posted (done() follows on the worker),
 * NGX_DECLINED when there is no thread pool (run it inline then), or
 * NGX_ERROR. */
ngx_int_t ngx_http_sparsegate_offload(ngx_http_request_t *r,
    ngx_http_sparsegate_work_pt work, ngx_http_sparsegate_done_pt done,
    void *data);

#endif /* NGX_HTTP_SPARSEGATE_OFFLOAD_H */
