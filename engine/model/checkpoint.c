/*
 * Safetensors checkpoints: every file's header is parsed and checked
 * (dtype, shape, offsets inside the data area, no overlap), the files are
 * mmapped read-only and never read eagerly, and tensors are found by name
 * in a sorted array.  FP8 weights get their weight_scale_inv attached.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "checkpoint_file.h"
#include "util/err.h"
#include "util/file.h"

#define INDEX_NAME       "model.safetensors.index.json"
#define MAX_HEADER_BYTES ((uint64_t)100 << 20)   /* the format's own limit */

typedef struct {
    char   *name;               /* as in the directory / the index */
    void   *map;
    size_t  size;
} ck_file;

typedef struct {
    sg_tensor t;                /* first: sg_tensor * <-> ck_entry * */
    int       file;
    int64_t   begin, end;       /* data_offsets */
    void     *owned;            /* aligned copy of a misaligned tensor */
} ck_entry;

struct sg_checkpoint {
    char     *dir;
    ck_file  *files;
    int       n_files;
    ck_entry *e;
    int       n, cap;
    char     *source;
};

static int
cmp_entry_name(const void *a, const void *b)
{
    return strcmp(((const ck_entry *)a)->t.name, ((const ck_entry *)b)->t.name);
}

static ck_entry *
find_entry(const sg_checkpoint *ck, const char *name)
{
    ck_entry key;

    key.t.name = name;
    if (ck->n == 0)
        return NULL;
    return bsearch(&key, ck->e, ck->n, sizeof(ck_entry), cmp_entry_name);
}

const sg_tensor *
sg_checkpoint_find(const sg_checkpoint *ck, const char *name)
{
    ck_entry *e = find_entry(ck, name);

    return e ? &e->t : NULL;
}

const char *
sg_checkpoint_file_of(const sg_checkpoint *ck, const sg_tensor *t)
{
    const ck_entry *e = (const ck_entry *)t;

    if (ck == NULL || e < ck->e || e >= ck->e + ck->n)
        return "?";
    return ck->files[e->file].name;
}

const char *
sg_checkpoint_source(const sg_checkpoint *ck)
{
    return ck->source;
}

void
sg_checkpoint_close(sg_checkpoint *ck)
{
    if (ck == NULL)
        return;
    for (int i = 0; i < ck->n; i++) {
        free((char *)ck->e[i].t.name);
        free(ck->e[i].owned);
    }
    for (int i = 0; i < ck->n_files; i++) {
        if (ck->files[i].map)
            munmap(ck->files[i].map, ck->files[i].size);
        free(ck->files[i].name);
    }
    free(ck->files);
    free(ck->e);
    free(ck->dir);
    free(ck->source);
    free(ck);
}

static int
add_file(sg_checkpoint *ck, const char *name)
{
    ck_file *f = realloc(ck->files, sizeof(ck_file) * (ck->n_files + 1));

    if (f == NULL)
        return -1;
    ck->files = f;
    f = &ck->files[ck->n_files];
    memset(f, 0, sizeof(*f));
    f->name = strdup(name);
    if (f->name == NULL)
        return -1;
    ck->n_files++;
    return ck->n_files - 1;
}

static ck_entry *
new_entry(sg_checkpoint *ck)
{
    if (ck->n == ck->cap) {
        int       cap = ck->cap ? ck->cap * 2 : 256;
        ck_entry *e = realloc(ck->e, sizeof(ck_entry) * cap);

        if (e == NULL)
            return NULL;
        ck->e = e;
        ck->cap = cap;
    }
    memset(&ck->e[ck->n], 0, sizeof(ck_entry));
    return &ck->e[ck->n++];
}

/* A non-negative integer that a double holds exactly. */
static int
json_uint(const cJSON *v, int64_t *out)
{
    if (!cJSON_IsNumber(v) || v->valuedouble < 0
        || v->valuedouble > 9007199254740992.0
        || v->valuedouble != floor(v->valuedouble))
    {
        return -1;
    }
    *out = (int64_t)v->valuedouble;
    return 0;
}

/* Reads one header entry into e; -1 with a message naming file and tensor. */
static int
parse_entry(const cJSON *it, const char *file, int64_t data_len,
    ck_entry *e, char *err, int errlen)
{
    const char  *name = it->string;
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(it, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(it, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(it, "data_offsets");
    const cJSON *d;
    int64_t      n = 1, esz;

    if (!cJSON_IsObject(it))
        return sg_err(err, errlen, "%s: header entry '%s' is not an object",
                      file, name);
    if (!cJSON_IsString(dt))
        return sg_err(err, errlen, "%s: tensor '%s' has no dtype string", file,
                      name);
    if (sg_dtype_parse(dt->valuestring, &e->t.dtype) != 0)
        return sg_err(err, errlen, "%s: tensor '%s' has unsupported dtype "
                      "'%s' (F32, BF16, F8_E4M3, I32, I64)", file, name,
                      dt->valuestring);
    if (!cJSON_IsArray(shape) || cJSON_GetArraySize(shape) > SG_MAX_DIMS)
        return sg_err(err, errlen, "%s: tensor '%s' has no shape array of at "
                      "most %d dimensions", file, name, SG_MAX_DIMS);
    esz = (int64_t)sg_dtype_size(e->t.dtype);
    cJSON_ArrayForEach(d, shape) {
        int64_t v;

        if (json_uint(d, &v) != 0)
            return sg_err(err, errlen, "%s: tensor '%s' has a shape entry that "
                          "is not a non-negative integer", file, name);
        if (v > 0 && n > INT64_MAX / esz / v)
            return sg_err(err, errlen, "%s: tensor '%s' shape overflows", file,
                          name);
        e->t.shape[e->t.ndim++] = v;
        n *= v;
    }
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2
        || json_uint(cJSON_GetArrayItem(offs, 0), &e->begin) != 0
        || json_uint(cJSON_GetArrayItem(offs, 1), &e->end) != 0)
    {
        return sg_err(err, errlen, "%s: tensor '%s' has no data_offsets "
                      "[begin, end] of non-negative integers", file, name);
    }
    if (e->begin > e->end)
        return sg_err(err, errlen, "%s: tensor '%s' has data_offsets [%lld, "
                      "%lld] with begin after end", file, name,
                      (long long)e->begin, (long long)e->end);
    if (e->end > data_len)
        return sg_err(err, errlen, "%s: tensor '%s' data_offsets [%lld, %lld] "
                      "run past the end of the data (%lld bytes; file "
                      "truncated?)", file, name, (long long)e->begin,
                      (long long)e->end, (long long)data_len);
    if (e->end - e->begin != n * esz)
        return sg_err(err, errlen, "%s: tensor '%s' holds %lld bytes but its "
                      "shape and dtype %s need %lld", file, name,
                      (long long)(e->end - e->begin), dt->valuestring,
                      (long long)(n * esz));
    return 0;
}

static int
cmp_begin(const void *a, const void *b)
{
    const ck_entry *x = *(ck_entry *const *)a, *y = *(ck_entry *const *)b;

    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

/* Tensors of one file (entries [first, ck->n)) must not share bytes. */
static int
check_overlap(sg_checkpoint *ck, int first, const char *file, char *err,
    int errlen)
{
    int        n = ck->n - first, rc = 0;
    ck_entry **v = malloc(sizeof(ck_entry *) * (n ? n : 1));
    ck_entry  *prev = NULL;

    if (v == NULL)
        return sg_err(err, errlen, "%s: out of memory", file);
    for (int i = 0; i < n; i++)
        v[i] = &ck->e[first + i];
    qsort(v, n, sizeof(ck_entry *), cmp_begin);
    for (int i = 0; i < n && rc == 0; i++) {
        if (v[i]->begin == v[i]->end)
            continue;
        if (prev && v[i]->begin < prev->end) {
            rc = sg_err(err, errlen, "%s: tensors '%s' [%lld, %lld] and '%s' "
                        "[%lld, %lld] overlap", file, prev->t.name,
                        (long long)prev->begin, (long long)prev->end,
                        v[i]->t.name, (long long)v[i]->begin,
                        (long long)v[i]->end);
        }
        prev = v[i];
    }
    free(v);
    return rc;
}

/* Points the tensor at its bytes; a misaligned one gets an aligned copy
 * (only hand-made files do that: writers sort tensors by element size). */
static int
place_data(ck_entry *e, const uint8_t *data, const char *file, char *err,
    int errlen)
{
    const uint8_t *p = data + e->begin;
    size_t         esz = sg_dtype_size(e->t.dtype);
    size_t         n = (size_t)(e->end - e->begin);

    if ((uintptr_t)p % esz == 0) {
        e->t.data = p;
        return 0;
    }
    e->owned = malloc(n ? n : 1);
    if (e->owned == NULL)
        return sg_err(err, errlen, "%s: out of memory copying misaligned "
                      "tensor '%s'", file, e->t.name);
    memcpy(e->owned, p, n);
    e->t.data = e->owned;
    return 0;
}

static int
map_file(sg_checkpoint *ck, int fi, char *err, int errlen)
{
    ck_file    *f = &ck->files[fi];
    char        path[4096];
    struct stat st;
    int         fd;

    snprintf(path, sizeof(path), "%s/%s", ck->dir, f->name);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return sg_err(err, errlen, "%s: cannot open: %s", f->name,
                      strerror(errno));
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return sg_err(err, errlen, "%s: not a regular file", f->name);
    }
    if (st.st_size < 8) {
        close(fd);
        return sg_err(err, errlen, "%s: file of %lld bytes is too short for a "
                      "safetensors header", f->name, (long long)st.st_size);
    }
    f->map = mmap(NULL, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (f->map == MAP_FAILED) {
        f->map = NULL;
        return sg_err(err, errlen, "%s: mmap failed: %s", f->name,
                      strerror(errno));
    }
    f->size = st.st_size;
    return 0;
}

static int
parse_file(sg_checkpoint *ck, int fi, char *err, int errlen)
{
    ck_file       *f = &ck->files[fi];
    const uint8_t *m;
    uint64_t       hlen = 0;
    int64_t        data_len;
    cJSON         *root, *it;
    int            first = ck->n, rc = 0;

    if (map_file(ck, fi, err, errlen) != 0)
        return -1;
    m = f->map;
    for (int b = 7; b >= 0; b--)
        hlen = hlen << 8 | m[b];
    if (hlen > f->size - 8)
        return sg_err(err, errlen, "%s: header length %llu exceeds the file "
                      "(%zu bytes)", f->name, (unsigned long long)hlen,
                      f->size);
    if (hlen > MAX_HEADER_BYTES)
        return sg_err(err, errlen, "%s: header length %llu is over the 100 MB "
                      "limit", f->name, (unsigned long long)hlen);
    data_len = (int64_t)(f->size - 8 - hlen);
    root = cJSON_ParseWithLength((const char *)m + 8, hlen);
    if (root == NULL || !cJSON_IsObject(root)) {
        const char *at = cJSON_GetErrorPtr();
        long        pos = root == NULL && at >= (const char *)m + 8
                          && at <= (const char *)m + 8 + hlen
                          ? (long)(at - (const char *)m - 8) : 0;

        cJSON_Delete(root);
        return sg_err(err, errlen, "%s: header is not a JSON object (error "
                      "near header byte %ld)", f->name, pos);
    }
    cJSON_ArrayForEach(it, root) {
        ck_entry *e;

        if (strcmp(it->string, "__metadata__") == 0)
            continue;
        e = new_entry(ck);
        if (e == NULL || (e->t.name = strdup(it->string)) == NULL) {
            rc = sg_err(err, errlen, "%s: out of memory", f->name);
            break;
        }
        e->file = fi;
        rc = parse_entry(it, f->name, data_len, e, err, errlen);
        if (rc == 0)
            rc = place_data(e, m + 8 + hlen, f->name, err, errlen);
        if (rc != 0)
            break;
    }
    cJSON_Delete(root);
    if (rc == 0)
        rc = check_overlap(ck, first, f->name, err, errlen);
    return rc;
}

/* A shard name from the index: a plain file name inside the directory. */
static int
safe_file_name(const char *s)
{
    return s[0] != '\0' && s[0] != '.' && strchr(s, '/') == NULL;
}

static int
file_index(sg_checkpoint *ck, const char *name, int *hint)
{
    if (*hint >= 0 && strcmp(ck->files[*hint].name, name) == 0)
        return *hint;
    for (int i = 0; i < ck->n_files; i++) {
        if (strcmp(ck->files[i].name, name) == 0)
            return *hint = i;
    }
    return *hint = add_file(ck, name);
}

static int
check_duplicates(const sg_checkpoint *ck, char *err, int errlen)
{
    for (int i = 1; i < ck->n; i++) {
        if (strcmp(ck->e[i - 1].t.name, ck->e[i].t.name) == 0)
            return sg_err(err, errlen, "tensor '%s' is in both %s and %s",
                          ck->e[i].t.name, ck->files[ck->e[i - 1].file].name,
                          ck->files[ck->e[i].file].name);
    }
    return 0;
}

/* Opens the files the index names, then checks each name is where the
 * index says. */
static int
open_indexed(sg_checkpoint *ck, const char *index_path, char *err,
    int errlen)
{
    size_t       len = 0;
    char        *text = sg_read_file(index_path, 0, &len);
    cJSON       *root = text ? cJSON_ParseWithLength(text, len) : NULL;
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    const cJSON *it;
    int          rc = 0, hint = -1;

    if (text == NULL) {
        rc = sg_err(err, errlen, INDEX_NAME ": cannot read: %s",
                    strerror(errno));
        goto out;
    }
    if (!cJSON_IsObject(root) || !cJSON_IsObject(map)) {
        rc = sg_err(err, errlen, INDEX_NAME ": not JSON with a 'weight_map' "
                    "object");
        goto out;
    }
    cJSON_ArrayForEach(it, map) {
        if (!cJSON_IsString(it) || !safe_file_name(it->valuestring)) {
            rc = sg_err(err, errlen, INDEX_NAME ": tensor '%s' maps to a "
                        "value that is not a file name in the directory",
                        it->string);
            goto out;
        }
        if (file_index(ck, it->valuestring, &hint) < 0) {
            rc = sg_err(err, errlen, INDEX_NAME ": out of memory");
            goto out;
        }
    }
    for (int i = 0; i < ck->n_files && rc == 0; i++) {
        char path[4096];

        snprintf(path, sizeof(path), "%s/%s", ck->dir, ck->files[i].name);
        if (access(path, R_OK) != 0) {
            rc = sg_err(err, errlen, INDEX_NAME " names %s, which cannot be "
                        "opened: %s", ck->files[i].name, strerror(errno));
        }
    }
    for (int i = 0; i < ck->n_files && rc == 0; i++)
        rc = parse_file(ck, i, err, errlen);
    if (rc != 0)
        goto out;
    qsort(ck->e, ck->n, sizeof(ck_entry), cmp_entry_name);
    rc = check_duplicates(ck, err, errlen);
    if (rc != 0)
        goto out;
    cJSON_ArrayForEach(it, map) {
        const ck_entry *e = find_entry(ck, it->string);

        if (e == NULL || strcmp(ck->files[e->file].name, it->valuestring)) {
            rc = sg_err(err, errlen, INDEX_NAME ": tensor '%s' is not in %s",
                        it->string, it->valuestring);
            break;
        }
    }
out:
    cJSON_Delete(root);
    free(text);
    return rc;
}

static int
is_safetensors(const struct dirent *d)
{
    size_t n = strlen(d->d_name), k = strlen(".safetensors");

    return d->d_name[0] != '.' && n > k
           && strcmp(d->d_name + n - k, ".safetensors") == 0;
}

static int
open_unindexed(sg_checkpoint *ck, char *err, int errlen)
{
    struct dirent **names = NULL;
    int             n = scandir(ck->dir, &names, is_safetensors, alphasort);
    int             rc = 0;

    if (n < 0)
        return sg_err(err, errlen, "%s: cannot list: %s", ck->dir,
                      strerror(errno));
    if (n == 0)
        rc = sg_err(err, errlen, "%s: no " INDEX_NAME " and no *.safetensors "
                    "files", ck->dir);
    for (int i = 0; i < n; i++) {
        if (rc == 0 && add_file(ck, names[i]->d_name) < 0)
            rc = sg_err(err, errlen, "%s: out of memory", ck->dir);
        free(names[i]);
    }
    free(names);
    for (int i = 0; i < ck->n_files && rc == 0; i++)
        rc = parse_file(ck, i, err, errlen);
    if (rc == 0)
        qsort(ck->e, ck->n, sizeof(ck_entry), cmp_entry_name);
    return rc;
}

static int64_t
ceil128(int64_t v)
{
    return (v + 127) / 128;
}

/* Every FP8 X gets X_scale_inv: F32 [ceil(rows/128), ceil(cols/128)]. */
static int
attach_scales(sg_checkpoint *ck, char *err, int errlen)
{
    for (int i = 0; i < ck->n; i++) {
        sg_tensor      *t = &ck->e[i].t;
        const char     *file = ck->files[ck->e[i].file].name;
        char            name[1024];
        const ck_entry *s;

        if (t->dtype != SG_F8_E4M3)
            continue;
        if (t->ndim != 2)
            return sg_err(err, errlen, "%s: FP8 tensor '%s' has %d dimensions; "
                          "block scales need 2", file, t->name, t->ndim);
        snprintf(name, sizeof(name), "%s_scale_inv", t->name);
        s = find_entry(ck, name);
        if (s == NULL)
            return sg_err(err, errlen, "%s: FP8 tensor '%s' has no scale "
                          "tensor '%s'", file, t->name, name);
        if (s->t.dtype != SG_F32 || s->t.ndim != 2
            || s->t.shape[0] != ceil128(t->shape[0])
            || s->t.shape[1] != ceil128(t->shape[1]))
        {
            return sg_err(err, errlen, "%s: scale tensor '%s' is %s with %d "
                          "dims [%lld, %lld], expected F32 [%lld, %lld] for "
                          "'%s' [%lld, %lld]", ck->files[s->file].name, name,
                          sg_dtype_name(s->t.dtype), s->t.ndim,
                          (long long)s->t.shape[0],
                          (long long)(s->t.ndim > 1 ? s->t.shape[1] : 0),
                          (long long)ceil128(t->shape[0]),
                          (long long)ceil128(t->shape[1]), t->name,
                          (long long)t->shape[0], (long long)t->shape[1]);
        }
        t->scale = s->t.data;
        t->scale_cols = ceil128(t->shape[1]);
    }
    return 0;
}

/* "model-00001.safetensors, model-00002.safetensors" (first few). */
static char *
describe_files(const sg_checkpoint *ck, int indexed)
{
    char   buf[512];
    size_t at = 0;

    if (indexed)
        return strdup(INDEX_NAME);
    buf[0] = '\0';
    for (int i = 0; i < ck->n_files && at < sizeof(buf) - 64; i++) {
        if (i == 4) {
            snprintf(buf + at, sizeof(buf) - at, ", ... (%d files)",
                     ck->n_files);
            break;
        }
        at += snprintf(buf + at, sizeof(buf) - at, "%s%s", i ? ", " : "",
                       ck->files[i].name);
    }
    return strdup(buf);
}

int
sg_checkpoint_open(const char *dir, sg_checkpoint **out, char *err,
    int errlen)
{
    sg_checkpoint *ck = calloc(1, sizeof(sg_checkpoint));
    char           index_path[4096];
    int            indexed, rc;

    *out = NULL;
    if (ck == NULL || (ck->dir = strdup(dir)) == NULL) {
        free(ck);
        return sg_err(err, errlen, "%s: out of memory", dir);
    }
    sg_fp8_init();
    snprintf(index_path, sizeof(index_path), "%s/" INDEX_NAME, dir);
    indexed = access(index_path, F_OK) == 0;
    rc = indexed ? open_indexed(ck, index_path, err, errlen)
                 : open_unindexed(ck, err, errlen);
    if (rc == 0)
        rc = check_duplicates(ck, err, errlen);
    if (rc == 0)
        rc = attach_scales(ck, err, errlen);
    if (rc == 0 && (ck->source = describe_files(ck, indexed)) == NULL)
        rc = sg_err(err, errlen, "%s: out of memory", dir);
    if (rc != 0) {
        sg_checkpoint_close(ck);
        return -1;
    }
    *out = ck;
    return 0;
}
