/*
 * Raw little-endian array files (the fixtures' *.f32.bin / *.i32.bin) for
 * the command line tools.
 */
#ifndef SG_TOOL_IO_H
#define SG_TOOL_IO_H

#include <stddef.h>
#include <stdint.h>

#include "offline/protocol.h"

/* Reads a whole file of int32 / float32; -1 with a message naming it. */
int sg_read_i32(const char *path, int32_t **out, size_t *n, char *err,
    int errlen);
int sg_read_f32(const char *path, float **out, size_t *n, char *err,
    int errlen);
/* dir/name, which must hold exactly `count` int32 values. */
int sg_read_i32_shape(const char *dir, const char *name, size_t count,
    int32_t **out, char *err, int errlen);
int sg_read_f32_shape(const char *dir, const char *name, size_t count,
    float **out, char *err, int errlen);
int sg_write_file(const char *dir, const char *name, const void *data,
    size_t bytes, char *err, int errlen);

/* Writes a protocol run's outputs into dir in the fixtures' format. */
int sg_dump_protocol(const char *dir, const sg_config *c, const sg_protocol *p,
    const sg_protocol_out *o, int sparse, char *err, int errlen);

#endif
