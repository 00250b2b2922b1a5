/*
 * Random-weight checkpoints: config.json, safetensors (one file or shards)
 * with model.safetensors.index.json, and a copy of tokenizer.json.
 *
 * Weights are normal with a per-kind standard deviation (the tiny fixture's
 * init std, scaled by sqrt(tiny fan-in / fan-in) so bigger presets keep
 * activations at the same size); norm weights are 1 + 0.1 N(0, 1).  Each
 * row has its own random stream seeded from (seed, tensor name, row), so
 * rows can be drawn in parallel and the bf16 and fp8 checkpoints of one
 * seed hold the same weights: the fp8 one is the bf16 values quantized to
 * e4m3 with a power-of-two scale per 128x128 block (amax / 448 rounded up,
 * as ue8m0 scales are).  Tensors are produced while the file is written.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "model/config.h"
#include "mkmodel.h"
#include "st_writer.h"
#include "util/err.h"

#define BLOCK 128

typedef struct {
    char      name[200];
    int64_t   rows, cols;       /* cols = 0: a vector of rows values */
    sg_dtype  dtype;            /* as stored: BF16, F32 or F8_E4M3 */
    float     mean, std;
    uint64_t  seed;
    float    *scales;           /* F8: [ceil(rows/128)][ceil(cols/128)] */
    int       scales_failed;
} gen_tensor;

typedef struct {
    gen_tensor     *t;
    int             n, cap;
    const sg_config *c;
    int             fp8;
    uint64_t        seed;
} gen_list;

static uint64_t
mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t
name_hash(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;       /* FNV-1a */

    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
    return h;
}

/*
 * Normal deviates by Marsaglia and Tsang's ziggurat (128 layers): one
 * 64-bit draw and a compare for ~99% of values, exact tails.  That keeps a
 * 1 GB checkpoint at a few seconds.  Tables are built once.
 */
static uint32_t zig_k[128];
static float    zig_w[128], zig_f[128];

static void
zig_build(void)
{
    const double m1 = 2147483648.0, vn = 9.91256303526217e-3;
    double       dn = 3.442619855899, tn = dn, q = vn / exp(-0.5 * dn * dn);

    zig_k[0] = (uint32_t)(dn / q * m1);
    zig_k[1] = 0;
    zig_w[0] = (float)(q / m1);
    zig_w[127] = (float)(dn / m1);
    zig_f[0] = 1.0f;
    zig_f[127] = (float)exp(-0.5 * dn * dn);
    for (int i = 126; i >= 1; i--) {
        dn = sqrt(-2.0 * log(vn / dn + exp(-0.5 * dn * dn)));
        zig_k[i + 1] = (uint32_t)(dn / tn * m1);
        tn = dn;
        zig_f[i] = (float)exp(-0.5 * dn * dn);
        zig_w[i] = (float)(dn / m1);
    }
}

static void
zig_init(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;

    pthread_once(&once, zig_build);
}

static inline uint64_t
next64(uint64_t *s)
{
    return mix64(*s += 0x9e3779b97f4a7c15ull);
}

/* Uniform in (0, 1). */
static inline float
uni(uint64_t *s)
{
    return ((float)(next64(s) >> 40) + 0.5f) * 0x1p-24f;
}

/* The ziggurat's rejection path (about 1% of draws). */
static float
zig_slow(uint64_t *s, int32_t hz, int iz)
{
    const float r = 3.442620f;

    for (;;) {
        float    x = (float)hz * zig_w[iz];
        uint64_t v;

        if (iz == 0) {
            float y;

            do {
                x = -logf(uni(s)) * 0.2904764f;
                y = -logf(uni(s));
            } while (y + y < x * x);
            return hz > 0 ? r + x : -r - x;
        }
        if (zig_f[iz] + uni(s) * (zig_f[iz - 1] - zig_f[iz])
            < expf(-0.5f * x * x))
        {
            return x;
        }
        v = next64(s);
        hz = (int32_t)(uint32_t)v;
        iz = (int)(v >> 32) & 127;
        if ((uint32_t)llabs(hz) < zig_k[iz])
            return (float)hz * zig_w[iz];
    }
}

static inline float
randn(uint64_t *s)
{
    uint64_t v = next64(s);
    int32_t  hz = (int32_t)(uint32_t)v;
    int      iz = (int)(v >> 32) & 127;

    if ((uint32_t)llabs(hz) < zig_k[iz])
        return (float)hz * zig_w[iz];
    return zig_slow(s, hz, iz);
}

/* One row of N(mean, std), rounded to bf16 unless stored as F32. */
static void
gen_row(const gen_tensor *g, int64_t r, float *out, int64_t n)
{
    uint64_t s = mix64(g->seed ^ mix64((uint64_t)r + 1));

    for (int64_t i = 0; i < n; i++)
        out[i] = g->mean + g->std * randn(&s);
    if (g->dtype != SG_F32) {
        for (int64_t i = 0; i < n; i++)
            out[i] = sg_bf16_to_f32(sg_f32_to_bf16(out[i]));
    }
}

static int64_t
ncols(const gen_tensor *g)
{
    return g->cols ? g->cols : g->rows;
}

static int64_t
nrows(const gen_tensor *g)
{
    return g->cols ? g->rows : 1;
}

/* Rows [r0, r0 + nr) into buf. */
static void
gen_rows(const gen_tensor *g, int64_t r0, int64_t nr, float *buf)
{
    int64_t c = ncols(g);

    for (int64_t r = 0; r < nr; r++)
        gen_row(g, r0 + r, buf + r * c, c);
}

/* ue8m0: amax / 448 rounded up to a power of two. */
static float
pow2_scale(float amax)
{
    float s, m;
    int   e;

    if (amax < 1e-4f)
        amax = 1e-4f;
    s = amax * (1.0f / 448.0f);
    m = frexpf(s, &e);
    return m == 0.5f ? s : ldexpf(1.0f, e);
}

static int
compute_scales(gen_tensor *g)
{
    int64_t rb = (g->rows + BLOCK - 1) / BLOCK;
    int64_t cb = (g->cols + BLOCK - 1) / BLOCK;
    float  *buf;

    if (g->scales || g->scales_failed)
        return g->scales ? 0 : -1;
    buf = malloc(sizeof(float) * BLOCK * g->cols);
    g->scales = malloc(sizeof(float) * rb * cb);
    if (buf == NULL || g->scales == NULL) {
        free(buf);
        free(g->scales);
        g->scales = NULL;
        g->scales_failed = 1;
        return -1;
    }
    for (int64_t b = 0; b < rb; b++) {
        int64_t nr = g->rows - b * BLOCK < BLOCK ? g->rows - b * BLOCK : BLOCK;

        gen_rows(g, b * BLOCK, nr, buf);
        for (int64_t j = 0; j < cb; j++) {
            int64_t c1 = (j + 1) * BLOCK < g->cols ? (j + 1) * BLOCK : g->cols;
            float   amax = 0;

            for (int64_t r = 0; r < nr; r++) {
                for (int64_t c = j * BLOCK; c < c1; c++)
                    amax = fmaxf(amax, fabsf(buf[r * g->cols + c]));
            }
            g->scales[b * cb + j] = pow2_scale(amax);
        }
    }
    free(buf);
    return 0;
}

static int
fill_scales(void *ctx, sg_st_sink *sink)
{
    gen_tensor *g = ctx;
    int64_t     n = ((g->rows + BLOCK - 1) / BLOCK) * ((g->cols + BLOCK - 1)
                                                       / BLOCK);

    if (compute_scales(g) != 0) {
        sg_st_sink_error(sink, "%s: out of memory", g->name);
        return -1;
    }
    return sg_st_sink_write(sink, g->scales, sizeof(float) * n);
}

/* e4m3 of every bf16 value: the values mkmodel quantizes are bf16 and the
 * scales powers of two, so v / scale is still a bf16 value. */
static uint8_t e4m3_of_bf16[65536];

static void
e4m3_table_build(void)
{
    for (int h = 0; h < 65536; h++)
        e4m3_of_bf16[h] = sg_f32_to_e4m3(sg_bf16_to_f32((uint16_t)h));
}

static int
fill_fp8(gen_tensor *g, sg_st_sink *sink)
{
    int64_t  rb = (g->rows + BLOCK - 1) / BLOCK;
    int64_t  cb = (g->cols + BLOCK - 1) / BLOCK;
    float   *buf = malloc(sizeof(float) * BLOCK * g->cols);
    uint8_t *q = malloc(BLOCK * g->cols);
    int      rc = 0;

    static pthread_once_t once = PTHREAD_ONCE_INIT;

    pthread_once(&once, e4m3_table_build);
    if (buf == NULL || q == NULL || compute_scales(g) != 0) {
        sg_st_sink_error(sink, "%s: out of memory", g->name);
        rc = -1;
    }
    for (int64_t b = 0; b < rb && rc == 0; b++) {
        int64_t      nr = g->rows - b * BLOCK < BLOCK ? g->rows - b * BLOCK
                                                       : BLOCK;
        const float *sc = g->scales + b * cb;

        gen_rows(g, b * BLOCK, nr, buf);
        for (int64_t r = 0; r < nr; r++) {
            for (int64_t c = 0; c < g->cols; c++) {
                int64_t i = r * g->cols + c;

                q[i] = e4m3_of_bf16[sg_f32_to_bf16(buf[i] / sc[c / BLOCK])];
            }
        }
        rc = sg_st_sink_write(sink, q, nr * g->cols);
    }
    free(buf);
    free(q);
    return rc;
}

static int
fill_weight(void *ctx, sg_st_sink *sink)
{
    gen_tensor *g = ctx;
    int64_t     c = ncols(g), rows = nrows(g), chunk = 64;
    size_t      esz = sg_dtype_size(g->dtype);
    float      *buf;
    uint8_t    *out;
    int         rc = 0;

    if (g->dtype == SG_F8_E4M3)
        return fill_fp8(g, sink);
    buf = malloc(sizeof(float) * chunk * c);
    out = malloc(esz * chunk * c);
    if (buf == NULL || out == NULL) {
        sg_st_sink_error(sink, "%s: out of memory", g->name);
        rc = -1;
    }
    for (int64_t r0 = 0; r0 < rows && rc == 0; r0 += chunk) {
        int64_t nr = rows - r0 < chunk ? rows - r0 : chunk;

        gen_rows(g, r0, nr, buf);
        if (g->dtype == SG_F32) {
            memcpy(out, buf, sizeof(float) * nr * c);
        } else {
            uint16_t *h = (uint16_t *)out;

            for (int64_t i = 0; i < nr * c; i++)
                h[i] = sg_f32_to_bf16(buf[i]);
        }
        rc = sg_st_sink_write(sink, out, esz * nr * c);
    }
    free(buf);
    free(out);
    return rc;
}

/* Adds a weight; std_ref is the tiny fixture's std at fan-in fan_ref. */
static int
add(gen_list *l, const char *name, int64_t rows, int64_t cols, int fp8able,
    float mean, double std_ref, int64_t fan_ref)
{
    gen_tensor *g;

    if (l->n == l->cap) {
        return -1;
    }
    g = &l->t[l->n++];
    memset(g, 0, sizeof(*g));
    snprintf(g->name, sizeof(g->name), "%s", name);
    g->rows = rows;
    g->cols = cols;
    g->dtype = fp8able && l->fp8 ? SG_F8_E4M3 : SG_BF16;
    g->mean = mean;
    g->std = (float)(fan_ref ? std_ref * sqrt((double)fan_ref / cols)
                             : std_ref);
    g->seed = mix64(l->seed ^ name_hash(name));
    return 0;
}

static int
add_mlp(gen_list *l, const char *p, int64_t D, int64_t inter, double up_std,
    double down_std, int64_t down_ref)
{
    char n[200];
    int  rc = 0;

    snprintf(n, sizeof(n), "%s.gate_proj.weight", p);
    rc |= add(l, n, inter, D, 1, 0, up_std, 256);
    snprintf(n, sizeof(n), "%s.up_proj.weight", p);
    rc |= add(l, n, inter, D, 1, 0, up_std, 256);
    snprintf(n, sizeof(n), "%s.down_proj.weight", p);
    rc |= add(l, n, D, inter, 1, 0, down_std, down_ref);
    return rc;
}

/* Every tensor, in the order of the files: embedding, layers, norm, head. */
static int
build_list(gen_list *l)
{
    const sg_config *c = l->c;
    int64_t D = c->hidden_size, H = c->num_attention_heads;
    int64_t ql = c->q_lora_rank, kvl = c->kv_lora_rank;
    int64_t qk = c->qk_nope_head_dim + c->qk_rope_head_dim;
    int64_t IH = c->index_n_heads, ID = c->index_head_dim;
    int64_t E = c->n_routed_experts, mi = c->moe_intermediate_size;
    char    p[96], n[200];
    int     rc = 0;

#define ADD(suffix, rows, cols, fp8able, mean, std, ref) \
    do { \
        snprintf(n, sizeof(n), "%s." suffix, p); \
        rc |= add(l, n, rows, cols, fp8able, mean, std, ref); \
    } while (0)

    rc |= add(l, "model.embed_tokens.weight", c->vocab_size, D, 0, 0, 1.0, 0);
    for (int i = 0; i < c->num_hidden_layers; i++) {
        snprintf(p, sizeof(p), "model.layers.%d", i);
        ADD("input_layernorm.weight", D, 0, 0, 1, 0.1, 0);
        ADD("self_attn.q_a_proj.weight", ql, D, 1, 0, 0.06, 256);
        ADD("self_attn.q_a_layernorm.weight", ql, 0, 0, 1, 0.1, 0);
        ADD("self_attn.q_b_proj.weight", H * qk, ql, 1, 0, 0.1, 128);
        ADD("self_attn.kv_a_proj_with_mqa.weight",
            kvl + c->qk_rope_head_dim, D, 1, 0, 0.06, 256);
        ADD("self_attn.kv_a_layernorm.weight", kvl, 0, 0, 1, 0.1, 0);
        ADD("self_attn.kv_b_proj.weight",
            H * (c->qk_nope_head_dim + c->v_head_dim), kvl, 1, 0, 0.1, 128);
        ADD("self_attn.o_proj.weight", D, H * c->v_head_dim, 1, 0, 0.06,
            256);
        ADD("self_attn.indexer.wq_b.weight", IH * ID, ql, 1, 0, 0.1, 128);
        ADD("self_attn.indexer.wk.weight", ID, D, 1, 0, 0.06, 256);
        ADD("self_attn.indexer.k_norm.weight", ID, 0, 0, 1, 0.1, 0);
        ADD("self_attn.indexer.k_norm.bias", ID, 0, 0, 0, 0.1, 0);
        ADD("self_attn.indexer.weights_proj.weight", IH, D, 0, 0, 0.1, 256);
        ADD("post_attention_layernorm.weight", D, 0, 0, 1, 0.1, 0);
        if (i < c->first_k_dense_replace) {
            snprintf(p, sizeof(p), "model.layers.%d.mlp", i);
            rc |= add_mlp(l, p, D, c->intermediate_size, 0.06, 0.04, 512);
            continue;
        }
        ADD("mlp.gate.weight", E, D, 0, 0, 0.1, 256);
        ADD("mlp.gate.e_score_correction_bias", E, 0, 0, 0, 0.05, 0);
        l->t[l->n - 1].dtype = SG_F32;
        for (int j = 0; j < E; j++) {
            snprintf(n, sizeof(n), "model.layers.%d.mlp.experts.%d", i, j);
            rc |= add_mlp(l, n, D, mi, 0.06, 0.06, 128);
        }
        if (c->n_shared_experts > 0) {
            snprintf(n, sizeof(n), "model.layers.%d.mlp.shared_experts", i);
            rc |= add_mlp(l, n, D, mi * c->n_shared_experts, 0.06, 0.06, 128);
        }
    }
    rc |= add(l, "model.norm.weight", D, 0, 0, 1, 0.1, 0);
    rc |= add(l, "lm_head.weight", c->vocab_size, D, 0, 0, 0.1, 256);
#undef ADD
    return rc;
}

/* The model's weights, described (nothing drawn yet). */
static int
gen_list_init(gen_list *l, const sg_config *c, uint64_t seed)
{
    memset(l, 0, sizeof(*l));
    zig_init();
    l->c = c;
    l->fp8 = c->fp8;
    l->seed = seed;
    l->cap = 8 + c->num_hidden_layers * (24 + 3 * c->n_routed_experts);
    l->t = calloc(l->cap, sizeof(gen_tensor));
    if (l->t == NULL)
        return -1;
    return build_list(l);
}

static int
register_all(gen_list *l, sg_st_writer *w)
{
    for (int i = 0; i < l->n; i++) {
        gen_tensor *g = &l->t[i];
        int64_t     shape[2] = { g->rows, g->cols };
        char        sname[232];

        if (sg_st_add_stream(w, g->name, g->dtype, g->cols ? 2 : 1, shape,
                             fill_weight, g) != 0)
        {
            return -1;
        }
        if (g->dtype != SG_F8_E4M3)
            continue;
        shape[0] = (g->rows + BLOCK - 1) / BLOCK;
        shape[1] = (g->cols + BLOCK - 1) / BLOCK;
        snprintf(sname, sizeof(sname), "%s_scale_inv", g->name);
        if (sg_st_add_stream(w, sname, SG_F32, 2, shape, fill_scales, g))
            return -1;
    }
    return 0;
}

static int
mkdir_p(const char *dir, char *err, int errlen)
{
    char path[4096];

    snprintf(path, sizeof(path), "%s", dir);
    for (char *s = path + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(path, 0755) != 0 && errno != EEXIST)
            return sg_err(err, errlen, "%s: %s", path, strerror(errno));
        *s = '/';
    }
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
        return sg_err(err, errlen, "%s: %s", path, strerror(errno));
    return 0;
}

static int
write_text(const char *path, const char *text, char *err, int errlen)
{
    FILE *f = fopen(path, "w");
    int   bad;

    if (f == NULL)
        return sg_err(err, errlen, "%s: %s", path, strerror(errno));
    bad = fputs(text, f) < 0 || fputc('\n', f) == EOF;
    if (fclose(f) != 0 || bad)
        return sg_err(err, errlen, "%s: write failed", path);
    return 0;
}

static int
copy_file(const char *from, const char *to, char *err, int errlen)
{
    FILE  *in = fopen(from, "rb"), *out;
    char   buf[1 << 16];
    size_t n;
    int    bad = 0;

    if (in == NULL)
        return sg_err(err, errlen, "%s: %s", from, strerror(errno));
    out = fopen(to, "wb");
    if (out == NULL) {
        fclose(in);
        return sg_err(err, errlen, "%s: %s", to, strerror(errno));
    }
    while ((n = fread(buf, 1, sizeof(buf), in)) > 0) {
        if (fwrite(buf, 1, n, out) != n) {
            bad = 1;
            break;
        }
    }
    bad |= ferror(in);
    fclose(in);
    if (fclose(out) != 0 || bad)
        return sg_err(err, errlen, "copying %s to %s failed", from, to);
    return 0;
}

static void
report(const sg_mkmodel_opts *o, const gen_list *l, int shards,
    int64_t bytes, double secs)
{
    char    name[64], path[4096];
    int64_t params = 0;

    if (o->log == NULL)
        return;
    fprintf(o->log, "wrote %s/config.json\n", o->out_dir);
    for (int s = 0; s < shards; s++) {
        struct stat st;

        sg_st_shard_name(name, sizeof(name), s, shards);
        snprintf(path, sizeof(path), "%s/%s", o->out_dir, name);
        if (stat(path, &st) == 0)
            fprintf(o->log, "wrote %s (%lld bytes)\n", path,
                    (long long)st.st_size);
    }
    fprintf(o->log, "wrote %s/model.safetensors.index.json\n", o->out_dir);
    if (o->tokenizer)
        fprintf(o->log, "wrote %s/tokenizer.json (copy of %s)\n", o->out_dir,
                o->tokenizer);
    for (int i = 0; i < l->n; i++)
        params += l->t[i].rows * (l->t[i].cols ? l->t[i].cols : 1);
    fprintf(o->log, "%d weights, %.1f M parameters, %s, %.1f MB in %.2f s "
            "(%.0f MB/s), seed %llu\n", l->n, params / 1e6,
            l->fp8 ? "fp8 e4m3 + bf16" : "bf16", bytes / 1e6, secs,
            secs > 0 ? bytes / 1e6 / secs : 0.0,
            (unsigned long long)l->seed);
}

int64_t
sg_mkmodel_values(const sg_config *c, uint64_t seed, const char *name,
    float *out, int64_t cap)
{
    gen_list l;
    int64_t  n = -1;

    if (gen_list_init(&l, c, seed) != 0) {
        free(l.t);
        return -1;
    }
    for (int i = 0; i < l.n; i++) {
        gen_tensor *g = &l.t[i];

        if (strcmp(g->name, name) != 0)
            continue;
        n = nrows(g) * ncols(g);
        if (n <= cap)
            gen_rows(g, 0, nrows(g), out);
        else
            n = -1;
        break;
    }
    free(l.t);
    return n;
}

int
sg_mkmodel(const sg_mkmodel_opts *o, char *err, int errlen)
{
    cJSON          *json;
    char           *text, path[4096];
    sg_config       cfg;
    gen_list        l;
    sg_st_writer   *w = NULL;
    int             shards = o->shards > 0 ? o->shards : 1, rc = -1;
    int64_t         bytes;
    struct timespec t0, t1;

    memset(&l, 0, sizeof(l));
    if (o->out_dir == NULL)
        return sg_err(err, errlen, "mkmodel: no output directory");
    json = sg_mkmodel_config(o, err, errlen);
    if (json == NULL)
        return -1;
    text = cJSON_Print(json);
    cJSON_Delete(json);
    if (text == NULL)
        return sg_err(err, errlen, "out of memory");
    snprintf(path, sizeof(path), "%s/config.json", o->out_dir);
    if (mkdir_p(o->out_dir, err, errlen) != 0
        || write_text(path, text, err, errlen) != 0)
    {
        free(text);
        return -1;
    }
    free(text);
    /* The written file must load: that checks every field and value.  A
     * config that does not is not left behind as a checkpoint. */
    if (sg_config_load(path, &cfg, err, errlen) != 0) {
        remove(path);
        return -1;
    }
    clock_gettime(CLOCK_MONOTONIC, &t0);
    w = sg_st_writer_new();
    if (gen_list_init(&l, &cfg, o->seed) != 0 || w == NULL
        || register_all(&l, w) != 0)
    {
        sg_err(err, errlen, "out of memory describing the tensors");
        goto out;
    }
    bytes = sg_st_write(w, o->out_dir, shards, err, errlen);
    if (bytes < 0)
        goto out;
    if (o->tokenizer) {
        snprintf(path, sizeof(path), "%s/tokenizer.json", o->out_dir);
        if (copy_file(o->tokenizer, path, err, errlen) != 0)
            goto out;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    report(o, &l, shards, bytes, (t1.tv_sec - t0.tv_sec)
                                 + (t1.tv_nsec - t0.tv_nsec) * 1e-9);
    rc = 0;
out:
    sg_st_writer_free(w);
    for (int i = 0; i < l.n; i++)
        free(l.t[i].scales);
    free(l.t);
    return rc;
}
