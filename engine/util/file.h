/*
 * Reading a whole file into memory: config.json, the checkpoint index,
 * tokenizer.json, fixture and corpus files.
 */
#ifndef SG_FILE_H
#define SG_FILE_H

#include <stddef.h>
#include <stdio.h>

/*
 * The whole of the file at path, malloc'ed with a NUL after the last byte
 * (not counted in *len; len may be NULL).  max > 0 refuses larger files.
 * NULL with errno set on failure: the open's or read's own, EFBIG when
 * over max, ENOMEM.
 */
char *sg_read_file(const char *path, size_t max, size_t *len);

/* The same for an open stream (a pipe, stdin), read to its end. */
char *sg_read_stream(FILE *f, size_t max, size_t *len);

#endif
