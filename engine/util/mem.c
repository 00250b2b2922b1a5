#include <stdlib.h>
#include <string.h>

#include "mem.h"

int
sg_memdup(void *dst, const void *src, long n, size_t size)
{
    void *p;

    *(void **)dst = NULL;
    if (n <= 0 || src == NULL)
        return 0;
    p = malloc(size * (size_t)n);
    if (p == NULL)
        return -1;
    memcpy(p, src, size * (size_t)n);
    *(void **)dst = p;
    return 0;
}
