/*
 * A growable NUL-terminated byte string for building text (prompts,
 * translated regexes).  Appends after an allocation failure are ignored and
 * leave oom set, so callers check once at the end.
 */
#ifndef SG_STRBUF_H
#define SG_STRBUF_H

#include <stddef.h>

typedef struct sg_strbuf {
    char   *p;
    size_t  n, cap;
    int     oom;
} sg_strbuf;

void sg_strbuf_add(sg_strbuf *b, const char *s, size_t n);
void sg_strbuf_str(sg_strbuf *b, const char *s);

#endif
