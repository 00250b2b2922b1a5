/*
 * Safetensors writer: u64 LE header length, a JSON header padded with
 * spaces to a multiple of 8 bytes, then the tensors' bytes back to back
 * (no holes, as the format requires).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "st_writer.h"

#define ST_MAX_DIMS 8

typedef struct {
    char          *name;
    sg_dtype       dtype;
    int            ndim;
    int64_t        shape[ST_MAX_DIMS];
    int64_t        nbytes;
    void          *data;       /* copied bytes, or NULL when streamed */
    sg_st_fill_fn  fill;
    void          *ctx;
    int            shard;
    int64_t        begin;      /* offset inside its file's data area */
} st_entry;

struct sg_st_writer {
    st_entry *t;
    int       n, cap;
};

struct sg_st_sink {
    FILE       *f;
    const char *path;
    const char *tensor;
    int64_t     left;          /* bytes the tensor still owes */
    char       *err;
    int         errlen;
    int         failed;
};

sg_st_writer *
sg_st_writer_new(void)
{
    return calloc(1, sizeof(sg_st_writer));
}

void
sg_st_writer_free(sg_st_writer *w)
{
    if (w == NULL)
        return;
    for (int i = 0; i < w->n; i++) {
        free(w->t[i].name);
        free(w->t[i].data);
    }
    free(w->t);
    free(w);
}

int
sg_st_count(const sg_st_writer *w)
{
    return w->n;
}

static st_entry *
add_entry(sg_st_writer *w, const char *name, sg_dtype dtype, int ndim,
    const int64_t *shape)
{
    st_entry *e;
    int64_t   n = 1;

    if (name == NULL || sg_dtype_size(dtype) == 0 || ndim < 0
        || ndim > ST_MAX_DIMS)
    {
        return NULL;
    }
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0 || (shape[d] > 0 && n > INT64_MAX / 16 / shape[d]))
            return NULL;
        n *= shape[d];
    }
    if (w->n == w->cap) {
        int       cap = w->cap ? w->cap * 2 : 64;
        st_entry *t = realloc(w->t, sizeof(st_entry) * cap);

        if (t == NULL)
            return NULL;
        w->t = t;
        w->cap = cap;
    }
    e = &w->t[w->n];
    memset(e, 0, sizeof(*e));
    e->name = strdup(name);
    if (e->name == NULL)
        return NULL;
    e->dtype = dtype;
    e->ndim = ndim;
    memcpy(e->shape, shape, sizeof(int64_t) * ndim);
    e->nbytes = n * (int64_t)sg_dtype_size(dtype);
    w->n++;
    return e;
}

int
sg_st_add(sg_st_writer *w, const char *name, sg_dtype dtype, int ndim,
    const int64_t *shape, const void *data)
{
    st_entry *e = add_entry(w, name, dtype, ndim, shape);

    if (e == NULL)
        return -1;
    e->data = malloc(e->nbytes ? e->nbytes : 1);
    if (e->data == NULL) {
        w->n--;
        free(e->name);
        return -1;
    }
    memcpy(e->data, data, e->nbytes);
    return 0;
}

int
sg_st_add_stream(sg_st_writer *w, const char *name, sg_dtype dtype,
    int ndim, const int64_t *shape, sg_st_fill_fn fill, void *ctx)
{
    st_entry *e;

    if (fill == NULL)
        return -1;
    e = add_entry(w, name, dtype, ndim, shape);
    if (e == NULL)
        return -1;
    e->fill = fill;
    e->ctx = ctx;
    return 0;
}

int
sg_st_sink_write(sg_st_sink *s, const void *buf, size_t len)
{
    if (s->failed)
        return -1;
    if ((int64_t)len > s->left) {
        sg_st_sink_error(s, "tensor '%s': producer wrote more bytes than "
                         "its shape holds", s->tensor);
        return -1;
    }
    if (len && fwrite(buf, 1, len, s->f) != len) {
        sg_st_sink_error(s, "%s: write failed: %s", s->path, strerror(errno));
        return -1;
    }
    s->left -= len;
    return 0;
}

void
sg_st_sink_error(sg_st_sink *s, const char *fmt, ...)
{
    va_list ap;

    if (s->failed)
        return;
    s->failed = 1;
    va_start(ap, fmt);
    vsnprintf(s->err, s->errlen, fmt, ap);
    va_end(ap);
}

void
sg_st_shard_name(char *buf, size_t len, int shard, int n_shards)
{
    if (n_shards == 1)
        snprintf(buf, len, "model.safetensors");
    else
        snprintf(buf, len, "model-%05d-of-%05d.safetensors", shard + 1,
                 n_shards);
}

/* Splits the tensors, in order, into n_shards runs of about equal size. */
static void
assign_shards(sg_st_writer *w, int n_shards)
{
    int64_t total = 0, done = 0;

    for (int i = 0; i < w->n; i++)
        total += w->t[i].nbytes;
    for (int i = 0; i < w->n; i++) {
        int s = total ? (int)((double)done * n_shards / total) : 0;

        w->t[i].shard = s < n_shards ? s : n_shards - 1;
        done += w->t[i].nbytes;
    }
    /* With fewer big tensors than shards a shard may stay empty; HF's
     * loaders accept that, and so does ours. */
}

/* Order of the data inside one file: element size desc, then insertion. */
static int *
file_order(const sg_st_writer *w, int shard, int *count)
{
    int *idx = malloc(sizeof(int) * (w->n ? w->n : 1));
    int  n = 0;

    if (idx == NULL)
        return NULL;
    for (size_t sz = 8; sz >= 1; sz /= 2) {
        for (int i = 0; i < w->n; i++) {
            if (w->t[i].shard == shard && sg_dtype_size(w->t[i].dtype) == sz)
                idx[n++] = i;
        }
    }
    *count = n;
    return idx;
}

static char *
header_json(sg_st_writer *w, const int *idx, int n)
{
    cJSON  *root = cJSON_CreateObject(), *meta;
    char   *s;
    int64_t off = 0;

    for (int k = 0; k < n && root; k++) {
        st_entry *e = &w->t[idx[k]];
        cJSON    *o = cJSON_AddObjectToObject(root, e->name);
        cJSON    *shape = o ? cJSON_AddArrayToObject(o, "shape") : NULL;
        cJSON    *offs;

        if (shape == NULL)
            goto fail;
        cJSON_AddStringToObject(o, "dtype", sg_dtype_name(e->dtype));
        for (int d = 0; d < e->ndim; d++)
            cJSON_AddItemToArray(shape,
                                 cJSON_CreateNumber((double)e->shape[d]));
        offs = cJSON_AddArrayToObject(o, "data_offsets");
        if (offs == NULL)
            goto fail;
        e->begin = off;
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
        off += e->nbytes;
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
    }
    if (root == NULL)
        return NULL;
    meta = cJSON_AddObjectToObject(root, "__metadata__");
    if (meta == NULL || cJSON_AddStringToObject(meta, "format", "pt") == NULL)
        goto fail;
    s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
fail:
    cJSON_Delete(root);
    return NULL;
}

static int
write_data(st_entry *e, FILE *f, const char *path, char *err, int errlen)
{
    sg_st_sink sink = { f, path, e->name, e->nbytes, err, errlen, 0 };

    if (e->data)
        sg_st_sink_write(&sink, e->data, e->nbytes);
    else if (e->fill(e->ctx, &sink) != 0 && !sink.failed)
        sg_st_sink_error(&sink, "tensor '%s': producer failed", e->name);
    if (!sink.failed && sink.left != 0) {
        sg_st_sink_error(&sink, "tensor '%s': producer wrote %lld bytes "
                         "less than its shape holds", e->name,
                         (long long)sink.left);
    }
    return sink.failed ? -1 : 0;
}

static int64_t
write_file(sg_st_writer *w, const char *dir, int shard, int n_shards,
    char *err, int errlen)
{
    char     name[64], path[4096], tmp[4200];
    int      n, *idx = file_order(w, shard, &n);
    char    *hdr = idx ? header_json(w, idx, n) : NULL;
    FILE    *f = NULL;
    size_t   hlen, padded;
    uint8_t  len8[8];
    int64_t  total = -1;

    sg_st_shard_name(name, sizeof(name), shard, n_shards);
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    if (hdr == NULL) {
        snprintf(err, errlen, "%s: out of memory building the header", path);
        goto out;
    }
    f = fopen(tmp, "wb");
    if (f == NULL) {
        snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
        goto out;
    }
    setvbuf(f, NULL, _IOFBF, 1 << 20);
    hlen = strlen(hdr);
    padded = (hlen + 7) & ~(size_t)7;
    for (int b = 0; b < 8; b++)
        len8[b] = (uint8_t)((uint64_t)padded >> (8 * b));
    if (fwrite(len8, 1, 8, f) != 8 || fwrite(hdr, 1, hlen, f) != hlen
        || fwrite("        ", 1, padded - hlen, f) != padded - hlen)
    {
        snprintf(err, errlen, "%s: write failed: %s", tmp, strerror(errno));
        goto out;
    }
    total = 8 + padded;
    for (int k = 0; k < n; k++) {
        if (write_data(&w->t[idx[k]], f, tmp, err, errlen) != 0) {
            total = -1;
            goto out;
        }
        total += w->t[idx[k]].nbytes;
    }
    if (fclose(f) != 0) {
        f = NULL;
        snprintf(err, errlen, "%s: write failed: %s", tmp, strerror(errno));
        total = -1;
        goto out;
    }
    f = NULL;
    if (rename(tmp, path) != 0) {
        snprintf(err, errlen, "%s: rename failed: %s", path, strerror(errno));
        total = -1;
    }
out:
    if (f) {
        fclose(f);
    }
    if (total < 0)
        remove(tmp);
    free(hdr);
    free(idx);
    return total;
}

static int
cmp_name(const void *a, const void *b)
{
    const st_entry *x = *(st_entry *const *)a, *y = *(st_entry *const *)b;

    return strcmp(x->name, y->name);
}

/* {"metadata": {"total_size": N}, "weight_map": {name: file}}, names
 * sorted as Hugging Face writes them. */
static int
write_index(sg_st_writer *w, const char *dir, int n_shards, char *err,
    int errlen)
{
    st_entry **by_name = malloc(sizeof(st_entry *) * (w->n ? w->n : 1));
    cJSON     *root = cJSON_CreateObject(), *meta, *map;
    char       path[4096], name[64], *s = NULL;
    int64_t    total = 0;
    FILE      *f;
    int        rc = -1;

    if (by_name == NULL || root == NULL)
        goto out;
    for (int i = 0; i < w->n; i++) {
        by_name[i] = &w->t[i];
        total += w->t[i].nbytes;
    }
    qsort(by_name, w->n, sizeof(st_entry *), cmp_name);
    meta = cJSON_AddObjectToObject(root, "metadata");
    map = cJSON_AddObjectToObject(root, "weight_map");
    if (meta == NULL || map == NULL)
        goto out;
    cJSON_AddNumberToObject(meta, "total_size", (double)total);
    for (int i = 0; i < w->n; i++) {
        sg_st_shard_name(name, sizeof(name), by_name[i]->shard, n_shards);
        if (cJSON_AddStringToObject(map, by_name[i]->name, name) == NULL)
            goto out;
    }
    s = cJSON_Print(root);
    if (s == NULL)
        goto out;
    snprintf(path, sizeof(path), "%s/model.safetensors.index.json", dir);
    f = fopen(path, "w");
    if (f == NULL) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        rc = -2;
        goto out;
    }
    if (fputs(s, f) < 0 || fputc('\n', f) == EOF) {
        snprintf(err, errlen, "%s: write failed: %s", path, strerror(errno));
        rc = -2;
    } else {
        rc = 0;
    }
    if (fclose(f) != 0 && rc == 0) {
        snprintf(err, errlen, "%s: write failed: %s", path, strerror(errno));
        rc = -2;
    }
out:
    if (rc == -1)
        snprintf(err, errlen, "%s: out of memory writing the index", dir);
    free(s);
    cJSON_Delete(root);
    free(by_name);
    return rc == 0 ? 0 : -1;
}

/* Two tensors of one name would make both the header and the index
 * ambiguous. */
static int
check_unique(const sg_st_writer *w, const char *dir, char *err, int errlen)
{
    const st_entry **v = malloc(sizeof(st_entry *) * (w->n ? w->n : 1));
    int              rc = 0;

    if (v == NULL) {
        snprintf(err, errlen, "%s: out of memory", dir);
        return -1;
    }
    for (int i = 0; i < w->n; i++)
        v[i] = &w->t[i];
    qsort(v, w->n, sizeof(st_entry *), cmp_name);
    for (int i = 1; i < w->n && rc == 0; i++) {
        if (strcmp(v[i - 1]->name, v[i]->name) == 0) {
            snprintf(err, errlen, "%s: tensor '%s' added twice", dir,
                     v[i]->name);
            rc = -1;
        }
    }
    free(v);
    return rc;
}

int64_t
sg_st_write(sg_st_writer *w, const char *dir, int n_shards, char *err,
    int errlen)
{
    int64_t total = 0;

    if (n_shards < 1 || n_shards > 99999) {
        snprintf(err, errlen, "%s: shard count %d out of range [1, 99999]",
                 dir, n_shards);
        return -1;
    }
    if (check_unique(w, dir, err, errlen) != 0)
        return -1;
    assign_shards(w, n_shards);
    for (int s = 0; s < n_shards; s++) {
        int64_t n = write_file(w, dir, s, n_shards, err, errlen);

        if (n < 0)
            return -1;
        total += n;
    }
    if (write_index(w, dir, n_shards, err, errlen) != 0)
        return -1;
    return total;
}
