/*
 * Query and index terms for the stores that need them spelled out (the
 * Redis index, FTS5 and tsquery query strings): lowercased runs of letters
 * and digits (bytes >= 0x80 count as letters, so UTF-8 words stay whole),
 * common English stop words dropped, at most 64 bytes each.  Distinct
 * terms are found through a hash set: splitting is linear in the text.
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
    size_t  *slot;      /* hash set: 1 + index into v, 0 = empty */
    size_t   nslot;     /* a power of two, more than twice n */
} sg_terms;

/* Distinct terms of text in first-seen order; 0 or -1 (out of memory). */
int sg_terms_split(const char *text, sg_terms *t);
/* The first max distinct terms of text in first-seen order: scanning
 * stops at the first term past them (tf and total then count only the
 * text before it).  0 or -1 (out of memory). */
int sg_terms_split_max(const char *text, size_t max, sg_terms *t);
void sg_terms_free(sg_terms *t);
int sg_is_stopword(const char *w);

#endif
