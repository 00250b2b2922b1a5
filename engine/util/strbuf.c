#include <stdlib.h>
#include <string.h>

#include "strbuf.h"

void
sg_strbuf_add(sg_strbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = (b->cap ? b->cap * 2 : 256) + n;
        char  *p = realloc(b->p, cap);

        if (p == NULL) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

void
sg_strbuf_str(sg_strbuf *b, const char *s)
{
    sg_strbuf_add(b, s, strlen(s));
}
