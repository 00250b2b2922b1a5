/*
 * The Redis store against a real server (tests/integration/
 * test_stores.sh starts one and sets SG_TEST_REDIS to HOST:PORT; without
 * it this program only reports SKIP).  Search (BM25 in Lua) against a
 * brute-force reference, sync and async; the token cache round trip and
 * its invalidation; faults: server busy past the deadline (a slow script)
 * while no step blocks, connection killed (transparent reconnect),
 * malformed row, server down at start; what every store does alike
 * (store_checks.c), and a store of schema 1 upgraded in place.
 */
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "await.h"
#include "check.h"
#include "drive_aquery.h"
#include "store.h"
#include "store_checks.h"
#include "tokcache.h"

#define NP 200
#define NW 30

static char vocab[NW][8], texts[NP][400], ids[NP][40], docs[NP][40];
static char coll[16];

static void
make_corpus(sg_passage *p)
{
    snprintf(coll, sizeof(coll), "r%06u", check_rand32() % 1000000);
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
    return strstr(texts[i], pat) != NULL;
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

static int
asearch(sg_astore *as, const char *query, const sg_search_opts *o,
    sg_passage_list *out, char *err, double *max_step)
{
    sg_aquery *q;
    int        rc = sg_astore_search(as, query, o, &q, err, 512);

    if (rc != SG_STORE_OK)
        return rc;
    rc = drive_aquery(q, out, err, 512, max_step);
    sg_aquery_free(q);
    return rc;
}

static void
cmd(redisContext *c, const char *fmt, ...)
{
    va_list     ap;
    redisReply *r;

    va_start(ap, fmt);
    r = redisvCommand(c, fmt, ap);
    va_end(ap);
    if (r)
        freeReplyObject(r);
}

/* Passages written as schema 1 did (keys by id alone) beside the store of
 * schema 2 this test made: searches refuse the mix naming the command
 * that upgrades it; that (an open to ingest) moves the old ones to keys of
 * their collection and leaves the others as they are. */
static void
test_schema_1(redisContext *admin, const char *uri, sg_store *now)
{
    const char     *c = "v1coll";
    sg_store       *s = NULL;
    sg_search_opts  o = { .collection = c, .limit = 10 };
    sg_passage_list l = { 0 };
    char            err[512] = "";
    int             rc, ok;

    cmd(admin, "HSET passage:v1p1 doc_id v1d title %s text %s collection %s"
        " meta %s dl 2", "", "okapi stripes", c, "");
    cmd(admin, "ZADD sg:colls 0 %s", c);
    cmd(admin, "ZADD sg:coll:%s 0 v1p1", c);
    cmd(admin, "SADD sg:doc:v1d v1p1");
    cmd(admin, "ZADD sg:idx:%s:okapi 0.9 v1p1", c);
    cmd(admin, "ZADD sg:idx:%s:stripes 0.9 v1p1", c);
    cmd(admin, "RPUSH sg:terms:v1p1 okapi stripes");
    cmd(admin, "HSET sg:stats:%s n 1 len 2", c);
    cmd(admin, "DEL sg:schema");
    rc = sg_store_search(now, "okapi", &o, &l, err, sizeof(err));
    CHECK(rc != SG_STORE_OK && strstr(err, "schema 1")
          && strstr(err, "sparsegate migrate"), "redis_schema_1_refused",
          "rc %d %s", rc, err);
    sg_passage_list_free(&l);
    rc = sg_store_open_rw(uri, &s, err, sizeof(err));
    if (rc == 0)
        rc = sg_store_search(s, "okapi", &o, &l, err, sizeof(err));
    ok = rc == 0 && l.n == 1 && strcmp(l.v[0].id, "v1p1") == 0;
    sg_passage_list_free(&l);
    if (ok) {
        o.collection = coll;
        o.limit = NP;
        rc = sg_store_search(s, "", &o, &l, err, sizeof(err));
        ok = rc == 0 && l.n == NP;
        sg_passage_list_free(&l);
    }
    CHECK(ok, "redis_schema_1_upgraded", "rc %d %s", rc, err);
    sg_store_close(s);
}

int
main(void)
{
    const char     *hp = getenv("SG_TEST_REDIS");
    char            uri[300], err[512], host[256];
    int             port = 0, rc;
    sg_passage      p[NP];
    sg_store       *s;
    sg_astore      *as;
    sg_astore_opts  ao = { .pool_size = 2, .timeout_ms = 3000 };
    redisContext   *admin;
    double          max_step;

    if (hp == NULL) {
        printf("SKIP redis_store: SG_TEST_REDIS not set (tests/integration/"
               "test_stores.sh runs this against a real server)\n");
        return check_finish();
    }
    signal(SIGPIPE, SIG_IGN);
    check_seed_from_env();
    make_corpus(p);
    snprintf(uri, sizeof(uri), "redis:%s", hp);
    sscanf(hp, "%255[^:]:%d", host, &port);
    admin = redisConnect(host, port);
    rc = sg_store_open_rw(uri, &s, err, sizeof(err));
    CHECK(rc == SG_STORE_OK && admin && !admin->err, "redis_open", "%s",
          err);
    if (rc != SG_STORE_OK)
        return check_finish();
    rc = sg_store_ingest(s, p, NP, err, sizeof(err));
    CHECK(rc == 0 && sg_store_ingest(s, p, NP, err, sizeof(err)) == 0
          && sg_store_count(s, coll, err, sizeof(err)) == NP,
          "redis_ingest_idempotent", "rc %d %s", rc, err);
    sg_astore_open(uri, &ao, &as, err, sizeof(err));

    {
        int ok_sync = 1, ok_async = 1;

        for (int t = 0; t < 6; t++) {
            const char     *w = vocab[check_rand32() % NW];
            sg_search_opts  o = { .collection = coll, .limit = NP,
                                  .meta_filter = t % 2 ? "{\"odd\":true}"
                                                       : NULL };
            sg_passage_list a = { 0 }, b = { 0 };

            if (sg_store_search(s, w, &o, &a, err, sizeof(err)) != 0
                || !matches_reference(&a, w, t % 2))
                ok_sync = 0;
            if (asearch(as, w, &o, &b, err, &max_step) != 0
                || !matches_reference(&b, w, t % 2))
                ok_async = 0;
            sg_passage_list_free(&a);
            sg_passage_list_free(&b);
        }
        CHECK(ok_sync, "redis_search_vs_reference", "%s", err);
        CHECK(ok_async, "redis_async_search_vs_reference", "%s", err);
    }
    /* get by ids: asked order, missing ids skipped */
    {
        const char     *g[] = { ids[42], "no-such-id", ids[7] };
        sg_passage_list l = { 0 };

        rc = sg_store_get(s, coll, g, 3, &l, err, sizeof(err));
        CHECK(rc == 0 && l.n == 2 && strcmp(l.v[0].id, ids[42]) == 0
              && strcmp(l.v[0].text, texts[42]) == 0
              && strcmp(l.v[1].id, ids[7]) == 0, "redis_get",
              "rc %d n %zu %s", rc, l.n, err);
        sg_passage_list_free(&l);
    }

    store_checks(s, as, "redis");
    test_schema_1(admin, uri, s);

    /* canonical listing of two documents */
    {
        const char     *d[] = { docs[9], docs[2] };
        sg_search_opts  o = { .doc_ids = d, .n_doc_ids = 2, .limit = 100 };
        sg_passage_list l = { 0 };
        int             ok;

        rc = asearch(as, "", &o, &l, err, &max_step);
        ok = rc == 0 && l.n == 8;
        for (size_t k = 1; ok && k < l.n; k++)
            ok = strcmp(l.v[k - 1].id, l.v[k].id) < 0;
        CHECK(ok, "redis_listing_canonical", "rc %d n %zu", rc, l.n);
        sg_passage_list_free(&l);
    }

    /* token cache: put random ids, get them back sync and async; a
     * changed passage loses its entry */
    {
        sg_passage_list l = { 0 };
        uint64_t        h = ((uint64_t)check_rand32() << 32) | check_rand32();
        size_t          hits = 0;
        int             ok = 1;
        sg_aquery      *q;

        for (int i = 0; i < 4; i++) {
            sg_passage_list_push(&l, &p[i]);
            l.v[i].n_tokens = 1 + check_rand32() % 300;
            l.v[i].tokens = malloc(l.v[i].n_tokens * sizeof(int32_t));
            for (int k = 0; k < l.v[i].n_tokens; k++)
                l.v[i].tokens[k] = (int32_t)(check_rand32() % 129280);
        }
        rc = sg_tokcache_put(s, h, l.v, 3, 60, err, sizeof(err));
        {
            sg_passage_list g = { 0 };

            for (int i = 0; i < 4; i++)
                sg_passage_list_push(&g, &p[i]);
            if (rc == 0)
                rc = sg_tokcache_get(s, h, g.v, 4, &hits, err, sizeof(err));
            for (int i = 0; i < 3; i++)
                ok &= g.v[i].n_tokens == l.v[i].n_tokens
                      && memcmp(g.v[i].tokens, l.v[i].tokens,
                                l.v[i].n_tokens * 4) == 0;
            ok &= g.v[3].tokens == NULL && hits == 3;
            CHECK(rc == 0 && ok, "redis_tokcache_roundtrip",
                  "rc %d hits %zu %s", rc, hits, err);
            sg_passage_list_free(&g);
            for (int i = 0; i < 4; i++)
                sg_passage_list_push(&g, &p[i]);
            rc = sg_atokcache_get(as, h, g.v, 4, &q, err, sizeof(err));
            if (rc == 0) {
                sg_passage_list none = { 0 };

                rc = drive_aquery(q, &none, err, sizeof(err), &max_step);
                sg_aquery_free(q);
            }
            ok = rc == 0;
            for (int i = 0; ok && i < 3; i++)
                ok = g.v[i].n_tokens == l.v[i].n_tokens
                     && memcmp(g.v[i].tokens, l.v[i].tokens,
                               l.v[i].n_tokens * 4) == 0;
            CHECK(ok, "redis_async_tokcache", "rc %d %s", rc, err);
            sg_passage_list_free(&g);
            /* the text of passage 1 changes: its cached ids go */
            {
                sg_passage up = p[1];

                up.text = "new text";
                sg_store_ingest(s, &up, 1, err, sizeof(err));
                for (int i = 0; i < 4; i++)
                    sg_passage_list_push(&g, &p[i]);
                sg_tokcache_get(s, h, g.v, 4, &hits, err, sizeof(err));
                CHECK(hits == 2 && g.v[1].tokens == NULL && g.v[0].tokens,
                      "redis_tokcache_invalidated", "hits %zu", hits);
                sg_passage_list_free(&g);
                sg_store_ingest(s, &p[1], 1, err, sizeof(err));
            }
        }
        sg_passage_list_free(&l);
    }

    /* busy server (a 1 s script from another client): the query ends at
     * its deadline, no step blocks; later queries succeed */
    {
        sg_search_opts  o = { .collection = coll, .limit = 5,
                              .timeout_ms = 300 };
        sg_passage_list l = { 0 };
        int64_t         t0;

        /* a Lua loop keeps the server busy for 1 s */
        redisAppendCommand(admin, "EVAL %s 0",
                           "local t = redis.call('TIME') "
                           "local e = t[1] * 1000000 + t[2] + 1000000 "
                           "repeat t = redis.call('TIME') "
                           "until t[1] * 1000000 + t[2] >= e return 1");
        {
            int            done = 0;
            struct pollfd  pfd = { 0 };

            redisBufferWrite(admin, &done);
            poll(&pfd, 0, 50);          /* let the server start on it */
        }
        t0 = sg_now_ms();
        rc = asearch(as, vocab[0], &o, &l, err, &max_step);
        CHECK(rc == SG_STORE_ETIMEOUT && sg_now_ms() - t0 < 900,
              "redis_async_timeout", "rc %d after %lld ms %s", rc,
              (long long)(sg_now_ms() - t0), err);
        CHECK(max_step < 20, "redis_async_never_blocks", "step %.0f ms",
              max_step);
        {
            redisReply *r;

            redisGetReply(admin, (void **)&r);     /* the sleep ends */
            if (r)
                freeReplyObject(r);
        }
        o.timeout_ms = 3000;
        rc = asearch(as, vocab[0], &o, &l, err, &max_step);
        CHECK(rc == 0 && l.n > 0, "redis_recovers_after_timeout", "rc %d %s",
              rc, err);
        sg_passage_list_free(&l);
    }

    /* every client connection killed: the idle pooled one is replaced */
    {
        sg_search_opts  o = { .collection = coll, .limit = 5 };
        sg_passage_list l = { 0 };
        redisReply     *r = redisCommand(admin, "CLIENT KILL TYPE normal"
                                         " SKIPME yes");

        if (r)
            freeReplyObject(r);
        rc = asearch(as, vocab[2], &o, &l, err, &max_step);
        CHECK(rc == 0 && l.n > 0, "redis_async_reconnects", "rc %d %s", rc,
              err);
        sg_passage_list_free(&l);
        rc = sg_store_search(s, vocab[2], &o, &l, err, sizeof(err));
        rc = rc == 0 ? 0 : sg_store_search(s, vocab[2], &o, &l, err, 512);
        CHECK(rc == 0 && l.n > 0, "redis_sync_reconnects", "rc %d %s", rc,
              err);
        sg_passage_list_free(&l);
    }

    CHECK(collections_hold(as, coll, NP, err, sizeof(err)),
          "redis_collections", "%s", err);

    /* malformed row: a passage hash without its text */
    {
        sg_search_opts  o = { .collection = coll, .limit = NP };
        sg_passage_list l = { 0 };
        redisReply     *r = redisCommand(admin, "HDEL passage:%d:%s:%s text",
                                         (int)strlen(coll), coll, ids[5]);

        if (r)
            freeReplyObject(r);
        rc = asearch(as, "", &o, &l, err, &max_step);
        CHECK(rc == SG_STORE_EBADROW && strstr(err, ids[5]) != NULL,
              "redis_malformed_row", "rc %d %s", rc, err);
        sg_passage_list_free(&l);
    }
    sg_astore_close(as);
    sg_store_close(s);
    redisFree(admin);

    /* down at start */
    {
        sg_passage_list l = { 0 };

        sg_astore_open("redis:127.0.0.1:1", &ao, &as, err, sizeof(err));
        rc = asearch(as, "x", NULL, &l, err, &max_step);
        CHECK(rc == SG_STORE_EDOWN && strstr(err, "127.0.0.1:1") != NULL,
              "redis_down_at_start", "rc %d %s", rc, err);
        sg_astore_close(as);
        rc = sg_store_open("redis:127.0.0.1:1", &s, err, sizeof(err));
        CHECK(rc == SG_STORE_EDOWN, "redis_sync_down_at_start", "rc %d", rc);
    }
    return check_finish();
}
