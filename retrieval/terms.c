/*
 * Splitting text into index/query terms (see terms.h).
 */
#include <stdint.h>
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

static size_t
hash_term(const char *w)
{
    uint64_t h = 1469598103934665603ULL;

    for (; *w; w++) {
        h ^= (unsigned char)*w;
        h *= 1099511628211ULL;
    }
    return (size_t)(h ^ (h >> 29));
}

/* The slot of w in the set: its own, or the empty one where it would go. */
static size_t *
find_slot(const sg_terms *t, const char *w)
{
    size_t mask = t->nslot - 1, i = hash_term(w) & mask;

    while (t->slot[i] != 0 && strcmp(t->v[t->slot[i] - 1], w) != 0)
        i = (i + 1) & mask;
    return &t->slot[i];
}

/* Keeps the set at most half full. */
static int
grow_set(sg_terms *t)
{
    size_t  nslot = t->nslot ? t->nslot * 2 : 64;
    size_t *old = t->slot;

    if (t->nslot > 2 * (t->n + 1))
        return 0;
    t->slot = calloc(nslot, sizeof(*t->slot));
    if (t->slot == NULL) {
        t->slot = old;
        return -1;
    }
    t->nslot = nslot;
    for (size_t i = 0; i < t->n; i++)
        *find_slot(t, t->v[i]) = i + 1;
    free(old);
    return 0;
}

/* 1 when w is new and max terms are already kept, else 0 or -1. */
static int
add_term(sg_terms *t, const char *w, size_t max)
{
    size_t *slot;

    if (grow_set(t) < 0)
        return -1;
    slot = find_slot(t, w);
    if (*slot != 0) {
        t->tf[*slot - 1]++;
        return 0;
    }
    if (t->n >= max)
        return 1;
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
    *slot = t->n;
    return 0;
}

int
sg_terms_split_max(const char *text, size_t max, sg_terms *t)
{
    const unsigned char *s = (const unsigned char *)text;
    char                 w[65];
    int                  rc;

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
        rc = add_term(t, w, max);
        if (rc < 0) {
            sg_terms_free(t);
            return -1;
        }
        if (rc > 0)
            break;
        t->total++;
    }
    return 0;
}

int
sg_terms_split(const char *text, sg_terms *t)
{
    return sg_terms_split_max(text, SIZE_MAX, t);
}

void
sg_terms_free(sg_terms *t)
{
    for (size_t i = 0; i < t->n; i++)
        free(t->v[i]);
    free(t->v);
    free(t->tf);
    free(t->slot);
    memset(t, 0, sizeof(*t));
}
