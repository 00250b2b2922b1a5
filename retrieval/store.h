/*
 * Passage stores: SQLite + FTS5 (embedded default), PostgreSQL (tsvector,
 * ts_rank_cd) and Redis (hashes + a Lua-scored inverted index + a cache of
 * pre-tokenized passages).
 *
 * Two faces:
 *   - sg_store: SYNCHRONOUS, for the CLI (ingest, search, context), tests
 *     and benchmarks.
 *   - sg_astore / sg_aquery: NON-BLOCKING, for the nginx worker.  A query
 *     object exposes one file descriptor, what it waits for (read/write)
 *     and a deadline; the host waits on the fd with its own event loop and
 *     calls sg_aquery_step() when it is ready (or when the deadline passes)
 *     until the query is done.  No callback ever runs on the host's behalf.
 *
 * Work that would block an event loop (a "sqlite:" store's whole search:
 * file reads and FTS5; splitting a long question into terms for the
 * networked stores) is not done inside sg_astore_search() or a step: the
 * query asks for a thread instead (SG_AQ_WORK below), and the host runs
 * sg_aquery_work() in one of its own (nginx's thread pool).
 *
 * SQLite is opened read-only, without creating anything, by every face but
 * sg_store_open_rw() (ingest): a mistyped path is an error, not an empty
 * store.  A read-only SQLite store notices a file replaced or rewritten
 * under it (device, inode, size, mtime, checked before each query) and a
 * query failing as corrupt or with an I/O error, and reopens the file.
 *
 * Store URIs:  sqlite:/path/file.db
 *              postgres:host=127.0.0.1 port=5432 dbname=x user=y
 *                (anything PQconnectdb accepts, "postgres://..." too;
 *                give an IP or hostaddr=: libpq resolves names blocking)
 *              redis:127.0.0.1:6379     (an IP: no blocking DNS)
 */
#ifndef SG_STORE_H
#define SG_STORE_H

#include <stddef.h>
#include <stdint.h>

/* Result codes (0 or negative).  sg_store_http_status() maps them to the
 * status the gateway answers with. */
#define SG_STORE_OK         0
#define SG_STORE_EINVAL    -1   /* bad argument or query (400) */
#define SG_STORE_EDOWN     -2   /* server unreachable or lost (502) */
#define SG_STORE_ETIMEOUT  -3   /* past the deadline (504) */
#define SG_STORE_EBADROW   -4   /* the store returned malformed data (502) */
#define SG_STORE_ENOMEM    -5   /* out of memory (503, as the engine's) */
#define SG_STORE_EFAIL     -6   /* other server-side error (502) */
#define SG_STORE_EBUSY     -7   /* every pooled connection in use: retry (503) */

int sg_store_http_status(int code);
const char *sg_store_strerror(int code);    /* "store_timeout", ... */

typedef struct sg_passage {
    char    *id;          /* unique in its collection, "rfc2616:0007" */
    char    *doc_id;      /* the document it was cut from (its id is
                             unique in the collection too) */
    char    *title;       /* document title ("" when none) */
    char    *text;
    char    *collection;
    char    *meta;        /* JSON object text, NULL when none */
    double   score;       /* rank score of this search, higher = better */
    /* Token cache: the encoding of this passage's context block (see
     * context.h), filled by sg_tokcache_* or by the context builder;
     * tokens == NULL and n_tokens == -1 when unknown. */
    int32_t *tokens;
    int      n_tokens;
} sg_passage;

typedef struct sg_passage_list {
    sg_passage *v;
    size_t      n;
    size_t      cap;
} sg_passage_list;

/* Appends a deep copy of p (tokens too); 0 or SG_STORE_ENOMEM. */
int sg_passage_list_push(sg_passage_list *l, const sg_passage *p);
void sg_passage_clear(sg_passage *p);           /* frees the fields */
void sg_passage_list_free(sg_passage_list *l);  /* frees all; l reusable */

typedef struct sg_search_opts {
    /* NULL = every collection; a name must be 1..SG_COLLECTION_MAX bytes
     * without control characters (sg_collection_check), else the search
     * is refused with SG_STORE_EINVAL: "" never means "every one". */
    const char         *collection;
    /* Metadata filter: a JSON object; a passage matches when each of its
     * keys has an equal value (string/number/bool) in the passage's meta.
     * NULL = no filter. */
    const char         *meta_filter;
    const char *const  *doc_ids;      /* only these documents; NULL = all */
    int                 n_doc_ids;
    int                 limit;        /* 0 = 10; capped at 10000 */
    int                 timeout_ms;   /* sync calls too; 0 = 5000 */
} sg_search_opts;

/* The defaults, written once: a query's (and a connection's) time limit,
 * and the connections an async store keeps per worker. */
#define SG_STORE_TIMEOUT_MS  5000
#define SG_STORE_POOL_SIZE   4

/* A search uses the first SG_SEARCH_MAX_TERMS distinct terms of its query
 * (words, stop words left out; the question a host puts in its prompt is
 * not cut): past them, scanning stops, so neither a store's query nor the
 * time to build it grows with a longer question. */
#define SG_SEARCH_MAX_TERMS  512

/* Longest collection name, in bytes. */
#define SG_COLLECTION_MAX    256

/* 0 when name can name a collection: 1..SG_COLLECTION_MAX bytes, none of
 * them a control character (0x01-0x1f, 0x7f); else SG_STORE_EINVAL and
 * why, in err.  (A NUL cannot be seen in a C string: a host reading
 * JSON must refuse "\u0000" itself.) */
int sg_collection_check(const char *name, char *err, int errlen);

/* The schema a store is written in (SQLite's user_version, a row of
 * PostgreSQL's sg_schema table, Redis's key sg:schema).  Version 2: ids of
 * passages and documents are unique per collection.  sg_store_open_rw()
 * (`sparsegate migrate`) upgrades a store of version 1 (ids unique across
 * collections): SQLite and PostgreSQL in one transaction, Redis in steps
 * that resume when interrupted.  Until then SQLite's and Redis's read
 * faces refuse it, naming that command; PostgreSQL's reads it as it is. */
#define SG_STORE_SCHEMA      2

/*
 * Search semantics, every store alike:
 *   - query non-empty: full-text search, best first (score descending,
 *     ties by id).  Query text is plain words; operators are not parsed.
 *     Its first SG_SEARCH_MAX_TERMS distinct terms are searched; a query
 *     without any (only stop words or punctuation: "What is this?",
 *     "((((") finds nothing: an empty result, never an error.
 *   - query NULL or "": a listing in CANONICAL order (collection, then id,
 *     byte order), score 0: how the context builder gets the shared block
 *     of a collection, and how a request naming doc_ids gets its passages.
 */

typedef struct sg_store sg_store;

/* Opens a store to read it (search, get, count); blocking.  A "sqlite:"
 * file must exist and be a SparseGate store of SG_STORE_SCHEMA. */
int sg_store_open(const char *uri, sg_store **out, char *err, int errlen);
/* Opens a store to ingest into: a "sqlite:" file and its schema are
 * created when missing; a store of an older schema is upgraded. */
int sg_store_open_rw(const char *uri, sg_store **out, char *err,
    int errlen);
void sg_store_close(sg_store *s);
const char *sg_store_kind(const sg_store *s);   /* "sqlite", ... */

/* What can be checked of a store's URI without the network (what
 * `nginx -t` runs): its form, and for "sqlite:" that the file exists and
 * is a SparseGate store of SG_STORE_SCHEMA (opened read-only, closed).
 * Networked stores are reached by the first query only. */
int sg_store_check(const char *uri, char *err, int errlen);

/* Upserts passages (same id -> replaced, never duplicated) in one
 * transaction: either all of them are stored or none. */
int sg_store_ingest(sg_store *s, const sg_passage *p, size_t n, char *err,
    int errlen);

int sg_store_search(sg_store *s, const char *query, const sg_search_opts *o,
    sg_passage_list *out, char *err, int errlen);

/* Passages of a collection by id, in the order of ids; a missing id is
 * skipped. */
int sg_store_get(sg_store *s, const char *collection, const char *const *ids,
    size_t n, sg_passage_list *out, char *err, int errlen);

/* Number of passages (in a collection, or all when NULL); -1 on error. */
long sg_store_count(sg_store *s, const char *collection, char *err,
    int errlen);

/* ---------------------------------------------------------------------
 * Non-blocking access for an event loop (one sg_astore per worker).
 */

typedef struct sg_astore sg_astore;
typedef struct sg_aquery sg_aquery;

typedef struct sg_astore_opts {
    int pool_size;          /* connections kept per worker; 0 = 4 */
    int timeout_ms;         /* per query, connect included; 0 = 5000 */
} sg_astore_opts;

/* Parses the URI and sets up an empty pool: makes NO connection and never
 * blocks (for sqlite: checks that the file is a SparseGate store, which
 * reads a local file; its connections are opened by the queries' work). */
int sg_astore_open(const char *uri, const sg_astore_opts *o,
    sg_astore **out, char *err, int errlen);
/* Frees the pool; every query must have been freed first. */
void sg_astore_close(sg_astore *as);
const char *sg_astore_kind(const sg_astore *as);

/* Starts a search (same semantics as sg_store_search; o->timeout_ms, when
 * set, overrides the store's).  SG_STORE_OK with *q set, which may already
 * be done; an error code when it could not even start (a full pool:
 * SG_STORE_EBUSY, and the host retries when a query finishes or soon).
 * The query reads the text of query and the strings and doc_ids of *o
 * (not *o itself) until it is done: keep them alive until then. */
int sg_astore_search(sg_astore *as, const char *query,
    const sg_search_opts *o, sg_aquery **q, char *err, int errlen);

#define SG_AQ_READ   1
#define SG_AQ_WRITE  2
/* The query has blocking work (file reads, CPU) and no fd: call
 * sg_aquery_work(q) in a thread (or inline, in a host without threads),
 * then sg_aquery_step(q, SG_AQ_WORK) back on the event loop.  The work
 * keeps the deadline itself: no timer runs meanwhile, and nothing else may
 * touch q until the work has returned. */
#define SG_AQ_WORK   4

#define SG_AQ_DONE   0      /* sg_aquery_step(): finished, read the result */
#define SG_AQ_AGAIN  1      /* wait on fd/wants/deadline again */

/* The fd to wait on: it CAN CHANGE after a step (connect, reconnect):
 * re-register when it does.  -1 once done. */
int sg_aquery_fd(const sg_aquery *q);
/* SG_AQ_READ|SG_AQ_WRITE, or SG_AQ_WORK alone */
int sg_aquery_wants(const sg_aquery *q);
/* Absolute deadline, CLOCK_MONOTONIC milliseconds. */
int64_t sg_aquery_deadline(const sg_aquery *q);
int sg_aquery_done(const sg_aquery *q);

/* Call when the fd is ready (events = SG_AQ_READ|SG_AQ_WRITE seen), the
 * deadline has passed (events = 0), or the work has been done (events =
 * SG_AQ_WORK): past the deadline the query ends with SG_STORE_ETIMEOUT and
 * its connection is dropped (never reused).  Never blocks. */
int sg_aquery_step(sg_aquery *q, int events);

/* The query's blocking work (see SG_AQ_WORK): any thread, one at a time;
 * it touches only q and what sg_astore_search said to keep alive. */
void sg_aquery_work(sg_aquery *q);

/* The outcome once done: SG_STORE_OK and the passages moved into *out
 * (appended), or an error code and message. */
int sg_aquery_result(sg_aquery *q, sg_passage_list *out, char *err,
    int errlen);

/* Frees a query; one still running is abandoned (its connection closed). */
void sg_aquery_free(sg_aquery *q);

/* Starts a listing of the store's collections: the result holds one
 * passage per collection, in byte order of the name, with the name in
 * collection and id and its number of passages in score (the other text
 * fields empty).  Otherwise as sg_astore_search (SG_STORE_EBUSY when the
 * pool is full). */
int sg_astore_collections(sg_astore *as, sg_aquery **q, char *err,
    int errlen);

/* Monotonic clock in ms (what deadlines are measured in). */
int64_t sg_now_ms(void);

#endif
