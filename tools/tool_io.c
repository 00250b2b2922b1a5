#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tool_io.h"
#include "util/err.h"
#include "util/file.h"

static int
read_all(const char *path, size_t elem, void **out, size_t *n, char *err,
    int errlen)
{
    size_t len;
    char  *buf = sg_read_file(path, 0, &len);

    if (buf == NULL)
        return sg_err(err, errlen, "%s: %s", path, strerror(errno));
    if (len % elem != 0) {
        free(buf);
        return sg_err(err, errlen, "%s: %zu bytes is not a whole number of "
                      "%zu-byte values", path, len, elem);
    }
    *out = buf;
    *n = len / elem;
    return 0;
}

int
sg_read_i32(const char *path, int32_t **out, size_t *n, char *err, int errlen)
{
    return read_all(path, 4, (void **)out, n, err, errlen);
}

int
sg_read_f32(const char *path, float **out, size_t *n, char *err, int errlen)
{
    return read_all(path, 4, (void **)out, n, err, errlen);
}

static int
read_shape(const char *dir, const char *name, size_t count, void **out,
    char *err, int errlen)
{
    char   path[4096];
    size_t n;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    if (read_all(path, 4, out, &n, err, errlen) != 0)
        return -1;
    if (n != count) {
        snprintf(err, errlen, "%s: %zu values, expected %zu", path, n, count);
        free(*out);
        *out = NULL;
        return -1;
    }
    return 0;
}

int
sg_read_i32_shape(const char *dir, const char *name, size_t count,
    int32_t **out, char *err, int errlen)
{
    return read_shape(dir, name, count, (void **)out, err, errlen);
}

int
sg_read_f32_shape(const char *dir, const char *name, size_t count,
    float **out, char *err, int errlen)
{
    return read_shape(dir, name, count, (void **)out, err, errlen);
}

int
sg_write_file(const char *dir, const char *name, const void *data,
    size_t bytes, char *err, int errlen)
{
    char  path[4096];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "wb");
    if (f == NULL || fwrite(data, 1, bytes, f) != bytes || fclose(f) != 0) {
        snprintf(err, errlen, "%s: write failed: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

int
sg_dump_protocol(const char *dir, const sg_config *c, const sg_protocol *p,
    const sg_protocol_out *o, int sparse, char *err, int errlen)
{
    size_t L = c->num_hidden_layers, D = c->hidden_size, V = c->vocab_size;
    size_t N = p->steps, P = p->n_prompt, K = c->index_topk;
    size_t k = c->num_experts_per_tok;

    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "%s: %s", dir, strerror(errno));
        return -1;
    }
#define W(name, ptr, bytes) \
    if ((ptr) && sg_write_file(dir, name, ptr, bytes, err, errlen) != 0) \
        return -1
    W("prefill_logits.f32.bin", o->prefill_logits, 4 * V);
    W("decode_logits.f32.bin", o->decode_logits, 4 * N * V);
    W("tokens.i32.bin", o->tokens, 4 * (N + 1));
    W("hidden.f32.bin", o->hidden, 4 * (N + 1) * (L + 1) * D);
    W("experts.i32.bin", o->experts, 4 * (N + 1) * L * k);
    W("expert_weights.f32.bin", o->expert_weights, 4 * (N + 1) * L * k);
    W("prefill_experts_all.i32.bin", o->prefill_experts_all, 4 * L * P * k);
    if (sparse) {
        W("topk.i32.bin", o->topk, 4 * L * (N + 1) * K);
        W("index_scores.f32.bin", o->index_scores, 4 * L * (N + 1) * (P + N));
        W("prefill_topk_all.i32.bin", o->prefill_topk_all, 4 * L * P * K);
    }
#undef W
    return 0;
}
