/*
 * Passage lists and the helpers every store shares: error codes, option
 * defaults, validation of what is about to be stored, metadata filters.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "store_impl.h"
#include "util/err.h"

static char *
dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

int
sg_passage_list_push(sg_passage_list *l, const sg_passage *p)
{
    sg_passage *d;

    if (l->n == l->cap) {
        size_t      cap = l->cap ? l->cap * 2 : 16;
        sg_passage *v = realloc(l->v, cap * sizeof(*v));

        if (v == NULL)
            return SG_STORE_ENOMEM;
        l->v = v;
        l->cap = cap;
    }
    d = &l->v[l->n];
    memset(d, 0, sizeof(*d));
    d->id = dup_or_null(p->id);
    d->doc_id = dup_or_null(p->doc_id ? p->doc_id : "");
    d->title = dup_or_null(p->title ? p->title : "");
    d->text = dup_or_null(p->text ? p->text : "");
    d->collection = dup_or_null(p->collection ? p->collection : "");
    d->meta = dup_or_null(p->meta);
    d->score = p->score;
    d->n_tokens = -1;
    if (p->tokens && p->n_tokens >= 0) {
        d->tokens = malloc((p->n_tokens ? p->n_tokens : 1) * sizeof(int32_t));
        if (d->tokens) {
            memcpy(d->tokens, p->tokens, p->n_tokens * sizeof(int32_t));
            d->n_tokens = p->n_tokens;
        }
    }
    if (d->id == NULL || d->doc_id == NULL || d->title == NULL
        || d->text == NULL || d->collection == NULL
        || (p->meta && d->meta == NULL)
        || (p->tokens && p->n_tokens >= 0 && d->tokens == NULL))
    {
        sg_passage_clear(d);
        return SG_STORE_ENOMEM;
    }
    l->n++;
    return SG_STORE_OK;
}

void
sg_passage_clear(sg_passage *p)
{
    free(p->id);
    free(p->doc_id);
    free(p->title);
    free(p->text);
    free(p->collection);
    free(p->meta);
    free(p->tokens);
    memset(p, 0, sizeof(*p));
    p->n_tokens = -1;
}

void
sg_passage_list_free(sg_passage_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        sg_passage_clear(&l->v[i]);
    free(l->v);
    memset(l, 0, sizeof(*l));
}

int
sg_store_http_status(int code)
{
    switch (code) {
    case SG_STORE_OK:       return 200;
    case SG_STORE_EINVAL:   return 400;
    case SG_STORE_ETIMEOUT: return 504;
    case SG_STORE_ENOMEM:   return 503;     /* the gateway's memory: retry */
    case SG_STORE_EBUSY:    return 503;
    default:                return 502;
    }
}

const char *
sg_store_strerror(int code)
{
    switch (code) {
    case SG_STORE_OK:       return "ok";
    case SG_STORE_EINVAL:   return "invalid_request";
    case SG_STORE_EDOWN:    return "store_unavailable";
    case SG_STORE_ETIMEOUT: return "store_timeout";
    case SG_STORE_EBADROW:  return "store_bad_data";
    case SG_STORE_ENOMEM:   return "out_of_memory";
    case SG_STORE_EBUSY:    return "store_busy";
    default:                return "store_error";
    }
}

int
sg_store_err(char *err, int errlen, int code, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    sg_verr(err, errlen, fmt, ap);
    va_end(ap);
    return code;
}

int
sg_search_limit(const sg_search_opts *o)
{
    int limit = o && o->limit > 0 ? o->limit : 10;

    return limit > 10000 ? 10000 : limit;
}

int
sg_search_timeout(const sg_search_opts *o, int dflt)
{
    if (o && o->timeout_ms > 0)
        return o->timeout_ms;
    return dflt > 0 ? dflt : SG_STORE_TIMEOUT_MS;
}

int64_t
sg_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int
sg_meta_is_object(const char *meta)
{
    cJSON *j;
    int    ok;

    if (meta == NULL)
        return 1;
    j = cJSON_Parse(meta);
    ok = j != NULL && cJSON_IsObject(j);
    cJSON_Delete(j);
    return ok;
}

int
sg_collection_check(const char *name, char *err, int errlen)
{
    size_t len = strlen(name);

    if (len == 0)
        return sg_store_err(err, errlen, SG_STORE_EINVAL,
                            "collection name is empty: name one, or leave "
                            "it out for every collection");
    if (len > SG_COLLECTION_MAX)
        return sg_store_err(err, errlen, SG_STORE_EINVAL,
                            "collection name longer than %d bytes",
                            SG_COLLECTION_MAX);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];

        if (c < 0x20 || c == 0x7f)
            return sg_store_err(err, errlen, SG_STORE_EINVAL,
                                "collection name has a control character "
                                "(0x%02x at byte %zu)", c, i);
    }
    return SG_STORE_OK;
}

int
sg_passage_validate(const sg_passage *p, char *err, int errlen)
{
    const char *id = p->id ? p->id : "(null)";

    if (p->id == NULL || p->id[0] == '\0')
        return sg_store_err(err, errlen, SG_STORE_EINVAL,
                            "passage without an id");
    if (strlen(p->id) > 512)
        return sg_store_err(err, errlen, SG_STORE_EINVAL,
                            "passage id longer than 512 bytes: %.40s...", id);
    if (p->doc_id == NULL || p->doc_id[0] == '\0')
        return sg_store_err(err, errlen, SG_STORE_EINVAL,
                            "passage %s: no doc_id", id);
    if (p->text == NULL)
        return sg_store_err(err, errlen, SG_STORE_EINVAL,
                            "passage %s: no text", id);
    if (p->collection == NULL)
        return sg_store_err(err, errlen, SG_STORE_EINVAL,
                            "passage %s: no collection", id);
    if (sg_collection_check(p->collection, err, errlen) != SG_STORE_OK) {
        char why[200];

        snprintf(why, sizeof(why), "%s", err ? err : "");
        return sg_store_err(err, errlen, SG_STORE_EINVAL, "passage %s: %s",
                            id, why);
    }
    if (!sg_meta_is_object(p->meta))
        return sg_store_err(err, errlen, SG_STORE_EINVAL,
                            "passage %s: metadata is not a JSON object", id);
    return SG_STORE_OK;
}

/* Scalar JSON values compare by their printed form ("3" == 3 is false:
 * types must agree). */
static int
json_scalar_equal(const cJSON *a, const cJSON *b)
{
    if (cJSON_IsString(a) && cJSON_IsString(b))
        return strcmp(a->valuestring, b->valuestring) == 0;
    if (cJSON_IsNumber(a) && cJSON_IsNumber(b))
        return a->valuedouble == b->valuedouble;
    if (cJSON_IsBool(a) && cJSON_IsBool(b))
        return cJSON_IsTrue(a) == cJSON_IsTrue(b);
    if (cJSON_IsNull(a) && cJSON_IsNull(b))
        return 1;
    return 0;
}

int
sg_meta_matches(const char *meta, const char *filter)
{
    cJSON *f, *m, *it;
    int    ok = 1;

    if (filter == NULL || filter[0] == '\0')
        return 1;
    f = cJSON_Parse(filter);
    m = meta ? cJSON_Parse(meta) : NULL;
    if (f == NULL || !cJSON_IsObject(f)) {
        ok = 0;
    } else {
        cJSON_ArrayForEach(it, f) {
            cJSON *v = m ? cJSON_GetObjectItemCaseSensitive(m, it->string)
                         : NULL;

            if (v == NULL || !json_scalar_equal(v, it)) {
                ok = 0;
                break;
            }
        }
    }
    cJSON_Delete(f);
    cJSON_Delete(m);
    return ok;
}

int
sg_parse_hostport(const char *s, char *host, size_t hostcap, int *port)
{
    const char *colon = strrchr(s, ':');
    size_t      hl;
    char       *end;
    long        p;

    if (colon == NULL) {
        hl = strlen(s);
        p = 6379;
    } else {
        hl = colon - s;
        p = strtol(colon + 1, &end, 10);
        if (*end != '\0' || p <= 0 || p > 65535)
            return -1;
    }
    if (hl == 0 || hl >= hostcap)
        return -1;
    memcpy(host, s, hl);
    host[hl] = '\0';
    *port = (int)p;
    return 0;
}

int
sg_collection_push(sg_passage_list *out, const char *name, double n)
{
    sg_passage p = { 0 };

    p.id = (char *)name;
    p.collection = (char *)name;
    p.score = n;
    p.n_tokens = -1;
    return sg_passage_list_push(out, &p);
}
