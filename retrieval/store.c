/*
 * The store front door, above the implementations: picks one from the URI
 * scheme (store_kinds.h) and checks what every store needs before calling
 * through its vtable.  Nothing below calls back up here: the
 * implementations use only store_impl.h (the query object of aquery.c,
 * the helpers of passage.c).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_impl.h"
#include "store_kinds.h"

static int
has_prefix(const char *s, const char *p)
{
    return strncmp(s, p, strlen(p)) == 0;
}

int
sg_store_open(const char *uri, sg_store **out, char *err, int errlen)
{
    *out = NULL;
    if (uri == NULL)
        return sg_store_err(err, errlen, SG_STORE_EINVAL, "no store URI");
    if (has_prefix(uri, "sqlite:"))
        return sg_sqlite_open(uri + 7, out, err, errlen);
    if (has_prefix(uri, "postgres://") || has_prefix(uri, "postgresql://"))
        return sg_pg_open(uri, out, err, errlen);
    if (has_prefix(uri, "postgres:"))
        return sg_pg_open(uri + 9, out, err, errlen);
    if (has_prefix(uri, "redis:"))
        return sg_redis_open(uri + 6, out, err, errlen);
    return sg_store_err(err, errlen, SG_STORE_EINVAL,
                        "store URI '%s': expected sqlite:PATH, "
                        "postgres:CONNINFO or redis:HOST:PORT", uri);
}

void
sg_store_close(sg_store *s)
{
    if (s)
        s->vt->close(s);
}

const char *
sg_store_kind(const sg_store *s)
{
    return s->vt->kind;
}

int
sg_store_ingest(sg_store *s, const sg_passage *p, size_t n, char *err,
    int errlen)
{
    for (size_t i = 0; i < n; i++) {
        int rc = sg_passage_validate(&p[i], err, errlen);

        if (rc != SG_STORE_OK)
            return rc;
    }
    return n ? s->vt->ingest(s, p, n, err, errlen) : SG_STORE_OK;
}

/* Checks what every store needs of search options. */
static int
check_opts(const sg_search_opts *o, char *err, int errlen)
{
    if (o && o->meta_filter && o->meta_filter[0]
        && !sg_meta_is_object(o->meta_filter))
        return sg_store_err(err, errlen, SG_STORE_EINVAL,
                            "metadata filter is not a JSON object: %.80s",
                            o->meta_filter);
    if (o && o->n_doc_ids < 0)
        return sg_store_err(err, errlen, SG_STORE_EINVAL,
                            "negative number of document ids");
    return SG_STORE_OK;
}

int
sg_store_search(sg_store *s, const char *query, const sg_search_opts *o,
    sg_passage_list *out, char *err, int errlen)
{
    int rc = check_opts(o, err, errlen);

    return rc ? rc : s->vt->search(s, query, o, out, err, errlen);
}

int
sg_store_get(sg_store *s, const char *const *ids, size_t n,
    sg_passage_list *out, char *err, int errlen)
{
    return n ? s->vt->get(s, ids, n, out, err, errlen) : SG_STORE_OK;
}

long
sg_store_count(sg_store *s, const char *collection, char *err, int errlen)
{
    return s->vt->count(s, collection, err, errlen);
}

/* ---- async ---------------------------------------------------------- */

int
sg_astore_open(const char *uri, const sg_astore_opts *o, sg_astore **out,
    char *err, int errlen)
{
    int rc;

    *out = NULL;
    if (uri == NULL)
        return sg_store_err(err, errlen, SG_STORE_EINVAL, "no store URI");
    if (has_prefix(uri, "sqlite:"))
        rc = sg_sqlite_aopen(uri + 7, out, err, errlen);
    else if (has_prefix(uri, "postgres://")
             || has_prefix(uri, "postgresql://"))
        rc = sg_pg_aopen(uri, out, err, errlen);
    else if (has_prefix(uri, "postgres:"))
        rc = sg_pg_aopen(uri + 9, out, err, errlen);
    else if (has_prefix(uri, "redis:"))
        rc = sg_redis_aopen(uri + 6, out, err, errlen);
    else
        return sg_store_err(err, errlen, SG_STORE_EINVAL,
                            "store URI '%s': expected sqlite:PATH, "
                            "postgres:CONNINFO or redis:HOST:PORT", uri);
    if (rc == SG_STORE_OK) {
        (*out)->pool_size = o && o->pool_size > 0 ? o->pool_size
                                                  : SG_STORE_POOL_SIZE;
        (*out)->timeout_ms = o && o->timeout_ms > 0 ? o->timeout_ms
                                                    : SG_STORE_TIMEOUT_MS;
    }
    return rc;
}

void
sg_astore_close(sg_astore *as)
{
    if (as)
        as->vt->close(as);
}

const char *
sg_astore_kind(const sg_astore *as)
{
    return as->vt->kind;
}

int
sg_astore_search(sg_astore *as, const char *query, const sg_search_opts *o,
    sg_aquery **q, char *err, int errlen)
{
    int rc = check_opts(o, err, errlen);

    *q = NULL;
    return rc ? rc : as->vt->search(as, query, o, q, err, errlen);
}
