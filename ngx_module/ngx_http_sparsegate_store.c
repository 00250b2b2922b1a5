/*
 * The worker's store and its queries on the event loop.  Events are
 * removed before every step, because a step may close the fd or replace it
 * (libpq reconnecting, a store closing a broken connection).
 */

#include "ngx_http_sparsegate_store.h"


static ngx_int_t ngx_http_sparsegate_query_watch(
    ngx_http_sparsegate_query_t *q);
static void ngx_http_sparsegate_query_unwatch(ngx_http_sparsegate_query_t *q);
static void ngx_http_sparsegate_query_io(ngx_event_t *ev);
static void ngx_http_sparsegate_query_timeout(ngx_event_t *ev);


static sg_astore  *ngx_http_sparsegate_the_store;


char *
ngx_http_sparsegate_store_check(ngx_conf_t *cf, ngx_str_t *uri)
{
    char        err[256];
    sg_astore  *as;

    if (sg_astore_open((char *) uri->data, NULL, &as, err, sizeof(err))
        != 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "sparsegate_store \"%V\": %s", uri, err);
        return NGX_CONF_ERROR;
    }
    sg_astore_close(as);

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
    ngx_log_t *log, ngx_http_sparsegate_query_done_pt done, void *data)
{
    if (sg_aquery_done(q->query)) {
        return NGX_OK;
    }

    q->log = log;
    q->done = done;
    q->data = data;
    q->lost = 0;

    if (ngx_http_sparsegate_query_watch(q) != NGX_OK) {
        ngx_http_sparsegate_query_unwatch(q);
        return NGX_ERROR;
    }
    return NGX_AGAIN;
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
        if (ngx_http_sparsegate_query_watch(q) == NGX_OK) {
            return;
        }
        ngx_http_sparsegate_query_unwatch(q);
        q->lost = 1;
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
