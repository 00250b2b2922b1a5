/*
 * The worker's passage store, and its queries waited on in nginx's event
 * loop: a query (retrieval/store.h's sg_aquery: an fd, what it waits for,
 * a deadline) is watched through an nginx connection made for its fd only
 * while it waits, stepped when the fd is ready or the deadline passes, and
 * reported once done.  A query's blocking work (SG_AQ_WORK: a SQLite
 * search, a long question's terms) runs in nginx's thread pool, its
 * request blocked meanwhile (offload.c).
 */
#ifndef NGX_HTTP_SPARSEGATE_STORE_H
#define NGX_HTTP_SPARSEGATE_STORE_H

#include <ngx_config.h>
#include <ngx_core.h>

#include "store.h"
#include "ngx_http_sparsegate_conf.h"
#include "ngx_http_sparsegate_counters.h"


typedef void (*ngx_http_sparsegate_query_done_pt)(void *data);


/* a store that cannot list one passage within this is reported down */
#define NGX_HTTP_SG_PROBE_MS  1000

/* A query in flight; lives in its owner's memory. */
typedef struct {
    sg_aquery                          *query;
    ngx_http_request_t                 *request;  /* its work's thread */
    ngx_connection_t                   *conn;     /* while it waits on fd */
    ngx_event_t                         deadline;
    ngx_log_t                          *log;
    ngx_http_sparsegate_query_done_pt   done;
    void                               *data;
    unsigned                            lost:1;   /* could not be watched */
} ngx_http_sparsegate_query_t;


/* configuration time: the URI parsed, a sqlite file checked to be a
 * SparseGate store (sg_store_check) */
char *ngx_http_sparsegate_store_check(ngx_conf_t *cf, ngx_str_t *uri);
/* worker life */
void ngx_http_sparsegate_store_open(ngx_cycle_t *cycle,
    ngx_http_sparsegate_main_conf_t *smcf);
void ngx_http_sparsegate_store_close(void);
/* the worker's store, or NULL */
sg_astore *ngx_http_sparsegate_store(void);

/* q->query was started by the caller for request r: NGX_OK when it has
 * finished already, NGX_AGAIN when it waits on the event loop or a thread
 * (done() follows once it has finished), NGX_ERROR when it cannot be
 * watched. */
ngx_int_t ngx_http_sparsegate_query_wait(ngx_http_sparsegate_query_t *q,
    ngx_http_request_t *r, ngx_http_sparsegate_query_done_pt done,
    void *data);
/* A probe of the worker's store for /health: a listing of one passage
 * within NGX_HTTP_SG_PROBE_MS (or the store timeout when shorter),
 * started and waited on as above; NGX_DECLINED without a store. */
ngx_int_t ngx_http_sparsegate_store_probe(ngx_http_sparsegate_query_t *q,
    ngx_http_request_t *r, ngx_http_sparsegate_query_done_pt done,
    void *data);
/* The finished query's outcome (see sg_aquery_result); frees the query. */
int ngx_http_sparsegate_query_result(ngx_http_sparsegate_query_t *q,
    sg_passage_list *out, char *err, int errlen);
/* The error kind of a store's failure: out of memory is the gateway's
 * (503 out_of_memory, as the engine's), a deadline a timeout. */
ngx_http_sparsegate_error_e ngx_http_sparsegate_store_error_kind(int code);
/* Stops watching and frees the query, finished or not. */
void ngx_http_sparsegate_query_close(ngx_http_sparsegate_query_t *q);

#endif /* NGX_HTTP_SPARSEGATE_STORE_H */
