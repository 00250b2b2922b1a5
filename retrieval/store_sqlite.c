/*
 * SQLite + FTS5 store: one file, WAL mode, BM25 ranking.  The FTS table is
 * an external-content index over `passages`, kept in sync by triggers, so
 * an upsert of a passage updates its index entry too.  Schema 2
 * (PRAGMA user_version): ids of passages and of documents are unique per
 * collection.
 *
 * Only ingest (sg_store_open_rw) writes: it creates the file and schema
 * when missing, upgrades a store of schema 1, and leaves the write-ahead
 * log empty when it closes, so the file alone is the whole store (safe to
 * copy or move into place).  Every other connection is read-only and
 * never creates anything; before each call it compares the file's device,
 * inode, size and mtime with those it opened (one stat), and reopens when
 * they differ or when a call failed as corrupt or with an I/O error (then
 * the call runs once more on the fresh connection).
 *
 * Async use (sg_astore): a pool of read-only connections; a query takes
 * one on the event loop and runs its whole search in sg_aquery_work(),
 * the host's thread (SG_AQ_WORK), so file reads never stall the loop.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sqlite3.h>

#include "store_impl.h"
#include "store_kinds.h"
#include "terms.h"

typedef struct sqlite_store {
    sg_store         base;
    sqlite3         *db;        /* NULL: opened by the next call */
    char            *path;
    int              rw;
    int              file_failed;  /* the last error was the file's */
    struct stat      st;        /* the file as it was opened (read-only) */
    int64_t          deadline;  /* of the running statement */
} sqlite_store;

#define SQLITE_PASSAGES \
    "CREATE TABLE IF NOT EXISTS passages(" \
    "  rowid INTEGER PRIMARY KEY, id TEXT NOT NULL," \
    "  doc_id TEXT NOT NULL, collection TEXT NOT NULL," \
    "  title TEXT NOT NULL DEFAULT '', text TEXT NOT NULL, meta TEXT," \
    "  UNIQUE (collection, id));"
#define SQLITE_DOCUMENTS \
    "CREATE TABLE IF NOT EXISTS documents(" \
    "  collection TEXT NOT NULL, doc_id TEXT NOT NULL," \
    "  title TEXT NOT NULL DEFAULT '', meta TEXT," \
    "  PRIMARY KEY (collection, doc_id));"

/* Schema 2; every statement is a no-op on a store that has it. */
static const char schema[] =
    SQLITE_DOCUMENTS
    SQLITE_PASSAGES
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
    "  VALUES (new.rowid, new.title, new.text); END;"
    "PRAGMA user_version = 2;";

/* Schema 1 -> 2: the tables rebuilt with per-collection keys; passages
 * keep their rowids, so the FTS index stays valid as it is (ids were
 * unique across collections, so they are unique within each). */
static const char migrate_1_2[] =
    "DROP TRIGGER IF EXISTS passages_ai;"
    "DROP TRIGGER IF EXISTS passages_ad;"
    "DROP TRIGGER IF EXISTS passages_au;"
    "ALTER TABLE documents RENAME TO documents_v1;"
    SQLITE_DOCUMENTS
    "INSERT INTO documents(collection, doc_id, title, meta)"
    "  SELECT collection, doc_id, title, meta FROM documents_v1;"
    "DROP TABLE documents_v1;"
    "ALTER TABLE passages RENAME TO passages_v1;"
    SQLITE_PASSAGES
    "INSERT INTO passages(rowid, id, doc_id, collection, title, text, meta)"
    "  SELECT rowid, id, doc_id, collection, title, text, meta"
    "  FROM passages_v1;"
    "DROP TABLE passages_v1;";

static int
is_file_error(int code)
{
    code &= 0xff;
    return code == SQLITE_CORRUPT || code == SQLITE_NOTADB
           || code == SQLITE_IOERR || code == SQLITE_CANTOPEN;
}

static int
db_err(sqlite_store *s, char *err, int errlen, const char *what)
{
    int code = s->db ? sqlite3_errcode(s->db) : SQLITE_NOMEM;

    s->file_failed = is_file_error(code);
    if (code == SQLITE_INTERRUPT)
        return sg_store_err(err, errlen, SG_STORE_ETIMEOUT,
                            "sqlite %s: %s: timed out", s->path, what);
    if (code == SQLITE_NOMEM)
        return sg_store_err(err, errlen, SG_STORE_ENOMEM,
                            "sqlite %s: %s: out of memory", s->path, what);
    if ((code & 0xff) == SQLITE_CORRUPT || code == SQLITE_NOTADB)
        return sg_store_err(err, errlen, SG_STORE_EBADROW,
                            "sqlite %s: %s: %s", s->path, what,
                            sqlite3_errmsg(s->db));
    return sg_store_err(err, errlen,
                        s->file_failed ? SG_STORE_EDOWN : SG_STORE_EFAIL,
                        "sqlite %s: %s: %s", s->path, what,
                        sqlite3_errmsg(s->db));
}

/* Interrupts a statement that runs past the deadline. */
static int
progress(void *ud)
{
    sqlite_store *s = ud;

    return s->deadline > 0 && sg_now_ms() > s->deadline;
}

/* One integer from a statement; -1 on error. */
static long
query_long(sqlite_store *s, const char *sql)
{
    sqlite3_stmt *st;
    long          v = -1;

    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK)
        return -1;
    if (sqlite3_step(st) == SQLITE_ROW)
        v = (long)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* The store's schema version: 2 or more from user_version, 1 for a store
 * made before versions (its tables without one), 0 for no store at all;
 * -1 when the file cannot be read. */
static long
schema_version(sqlite_store *s)
{
    long v = query_long(s, "PRAGMA user_version"), tables;

    if (v != 0)
        return v;
    tables = query_long(s, "SELECT count(*) FROM sqlite_master WHERE type"
                        " = 'table' AND name IN ('passages', 'documents',"
                        " 'passages_fts')");
    return tables < 0 ? -1 : tables == 3 ? 1 : 0;
}

/* A read-only connection's store must be one of schema 2. */
static int
check_schema(sqlite_store *s, char *err, int errlen)
{
    long v = schema_version(s);

    if (v < 0)
        return db_err(s, err, errlen, "not a SparseGate store");
    if (v == 0)
        return sg_store_err(err, errlen, SG_STORE_EBADROW,
                            "sqlite %s: not a SparseGate store (no passages"
                            " table): make one with `sparsegate ingest`",
                            s->path);
    if (v == 1)
        return sg_store_err(err, errlen, SG_STORE_EBADROW,
                            "sqlite %s: a store of schema 1 (ids unique "
                            "across collections): upgrade it to schema %d"
                            " with `sparsegate migrate --store sqlite:%s`",
                            s->path, SG_STORE_SCHEMA, s->path);
    if (v != SG_STORE_SCHEMA)
        return sg_store_err(err, errlen, SG_STORE_EBADROW,
                            "sqlite %s: schema %ld, this SparseGate reads "
                            "schema %d", s->path, v, SG_STORE_SCHEMA);
    return SG_STORE_OK;
}

/* Ingest's connection: WAL, and schema 2 created or upgraded to. */
static int
setup_schema(sqlite_store *s, char *err, int errlen)
{
    char *msg = NULL;
    long  v;
    int   rc = SG_STORE_OK;

    if (sqlite3_exec(s->db, "PRAGMA journal_mode=WAL;"
                     "PRAGMA synchronous=NORMAL;", NULL, NULL, NULL)
        != SQLITE_OK
        || sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL)
           != SQLITE_OK)
        return db_err(s, err, errlen, "not a SparseGate store");
    v = schema_version(s);
    if (v > SG_STORE_SCHEMA) {
        rc = sg_store_err(err, errlen, SG_STORE_EBADROW,
                          "sqlite %s: schema %ld, this SparseGate writes "
                          "schema %d", s->path, v, SG_STORE_SCHEMA);
    } else if ((v == 1
                && sqlite3_exec(s->db, migrate_1_2, NULL, NULL, &msg)
                   != SQLITE_OK)
               || sqlite3_exec(s->db, schema, NULL, NULL, &msg)
                  != SQLITE_OK)
    {
        rc = sg_store_err(err, errlen,
                          is_file_error(sqlite3_errcode(s->db))
                          ? SG_STORE_EBADROW : SG_STORE_EDOWN,
                          "sqlite %s: schema: %s", s->path,
                          msg ? msg : "error");
        sqlite3_free(msg);
    }
    if (rc == SG_STORE_OK
        && sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        rc = db_err(s, err, errlen, "schema");
    if (rc != SG_STORE_OK)
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

static void
db_close(sqlite_store *s)
{
    if (s->db && s->rw) {
        /* leave the log empty: the file alone is the store */
        sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_TRUNCATE,
                                  NULL, NULL);
    }
    sqlite3_close(s->db);
    s->db = NULL;
}

static int
db_open(sqlite_store *s, char *err, int errlen)
{
    int flags = s->rw ? SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE
                      : SQLITE_OPEN_READONLY;
    int rc;

    if (!s->rw && stat(s->path, &s->st) != 0)
        return sg_store_err(err, errlen, SG_STORE_EDOWN,
                            "sqlite %s: %s%s", s->path, strerror(errno),
                            errno == ENOENT ? ": give the file of a store "
                            "made by `sparsegate ingest`" : "");
    if (!s->rw && !S_ISREG(s->st.st_mode))
        return sg_store_err(err, errlen, SG_STORE_EDOWN,
                            "sqlite %s: not a regular file", s->path);
    if (sqlite3_open_v2(s->path, &s->db, flags | SQLITE_OPEN_NOMUTEX, NULL)
        != SQLITE_OK)
    {
        rc = sg_store_err(err, errlen, SG_STORE_EDOWN,
                          "sqlite %s: cannot open: %s", s->path,
                          s->db ? sqlite3_errmsg(s->db) : "out of memory");
        db_close(s);
        return rc;
    }
    sqlite3_busy_timeout(s->db, SG_STORE_TIMEOUT_MS);
    sqlite3_progress_handler(s->db, 1000, progress, s);
    rc = s->rw ? setup_schema(s, err, errlen) : check_schema(s, err, errlen);
    if (rc != SG_STORE_OK) {
        sqlite3_close(s->db);
        s->db = NULL;
    }
    return rc;
}

/* A read-only connection on the file as it is now: reopened when the file
 * was replaced or rewritten since, or when the last call failed as the
 * file's fault. */
static int
db_fresh(sqlite_store *s, char *err, int errlen)
{
    struct stat st;

    if (s->rw)
        return SG_STORE_OK;
    if (s->db && !s->file_failed && stat(s->path, &st) == 0
        && st.st_dev == s->st.st_dev && st.st_ino == s->st.st_ino
        && st.st_size == s->st.st_size
        && st.st_mtim.tv_sec == s->st.st_mtim.tv_sec
        && st.st_mtim.tv_nsec == s->st.st_mtim.tv_nsec)
        return SG_STORE_OK;
    db_close(s);
    s->file_failed = 0;
    return db_open(s, err, errlen);
}

/* After a call: 1 when it failed as the file's fault on a connection that
 * may predate the file's change (read-only, first try): run it again. */
static int
again(sqlite_store *s, int rc, int *tried)
{
    if (rc == SG_STORE_OK || s->rw || !s->file_failed || (*tried)++)
        return 0;
    db_close(s);
    return 1;
}

static int
sqlite_ingest(sg_store *st, const sg_passage *p, size_t n, char *err,
    int errlen)
{
    sqlite_store *s = (sqlite_store *)st;
    sqlite3_stmt *doc = NULL, *pas = NULL;
    int           rc = SG_STORE_OK;

    if (!s->rw)
        return sg_store_err(err, errlen, SG_STORE_EINVAL,
                            "sqlite %s: opened read-only", s->path);
    s->deadline = 0;
    if (sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return db_err(s, err, errlen, "begin");
    if (sqlite3_prepare_v2(s->db,
            "INSERT INTO documents(doc_id, collection, title, meta)"
            " VALUES (?1, ?2, ?3, ?4) ON CONFLICT(collection, doc_id)"
            " DO UPDATE SET title = excluded.title, meta = excluded.meta",
            -1, &doc, NULL) != SQLITE_OK
        || sqlite3_prepare_v2(s->db,
            "INSERT INTO passages(id, doc_id, collection, title, text, meta)"
            " VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(collection, id)"
            " DO UPDATE SET doc_id = excluded.doc_id,"
            " title = excluded.title, text = excluded.text,"
            " meta = excluded.meta"
            " WHERE passages.text IS NOT excluded.text"
            "    OR passages.title IS NOT excluded.title"
            "    OR passages.meta IS NOT excluded.meta"
            "    OR passages.doc_id IS NOT excluded.doc_id",
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

/* FTS5 query into *fq: the query's terms quoted and OR-ed (a question's
 * words are not all in the answer); "" when it has none.  0 or -1 (out of
 * memory). */
static int
fts_query(const char *query, char **fq)
{
    sg_terms t;
    sql_buf  b = { 0 };
    int      fail;

    *fq = NULL;
    if (sg_terms_split_max(query, SG_SEARCH_MAX_TERMS, &t) < 0)
        return -1;
    fail = sb_add(&b, "");
    for (size_t i = 0; i < t.n; i++) {
        fail |= sb_add(&b, i ? " OR \"" : "\"");
        fail |= sb_add(&b, t.v[i]);         /* no quotes in a term */
        fail |= sb_add(&b, "\"");
    }
    sg_terms_free(&t);
    if (fail) {
        free(b.s);
        return -1;
    }
    *fq = b.s;
    return 0;
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

/* The search's statement text; NULL when out of memory. */
static char *
search_sql(int fts, const sg_search_opts *o)
{
    sql_buf b = { 0 };
    int     fail = 0;

    if (fts)
        fail |= sb_add(&b,
            "SELECT p.id, p.doc_id, p.title, p.text, p.collection, p.meta,"
            " -bm25(passages_fts, 2.0, 1.0) FROM passages_fts"
            " JOIN passages p ON p.rowid = passages_fts.rowid"
            " WHERE passages_fts MATCH ?");
    else
        fail |= sb_add(&b,
            "SELECT p.id, p.doc_id, p.title, p.text, p.collection, p.meta,"
            " 0.0 FROM passages p WHERE 1");
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
        free(b.s);
        return NULL;
    }
    return b.s;
}

/* One try of a search on the connection as it is. */
static int
search_once(sqlite_store *s, const char *sql, const char *fq,
    const sg_search_opts *o, sg_passage_list *out, char *err, int errlen)
{
    sqlite3_stmt *stmt = NULL;
    int           bind = 1, rc = SG_STORE_OK, r;
    int           limit = sg_search_limit(o);
    size_t        first = out->n;

    s->deadline = sg_now_ms() + sg_search_timeout(o, 0);
    if (sqlite3_prepare_v2(s->db, sql, -1, &stmt, NULL) != SQLITE_OK) {
        rc = db_err(s, err, errlen, "prepare search");
        goto done;
    }
    if (fq)
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
    if (rc != SG_STORE_OK) {
        while (out->n > first)
            sg_passage_clear(&out->v[--out->n]);
    }
    return rc;
}

static int
sqlite_search(sg_store *st, const char *query, const sg_search_opts *o,
    sg_passage_list *out, char *err, int errlen)
{
    sqlite_store *s = (sqlite_store *)st;
    char         *fq = NULL, *sql;
    int           rc, tried = 0;

    if (query && query[0]) {
        if (fts_query(query, &fq) < 0)
            return sg_store_err(err, errlen, SG_STORE_ENOMEM,
                                "out of memory");
        if (fq[0] == '\0') {      /* no searchable terms: nothing found */
            free(fq);
            return SG_STORE_OK;
        }
    }
    sql = search_sql(fq != NULL, o);
    if (sql == NULL) {
        free(fq);
        return sg_store_err(err, errlen, SG_STORE_ENOMEM, "out of memory");
    }
    do {
        rc = db_fresh(s, err, errlen);
        if (rc == SG_STORE_OK)
            rc = search_once(s, sql, fq, o, out, err, errlen);
    } while (again(s, rc, &tried));
    free(sql);
    free(fq);
    return rc;
}

static int
get_once(sqlite_store *s, const char *collection, const char *const *ids,
    size_t n, sg_passage_list *out, char *err, int errlen)
{
    sqlite3_stmt *stmt;
    int           rc = SG_STORE_OK, r;
    size_t        first = out->n;

    if (sqlite3_prepare_v2(s->db,
            "SELECT id, doc_id, title, text, collection, meta, 0.0"
            " FROM passages WHERE collection = ? AND id = ?", -1, &stmt,
            NULL) != SQLITE_OK)
        return db_err(s, err, errlen, "prepare get");
    sqlite3_bind_text(stmt, 1, collection, -1, SQLITE_STATIC);
    for (size_t i = 0; i < n && rc == SG_STORE_OK; i++) {
        sqlite3_bind_text(stmt, 2, ids[i], -1, SQLITE_STATIC);
        r = sqlite3_step(stmt);
        if (r == SQLITE_ROW)
            rc = row_to_passage(s, stmt, out, err, errlen);
        else if (r != SQLITE_DONE)
            rc = db_err(s, err, errlen, "get");
        sqlite3_reset(stmt);
    }
    sqlite3_finalize(stmt);
    if (rc != SG_STORE_OK) {
        while (out->n > first)
            sg_passage_clear(&out->v[--out->n]);
    }
    return rc;
}

static int
sqlite_get(sg_store *st, const char *collection, const char *const *ids,
    size_t n, sg_passage_list *out, char *err, int errlen)
{
    sqlite_store *s = (sqlite_store *)st;
    int           rc, tried = 0;

    do {
        rc = db_fresh(s, err, errlen);
        if (rc == SG_STORE_OK)
            rc = get_once(s, collection, ids, n, out, err, errlen);
    } while (again(s, rc, &tried));
    return rc;
}

static long
count_once(sqlite_store *s, const char *collection, char *err, int errlen,
    int *rc)
{
    sqlite3_stmt *stmt;
    long          n = -1;

    *rc = SG_STORE_OK;
    if (sqlite3_prepare_v2(s->db,
            "SELECT count(*) FROM passages WHERE ?1 IS NULL"
            " OR collection = ?1", -1, &stmt, NULL) != SQLITE_OK)
    {
        *rc = db_err(s, err, errlen, "count");
        return -1;
    }
    sqlite3_bind_text(stmt, 1, collection, -1, SQLITE_STATIC);
    if (sqlite3_step(stmt) == SQLITE_ROW)
        n = sqlite3_column_int64(stmt, 0);
    else
        *rc = db_err(s, err, errlen, "count");
    sqlite3_finalize(stmt);
    return n;
}

static long
sqlite_count(sg_store *st, const char *collection, char *err, int errlen)
{
    sqlite_store *s = (sqlite_store *)st;
    long          n = -1;
    int           rc, tried = 0;

    do {
        rc = db_fresh(s, err, errlen);
        if (rc == SG_STORE_OK)
            n = count_once(s, collection, err, errlen, &rc);
    } while (again(s, rc, &tried));
    return rc == SG_STORE_OK ? n : -1;
}

static void
sqlite_close(sg_store *st)
{
    sqlite_store *s = (sqlite_store *)st;

    db_close(s);
    free(s->path);
    free(s);
}

static const sg_store_vt sqlite_vt = {
    "sqlite", sqlite_ingest, sqlite_search, sqlite_get, sqlite_count,
    sqlite_close,
};

/* A store on path, not opened yet. */
static sqlite_store *
sqlite_new(const char *path, int rw)
{
    sqlite_store *s = calloc(1, sizeof(*s));

    if (s == NULL || (s->path = strdup(path)) == NULL) {
        free(s);
        return NULL;
    }
    s->base.vt = &sqlite_vt;
    s->rw = rw;
    return s;
}

int
sg_sqlite_open(const char *path, int rw, sg_store **out, char *err,
    int errlen)
{
    sqlite_store *s;
    int           rc;

    *out = NULL;
    if (path == NULL || path[0] == '\0')
        return sg_store_err(err, errlen, SG_STORE_EINVAL,
                            "sqlite store: no file path");
    s = sqlite_new(path, rw);
    if (s == NULL)
        return sg_store_err(err, errlen, SG_STORE_ENOMEM, "out of memory");
    rc = db_open(s, err, errlen);
    if (rc != SG_STORE_OK) {
        sqlite_close(&s->base);
        return rc;
    }
    *out = &s->base;
    return SG_STORE_OK;
}

/* ---- async face: a pool of connections, each query's search in a thread */

typedef struct sqlite_astore {
    sg_astore      base;
    char          *path;
    sqlite_store **conn;        /* pool_size read-only connections */
    int           *busy;
    int            n_conn;
} sqlite_astore;

typedef struct sqlite_aquery {
    sg_aquery       base;
    sqlite_astore  *as;
    int             slot;
    const char     *query;      /* the caller's, alive until done */
    sg_search_opts  opts;
    int             code;
    char            err[256];
} sqlite_aquery;

static void
sq_work(sg_aquery *base)
{
    sqlite_aquery *q = (sqlite_aquery *)base;

    q->code = sqlite_search(&q->as->conn[q->slot]->base, q->query, &q->opts,
                            &q->base.res, q->err, sizeof(q->err));
}

static void
sq_step(sg_aquery *base, int events)
{
    sqlite_aquery *q = (sqlite_aquery *)base;

    if (events & SG_AQ_WORK)
        sg_aquery_finish(&q->base, q->code,
                         q->code == SG_STORE_OK ? NULL : "%s", q->err);
}

static void
sq_release(sg_aquery *base)
{
    sqlite_aquery *q = (sqlite_aquery *)base;

    q->as->busy[q->slot] = 0;
}

static void
pool_free(sqlite_astore *as)
{
    for (int i = 0; as->conn && i < as->n_conn; i++)
        if (as->conn[i])
            sqlite_close(&as->conn[i]->base);
    free(as->conn);
    free(as->busy);
    as->conn = NULL;
    as->busy = NULL;
}

/* The pool's connections, none opened yet; 0 or -1 (out of memory). */
static int
pool_init(sqlite_astore *as)
{
    as->n_conn = as->base.pool_size > 0 ? as->base.pool_size
                                        : SG_STORE_POOL_SIZE;
    as->conn = calloc(as->n_conn, sizeof(*as->conn));
    as->busy = calloc(as->n_conn, sizeof(*as->busy));
    if (as->conn == NULL || as->busy == NULL) {
        pool_free(as);
        return -1;
    }
    for (int i = 0; i < as->n_conn; i++) {
        as->conn[i] = sqlite_new(as->path, 0);
        if (as->conn[i] == NULL) {
            pool_free(as);
            return -1;
        }
    }
    return 0;
}

/* A query on a free pooled connection, its work to be set by the caller
 * and run in the host's thread; SG_STORE_EBUSY when every connection is
 * taken. */
static int
sq_start(sqlite_astore *as, int timeout_ms, sqlite_aquery **qp, char *err,
    int errlen)
{
    sqlite_aquery *q;
    int            slot = -1;

    if (as->conn == NULL && pool_init(as) < 0)
        return sg_store_err(err, errlen, SG_STORE_ENOMEM, "out of memory");
    for (int i = 0; i < as->n_conn && slot < 0; i++)
        if (!as->busy[i])
            slot = i;
    if (slot < 0)
        return sg_store_err(err, errlen, SG_STORE_EBUSY,
                            "sqlite: all %d pooled connections are busy",
                            as->n_conn);
    q = calloc(1, sizeof(*q));
    if (q == NULL)
        return sg_store_err(err, errlen, SG_STORE_ENOMEM, "out of memory");
    q->as = as;
    q->slot = slot;
    q->base.fd = -1;
    q->base.wants = SG_AQ_WORK;
    q->base.deadline = sg_now_ms() + timeout_ms;
    q->base.step = sq_step;
    q->base.release = sq_release;
    as->busy[slot] = 1;
    *qp = q;
    return SG_STORE_OK;
}

static int
sqlite_asearch(sg_astore *as_, const char *query, const sg_search_opts *o,
    sg_aquery **qp, char *err, int errlen)
{
    sqlite_astore *as = (sqlite_astore *)as_;
    sqlite_aquery *q;
    int            rc, timeout_ms = sg_search_timeout(o, as->base.timeout_ms);

    rc = sq_start(as, timeout_ms, &q, err, errlen);
    if (rc != SG_STORE_OK)
        return rc;
    q->query = query;
    if (o)
        q->opts = *o;
    q->opts.timeout_ms = timeout_ms;
    q->base.work = sq_work;
    *qp = &q->base;
    return SG_STORE_OK;
}

/* Each collection's name and its number of passages, in byte order. */
static int
collections_once(sqlite_store *s, sg_passage_list *out, char *err,
    int errlen)
{
    sqlite3_stmt *stmt;
    int           rc = SG_STORE_OK, step;

    if (sqlite3_prepare_v2(s->db,
            "SELECT collection, count(*) FROM passages"
            " GROUP BY collection ORDER BY collection", -1, &stmt, NULL)
        != SQLITE_OK)
        return db_err(s, err, errlen, "collections");
    while ((step = sqlite3_step(stmt)) == SQLITE_ROW && rc == SG_STORE_OK) {
        const char *name = (const char *)sqlite3_column_text(stmt, 0);

        if (name && sg_collection_push(out, name,
                        (double)sqlite3_column_int64(stmt, 1)) != 0)
            rc = sg_store_err(err, errlen, SG_STORE_ENOMEM, "out of memory");
    }
    if (rc == SG_STORE_OK && step != SQLITE_DONE)
        rc = db_err(s, err, errlen, "collections");
    sqlite3_finalize(stmt);
    return rc;
}

static void
sq_collections_work(sg_aquery *base)
{
    sqlite_aquery *q = (sqlite_aquery *)base;
    sqlite_store  *s = q->as->conn[q->slot];
    int            tried = 0;

    s->deadline = q->base.deadline;
    do {
        q->code = db_fresh(s, q->err, sizeof(q->err));
        if (q->code == SG_STORE_OK)
            q->code = collections_once(s, &q->base.res, q->err,
                                       sizeof(q->err));
    } while (again(s, q->code, &tried));
    s->deadline = 0;
}

static int
sqlite_acollections(sg_astore *as_, sg_aquery **qp, char *err, int errlen)
{
    sqlite_astore *as = (sqlite_astore *)as_;
    sqlite_aquery *q;
    int            rc;

    rc = sq_start(as, as->base.timeout_ms, &q, err, errlen);
    if (rc != SG_STORE_OK)
        return rc;
    q->base.work = sq_collections_work;
    *qp = &q->base;
    return SG_STORE_OK;
}

static void
sqlite_aclose(sg_astore *as_)
{
    sqlite_astore *as = (sqlite_astore *)as_;

    pool_free(as);
    free(as->path);
    free(as);
}

static const sg_astore_vt sqlite_avt = {
    "sqlite", sqlite_asearch, sqlite_aclose, sqlite_acollections,
};

/* Opens nothing: each pooled connection opens the file in the first
 * query's work, so a file missing or broken now is an error of the
 * queries (until it is fixed), not of the store. */
int
sg_sqlite_aopen(const char *path, sg_astore **out, char *err, int errlen)
{
    sqlite_astore *as;

    *out = NULL;
    if (path == NULL || path[0] == '\0')
        return sg_store_err(err, errlen, SG_STORE_EINVAL,
                            "sqlite store: no file path");
    as = calloc(1, sizeof(*as));
    if (as == NULL || (as->path = strdup(path)) == NULL) {
        free(as);
        return sg_store_err(err, errlen, SG_STORE_ENOMEM, "out of memory");
    }
    as->base.vt = &sqlite_avt;
    *out = &as->base;
    return SG_STORE_OK;
}
