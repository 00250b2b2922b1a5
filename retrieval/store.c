/*
 * The store front door, above the implementations: picks one from the URI
 * scheme (store_kinds.h) and checks what every store needs before calling
 * through its vtable.  Nothing below calls back up here: the
 * implementations use only store_impl.h (the query object of aquery.c,
 * the helpers of passage.c).
 */
#include <string.h>

#include "store_impl.h"
#include "store_kinds.h"

/* A kind of store by its URI's scheme: skip is what of the URI is not
 * its constructor's argument; local: checked by opening it (a file). */
typedef struct store_kind {
    const char *scheme;
    size_t      skip;
    int         local;
    int       (*open)(const char *arg, int rw, sg_store **out, char *err,
                  int errlen);
    int       (*aopen)(const char *arg, sg_astore **out, char *err,
                  int errlen);
} store_kind;

static const store_kind kinds[] = {
    { "sqlite:", 7, 1, sg_sqlite_open, sg_sqlite_aopen },
    { "postgres://", 0, 0, sg_pg_open, sg_pg_aopen },
    { "postgresql://", 0, 0, sg_pg_open, sg_pg_aopen },
    { "postgres:", 9, 0, sg_pg_open, sg_pg_aopen },
    { "redis:", 6, 0, sg_redis_open, sg_redis_aopen },
};

static const store_kind *
find_kind(const char *uri, char *err, int errlen)
{
    if (uri == NULL) {
        sg_store_err(err, errlen, SG_STORE_EINVAL, "no store URI");
        return NULL;
    }
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
        if (strncmp(uri, kinds[i].scheme, strlen(kinds[i].scheme)) == 0)
            return &kinds[i];
    sg_store_err(err, errlen, SG_STORE_EINVAL,
                 "store URI '%s': expected sqlite:PATH, postgres:CONNINFO "
                 "or redis:HOST:PORT", uri);
    return NULL;
}

static int
store_open(const char *uri, int rw, sg_store **out, char *err, int errlen)
{
    const store_kind *k = find_kind(uri, err, errlen);

    *out = NULL;
    return k ? k->open(uri + k->skip, rw, out, err, errlen)
             : SG_STORE_EINVAL;
}

int
sg_store_open(const char *uri, sg_store **out, char *err, int errlen)
{
    return store_open(uri, 0, out, err, errlen);
}

int
sg_store_open_rw(const char *uri, sg_store **out, char *err, int errlen)
{
    return store_open(uri, 1, out, err, errlen);
}

int
sg_store_check(const char *uri, char *err, int errlen)
{
    const store_kind *k = find_kind(uri, err, errlen);
    sg_store         *s = NULL;
    sg_astore        *as = NULL;
    int               rc;

    if (k == NULL)
        return SG_STORE_EINVAL;
    if (k->local) {
        rc = k->open(uri + k->skip, 0, &s, err, errlen);
        sg_store_close(s);
    } else {
        rc = k->aopen(uri + k->skip, &as, err, errlen);
        sg_astore_close(as);
    }
    return rc;
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
    if (o && o->collection)
        return sg_collection_check(o->collection, err, errlen);
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
sg_store_get(sg_store *s, const char *collection, const char *const *ids,
    size_t n, sg_passage_list *out, char *err, int errlen)
{
    int rc = collection ? sg_collection_check(collection, err, errlen)
                        : sg_store_err(err, errlen, SG_STORE_EINVAL,
                                       "get: no collection");

    if (rc != SG_STORE_OK || n == 0)
        return rc;
    return s->vt->get(s, collection, ids, n, out, err, errlen);
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
    const store_kind *k = find_kind(uri, err, errlen);
    int               rc;

    *out = NULL;
    if (k == NULL)
        return SG_STORE_EINVAL;
    rc = k->aopen(uri + k->skip, out, err, errlen);
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

int
sg_astore_collections(sg_astore *as, sg_aquery **q, char *err, int errlen)
{
    *q = NULL;
    return as->vt->collections(as, q, err, errlen);
}
