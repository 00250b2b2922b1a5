/*
 * POST /v1/rag: a question (+ retrieval options) -> store queries on the
 * event loop -> a prompt built to a token budget -> a generation whose
 * response (chat.completion shape, streamed or not) carries "citations":
 * every passage the prompt holds, by id.
 *
 * Request:  {"question": "...", "collection": "...", "doc_ids": [...],
 *            "filter": {...}, "top_k": 8, "shared": true,
 *            "context_budget": 32768, "citation_text": false,
 *            + the sampling fields of
 *            /v1/chat/completions (max_tokens, stream, seed, ...)}
 *
 * The flow is the table of phases below, run in order by rag_run().  A
 * phase either finishes (NGX_OK: the next one runs; a phase with nothing to
 * do finishes at once) or waits on one event (NGX_AGAIN): a store query, a
 * thread of nginx's pool, or a retry timer while the store's connection
 * pool is full.  That event's handler ends the phase or runs it again
 * through rag_resume().  The last phase hands the request to a job.
 *
 *   phase             passages  waits on
 *   shared block      shared    the collection's listing (store query)
 *   search            ranked    the question's search (store query)
 *   token cache get   shared    cached token ids (redis: store query)
 *   token cache get   ranked    cached token ids (redis: store query)
 *   context build               the thread pool (the prompt's tokens)
 *   token cache put   shared    tokens encoded here (redis: store query)
 *   token cache put   ranked    tokens encoded here (redis: store query)
 *   generate                    - (the job answers from here)
 */

#include "ngx_http_sparsegate_endpoints.h"
#include "ngx_http_sparsegate_conf.h"
#include "ngx_http_sparsegate_constrain.h"
#include "ngx_http_sparsegate_job.h"
#include "ngx_http_sparsegate_json.h"
#include "ngx_http_sparsegate_messages.h"
#include "ngx_http_sparsegate_offload.h"
#include "ngx_http_sparsegate_params.h"
#include "ngx_http_sparsegate_running.h"
#include "ngx_http_sparsegate_send.h"
#include "ngx_http_sparsegate_store.h"

#include "context.h"
#include "tokcache.h"


#define NGX_HTTP_SG_RAG_SHARED      0   /* the shared block's passages */
#define NGX_HTTP_SG_RAG_RANKED      1   /* the question's passages */

/* a week: a passage changed behind ingest's back is re-tokenized then */
#define NGX_HTTP_SG_TOKCACHE_TTL    604800

/* how often a request waiting for a pooled store connection looks again */
#define NGX_HTTP_SG_RAG_BUSY_RETRY  5

/* passages of a collection's listing (the shared block) */
#define NGX_HTTP_SG_RAG_LISTING     10000


typedef struct {
    ngx_http_request_t               *request;
    ngx_uint_t                        phase;      /* running or waiting */

    /* the request's options */
    cJSON                            *root;       /* strings point here */
    const char                       *question;
    sg_search_opts                    search;
    char                             *meta_filter;   /* malloc'ed */
    ngx_uint_t                        want_shared;
    ngx_uint_t                        citation_text;  /* each citation
                                                         with its text */
    ngx_uint_t                        tokcache;   /* the store caches tokens */
    ngx_int_t                         budget;
    ngx_http_sparsegate_job_opts_t    job;

    sg_passage_list                   lists[2];   /* shared, ranked */
    ngx_http_sparsegate_query_t       query;
    ngx_event_t                       retry;
    ngx_msec_t                        busy_since;

    sg_ctx_opts                       ctx_opts;
    sg_context                        sc;
    ngx_uint_t                        built;
    int                               build_rc;     /* sg_context_build */
    char                              build_err[256];

    ngx_http_sparsegate_running_t     running;    /* for /v1/status, until
                                                     the job's own */
    ngx_http_sparsegate_fault_t       fault;      /* when a phase fails */
    ngx_int_t                         rc;         /* the job's, at the end */
} ngx_http_sparsegate_rag_t;


typedef ngx_int_t (*ngx_http_sparsegate_rag_phase_pt)(
    ngx_http_sparsegate_rag_t *rag, sg_passage_list *list);

typedef struct {
    ngx_str_t                          name;
    ngx_http_sparsegate_rag_phase_pt   run;
    ngx_uint_t                         list;      /* NGX_HTTP_SG_RAG_* */
} ngx_http_sparsegate_rag_phase_t;


/* RAG's own fields, and the generation's of /v1/chat/completions that
 * apply ("top_k" is the search's). */
static const char *const  ngx_http_sparsegate_rag_fields[] = {
    "model", "question", "query", "collection", "doc_ids", "filter", "top_k",
    "shared", "context_budget", "max_tokens", "max_completion_tokens",
    "temperature", "top_p", "min_p", "n", "stream", "stream_options", "stop",
    "seed", "presence_penalty", "frequency_penalty", "repetition_penalty",
    "logit_bias", "logprobs", "top_logprobs", "response_format", "thinking",
    "chat_template_kwargs", "ignore_eos", "citation_text", "cache_salt",
    NULL
};


static ngx_int_t ngx_http_sparsegate_rag_search(
    ngx_http_sparsegate_rag_t *rag, sg_passage_list *list);
static ngx_int_t ngx_http_sparsegate_rag_cache_get(
    ngx_http_sparsegate_rag_t *rag, sg_passage_list *list);
static ngx_int_t ngx_http_sparsegate_rag_build(
    ngx_http_sparsegate_rag_t *rag, sg_passage_list *list);
static ngx_int_t ngx_http_sparsegate_rag_cache_put(
    ngx_http_sparsegate_rag_t *rag, sg_passage_list *list);
static ngx_int_t ngx_http_sparsegate_rag_generate(
    ngx_http_sparsegate_rag_t *rag, sg_passage_list *list);

static ngx_int_t ngx_http_sparsegate_rag_run(ngx_http_sparsegate_rag_t *rag);
static void ngx_http_sparsegate_rag_resume(ngx_http_sparsegate_rag_t *rag,
    ngx_int_t rc);


static ngx_http_sparsegate_rag_phase_t  ngx_http_sparsegate_rag_phases[] = {

    { ngx_string("shared block"), ngx_http_sparsegate_rag_search,
      NGX_HTTP_SG_RAG_SHARED },

    { ngx_string("search"), ngx_http_sparsegate_rag_search,
      NGX_HTTP_SG_RAG_RANKED },

    { ngx_string("token cache get"), ngx_http_sparsegate_rag_cache_get,
      NGX_HTTP_SG_RAG_SHARED },

    { ngx_string("token cache get"), ngx_http_sparsegate_rag_cache_get,
      NGX_HTTP_SG_RAG_RANKED },

    { ngx_string("context build"), ngx_http_sparsegate_rag_build, 0 },

    { ngx_string("token cache put"), ngx_http_sparsegate_rag_cache_put,
      NGX_HTTP_SG_RAG_SHARED },

    { ngx_string("token cache put"), ngx_http_sparsegate_rag_cache_put,
      NGX_HTTP_SG_RAG_RANKED },

    /* the last: it hands the request over (NGX_DONE), never NGX_OK */
    { ngx_string("generate"), ngx_http_sparsegate_rag_generate, 0 }
};


/* ------------------------------------------------------------ the flow */

/* Runs phases from the current one until one waits or the request is
 * answered: NGX_DONE, or what to finalize the request with. */
static ngx_int_t
ngx_http_sparsegate_rag_run(ngx_http_sparsegate_rag_t *rag)
{
    ngx_int_t                         rc;
    ngx_http_request_t               *r;
    ngx_http_sparsegate_rag_phase_t  *ph;

    r = rag->request;

    for ( ;; ) {
        ph = &ngx_http_sparsegate_rag_phases[rag->phase];
        ngx_http_sparsegate_running_phase(&rag->running,
                                          (const char *) ph->name.data);

        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "sparsegate rag: phase %ui \"%V\"", rag->phase,
                       &ph->name);

        rc = ph->run(rag, &rag->lists[ph->list]);

        switch (rc) {

        case NGX_OK:
            rag->phase++;
            continue;

        case NGX_AGAIN:
            ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                           "sparsegate rag: phase \"%V\" waits", &ph->name);
            return NGX_DONE;

        case NGX_DONE:
            return rag->rc;

        default:
            ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                           "sparsegate rag: phase \"%V\" failed", &ph->name);
            return ngx_http_sparsegate_send_fault(r, &rag->fault);
        }
    }
}


/* The event a phase waited on has come: rc is how the phase ended (NGX_OK
 * finished, NGX_ERROR failed with rag->fault) or NGX_AGAIN to run it again. */
static void
ngx_http_sparsegate_rag_resume(ngx_http_sparsegate_rag_t *rag, ngx_int_t rc)
{
    ngx_http_request_t  *r;

    r = rag->request;

    switch (rc) {

    case NGX_OK:
        rag->phase++;
        rc = ngx_http_sparsegate_rag_run(rag);
        break;

    case NGX_AGAIN:
        rc = ngx_http_sparsegate_rag_run(rag);
        break;

    default:
        rc = ngx_http_sparsegate_send_fault(r, &rag->fault);
        break;
    }

    if (rc != NGX_DONE) {
        ngx_http_sparsegate_finalize(r, rc);
    }
}


/* -------------------------------------------------- store query phases */

static ngx_int_t
ngx_http_sparsegate_rag_store_fault(ngx_http_sparsegate_rag_t *rag, int code,
    const char *err)
{
    return ngx_http_sparsegate_fault(&rag->fault, sg_store_http_status(code),
               ngx_http_sparsegate_store_error_kind(code),
               NULL, "store (%s): %s", sg_store_strerror(code), err);
}


/* The finished query's passages into out (a search), or its tokens into
 * the passages (the token cache: out NULL, and a failure only costs the
 * tokenizing it would have saved). */
static ngx_int_t
ngx_http_sparsegate_rag_result(ngx_http_sparsegate_rag_t *rag,
    sg_passage_list *out)
{
    int               code;
    char              err[256];
    sg_passage_list   none;

    ngx_memzero(&none, sizeof(sg_passage_list));
    code = ngx_http_sparsegate_query_result(&rag->query, out ? out : &none,
                                            err, sizeof(err));
    sg_passage_list_free(&none);

    if (code == SG_STORE_OK) {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, rag->request->connection->log, 0,
                       "sparsegate rag: query done, %uz passages",
                       out ? out->n : 0);
        return NGX_OK;
    }
    if (out == NULL) {
        ngx_log_error(NGX_LOG_WARN, rag->request->connection->log, 0,
                      "sparsegate: token cache: %s", err);
        return NGX_OK;
    }
    return ngx_http_sparsegate_rag_store_fault(rag, code, err);
}


static void
ngx_http_sparsegate_rag_search_done(void *data)
{
    ngx_http_sparsegate_rag_t *rag = data;

    ngx_uint_t  list;

    list = ngx_http_sparsegate_rag_phases[rag->phase].list;
    ngx_http_sparsegate_rag_resume(rag,
        ngx_http_sparsegate_rag_result(rag, &rag->lists[list]));
}


static void
ngx_http_sparsegate_rag_cache_done(void *data)
{
    ngx_http_sparsegate_rag_t *rag = data;

    ngx_http_sparsegate_rag_resume(rag,
                                   ngx_http_sparsegate_rag_result(rag, NULL));
}


/* rag->query.query has started: it has finished (NGX_OK, result taken),
 * or waits (NGX_AGAIN, done() takes it). */
static ngx_int_t
ngx_http_sparsegate_rag_query(ngx_http_sparsegate_rag_t *rag,
    sg_passage_list *out, ngx_http_sparsegate_query_done_pt done)
{
    ngx_int_t  rc;

    rc = ngx_http_sparsegate_query_wait(&rag->query, rag->request, done,
                                        rag);
    if (rc == NGX_OK) {
        return ngx_http_sparsegate_rag_result(rag, out);
    }
    if (rc == NGX_AGAIN) {
        return NGX_AGAIN;
    }

    ngx_http_sparsegate_query_close(&rag->query);
    return ngx_http_sparsegate_fault(&rag->fault,
               NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_SG_ERR_STORE, NULL,
               "cannot watch the store connection");
}


static void
ngx_http_sparsegate_rag_retry(ngx_event_t *ev)
{
    ngx_http_sparsegate_rag_resume(ev->data, NGX_AGAIN);
}


/* Every pooled store connection is in use: wait for one (a short timer,
 * then the phase runs again) while within the store timeout. */
static ngx_int_t
ngx_http_sparsegate_rag_wait_pool(ngx_http_sparsegate_rag_t *rag,
    const char *err)
{
    ngx_msec_t                        limit;
    ngx_http_sparsegate_main_conf_t  *smcf;

    smcf = ngx_http_get_module_main_conf(rag->request,
                                         ngx_http_sparsegate_module);

    if (rag->busy_since == 0) {
        rag->busy_since = ngx_current_msec ? ngx_current_msec : 1;
    }
    limit = rag->search.timeout_ms > 0 ? (ngx_msec_t) rag->search.timeout_ms
                                       : smcf->store_timeout;
    if (ngx_current_msec - rag->busy_since >= limit) {
        return ngx_http_sparsegate_fault(&rag->fault,
                   sg_store_http_status(SG_STORE_EBUSY),
                   NGX_HTTP_SG_ERR_STORE, NULL, "store: %s", err);
    }

    rag->retry.handler = ngx_http_sparsegate_rag_retry;
    rag->retry.data = rag;
    rag->retry.log = rag->request->connection->log;
    ngx_add_timer(&rag->retry, NGX_HTTP_SG_RAG_BUSY_RETRY);
    return NGX_AGAIN;
}


/* The shared block (the collection's listing, when asked for) or the
 * question's search. */
static ngx_int_t
ngx_http_sparsegate_rag_search(ngx_http_sparsegate_rag_t *rag,
    sg_passage_list *list)
{
    int              code;
    char             err[256];
    ngx_uint_t       shared;
    sg_search_opts   o;

    shared = (list == &rag->lists[NGX_HTTP_SG_RAG_SHARED]);
    if (shared && !rag->want_shared) {
        return NGX_OK;
    }

    o = rag->search;
    if (shared) {
        o.limit = NGX_HTTP_SG_RAG_LISTING;
    }

    code = sg_astore_search(ngx_http_sparsegate_store(),
                            shared ? "" : rag->question, &o,
                            &rag->query.query, err, sizeof(err));
    if (code == SG_STORE_EBUSY) {
        return ngx_http_sparsegate_rag_wait_pool(rag, err);
    }
    rag->busy_since = 0;
    if (code != SG_STORE_OK) {
        return ngx_http_sparsegate_fault(&rag->fault,
                   sg_store_http_status(code),
                   ngx_http_sparsegate_store_error_kind(code),
                   NULL, "store: %s", err);
    }

    return ngx_http_sparsegate_rag_query(rag, list,
                                         ngx_http_sparsegate_rag_search_done);
}


/* A token cache query has started (code): it only saves work, so one that
 * could not start is passed over. */
static ngx_int_t
ngx_http_sparsegate_rag_cache_query(ngx_http_sparsegate_rag_t *rag, int code,
    const char *err)
{
    if (code != SG_STORE_OK) {
        ngx_log_error(NGX_LOG_WARN, rag->request->connection->log, 0,
                      "sparsegate: token cache: %s", err);
        rag->query.query = NULL;
        return NGX_OK;
    }

    return ngx_http_sparsegate_rag_query(rag, NULL,
                                         ngx_http_sparsegate_rag_cache_done);
}


static ngx_int_t
ngx_http_sparsegate_rag_cache_get(ngx_http_sparsegate_rag_t *rag,
    sg_passage_list *list)
{
    int                               code;
    char                              err[256];
    ngx_http_sparsegate_main_conf_t  *smcf;

    if (!rag->tokcache || list->n == 0) {
        return NGX_OK;
    }

    smcf = ngx_http_get_module_main_conf(rag->request,
                                         ngx_http_sparsegate_module);
    code = sg_atokcache_get(ngx_http_sparsegate_store(),
                            smcf->tokenizer_hash, list->v, list->n,
                            &rag->query.query, err, sizeof(err));
    return ngx_http_sparsegate_rag_cache_query(rag, code, err);
}


static ngx_int_t
ngx_http_sparsegate_rag_cache_put(ngx_http_sparsegate_rag_t *rag,
    sg_passage_list *list)
{
    int                               code;
    char                              err[256];
    ngx_http_sparsegate_main_conf_t  *smcf;

    if (!rag->tokcache || rag->sc.encoded == 0 || list->n == 0) {
        return NGX_OK;
    }

    smcf = ngx_http_get_module_main_conf(rag->request,
                                         ngx_http_sparsegate_module);
    code = sg_atokcache_put(ngx_http_sparsegate_store(),
                            smcf->tokenizer_hash, list->v, list->n,
                            NGX_HTTP_SG_TOKCACHE_TTL, &rag->query.query, err,
                            sizeof(err));
    return ngx_http_sparsegate_rag_cache_query(rag, code, err);
}


/* ------------------------------------------------------- context build */

/* In a thread (or inline): the prompt from the passages. */
static void
ngx_http_sparsegate_rag_build_work(void *data)
{
    ngx_http_sparsegate_rag_t *rag = data;

    rag->build_rc = sg_context_build(
                        rag->want_shared
                        ? &rag->lists[NGX_HTTP_SG_RAG_SHARED] : NULL,
                        &rag->lists[NGX_HTTP_SG_RAG_RANKED],
                        rag->question, &rag->ctx_opts, &rag->sc,
                        rag->build_err, sizeof(rag->build_err));
    rag->built = rag->build_rc == 0;
}


static ngx_int_t
ngx_http_sparsegate_rag_built(ngx_http_sparsegate_rag_t *rag)
{
    switch (rag->build_rc) {

    case 0:
        break;

    case SG_CTX_ETOOLONG:
        return ngx_http_sparsegate_fault(&rag->fault, NGX_HTTP_BAD_REQUEST,
                   NGX_HTTP_SG_ERR_CONTEXT_LENGTH, "question",
                   "cannot build the context: %s", rag->build_err);

    case SG_CTX_ENOMEM:
        return ngx_http_sparsegate_fault(&rag->fault,
                   NGX_HTTP_SERVICE_UNAVAILABLE, NGX_HTTP_SG_ERR_NO_MEMORY,
                   NULL, "cannot build the context: %s", rag->build_err);

    default:
        return ngx_http_sparsegate_fault(&rag->fault,
                   NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_SG_ERR_ENGINE,
                   NULL, "cannot build the context: %s", rag->build_err);
    }

    ngx_log_debug4(NGX_LOG_DEBUG_HTTP, rag->request->connection->log, 0,
                   "sparsegate rag: context of %d tokens (%d before the "
                   "question), %uz passages, %d encoded here",
                   rag->sc.n_tokens, rag->sc.prefix_tokens, rag->sc.n_cites,
                   rag->sc.encoded);
    return NGX_OK;
}


static void
ngx_http_sparsegate_rag_build_done(ngx_http_request_t *r, void *data)
{
    ngx_http_sparsegate_rag_resume(data, ngx_http_sparsegate_rag_built(data));
}


/* The prompt, to the budget: in nginx's thread pool (tens of thousands of
 * tokens to encode), inline without one. */
static ngx_int_t
ngx_http_sparsegate_rag_build(ngx_http_sparsegate_rag_t *rag,
    sg_passage_list *list)
{
    ngx_int_t                         rc;
    ngx_http_sparsegate_main_conf_t  *smcf;

    smcf = ngx_http_get_module_main_conf(rag->request,
                                         ngx_http_sparsegate_module);

    sg_ctx_opts_default(&rag->ctx_opts);
    rag->ctx_opts.budget = (int) rag->budget;
    rag->ctx_opts.model_limit = (int) (smcf->context_limit
                                       - rag->job.sampling.max_tokens);
    rag->ctx_opts.encode = sg_ctx_tokenizer_encode;
    rag->ctx_opts.encode_ud = smcf->tokenizer;
    rag->ctx_opts.thinking = (int) rag->job.thinking;

    rc = ngx_http_sparsegate_offload(rag->request,
                                     ngx_http_sparsegate_rag_build_work,
                                     ngx_http_sparsegate_rag_build_done, rag);
    if (rc == NGX_DONE) {
        return NGX_AGAIN;
    }
    if (rc == NGX_ERROR) {
        return ngx_http_sparsegate_fault(&rag->fault,
                   NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_SG_ERR_ENGINE,
                   NULL, "cannot post the context build to a thread");
    }

    ngx_http_sparsegate_rag_build_work(rag);
    return ngx_http_sparsegate_rag_built(rag);
}


/* ------------------------------------------------------------ generate */

/* The text of the passage id, from the lists the store gave.  The
 * prompt holds passages in the order of their lists, so each search
 * starts where the last one ended (at[]): one pass over the lists in
 * all. */
static const char *
ngx_http_sparsegate_rag_passage_text(ngx_http_sparsegate_rag_t *rag,
    const char *id, size_t *at)
{
    size_t            i, k, l;
    sg_passage_list  *list;

    for (l = 0; l < 2; l++) {
        list = &rag->lists[l];
        for (k = 0; k < list->n; k++) {
            i = (at[l] + k) % list->n;
            if (ngx_strcmp(list->v[i].id, id) == 0) {
                at[l] = i + 1;
                return list->v[i].text;
            }
        }
    }
    return "";
}


/* The passages the prompt holds, as the response's "citations" array;
 * NULL when out of memory. */
static char *
ngx_http_sparsegate_rag_citations(ngx_http_sparsegate_rag_t *rag)
{
    char         *text;
    cJSON        *arr, *c;
    size_t        i, at[2];
    ngx_uint_t    failed;
    sg_context   *sc;
    sg_citation  *ct;

    failed = ngx_http_sparsegate_json_failures();
    sc = &rag->sc;
    at[0] = 0;
    at[1] = 0;

    arr = cJSON_CreateArray();
    if (arr == NULL) {
        return NULL;
    }
    for (i = 0; i < sc->n_cites; i++) {
        ct = &sc->cites[i];
        c = cJSON_CreateObject();
        cJSON_AddStringToObject(c, "id", ct->id);
        cJSON_AddStringToObject(c, "doc_id", ct->doc_id ? ct->doc_id : "");
        cJSON_AddStringToObject(c, "title", ct->title ? ct->title : "");
        if (ct->collection) {
            cJSON_AddStringToObject(c, "collection", ct->collection);
        }
        cJSON_AddNumberToObject(c, "score", ct->score);
        if (ct->rank >= 0) {
            cJSON_AddNumberToObject(c, "rank", ct->rank);
        } else {
            cJSON_AddNullToObject(c, "rank");
        }
        cJSON_AddBoolToObject(c, "shared", ct->shared);
        cJSON_AddNumberToObject(c, "tokens", ct->n_tokens);
        if (rag->citation_text) {
            cJSON_AddStringToObject(c, "text",
                ngx_http_sparsegate_rag_passage_text(rag, ct->id, at));
        }
        ngx_http_sparsegate_json_push(arr, c);
    }
    /* a citation that lost a field for want of memory is no citation */
    text = ngx_http_sparsegate_json_failures() == failed
           ? cJSON_PrintUnformatted(arr) : NULL;
    cJSON_Delete(arr);
    return text;
}


/* The prompt's ids and the citations to a job, which answers from here. */
static ngx_int_t
ngx_http_sparsegate_rag_generate(ngx_http_sparsegate_rag_t *rag,
    sg_passage_list *list)
{
    char  *citations;

    /* the job lists the request from here */
    ngx_http_sparsegate_running_remove(&rag->running);

    citations = ngx_http_sparsegate_rag_citations(rag);
    if (citations == NULL) {
        /* the request's end frees the context and the lists */
        return ngx_http_sparsegate_fault(&rag->fault,
                   NGX_HTTP_SERVICE_UNAVAILABLE, NGX_HTTP_SG_ERR_NO_MEMORY,
                   NULL, "out of memory for the citations");
    }
    rag->job.citations.data = (u_char *) citations;
    rag->job.citations.len = ngx_strlen(citations);

    rag->rc = ngx_http_sparsegate_job_run(rag->request, &rag->job,
                                          rag->sc.ids,
                                          (size_t) rag->sc.n_tokens);
    free(citations);
    ngx_str_null(&rag->job.citations);

    /* the job copied what it needs */
    sg_context_free(&rag->sc);
    rag->built = 0;
    sg_passage_list_free(&rag->lists[NGX_HTTP_SG_RAG_SHARED]);
    sg_passage_list_free(&rag->lists[NGX_HTTP_SG_RAG_RANKED]);

    return NGX_DONE;
}


/* ------------------------------------------------------------- request */

static void
ngx_http_sparsegate_rag_cleanup(void *data)
{
    ngx_http_sparsegate_rag_t *rag = data;

    ngx_http_sparsegate_running_remove(&rag->running);
    ngx_http_sparsegate_query_close(&rag->query);
    if (rag->retry.timer_set) {
        ngx_del_timer(&rag->retry);
    }
    if (rag->built) {
        sg_context_free(&rag->sc);
        rag->built = 0;
    }
    sg_passage_list_free(&rag->lists[NGX_HTTP_SG_RAG_SHARED]);
    sg_passage_list_free(&rag->lists[NGX_HTTP_SG_RAG_RANKED]);
    free(rag->meta_filter);
    cJSON_Delete(rag->root);
    rag->root = NULL;
}


/* The retrieval options: question, collection, filter, doc_ids, top_k,
 * shared, context_budget. */
static ngx_int_t
ngx_http_sparsegate_rag_options(ngx_http_request_t *r,
    ngx_http_sparsegate_rag_t *rag, ngx_http_sparsegate_fault_t *f)
{
    int                              n, i;
    char                             err[256];
    cJSON                           *root, *it, *id;
    const char                     **doc_ids;
    ngx_http_sparsegate_loc_conf_t  *slcf;

    slcf = ngx_http_get_module_loc_conf(r, ngx_http_sparsegate_module);
    root = rag->root;

    it = cJSON_GetObjectItemCaseSensitive(root, "question");
    if (it == NULL) {
        it = cJSON_GetObjectItemCaseSensitive(root, "query");
    }
    if (!cJSON_IsString(it) || it->valuestring[0] == '\0') {
        return ngx_http_sparsegate_fault(f, NGX_HTTP_BAD_REQUEST,
                   NGX_HTTP_SG_ERR_BAD_REQUEST, "question",
                   "'question' must be a non-empty string");
    }
    rag->question = it->valuestring;

    it = cJSON_GetObjectItemCaseSensitive(root, "collection");
    if (it != NULL && !cJSON_IsNull(it)) {
        if (!cJSON_IsString(it)) {
            return ngx_http_sparsegate_fault(f, NGX_HTTP_BAD_REQUEST,
                       NGX_HTTP_SG_ERR_BAD_REQUEST, "collection",
                       "'collection' must be a string");
        }
        /* "" names no collection (leave the field out for every one) */
        if (sg_collection_check(it->valuestring, err, sizeof(err)) != 0) {
            return ngx_http_sparsegate_fault(f, NGX_HTTP_BAD_REQUEST,
                       NGX_HTTP_SG_ERR_BAD_REQUEST, "collection",
                       "'collection': %s", err);
        }
        rag->search.collection = it->valuestring;
    }

    it = cJSON_GetObjectItemCaseSensitive(root, "filter");
    if (it != NULL && !cJSON_IsNull(it)) {
        if (!cJSON_IsObject(it)) {
            return ngx_http_sparsegate_fault(f, NGX_HTTP_BAD_REQUEST,
                       NGX_HTTP_SG_ERR_BAD_REQUEST, "filter",
                       "'filter' must be a JSON object");
        }
        rag->meta_filter = cJSON_PrintUnformatted(it);
        rag->search.meta_filter = rag->meta_filter;
    }

    it = cJSON_GetObjectItemCaseSensitive(root, "doc_ids");
    if (it != NULL && !cJSON_IsNull(it)) {
        n = cJSON_GetArraySize(it);
        if (!cJSON_IsArray(it) || n == 0 || n > 10000) {
            return ngx_http_sparsegate_fault(f, NGX_HTTP_BAD_REQUEST,
                       NGX_HTTP_SG_ERR_BAD_REQUEST, "doc_ids",
                       "'doc_ids' must be an array of 1 to 10000 strings");
        }
        doc_ids = ngx_palloc(r->pool, n * sizeof(char *));
        if (doc_ids == NULL) {
            return ngx_http_sparsegate_fault_oom(f);
        }
        i = 0;
        cJSON_ArrayForEach(id, it) {
            if (!cJSON_IsString(id)) {
                return ngx_http_sparsegate_fault(f, NGX_HTTP_BAD_REQUEST,
                           NGX_HTTP_SG_ERR_BAD_REQUEST, "doc_ids",
                           "doc_ids[%d] is not a string", i);
            }
            doc_ids[i++] = id->valuestring;
        }
        rag->search.doc_ids = doc_ids;
        rag->search.n_doc_ids = n;
    }

    rag->search.limit = 8;
    it = cJSON_GetObjectItemCaseSensitive(root, "top_k");
    if (it != NULL && !cJSON_IsNull(it)) {
        if (!cJSON_IsNumber(it) || it->valueint < 1 || it->valueint > 1000) {
            return ngx_http_sparsegate_fault(f, NGX_HTTP_BAD_REQUEST,
                       NGX_HTTP_SG_ERR_BAD_REQUEST, "top_k",
                       "'top_k' must be an integer from 1 to 1000");
        }
        rag->search.limit = it->valueint;
    }

    /* the shared block needs a collection (or documents) to list */
    rag->want_shared = (rag->search.collection != NULL
                        || rag->search.doc_ids != NULL);
    it = cJSON_GetObjectItemCaseSensitive(root, "shared");
    if (cJSON_IsBool(it)) {
        rag->want_shared = rag->want_shared && cJSON_IsTrue(it);
    }

    it = cJSON_GetObjectItemCaseSensitive(root, "citation_text");
    if (it != NULL && !cJSON_IsNull(it)) {
        if (!cJSON_IsBool(it)) {
            return ngx_http_sparsegate_fault(f, NGX_HTTP_BAD_REQUEST,
                       NGX_HTTP_SG_ERR_BAD_REQUEST, "citation_text",
                       "'citation_text' must be true or false");
        }
        rag->citation_text = cJSON_IsTrue(it);
    }

    rag->budget = slcf->context_budget;
    it = cJSON_GetObjectItemCaseSensitive(root, "context_budget");
    if (it != NULL && !cJSON_IsNull(it)) {
        if (!cJSON_IsNumber(it) || it->valueint < 1
            || it->valueint > slcf->context_budget)
        {
            return ngx_http_sparsegate_fault(f, NGX_HTTP_BAD_REQUEST,
                       NGX_HTTP_SG_ERR_BAD_REQUEST, "context_budget",
                       "'context_budget' must be from 1 to %i "
                       "(sparsegate_context_budget)", slcf->context_budget);
        }
        rag->budget = it->valueint;
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_sparsegate_rag(ngx_http_request_t *r)
{
    ngx_int_t                         limit;
    ngx_uint_t                        thinking;
    ngx_http_sparsegate_rformat_t     rf;
    ngx_pool_cleanup_t               *cln;
    ngx_http_sparsegate_rag_t        *rag;
    ngx_http_sparsegate_fault_t      *f;
    ngx_http_sparsegate_loc_conf_t   *slcf;
    ngx_http_sparsegate_main_conf_t  *smcf;

    smcf = ngx_http_get_module_main_conf(r, ngx_http_sparsegate_module);
    slcf = ngx_http_get_module_loc_conf(r, ngx_http_sparsegate_module);

    if (ngx_http_sparsegate_store() == NULL) {
        return ngx_http_sparsegate_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                   NGX_HTTP_SG_ERR_STORE, NULL,
                   "no passage store: set sparsegate_store");
    }

    cln = ngx_pool_cleanup_add(r->pool, sizeof(ngx_http_sparsegate_rag_t));
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    rag = cln->data;
    ngx_memzero(rag, sizeof(ngx_http_sparsegate_rag_t));
    rag->request = r;
    cln->handler = ngx_http_sparsegate_rag_cleanup;
    f = &rag->fault;

    rag->root = ngx_http_sparsegate_parse_body(r, f);
    if (rag->root == NULL
        || ngx_http_sparsegate_check_fields(r, rag->root,
                                            ngx_http_sparsegate_rag_fields,
                                            "", f) != NGX_OK
        || ngx_http_sparsegate_parse_model(r, rag->root, f) != NGX_OK
        || ngx_http_sparsegate_rag_options(r, rag, f) != NGX_OK
        || ngx_http_sparsegate_parse_job_opts(r, rag->root,
                                              NGX_HTTP_SG_FMT_RAG, &rag->job,
                                              f)
           != NGX_OK
        || ngx_http_sparsegate_parse_thinking(rag->root, &thinking, f)
           != NGX_OK
        || ngx_http_sparsegate_parse_response_format(r, rag->root, &rf, f)
           != NGX_OK
        || ngx_http_sparsegate_grammar(r, &rf, NULL, 0, NULL, 1, thinking,
                                       &rag->job.sampling.grammar, f)
           != NGX_OK)
    {
        return ngx_http_sparsegate_send_fault(r, f);
    }
    rag->job.thinking = thinking;

    /* the prompt must leave room for the answer: max_tokens is known now */
    limit = smcf->context_limit;
    if (rag->job.sampling.max_tokens < 0) {
        rag->job.sampling.max_tokens = ngx_min(slcf->max_tokens, 512);
    }
    if (limit - rag->job.sampling.max_tokens <= 0) {
        return ngx_http_sparsegate_error(r, NGX_HTTP_BAD_REQUEST,
                   NGX_HTTP_SG_ERR_CONTEXT_LENGTH, "max_tokens",
                   "max_tokens %i leaves no room for a prompt in the "
                   "context of %i tokens", rag->job.sampling.max_tokens,
                   limit);
    }

    rag->tokcache = ngx_strcmp(sg_astore_kind(ngx_http_sparsegate_store()),
                               "redis") == 0;

    ngx_log_debug5(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "sparsegate rag: top_k %d, shared %ui, budget %i, "
                   "max_tokens %i, token cache %ui", rag->search.limit,
                   rag->want_shared, rag->budget,
                   rag->job.sampling.max_tokens, rag->tokcache);

    /* notice a client that leaves while the store works */
    r->read_event_handler = ngx_http_test_reading;

    rag->running.stream = rag->job.stream;
    ngx_http_sparsegate_running_add(&rag->running, r, "rag",
        (const char *) ngx_http_sparsegate_rag_phases[0].name.data);

    return ngx_http_sparsegate_rag_run(rag);
}
