/*
 * Whole-file reads (see file.h).  A regular file's size sizes the buffer
 * up front; a stream grows it by doubling.
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "file.h"

char *
sg_read_stream(FILE *f, size_t max, size_t *len)
{
    struct stat st;
    size_t      cap = (size_t)1 << 16, n = 0, k;
    char       *buf, *p;

    /* one byte more than the size, so the read that meets EOF needs no
     * growing */
    if (fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0)
        cap = (size_t)st.st_size + 1;
    if (max > 0 && cap > max + 1)
        cap = max + 1;
    buf = malloc(cap + 1);
    if (buf == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    while ((k = fread(buf + n, 1, cap - n, f)) > 0) {
        n += k;
        if (max > 0 && n > max) {
            free(buf);
            errno = EFBIG;
            return NULL;
        }
        if (n == cap) {
            p = realloc(buf, cap * 2 + 1);
            if (p == NULL) {
                free(buf);
                errno = ENOMEM;
                return NULL;
            }
            buf = p;
            cap *= 2;
        }
    }
    if (ferror(f)) {
        free(buf);
        errno = EIO;
        return NULL;
    }
    buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}

char *
sg_read_file(const char *path, size_t max, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    int   saved;

    if (f == NULL)
        return NULL;
    buf = sg_read_stream(f, max, len);
    saved = errno;
    fclose(f);
    errno = saved;
    return buf;
}
