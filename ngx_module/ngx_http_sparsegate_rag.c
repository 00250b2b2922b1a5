/*
 * POST /v1/rag: a question (+ retrieval options) -> store queries on the
 * event loop -> a prompt built to a token budget -> a generation whose
 * response (chat.completion shape, streamed or not) carries "citations":
 * every passage the prompt holds, by id.
 *
 * Request:  {"question": "...", "collection": "...", "doc_ids": [...],
 *            "filter": {...}, "top_k": 8, "shared": true,
 *            "context_budget": 32768, + the sampling fields of
 *            /v1/chat/completions (max_tokens, stream, seed, ...)}
 *
 * Steps: the collection's listing (the shared block), the search, on a
 * Redis store the cached tokens of those passages, the context build (in
 * nginx's thread pool), on Redis again the tokens encoded here stored back,
 * then the generation.
 *
 * Store queries are sg_aquery objects (retrieval/store.h): an fd, what it
 * waits for and a deadline.  The fd is wrapped in an nginx connection only
 * while the query waits; events are removed before every step, because a
 * step may close the fd or replace it.
 */

#include "ngx_http_sparsegate.h"
#include "context.h"
#include "tokcache.h"


/* The steps of a request; the token-cache ones only on a redis: store. */
#define NGX_HTTP_SG_RAG_SHARED      0   /* the collection's listing */
#define NGX_HTTP_SG_RAG_RANKED      1   /* the question's search */
#define NGX_HTTP_SG_RAG_GET_SHARED  2   /* cached tokens of the passages */
#define NGX_HTTP_SG_RAG_GET_RANKED  3
#define NGX_HTTP_SG_RAG_PUT_SHARED  4   /* tokens encoded here, stored */
#define NGX_HTTP_SG_RAG_PUT_RANKED  5

/* a week: a passage changed behind ingest's back is re-tokenized then */
#define NGX_HTTP_SG_TOKCACHE_TTL    604800


typedef struct {
    ngx_http_request_t  *request;
    cJSON               *root;
    const char          *question;
    sg_search_opts       opts;
    char                *meta_filter;       /* malloc'ed (cJSON print) */
    const char         **doc_ids;
    ngx_uint_t           want_shared;
    ngx_uint_t           phase;             /* NGX_HTTP_SG_RAG_* */
    ngx_uint_t           tokcache;          /* the store caches tokens */
    uint64_t             tok_hash;
    ngx_int_t            budget;
    ngx_int_t            max_tokens;

    sg_aquery           *query;
    ngx_connection_t    *conn;
    ngx_event_t          deadline;
    ngx_msec_t           busy_since;        /* waiting for a pooled connection */

    sg_passage_list      shared;
    sg_passage_list      ranked;

    sg_ctx_opts          ctx_opts;
    sg_context           sc;
    ngx_uint_t           built;
    int                  build_failed;
    char                 build_err[256];
} ngx_http_sparsegate_rag_t;


static ngx_int_t ngx_http_sparsegate_rag_next(ngx_http_sparsegate_rag_t *rag);
static void ngx_http_sparsegate_rag_finish(ngx_http_sparsegate_rag_t *rag,
    ngx_int_t rc);
static ngx_int_t ngx_http_sparsegate_rag_advance(
    ngx_http_sparsegate_rag_t *rag);
static ngx_int_t ngx_http_sparsegate_rag_generate(
    ngx_http_sparsegate_rag_t *rag);


static void
ngx_http_sparsegate_rag_unwatch(ngx_http_sparsegate_rag_t *rag)
{
    ngx_connection_t  *c;

    c = rag->conn;
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
        rag->conn = NULL;
    }
    if (rag->deadline.timer_set) {
        ngx_del_timer(&rag->deadline);
    }
}


void
ngx_http_sparsegate_rag_cleanup(void *data)
{
    ngx_http_sparsegate_rag_t *rag = data;

    ngx_http_sparsegate_rag_unwatch(rag);
    if (rag->query != NULL) {
        sg_aquery_free(rag->query);
        rag->query = NULL;
    }
    if (rag->built) {
        sg_context_free(&rag->sc);
        rag->built = 0;
    }
    sg_passage_list_free(&rag->shared);
    sg_passage_list_free(&rag->ranked);
    free(rag->meta_filter);
    cJSON_Delete(rag->root);
    rag->root = NULL;
}


static void ngx_http_sparsegate_rag_io(ngx_event_t *ev);
static void ngx_http_sparsegate_rag_timeout(ngx_event_t *ev);
static ngx_int_t ngx_http_sparsegate_rag_start(ngx_http_sparsegate_rag_t *rag);


/* How often a request waiting for a pooled store connection looks again. */
#define NGX_HTTP_SG_RAG_BUSY_RETRY  5


static void
ngx_http_sparsegate_rag_retry(ngx_event_t *ev)
{
    ngx_http_sparsegate_rag_t *rag = ev->data;

    ngx_http_sparsegate_rag_finish(rag, ngx_http_sparsegate_rag_start(rag));
}


static ngx_int_t
ngx_http_sparsegate_rag_watch(ngx_http_sparsegate_rag_t *rag)
{
    int                 fd, wants;
    int64_t             wait;
    ngx_connection_t   *c;
    ngx_http_request_t *r;

    r = rag->request;
    fd = sg_aquery_fd(rag->query);
    wants = sg_aquery_wants(rag->query);

    wait = sg_aquery_deadline(rag->query) - sg_now_ms();
    rag->deadline.handler = ngx_http_sparsegate_rag_timeout;
    rag->deadline.data = rag;
    rag->deadline.log = r->connection->log;
    ngx_add_timer(&rag->deadline, (ngx_msec_t) ngx_max(wait, 1));

    if (fd < 0) {
        return NGX_OK;        /* nothing to watch: the deadline steps it */
    }

    c = ngx_get_connection(fd, r->connection->log);
    if (c == NULL) {
        return NGX_ERROR;
    }
    c->data = rag;
    c->read->handler = ngx_http_sparsegate_rag_io;
    c->write->handler = ngx_http_sparsegate_rag_io;
    c->read->log = r->connection->log;
    c->write->log = r->connection->log;
    rag->conn = c;

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
ngx_http_sparsegate_rag_finish(ngx_http_sparsegate_rag_t *rag, ngx_int_t rc)
{
    if (rc != NGX_DONE) {
        ngx_http_finalize_request(rag->request, rc);
    }
}


static void
ngx_http_sparsegate_rag_step(ngx_http_sparsegate_rag_t *rag, int events)
{
    ngx_http_sparsegate_rag_unwatch(rag);

    if (sg_aquery_step(rag->query, events) == SG_AQ_AGAIN) {
        if (ngx_http_sparsegate_rag_watch(rag) != NGX_OK) {
            ngx_http_sparsegate_rag_finish(rag,
                ngx_http_sparsegate_error(rag->request,
                    NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_SG_ERR_STORE,
                    NULL, "cannot watch the store connection"));
        }
        return;
    }

    ngx_http_sparsegate_rag_finish(rag, ngx_http_sparsegate_rag_next(rag));
}


static void
ngx_http_sparsegate_rag_io(ngx_event_t *ev)
{
    ngx_connection_t  *c = ev->data;

    ngx_http_sparsegate_rag_step(c->data, ev->write ? SG_AQ_WRITE
                                                    : SG_AQ_READ);
}


static void
ngx_http_sparsegate_rag_timeout(ngx_event_t *ev)
{
    ngx_http_sparsegate_rag_step(ev->data, 0);
}


/* Arms a short retry while the wait for a pooled connection is within the
 * store timeout; NGX_DECLINED once it is past. */
static ngx_int_t
ngx_http_sparsegate_rag_wait_pool(ngx_http_sparsegate_rag_t *rag)
{
    ngx_msec_t                        limit;
    ngx_http_sparsegate_main_conf_t  *smcf;

    smcf = ngx_http_get_module_main_conf(rag->request,
                                         ngx_http_sparsegate_module);
    if (rag->busy_since == 0) {
        rag->busy_since = ngx_current_msec ? ngx_current_msec : 1;
    }
    limit = rag->opts.timeout_ms > 0 ? (ngx_msec_t) rag->opts.timeout_ms
                                     : smcf->store_timeout;
    if (ngx_current_msec - rag->busy_since >= limit) {
        return NGX_DECLINED;
    }
    rag->deadline.handler = ngx_http_sparsegate_rag_retry;
    rag->deadline.data = rag;
    rag->deadline.log = rag->request->connection->log;
    ngx_add_timer(&rag->deadline, NGX_HTTP_SG_RAG_BUSY_RETRY);
    return NGX_OK;
}


/* Starts the query of the current phase; NGX_DONE while it runs. */
static ngx_int_t
ngx_http_sparsegate_rag_start(ngx_http_sparsegate_rag_t *rag)
{
    int               code;
    char              err[256];
    sg_astore        *as;
    sg_search_opts    o;
    sg_passage_list  *l;

    as = ngx_http_sparsegate_astore();
    l = (rag->phase == NGX_HTTP_SG_RAG_GET_SHARED
         || rag->phase == NGX_HTTP_SG_RAG_PUT_SHARED)
        ? &rag->shared : &rag->ranked;

    switch (rag->phase) {

    case NGX_HTTP_SG_RAG_SHARED:
    case NGX_HTTP_SG_RAG_RANKED:
        o = rag->opts;
        if (rag->phase == NGX_HTTP_SG_RAG_SHARED) {
            /* the shared block: the collection's canonical listing */
            o.limit = 10000;
        }
        code = sg_astore_search(as, rag->phase == NGX_HTTP_SG_RAG_SHARED
                                    ? "" : rag->question,
                                &o, &rag->query, err, sizeof(err));
        if (code == SG_STORE_EBUSY
            && ngx_http_sparsegate_rag_wait_pool(rag) == NGX_OK)
        {
            /* every pooled connection is in use: wait for one, within
             * the store timeout, instead of failing the request */
            return NGX_DONE;
        }
        rag->busy_since = 0;
        if (code != SG_STORE_OK) {
            return ngx_http_sparsegate_error(rag->request,
                       sg_store_http_status(code),
                       code == SG_STORE_ETIMEOUT ? NGX_HTTP_SG_ERR_TIMEOUT
                                                 : NGX_HTTP_SG_ERR_STORE,
                       NULL, "store: %s", err);
        }
        break;

    case NGX_HTTP_SG_RAG_GET_SHARED:
    case NGX_HTTP_SG_RAG_GET_RANKED:
        code = sg_atokcache_get(as, rag->tok_hash, l->v, l->n, &rag->query,
                                err, sizeof(err));
        goto cache;

    default:
        code = sg_atokcache_put(as, rag->tok_hash, l->v, l->n,
                                NGX_HTTP_SG_TOKCACHE_TTL, &rag->query, err,
                                sizeof(err));
    cache:
        if (code != SG_STORE_OK) {
            /* the cache only saves work: go on without it */
            ngx_log_error(NGX_LOG_WARN, rag->request->connection->log, 0,
                          "sparsegate: token cache: %s", err);
            rag->query = NULL;
            return ngx_http_sparsegate_rag_advance(rag);
        }
        break;
    }

    if (sg_aquery_done(rag->query)) {
        return ngx_http_sparsegate_rag_next(rag);
    }
    if (ngx_http_sparsegate_rag_watch(rag) != NGX_OK) {
        return ngx_http_sparsegate_error(rag->request,
                   NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_SG_ERR_STORE,
                   NULL, "cannot watch the store connection");
    }
    return NGX_DONE;
}


static char *
ngx_http_sparsegate_citations(sg_context *sc)
{
    char    *text;
    cJSON   *arr, *c;
    size_t   i;

    arr = cJSON_CreateArray();
    if (arr == NULL) {
        return NULL;
    }
    for (i = 0; i < sc->n_cites; i++) {
        c = cJSON_CreateObject();
        cJSON_AddStringToObject(c, "id", sc->cites[i].id);
        cJSON_AddStringToObject(c, "doc_id", sc->cites[i].doc_id
                                             ? sc->cites[i].doc_id : "");
        cJSON_AddStringToObject(c, "title", sc->cites[i].title
                                            ? sc->cites[i].title : "");
        if (sc->cites[i].collection) {
            cJSON_AddStringToObject(c, "collection", sc->cites[i].collection);
        }
        cJSON_AddNumberToObject(c, "score", sc->cites[i].score);
        if (sc->cites[i].rank >= 0) {
            cJSON_AddNumberToObject(c, "rank", sc->cites[i].rank);
        } else {
            cJSON_AddNullToObject(c, "rank");
        }
        cJSON_AddBoolToObject(c, "shared", sc->cites[i].shared);
        cJSON_AddNumberToObject(c, "tokens", sc->cites[i].n_tokens);
        cJSON_AddItemToArray(arr, c);
    }
    text = cJSON_PrintUnformatted(arr);
    cJSON_Delete(arr);
    return text;
}


/* In a thread (or inline): the prompt from the passages. */
static void
ngx_http_sparsegate_rag_build(void *data)
{
    ngx_http_sparsegate_rag_t *rag = data;

    rag->build_failed = sg_context_build(rag->want_shared ? &rag->shared
                                                          : NULL,
                                         &rag->ranked, rag->question,
                                         &rag->ctx_opts, &rag->sc,
                                         rag->build_err,
                                         sizeof(rag->build_err)) != 0;
    rag->built = !rag->build_failed;
}


/* The context is built (and its new tokens cached): generate. */
static ngx_int_t
ngx_http_sparsegate_rag_answer(ngx_http_sparsegate_rag_t *rag)
{
    ngx_int_t                   rc;
    ngx_http_request_t         *r;
    ngx_http_sparsegate_job_t  *job;

    r = rag->request;
    job = ngx_http_sparsegate_job_create(r, NGX_HTTP_SG_FMT_RAG);
    if (job == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    job->citations = ngx_http_sparsegate_citations(&rag->sc);

    rc = ngx_http_sparsegate_generate(r, rag->root, job, rag->sc.ids,
                                      (size_t) rag->sc.n_tokens);
    sg_context_free(&rag->sc);
    rag->built = 0;
    return rc;
}


/* The context is built: store the passages encoded here in the token
 * cache, then answer. */
static ngx_int_t
ngx_http_sparsegate_rag_built(ngx_http_sparsegate_rag_t *rag)
{
    if (rag->build_failed) {
        return ngx_http_sparsegate_error(rag->request, NGX_HTTP_BAD_REQUEST,
                   NGX_HTTP_SG_ERR_CONTEXT_LENGTH, "question",
                   "cannot build the context: %s", rag->build_err);
    }
    if (rag->tokcache && rag->sc.encoded > 0) {
        rag->phase = NGX_HTTP_SG_RAG_GET_RANKED;
        return ngx_http_sparsegate_rag_advance(rag);
    }
    return ngx_http_sparsegate_rag_answer(rag);
}


static void
ngx_http_sparsegate_rag_build_done(ngx_http_request_t *r, void *data)
{
    ngx_http_sparsegate_rag_finish(data,
                                   ngx_http_sparsegate_rag_built(data));
}


/* Sets up the context build: in nginx's thread pool (tens of thousands
 * of tokens to encode), inline without one. */
static ngx_int_t
ngx_http_sparsegate_rag_generate(ngx_http_sparsegate_rag_t *rag)
{
    ngx_int_t                         rc, limit;
    ngx_http_request_t               *r;
    ngx_http_sparsegate_main_conf_t  *smcf;

    r = rag->request;
    smcf = ngx_http_get_module_main_conf(r, ngx_http_sparsegate_module);

    limit = smcf->max_context > 0
            ? smcf->max_context
            : sg_engine_model_info(ngx_http_sparsegate_engine())
                  ->max_position_embeddings;

    sg_ctx_opts_default(&rag->ctx_opts);
    rag->ctx_opts.budget = (int) rag->budget;
    rag->ctx_opts.model_limit = (int) (limit - rag->max_tokens);
    rag->ctx_opts.encode = sg_ctx_tokenizer_encode;
    rag->ctx_opts.encode_ud = smcf->tokenizer;
    if (rag->ctx_opts.model_limit <= 0) {
        return ngx_http_sparsegate_error(r, NGX_HTTP_BAD_REQUEST,
                   NGX_HTTP_SG_ERR_CONTEXT_LENGTH, "max_tokens",
                   "max_tokens %i leaves no room for a prompt in the "
                   "context of %i tokens", rag->max_tokens, limit);
    }

    rc = ngx_http_sparsegate_offload(r, ngx_http_sparsegate_rag_build,
                                     ngx_http_sparsegate_rag_build_done, rag);
    if (rc == NGX_DONE) {
        return NGX_DONE;
    }
    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_sparsegate_rag_build(rag);
    return ngx_http_sparsegate_rag_built(rag);
}


/* The current query finished: take its result and go on. */
static ngx_int_t
ngx_http_sparsegate_rag_next(ngx_http_sparsegate_rag_t *rag)
{
    int               code;
    char              err[256];
    sg_passage_list   none, *out;

    ngx_memzero(&none, sizeof(none));
    out = rag->phase == NGX_HTTP_SG_RAG_SHARED ? &rag->shared
          : rag->phase == NGX_HTTP_SG_RAG_RANKED ? &rag->ranked : &none;

    code = sg_aquery_result(rag->query, out, err, sizeof(err));
    sg_aquery_free(rag->query);
    rag->query = NULL;
    sg_passage_list_free(&none);

    if (code != SG_STORE_OK) {
        if (rag->phase > NGX_HTTP_SG_RAG_RANKED) {
            ngx_log_error(NGX_LOG_WARN, rag->request->connection->log, 0,
                          "sparsegate: token cache: %s", err);
            return ngx_http_sparsegate_rag_advance(rag);
        }
        return ngx_http_sparsegate_error(rag->request,
                   sg_store_http_status(code),
                   code == SG_STORE_ETIMEOUT ? NGX_HTTP_SG_ERR_TIMEOUT
                                             : NGX_HTTP_SG_ERR_STORE,
                   NULL, "store (%s): %s", sg_store_strerror(code), err);
    }

    return ngx_http_sparsegate_rag_advance(rag);
}


/* After the step in rag->phase: the next one (skipping empty ones). */
static ngx_int_t
ngx_http_sparsegate_rag_advance(ngx_http_sparsegate_rag_t *rag)
{
    for ( ;; ) {
        switch (rag->phase) {

        case NGX_HTTP_SG_RAG_SHARED:
            rag->phase = NGX_HTTP_SG_RAG_RANKED;
            return ngx_http_sparsegate_rag_start(rag);

        case NGX_HTTP_SG_RAG_RANKED:
            if (!rag->tokcache) {
                return ngx_http_sparsegate_rag_generate(rag);
            }
            rag->phase = NGX_HTTP_SG_RAG_GET_SHARED;
            if (rag->want_shared && rag->shared.n > 0) {
                return ngx_http_sparsegate_rag_start(rag);
            }
            continue;

        case NGX_HTTP_SG_RAG_GET_SHARED:
            rag->phase = NGX_HTTP_SG_RAG_GET_RANKED;
            if (rag->ranked.n > 0) {
                return ngx_http_sparsegate_rag_start(rag);
            }
            continue;

        case NGX_HTTP_SG_RAG_GET_RANKED:
            /* from here on the build and, after it, the puts */
            if (!rag->built) {
                return ngx_http_sparsegate_rag_generate(rag);
            }
            rag->phase = NGX_HTTP_SG_RAG_PUT_SHARED;
            if (rag->want_shared && rag->shared.n > 0) {
                return ngx_http_sparsegate_rag_start(rag);
            }
            continue;

        case NGX_HTTP_SG_RAG_PUT_SHARED:
            rag->phase = NGX_HTTP_SG_RAG_PUT_RANKED;
            if (rag->ranked.n > 0) {
                return ngx_http_sparsegate_rag_start(rag);
            }
            continue;

        default:
            return ngx_http_sparsegate_rag_answer(rag);
        }
    }
}


static ngx_int_t
ngx_http_sparsegate_rag_options(ngx_http_request_t *r,
    ngx_http_sparsegate_rag_t *rag, ngx_int_t *rc)
{
    int                              n, i;
    cJSON                           *root, *it, *id;
    ngx_http_sparsegate_loc_conf_t  *slcf;

    slcf = ngx_http_get_module_loc_conf(r, ngx_http_sparsegate_module);
    root = rag->root;

    it = cJSON_GetObjectItemCaseSensitive(root, "question");
    if (it == NULL) {
        it = cJSON_GetObjectItemCaseSensitive(root, "query");
    }
    if (!cJSON_IsString(it) || it->valuestring[0] == '\0') {
        *rc = ngx_http_sparsegate_error(r, NGX_HTTP_BAD_REQUEST,
                   NGX_HTTP_SG_ERR_BAD_REQUEST, "question",
                   "'question' must be a non-empty string");
        return NGX_ERROR;
    }
    rag->question = it->valuestring;

    it = cJSON_GetObjectItemCaseSensitive(root, "collection");
    if (it != NULL && !cJSON_IsNull(it)) {
        if (!cJSON_IsString(it)) {
            *rc = ngx_http_sparsegate_error(r, NGX_HTTP_BAD_REQUEST,
                       NGX_HTTP_SG_ERR_BAD_REQUEST, "collection",
                       "'collection' must be a string");
            return NGX_ERROR;
        }
        rag->opts.collection = it->valuestring;
    }

    it = cJSON_GetObjectItemCaseSensitive(root, "filter");
    if (it != NULL && !cJSON_IsNull(it)) {
        if (!cJSON_IsObject(it)) {
            *rc = ngx_http_sparsegate_error(r, NGX_HTTP_BAD_REQUEST,
                       NGX_HTTP_SG_ERR_BAD_REQUEST, "filter",
                       "'filter' must be a JSON object");
            return NGX_ERROR;
        }
        rag->meta_filter = cJSON_PrintUnformatted(it);
        rag->opts.meta_filter = rag->meta_filter;
    }

    it = cJSON_GetObjectItemCaseSensitive(root, "doc_ids");
    if (it != NULL && !cJSON_IsNull(it)) {
        n = cJSON_GetArraySize(it);
        if (!cJSON_IsArray(it) || n == 0 || n > 10000) {
            *rc = ngx_http_sparsegate_error(r, NGX_HTTP_BAD_REQUEST,
                       NGX_HTTP_SG_ERR_BAD_REQUEST, "doc_ids",
                       "'doc_ids' must be an array of 1 to 10000 strings");
            return NGX_ERROR;
        }
        rag->doc_ids = ngx_palloc(r->pool, n * sizeof(char *));
        if (rag->doc_ids == NULL) {
            *rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
            return NGX_ERROR;
        }
        i = 0;
        cJSON_ArrayForEach(id, it) {
            if (!cJSON_IsString(id)) {
                *rc = ngx_http_sparsegate_error(r, NGX_HTTP_BAD_REQUEST,
                           NGX_HTTP_SG_ERR_BAD_REQUEST, "doc_ids",
                           "doc_ids[%d] is not a string", i);
                return NGX_ERROR;
            }
            rag->doc_ids[i++] = id->valuestring;
        }
        rag->opts.doc_ids = rag->doc_ids;
        rag->opts.n_doc_ids = n;
    }

    rag->opts.limit = 8;
    it = cJSON_GetObjectItemCaseSensitive(root, "top_k");
    if (it != NULL && !cJSON_IsNull(it)) {
        if (!cJSON_IsNumber(it) || it->valueint < 1 || it->valueint > 1000) {
            *rc = ngx_http_sparsegate_error(r, NGX_HTTP_BAD_REQUEST,
                       NGX_HTTP_SG_ERR_BAD_REQUEST, "top_k",
                       "'top_k' must be an integer from 1 to 1000");
            return NGX_ERROR;
        }
        rag->opts.limit = it->valueint;
    }

    /* the shared block needs a collection (or documents) to list */
    rag->want_shared = (rag->opts.collection != NULL
                        || rag->opts.doc_ids != NULL);
    it = cJSON_GetObjectItemCaseSensitive(root, "shared");
    if (cJSON_IsBool(it)) {
        rag->want_shared = rag->want_shared && cJSON_IsTrue(it);
    }

    rag->budget = slcf->context_budget;
    it = cJSON_GetObjectItemCaseSensitive(root, "context_budget");
    if (it != NULL && !cJSON_IsNull(it)) {
        if (!cJSON_IsNumber(it) || it->valueint < 1
            || it->valueint > slcf->context_budget)
        {
            *rc = ngx_http_sparsegate_error(r, NGX_HTTP_BAD_REQUEST,
                       NGX_HTTP_SG_ERR_BAD_REQUEST, "context_budget",
                       "'context_budget' must be from 1 to %i "
                       "(sparsegate_context_budget)", slcf->context_budget);
            return NGX_ERROR;
        }
        rag->budget = it->valueint;
    }

    /* the prompt must leave room for the answer: fix max_tokens now */
    it = cJSON_GetObjectItemCaseSensitive(root, "max_tokens");
    if (cJSON_IsNumber(it) && it->valueint >= 1) {
        rag->max_tokens = it->valueint;
    } else {
        rag->max_tokens = ngx_min(slcf->max_tokens, 512);
        if (it == NULL) {
            cJSON_AddNumberToObject(root, "max_tokens",
                                    (double) rag->max_tokens);
        }
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_sparsegate_rag(ngx_http_request_t *r)
{
    ngx_int_t                   rc;
    ngx_pool_cleanup_t         *cln;
    ngx_http_sparsegate_ctx_t  *ctx;
    ngx_http_sparsegate_rag_t  *rag;

    if (ngx_http_sparsegate_astore() == NULL) {
        return ngx_http_sparsegate_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                   NGX_HTTP_SG_ERR_STORE, NULL,
                   "no passage store: set sparsegate_store");
    }

    cln = ngx_pool_cleanup_add(r->pool, sizeof(ngx_http_sparsegate_rag_t));
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    rag = cln->data;
    ngx_memzero(rag, sizeof(*rag));
    rag->request = r;
    cln->handler = ngx_http_sparsegate_rag_cleanup;

    ctx = ngx_http_get_module_ctx(r, ngx_http_sparsegate_module);
    ctx->rag = rag;

    rag->root = ngx_http_sparsegate_parse_body(r, &rc);
    if (rag->root == NULL) {
        return rc;
    }
    if (ngx_http_sparsegate_check_model(r, rag->root, &rc) != NGX_OK) {
        return rc;
    }
    if (ngx_http_sparsegate_rag_options(r, rag, &rc) != NGX_OK) {
        return rc;
    }

    /* notice a client that leaves while the store works */
    r->read_event_handler = ngx_http_test_reading;

    if (ngx_strcmp(sg_astore_kind(ngx_http_sparsegate_astore()), "redis")
        == 0)
    {
        rag->tokcache = 1;
        rag->tok_hash = sg_tokenizer_hash(
            ((ngx_http_sparsegate_main_conf_t *)
             ngx_http_get_module_main_conf(r, ngx_http_sparsegate_module))
            ->tokenizer);
    }

    rag->phase = rag->want_shared ? NGX_HTTP_SG_RAG_SHARED
                                  : NGX_HTTP_SG_RAG_RANKED;
    return ngx_http_sparsegate_rag_start(rag);
}
