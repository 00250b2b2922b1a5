/*
 * Pieces of the PostgreSQL store shared by its sync (store_pg.c) and
 * async (store_pg_async.c) faces.
 */
#ifndef SG_STORE_PG_H
#define SG_STORE_PG_H

#include <libpq-fe.h>

#include "store_impl.h"

extern const char sg_pg_schema[];

/* The statement and its parameters for a search; strings live in p. */
typedef struct pg_search {
    const char *sql;
    const char *values[5];
    int         n_values;
    char       *tsquery;
    char       *doc_array;
    char        limit[16];
} pg_search;

/* Everything but the terms: those of a non-empty query come from
 * sg_pg_search_terms (ps->tsquery "" when it has none: nothing to find). */
int sg_pg_search_prepare(const char *query, const sg_search_opts *o,
    pg_search *ps, char *err, int errlen);
int sg_pg_search_terms(const char *query, pg_search *ps, char *err,
    int errlen);
void sg_pg_search_free(pg_search *ps);

/* Turns a search result into passages (appended); an error result into
 * its code and message. */
int sg_pg_take_result(PGresult *r, sg_passage_list *out, char *err,
    int errlen);

/* Connects with our connection settings (statement_timeout as a server-side
 * backstop, dead-client checks, no notices on stderr).  Non-blocking
 * start when async; NULL only when out of memory. */
PGconn *sg_pg_connect(const char *conninfo, int timeout_ms, int async);

#endif
