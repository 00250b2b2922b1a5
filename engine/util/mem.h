/*
 * Copies of arrays handed over by a caller.
 */
#ifndef SG_MEM_H
#define SG_MEM_H

#include <stddef.h>

/* *dst = a malloc'ed copy of n items of size bytes (NULL when n is 0 or
 * src NULL); -1 when out of memory. */
int sg_memdup(void *dst, const void *src, long n, size_t size);

#endif
