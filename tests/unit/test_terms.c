/*
 * Query and index terms (retrieval/terms.c): distinct terms in first-seen
 * order with their counts, against a brute-force reference on random text;
 * the bound on distinct terms; and splitting that stays linear in the
 * number of distinct words (a question of 120,000 distinct words once
 * took half a minute: each new term was compared with every earlier one).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "store.h"
#include "terms.h"

/* Brute force: the index of w among v[0..n), or -1. */
static int
ref_find(char (*v)[65], int n, const char *w)
{
    for (int i = 0; i < n; i++)
        if (strcmp(v[i], w) == 0)
            return i;
    return -1;
}

static void
test_against_reference(void)
{
    static const char *const words[] = {
        "Alpha", "beta", "GAMMA", "delta", "the", "and", "x1", "42",
        "caf\xc3\xa9", "of", "epsilon", "zeta", "What", "is", "this",
    };
    int ok = 1;

    for (int t = 0; t < 50 && ok; t++) {
        char     text[4000], v[200][65];
        int      tf[200] = { 0 }, n = 0, total = 0, len = 0;
        sg_terms st;

        for (int k = 0; k < 150; k++) {
            const char *w = words[check_rand32() % 15];
            char        lw[65];
            int         i;

            len += sprintf(text + len, "%s%s", w,
                           (const char *[]){ " ", ", ", "? ", "(" }
                           [check_rand32() % 4]);
            for (i = 0; w[i]; i++)
                lw[i] = (w[i] >= 'A' && w[i] <= 'Z') ? w[i] + 32 : w[i];
            lw[i] = '\0';
            if (sg_is_stopword(lw))
                continue;
            total++;
            i = ref_find(v, n, lw);
            if (i < 0) {
                strcpy(v[n], lw);
                i = n++;
            }
            tf[i]++;
        }
        if (sg_terms_split(text, &st) != 0) {
            ok = 0;
            break;
        }
        ok = (int)st.n == n && (int)st.total == total;
        for (int i = 0; ok && i < n; i++)
            ok = strcmp(st.v[i], v[i]) == 0 && st.tf[i] == tf[i];
        if (!ok)
            printf("# text: %s\n# %zu terms (want %d), total %zu (%d)\n",
                   text, st.n, n, st.total, total);
        sg_terms_free(&st);
    }
    CHECK(ok, "terms_vs_reference", "see above");
    {
        sg_terms st;

        sg_terms_split("What is this? AND OR NOT ((((( the", &st);
        CHECK(st.n == 0 && st.total == 0, "terms_only_stop_words",
              "%zu terms", st.n);
        sg_terms_free(&st);
    }
}

/* "q" + i in base 26: distinct words, none a stop word. */
static char *
distinct_words(size_t n)
{
    char *s = malloc(n * 10 + 1), *p = s;

    for (size_t i = 0; s && i < n; i++) {
        size_t k = i;

        *p++ = 'q';
        do {
            *p++ = (char)('a' + k % 26);
            k /= 26;
        } while (k);
        *p++ = ' ';
    }
    if (s)
        *p = '\0';
    return s;
}

static void
test_bound_and_time(void)
{
    char    *text = distinct_words(120000);
    sg_terms st;
    int64_t  t0;
    long     ms;
    int      rc;

    if (text == NULL)
        return;
    /* the first max distinct terms, scanning stopped there */
    rc = sg_terms_split_max(text, SG_SEARCH_MAX_TERMS, &st);
    CHECK(rc == 0 && st.n == SG_SEARCH_MAX_TERMS
          && strcmp(st.v[0], "qa") == 0 && st.total == SG_SEARCH_MAX_TERMS,
          "terms_bounded", "%zu terms", st.n);
    sg_terms_free(&st);
    /* all 120,000 (an index splits whole passages): quadratic took
     * ~30 s here, linear takes tens of ms; 2 s leaves room for a slow,
     * shared or sanitized machine */
    t0 = sg_now_ms();
    rc = sg_terms_split(text, &st);
    ms = (long)(sg_now_ms() - t0);
    CHECK(rc == 0 && st.n == 120000 && ms < 2000, "terms_linear_120k",
          "%zu terms in %ld ms", st.n, ms);
    printf("# 120000 distinct terms split in %ld ms\n", ms);
    sg_terms_free(&st);
    free(text);
}

int
main(void)
{
    check_seed_from_env();
    test_against_reference();
    test_bound_and_time();
    return check_finish();
}
