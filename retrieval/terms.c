/*
 * Splitting text into index/query terms (see terms.h).
 */
#include <stdlib.h>
#include <string.h>

#include "terms.h"

/* Sorted: looked up by binary search. */
static const char *const stopwords[] = {
    "a", "about", "after", "all", "also", "an", "and", "any", "are", "as",
    "at", "be", "been", "but", "by", "can", "could", "did", "do", "does",
    "for", "from", "had", "has", "have", "he", "her", "his", "how", "i",
    "if", "in", "into", "is", "it", "its", "may", "more", "most", "no",
    "not", "of", "on", "or", "other", "our", "she", "should", "so", "some",
    "such", "than", "that", "the", "their", "them", "then", "there",
    "these", "they", "this", "those", "to", "was", "we", "were", "what",
    "when", "where", "which", "who", "why", "will", "with", "would", "you",
    "your",
};

static int
cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int
sg_is_stopword(const char *w)
{
    return bsearch(&w, stopwords, sizeof(stopwords) / sizeof(stopwords[0]),
                   sizeof(stopwords[0]), cmp_str) != NULL;
}

static int
is_word_byte(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
           || (c >= '0' && c <= '9') || c >= 0x80;
}

static int
add_term(sg_terms *t, const char *w)
{
    for (size_t i = 0; i < t->n; i++) {
        if (strcmp(t->v[i], w) == 0) {
            t->tf[i]++;
            return 0;
        }
    }
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 32;
        char **v = realloc(t->v, cap * sizeof(*v));
        int   *tf;

        if (v == NULL)
            return -1;
        t->v = v;
        tf = realloc(t->tf, cap * sizeof(*tf));
        if (tf == NULL)
            return -1;
        t->tf = tf;
        t->cap = cap;
    }
    t->v[t->n] = strdup(w);
    if (t->v[t->n] == NULL)
        return -1;
    t->tf[t->n++] = 1;
    return 0;
}

int
sg_terms_split(const char *text, sg_terms *t)
{
    const unsigned char *s = (const unsigned char *)text;
    char                 w[65];

    memset(t, 0, sizeof(*t));
    while (*s) {
        size_t n = 0;

        while (*s && !is_word_byte(*s))
            s++;
        while (*s && is_word_byte(*s)) {
            if (n < sizeof(w) - 1)
                w[n++] = (*s >= 'A' && *s <= 'Z') ? *s + 32 : *s;
            s++;
        }
        w[n] = '\0';
        if (n == 0 || sg_is_stopword(w))
            continue;
        if (add_term(t, w) < 0) {
            sg_terms_free(t);
            return -1;
        }
        t->total++;
    }
    return 0;
}

void
sg_terms_free(sg_terms *t)
{
    for (size_t i = 0; i < t->n; i++)
        free(t->v[i]);
    free(t->v);
    free(t->tf);
    memset(t, 0, sizeof(*t));
}
