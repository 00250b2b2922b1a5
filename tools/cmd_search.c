/*
 * sparsegate search: queries a passage store.
 *
 *   sparsegate search --store URI [--collection C] [--limit N]
 *                     [--filter JSON] [--doc ID]... [--timeout MS]
 *                     [--async] [--json] [QUERY]
 *
 * --async runs the non-blocking path the nginx worker uses (driven here by
 * poll); without a QUERY it lists passages in canonical order.  Exit
 * status: 0 found, 1 error (message on stderr names the store and the
 * kind: store_unavailable, store_timeout, store_bad_data, ...).
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "await.h"
#include "store.h"

static void
usage(FILE *f)
{
    fprintf(f, "usage: sparsegate search --store URI [--collection C] "
            "[--limit N]\n"
            "         [--filter JSON] [--doc ID]... [--timeout MS] "
            "[--async] [--json] [QUERY]\n");
}

static void
print_text_line(const sg_passage *p, size_t rank)
{
    char   snip[121];
    size_t n = 0;

    for (const char *s = p->text; *s && n < sizeof(snip) - 1; s++)
        snip[n++] = (*s == '\n' || *s == '\t') ? ' ' : *s;
    snip[n] = '\0';
    printf("%3zu %9.4f %-28s %-20s %s\n    %s\n", rank + 1, p->score, p->id,
           p->doc_id, p->title, snip);
}

static void
print_json_line(const sg_passage *p)
{
    cJSON *o = cJSON_CreateObject();
    char  *s;

    cJSON_AddStringToObject(o, "id", p->id);
    cJSON_AddStringToObject(o, "doc_id", p->doc_id);
    cJSON_AddStringToObject(o, "title", p->title);
    cJSON_AddStringToObject(o, "collection", p->collection);
    cJSON_AddNumberToObject(o, "score", p->score);
    cJSON_AddStringToObject(o, "text", p->text);
    if (p->meta)
        cJSON_AddItemToObject(o, "metadata", cJSON_Parse(p->meta));
    s = cJSON_PrintUnformatted(o);
    puts(s);
    free(s);
    cJSON_Delete(o);
}

int
sg_cmd_search(int argc, char **argv)
{
    static const struct option opts[] = {
        { "store", required_argument, NULL, 's' },
        { "collection", required_argument, NULL, 'c' },
        { "limit", required_argument, NULL, 'l' },
        { "filter", required_argument, NULL, 'f' },
        { "doc", required_argument, NULL, 'd' },
        { "timeout", required_argument, NULL, 't' },
        { "async", no_argument, NULL, 'a' },
        { "json", no_argument, NULL, 'j' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char     *uri = NULL, *docs[64];
    sg_search_opts  o = { 0 };
    sg_passage_list l = { 0 };
    char            err[512], query[4096] = "";
    int             c, use_async = 0, json = 0, rc;
    int64_t         t0;

    /* a server closing a socket must give an error, not SIGPIPE */
    signal(SIGPIPE, SIG_IGN);
    optind = 1;
    o.doc_ids = docs;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 's': uri = optarg; break;
        case 'c': o.collection = optarg; break;
        case 'l': o.limit = atoi(optarg); break;
        case 'f': o.meta_filter = optarg; break;
        case 'd':
            if (o.n_doc_ids == 64) {
                fprintf(stderr, "search: at most 64 --doc\n");
                return 2;
            }
            docs[o.n_doc_ids++] = optarg;
            break;
        case 't': o.timeout_ms = atoi(optarg); break;
        case 'a': use_async = 1; break;
        case 'j': json = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (uri == NULL) {
        usage(stderr);
        return 2;
    }
    if (o.meta_filter) {
        cJSON *f = cJSON_Parse(o.meta_filter);
        int    ok = f && cJSON_IsObject(f);

        cJSON_Delete(f);
        if (!ok) {
            fprintf(stderr, "search: --filter must be a JSON object\n");
            return 2;
        }
    }
    for (int i = optind; i < argc; i++) {
        size_t n = strlen(query);

        snprintf(query + n, sizeof(query) - n, "%s%s", n ? " " : "",
                 argv[i]);
    }
    t0 = sg_now_ms();
    if (use_async) {
        sg_astore *as;
        sg_aquery *q;

        rc = sg_astore_open(uri, NULL, &as, err, sizeof(err));
        if (rc == SG_STORE_OK) {
            rc = sg_astore_search(as, query, &o, &q, err, sizeof(err));
            if (rc == SG_STORE_OK) {
                rc = sg_aquery_wait(q, &l, err, sizeof(err));
                sg_aquery_free(q);
            }
            sg_astore_close(as);
        }
    } else {
        sg_store *s;

        rc = sg_store_open(uri, &s, err, sizeof(err));
        if (rc == SG_STORE_OK) {
            rc = sg_store_search(s, query, &o, &l, err, sizeof(err));
            sg_store_close(s);
        }
    }
    if (rc != SG_STORE_OK) {
        fprintf(stderr, "search: %s (%s, HTTP %d)\n", err,
                sg_store_strerror(rc), sg_store_http_status(rc));
        return 1;
    }
    for (size_t i = 0; i < l.n; i++) {
        if (json)
            print_json_line(&l.v[i]);
        else
            print_text_line(&l.v[i], i);
    }
    fprintf(stderr, "search: %zu passages in %lld ms\n", l.n,
            (long long)(sg_now_ms() - t0));
    sg_passage_list_free(&l);
    return 0;
}
