/*
 * Checkpoint loading: the shared fixtures load and bind with the right
 * values, safetensors written by st_writer and by mkmodel read back
 * byte for byte, and every kind of broken checkpoint is refused with a
 * message naming the file and the tensor.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "check.h"
#include "model/checkpoint.h"
#include "model/config.h"
#include "offline/mkmodel.h"
#include "offline/st_writer.h"

static char tmp_root[] = "/tmp/sg_loader.XXXXXX";
static char err[1024];

/* ---- helpers ---------------------------------------------------------- */

/* A path under the test's temp dir; the result lives until 16 more calls,
 * so functions keep their own copies (TMP below). */
static const char *
tmp_path(const char *name)
{
    static char buf[16][512];
    static int  next;
    char       *p = buf[next++ % 16];

    snprintf(p, 512, "%s/%s", tmp_root, name);
    return p;
}

#define TMP(var, name) \
    char var[512]; \
    snprintf(var, sizeof(var), "%s/%s", tmp_root, name)

static int
make_tiny(const char *dir, int fp8, uint64_t seed, int shards)
{
    sg_mkmodel_opts o;

    memset(&o, 0, sizeof(o));
    o.out_dir = dir;
    o.preset = "tiny";
    o.fp8 = fp8;
    o.seed = seed;
    o.shards = shards;
    return sg_mkmodel(&o, err, sizeof(err));
}

/* Opens dir and binds its weights; 0 or -1 with err set. */
static int
load_all(const char *dir, sg_config *cfg, sg_checkpoint **ck, sg_weights *w)
{
    char path[600];

    *ck = NULL;
    memset(w, 0, sizeof(*w));
    snprintf(path, sizeof(path), "%s/config.json", dir);
    if (sg_config_load(path, cfg, err, sizeof(err)) != 0)
        return -1;
    if (sg_checkpoint_open(dir, ck, err, sizeof(err)) != 0)
        return -1;
    if (sg_weights_bind(*ck, cfg, w, err, sizeof(err)) != 0) {
        sg_checkpoint_close(*ck);
        *ck = NULL;
        return -1;
    }
    return 0;
}

static void
unload(sg_checkpoint *ck, sg_weights *w)
{
    sg_weights_free(w);
    sg_checkpoint_close(ck);
}

/* A safetensors file split into its header JSON and its data area. */
typedef struct {
    cJSON  *hdr;
    char   *data;
    size_t  len;
    char   *raw;
} st_file;

static int
st_read(const char *path, st_file *f)
{
    size_t   n = 0;
    uint64_t h = 0;

    memset(f, 0, sizeof(*f));
    f->raw = check_read_file(path, &n);
    if (f->raw == NULL || n < 8)
        return -1;
    for (int b = 7; b >= 0; b--)
        h = h << 8 | (uint8_t)f->raw[b];
    if (h > n - 8)
        return -1;
    f->hdr = cJSON_ParseWithLength(f->raw + 8, h);
    f->data = f->raw + 8 + h;
    f->len = n - 8 - h;
    return f->hdr ? 0 : -1;
}

/* Writes header text (padded to 8) and data; header_len overrides the
 * length field when non-zero. */
static void
st_write_raw(const char *path, const char *hdr, const void *data,
    size_t len, uint64_t header_len)
{
    FILE    *f = fopen(path, "wb");
    size_t   h = strlen(hdr), p = (h + 7) & ~(size_t)7;
    uint64_t field = header_len ? header_len : p;
    uint8_t  len8[8];

    for (int b = 0; b < 8; b++)
        len8[b] = (uint8_t)(field >> (8 * b));
    fwrite(len8, 1, 8, f);
    fwrite(hdr, 1, h, f);
    fwrite("        ", 1, p - h, f);
    fwrite(data, 1, len, f);
    fclose(f);
}

static void
st_write(const char *path, st_file *f)
{
    char *s = cJSON_PrintUnformatted(f->hdr);

    st_write_raw(path, s, f->data, f->len, 0);
    free(s);
}

static void
st_free(st_file *f)
{
    cJSON_Delete(f->hdr);
    free(f->raw);
}

static void
set_ints(cJSON *obj, const char *key, int n, const int64_t *v)
{
    cJSON *a = cJSON_CreateArray();

    for (int i = 0; i < n; i++)
        cJSON_AddItemToArray(a, cJSON_CreateNumber((double)v[i]));
    cJSON_ReplaceItemInObjectCaseSensitive(obj, key, a);
}

static int64_t
json_at(const cJSON *obj, const char *key, int i)
{
    return (int64_t)cJSON_GetArrayItem(
        cJSON_GetObjectItemCaseSensitive(obj, key), i)->valuedouble;
}

static int
contains_all(const char *s, const char *a, const char *b)
{
    return strstr(s, a) != NULL && (b == NULL || strstr(s, b) != NULL);
}

/* The check every bad-checkpoint test makes: -1 and a message naming the
 * file and the tensor or field. */
static void
expect_error(const char *test, int rc, const char *file, const char *what)
{
    if (rc == -1)
        printf("# %s: %s\n", test, err);
    CHECK(rc == -1 && contains_all(err, file, what), test,
          "rc %d, message \"%s\" (wanted '%s' and '%s')", rc,
          rc ? err : "", file, what);
}

/* ---- the shared fixtures --------------------------------------------- */

/* Every tensor of the file, found by name, with the file's exact bytes. */
static void
compare_with_file(const char *test, const sg_checkpoint *ck,
    const char *path)
{
    st_file      f;
    const cJSON *it;
    int          n = 0, bad = 0;
    char         why[600] = "";

    if (st_read(path, &f) != 0) {
        CHECK(0, test, "cannot parse %s in the test", path);
        return;
    }
    cJSON_ArrayForEach(it, f.hdr) {
        const sg_tensor *t;
        int64_t          b, e;
        int              nd;
        sg_dtype         dt;

        if (strcmp(it->string, "__metadata__") == 0)
            continue;
        b = json_at(it, "data_offsets", 0);
        e = json_at(it, "data_offsets", 1);
        nd = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(it, "shape"));
        n++;
        t = sg_checkpoint_find(ck, it->string);
        sg_dtype_parse(cJSON_GetObjectItem(it, "dtype")->valuestring, &dt);
        if (t == NULL || t->dtype != dt || t->ndim != nd
            || memcmp(t->data, f.data + b, e - b) != 0)
        {
            if (!bad++)
                snprintf(why, sizeof(why), "tensor %s differs", it->string);
            continue;
        }
        for (int d = 0; d < nd; d++) {
            if (t->shape[d] != json_at(it, "shape", d) && !bad++)
                snprintf(why, sizeof(why), "%s shape differs", it->string);
        }
    }
    CHECK(bad == 0 && n > 100, test, "%d of %d tensors: %s", bad, n, why);
    st_free(&f);
}

static double
tensor_value(const sg_tensor *t, int64_t r, int64_t c)
{
    int64_t i = r * sg_tensor_cols(t) + c;

    switch (t->dtype) {
    case SG_F32:
        return ((const float *)t->data)[i];
    case SG_BF16:
        return sg_bf16_to_f32(((const uint16_t *)t->data)[i]);
    case SG_F8_E4M3:
        return sg_e4m3_to_f32(((const uint8_t *)t->data)[i])
               * t->scale[(r / 128) * t->scale_cols + c / 128];
    default:
        return NAN;
    }
}

/* fp8 weights dequantized with their scales against the bf16 ones. */
static double
dequant_rel_err(const sg_tensor *q, const sg_tensor *ref)
{
    double num = 0, den = 0;

    for (int64_t r = 0; r < sg_tensor_rows(q); r++) {
        for (int64_t c = 0; c < sg_tensor_cols(q); c++) {
            double a = tensor_value(q, r, c), b = tensor_value(ref, r, c);

            if (!isfinite(a))
                return INFINITY;
            num += (a - b) * (a - b);
            den += b * b;
        }
    }
    return den > 0 ? sqrt(num / den) : INFINITY;
}

static void
test_fixtures(void)
{
    char           dir[2][600], path[1300];
    sg_config      cfg[2];
    sg_checkpoint *ck[2] = { NULL, NULL };
    sg_weights     w[2];
    const char    *variant[2] = { "bf16", "fp8" };

    for (int v = 0; v < 2; v++) {
        snprintf(dir[v], sizeof(dir[v]), "%s/tiny-v32/%s",
                 check_fixtures_dir(), variant[v]);
        if (load_all(dir[v], &cfg[v], &ck[v], &w[v]) != 0) {
            CHECK(0, v ? "fixture_fp8_loads" : "fixture_bf16_loads", "%s",
                  err);
            goto out;
        }
        CHECK(1, v ? "fixture_fp8_loads" : "fixture_bf16_loads", "-");
    }
    for (int v = 0; v < 2; v++) {
        const sg_config *c = &cfg[v];

        CHECK(c->vocab_size == 1024 && c->hidden_size == 256
              && c->intermediate_size == 512 && c->moe_intermediate_size == 128
              && c->num_hidden_layers == 3 && c->first_k_dense_replace == 1
              && c->num_attention_heads == 4 && c->q_lora_rank == 128
              && c->kv_lora_rank == 128 && c->qk_nope_head_dim == 64
              && c->qk_rope_head_dim == 64 && c->v_head_dim == 64
              && c->n_routed_experts == 16 && c->n_shared_experts == 1
              && c->num_experts_per_tok == 4 && c->n_group == 4
              && c->topk_group == 2 && c->routed_scaling_factor == 2.5f
              && c->norm_topk_prob == 1 && c->index_n_heads == 16
              && c->index_head_dim == 128 && c->index_topk == 32
              && c->rope_theta == 10000.0
              && c->max_position_embeddings == 512
              && c->rms_norm_eps == 1e-6f && c->bos_token_id == 0
              && c->eos_token_id == 1 && c->qk_head_dim == 128,
              v ? "fixture_fp8_config" : "fixture_bf16_config",
              "a config value differs");
        CHECK(c->yarn_enabled && c->yarn_factor == 4.0
              && c->yarn_original_max_position_embeddings == 128
              && c->yarn_beta_fast == 32 && c->yarn_beta_slow == 1
              && c->yarn_mscale == 1 && c->yarn_mscale_all_dim == 1
              && c->fp8 == v && c->scale_ue8m0 == 1
              && c->weight_block_size == 128,
              v ? "fixture_fp8_rope_quant" : "fixture_bf16_rope_quant",
              "yarn %d factor %g orig %d fp8 %d ue8m0 %d", c->yarn_enabled,
              c->yarn_factor, c->yarn_original_max_position_embeddings,
              c->fp8, c->scale_ue8m0);
        CHECK(fabs(c->softmax_scale - 0.114593459) < 1e-9,
              v ? "fixture_fp8_softmax_scale" : "fixture_bf16_softmax_scale",
              "%.10f", c->softmax_scale);
        snprintf(path, sizeof(path), "%s/model.safetensors", dir[v]);
        compare_with_file(v ? "fixture_fp8_bytes" : "fixture_bf16_bytes",
                          ck[v], path);
    }

    /* Binding: dtypes, shapes, MoE layout, scales attached. */
    {
        const sg_layer_weights *b0 = &w[0].layers[0], *b1 = &w[0].layers[1];
        const sg_layer_weights *f1 = &w[1].layers[1];
        const sg_tensor *kva = &w[1].layers[2].kv_a;
        const sg_tensor *kvs = sg_checkpoint_find(ck[1],
            "model.layers.2.self_attn.kv_a_proj_with_mqa.weight_scale_inv");

        CHECK(!b0->is_moe && b1->is_moe && b0->experts == NULL
              && b1->experts != NULL && b0->mlp.gate.shape[0] == 512
              && b1->experts[15].down.shape[0] == 256
              && b1->experts[15].down.shape[1] == 128
              && b1->shared.up.shape[0] == 128
              && b1->gate_bias.dtype == SG_F32
              && b1->gate.shape[0] == 16 && w[0].lm_head.shape[0] == 1024
              && b0->q_b.dtype == SG_BF16 && b0->q_b.scale == NULL,
              "fixture_bind_layout", "a bound tensor is off");
        CHECK(kva->dtype == SG_F8_E4M3 && kvs && kva->scale == kvs->data
              && kva->scale_cols == 2 && kva->shape[0] == 192
              && f1->experts[3].gate.scale != NULL
              && w[1].layers[0].idx_weights_proj.dtype == SG_BF16
              && w[1].lm_head.dtype == SG_BF16,
              "fixture_fp8_scales_attached", "kv_a %s scale %p cols %lld",
              sg_dtype_name(kva->dtype), (const void *)kva->scale,
              (long long)kva->scale_cols);
        /* The fp8 variant is the block quantization of the bf16 one. */
        double e1 = dequant_rel_err(&w[1].layers[2].kv_a, &w[0].layers[2].kv_a);
        double e2 = dequant_rel_err(&f1->experts[7].down,
                                    &w[0].layers[1].experts[7].down);
        CHECK(e1 < 0.05 && e2 < 0.05, "fixture_fp8_dequant_matches_bf16",
              "rel err %g, %g", e1, e2);
    }
out:
    for (int v = 0; v < 2; v++) {
        if (ck[v])
            unload(ck[v], &w[v]);
    }
}

/* ---- writer round trip on fresh random tensors -------------------------- */

static void
test_writer_roundtrip(void)
{
    enum { N = 40 };
    sg_st_writer  *w = sg_st_writer_new();
    TMP(dir, "rt");
    void          *data[N];
    char           names[N][64], scale_name[96];
    sg_dtype       dt[N];
    int64_t        shape[N][3];
    int            ndim[N], bad = 0;
    sg_checkpoint *ck = NULL;
    int64_t        total;
    const sg_dtype kinds[] = { SG_F32, SG_BF16, SG_I32, SG_I64, SG_F8_E4M3 };

    mkdir(dir, 0700);
    for (int i = 0; i < N; i++) {
        size_t n = 1;

        dt[i] = kinds[check_rand32() % 5];
        ndim[i] = dt[i] == SG_F8_E4M3 ? 2 : 1 + check_rand32() % 3;
        for (int d = 0; d < ndim[i]; d++) {
            shape[i][d] = 1 + check_rand32() % (ndim[i] == 3 ? 40 : 300);
            n *= shape[i][d];
        }
        n *= sg_dtype_size(dt[i]);
        data[i] = malloc(n);
        for (size_t b = 0; b < n; b++)
            ((uint8_t *)data[i])[b] = (uint8_t)check_rand32();
        if (dt[i] == SG_F8_E4M3) {
            /* Scales must be F32 [ceil(r/128), ceil(c/128)]. */
            int64_t s[2] = { (shape[i][0] + 127) / 128,
                             (shape[i][1] + 127) / 128 };
            float   sc[9];

            for (int k = 0; k < 9; k++)
                sc[k] = check_randu(0.001f, 1.0f);
            snprintf(names[i], 64, "t%02d.weight", i);
            sg_st_add(w, names[i], dt[i], 2, shape[i], data[i]);
            snprintf(scale_name, sizeof(scale_name), "%s_scale_inv",
                     names[i]);
            sg_st_add(w, scale_name, SG_F32, 2, s, sc);
        } else {
            snprintf(names[i], 64, "t%02d", i);
            sg_st_add(w, names[i], dt[i], ndim[i], shape[i], data[i]);
        }
    }
    total = sg_st_write(w, dir, 3, err, sizeof(err));
    CHECK(total > 0, "writer_writes_3_shards", "%s", err);
    if (total > 0 && sg_checkpoint_open(dir, &ck, err, sizeof(err)) == 0) {
        for (int i = 0; i < N; i++) {
            const sg_tensor *t = sg_checkpoint_find(ck, names[i]);
            size_t n = sg_dtype_size(dt[i]);

            for (int d = 0; d < ndim[i]; d++)
                n *= shape[i][d];
            if (t == NULL || t->dtype != dt[i] || t->ndim != ndim[i]
                || memcmp(t->data, data[i], n) != 0
                || (dt[i] == SG_F8_E4M3) != (t->scale != NULL))
            {
                bad++;
            }
        }
        CHECK(bad == 0 && sg_checkpoint_find(ck, "nope") == NULL,
              "writer_roundtrip_bytes", "%d of %d tensors differ", bad, N);
        sg_checkpoint_close(ck);
    } else {
        CHECK(0, "writer_roundtrip_bytes", "%s", err);
    }

    /* Without the index every *.safetensors file of the directory loads. */
    unlink(tmp_path("rt/model.safetensors.index.json"));
    ck = NULL;
    if (sg_checkpoint_open(dir, &ck, err, sizeof(err)) == 0) {
        const sg_tensor *t = sg_checkpoint_find(ck, names[N - 1]);

        CHECK(t != NULL, "writer_roundtrip_without_index", "tensor lost");
        sg_checkpoint_close(ck);
    } else {
        CHECK(0, "writer_roundtrip_without_index", "%s", err);
    }
    for (int i = 0; i < N; i++)
        free(data[i]);
    sg_st_writer_free(w);
}

/* A producer that writes `*ctx` bytes (of a 64-byte tensor). */
static int
fill_n(void *ctx, sg_st_sink *sink)
{
    static const uint8_t zeros[128];

    return sg_st_sink_write(sink, zeros, *(size_t *)ctx);
}

static void
test_writer_errors(void)
{
    TMP(dir, "werr");
    TMP(file, "werr/model.safetensors");
    int64_t      shape[1] = { 16 };
    float        v[16] = { 0 };
    size_t       sizes[2] = { 60, 68 };
    const char  *names[2] = { "writer_short_producer", "writer_long_producer" };
    sg_st_writer *w = sg_st_writer_new();
    int64_t      rc;

    mkdir(dir, 0700);
    sg_st_add(w, "a", SG_F32, 1, shape, v);
    sg_st_add(w, "a", SG_F32, 1, shape, v);
    rc = sg_st_write(w, dir, 1, err, sizeof(err));
    CHECK(rc == -1 && strstr(err, "'a' added twice"), "writer_duplicate_name",
          "rc %lld: %s", (long long)rc, err);
    sg_st_writer_free(w);
    for (int k = 0; k < 2; k++) {
        w = sg_st_writer_new();
        sg_st_add(w, "fine", SG_F32, 1, shape, v);
        sg_st_add_stream(w, "streamed", SG_F32, 1, shape, fill_n, &sizes[k]);
        rc = sg_st_write(w, dir, 1, err, sizeof(err));
        CHECK(rc == -1 && strstr(err, "'streamed'")
              && access(file, F_OK) != 0, names[k], "rc %lld: %s",
              (long long)rc, err);
        sg_st_writer_free(w);
    }
}

/* A hand-made file whose F32 tensor sits at an odd offset loads with an
 * aligned copy holding the same value. */
static void
test_misaligned(void)
{
    TMP(dir, "mis");
    TMP(file, "mis/model.safetensors");
    uint8_t        data[6] = { 0x80, 0x3f };   /* bf16 1.0 */
    float          x = check_randn();
    sg_checkpoint *ck = NULL;
    const sg_tensor *t;

    memcpy(data + 2, &x, 4);
    mkdir(dir, 0700);
    st_write_raw(file, "{\"b\":{\"dtype\":\"BF16\",\"shape\":[1],"
                 "\"data_offsets\":[0,2]},\"f\":{\"dtype\":\"F32\","
                 "\"shape\":[1],\"data_offsets\":[2,6]}}", data, 6, 0);
    if (sg_checkpoint_open(dir, &ck, err, sizeof(err)) != 0) {
        CHECK(0, "misaligned_tensor_copied", "%s", err);
        return;
    }
    t = sg_checkpoint_find(ck, "f");
    CHECK(t && (uintptr_t)t->data % 4 == 0 && *(const float *)t->data == x
          && sg_bf16_to_f32(*(const uint16_t *)sg_checkpoint_find(ck, "b")
                                ->data) == 1.0f,
          "misaligned_tensor_copied", "wrong value or alignment");
    sg_checkpoint_close(ck);
}

/* ---- mkmodel round trip ------------------------------------------------ */

/* ue8m0 scale rule, written out independently of mkmodel. */
static float
expected_scale(float amax)
{
    float s = fmaxf(amax, 1e-4f) / 448.0f, p = 1.0f;

    while (p < s)
        p *= 2;
    while (p / 2 >= s)
        p /= 2;
    return p;
}

/* Every e4m3 byte of q is the bf16 value of ref quantized with the block's
 * power-of-two scale. */
static int
fp8_is_quantized_bf16(const sg_tensor *q, const sg_tensor *ref)
{
    int64_t R = sg_tensor_rows(q), C = sg_tensor_cols(q);

    for (int64_t rb = 0; rb < (R + 127) / 128; rb++) {
        for (int64_t cb = 0; cb < q->scale_cols; cb++) {
            float amax = 0, s;

            for (int64_t r = rb * 128; r < R && r < rb * 128 + 128; r++)
                for (int64_t c = cb * 128; c < C && c < cb * 128 + 128; c++)
                    amax = fmaxf(amax, (float)fabs(tensor_value(ref, r, c)));
            s = expected_scale(amax);
            if (q->scale[rb * q->scale_cols + cb] != s)
                return 0;
            for (int64_t r = rb * 128; r < R && r < rb * 128 + 128; r++) {
                for (int64_t c = cb * 128; c < C && c < cb * 128 + 128; c++) {
                    uint8_t b = ((const uint8_t *)q->data)[r * C + c];

                    if (b != sg_f32_to_e4m3(tensor_value(ref, r, c) / s))
                        return 0;
                }
            }
        }
    }
    return 1;
}

/*
 * Every tensor named in dir's index holds exactly what mkmodel generated
 * for it: bf16/F32 values bit for bit, e4m3 ones as those values quantized
 * with the block's power-of-two scale.  Returns the tensors that differ.
 */
static int
values_match(const char *dir, const sg_checkpoint *ck, const sg_config *c,
    uint64_t seed, int *checked, char *why, size_t whylen)
{
    char         path[600];
    size_t       len;
    char        *text;
    cJSON       *j;
    const cJSON *it;
    int64_t      cap = 1 << 20;
    float       *v = malloc(sizeof(float) * cap);
    int          bad = 0;

    snprintf(path, sizeof(path), "%s/model.safetensors.index.json", dir);
    text = check_read_file(path, &len);
    j = text ? cJSON_ParseWithLength(text, len) : NULL;
    *checked = 0;
    cJSON_ArrayForEach(it, cJSON_GetObjectItem(j, "weight_map")) {
        const sg_tensor *t = sg_checkpoint_find(ck, it->string);
        int64_t          n, cols, i;

        if (strstr(it->string, "_scale_inv"))
            continue;
        n = sg_mkmodel_values(c, seed, it->string, v, cap);
        (*checked)++;
        if (t == NULL || n != sg_tensor_rows(t) * sg_tensor_cols(t)) {
            if (!bad++)
                snprintf(why, whylen, "%s: size differs", it->string);
            continue;
        }
        cols = sg_tensor_cols(t);
        for (i = 0; i < n; i++) {
            int64_t r = i / cols, k = i % cols;

            if (t->dtype == SG_F8_E4M3) {
                float s = t->scale[(r / 128) * t->scale_cols + k / 128];

                if (((const uint8_t *)t->data)[i] != sg_f32_to_e4m3(v[i] / s))
                    break;
            } else if (tensor_value(t, r, k) != v[i]) {
                break;
            }
        }
        if (i < n && !bad++)
            snprintf(why, whylen, "%s: element %lld differs", it->string,
                     (long long)i);
    }
    cJSON_Delete(j);
    free(text);
    free(v);
    return bad;
}

static void
moments(const sg_tensor *t, double *mean, double *sd)
{
    int64_t n = sg_tensor_rows(t) * sg_tensor_cols(t);
    double  s = 0, s2 = 0;

    for (int64_t i = 0; i < n; i++) {
        double v = tensor_value(t, i / sg_tensor_cols(t),
                                i % sg_tensor_cols(t));

        s += v;
        s2 += v * v;
    }
    *mean = s / n;
    *sd = sqrt(s2 / n - *mean * *mean);
}

static void
test_mkmodel_roundtrip(void)
{
    TMP(db, "mk_bf16");
    TMP(df, "mk_fp8");
    TMP(d1, "mk_bf16_one");
    uint64_t       seed = check_rand32();
    sg_config      cb, cf, c1;
    sg_checkpoint *kb = NULL, *kf = NULL, *k1 = NULL;
    sg_weights     wb, wf, w1;
    double         m, sd;

    if (make_tiny(db, 0, seed, 3) != 0 || make_tiny(df, 1, seed, 3) != 0
        || make_tiny(d1, 0, seed, 1) != 0)
    {
        CHECK(0, "mkmodel_writes", "%s", err);
        return;
    }
    CHECK(access(tmp_path("mk_fp8/model-00003-of-00003.safetensors"), R_OK)
          == 0 && access(tmp_path("mk_bf16/model.safetensors.index.json"),
                         R_OK) == 0,
          "mkmodel_writes", "shard files missing");
    if (load_all(db, &cb, &kb, &wb) != 0 || load_all(df, &cf, &kf, &wf) != 0
        || load_all(d1, &c1, &k1, &w1) != 0)
    {
        CHECK(0, "mkmodel_roundtrip_loads", "%s", err);
        goto out;
    }
    CHECK(cb.hidden_size == 256 && cf.fp8 && !cb.fp8
          && fabs(cf.softmax_scale - 0.114593459) < 1e-9,
          "mkmodel_roundtrip_loads", "config differs");

    /* Same seed, one file or three: identical weights. */
    CHECK(memcmp(wb.layers[2].experts[9].up.data,
                 w1.layers[2].experts[9].up.data, 128 * 256 * 2) == 0
          && memcmp(wb.embed.data, w1.embed.data, 1024 * 256 * 2) == 0,
          "mkmodel_deterministic", "same seed, different bytes");

    /* Every tensor holds what mkmodel generated, through 3 shards. */
    {
        char why[300] = "";
        int  nb, nf, bb = values_match(db, kb, &cb, seed, &nb, why,
                                       sizeof(why));
        int  bf = values_match(df, kf, &cf, seed, &nf, why, sizeof(why));

        CHECK(bb == 0 && bf == 0 && nb == 154 && nf == 154,
              "mkmodel_values_roundtrip", "bf16 %d/%d, fp8 %d/%d differ: %s",
              bb, nb, bf, nf, why);
    }
    /* What was written: fp8 = block quantization of the bf16 weights. */
    {
        const sg_layer_weights *lf = &wf.layers[1], *lb = &wb.layers[1];
        int ok = fp8_is_quantized_bf16(&lf->q_b, &lb->q_b)
                 && fp8_is_quantized_bf16(&lf->kv_a, &lb->kv_a)
                 && fp8_is_quantized_bf16(&lf->experts[5].down,
                                          &lb->experts[5].down)
                 && fp8_is_quantized_bf16(&wf.layers[0].mlp.gate,
                                          &wb.layers[0].mlp.gate);

        CHECK(ok && lf->idx_weights_proj.dtype == SG_BF16
              && lf->gate_bias.dtype == SG_F32,
              "mkmodel_fp8_is_block_quantized_bf16", "an fp8 block differs");
    }
    /* Init statistics per kind (the fixture's build_info stds). */
    moments(&wb.layers[1].q_a, &m, &sd);
    CHECK(fabs(m) < 0.005 && fabs(sd - 0.06) < 0.003, "mkmodel_std_q_a",
          "mean %g sd %g", m, sd);
    moments(&wb.layers[0].mlp.down, &m, &sd);
    CHECK(fabs(sd - 0.04) < 0.002, "mkmodel_std_mlp_down", "sd %g", sd);
    moments(&wb.embed, &m, &sd);
    CHECK(fabs(m) < 0.02 && fabs(sd - 1.0) < 0.02, "mkmodel_std_embed",
          "mean %g sd %g", m, sd);
    moments(&wb.layers[2].attn_norm, &m, &sd);
    CHECK(fabs(m - 1.0) < 0.03 && fabs(sd - 0.1) < 0.02,
          "mkmodel_norm_around_one", "mean %g sd %g", m, sd);
out:
    if (kb)
        unload(kb, &wb);
    if (kf)
        unload(kf, &wf);
    if (k1)
        unload(k1, &w1);
}

/* ---- broken checkpoints ------------------------------------------------ */

#define KVB "model.layers.1.self_attn.kv_b_proj.weight"
#define NORM0 "model.layers.0.input_layernorm.weight"

/*
 * The broken checkpoints start from a smaller model (same attention shapes
 * as tiny, fewer experts, vocabulary and indexer heads) written once per
 * dtype into bad_src{0,1}; each test writes an edited copy into bad/.
 */
static const char *small_sets[] = {
    "vocab_size=128", "n_routed_experts=4", "n_group=2", "topk_group=1",
    "num_experts_per_tok=2", "index_n_heads=4",
};

static int
make_sources(void)
{
    sg_mkmodel_opts o;
    char            src[64];

    for (int fp8 = 0; fp8 < 2; fp8++) {
        memset(&o, 0, sizeof(o));
        snprintf(src, sizeof(src), "bad_src%d", fp8);
        o.out_dir = tmp_path(src);
        o.preset = "tiny";
        o.sets = small_sets;
        o.n_sets = sizeof(small_sets) / sizeof(small_sets[0]);
        o.fp8 = fp8;
        o.seed = 7;
        if (sg_mkmodel(&o, err, sizeof(err)) != 0)
            return -1;
    }
    return 0;
}

static void
copy_text(const char *from, const char *to)
{
    size_t n;
    char  *s = check_read_file(from, &n);
    FILE  *o = fopen(to, "wb");

    if (s && o)
        fwrite(s, 1, n, o);
    if (o)
        fclose(o);
    free(s);
}

/* bad/ with the source's config.json and no index; f = its model file. */
static int
fresh(const char *dir, int fp8, st_file *f)
{
    char from[64];

    check_rm_rf(dir);
    mkdir(dir, 0700);
    snprintf(from, sizeof(from), "bad_src%d/config.json", fp8);
    copy_text(tmp_path(from), tmp_path("bad/config.json"));
    snprintf(from, sizeof(from), "bad_src%d/model.safetensors", fp8);
    return st_read(tmp_path(from), f);
}

/* Opens and binds dir (config from dir): the rc of the first failure. */
static int
try_load(const char *dir)
{
    sg_config      cfg;
    sg_checkpoint *ck;
    sg_weights     w;

    if (load_all(dir, &cfg, &ck, &w) != 0)
        return -1;
    unload(ck, &w);
    return 0;
}

static void
edit_and_expect(const char *test, int fp8, void (*edit)(st_file *f),
    const char *what)
{
    TMP(dir, "bad");
    TMP(st, "bad/model.safetensors");
    st_file f;

    if (fresh(dir, fp8, &f) != 0) {
        CHECK(0, test, "setup failed");
        return;
    }
    edit(&f);
    st_write(st, &f);
    st_free(&f);
    expect_error(test, try_load(dir), "model.safetensors", what);
}

static void
drop_kvb(st_file *f)
{
    cJSON_DeleteItemFromObjectCaseSensitive(f->hdr, KVB);
}

static void
reshape_kvb(st_file *f)
{
    int64_t s[2] = { 256, 256 };      /* same bytes, expected [512, 128] */

    set_ints(cJSON_GetObjectItem(f->hdr, KVB), "shape", 2, s);
}

static void
retype_norm(st_file *f)
{
    cJSON  *t = cJSON_GetObjectItem(f->hdr, NORM0);
    int64_t s[1] = { 128 };           /* BF16 [256] -> I32 [128] */

    cJSON_ReplaceItemInObjectCaseSensitive(t, "dtype",
                                           cJSON_CreateString("I32"));
    set_ints(t, "shape", 1, s);
}

static void
offsets_past_end(st_file *f)
{
    cJSON  *t = cJSON_GetObjectItem(f->hdr, KVB);
    int64_t o[2] = { json_at(t, "data_offsets", 0) + (int64_t)f->len,
                     json_at(t, "data_offsets", 1) + (int64_t)f->len };

    set_ints(t, "data_offsets", 2, o);
}

static void
overlap(st_file *f)
{
    /* kv_b of layer 2 takes kv_b of layer 1's bytes plus 2 (same size). */
    cJSON  *a = cJSON_GetObjectItem(f->hdr, KVB);
    cJSON  *b = cJSON_GetObjectItem(
        f->hdr, "model.layers.2.self_attn.kv_b_proj.weight");
    int64_t o[2] = { json_at(a, "data_offsets", 0) + 2,
                     json_at(a, "data_offsets", 1) + 2 };

    set_ints(b, "data_offsets", 2, o);
}

static void
size_mismatch(st_file *f)
{
    int64_t s[1] = { 255 };

    set_ints(cJSON_GetObjectItem(f->hdr, NORM0), "shape", 1, s);
}

static void
drop_scale(st_file *f)
{
    cJSON_DeleteItemFromObjectCaseSensitive(f->hdr, KVB "_scale_inv");
}

static void
reshape_scale(st_file *f)
{
    cJSON  *t = cJSON_GetObjectItem(f->hdr, KVB "_scale_inv");
    int64_t s[2] = { 1, 1 };          /* expected [4, 1] */
    int64_t o[2] = { json_at(t, "data_offsets", 0),
                     json_at(t, "data_offsets", 0) + 4 };

    set_ints(t, "shape", 2, s);
    set_ints(t, "data_offsets", 2, o);
}

static void
unknown_dtype(st_file *f)
{
    cJSON_ReplaceItemInObjectCaseSensitive(cJSON_GetObjectItem(f->hdr, NORM0),
                                           "dtype", cJSON_CreateString("F16"));
}

static void
test_bad_checkpoints(void)
{
    TMP(dir, "bad");
    TMP(st, "bad/model.safetensors");
    st_file f;

    if (make_sources() != 0) {
        CHECK(0, "bad_setup", "%s", err);
        return;
    }
    edit_and_expect("bad_missing_tensor", 0, drop_kvb, KVB);
    edit_and_expect("bad_wrong_shape", 0, reshape_kvb, "expected [512, 128]");
    edit_and_expect("bad_wrong_shape_names_tensor", 0, reshape_kvb, KVB);
    edit_and_expect("bad_wrong_dtype", 0, retype_norm, NORM0);
    edit_and_expect("bad_unknown_dtype", 0, unknown_dtype, "F16");
    edit_and_expect("bad_offsets_past_end", 0, offsets_past_end, KVB);
    edit_and_expect("bad_overlapping_offsets", 0, overlap, KVB);
    edit_and_expect("bad_shape_offset_size_mismatch", 0, size_mismatch,
                    NORM0);
    edit_and_expect("bad_fp8_without_scale", 1, drop_scale, KVB);
    edit_and_expect("bad_fp8_misshaped_scale", 1, reshape_scale,
                    KVB "_scale_inv");

    /* Truncated file: the last tensor's bytes are gone. */
    if (fresh(dir, 0, &f) == 0) {
        f.len -= 1000;
        st_write(st, &f);
        st_free(&f);
        expect_error("bad_truncated_file", try_load(dir), "model.safetensors",
                     "past the end");
    }
    /* Header length larger than the file. */
    if (fresh(dir, 0, &f) == 0) {
        char *s = cJSON_PrintUnformatted(f.hdr);

        st_write_raw(st, s, f.data, f.len, 8 + strlen(s) + f.len + 1);
        free(s);
        st_free(&f);
        expect_error("bad_header_length", try_load(dir), "model.safetensors",
                     "header length");
    }
    /* Malformed header JSON (cut in the middle). */
    if (fresh(dir, 0, &f) == 0) {
        char *s = cJSON_PrintUnformatted(f.hdr);

        s[strlen(s) / 2] = '\0';
        st_write_raw(st, s, f.data, f.len, 0);
        free(s);
        st_free(&f);
        expect_error("bad_header_json", try_load(dir), "model.safetensors",
                     "JSON");
    }
    /* A file shorter than the 8-byte length field. */
    if (fresh(dir, 0, &f) == 0) {
        FILE *o = fopen(st, "wb");

        st_free(&f);
        fwrite("abc", 1, 3, o);
        fclose(o);
        expect_error("bad_tiny_file", try_load(dir), "model.safetensors",
                     "too short");
    }
}

/* The index names a file that is not there / a file without the tensor. */
static void
test_bad_index(void)
{
    TMP(dir, "badidx");
    TMP(ip, "badidx/model.safetensors.index.json");
    size_t      n;
    char       *text;
    cJSON      *j, *map;
    FILE       *o;

    for (int which = 0; which < 2; which++) {
        check_rm_rf(dir);
        if (make_tiny(dir, 0, 3, 2) != 0) {
            CHECK(0, "bad_index_setup", "%s", err);
            return;
        }
        text = check_read_file(ip, &n);
        j = cJSON_ParseWithLength(text, n);
        map = cJSON_GetObjectItem(j, "weight_map");
        cJSON_ReplaceItemInObjectCaseSensitive(
            map, KVB, cJSON_CreateString(which ? "model-00002-of-00002."
                                                 "safetensors"
                                               : "model-00009.safetensors"));
        free(text);
        text = cJSON_Print(j);
        o = fopen(ip, "w");
        fputs(text, o);
        fclose(o);
        free(text);
        cJSON_Delete(j);
        if (which == 0) {
            expect_error("bad_index_missing_file", try_load(dir),
                         "model-00009.safetensors", "index");
        } else {
            /* kv_b of layer 1 sits in the first shard. */
            expect_error("bad_index_wrong_file", try_load(dir),
                         "model-00002-of-00002.safetensors", KVB);
        }
    }
}

int
main(void)
{
    check_seed_from_env();
    sg_fp8_init();
    if (mkdtemp(tmp_root) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    test_fixtures();
    test_writer_roundtrip();
    test_writer_errors();
    test_misaligned();
    test_mkmodel_roundtrip();
    test_bad_checkpoints();
    test_bad_index();
    check_rm_rf(tmp_root);
    return check_finish();
}
