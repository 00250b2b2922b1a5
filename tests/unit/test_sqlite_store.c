/*
 * The SQLite store on a temp file: ingest (idempotent upserts), search
 * against a brute-force reference, filters, canonical listing, get, the
 * async face (its search in the host's thread, a pool of connections), bad
 * data, what every store does alike (store_checks.c); and the file's life:
 * read-only opens that create nothing, refuse what is not a store of the
 * current schema, upgrade a store of schema 1, and follow a file replaced
 * or rewritten under them.
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
#include "store_checks.h"

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

static void
remove_store(const char *path)
{
    char f[128];

    unlink(path);
    snprintf(f, sizeof(f), "%s-wal", path);
    unlink(f);
    snprintf(f, sizeof(f), "%s-shm", path);
    unlink(f);
}

/* A store of pool_size connections: that many queries at once, then
 * SG_STORE_EBUSY until one is freed. */
static void
test_pool(sg_astore *as)
{
    sg_aquery *q[SG_STORE_POOL_SIZE + 1] = { 0 };
    char       err[256] = "";
    int        ok = 1, rc;

    for (int i = 0; i < SG_STORE_POOL_SIZE; i++)
        ok &= sg_astore_search(as, vocab[i], NULL, &q[i], err, 256) == 0;
    rc = sg_astore_search(as, vocab[0], NULL, &q[SG_STORE_POOL_SIZE], err,
                          256);
    ok &= rc == SG_STORE_EBUSY;
    sg_aquery_free(q[0]);
    q[0] = NULL;
    ok &= sg_astore_search(as, vocab[0], NULL, &q[0], err, 256) == 0;
    for (int i = 0; i <= SG_STORE_POOL_SIZE; i++)
        sg_aquery_free(q[i]);
    CHECK(ok, "sqlite_async_pool_busy", "rc %d %s", rc, err);
}

/* How stores were written before schema versions: ids unique across
 * collections. */
static const char schema_1[] =
    "PRAGMA journal_mode=WAL;"
    "CREATE TABLE documents(doc_id TEXT PRIMARY KEY,"
    "  collection TEXT NOT NULL, title TEXT NOT NULL DEFAULT '', meta TEXT);"
    "CREATE TABLE passages(rowid INTEGER PRIMARY KEY, id TEXT NOT NULL"
    "  UNIQUE, doc_id TEXT NOT NULL, collection TEXT NOT NULL,"
    "  title TEXT NOT NULL DEFAULT '', text TEXT NOT NULL, meta TEXT);"
    "CREATE INDEX passages_by_collection ON passages(collection, id);"
    "CREATE INDEX passages_by_doc ON passages(doc_id);"
    "CREATE VIRTUAL TABLE passages_fts USING fts5(title, text,"
    "  content='passages', content_rowid='rowid',"
    "  tokenize='porter unicode61');"
    "CREATE TRIGGER passages_ai AFTER INSERT ON passages BEGIN"
    "  INSERT INTO passages_fts(rowid, title, text)"
    "  VALUES (new.rowid, new.title, new.text); END;"
    "INSERT INTO documents VALUES ('d1', 'old', 'T', NULL);"
    "INSERT INTO passages(id, doc_id, collection, title, text) VALUES"
    "  ('p1', 'd1', 'old', 'T', 'zebra crossing'),"
    "  ('p2', 'd1', 'old', 'T', 'giraffe neck');";

/* A store of schema 1: read-only opens refuse it naming the command that
 * upgrades it; that (an open to ingest) keeps every passage and makes ids
 * per collection. */
static void
test_schema_1(const char *path, sg_passage *p)
{
    sqlite3        *db;
    sg_store       *s = NULL;
    char            uri[128], err[512] = "";
    sg_passage_list l = { 0 };
    int             rc;

    snprintf(uri, sizeof(uri), "sqlite:%s", path);
    sqlite3_open(path, &db);
    rc = sqlite3_exec(db, schema_1, NULL, NULL, NULL);
    sqlite3_close(db);
    CHECK(rc == SQLITE_OK, "sqlite_schema_1_fixture", "rc %d", rc);
    rc = sg_store_check(uri, err, sizeof(err));
    CHECK(rc != SG_STORE_OK && strstr(err, "schema 1")
          && strstr(err, "sparsegate migrate --store sqlite:"),
          "sqlite_schema_1_refused", "rc %d %s", rc, err);
    rc = sg_store_open_rw(uri, &s, err, sizeof(err));
    if (rc == SG_STORE_OK) {
        sg_passage again = p[0];

        again.id = "p1";
        again.collection = "new";
        rc = sg_store_ingest(s, &again, 1, err, sizeof(err));
        sg_store_close(s);
    }
    if (rc == SG_STORE_OK)
        rc = sg_store_open(uri, &s, err, sizeof(err));
    if (rc == SG_STORE_OK) {
        rc = sg_store_search(s, "zebra giraffe", NULL, &l, err, 256);
        CHECK(rc == 0 && l.n == 2 && sg_store_count(s, "old", err, 256) == 2
              && sg_store_count(s, "new", err, 256) == 1,
              "sqlite_schema_1_upgraded", "rc %d n %zu %s", rc, l.n, err);
        sg_passage_list_free(&l);
        sg_store_close(s);
    } else {
        CHECK(0, "sqlite_schema_1_upgraded", "rc %d %s", rc, err);
    }
    remove_store(path);
    /* a SQLite database that is not a store */
    sqlite3_open(path, &db);
    sqlite3_exec(db, "CREATE TABLE t(x)", NULL, NULL, NULL);
    sqlite3_close(db);
    rc = sg_store_check(uri, err, sizeof(err));
    CHECK(rc != SG_STORE_OK && strstr(err, "not a SparseGate store")
          && strstr(err, path), "sqlite_not_a_store", "rc %d %s", rc, err);
    remove_store(path);
}

/* Makes a store at path holding one passage of text. */
static int
make_store(const char *path, const char *text, sg_passage *p)
{
    char        uri[128], err[256];
    sg_store   *s;
    sg_passage  one = p[0];
    int         rc;

    snprintf(uri, sizeof(uri), "sqlite:%s", path);
    remove_store(path);
    rc = sg_store_open_rw(uri, &s, err, sizeof(err));
    if (rc != SG_STORE_OK)
        return rc;
    one.text = (char *)text;
    rc = sg_store_ingest(s, &one, 1, err, sizeof(err));
    sg_store_close(s);
    return rc;
}

/* The text an async search of word finds, or "" (or the error). */
static const char *
found(sg_astore *as, const char *word, char *buf, size_t len)
{
    sg_passage_list l = { 0 };
    sg_aquery      *q;
    double          max_step;
    int             rc = sg_astore_search(as, word, NULL, &q, buf, len);

    if (rc == 0) {
        rc = drive_aquery(q, &l, buf, (int)len, &max_step);
        sg_aquery_free(q);
    }
    if (rc == 0)
        snprintf(buf, len, "%s", l.n ? l.v[0].text : "");
    sg_passage_list_free(&l);
    return buf;
}

/* A file replaced under a running store (renamed over, rewritten in place,
 * broken, then fixed): the next query sees the new file. */
static void
test_file_replaced(const char *path, sg_passage *p)
{
    char       other[128], uri[128], err[256], buf[512], cmd[400];
    sg_astore *as;

    snprintf(other, sizeof(other), "%s.new", path);
    snprintf(uri, sizeof(uri), "sqlite:%s", path);
    if (make_store(path, "first aardvark", p) != 0
        || sg_astore_open(uri, NULL, &as, err, sizeof(err)) != 0)
    {
        CHECK(0, "sqlite_file_replaced", "setup: %s", err);
        return;
    }
    CHECK(strcmp(found(as, "aardvark", buf, sizeof(buf)), "first aardvark")
          == 0, "sqlite_file_first", "%s", buf);
    /* renamed over: a new inode */
    make_store(other, "second aardvark", p);
    rename(other, path);
    CHECK(strcmp(found(as, "aardvark", buf, sizeof(buf)), "second aardvark")
          == 0, "sqlite_file_renamed_over", "%s", buf);
    /* rewritten in place: same inode, other bytes */
    make_store(other, "third aardvark, a longer text than before", p);
    snprintf(cmd, sizeof(cmd), "cat '%s' > '%s'", other, path);
    CHECK(system(cmd) == 0
          && strcmp(found(as, "aardvark", buf, sizeof(buf)),
                    "third aardvark, a longer text than before") == 0,
          "sqlite_file_rewritten_in_place", "%s", buf);
    /* broken: an error of the query (not the old answer); fixed: found */
    snprintf(cmd, sizeof(cmd), "head -c 2048 /dev/zero > '%s'", path);
    CHECK(system(cmd) == 0
          && strstr(found(as, "aardvark", buf, sizeof(buf)), path) != NULL,
          "sqlite_file_broken_is_an_error", "%s", buf);
    make_store(path, "fourth aardvark", p);
    CHECK(strcmp(found(as, "aardvark", buf, sizeof(buf)), "fourth aardvark")
          == 0, "sqlite_file_fixed", "%s", buf);
    /* gone: an error naming it, no file made */
    remove_store(path);
    CHECK(strstr(found(as, "aardvark", buf, sizeof(buf)), path) != NULL
          && access(path, F_OK) != 0, "sqlite_file_gone", "%s", buf);
    sg_astore_close(as);
    remove_store(other);
    remove_store(path);
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
        CHECK(rc == SG_STORE_EDOWN && strstr(err, path) != NULL
              && access(path, F_OK) != 0, "sqlite_read_missing_file",
              "rc %d, %s, file %s", rc, err,
              access(path, F_OK) == 0 ? "created" : "not created");
        rc = sg_store_open_rw(uri, &s, err, sizeof(err));
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
        const char     *g[] = { "p0042", "nope", "p0001", "p0040" };
        sg_passage_list l = { 0 };

        rc = sg_store_get(s, "alpha", g, 4, &l, err, sizeof(err));
        CHECK(rc == 0 && l.n == 2 && strcmp(l.v[0].id, "p0042") == 0
              && strcmp(l.v[0].text, texts[42]) == 0
              && strcmp(l.v[1].id, "p0040") == 0, "sqlite_get",
              "rc %d n %zu", rc, l.n);
        sg_passage_list_free(&l);
    }

    /* The async face gives the same passages, its search done as the
     * host's thread's work; what every store does alike. */
    {
        char            uri[64];
        sg_astore      *as;
        sg_aquery      *q;
        sg_passage_list a = { 0 }, b = { 0 };
        int             same, work;
        double          max_step;

        snprintf(uri, sizeof(uri), "sqlite:%s", path);
        rc = sg_astore_open(uri, NULL, &as, err, sizeof(err));
        if (rc == 0) {
            rc = sg_astore_search(as, vocab[3], NULL, &q, err, sizeof(err));
            work = rc == 0 && !sg_aquery_done(q) && sg_aquery_fd(q) == -1
                   && sg_aquery_wants(q) == SG_AQ_WORK
                   && sg_aquery_step(q, 0) == SG_AQ_AGAIN;
            same = rc == 0
                   && drive_aquery(q, &a, err, sizeof(err), &max_step) == 0
                   && sg_store_search(s, vocab[3], NULL, &b, err, 256) == 0
                   && a.n == b.n && a.n > 0;
            for (size_t k = 0; same && k < a.n; k++)
                same = strcmp(a.v[k].id, b.v[k].id) == 0;
            CHECK(work, "sqlite_async_search_is_thread_work", "rc %d %s",
                  rc, err);
            CHECK(same, "sqlite_async_same_as_sync", "%s", err);
            if (rc == 0)
                sg_aquery_free(q);
            CHECK(collections_hold(as, "alpha", NP / 2, err, sizeof(err))
                  && collections_hold(as, "beta", NP / 2, err, sizeof(err)),
                  "sqlite_collections", "%s", err);
            test_pool(as);
            store_checks(s, as, "sqlite");
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
        rc = sg_store_get(s, "alpha", (const char *[]){ "p0010" }, 1, &l,
                          err, 256);
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
    remove_store(path);
    test_schema_1(path, p);
    test_file_replaced(path, p);
    return check_finish();
}
