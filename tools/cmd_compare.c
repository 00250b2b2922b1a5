/*
 * sparsegate compare: checks a `sparsegate run --dump` directory against a
 * reference run in the fixtures' format, with the tolerances its manifest
 * recommends.  Prints one "PASS name" / "FAIL name: why" line per check.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "offline/protocol.h"
#include "tool_io.h"
#include "util/file.h"

typedef struct {
    const char *label;
    int         failed;
} report_t;

static void
check(report_t *r, int ok, const char *what, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#include <stdarg.h>

static void
check(report_t *r, int ok, const char *what, const char *fmt, ...)
{
    va_list ap;

    printf("%s %s/%s: ", ok ? "PASS" : "FAIL", r->label, what);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    r->failed += !ok;
}

/* The shape of manifest.runs.<run>.files.<key> as a product of dims. */
static int
file_shape(cJSON *run, const char *key, int64_t *dims, int max)
{
    cJSON *f = cJSON_GetObjectItem(cJSON_GetObjectItem(run, "files"), key);
    cJSON *s = cJSON_GetObjectItem(f, "shape"), *d;
    int    n = 0;

    cJSON_ArrayForEach(d, s) {
        if (n < max)
            dims[n++] = (int64_t)d->valuedouble;
    }
    return f ? n : -1;
}

/* Entries of set a (ascending, -1 padded) missing from set b. */
static int
set_missing(const int32_t *a, const int32_t *b, int k, int *valid)
{
    int i = 0, j = 0, miss = 0, n = 0;

    while (i < k && a[i] >= 0) {
        n++;
        while (j < k && b[j] >= 0 && b[j] < a[i])
            j++;
        if (!(j < k && b[j] == a[i]))
            miss++;
        i++;
    }
    if (valid)
        *valid = n;
    return miss;
}

static double
num_after(const char *s, const char *key, double dflt)
{
    const char *p = s ? strstr(s, key) : NULL;

    return p ? strtod(p + strlen(key), NULL) : dflt;
}

static void
usage(FILE *f)
{
    fprintf(f, "usage: sparsegate compare --manifest manifest.json --run NAME "
               "--out DIR [--mode forced|free] [--label TEXT]\n");
}

int
sg_cmd_compare(int argc, char **argv)
{
    static const struct option opts[] = {
        { "manifest", 1, 0, 'M' }, { "run", 1, 0, 'r' }, { "out", 1, 0, 'o' },
        { "mode", 1, 0, 'm' }, { "label", 1, 0, 'l' }, { "help", 0, 0, 'h' },
        { 0, 0, 0, 0 }
    };
    const char *manifest = NULL, *run_name = NULL, *out = NULL;
    const char *mode = "forced", *label = NULL;
    char        refdir[4096], err[512], *text = NULL;
    cJSON      *root = NULL, *run, *tol;
    report_t    rep = { 0 };
    float      *rp = NULL, *rd = NULL, *op = NULL, *od = NULL;
    int32_t    *rt = NULL, *rtk = NULL, *otk = NULL, *rptk = NULL, *optk = NULL;
    int         c, forced;

    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'M': manifest = optarg; break;
        case 'r': run_name = optarg; break;
        case 'o': out = optarg; break;
        case 'm': mode = optarg; break;
        case 'l': label = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!manifest || !run_name || !out
        || (strcmp(mode, "forced") && strcmp(mode, "free")))
    {
        usage(stderr);
        return 2;
    }
    forced = strcmp(mode, "forced") == 0;
    rep.label = label ? label : run_name;

    text = sg_read_file(manifest, 0, NULL);
    if (text == NULL) {
        fprintf(stderr, "compare: cannot read %s: %s\n", manifest,
                strerror(errno));
        return 2;
    }
    root = cJSON_Parse(text);
    free(text);
    run = cJSON_GetObjectItem(cJSON_GetObjectItem(root, "runs"), run_name);
    tol = cJSON_GetObjectItem(cJSON_GetObjectItem(run, "recommended_tolerance"),
                              forced ? "decisions_forced" : "free_running");
    if (run == NULL || tol == NULL) {
        fprintf(stderr, "compare: %s: no run '%s' with tolerances\n", manifest,
                run_name);
        cJSON_Delete(root);
        return 2;
    }
    {
        char *slash = strrchr(manifest, '/');
        int   dl = slash ? (int)(slash - manifest) : 1;
        snprintf(refdir, sizeof(refdir), "%.*s/%s", dl, slash ? manifest : ".",
                 run_name);
    }

    int64_t dv[4], dd[4], dt[4], dk[4], dpk[4];
    int     has_topk = file_shape(run, "topk", dk, 4) == 3;
    file_shape(run, "prefill_logits", dv, 4);
    file_shape(run, "decode_logits", dd, 4);
    file_shape(run, "tokens", dt, 4);
    int64_t V = dv[0], N = dd[0], rows = dt[0];

    if (sg_read_f32_shape(refdir, "prefill_logits.f32.bin", V, &rp, err, sizeof(err))
        || sg_read_f32_shape(refdir, "decode_logits.f32.bin", N * V, &rd, err, sizeof(err))
        || sg_read_i32_shape(refdir, "tokens.i32.bin", rows, &rt, err, sizeof(err))
        || sg_read_f32_shape(out, "prefill_logits.f32.bin", V, &op, err, sizeof(err))
        || sg_read_f32_shape(out, "decode_logits.f32.bin", N * V, &od, err, sizeof(err)))
    {
        check(&rep, 0, "files", "%s", err);
        goto done;
    }

    /* logits: max |ours - reference| over the prefill and every step */
    {
        double worst = 0, lim = cJSON_GetObjectItem(tol, "max_abs_logit_diff")
                                ? cJSON_GetObjectItem(tol, "max_abs_logit_diff")->valuedouble
                                : INFINITY;
        int    agree = 0, need_num = (int)rows, need_den = (int)rows;
        cJSON *ae = cJSON_GetObjectItem(tol, "argmax_equal_steps");

        for (int64_t r = 0; r < rows; r++) {
            const float *o = r == 0 ? op : od + (r - 1) * V;
            const float *f = r == 0 ? rp : rd + (r - 1) * V;
            for (int64_t i = 0; i < V; i++) {
                double d = fabs((double)o[i] - f[i]);
                if (!isfinite(d))
                    worst = INFINITY;       /* NaN never passes */
                else if (d > worst)
                    worst = d;
            }
            agree += sg_argmax(o, (int)V) == rt[r];
        }
        if (ae && cJSON_IsString(ae))
            sscanf(ae->valuestring, "%d/%d", &need_num, &need_den);
        check(&rep, worst <= lim, "logits", "max |dlogit| %.3g (tolerance %.3g)",
              worst, lim);
        check(&rep, agree >= need_num, "argmax", "%d/%d rows agree (need %d)",
              agree, (int)rows, need_num);
    }

    /* top-k sets when the run made its own decisions */
    cJSON *tks = cJSON_GetObjectItem(tol, "topk");
    if (!forced && has_topk && tks && cJSON_IsString(tks)) {
        int64_t L = dk[0], Q = dk[1], K = dk[2];
        file_shape(run, "prefill_topk_all", dpk, 4);
        int64_t P = dpk[1];
        const char *s = tks->valuestring;
        int identical = strstr(s, "identical") != NULL;
        double max_pct = num_after(s, "differing <= ", 100);
        double max_swap = num_after(s, "at most ", 1e9);
        double min_overlap = num_after(s, "overlap >= ", 0);
        long   diff = 0, total = 0, worst_row = 0;
        double worst_overlap = 1;

        if (sg_read_i32_shape(refdir, "topk.i32.bin", L * Q * K, &rtk, err, sizeof(err))
            || sg_read_i32_shape(out, "topk.i32.bin", L * Q * K, &otk, err, sizeof(err))
            || sg_read_i32_shape(refdir, "prefill_topk_all.i32.bin", L * P * K, &rptk, err, sizeof(err))
            || sg_read_i32_shape(out, "prefill_topk_all.i32.bin", L * P * K, &optk, err, sizeof(err)))
        {
            check(&rep, 0, "topk-files", "%s", err);
            goto done;
        }
        for (int64_t i = 0; i < L * P; i++) {
            int valid, miss = set_missing(rptk + i * K, optk + i * K, (int)K, &valid);
            int extra = set_missing(optk + i * K, rptk + i * K, (int)K, NULL);
            diff += miss;
            total += valid;
            if (miss > worst_row) worst_row = miss;
            if (extra > worst_row) worst_row = extra;
        }
        for (int64_t i = 0; i < L * Q; i++) {
            int valid, miss = set_missing(rtk + i * K, otk + i * K, (int)K, &valid);
            double ov = valid ? 1.0 - (double)miss / valid : 1;
            if (ov < worst_overlap) worst_overlap = ov;
            if (miss > worst_row) worst_row = miss;
            diff += identical ? miss : 0;
        }
        double pct = total ? 100.0 * diff / total : 0;
        if (identical) {
            check(&rep, diff == 0 && worst_overlap == 1, "topk",
                  "%ld entries differ (identical sets required)", diff);
        } else {
            check(&rep, pct <= max_pct, "topk-prefill",
                  "%.2f%% of prefill entries differ (limit %.2f%%)", pct, max_pct);
            check(&rep, worst_row <= max_swap, "topk-swaps",
                  "at most %ld keys swapped in a row (limit %.0f)", worst_row,
                  max_swap);
            check(&rep, worst_overlap >= min_overlap, "topk-overlap",
                  "query-row overlap >= %.3f (limit %.2f)", worst_overlap,
                  min_overlap);
        }
    }

done:
    cJSON_Delete(root);
    free(rp); free(rd); free(op); free(od); free(rt);
    free(rtk); free(otk); free(rptk); free(optk);
    return rep.failed ? 1 : 0;
}
