/*
 * SQLite + FTS5 store: one file, WAL mode, BM25 ranking.  The FTS table is
 * an external-content index over `passages`, kept in sync by triggers, so
 * an upsert of a passage updates its index entry too.
 *
 * Async use (sg_astore): a query on a local file takes a few milliseconds,
 * so it runs to completion inside sg_astore_search() and the query object
 * comes back already done.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "store_impl.h"
#include "store_kinds.h"
#include "terms.h"

typedef struct sqlite_store {
    sg_store  base;
    sqlite3  *db;
    char     *path;
    int64_t   deadline;     /* of the running statement (progress hook) */
} sqlite_store;

static const char schema[] =
    "PRAGMA journal_mode=WAL;"
    "PRAGMA synchronous=NORMAL;"
    "CREATE TABLE IF NOT EXISTS documents("
    "  doc_id TEXT PRIMARY KEY, collection TEXT NOT NULL,"
    "  title TEXT NOT NULL DEFAULT '', meta TEXT);"
    "CREATE TABLE IF NOT EXISTS passages("
    "  rowid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE,"
    "  doc_id TEXT NOT NULL, collection TEXT NOT NULL,"
    "  title TEXT NOT NULL DEFAULT '', text TEXT NOT NULL, meta TEXT);"
    "CREATE INDEX IF NOT EXISTS passages_by_collection"
    "  ON passages(collection, id);"
    "CREATE INDEX IF NOT EXISTS passages_by_doc ON passages(doc_id);"
    "CREATE VIRTUAL TABLE IF NOT EXISTS passages_fts USING fts5("
    "  title, text, content='passages', content_rowid='rowid',"
    "  tokenize='porter unicode61');"
    "CREATE TRIGGER IF NOT EXISTS passages_ai AFTER INSERT ON passages BEGIN"
    "  INSERT INTO passages_fts(rowid, title, text)"
    "  VALUES (new.rowid, new.title, new.text); END;"
    "CREATE TRIGGER IF NOT EXISTS passages_ad AFTER DELETE ON passages BEGIN"
    "  INSERT INTO passages_fts(passages_fts, rowid, title, text)"
    "  VALUES ('delete', old.rowid, old.title, old.text); END;"
    "CREATE TRIGGER IF NOT EXISTS passages_au AFTER UPDATE ON passages BEGIN"
    "  INSERT INTO passages_fts(passages_fts, rowid, title, text)"
    "  VALUES ('delete', old.rowid, old.title, old.text);"
    "  INSERT INTO passages_fts(rowid, title, text)"
    "  VALUES (new.rowid, new.title, new.text); END;";

static int
db_err(sqlite_store *s, char *err, int errlen, const char *what)
{
    int code = sqlite3_errcode(s->db);

    if (code == SQLITE_INTERRUPT)
        return sg_store_err(err, errlen, SG_STORE_ETIMEOUT,
                            "sqlite %s: %s: timed out", s->path, what);
    if (code == SQLITE_NOMEM)
        return sg_store_err(err, errlen, SG_STORE_ENOMEM,
                            "sqlite %s: %s: out of memory", s->path, what);
    if (code == SQLITE_CORRUPT || code == SQLITE_NOTADB)
        return sg_store_err(err, errlen, SG_STORE_EBADROW,
                            "sqlite %s: %s: %s", s->path, what,
                            sqlite3_errmsg(s->db));
    return sg_store_err(err, errlen, SG_STORE_EFAIL, "sqlite %s: %s: %s",
                        s->path, what, sqlite3_errmsg(s->db));
}

/* Interrupts a statement that runs past the deadline. */
static int
progress(void *ud)
{
    sqlite_store *s = ud;

    return s->deadline > 0 && sg_now_ms() > s->deadline;
}

static int
sqlite_ingest(sg_store *st, const sg_passage *p, size_t n, char *err,
    int errlen)
{
    sqlite_store *s = (sqlite_store *)st;
    sqlite3_stmt *doc = NULL, *pas = NULL;
    int           rc = SG_STORE_OK;

    s->deadline = 0;
    if (sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return db_err(s, err, errlen, "begin");
    if (sqlite3_prepare_v2(s->db,
            "INSERT INTO documents(doc_id, collection, title, meta)"
            " VALUES (?1, ?2, ?3, ?4) ON CONFLICT(doc_id) DO UPDATE SET"
            " collection = excluded.collection, title = excluded.title,"
            " meta = excluded.meta", -1, &doc, NULL) != SQLITE_OK
        || sqlite3_prepare_v2(s->db,
            "INSERT INTO passages(id, doc_id, collection, title, text, meta)"
            " VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(id) DO UPDATE SET"
            " doc_id = excluded.doc_id, collection = excluded.collection,"
            " title = excluded.title, text = excluded.text,"
            " meta = excluded.meta"
            " WHERE passages.text IS NOT excluded.text"
            "    OR passages.title IS NOT excluded.title"
            "    OR passages.meta IS NOT excluded.meta"
            "    OR passages.doc_id IS NOT excluded.doc_id"
            "    OR passages.collection IS NOT excluded.collection",
            -1, &pas, NULL) != SQLITE_OK)
    {
        rc = db_err(s, err, errlen, "prepare ingest");
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        sqlite3_bind_text(doc, 1, p[i].doc_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(doc, 2, p[i].collection, -1, SQLITE_STATIC);
        sqlite3_bind_text(doc, 3, p[i].title ? p[i].title : "", -1,
                          SQLITE_STATIC);
        sqlite3_bind_text(doc, 4, p[i].meta, -1, SQLITE_STATIC);
        if (sqlite3_step(doc) != SQLITE_DONE) {
            rc = db_err(s, err, errlen, "insert document");
            goto done;
        }
        sqlite3_reset(doc);
        sqlite3_bind_text(pas, 1, p[i].id, -1, SQLITE_STATIC);
        sqlite3_bind_text(pas, 2, p[i].doc_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(pas, 3, p[i].collection, -1, SQLITE_STATIC);
        sqlite3_bind_text(pas, 4, p[i].title ? p[i].title : "", -1,
                          SQLITE_STATIC);
        sqlite3_bind_text(pas, 5, p[i].text, -1, SQLITE_STATIC);
        sqlite3_bind_text(pas, 6, p[i].meta, -1, SQLITE_STATIC);
        if (sqlite3_step(pas) != SQLITE_DONE) {
            rc = db_err(s, err, errlen, "insert passage");
            goto done;
        }
        sqlite3_reset(pas);
    }
done:
    sqlite3_finalize(doc);
    sqlite3_finalize(pas);
    if (rc == SG_STORE_OK
        && sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        rc = db_err(s, err, errlen, "commit");
    if (rc != SG_STORE_OK)
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

/* Appends "AND ..." for the filters; binds start at *next. */
typedef struct sql_buf {
    char   *s;
    size_t  n, cap;
} sql_buf;

static int
sb_add(sql_buf *b, const char *t)
{
    size_t l = strlen(t);

    if (b->n + l + 1 > b->cap) {
        size_t cap = (b->cap + l + 1) * 2;
        char  *s = realloc(b->s, cap);

        if (s == NULL)
            return -1;
        b->s = s;
        b->cap = cap;
    }
    memcpy(b->s + b->n, t, l + 1);
    b->n += l;
    return 0;
}

/* FTS5 query: every term quoted, OR-ed (a question's words are not all
 * in the answer).  NULL when the text has no terms. */
static char *
fts_query(const char *query)
{
    sg_terms t;
    sql_buf  b = { 0 };
    int      fail = 0;

    if (sg_terms_split(query, &t) < 0)
        return NULL;
    for (size_t i = 0; i < t.n; i++) {
        fail |= sb_add(&b, i ? " OR \"" : "\"");
        fail |= sb_add(&b, t.v[i]);         /* no quotes in a term */
        fail |= sb_add(&b, "\"");
    }
    sg_terms_free(&t);
    if (fail) {
        free(b.s);
        return NULL;
    }
    return b.s;
}

static int
row_to_passage(sqlite_store *s, sqlite3_stmt *st, sg_passage_list *out,
    char *err, int errlen)
{
    sg_passage p = { 0 };

    p.id = (char *)sqlite3_column_text(st, 0);
    p.doc_id = (char *)sqlite3_column_text(st, 1);
    p.title = (char *)sqlite3_column_text(st, 2);
    p.text = (char *)sqlite3_column_text(st, 3);
    p.collection = (char *)sqlite3_column_text(st, 4);
    p.meta = (char *)sqlite3_column_text(st, 5);
    p.score = sqlite3_column_double(st, 6);
    p.n_tokens = -1;
    if (p.id == NULL || p.text == NULL || p.doc_id == NULL)
        return sg_store_err(err, errlen, SG_STORE_EBADROW,
                            "sqlite %s: passage row without id/text/doc_id",
                            s->path);
    if (!sg_meta_is_object(p.meta))
        return sg_store_err(err, errlen, SG_STORE_EBADROW,
                            "sqlite %s: passage %s: meta is not a JSON "
                            "object", s->path, p.id);
    return sg_passage_list_push(out, &p) == SG_STORE_OK
           ? SG_STORE_OK
           : sg_store_err(err, errlen, SG_STORE_ENOMEM, "out of memory");
}

static int
sqlite_search(sg_store *st, const char *query, const sg_search_opts *o,
    sg_passage_list *out, char *err, int errlen)
{
    sqlite_store *s = (sqlite_store *)st;
    sqlite3_stmt *stmt = NULL;
    sql_buf       b = { 0 };
    char         *fq = NULL;
    int           fts = query && query[0], bind = 1, rc = SG_STORE_OK;
    int           limit = sg_search_limit(o), fail = 0, r;
    size_t        first = out->n;

    if (fts) {
        fq = fts_query(query);
        if (fq == NULL)
            return sg_store_err(err, errlen, SG_STORE_ENOMEM,
                                "out of memory");
        if (fq[0] == '\0') {           /* only stop words: no match */
            free(fq);
            return SG_STORE_OK;
        }
        fail |= sb_add(&b,
            "SELECT p.id, p.doc_id, p.title, p.text, p.collection, p.meta,"
            " -bm25(passages_fts, 2.0, 1.0) FROM passages_fts"
            " JOIN passages p ON p.rowid = passages_fts.rowid"
            " WHERE passages_fts MATCH ?");
    } else {
        fail |= sb_add(&b,
            "SELECT p.id, p.doc_id, p.title, p.text, p.collection, p.meta,"
            " 0.0 FROM passages p WHERE 1");
    }
    if (o && o->collection)
        fail |= sb_add(&b, " AND p.collection = ?");
    if (o && o->n_doc_ids > 0) {
        fail |= sb_add(&b, " AND p.doc_id IN (");
        for (int i = 0; i < o->n_doc_ids; i++)
            fail |= sb_add(&b, i ? ",?" : "?");
        fail |= sb_add(&b, ")");
    }
    /* The metadata filter runs in C on the rows (exact JSON typing);
     * over-fetch so a selective filter still fills the limit. */
    fail |= sb_add(&b, fts ? " ORDER BY bm25(passages_fts, 2.0, 1.0), p.id"
                           : " ORDER BY p.collection, p.id");
    fail |= sb_add(&b, " LIMIT ?");
    if (fail) {
        free(fq);
        free(b.s);
        return sg_store_err(err, errlen, SG_STORE_ENOMEM, "out of memory");
    }
    s->deadline = sg_now_ms() + sg_search_timeout(o, 0);
    if (sqlite3_prepare_v2(s->db, b.s, -1, &stmt, NULL) != SQLITE_OK) {
        rc = db_err(s, err, errlen, "prepare search");
        goto done;
    }
    if (fts)
        sqlite3_bind_text(stmt, bind++, fq, -1, SQLITE_STATIC);
    if (o && o->collection)
        sqlite3_bind_text(stmt, bind++, o->collection, -1, SQLITE_STATIC);
    for (int i = 0; o && i < o->n_doc_ids; i++)
        sqlite3_bind_text(stmt, bind++, o->doc_ids[i], -1, SQLITE_STATIC);
    sqlite3_bind_int(stmt, bind++,
                     o && o->meta_filter ? limit * 20 + 100 : limit);
    while ((r = sqlite3_step(stmt)) == SQLITE_ROW) {
        if (o && o->meta_filter
            && !sg_meta_matches((const char *)sqlite3_column_text(stmt, 5),
                                o->meta_filter))
            continue;
        rc = row_to_passage(s, stmt, out, err, errlen);
        if (rc != SG_STORE_OK || out->n - first >= (size_t)limit)
            break;
    }
    if (rc == SG_STORE_OK && r != SQLITE_ROW && r != SQLITE_DONE)
        rc = db_err(s, err, errlen, "search");
done:
    s->deadline = 0;
    sqlite3_finalize(stmt);
    free(fq);
    free(b.s);
    if (rc != SG_STORE_OK) {
        while (out->n > first)
            sg_passage_clear(&out->v[--out->n]);
    }
    return rc;
}

static int
sqlite_get(sg_store *st, const char *const *ids, size_t n,
    sg_passage_list *out, char *err, int errlen)
{
    sqlite_store *s = (sqlite_store *)st;
    sqlite3_stmt *stmt;
    int           rc = SG_STORE_OK, r;

    if (sqlite3_prepare_v2(s->db,
            "SELECT id, doc_id, title, text, collection, meta, 0.0"
            " FROM passages WHERE id = ?", -1, &stmt, NULL) != SQLITE_OK)
        return db_err(s, err, errlen, "prepare get");
    for (size_t i = 0; i < n && rc == SG_STORE_OK; i++) {
        sqlite3_bind_text(stmt, 1, ids[i], -1, SQLITE_STATIC);
        r = sqlite3_step(stmt);
        if (r == SQLITE_ROW)
            rc = row_to_passage(s, stmt, out, err, errlen);
        else if (r != SQLITE_DONE)
            rc = db_err(s, err, errlen, "get");
        sqlite3_reset(stmt);
    }
    sqlite3_finalize(stmt);
    return rc;
}

static long
sqlite_count(sg_store *st, const char *collection, char *err, int errlen)
{
    sqlite_store *s = (sqlite_store *)st;
    sqlite3_stmt *stmt;
    long          n = -1;

    if (sqlite3_prepare_v2(s->db,
            "SELECT count(*) FROM passages WHERE ?1 IS NULL"
            " OR collection = ?1", -1, &stmt, NULL) != SQLITE_OK)
    {
        db_err(s, err, errlen, "count");
        return -1;
    }
    sqlite3_bind_text(stmt, 1, collection, -1, SQLITE_STATIC);
    if (sqlite3_step(stmt) == SQLITE_ROW)
        n = sqlite3_column_int64(stmt, 0);
    else
        db_err(s, err, errlen, "count");
    sqlite3_finalize(stmt);
    return n;
}

static void
sqlite_close(sg_store *st)
{
    sqlite_store *s = (sqlite_store *)st;

    sqlite3_close(s->db);
    free(s->path);
    free(s);
}

static const sg_store_vt sqlite_vt = {
    "sqlite", sqlite_ingest, sqlite_search, sqlite_get, sqlite_count,
    sqlite_close,
};

int
sg_sqlite_open(const char *path, sg_store **out, char *err, int errlen)
{
    sqlite_store *s;
    char         *msg = NULL;

    *out = NULL;
    if (path == NULL || path[0] == '\0')
        return sg_store_err(err, errlen, SG_STORE_EINVAL,
                            "sqlite store: no file path");
    s = calloc(1, sizeof(*s));
    if (s == NULL || (s->path = strdup(path)) == NULL) {
        free(s);
        return sg_store_err(err, errlen, SG_STORE_ENOMEM, "out of memory");
    }
    s->base.vt = &sqlite_vt;
    if (sqlite3_open_v2(path, &s->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE
                        | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK)
    {
        int rc = sg_store_err(err, errlen, SG_STORE_EDOWN,
                              "sqlite %s: cannot open: %s", path,
                              s->db ? sqlite3_errmsg(s->db)
                                    : "out of memory");
        sqlite_close(&s->base);
        return rc;
    }
    sqlite3_busy_timeout(s->db, SG_STORE_TIMEOUT_MS);
    sqlite3_progress_handler(s->db, 1000, progress, s);
    if (sqlite3_exec(s->db, schema, NULL, NULL, &msg) != SQLITE_OK) {
        int code = sqlite3_errcode(s->db);
        int rc = sg_store_err(err, errlen,
                              code == SQLITE_NOTADB || code == SQLITE_CORRUPT
                              ? SG_STORE_EBADROW : SG_STORE_EDOWN,
                              "sqlite %s: schema: %s", path,
                              msg ? msg : "error");
        sqlite3_free(msg);
        sqlite_close(&s->base);
        return rc;
    }
    *out = &s->base;
    return SG_STORE_OK;
}

/* ---- async face: runs inline, returns a finished query ---------------- */

typedef struct sqlite_astore {
    sg_astore  base;
    sg_store  *store;
} sqlite_astore;

static int
sqlite_asearch(sg_astore *as, const char *query, const sg_search_opts *o,
    sg_aquery **qp, char *err, int errlen)
{
    sqlite_astore *a = (sqlite_astore *)as;
    sg_search_opts opts = { 0 };
    sg_aquery     *q = calloc(1, sizeof(*q));
    int            rc;

    if (q == NULL)
        return sg_store_err(err, errlen, SG_STORE_ENOMEM, "out of memory");
    if (o)
        opts = *o;
    opts.timeout_ms = sg_search_timeout(o, as->timeout_ms);
    q->deadline = sg_now_ms() + opts.timeout_ms;
    rc = sqlite_search(a->store, query, &opts, &q->res, q->err,
                       sizeof(q->err));
    q->done = 1;
    q->fd = -1;
    q->code = rc;
    *qp = q;
    return SG_STORE_OK;
}

static void
sqlite_aclose(sg_astore *as)
{
    sqlite_astore *a = (sqlite_astore *)as;

    sqlite_close(a->store);
    free(a);
}

static const sg_astore_vt sqlite_avt = {
    "sqlite", sqlite_asearch, sqlite_aclose,
};

int
sg_sqlite_aopen(const char *path, sg_astore **out, char *err, int errlen)
{
    sqlite_astore *a = calloc(1, sizeof(*a));
    int            rc;

    if (a == NULL)
        return sg_store_err(err, errlen, SG_STORE_ENOMEM, "out of memory");
    rc = sg_sqlite_open(path, &a->store, err, errlen);
    if (rc != SG_STORE_OK) {
        free(a);
        return rc;
    }
    a->base.vt = &sqlite_avt;
    *out = &a->base;
    return SG_STORE_OK;
}
