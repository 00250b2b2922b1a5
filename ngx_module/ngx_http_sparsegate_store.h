/*
 * The worker's passage store, and its queries waited on in nginx's event
 * loop: a query (retrieval/store.h's sg_aquery: an fd, what it waits for,
 * a deadline) is watched through an nginx connection made for its fd only
 * while it waits, stepped when the fd is ready or the deadline passes, and
 * reported once done.
 */
#ifndef NGX_HTTP_SPARSEGATE_STORE_H
#define NGX_HTTP_SPARSEGATE_STORE_H

#include <ngx_config.h>
#include <ngx_core.h>

#include "store.h"
#include "ngx_http_sparsegate_conf.h"


typedef void (*ngx_http_sparsegate_query_done_pt)(void *data);

/* A query in flight; lives in its owner's memory. */
typedef struct {
    sg_aquery                          *query;
    ngx_connection_t                   *conn;     /* while it waits on fd */
    ngx_event_t                         deadline;
    ngx_log_t                          *log;
    ngx_http_sparsegate_query_done_pt   done;
    void                               *data;
    unsigned                            lost:1;   /* could not be watched */
} ngx_http_sparsegate_query_t;


/* configuration time: the URI parsed (a sqlite file opened) and closed */
char *ngx_http_sparsegate_store_check(ngx_conf_t *cf, ngx_str_t *uri);
/* worker life */
void ngx_http_sparsegate_store_open(ngx_cycle_t *cycle,
    ngx_http_sparsegate_main_conf_t *smcf);
void ngx_http_sparsegate_store_close(void);
/* the worker's store, or NULL */
sg_astore *ngx_http_sparsegate_store(void);

/* q->query was started by the caller: NGX_OK when it has finished
 * already, NGX_AGAIN when it waits on the event loop (done() follows once
 * it has finished), NGX_ERROR when it cannot be watched. */
ngx_int_t ngx_http_sparsegate_query_wait(ngx_http_sparsegate_query_t *q,
    ngx_log_t *log, ngx_http_sparsegate_query_done_pt done, void *data);
/* The finished query's outcome (see sg_aquery_result); frees the query. */
int ngx_http_sparsegate_query_result(ngx_http_sparsegate_query_t *q,
    sg_passage_list *out, char *err, int errlen);
/* Stops watching and frees the query, finished or not. */
void ngx_http_sparsegate_query_close(ngx_http_sparsegate_query_t *q);

#endif /* NGX_HTTP_SPARSEGATE_STORE_H */
