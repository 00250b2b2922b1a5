#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "drive_aquery.h"
#include "store_checks.h"

/* An async search driven to its end; *work gets whether it asked for a
 * thread first. */
static int
asearch(sg_astore *as, const char *query, const sg_search_opts *o,
    sg_passage_list *out, char *err, int *work)
{
    sg_aquery *q;
    double     max_step;
    int        rc = sg_astore_search(as, query, o, &q, err, 256);

    if (rc != SG_STORE_OK)
        return rc;
    if (work)
        *work = sg_aquery_wants(q) == SG_AQ_WORK;
    rc = drive_aquery(q, out, err, 256, &max_step);
    sg_aquery_free(q);
    return rc;
}

/* The same id (and document id) in two collections: two passages. */
static void
check_ids_per_collection(sg_store *s, sg_astore *as, const char *kind,
    const char *ca, const char *cb, const char *wa, const char *wb)
{
    char            ta[64], tb[64], err[256];
    sg_passage      p[2] = {
        { .id = "same-id", .doc_id = "same-doc", .title = "",
          .collection = (char *)ca, .text = ta, .n_tokens = -1 },
        { .id = "same-id", .doc_id = "same-doc", .title = "",
          .collection = (char *)cb, .text = tb, .n_tokens = -1 },
    };
    const char     *ids[] = { "same-id" };
    const char     *docs[] = { "same-doc" };
    sg_search_opts  all = { .limit = 10 };
    sg_search_opts  la = { .collection = ca, .doc_ids = docs,
                           .n_doc_ids = 1, .limit = 10 };
    sg_passage_list a = { 0 }, b = { 0 }, f = { 0 }, l = { 0 };
    int             rc, ok;

    snprintf(ta, sizeof(ta), "%s alpha text", wa);
    snprintf(tb, sizeof(tb), "%s beta text", wb);
    rc = sg_store_ingest(s, &p[0], 1, err, sizeof(err));
    if (rc == SG_STORE_OK)
        rc = sg_store_ingest(s, &p[1], 1, err, sizeof(err));
    ok = rc == SG_STORE_OK
         && sg_store_count(s, ca, err, sizeof(err)) == 1
         && sg_store_count(s, cb, err, sizeof(err)) == 1
         && sg_store_get(s, ca, ids, 1, &a, err, sizeof(err)) == 0
         && sg_store_get(s, cb, ids, 1, &b, err, sizeof(err)) == 0
         && a.n == 1 && b.n == 1 && strcmp(a.v[0].text, ta) == 0
         && strcmp(b.v[0].text, tb) == 0
         && strcmp(a.v[0].collection, ca) == 0;
    CHECK(ok, check_named(kind, "ids_per_collection"),
          "rc %d, get %zu/%zu: %s", rc, a.n, b.n, err);
    /* every collection searched: the word of one finds that one */
    rc = asearch(as, wa, &all, &f, err, NULL);
    CHECK(rc == 0 && f.n == 1 && strcmp(f.v[0].collection, ca) == 0
          && strcmp(f.v[0].text, ta) == 0,
          check_named(kind, "ids_per_collection_search"), "rc %d n %zu %s",
          rc, f.n, err);
    /* a document listed in one collection: its passage there only */
    rc = asearch(as, "", &la, &l, err, NULL);
    CHECK(rc == 0 && l.n == 1 && strcmp(l.v[0].text, ta) == 0,
          check_named(kind, "ids_per_collection_listing"), "rc %d n %zu %s",
          rc, l.n, err);
    sg_passage_list_free(&a);
    sg_passage_list_free(&b);
    sg_passage_list_free(&f);
    sg_passage_list_free(&l);
}

static void
check_no_terms(sg_astore *as, sg_store *s, const char *kind, const char *ca)
{
    static const char *const qs[] = { "What is this?", "AND OR NOT",
                                      "(((((", "\"*\" : -- ''", "the of a" };
    sg_search_opts     o = { .limit = 5 }, oc = { .collection = ca,
                                                  .limit = 5 };
    char               err[256] = "";
    int                ok = 1;

    for (size_t i = 0; ok && i < sizeof(qs) / sizeof(qs[0]); i++) {
        sg_passage_list l = { 0 };
        int             r1, r2;

        r1 = sg_store_search(s, qs[i], i % 2 ? &o : &oc, &l, err, 256);
        r2 = r1 ? r1 : asearch(as, qs[i], i % 2 ? &oc : &o, &l, err, NULL);
        if (r1 != SG_STORE_OK || r2 != SG_STORE_OK || l.n != 0) {
            printf("# %s: \"%s\": rc %d/%d, %zu passages: %s\n", kind, qs[i],
                   r1, r2, l.n, err);
            ok = 0;
        }
        sg_passage_list_free(&l);
    }
    CHECK(ok, check_named(kind, "no_searchable_terms_is_empty"), "see above");
}

static void
check_collection_names(sg_store *s, sg_astore *as, const char *kind)
{
    static const char *const bad[] = { "", "a\tb", "x\001", "del\177" };
    char                     err[256] = "";
    int                      ok = 1;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        sg_search_opts  o = { .collection = bad[i], .limit = 5 };
        sg_passage      p = { .id = "x", .doc_id = "x", .title = "",
                              .text = "x", .collection = (char *)bad[i],
                              .n_tokens = -1 };
        sg_passage_list l = { 0 };
        sg_aquery      *q = NULL;

        ok &= sg_store_search(s, "word", &o, &l, err, 256) == SG_STORE_EINVAL
              && strstr(err, "collection") != NULL;
        ok &= sg_astore_search(as, "word", &o, &q, err, 256)
              == SG_STORE_EINVAL && q == NULL;
        ok &= sg_store_ingest(s, &p, 1, err, 256) == SG_STORE_EINVAL;
        ok &= sg_store_get(s, bad[i], (const char *[]){ "x" }, 1, &l, err,
                           256) == SG_STORE_EINVAL;
        ok &= l.n == 0;
        sg_aquery_free(q);
    }
    CHECK(ok, check_named(kind, "collection_name_refused"), "%s", err);
}

/* A question of many distinct words: the word ahead of the bound finds
 * its passage, in the host's thread past SG_STORE_INLINE_QUERY bytes; a
 * word past SG_SEARCH_MAX_TERMS distinct terms is not searched. */
static void
check_long_question(sg_astore *as, const char *kind, const char *ca,
    const char *wa, const char *wb)
{
    size_t          nw = SG_SEARCH_MAX_TERMS + 2000, len = 0;
    char           *q = malloc(nw * 12 + 64), err[256] = "";
    sg_search_opts  o = { .limit = 5 };
    sg_passage_list l = { 0 }, m = { 0 };
    int             work = 0, rc;

    if (q == NULL)
        return;
    len += sprintf(q + len, "%s ", wa);
    for (size_t i = 1; i < nw; i++)
        len += i % 7 ? sprintf(q + len, "filler%zu ", i)
                     : sprintf(q + len, "and ");
    sprintf(q + len, "%s", wb);
    (void)ca;
    rc = asearch(as, q, &o, &l, err, &work);
    CHECK(rc == 0 && l.n == 1 && strstr(l.v[0].text, wa) != NULL && work,
          check_named(kind, "long_question_in_a_thread"),
          "rc %d n %zu, asked for a thread: %d: %s", rc, l.n, work, err);
    /* wb is past the bound: what it alone would find is not found */
    rc = asearch(as, q + strlen(wa) + 1, &o, &m, err, NULL);
    CHECK(rc == 0 && m.n == 0, check_named(kind, "question_terms_bounded"),
          "rc %d n %zu %s", rc, m.n, err);
    sg_passage_list_free(&l);
    sg_passage_list_free(&m);
    free(q);
}

void
store_checks(sg_store *rw, sg_astore *as, const char *kind)
{
    unsigned tag = check_rand32() % 1000000;
    char     ca[32], cb[32], wa[32], wb[32];

    snprintf(ca, sizeof(ca), "ca%06u", tag);
    snprintf(cb, sizeof(cb), "cb%06u", tag);
    snprintf(wa, sizeof(wa), "zqa%06u", tag);
    snprintf(wb, sizeof(wb), "zqb%06u", tag);
    check_ids_per_collection(rw, as, kind, ca, cb, wa, wb);
    check_no_terms(as, rw, kind, ca);
    check_collection_names(rw, as, kind);
    check_long_question(as, kind, ca, wa, wb);
}
