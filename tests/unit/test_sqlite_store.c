/*
 * The SQLite store on a temp file: ingest (idempotent upserts), search
 * against a brute-force reference, filters, canonical listing, get, the
 * async face, and bad data.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "check.h"
#include "chunk.h"
#include "drive_aquery.h"
#include "store.h"

#define NP 300
#define NW 40

static char vocab[NW][8];
static char texts[NP][512];
static char ids[NP][16], docs[NP][16];
static const char *colls[] = { "alpha", "beta" };

static void
make_corpus(sg_passage *p)
{
    for (int w = 0; w < NW; w++)
        snprintf(vocab[w], sizeof(vocab[w]), "w%03ux", check_rand32() % 1000);
    for (int i = 0; i < NP; i++) {
        int len = 0, nw = 3 + check_rand32() % 20;

        for (int k = 0; k < nw; k++)
            len += snprintf(texts[i] + len, sizeof(texts[i]) - len, "%s ",
                            vocab[check_rand32() % NW]);
        snprintf(ids[i], sizeof(ids[i]), "p%04d", i);
        snprintf(docs[i], sizeof(docs[i]), "d%03d", i / 3);
        p[i] = (sg_passage){ .id = ids[i], .doc_id = docs[i], .title = "",
                             .text = texts[i],
                             .collection = (char *)colls[i % 2],
                             .meta = i % 3 == 0 ? "{\"lang\":\"en\"}"
                                                : "{\"lang\":\"de\"}",
                             .n_tokens = -1 };
    }
}

/* Passages whose text has word w (and pass the filters), as a bitmap. */
static int
ref_match(int i, const char *w, const char *coll, const char *lang)
{
    char pat[16];

    snprintf(pat, sizeof(pat), "%s ", w);
    if (coll && strcmp(colls[i % 2], coll) != 0)
        return 0;
    if (lang && strcmp(i % 3 == 0 ? "en" : "de", lang) != 0)
        return 0;
    return strncmp(texts[i], pat, strlen(pat)) == 0
           || (strstr(texts[i], pat) && strstr(texts[i], pat)[-1] == ' ');
}

static void
check_search(sg_store *s, const char *coll, const char *lang,
    const char *name)
{
    int    ok = 1, order = 1;
    char   filter[64], err[256];

    snprintf(filter, sizeof(filter), "{\"lang\":\"%s\"}", lang ? lang : "");
    for (int t = 0; t < 8 && ok; t++) {
        const char     *w = vocab[check_rand32() % NW];
        sg_search_opts  o = { .collection = coll,
                              .meta_filter = lang ? filter : NULL,
                              .limit = NP };
        sg_passage_list l = { 0 };
        int             want = 0, seen[NP] = { 0 };

        if (sg_store_search(s, w, &o, &l, err, sizeof(err)) != SG_STORE_OK)
        {
            CHECK(0, name, "search: %s", err);
            return;
        }
        for (int i = 0; i < NP; i++)
            want += ref_match(i, w, coll, lang);
        for (size_t k = 0; k < l.n; k++) {
            int i = atoi(l.v[k].id + 1);

            if (i < 0 || i >= NP || seen[i] || !ref_match(i, w, coll, lang))
                ok = 0;
            seen[i] = 1;
            if (k && l.v[k].score > l.v[k - 1].score)
                order = 0;
        }
        if ((int)l.n != want)
            ok = 0;
        if (!ok)
            printf("# %s: word %s got %zu want %d\n", name, w, l.n, want);
        sg_passage_list_free(&l);
    }
    CHECK(ok, name, "result set differs from the brute-force reference");
    CHECK(order, "sqlite_score_order", "scores not descending");
}

/* Ingest's chunker on random documents: no text lost or reordered, every
 * passage within the size (estimate); paragraphs that fit stay whole. */
static void
test_chunking(void)
{
    int ok_words = 1, ok_size = 1;

    for (int t = 0; t < 20; t++) {
        char      doc[20000], joined[2 * 20000];
        size_t    n = 0, j = 0;
        int       max = 16 + check_rand32() % 200;
        sg_chunks c;

        /* one paragraph adds at most 40 words of 12 letters + ". " and
         * two newlines: keep that much room */
        while (n < sizeof(doc) - (40 * 14 + 3)) {
            int words = 1 + check_rand32() % 40;

            for (int w = 0; w < words; w++) {
                int len = 1 + check_rand32() % 12;

                for (int k = 0; k < len; k++)
                    doc[n++] = "abcdefghij"[check_rand32() % 10];
                doc[n++] = check_rand32() % 9 == 0 ? '.' : ' ';
                if (doc[n - 1] == '.')
                    doc[n++] = ' ';
            }
            doc[n++] = '\n';
            if (check_rand32() % 3 == 0)
                doc[n++] = '\n';           /* paragraph end */
        }
        doc[n] = '\0';
        if (sg_chunk_text(doc, max, NULL, NULL, &c) != 0) {
            ok_words = 0;
            break;
        }
        /* words in order: compare with whitespace squeezed */
        for (size_t i = 0; i < c.n; i++) {
            for (const char *p = c.v[i]; *p; p++)
                joined[j++] = (*p == '\n' || *p == ' ') ? ' ' : *p;
            joined[j++] = ' ';
            if (sg_chunk_estimate(NULL, c.v[i], strlen(c.v[i])) > max
                && strchr(c.v[i], ' ') != NULL)
                ok_size = 0;
        }
        joined[j] = '\0';
        {
            char   sq[20000];
            size_t k = 0;
            int    sp = 1;

            for (const char *p = doc; *p; p++) {
                char ch = (*p == '\n' || *p == ' ') ? ' ' : *p;

                if (ch == ' ' && sp)
                    continue;
                sp = ch == ' ';
                sq[k++] = ch;
            }
            sq[k] = '\0';
            /* squeeze joined the same way */
            k = 0;
            sp = 1;
            for (size_t i = 0; joined[i]; i++) {
                if (joined[i] == ' ' && sp)
                    continue;
                sp = joined[i] == ' ';
                joined[k++] = joined[i];
            }
            joined[k] = '\0';
            while (k && joined[k - 1] == ' ')
                joined[--k] = '\0';
            k = strlen(sq);
            while (k && sq[k - 1] == ' ')
                sq[--k] = '\0';
            if (strcmp(sq, joined) != 0)
                ok_words = 0;
        }
        sg_chunks_free(&c);
    }
    CHECK(ok_words, "chunk_keeps_all_text_in_order", "text differs");
    CHECK(ok_size, "chunk_within_size", "a passage over the size");
    {
        /* two paragraphs that fit together stay together; three that do
         * not are cut between paragraphs, never inside one */
        sg_chunks c;

        sg_chunk_text("one two three.\n\nfour five six.\n\nseven eight "
                      "nine ten eleven twelve.", 10, NULL, NULL, &c);
        CHECK(c.n == 2 && strcmp(c.v[0], "one two three.\n\nfour five six.")
              == 0, "chunk_paragraph_boundaries", "%zu chunks, first '%s'",
              c.n, c.n ? c.v[0] : "");
        sg_chunks_free(&c);
    }
}

int
main(void)
{
    char            path[] = "/tmp/sg_sqlite_testXXXXXX";
    int             fd = mkstemp(path);
    sg_passage      p[NP];
    sg_store       *s = NULL;
    char            err[256];
    int             rc;

    check_seed_from_env();
    test_chunking();
    close(fd);
    unlink(path);
    make_corpus(p);
    {
        char uri[64];

        snprintf(uri, sizeof(uri), "sqlite:%s", path);
        rc = sg_store_open(uri, &s, err, sizeof(err));
    }
    CHECK(rc == SG_STORE_OK, "sqlite_open", "%s", err);
    if (rc != SG_STORE_OK)
        return check_finish();

    rc = sg_store_ingest(s, p, NP, err, sizeof(err));
    CHECK(rc == SG_STORE_OK && sg_store_count(s, NULL, err, 256) == NP,
          "sqlite_ingest", "%s", err);
    rc = sg_store_ingest(s, p, NP, err, sizeof(err));
    CHECK(rc == SG_STORE_OK && sg_store_count(s, NULL, err, 256) == NP
          && sg_store_count(s, "alpha", err, 256) == NP / 2,
          "sqlite_ingest_idempotent", "count %ld",
          sg_store_count(s, NULL, err, 256));

    check_search(s, NULL, NULL, "sqlite_search_vs_reference");
    check_search(s, "beta", NULL, "sqlite_search_collection_filter");
    check_search(s, NULL, "en", "sqlite_search_meta_filter");

    /* Ranking: a passage with the term five times beats one with it once
     * (same length). */
    {
        sg_passage      two[2] = { p[0], p[1] };
        sg_passage_list l = { 0 };
        sg_search_opts  o = { .collection = "rank", .limit = 5 };

        two[0].id = "r-once";
        two[0].collection = "rank";
        two[0].text = "zzqrare filler filler filler filler";
        two[1].id = "r-five";
        two[1].collection = "rank";
        two[1].text = "zzqrare zzqrare zzqrare zzqrare zzqrare";
        sg_store_ingest(s, two, 2, err, sizeof(err));
        rc = sg_store_search(s, "what is zzqrare", &o, &l, err, sizeof(err));
        CHECK(rc == 0 && l.n == 2 && strcmp(l.v[0].id, "r-five") == 0
              && l.v[0].score > l.v[1].score, "sqlite_bm25_tf_order",
              "rc %d n %zu", rc, l.n);
        sg_passage_list_free(&l);
    }

    /* Upsert changes text: the new text is found, the old is not. */
    {
        sg_passage      up = p[7];
        sg_passage_list l = { 0 };

        up.text = "replacedword only";
        sg_store_ingest(s, &up, 1, err, sizeof(err));
        sg_store_search(s, "replacedword", NULL, &l, err, sizeof(err));
        CHECK(l.n == 1 && strcmp(l.v[0].id, p[7].id) == 0
              && sg_store_count(s, NULL, err, 256) == NP + 2,
              "sqlite_upsert_replaces", "n %zu", l.n);
        sg_passage_list_free(&l);
    }

    /* Listing: canonical order, doc filter. */
    {
        const char     *want_docs[] = { "d005", "d002" };
        sg_search_opts  o = { .doc_ids = want_docs, .n_doc_ids = 2,
                              .limit = 100 };
        sg_passage_list l = { 0 };
        int             ok;

        rc = sg_store_search(s, "", &o, &l, err, sizeof(err));
        ok = rc == 0 && l.n == 6;
        for (size_t k = 1; ok && k < l.n; k++) {
            int c = strcmp(l.v[k - 1].collection, l.v[k].collection);

            if (c > 0 || (c == 0 && strcmp(l.v[k - 1].id, l.v[k].id) >= 0))
                ok = 0;
        }
        CHECK(ok, "sqlite_listing_canonical", "rc %d n %zu", rc, l.n);
        sg_passage_list_free(&l);
    }

    /* get by ids, in the asked order, missing skipped. */
    {
        const char     *g[] = { "p0042", "nope", "p0001" };
        sg_passage_list l = { 0 };

        rc = sg_store_get(s, g, 3, &l, err, sizeof(err));
        CHECK(rc == 0 && l.n == 2 && strcmp(l.v[0].id, "p0042") == 0
              && strcmp(l.v[0].text, texts[42]) == 0
              && strcmp(l.v[1].id, "p0001") == 0, "sqlite_get",
              "rc %d n %zu", rc, l.n);
        sg_passage_list_free(&l);
    }

    /* The async face gives the same passages, already done. */
    {
        char            uri[64];
        sg_astore      *as;
        sg_aquery      *q;
        sg_passage_list a = { 0 }, b = { 0 };
        int             same;

        snprintf(uri, sizeof(uri), "sqlite:%s", path);
        rc = sg_astore_open(uri, NULL, &as, err, sizeof(err));
        if (rc == 0) {
            rc = sg_astore_search(as, vocab[3], NULL, &q, err, sizeof(err));
            same = rc == 0 && sg_aquery_done(q) && sg_aquery_fd(q) == -1
                   && sg_aquery_result(q, &a, err, sizeof(err)) == 0
                   && sg_store_search(s, vocab[3], NULL, &b, err, 256) == 0
                   && a.n == b.n && a.n > 0;
            for (size_t k = 0; same && k < a.n; k++)
                same = strcmp(a.v[k].id, b.v[k].id) == 0;
            CHECK(same, "sqlite_async_same_as_sync", "%s", err);
            if (rc == 0)
                sg_aquery_free(q);
            CHECK(collections_hold(as, "alpha", NP / 2, err, sizeof(err))
                  && collections_hold(as, "beta", NP / 2, err, sizeof(err)),
                  "sqlite_collections", "%s", err);
            sg_astore_close(as);
        }
        sg_passage_list_free(&a);
        sg_passage_list_free(&b);
    }

    {
        sg_search_opts  o = { .meta_filter = "[\"not an object\"]" };
        sg_passage_list l = { 0 };

        rc = sg_store_search(s, "x", &o, &l, err, sizeof(err));
        CHECK(rc == SG_STORE_EINVAL && sg_store_http_status(rc) == 400,
              "sqlite_bad_filter_400", "rc %d", rc);
    }

    /* Bad input never gets stored; a malformed row gives EBADROW. */
    {
        sg_passage bad = p[0];

        bad.meta = "[1,2]";
        rc = sg_store_ingest(s, &bad, 1, err, sizeof(err));
        CHECK(rc == SG_STORE_EINVAL && strstr(err, "p0000"),
              "sqlite_rejects_bad_meta", "rc %d %s", rc, err);
        bad = p[0];
        bad.id = NULL;
        CHECK(sg_store_ingest(s, &bad, 1, err, 256) == SG_STORE_EINVAL,
              "sqlite_rejects_missing_id", "accepted");
    }
    {
        sqlite3        *db;
        sg_passage_list l = { 0 };

        sqlite3_open(path, &db);
        sqlite3_exec(db, "UPDATE passages SET meta = 'not json' WHERE id ="
                     " 'p0010'", NULL, NULL, NULL);
        sqlite3_close(db);
        rc = sg_store_get(s, (const char *[]){ "p0010" }, 1, &l, err, 256);
        CHECK(rc == SG_STORE_EBADROW && strstr(err, "p0010"),
              "sqlite_malformed_row", "rc %d %s", rc, err);
        sg_passage_list_free(&l);
    }
    sg_store_close(s);

    /* Not a database: a clear error naming the file. */
    {
        FILE *f = fopen(path, "w");

        fputs("this is not sqlite, just text that is long enough to be a "
              "header of a database file, 100 bytes or more.............",
              f);
        fclose(f);
        {
            char uri[64];
            char wal[64];

            snprintf(wal, sizeof(wal), "%s-wal", path);
            unlink(wal);
            snprintf(wal, sizeof(wal), "%s-shm", path);
            unlink(wal);
            snprintf(uri, sizeof(uri), "sqlite:%s", path);
            rc = sg_store_open(uri, &s, err, sizeof(err));
        }
        CHECK(rc != SG_STORE_OK && strstr(err, path) != NULL,
              "sqlite_not_a_database", "rc %d %s", rc, err);
        if (rc == SG_STORE_OK)
            sg_store_close(s);
    }
    {
        char wal[64];

        unlink(path);
        snprintf(wal, sizeof(wal), "%s-wal", path);
        unlink(wal);
        snprintf(wal, sizeof(wal), "%s-shm", path);
        unlink(wal);
    }
    return check_finish();
}
