/*
 * The worker's store and its queries on the event loop.  Events are
 * removed before every step, because a step may close the fd or replace it
 * (libpq reconnecting, a store closing a broken connection).
 */

#include "ngx_http_sparsegate_store.h"
#include "ngx_http_sparsegate_offload.h"


static ngx_int_t ngx_http_sparsegate_query_next(
    ngx_http_sparsegate_query_t *q);
static ngx_int_t ngx_http_sparsegate_query_watch(
    ngx_http_sparsegate_query_t *q);
static void ngx_http_sparsegate_query_unwatch(ngx_http_sparsegate_query_t *q);
static void ngx_http_sparsegate_query_io(ngx_event_t *ev);
static void ngx_http_sparsegate_query_timeout(ngx_event_t *ev);


static sg_astore  *ngx_http_sparsegate_the_store;


char *
ngx_http_sparsegate_store_check(ngx_conf_t *cf, ngx_str_t *uri)
{
    char  err[512];

    if (sg_store_check((char *) uri->data, err, sizeof(err)) != 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "sparsegate_store \"%V\": %s", uri, err);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


void
ngx_http_sparsegate_store_open(ngx_cycle_t *cycle,
    ngx_http_sparsegate_main_conf_t *smcf)
{
    char            err[256];
    sg_astore_opts  ao;

    ngx_memzero(&ao, sizeof(ao));
    ao.timeout_ms = (int) smcf->store_timeout;
    if (sg_astore_open((char *) smcf->store.data, &ao,
                       &ngx_http_sparsegate_the_store, err, sizeof(err))
        != 0)
    {
        ngx_http_sparsegate_the_store = NULL;
        ngx_log_error(NGX_LOG_ALERT, cycle->log, 0,
                      "sparsegate: store \"%V\": %s", &smcf->store, err);
    }
}


void
ngx_http_sparsegate_store_close(void)
{
    if (ngx_http_sparsegate_the_store != NULL) {
        sg_astore_close(ngx_http_sparsegate_the_store);
        ngx_http_sparsegate_the_store = NULL;
    }
}


sg_astore *
ngx_http_sparsegate_store(void)
{
    return ngx_http_sparsegate_the_store;
}


ngx_int_t
ngx_http_sparsegate_query_wait(ngx_http_sparsegate_query_t *q,
    ngx_http_request_t *r, ngx_http_sparsegate_query_done_pt done,
    void *data)
{
    ngx_int_t  rc;

    q->request = r;
    q->log = r->connection->log;
    q->done = done;
    q->data = data;
    q->lost = 0;

    rc = ngx_http_sparsegate_query_next(q);
    if (rc == NGX_ERROR) {
        ngx_http_sparsegate_query_unwatch(q);
    }
    return rc;
}


ngx_int_t
ngx_http_sparsegate_store_probe(ngx_http_sparsegate_query_t *q,
    ngx_http_request_t *r, ngx_http_sparsegate_query_done_pt done,
    void *data)
{
    int                               code;
    char                              err[256];
    sg_search_opts                    o;
    ngx_http_sparsegate_main_conf_t  *smcf;

    if (ngx_http_sparsegate_the_store == NULL) {
        return NGX_DECLINED;
    }

    smcf = ngx_http_get_module_main_conf(r, ngx_http_sparsegate_module);

    ngx_memzero(&o, sizeof(sg_search_opts));
    o.limit = 1;
    o.timeout_ms = (int) ngx_min(smcf->store_timeout, NGX_HTTP_SG_PROBE_MS);

    code = sg_astore_search(ngx_http_sparsegate_the_store, NULL, &o,
                            &q->query, err, sizeof(err));
    if (code != SG_STORE_OK) {
        /* every pooled connection busy: the store serves */
        return code == SG_STORE_EBUSY ? NGX_OK : NGX_ERROR;
    }

    return ngx_http_sparsegate_query_wait(q, r, done, data);
}


int
ngx_http_sparsegate_query_result(ngx_http_sparsegate_query_t *q,
    sg_passage_list *out, char *err, int errlen)
{
    int  code;

    if (q->lost) {
        ngx_snprintf((u_char *) err, errlen,
                     "cannot watch the store connection%Z");
        ngx_http_sparsegate_query_close(q);
        return SG_STORE_EFAIL;
    }

    code = sg_aquery_result(q->query, out, err, errlen);
    ngx_http_sparsegate_query_close(q);
    return code;
}


void
ngx_http_sparsegate_query_close(ngx_http_sparsegate_query_t *q)
{
    ngx_http_sparsegate_query_unwatch(q);
    if (q->query != NULL) {
        sg_aquery_free(q->query);
        q->query = NULL;
    }
}


static void
ngx_http_sparsegate_query_work(void *data)
{
    ngx_http_sparsegate_query_t *q = data;

    sg_aquery_work(q->query);
}


static void
ngx_http_sparsegate_query_worked(ngx_http_request_t *r, void *data)
{
    ngx_http_sparsegate_query_t *q = data;

    ngx_int_t  rc;

    sg_aquery_step(q->query, SG_AQ_WORK);

    rc = ngx_http_sparsegate_query_next(q);
    if (rc == NGX_AGAIN) {
        return;
    }
    if (rc == NGX_ERROR) {
        ngx_http_sparsegate_query_unwatch(q);
        q->lost = 1;
    }
    q->done(q->data);
}


/* What the query waits for next: NGX_OK when it has finished (its work
 * done inline, without a thread pool), NGX_AGAIN when it waits on a thread
 * or on its fd and deadline, NGX_ERROR when it cannot. */
static ngx_int_t
ngx_http_sparsegate_query_next(ngx_http_sparsegate_query_t *q)
{
    ngx_int_t  rc;

    while (!sg_aquery_done(q->query)) {

        if (sg_aquery_wants(q->query) != SG_AQ_WORK) {
            return ngx_http_sparsegate_query_watch(q) == NGX_OK
                   ? NGX_AGAIN : NGX_ERROR;
        }

        rc = ngx_http_sparsegate_offload(q->request,
                                         ngx_http_sparsegate_query_work,
                                         ngx_http_sparsegate_query_worked, q);
        if (rc == NGX_DONE) {
            ngx_log_debug0(NGX_LOG_DEBUG_HTTP, q->log, 0,
                           "sparsegate store: query works in a thread");
            return NGX_AGAIN;
        }
        if (rc != NGX_DECLINED) {
            return NGX_ERROR;
        }

        /* no thread pool: here, then on */
        sg_aquery_work(q->query);
        sg_aquery_step(q->query, SG_AQ_WORK);
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_sparsegate_query_watch(ngx_http_sparsegate_query_t *q)
{
    int                fd, wants;
    int64_t            wait;
    ngx_connection_t  *c;

    fd = sg_aquery_fd(q->query);
    wants = sg_aquery_wants(q->query);

    wait = sg_aquery_deadline(q->query) - sg_now_ms();
    q->deadline.handler = ngx_http_sparsegate_query_timeout;
    q->deadline.data = q;
    q->deadline.log = q->log;
    ngx_add_timer(&q->deadline, (ngx_msec_t) ngx_max(wait, 1));

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, q->log, 0,
                   "sparsegate store: query waits on fd %d (wants %d), "
                   "%L ms left", fd, wants, wait);

    if (fd < 0) {
        return NGX_OK;        /* nothing to watch: the deadline steps it */
    }

    c = ngx_get_connection(fd, q->log);
    if (c == NULL) {
        return NGX_ERROR;
    }
    c->data = q;
    c->read->handler = ngx_http_sparsegate_query_io;
    c->write->handler = ngx_http_sparsegate_query_io;
    c->read->log = q->log;
    c->write->log = q->log;
    q->conn = c;

    /* level-triggered: the store reads and writes as much as it likes */
    if ((wants & SG_AQ_READ)
        && ngx_add_event(c->read, NGX_READ_EVENT, 0) != NGX_OK)
    {
        return NGX_ERROR;
    }
    if ((wants & SG_AQ_WRITE)
        && ngx_add_event(c->write, NGX_WRITE_EVENT, 0) != NGX_OK)
    {
        return NGX_ERROR;
    }
    return NGX_OK;
}


static void
ngx_http_sparsegate_query_unwatch(ngx_http_sparsegate_query_t *q)
{
    ngx_connection_t  *c;

    c = q->conn;
    if (c != NULL) {
        if (c->read->active) {
            ngx_del_event(c->read, NGX_READ_EVENT, 0);
        }
        if (c->write->active) {
            ngx_del_event(c->write, NGX_WRITE_EVENT, 0);
        }
        /* the store owns the fd */
        ngx_free_connection(c);
        c->fd = (ngx_socket_t) -1;
        q->conn = NULL;
    }
    if (q->deadline.timer_set) {
        ngx_del_timer(&q->deadline);
    }
}


static void
ngx_http_sparsegate_query_step(ngx_http_sparsegate_query_t *q, int events)
{
    ngx_http_sparsegate_query_unwatch(q);

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, q->log, 0,
                   "sparsegate store: query step, events %d", events);

    if (sg_aquery_step(q->query, events) == SG_AQ_AGAIN) {
        switch (ngx_http_sparsegate_query_next(q)) {
        case NGX_AGAIN:
            return;
        case NGX_ERROR:
            ngx_http_sparsegate_query_unwatch(q);
            q->lost = 1;
            break;
        default:
            break;
        }
    }

    q->done(q->data);
}


static void
ngx_http_sparsegate_query_io(ngx_event_t *ev)
{
    ngx_connection_t  *c = ev->data;

    ngx_http_sparsegate_query_step(c->data, ev->write ? SG_AQ_WRITE
                                                      : SG_AQ_READ);
}


static void
ngx_http_sparsegate_query_timeout(ngx_event_t *ev)
{
    ngx_http_sparsegate_query_step(ev->data, 0);
}


ngx_http_sparsegate_error_e
ngx_http_sparsegate_store_error_kind(int code)
{
    return code == SG_STORE_ETIMEOUT ? NGX_HTTP_SG_ERR_TIMEOUT
           : code == SG_STORE_ENOMEM ? NGX_HTTP_SG_ERR_NO_MEMORY
           : NGX_HTTP_SG_ERR_STORE;
}
