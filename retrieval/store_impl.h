/*
 * What every store implementation provides (private to retrieval/).  Each
 * implementation's struct starts with the generic one, so a pointer to it
 * is a pointer to sg_store / sg_astore / sg_aquery.
 */
#ifndef SG_STORE_IMPL_H
#define SG_STORE_IMPL_H

#include "store.h"

typedef struct sg_store_vt {
    const char *kind;
    int  (*ingest)(sg_store *s, const sg_passage *p, size_t n, char *err,
        int errlen);
    int  (*search)(sg_store *s, const char *query, const sg_search_opts *o,
        sg_passage_list *out, char *err, int errlen);
    int  (*get)(sg_store *s, const char *collection,
        const char *const *ids, size_t n, sg_passage_list *out, char *err,
        int errlen);
    long (*count)(sg_store *s, const char *collection, char *err,
        int errlen);
    void (*close)(sg_store *s);
} sg_store_vt;

struct sg_store {
    const sg_store_vt *vt;
};

typedef struct sg_astore_vt {
    const char *kind;
    int  (*search)(sg_astore *as, const char *query, const sg_search_opts *o,
        sg_aquery **q, char *err, int errlen);
    void (*close)(sg_astore *as);
    int  (*collections)(sg_astore *as, sg_aquery **q, char *err,
        int errlen);
} sg_astore_vt;

struct sg_astore {
    const sg_astore_vt *vt;
    int                 pool_size;
    int                 timeout_ms;
};

struct sg_aquery {
    int             fd;
    int             wants;
    int64_t         deadline;
    int             done;
    int             code;
    char            err[256];
    sg_passage_list res;
    /* the blocking work of a query that wants SG_AQ_WORK (in the host's
     * thread; NULL for none), then a step with SG_AQ_WORK on the loop */
    void          (*work)(sg_aquery *q);
    int             worked;
    /* one step of the implementation; sets done/code/err when finishing */
    void          (*step)(sg_aquery *q, int events);
    /* releases the implementation's part (not res, not q itself) */
    void          (*release)(sg_aquery *q);
};

/* A networked store's query text this long or longer is split into terms
 * in the host's thread (SG_AQ_WORK); a shorter one inline, in less time
 * than the hop to a thread takes. */
#define SG_STORE_INLINE_QUERY  4096

/* Finishes q with a result code and printf-style message. */
void sg_aquery_finish(sg_aquery *q, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* printf into err (when errlen > 0); returns code. */
int sg_store_err(char *err, int errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Effective limit and timeout of search options (NULL = defaults; a
 * timeout dflt of 0 = SG_STORE_TIMEOUT_MS). */
int sg_search_limit(const sg_search_opts *o);
int sg_search_timeout(const sg_search_opts *o, int dflt);

/* Appends a collection's row of sg_astore_collections: its name, its
 * number of passages.  0 or SG_STORE_ENOMEM. */
int sg_collection_push(sg_passage_list *out, const char *name, double n);

/* Checks a passage before storing it: id, doc_id, text, collection set,
 * meta NULL or a JSON object.  0 or SG_STORE_EINVAL with a message. */
int sg_passage_validate(const sg_passage *p, char *err, int errlen);
/* 1 when meta text is NULL or a JSON object. */
int sg_meta_is_object(const char *meta);
/* 1 when meta matches the filter (see sg_search_opts.meta_filter). */
int sg_meta_matches(const char *meta, const char *filter);

/* "host:port" -> host (caller's buffer) and port; 0 or -1. */
int sg_parse_hostport(const char *s, char *host, size_t hostcap, int *port);

#endif
