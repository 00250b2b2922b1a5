/*
 * Fault injection in test builds (engine/include/sg_fault.h): a request
 * that carries "X-Sparsegate-Fault: N" makes the N-th allocation of the
 * worker's threads along it fail -- the module's (malloc and its nginx
 * pool calls, linked through -Wl,--wrap), the tokenizer's, retrieval's,
 * the engine's submit -- and the request's end says in the error log
 * whether it did.  The engine thread's allocations are failed one by one
 * by tests/unit/test_fault.c.  In other builds the header is ignored.
 */
#ifndef NGX_HTTP_SPARSEGATE_FAULT_H
#define NGX_HTTP_SPARSEGATE_FAULT_H

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


/* Arms the countdown when the request asks for it (a test build). */
void ngx_http_sparsegate_fault_arm(ngx_http_request_t *r);

#endif /* NGX_HTTP_SPARSEGATE_FAULT_H */
