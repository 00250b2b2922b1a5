/*
 * A small safetensors writer: declare tensors (name, dtype, shape, and
 * either their bytes or a function that streams them), then write one file
 * or N shards plus model.safetensors.index.json.  Data is produced tensor by
 * tensor while writing, so a checkpoint of any size needs no big buffer.
 */
#ifndef SG_ST_WRITER_H
#define SG_ST_WRITER_H

#include <stddef.h>
#include <stdint.h>

#include "model/dtype.h"

typedef struct sg_st_writer sg_st_writer;
typedef struct sg_st_sink sg_st_sink;

/*
 * Streams one tensor's bytes through sg_st_sink_write, in order, in
 * pieces of any size; the total must equal the tensor's size.  Returns 0,
 * or -1 after writing a message with sg_st_sink_error.
 */
typedef int (*sg_st_fill_fn)(void *ctx, sg_st_sink *sink);

sg_st_writer *sg_st_writer_new(void);
void sg_st_writer_free(sg_st_writer *w);

/* Adds a tensor whose bytes are copied now.  -1 on a bad argument. */
int sg_st_add(sg_st_writer *w, const char *name, sg_dtype dtype, int ndim,
    const int64_t *shape, const void *data);

/* Adds a tensor whose bytes fill(ctx, sink) produces at write time. */
int sg_st_add_stream(sg_st_writer *w, const char *name, sg_dtype dtype,
    int ndim, const int64_t *shape, sg_st_fill_fn fill, void *ctx);

int sg_st_sink_write(sg_st_sink *sink, const void *buf, size_t len);
void sg_st_sink_error(sg_st_sink *sink, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * Writes the tensors into dir: "model.safetensors" when n_shards is 1,
 * else "model-0000i-of-0000N.safetensors" split at about equal sizes in the
 * order the tensors were added, and model.safetensors.index.json.  Inside a
 * file the data is ordered by element size, largest first (as the Python
 * writer does), so every tensor stays aligned.  Files are written under a
 * temporary name and renamed when complete.  Returns the total number of
 * bytes written, or -1 with a message.
 */
int64_t sg_st_write(sg_st_writer *w, const char *dir, int n_shards,
    char *err, int errlen);

/* File name of shard i (0-based) of n: model.safetensors when n is 1,
 * else model-0000<i+1>-of-0000<n>.safetensors. */
void sg_st_shard_name(char *buf, size_t len, int shard, int n_shards);

/* Number of tensors added so far. */
int sg_st_count(const sg_st_writer *w);

#endif
