/*
 * Chunking documents into passages (see chunk.h).  Paragraphs are packed
 * greedily into a passage while they fit; a paragraph too big on its own
 * is cut at sentence ends, and a sentence too big at spaces.
 */
#include <stdlib.h>
#include <string.h>

#include "chunk.h"

long
sg_chunk_estimate(void *ud, const char *text, size_t len)
{
    (void)ud;
    (void)text;
    return len ? (long)(len + 3) / 4 : 0;
}

typedef struct span {
    const char *s;
    size_t      n;
} span;

static int
push(sg_chunks *c, const char *s, size_t n)
{
    char *t;

    /* trim */
    while (n && (*s == ' ' || *s == '\n' || *s == '\t' || *s == '\r')) {
        s++;
        n--;
    }
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\n' || s[n - 1] == '\t'
                 || s[n - 1] == '\r'))
        n--;
    if (n == 0)
        return 0;
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 16;
        char **v = realloc(c->v, cap * sizeof(*v));

        if (v == NULL)
            return -1;
        c->v = v;
        c->cap = cap;
    }
    t = malloc(n + 1);
    if (t == NULL)
        return -1;
    memcpy(t, s, n);
    t[n] = '\0';
    c->v[c->n++] = t;
    return 0;
}

/* End of the next unit inside [s, s+n): a paragraph (blank line), a
 * sentence (". " "? " "! " or a newline), or a word (space). */
static size_t
next_unit(const char *s, size_t n, int level)
{
    for (size_t i = 0; i < n; i++) {
        if (level == 0) {
            if (s[i] == '\n') {
                size_t j = i + 1;

                while (j < n && (s[j] == ' ' || s[j] == '\t' || s[j] == '\r'))
                    j++;
                if (j < n && s[j] == '\n')
                    return j + 1;
            }
        } else if (level == 1) {
            if ((s[i] == '.' || s[i] == '?' || s[i] == '!')
                && i + 1 < n && (s[i + 1] == ' ' || s[i + 1] == '\n'))
                return i + 2;
            if (s[i] == '\n')
                return i + 1;
        } else if (s[i] == ' ' || s[i] == '\n' || s[i] == '\t') {
            return i + 1;
        }
    }
    return n;
}

/* Packs units of the given level from [s, s+n) into chunks; units too big
 * alone go one level down. */
static int
pack(const char *s, size_t n, int level, int max, sg_chunk_count_fn count,
    void *ud, sg_chunks *out)
{
    const char *start = s;     /* of the chunk being filled */
    size_t      used = 0;      /* its length */

    while (n > 0) {
        size_t u = next_unit(s + used, n - used, level);

        if (used + u > used && count(ud, start, used + u) <= max) {
            used += u;
            if (used < n)
                continue;
        }
        if (used == 0) {
            /* the unit alone is too big */
            if (level == 2) {
                /* one huge word: cut by bytes, on a UTF-8 boundary */
                size_t cut = (size_t)max * 4;

                if (cut > u)
                    cut = u;
                while (cut > 1 && ((unsigned char)start[cut] & 0xc0) == 0x80)
                    cut--;
                if (push(out, start, cut) < 0)
                    return -1;
                s += cut;
                n -= cut;
            } else {
                if (pack(start, u, level + 1, max, count, ud, out) < 0)
                    return -1;
                s += u;
                n -= u;
            }
        } else {
            if (push(out, start, used) < 0)
                return -1;
            s += used;
            n -= used;
        }
        start = s;
        used = 0;
    }
    return 0;
}

int
sg_chunk_text(const char *text, int max_tokens, sg_chunk_count_fn count,
    void *ud, sg_chunks *out)
{
    memset(out, 0, sizeof(*out));
    if (max_tokens <= 0)
        max_tokens = 256;
    if (count == NULL)
        count = sg_chunk_estimate;
    if (pack(text, strlen(text), 0, max_tokens, count, ud, out) < 0) {
        sg_chunks_free(out);
        return -1;
    }
    return 0;
}

void
sg_chunks_free(sg_chunks *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->v[i]);
    free(c->v);
    memset(c, 0, sizeof(*c));
}
