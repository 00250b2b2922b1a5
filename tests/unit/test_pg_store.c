/*
 * The PostgreSQL store against a real server (tests/integration/
 * test_stores.sh starts one and sets SG_TEST_PG to its conninfo; without
 * it this program only reports SKIP).  Sync and async search against a
 * brute-force reference, a pool of concurrent async queries, and faults:
 * server down, a query past its deadline (table locked by another
 * connection) while the event loop never blocks, a backend killed
 * mid-query, a malformed row, recovery after each; what every store does
 * alike (store_checks.c), and a store of schema 1 upgraded.
 */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "await.h"
#include "check.h"
#include "drive_aquery.h"
#include "store.h"
#include "store_checks.h"

#define NP 200
#define NW 30

static char vocab[NW][8], texts[NP][400], ids[NP][40], docs[NP][40];
static char coll[16];

static void
make_corpus(sg_passage *p)
{
    snprintf(coll, sizeof(coll), "t%06u", check_rand32() % 1000000);
    for (int w = 0; w < NW; w++)
        snprintf(vocab[w], sizeof(vocab[w]), "q%03ux", check_rand32() % 1000);
    for (int i = 0; i < NP; i++) {
        int len = 0, nw = 3 + check_rand32() % 15;

        for (int k = 0; k < nw; k++)
            len += snprintf(texts[i] + len, sizeof(texts[i]) - len, "%s ",
                            vocab[check_rand32() % NW]);
        snprintf(ids[i], sizeof(ids[i]), "%s:%04d", coll, i);
        snprintf(docs[i], sizeof(docs[i]), "%s-d%03d", coll, i / 4);
        p[i] = (sg_passage){ .id = ids[i], .doc_id = docs[i], .title = "",
                             .text = texts[i], .collection = coll,
                             .meta = i % 2 ? "{\"odd\":true}"
                                           : "{\"odd\":false}",
                             .n_tokens = -1 };
    }
}

static int
has_word(int i, const char *w)
{
    char pat[16];

    snprintf(pat, sizeof(pat), "%s ", w);
    return strncmp(texts[i], pat, strlen(pat)) == 0
           || strstr(texts[i], pat) != NULL;
}

static int
matches_reference(const sg_passage_list *l, const char *w, int odd_only)
{
    int want = 0, seen[NP] = { 0 };

    for (int i = 0; i < NP; i++)
        want += has_word(i, w) && (!odd_only || i % 2);
    if ((int)l->n != want)
        return 0;
    for (size_t k = 0; k < l->n; k++) {
        int i = atoi(strchr(l->v[k].id, ':') + 1);

        if (seen[i] || !has_word(i, w) || (odd_only && !(i % 2)))
            return 0;
        seen[i] = 1;
        if (k && l->v[k].score > l->v[k - 1].score)
            return 0;
    }
    return 1;
}

static PGresult *
psql(PGconn *c, const char *sql)
{
    return PQexec(c, sql);
}

/* A database holding a store of schema 1 (ids unique across
 * collections): read as it is; an open to ingest upgrades it in place. */
static void
test_schema_1(const char *ci)
{
    PGconn         *admin = PQconnectdb(ci), *old;
    char            uri[700], oci[600], err[512] = "";
    sg_store       *s = NULL;
    sg_passage_list l = { 0 };
    sg_passage      again = { .id = "p1", .doc_id = "d1", .title = "",
                              .text = "zebra again", .collection = "new",
                              .n_tokens = -1 };
    int             rc;

    PQclear(psql(admin, "DROP DATABASE IF EXISTS sg_schema1"));
    PQclear(psql(admin, "CREATE DATABASE sg_schema1"));
    PQfinish(admin);
    snprintf(oci, sizeof(oci), "%s dbname=sg_schema1", ci);
    old = PQconnectdb(oci);
    PQclear(psql(old,
        "CREATE TABLE documents (doc_id text COLLATE \"C\" PRIMARY KEY,"
        " collection text COLLATE \"C\" NOT NULL,"
        " title text NOT NULL DEFAULT '', meta jsonb);"
        "CREATE TABLE passages (id text COLLATE \"C\" PRIMARY KEY,"
        " doc_id text COLLATE \"C\" NOT NULL,"
        " collection text COLLATE \"C\" NOT NULL,"
        " title text NOT NULL DEFAULT '', text text NOT NULL, meta jsonb,"
        " tsv tsvector GENERATED ALWAYS AS ("
        "  setweight(to_tsvector('english', title), 'A') ||"
        "  setweight(to_tsvector('english', text), 'B')) STORED);"
        "CREATE INDEX passages_by_collection ON passages (collection, id);"
        "INSERT INTO documents VALUES ('d1', 'old', '', NULL);"
        "INSERT INTO passages (id, doc_id, collection, text) VALUES"
        " ('p1', 'd1', 'old', 'zebra crossing'),"
        " ('p2', 'd1', 'old', 'giraffe neck')"));
    PQfinish(old);
    snprintf(uri, sizeof(uri), "postgres:%s", oci);
    rc = sg_store_open(uri, &s, err, sizeof(err));
    if (rc == 0)
        rc = sg_store_search(s, "zebra giraffe", NULL, &l, err, 512);
    CHECK(rc == 0 && l.n == 2, "pg_schema_1_read", "rc %d n %zu %s", rc,
          l.n, err);
    sg_passage_list_free(&l);
    sg_store_close(s);
    rc = sg_store_open_rw(uri, &s, err, sizeof(err));
    if (rc == 0)
        rc = sg_store_ingest(s, &again, 1, err, sizeof(err));
    if (rc == 0)
        rc = sg_store_search(s, "zebra", NULL, &l, err, 512);
    CHECK(rc == 0 && l.n == 2 && sg_store_count(s, "old", err, 512) == 2
          && sg_store_count(s, "new", err, 512) == 1, "pg_schema_1_upgraded",
          "rc %d n %zu %s", rc, l.n, err);
    sg_passage_list_free(&l);
    sg_store_close(s);
    admin = PQconnectdb(ci);
    PQclear(psql(admin, "DROP DATABASE IF EXISTS sg_schema1"));
    PQfinish(admin);
}

int
main(void)
{
    const char     *ci = getenv("SG_TEST_PG");
    char            uri[512], err[512];
    sg_passage      p[NP];
    sg_store       *s;
    sg_astore      *as;
    sg_astore_opts  ao = { .pool_size = 3, .timeout_ms = 3000 };
    int             rc;
    double          max_step;

    if (ci == NULL) {
        printf("SKIP pg_store: SG_TEST_PG not set (tests/integration/"
               "test_stores.sh runs this against a real server)\n");
        return check_finish();
    }
    check_seed_from_env();
    make_corpus(p);
    snprintf(uri, sizeof(uri), "postgres:%s", ci);
    rc = sg_store_open_rw(uri, &s, err, sizeof(err));
    CHECK(rc == SG_STORE_OK, "pg_open", "%s", err);
    if (rc != SG_STORE_OK)
        return check_finish();
    rc = sg_store_ingest(s, p, NP, err, sizeof(err));
    CHECK(rc == 0 && sg_store_ingest(s, p, NP, err, sizeof(err)) == 0
          && sg_store_count(s, coll, err, sizeof(err)) == NP,
          "pg_ingest_idempotent", "rc %d %s", rc, err);

    rc = sg_astore_open(uri, &ao, &as, err, sizeof(err));
    CHECK(rc == SG_STORE_OK, "pg_aopen", "%s", err);
    if (rc != SG_STORE_OK)
        return check_finish();

    /* sync and async against the reference */
    {
        int ok_sync = 1, ok_async = 1;

        for (int t = 0; t < 6; t++) {
            const char     *w = vocab[check_rand32() % NW];
            sg_search_opts  o = { .collection = coll, .limit = NP,
                                  .meta_filter = t % 2 ? "{\"odd\":true}"
                                                       : NULL };
            sg_passage_list a = { 0 }, b = { 0 };
            sg_aquery      *q;

            if (sg_store_search(s, w, &o, &a, err, sizeof(err)) != 0
                || !matches_reference(&a, w, t % 2))
                ok_sync = 0;
            if (sg_astore_search(as, w, &o, &q, err, sizeof(err)) != 0)
                ok_async = 0;
            else {
                if (drive_aquery(q, &b, err, sizeof(err), &max_step) != 0
                    || !matches_reference(&b, w, t % 2))
                    ok_async = 0;
                sg_aquery_free(q);
            }
            sg_passage_list_free(&a);
            sg_passage_list_free(&b);
        }
        CHECK(ok_sync, "pg_search_vs_reference", "%s", err);
        CHECK(ok_async, "pg_async_search_vs_reference", "%s", err);
    }

    /* get by ids: asked order, missing ids skipped */
    {
        const char     *g[] = { ids[42], "no-such-id", ids[7] };
        sg_passage_list l = { 0 };

        rc = sg_store_get(s, coll, g, 3, &l, err, sizeof(err));
        CHECK(rc == 0 && l.n == 2 && strcmp(l.v[0].id, ids[42]) == 0
              && strcmp(l.v[0].text, texts[42]) == 0
              && strcmp(l.v[1].id, ids[7]) == 0, "pg_get",
              "rc %d n %zu %s", rc, l.n, err);
        sg_passage_list_free(&l);
    }

    store_checks(s, as, "pg");

    /* three queries in flight at once on the pool, driven together */
    {
        sg_aquery      *q[3];
        sg_passage_list l[3] = { { 0 } };
        sg_search_opts  o = { .collection = coll, .limit = 5 };
        int             ok = 1, left = 3;
        int64_t         end = sg_now_ms() + 5000;

        for (int i = 0; i < 3; i++)
            if (sg_astore_search(as, vocab[i], &o, &q[i], err, 512) != 0)
                ok = 0;
        while (ok && left > 0 && sg_now_ms() < end) {
            struct pollfd pfd[3];
            int           n = 0, map[3];

            for (int i = 0; i < 3; i++) {
                if (sg_aquery_done(q[i]))
                    continue;
                pfd[n].fd = sg_aquery_fd(q[i]);
                pfd[n].events = (sg_aquery_wants(q[i]) & SG_AQ_READ
                                 ? POLLIN : 0)
                                | (sg_aquery_wants(q[i]) & SG_AQ_WRITE
                                   ? POLLOUT : 0);
                map[n++] = i;
            }
            poll(pfd, n, 100);
            for (int k = 0; k < n; k++) {
                int ev = (pfd[k].revents & (POLLIN | POLLHUP | POLLERR)
                          ? SG_AQ_READ : 0)
                         | (pfd[k].revents & POLLOUT ? SG_AQ_WRITE : 0);

                if (sg_aquery_step(q[map[k]], ev) == SG_AQ_DONE)
                    left--;
            }
        }
        for (int i = 0; ok && i < 3; i++)
            if (sg_aquery_result(q[i], &l[i], err, 512) != 0 || l[i].n == 0)
                ok = 0;
        CHECK(ok && left == 0, "pg_async_concurrent_pool", "left %d %s",
              left, err);
        for (int i = 0; i < 3; i++) {
            sg_aquery_free(q[i]);
            sg_passage_list_free(&l[i]);
        }
    }

    /* slow: another connection locks the table; the query times out at its
     * deadline and no step of the event loop blocks */
    {
        PGconn         *locker = PQconnectdb(ci);
        sg_search_opts  o = { .collection = coll, .limit = 5,
                              .timeout_ms = 400 };
        sg_aquery      *q;
        sg_passage_list l = { 0 };
        int64_t         t0 = sg_now_ms();

        PQclear(psql(locker, "BEGIN"));
        PQclear(psql(locker, "LOCK TABLE passages IN ACCESS EXCLUSIVE MODE"));
        rc = sg_astore_search(as, vocab[0], &o, &q, err, sizeof(err));
        if (rc == 0) {
            rc = drive_aquery(q, &l, err, sizeof(err), &max_step);
            sg_aquery_free(q);
        }
        CHECK(rc == SG_STORE_ETIMEOUT && sg_now_ms() - t0 < 1500,
              "pg_async_timeout", "rc %d after %lld ms: %s", rc,
              (long long)(sg_now_ms() - t0), err);
        CHECK(max_step < 20, "pg_async_never_blocks",
              "a step took %.0f ms", max_step);
        /* the sync path times out too (statement_timeout) */
        rc = sg_store_search(s, vocab[0], &o, &l, err, sizeof(err));
        CHECK(rc == SG_STORE_ETIMEOUT, "pg_sync_timeout", "rc %d %s", rc,
              err);
        PQclear(psql(locker, "ROLLBACK"));
        PQfinish(locker);
        o.timeout_ms = 3000;
        rc = sg_astore_search(as, vocab[0], &o, &q, err, sizeof(err));
        if (rc == 0) {
            rc = drive_aquery(q, &l, err, sizeof(err), &max_step);
            sg_aquery_free(q);
        }
        CHECK(rc == 0 && l.n > 0, "pg_recovers_after_timeout", "rc %d %s",
              rc, err);
        sg_passage_list_free(&l);
    }

    CHECK(collections_hold(as, coll, NP, err, sizeof(err)),
          "pg_collections", "%s", err);

    /* the backend dies mid-query: EDOWN, and the next query reconnects */
    sg_astore_close(as);
    sg_astore_open(uri, &ao, &as, err, sizeof(err));
    {
        /* admin holds the lock; mon watches (pg_stat_activity is a
         * snapshot inside a transaction, so not from admin) */
        PGconn         *admin = PQconnectdb(ci), *mon = PQconnectdb(ci);
        sg_search_opts  o = { .collection = coll, .limit = 5,
                              .timeout_ms = 8000 };
        sg_aquery      *q[3];
        sg_passage_list l = { 0 };
        int             got_down = 0, n = 0;

        PQclear(psql(admin, "BEGIN"));
        PQclear(psql(admin, "LOCK TABLE passages IN ACCESS EXCLUSIVE MODE"));
        /* occupy every pooled connection so each waits on the lock */
        for (int i = 0; i < 3; i++)
            if (sg_astore_search(as, vocab[1], &o, &q[n], err, 512) == 0)
                n++;
        /* step them until all three wait on the lock in the server */
        for (int64_t end = sg_now_ms() + 3000; sg_now_ms() < end;) {
            PGresult *r = psql(mon, "SELECT count(*) FROM pg_stat_activity"
                               " WHERE application_name = 'sparsegate'"
                               " AND wait_event_type = 'Lock'");
            int       waiting = atoi(PQgetvalue(r, 0, 0));

            PQclear(r);
            if (waiting >= n)
                break;
            for (int i = 0; i < n; i++) {
                struct pollfd pfd = { .fd = sg_aquery_fd(q[i]) };

                pfd.events = (sg_aquery_wants(q[i]) & SG_AQ_READ
                              ? POLLIN : 0)
                             | (sg_aquery_wants(q[i]) & SG_AQ_WRITE
                                ? POLLOUT : 0);
                if (poll(&pfd, 1, 10) > 0)
                    sg_aquery_step(q[i], (pfd.revents & POLLIN ? 1 : 0)
                                         | (pfd.revents & POLLOUT ? 2 : 0));
            }
        }
        {
            PGresult *r = psql(mon, "SELECT pg_terminate_backend(pid)"
                               " FROM pg_stat_activity WHERE"
                               " application_name = 'sparsegate'"
                               " AND wait_event_type = 'Lock'");

            PQclear(r);
        }
        for (int i = 0; i < n; i++) {
            rc = drive_aquery(q[i], &l, err, sizeof(err), &max_step);
            got_down += rc == SG_STORE_EDOWN;
            sg_aquery_free(q[i]);
        }
        PQclear(psql(admin, "ROLLBACK"));
        PQfinish(admin);
        PQfinish(mon);
        CHECK(got_down == n && n == 3, "pg_async_backend_killed",
              "%d of %d gave EDOWN (%s)", got_down, n, err);
        sg_passage_list_free(&l);
        rc = sg_astore_search(as, vocab[1], &o, &q[0], err, sizeof(err));
        if (rc == 0) {
            rc = drive_aquery(q[0], &l, err, sizeof(err), &max_step);
            sg_aquery_free(q[0]);
        }
        CHECK(rc == 0 && l.n > 0, "pg_async_reconnects", "rc %d %s", rc,
              err);
        sg_passage_list_free(&l);
    }

    /* malformed row */
    {
        PGconn         *admin = PQconnectdb(ci);
        char            sql[256];
        sg_search_opts  o = { .collection = coll, .limit = NP };
        sg_passage_list l = { 0 };

        snprintf(sql, sizeof(sql), "UPDATE passages SET meta = '[1,2]'"
                 " WHERE id = '%s'", ids[3]);
        PQclear(psql(admin, sql));
        rc = sg_store_search(s, NULL, &o, &l, err, sizeof(err));
        CHECK(rc == SG_STORE_EBADROW && strstr(err, ids[3]) != NULL
              && l.n == 0, "pg_malformed_row", "rc %d %s", rc, err);
        snprintf(sql, sizeof(sql), "DELETE FROM passages WHERE collection"
                 " = '%s'", coll);
        PQclear(psql(admin, sql));
        PQfinish(admin);
        sg_passage_list_free(&l);
    }
    sg_astore_close(as);
    sg_store_close(s);

    test_schema_1(ci);

    /* down at start */
    {
        sg_aquery      *q;
        sg_passage_list l = { 0 };

        sg_astore_open("postgres:host=127.0.0.1 port=1 user=x", &ao, &as,
                       err, sizeof(err));
        rc = sg_astore_search(as, "x", NULL, &q, err, sizeof(err));
        if (rc == 0) {
            rc = drive_aquery(q, &l, err, sizeof(err), &max_step);
            sg_aquery_free(q);
        }
        CHECK(rc == SG_STORE_EDOWN && strstr(err, "connect") != NULL,
              "pg_down_at_start", "rc %d %s", rc, err);
        sg_astore_close(as);
        rc = sg_store_open("postgres:host=127.0.0.1 port=1 user=x", &s, err,
                           sizeof(err));
        CHECK(rc == SG_STORE_EDOWN, "pg_sync_down_at_start", "rc %d", rc);
    }
    return check_finish();
}
