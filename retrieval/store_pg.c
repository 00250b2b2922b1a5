/*
 * PostgreSQL store, synchronous face (CLI, ingest, tests): tsvector column
 * with a GIN index, ts_rank_cd ranking, collection / jsonb / document
 * filters.  The statements and the row checks are shared with the async
 * face (store_pg_async.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_pg.h"
#include "store_kinds.h"
#include "terms.h"

/* Same statements as conf/schema.sql (schema 2). */
const char sg_pg_schema[] =
    "CREATE TABLE IF NOT EXISTS documents ("
    " doc_id text COLLATE \"C\" NOT NULL,"
    " collection text COLLATE \"C\" NOT NULL,"
    " title text NOT NULL DEFAULT '', meta jsonb,"
    " PRIMARY KEY (collection, doc_id));"
    "CREATE TABLE IF NOT EXISTS passages ("
    " id text COLLATE \"C\" NOT NULL,"
    " doc_id text COLLATE \"C\" NOT NULL,"
    " collection text COLLATE \"C\" NOT NULL,"
    " title text NOT NULL DEFAULT '', text text NOT NULL, meta jsonb,"
    " tsv tsvector GENERATED ALWAYS AS ("
    "  setweight(to_tsvector('english', title), 'A') ||"
    "  setweight(to_tsvector('english', text), 'B')) STORED,"
    " PRIMARY KEY (collection, id));"
    "CREATE INDEX IF NOT EXISTS passages_tsv ON passages USING gin (tsv);"
    "CREATE INDEX IF NOT EXISTS passages_by_doc ON passages (doc_id);"
    "CREATE INDEX IF NOT EXISTS passages_meta"
    " ON passages USING gin (meta jsonb_path_ops);"
    "CREATE TABLE IF NOT EXISTS sg_schema (version int NOT NULL);"
    "INSERT INTO sg_schema SELECT 2"
    " WHERE NOT EXISTS (SELECT 1 FROM sg_schema);";

/* Schema 1 (ids unique across collections) -> 2: the keys widened to the
 * collection; then sg_pg_schema adds the version. */
static const char migrate_1_2[] =
    "ALTER TABLE documents DROP CONSTRAINT documents_pkey,"
    " ADD PRIMARY KEY (collection, doc_id);"
    "ALTER TABLE passages DROP CONSTRAINT passages_pkey,"
    " ADD PRIMARY KEY (collection, id);"
    "DROP INDEX IF EXISTS passages_by_collection;";

/* The schema's version: 2.. from sg_schema, 1 for tables without it, 0
 * for none (sg_schema is read only where it exists: a query naming a
 * missing table fails as it is parsed). */
static const char tables_sql[] =
    "SELECT CASE WHEN to_regclass('sg_schema') IS NOT NULL THEN -1"
    " WHEN to_regclass('passages') IS NOT NULL THEN 1 ELSE 0 END";
static const char version_sql[] =
    "SELECT coalesce(max(version), 0) FROM sg_schema";

/* Ranking: ts_rank (term frequency, log length normalisation) with the
 * text weighted over the title (weights {D, C, B = text, A = title}).
 * ts_rank_cd (cover density) is the alternative, SG_PG_RANK=cd: on
 * natural-language questions (OR of the words) it ranks much worse, since
 * a cover is any single matching word: recall@10 0.54 against 0.96 on
 * tests/retrieval/questions.jsonl (bench/RESULTS.md). */
#define SEARCH_SQL(rank) \
    "SELECT id, doc_id, title, text, collection, meta::text," \
    " " rank "::float8 AS score" \
    " FROM passages, to_tsquery('english', $1) q" \
    " WHERE tsv @@ q" \
    " AND ($2::text IS NULL OR collection = $2::text)" \
    " AND ($3::jsonb IS NULL OR meta @> $3::jsonb)" \
    " AND ($4::text[] IS NULL OR doc_id = ANY($4::text[]))" \
    " ORDER BY score DESC, id LIMIT $5::int"

static const char search_sql[] =
    SEARCH_SQL("ts_rank('{0.1, 0.2, 1.0, 0.5}', tsv, q, 1)");
static const char search_sql_cd[] =
    SEARCH_SQL("ts_rank_cd(tsv, q, 1)");

static const char list_sql[] =
    "SELECT id, doc_id, title, text, collection, meta::text, 0::float8"
    " FROM passages"
    " WHERE ($1::text IS NULL OR collection = $1::text)"
    " AND ($2::jsonb IS NULL OR meta @> $2::jsonb)"
    " AND ($3::text[] IS NULL OR doc_id = ANY($3::text[]))"
    " ORDER BY collection, id LIMIT $4::int";

static void
quiet_notices(void *arg, const char *message)
{
    (void)arg;
    (void)message;      /* "query contains only stop words" and the like */
}

PGconn *
sg_pg_connect(const char *conninfo, int timeout_ms, int async)
{
    const char *keys[] = { "dbname", "options", "application_name",
                           "connect_timeout", NULL };
    char        options[160], ct[16];
    const char *vals[5];
    PGconn     *c;

    /* statement_timeout: the server stops a query the client gave up on;
     * client_connection_check_interval: and notices a vanished client. */
    snprintf(options, sizeof(options),
             "-c statement_timeout=%d -c client_connection_check_interval=1000",
             timeout_ms + 1000);
    snprintf(ct, sizeof(ct), "%d", (timeout_ms + 999) / 1000);
    vals[0] = conninfo;
    vals[1] = options;
    vals[2] = "sparsegate";
    vals[3] = ct;
    vals[4] = NULL;
    c = async ? PQconnectStartParams(keys, vals, 1)
              : PQconnectdbParams(keys, vals, 1);
    if (c)
        PQsetNoticeProcessor(c, quiet_notices, NULL);
    return c;
}

/* '{"a","b\"c"}' */
static char *
text_array(const char *const *v, int n)
{
    size_t len = 3;
    char  *s, *p;

    for (int i = 0; i < n; i++)
        len += strlen(v[i]) * 2 + 3;
    s = p = malloc(len);
    if (s == NULL)
        return NULL;
    *p++ = '{';
    for (int i = 0; i < n; i++) {
        if (i)
            *p++ = ',';
        *p++ = '"';
        for (const char *c = v[i]; *c; c++) {
            if (*c == '"' || *c == '\\')
                *p++ = '\\';
            *p++ = *c;
        }
        *p++ = '"';
    }
    *p++ = '}';
    *p = '\0';
    return s;
}

int
sg_pg_search_prepare(const char *query, const sg_search_opts *o,
    pg_search *ps, char *err, int errlen)
{
    const char **v;

    memset(ps, 0, sizeof(*ps));
    snprintf(ps->limit, sizeof(ps->limit), "%d", sg_search_limit(o));
    if (o && o->n_doc_ids > 0) {
        ps->doc_array = text_array(o->doc_ids, o->n_doc_ids);
        if (ps->doc_array == NULL)
            return sg_store_err(err, errlen, SG_STORE_ENOMEM,
                                "out of memory");
    }
    if (query && query[0]) {
        const char *rank = getenv("SG_PG_RANK");

        ps->sql = rank && strcmp(rank, "cd") == 0 ? search_sql_cd
                                                   : search_sql;
        v = ps->values + 1;
        ps->n_values = 5;
    } else {
        ps->sql = list_sql;
        v = ps->values;
        ps->n_values = 4;
    }
    v[0] = o ? o->collection : NULL;
    v[1] = o && o->meta_filter && o->meta_filter[0] ? o->meta_filter : NULL;
    v[2] = ps->doc_array;
    v[3] = ps->limit;
    return SG_STORE_OK;
}

int
sg_pg_search_terms(const char *query, pg_search *ps, char *err, int errlen)
{
    sg_terms t;
    size_t   len = 1;
    char    *p;

    if (sg_terms_split_max(query, SG_SEARCH_MAX_TERMS, &t) < 0)
        return sg_store_err(err, errlen, SG_STORE_ENOMEM, "out of memory");
    for (size_t i = 0; i < t.n; i++)
        len += strlen(t.v[i]) + 3;
    ps->tsquery = p = malloc(len);
    if (ps->tsquery == NULL) {
        sg_terms_free(&t);
        return sg_store_err(err, errlen, SG_STORE_ENOMEM, "out of memory");
    }
    /* terms are letters and digits only: safe in tsquery syntax */
    for (size_t i = 0; i < t.n; i++)
        p += sprintf(p, "%s%s", i ? " | " : "", t.v[i]);
    *p = '\0';
    sg_terms_free(&t);
    ps->values[0] = ps->tsquery;
    return SG_STORE_OK;
}

void
sg_pg_search_free(pg_search *ps)
{
    free(ps->tsquery);
    free(ps->doc_array);
    ps->tsquery = ps->doc_array = NULL;
}

int
sg_pg_take_result(PGresult *r, sg_passage_list *out, char *err, int errlen)
{
    ExecStatusType st = PQresultStatus(r);
    size_t         first = out ? out->n : 0;

    if (st != PGRES_TUPLES_OK) {
        const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        const char *msg = PQresultErrorMessage(r);
        int         code = SG_STORE_EFAIL;

        if (state && strcmp(state, "57014") == 0)
            code = SG_STORE_ETIMEOUT;           /* statement_timeout */
        else if (state && (strncmp(state, "08", 2) == 0
                           || strncmp(state, "57P", 3) == 0))
            code = SG_STORE_EDOWN;              /* connection, shutdown */
        else if (state && strcmp(state, "22P02") == 0)
            code = SG_STORE_EINVAL;             /* bad filter JSON */
        if (state && strcmp(state, "42P01") == 0)
            return sg_store_err(err, errlen, code, "postgres: no passages "
                                "table: apply conf/schema.sql or run "
                                "sparsegate ingest");
        return sg_store_err(err, errlen, code, "postgres: %.*s",
                            (int)strcspn(msg ? msg : "", "\n"),
                            msg ? msg : "query failed");
    }
    if (out == NULL)
        return SG_STORE_OK;
    if (PQnfields(r) != 7)
        return sg_store_err(err, errlen, SG_STORE_EBADROW,
                            "postgres: expected 7 columns, got %d",
                            PQnfields(r));
    for (int i = 0; i < PQntuples(r); i++) {
        sg_passage p = { 0 };
        char      *end;

        p.id = PQgetvalue(r, i, 0);
        p.doc_id = PQgetvalue(r, i, 1);
        p.title = PQgetvalue(r, i, 2);
        p.text = PQgetvalue(r, i, 3);
        p.collection = PQgetvalue(r, i, 4);
        p.meta = PQgetisnull(r, i, 5) ? NULL : PQgetvalue(r, i, 5);
        p.score = strtod(PQgetvalue(r, i, 6), &end);
        p.n_tokens = -1;
        if (PQgetisnull(r, i, 0) || PQgetisnull(r, i, 3)
            || *end != '\0' || !sg_meta_is_object(p.meta))
        {
            while (out->n > first)
                sg_passage_clear(&out->v[--out->n]);
            return sg_store_err(err, errlen, SG_STORE_EBADROW,
                                "postgres: malformed passage row %s "
                                "(meta must be a JSON object)",
                                PQgetisnull(r, i, 0) ? "(no id)" : p.id);
        }
        if (sg_passage_list_push(out, &p) != SG_STORE_OK)
            return sg_store_err(err, errlen, SG_STORE_ENOMEM,
                                "out of memory");
    }
    return SG_STORE_OK;
}

/* ---- sync store ------------------------------------------------------- */

typedef struct pg_store {
    sg_store  base;
    PGconn   *conn;
    char     *conninfo;
    int       rw;
} pg_store;

static int
conn_err(pg_store *s, char *err, int errlen, const char *what)
{
    const char *m = PQerrorMessage(s->conn);

    return sg_store_err(err, errlen,
                        PQstatus(s->conn) == CONNECTION_BAD
                        ? SG_STORE_EDOWN : SG_STORE_EFAIL,
                        "postgres: %s: %.*s", what, (int)strcspn(m, "\n"),
                        m);
}

/* Reconnects a connection that died (server restarted). */
static int
ensure_conn(pg_store *s, char *err, int errlen)
{
    if (PQstatus(s->conn) == CONNECTION_OK)
        return SG_STORE_OK;
    PQreset(s->conn);
    if (PQstatus(s->conn) != CONNECTION_OK)
        return conn_err(s, err, errlen, "cannot connect");
    return SG_STORE_OK;
}

static int
exec_ok(pg_store *s, const char *sql, char *err, int errlen)
{
    PGresult *r = PQexec(s->conn, sql);
    int       ok = PQresultStatus(r) == PGRES_COMMAND_OK
                   || PQresultStatus(r) == PGRES_TUPLES_OK;
    int       rc = SG_STORE_OK;

    if (!ok) {
        const char *m = PQresultErrorMessage(r);

        rc = sg_store_err(err, errlen, PQstatus(s->conn) == CONNECTION_BAD
                          ? SG_STORE_EDOWN : SG_STORE_EFAIL,
                          "postgres: %.40s...: %.*s", sql,
                          (int)strcspn(m, "\n"), m);
    }
    PQclear(r);
    return rc;
}

static int
pg_ingest(sg_store *st, const sg_passage *p, size_t n, char *err, int errlen)
{
    pg_store   *s = (pg_store *)st;
    int         rc;
    const char *prev_doc = NULL;

    if (!s->rw)
        return sg_store_err(err, errlen, SG_STORE_EINVAL,
                            "postgres: opened read-only");
    if ((rc = ensure_conn(s, err, errlen)) != SG_STORE_OK)
        return rc;
    if ((rc = exec_ok(s, "BEGIN", err, errlen)) != SG_STORE_OK)
        return rc;
    for (size_t i = 0; i < n && rc == SG_STORE_OK; i++) {
        const char *dv[4] = { p[i].doc_id, p[i].collection,
                              p[i].title ? p[i].title : "", p[i].meta };
        const char *pv[6] = { p[i].id, p[i].doc_id, p[i].collection,
                              p[i].title ? p[i].title : "", p[i].text,
                              p[i].meta };
        PGresult   *r;

        if (prev_doc == NULL || strcmp(prev_doc, p[i].doc_id) != 0
            || strcmp(p[i - 1].collection, p[i].collection) != 0)
        {
            r = PQexecParams(s->conn,
                "INSERT INTO documents (doc_id, collection, title, meta)"
                " VALUES ($1, $2, $3, $4::jsonb)"
                " ON CONFLICT (collection, doc_id)"
                " DO UPDATE SET title = excluded.title,"
                " meta = excluded.meta",
                4, NULL, dv, NULL, NULL, 0);
            if (PQresultStatus(r) != PGRES_COMMAND_OK)
                rc = sg_pg_take_result(r, NULL, err, errlen);
            PQclear(r);
            prev_doc = p[i].doc_id;
            if (rc != SG_STORE_OK)
                break;
        }
        r = PQexecParams(s->conn,
            "INSERT INTO passages (id, doc_id, collection, title, text, meta)"
            " VALUES ($1, $2, $3, $4, $5, $6::jsonb)"
            " ON CONFLICT (collection, id)"
            " DO UPDATE SET doc_id = excluded.doc_id,"
            " title = excluded.title, text = excluded.text,"
            " meta = excluded.meta"
            " WHERE (passages.doc_id, passages.title, passages.text,"
            "        passages.meta)"
            " IS DISTINCT FROM (excluded.doc_id, excluded.title,"
            "        excluded.text, excluded.meta)",
            6, NULL, pv, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            rc = sg_pg_take_result(r, NULL, err, errlen);
        PQclear(r);
    }
    if (rc == SG_STORE_OK)
        rc = exec_ok(s, "COMMIT", err, errlen);
    else
        exec_ok(s, "ROLLBACK", NULL, 0);
    return rc;
}

static int
pg_sync_search(sg_store *st, const char *query, const sg_search_opts *o,
    sg_passage_list *out, char *err, int errlen)
{
    pg_store  *s = (pg_store *)st;
    pg_search  ps;
    PGresult  *r;
    char       set[64];
    int        rc;

    if ((rc = ensure_conn(s, err, errlen)) != SG_STORE_OK)
        return rc;
    rc = sg_pg_search_prepare(query, o, &ps, err, errlen);
    if (rc == SG_STORE_OK && query && query[0])
        rc = sg_pg_search_terms(query, &ps, err, errlen);
    if (rc != SG_STORE_OK || (ps.tsquery && ps.tsquery[0] == '\0')) {
        sg_pg_search_free(&ps);       /* no searchable terms: nothing */
        return rc;
    }
    snprintf(set, sizeof(set), "SET statement_timeout = %d",
             sg_search_timeout(o, 0));
    rc = exec_ok(s, set, err, errlen);
    if (rc == SG_STORE_OK) {
        r = PQexecParams(s->conn, ps.sql, ps.n_values, NULL, ps.values, NULL,
                         NULL, 0);
        rc = r ? sg_pg_take_result(r, out, err, errlen)
               : conn_err(s, err, errlen, "search");
        PQclear(r);
    }
    sg_pg_search_free(&ps);
    return rc;
}

static int
pg_get(sg_store *st, const char *collection, const char *const *ids,
    size_t n, sg_passage_list *out, char *err, int errlen)
{
    pg_store   *s = (pg_store *)st;
    int         rc;

    if ((rc = ensure_conn(s, err, errlen)) != SG_STORE_OK)
        return rc;
    for (size_t i = 0; i < n && rc == SG_STORE_OK; i++) {
        const char *v[2] = { collection, ids[i] };
        PGresult   *r = PQexecParams(s->conn,
            "SELECT id, doc_id, title, text, collection, meta::text,"
            " 0::float8 FROM passages WHERE collection = $1 AND id = $2",
            2, NULL, v, NULL, NULL, 0);

        rc = r ? sg_pg_take_result(r, out, err, errlen)
               : conn_err(s, err, errlen, "get");
        PQclear(r);
    }
    return rc;
}

static long
pg_count(sg_store *st, const char *collection, char *err, int errlen)
{
    pg_store *s = (pg_store *)st;
    PGresult *r;
    long      n = -1;

    if (ensure_conn(s, err, errlen) != SG_STORE_OK)
        return -1;
    r = PQexecParams(s->conn, "SELECT count(*) FROM passages WHERE"
                     " $1::text IS NULL OR collection = $1::text", 1, NULL,
                     &collection, NULL, NULL, 0);
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
        n = atol(PQgetvalue(r, 0, 0));
    else
        sg_pg_take_result(r, NULL, err, errlen);
    PQclear(r);
    return n;
}

static void
pg_close(sg_store *st)
{
    pg_store *s = (pg_store *)st;

    PQfinish(s->conn);
    free(s->conninfo);
    free(s);
}

static const sg_store_vt pg_vt = {
    "postgres", pg_ingest, pg_sync_search, pg_get, pg_count, pg_close,
};

/* Ingest's connection: schema 2 created, or upgraded to from 1, in one
 * transaction (a lock, so that two ingests racing on a fresh database do
 * not both create the tables). */
static int
setup_schema(pg_store *s, char *err, int errlen)
{
    PGresult *r;
    long      v = -1;
    int       rc;

    if ((rc = exec_ok(s, "BEGIN", err, errlen)) != SG_STORE_OK)
        return rc;
    rc = exec_ok(s, "SELECT pg_advisory_xact_lock(7354)", err, errlen);
    for (int k = 0; rc == SG_STORE_OK && k < 2 && v < 0; k++) {
        r = PQexec(s->conn, k ? version_sql : tables_sql);
        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
            v = atol(PQgetvalue(r, 0, 0));
        else
            rc = sg_pg_take_result(r, NULL, err, errlen);
        PQclear(r);
    }
    if (rc == SG_STORE_OK && v > SG_STORE_SCHEMA)
        rc = sg_store_err(err, errlen, SG_STORE_EFAIL, "postgres: schema "
                          "%ld, this SparseGate writes schema %d", v,
                          SG_STORE_SCHEMA);
    if (rc == SG_STORE_OK && v == 1)
        rc = exec_ok(s, migrate_1_2, err, errlen);
    if (rc == SG_STORE_OK)
        rc = exec_ok(s, sg_pg_schema, err, errlen);
    if (rc == SG_STORE_OK)
        rc = exec_ok(s, "COMMIT", err, errlen);
    else
        exec_ok(s, "ROLLBACK", NULL, 0);
    return rc;
}

int
sg_pg_open(const char *conninfo, int rw, sg_store **out, char *err,
    int errlen)
{
    pg_store *s = calloc(1, sizeof(*s));
    int       rc;

    *out = NULL;
    if (s == NULL || (s->conninfo = strdup(conninfo)) == NULL) {
        free(s);
        return sg_store_err(err, errlen, SG_STORE_ENOMEM, "out of memory");
    }
    s->base.vt = &pg_vt;
    s->rw = rw;
    s->conn = sg_pg_connect(conninfo, SG_STORE_TIMEOUT_MS, 0);
    if (s->conn == NULL || PQstatus(s->conn) != CONNECTION_OK) {
        rc = s->conn ? conn_err(s, err, errlen, "cannot connect")
                     : sg_store_err(err, errlen, SG_STORE_ENOMEM,
                                    "out of memory");
        pg_close(&s->base);
        return rc;
    }
    if (rw && (rc = setup_schema(s, err, errlen)) != SG_STORE_OK) {
        pg_close(&s->base);
        return rc;
    }
    *out = &s->base;
    return SG_STORE_OK;
}
