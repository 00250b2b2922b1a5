/*
 * sparsegate ingest: loads a corpus into a passage store.
 *
 *   sparsegate ingest --store URI --collection NAME
 *                     (--jsonl FILE | --dir DIR) [--passage-tokens N]
 *                     [--batch N] [--quiet]
 *
 * JSONL: one document per line, {"id", "title", "text", "metadata"}
 * ("doc_id" / "meta" accepted too).  --dir: every .txt/.md file below DIR
 * (sorted), doc id = its relative path, title = first "# " heading or the
 * file name.  Documents are cut into passages "<doc id>:<NNNN>" of about N
 * tokens; batches are committed one transaction each, so a run killed
 * midway keeps every committed batch and a re-run (same ids -> upserts)
 * completes it.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "chunk.h"
#include "store.h"
#include "util/file.h"

typedef struct ingest {
    sg_store        *store;
    const char      *collection;
    int              passage_tokens;
    int              batch;
    int              quiet;
    sg_passage_list  pending;
    long             docs, passages, bytes;
    int64_t          start, last_report;
} ingest;

static int
flush(ingest *g)
{
    char err[512];

    if (g->pending.n == 0)
        return 0;
    if (sg_store_ingest(g->store, g->pending.v, g->pending.n, err,
                        sizeof(err)) != SG_STORE_OK)
    {
        fprintf(stderr, "ingest: %s\n", err);
        return -1;
    }
    g->passages += (long)g->pending.n;
    sg_passage_list_free(&g->pending);
    if (!g->quiet && sg_now_ms() - g->last_report >= 1000) {
        double s = (sg_now_ms() - g->start) / 1000.0;

        fprintf(stderr, "ingest: %ld documents, %ld passages, %.1f MB, "
                "%.0f passages/s\n", g->docs, g->passages, g->bytes / 1e6,
                s > 0 ? g->passages / s : 0.0);
        g->last_report = sg_now_ms();
    }
    return 0;
}

static int
add_document(ingest *g, const char *doc_id, const char *title,
    const char *text, const char *meta)
{
    sg_chunks c;

    if (sg_chunk_text(text, g->passage_tokens, NULL, NULL, &c) < 0) {
        fprintf(stderr, "ingest: out of memory\n");
        return -1;
    }
    for (size_t i = 0; i < c.n; i++) {
        char       id[600];
        sg_passage p = { 0 };

        if (snprintf(id, sizeof(id), "%s:%04zu", doc_id, i)
            >= (int)sizeof(id))
        {
            fprintf(stderr, "ingest: document id too long: %.60s...\n",
                    doc_id);
            sg_chunks_free(&c);
            return -1;
        }
        p.id = id;
        p.doc_id = (char *)doc_id;
        p.title = (char *)title;
        p.text = c.v[i];
        p.collection = (char *)g->collection;
        p.meta = (char *)meta;
        p.n_tokens = -1;
        if (sg_passage_list_push(&g->pending, &p) != SG_STORE_OK) {
            sg_chunks_free(&c);
            return -1;
        }
        if ((int)g->pending.n >= g->batch && flush(g) < 0) {
            sg_chunks_free(&c);
            return -1;
        }
    }
    g->docs++;
    g->bytes += (long)strlen(text);
    sg_chunks_free(&c);
    return 0;
}

static const char *
json_str(cJSON *o, const char *a, const char *b)
{
    cJSON *v = cJSON_GetObjectItemCaseSensitive(o, a);

    if (v == NULL && b)
        v = cJSON_GetObjectItemCaseSensitive(o, b);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int
load_jsonl(ingest *g, const char *path)
{
    FILE   *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
    char   *line = NULL, idbuf[32];
    size_t  cap = 0;
    ssize_t n;
    long    lineno = 0;
    int     rc = 0;

    if (f == NULL) {
        fprintf(stderr, "ingest: %s: %s\n", path, strerror(errno));
        return -1;
    }
    while (rc == 0 && (n = getline(&line, &cap, f)) > 0) {
        cJSON      *o, *m;
        const char *id, *title, *text;
        char       *meta = NULL;

        lineno++;
        if (strspn(line, " \t\r\n") == (size_t)n)
            continue;
        o = cJSON_Parse(line);
        if (o == NULL || !cJSON_IsObject(o)) {
            fprintf(stderr, "ingest: %s:%ld: not a JSON object\n", path,
                    lineno);
            cJSON_Delete(o);
            rc = -1;
            break;
        }
        id = json_str(o, "id", "doc_id");
        if (id == NULL) {
            cJSON *num = cJSON_GetObjectItemCaseSensitive(o, "id");

            if (cJSON_IsNumber(num)) {
                snprintf(idbuf, sizeof(idbuf), "%.0f", num->valuedouble);
                id = idbuf;
            }
        }
        title = json_str(o, "title", NULL);
        text = json_str(o, "text", "content");
        m = cJSON_GetObjectItemCaseSensitive(o, "metadata");
        if (m == NULL)
            m = cJSON_GetObjectItemCaseSensitive(o, "meta");
        if (id == NULL || id[0] == '\0') {
            fprintf(stderr, "ingest: %s:%ld: field \"id\" missing or not a "
                    "string\n", path, lineno);
            rc = -1;
        } else if (text == NULL) {
            fprintf(stderr, "ingest: %s:%ld: field \"text\" missing or not "
                    "a string\n", path, lineno);
            rc = -1;
        } else if (m != NULL && !cJSON_IsObject(m) && !cJSON_IsNull(m)) {
            fprintf(stderr, "ingest: %s:%ld: field \"metadata\" is not an "
                    "object\n", path, lineno);
            rc = -1;
        } else {
            if (cJSON_IsObject(m))
                meta = cJSON_PrintUnformatted(m);
            rc = add_document(g, id, title ? title : "", text, meta);
            free(meta);
        }
        cJSON_Delete(o);
    }
    if (rc == 0 && ferror(f)) {
        fprintf(stderr, "ingest: %s: read error\n", path);
        rc = -1;
    }
    free(line);
    if (f != stdin)
        fclose(f);
    return rc;
}

static int
cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int
has_ext(const char *name)
{
    size_t n = strlen(name);

    return (n > 4 && strcmp(name + n - 4, ".txt") == 0)
           || (n > 3 && strcmp(name + n - 3, ".md") == 0);
}

/* rel: path below the top directory ("" at the top). */
static int
load_dir(ingest *g, const char *top, const char *rel, int depth)
{
    char           path[4096];
    DIR           *d;
    struct dirent *e;
    char         **names = NULL;
    size_t         n = 0, cap = 0;
    int            rc = 0;

    if (depth > 32)
        return 0;
    snprintf(path, sizeof(path), "%s%s%s", top, rel[0] ? "/" : "", rel);
    d = opendir(path);
    if (d == NULL) {
        fprintf(stderr, "ingest: %s: %s\n", path, strerror(errno));
        return -1;
    }
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            names = realloc(names, cap * sizeof(*names));
            if (names == NULL) {
                closedir(d);
                return -1;
            }
        }
        names[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof(*names), cmp_names);
    for (size_t i = 0; i < n && rc == 0; i++) {
        char        sub[4096], full[8200];
        struct stat st;

        snprintf(sub, sizeof(sub), "%s%s%s", rel, rel[0] ? "/" : "",
                 names[i]);
        snprintf(full, sizeof(full), "%s/%s", top, sub);
        if (stat(full, &st) != 0)
            continue;
        if (S_ISDIR(st.st_mode)) {
            rc = load_dir(g, top, sub, depth + 1);
        } else if (S_ISREG(st.st_mode) && has_ext(names[i])) {
            size_t len;
            char  *text = sg_read_file(full, 0, &len);
            char   title[256];
            char  *h;

            if (text == NULL) {
                fprintf(stderr, "ingest: %s: cannot read\n", full);
                rc = -1;
                break;
            }
            snprintf(title, sizeof(title), "%s", names[i]);
            h = text;
            while (*h == '\n' || *h == ' ')
                h++;
            if (h[0] == '#' && h[1] == ' ') {
                size_t l = strcspn(h + 2, "\n");

                snprintf(title, sizeof(title), "%.*s",
                         (int)(l < 255 ? l : 255), h + 2);
            }
            rc = add_document(g, sub, title, text, NULL);
            free(text);
        }
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return rc;
}

static void
usage(FILE *f)
{
    fprintf(f, "usage: sparsegate ingest --store URI --collection NAME\n"
            "         (--jsonl FILE | --dir DIR) [--passage-tokens N]\n"
            "         [--batch N] [--quiet]\n"
            "  URI: sqlite:PATH | postgres:CONNINFO | redis:HOST:PORT\n");
}

int
sg_cmd_ingest(int argc, char **argv)
{
    static const struct option opts[] = {
        { "store", required_argument, NULL, 's' },
        { "collection", required_argument, NULL, 'c' },
        { "jsonl", required_argument, NULL, 'j' },
        { "dir", required_argument, NULL, 'd' },
        { "passage-tokens", required_argument, NULL, 'p' },
        { "batch", required_argument, NULL, 'b' },
        { "quiet", no_argument, NULL, 'q' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *uri = NULL, *jsonl = NULL, *dir = NULL;
    ingest      g = { 0 };
    char        err[512];
    int         c, rc;

    g.passage_tokens = 256;
    g.batch = 500;
    /* a server closing a socket must give an error, not SIGPIPE */
    signal(SIGPIPE, SIG_IGN);
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 's': uri = optarg; break;
        case 'c': g.collection = optarg; break;
        case 'j': jsonl = optarg; break;
        case 'd': dir = optarg; break;
        case 'p': g.passage_tokens = atoi(optarg); break;
        case 'b': g.batch = atoi(optarg); break;
        case 'q': g.quiet = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (uri == NULL || g.collection == NULL
        || (jsonl == NULL) == (dir == NULL))
    {
        fprintf(stderr, "ingest: need --store, --collection and one of "
                "--jsonl / --dir\n");
        usage(stderr);
        return 2;
    }
    if (sg_collection_check(g.collection, err, sizeof(err)) != SG_STORE_OK)
    {
        fprintf(stderr, "ingest: --collection: %s\n", err);
        return 2;
    }
    if (g.passage_tokens < 16 || g.passage_tokens > 8192) {
        fprintf(stderr, "ingest: --passage-tokens must be 16..8192\n");
        return 2;
    }
    if (g.batch < 1)
        g.batch = 1;
    if (sg_store_open_rw(uri, &g.store, err, sizeof(err)) != SG_STORE_OK) {
        fprintf(stderr, "ingest: %s\n", err);
        return 1;
    }
    g.start = g.last_report = sg_now_ms();
    rc = jsonl ? load_jsonl(&g, jsonl) : load_dir(&g, dir, "", 0);
    if (rc == 0)
        rc = flush(&g);
    sg_passage_list_free(&g.pending);
    if (rc == 0)
        fprintf(stderr, "ingest: done: %ld documents, %ld passages, %.1f MB "
                "in %.1f s into %s (collection %s)\n", g.docs, g.passages,
                g.bytes / 1e6, (sg_now_ms() - g.start) / 1000.0,
                sg_store_kind(g.store), g.collection);
    sg_store_close(g.store);
    return rc == 0 ? 0 : 1;
}

/* sparsegate migrate --store URI: what ingest does first, alone: the
 * store's schema created, or upgraded to SG_STORE_SCHEMA. */
int
sg_cmd_migrate(int argc, char **argv)
{
    static const struct option opts[] = {
        { "store", required_argument, NULL, 's' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *uri = NULL;
    sg_store   *s;
    char        err[512];
    int         c;

    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 's': uri = optarg; break;
        case 'h':
            printf("usage: sparsegate migrate --store URI\n");
            return 0;
        default:
            fprintf(stderr, "usage: sparsegate migrate --store URI\n");
            return 2;
        }
    }
    if (uri == NULL) {
        fprintf(stderr, "migrate: need --store URI\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    if (sg_store_open_rw(uri, &s, err, sizeof(err)) != SG_STORE_OK) {
        fprintf(stderr, "migrate: %s\n", err);
        return 1;
    }
    fprintf(stderr, "migrate: %s store at schema %d\n", sg_store_kind(s),
            SG_STORE_SCHEMA);
    sg_store_close(s);
    return 0;
}
