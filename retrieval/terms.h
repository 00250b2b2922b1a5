/*
 * Query and index terms for the stores that need them spelled out (the
 * Redis index, FTS5 and tsquery query strings): lowercased runs of letters
 * and digits (bytes >= 0x80 count as letters, so UTF-8 words stay whole),
 * common English stop words dropped, at most 64 bytes each.
 */
#ifndef SG_TERMS_H
#define SG_TERMS_H

#include <stddef.h>

typedef struct sg_terms {
    char   **v;
    int     *tf;        /* occurrences of v[i] in the text */
    size_t   n;
    size_t   cap;
    size_t   total;     /* all kept occurrences (document length) */
} sg_terms;

/* Distinct terms of text in first-seen order; 0 or -1 (out of memory). */
int sg_terms_split(const char *text, sg_terms *t);
void sg_terms_free(sg_terms *t);
int sg_is_stopword(const char *w);

#endif
