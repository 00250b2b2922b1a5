/*
 * The config.json of a random model: a preset (or a given config.json),
 * "key=value" overrides, and the FP8 quantization_config.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "mkmodel.h"
#include "util/err.h"
#include "util/file.h"

const char *const sg_mkmodel_presets[] = { "tiny", "small", "v32-attn", NULL };

typedef struct {
    const char *key;
    double      tiny, small, v32attn;
} preset_num;

/* Integer and float fields, per preset.  tiny = the shared fixture; small
 * = a demo model that runs fast on two CPU cores with the real tokenizer's
 * vocabulary; v32-attn = DeepSeek-V3.2's real attention and indexer shapes
 * with a shrunken MoE. */
static const preset_num nums[] = {
    { "bos_token_id",            0,      0,      0 },
    { "eos_token_id",            1,      1,      1 },
    { "first_k_dense_replace",   1,      1,      1 },
    { "hidden_size",             256,    512,    7168 },
    { "index_head_dim",          128,    128,    128 },
    { "index_n_heads",           16,     8,      64 },
    { "index_topk",              32,     2048,   2048 },
    { "initializer_range",       0.02,   0.02,   0.02 },
    { "intermediate_size",       512,    1024,   2048 },
    { "kv_lora_rank",            128,    256,    512 },
    { "max_position_embeddings", 512,    131072, 163840 },
    { "moe_intermediate_size",   128,    256,    256 },
    { "n_group",                 4,      4,      1 },
    { "n_routed_experts",        16,     16,     8 },
    { "n_shared_experts",        1,      1,      1 },
    { "num_attention_heads",     4,      8,      128 },
    { "num_experts_per_tok",     4,      4,      2 },
    { "num_hidden_layers",       3,      4,      2 },
    { "q_lora_rank",             128,    256,    1536 },
    { "qk_nope_head_dim",        64,     64,     128 },
    { "qk_rope_head_dim",        64,     32,     64 },
    { "rms_norm_eps",            1e-6,   1e-6,   1e-6 },
    { "rope_theta",              10000,  10000,  10000 },
    { "routed_scaling_factor",   2.5,    2.5,    2.5 },
    { "topk_group",              2,      2,      1 },
    { "v_head_dim",              64,     64,     128 },
    { "vocab_size",              1024,   129280, 1024 },
};

static const preset_num rope_nums[] = {
    { "beta_fast",                        32,  32,   32 },
    { "beta_slow",                        1,   1,    1 },
    { "factor",                           4,   40,   40 },
    { "mscale",                           1,   1,    1 },
    { "mscale_all_dim",                   1,   1,    1 },
    { "original_max_position_embeddings", 128, 4096, 4096 },
};

static const char *const strs[][2] = {
    { "hidden_act", "silu" },
    { "model_type", "deepseek_v32" },
    { "scoring_func", "sigmoid" },
    { "topk_method", "noaux_tc" },
    { "torch_dtype", "bfloat16" },
    { "transformers_version", "4.44.2" },
};

static double
pick(const preset_num *p, int which)
{
    return which == 0 ? p->tiny : which == 1 ? p->small : p->v32attn;
}

static cJSON *
preset_config(int which)
{
    cJSON *c = cJSON_CreateObject(), *rs, *arch;

    if (c == NULL)
        return NULL;
    for (size_t i = 0; i < sizeof(nums) / sizeof(nums[0]); i++)
        cJSON_AddNumberToObject(c, nums[i].key, pick(&nums[i], which));
    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
        cJSON_AddStringToObject(c, strs[i][0], strs[i][1]);
    arch = cJSON_AddArrayToObject(c, "architectures");
    if (arch)
        cJSON_AddItemToArray(arch,
                             cJSON_CreateString("DeepseekV32ForCausalLM"));
    cJSON_AddFalseToObject(c, "attention_bias");
    cJSON_AddNumberToObject(c, "attention_dropout", 0.0);
    cJSON_AddNumberToObject(c, "ep_size", 1);
    cJSON_AddNumberToObject(c, "moe_layer_freq", 1);
    cJSON_AddTrueToObject(c, "norm_topk_prob");
    cJSON_AddNumberToObject(c, "num_key_value_heads",
                            cJSON_GetNumberValue(cJSON_GetObjectItem(
                                c, "num_attention_heads")));
    cJSON_AddNumberToObject(c, "num_nextn_predict_layers", 0);
    cJSON_AddFalseToObject(c, "tie_word_embeddings");
    cJSON_AddTrueToObject(c, "use_cache");
    rs = cJSON_AddObjectToObject(c, "rope_scaling");
    if (rs) {
        for (size_t i = 0; i < sizeof(rope_nums) / sizeof(rope_nums[0]); i++)
            cJSON_AddNumberToObject(rs, rope_nums[i].key,
                                    pick(&rope_nums[i], which));
        cJSON_AddStringToObject(rs, "type", "yarn");
    }
    return c;
}

static cJSON *
load_json(const char *path, char *err, int errlen)
{
    size_t n;
    char  *buf = sg_read_file(path, (size_t)64 << 20, &n);
    cJSON *j;

    if (buf == NULL) {
        sg_err(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    j = cJSON_ParseWithLength(buf, n);
    free(buf);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        sg_err(err, errlen, "%s: not a JSON object", path);
        return NULL;
    }
    return j;
}

/* "true", "false", "null", a number, else a string. */
static cJSON *
parse_value(const char *v)
{
    char  *end;
    double d;

    if (strcmp(v, "true") == 0)
        return cJSON_CreateTrue();
    if (strcmp(v, "false") == 0)
        return cJSON_CreateFalse();
    if (strcmp(v, "null") == 0)
        return cJSON_CreateNull();
    errno = 0;
    d = strtod(v, &end);
    if (*v && *end == '\0' && errno == 0)
        return cJSON_CreateNumber(d);
    return cJSON_CreateString(v);
}

/* key=value, "a.b=value" for nested objects; the field must exist. */
static int
apply_set(cJSON *c, const char *set, char *err, int errlen)
{
    char       *s = strdup(set), *eq, *key, *dot;
    cJSON      *obj = c, *val;
    int         rc = 0;

    if (s == NULL)
        return sg_err(err, errlen, "out of memory");
    eq = strchr(s, '=');
    if (eq == NULL || eq == s) {
        free(s);
        return sg_err(err, errlen, "--set '%s': expected key=value", set);
    }
    *eq = '\0';
    key = s;
    while ((dot = strchr(key, '.')) != NULL) {
        *dot = '\0';
        obj = cJSON_GetObjectItemCaseSensitive(obj, key);
        if (!cJSON_IsObject(obj)) {
            rc = sg_err(err, errlen, "--set '%s': '%s' is not an object of "
                        "the config", set, key);
            goto out;
        }
        key = dot + 1;
    }
    if (!cJSON_HasObjectItem(obj, key)) {
        rc = sg_err(err, errlen, "--set '%s': the config has no field '%s'",
                    set, key);
        goto out;
    }
    val = parse_value(eq + 1);
    if (val == NULL || !cJSON_ReplaceItemInObjectCaseSensitive(obj, key, val)) {
        cJSON_Delete(val);
        rc = sg_err(err, errlen, "out of memory");
        goto out;
    }
    /* Keep the MHA-view head count in step (Hugging Face reads it). */
    if (obj == c && strcmp(key, "num_attention_heads") == 0
        && cJSON_HasObjectItem(c, "num_key_value_heads"))
    {
        cJSON_ReplaceItemInObjectCaseSensitive(c, "num_key_value_heads",
                                               parse_value(eq + 1));
    }
out:
    free(s);
    return rc;
}

static int
cmp_child(const void *a, const void *b)
{
    return strcmp((*(cJSON *const *)a)->string, (*(cJSON *const *)b)->string);
}

/* Keys in sorted order, as Hugging Face writes config.json. */
static void
sort_keys(cJSON *obj)
{
    int     n = cJSON_GetArraySize(obj), i = 0;
    cJSON **v, *it;

    if (n < 2 || (v = malloc(sizeof(cJSON *) * n)) == NULL)
        return;
    cJSON_ArrayForEach(it, obj) {
        v[i++] = it;
        if (cJSON_IsObject(it))
            sort_keys(it);
    }
    qsort(v, n, sizeof(cJSON *), cmp_child);
    for (i = 0; i < n; i++) {
        v[i]->prev = i ? v[i - 1] : v[n - 1];   /* cJSON: head->prev = tail */
        v[i]->next = i + 1 < n ? v[i + 1] : NULL;
    }
    obj->child = v[0];
    free(v);
}

static int
add_fp8(cJSON *c)
{
    cJSON *q = cJSON_CreateObject(), *bs;

    if (q == NULL)
        return -1;
    cJSON_AddStringToObject(q, "activation_scheme", "dynamic");
    cJSON_AddStringToObject(q, "fmt", "e4m3");
    cJSON_AddStringToObject(q, "quant_method", "fp8");
    cJSON_AddStringToObject(q, "scale_fmt", "ue8m0");
    bs = cJSON_AddArrayToObject(q, "weight_block_size");
    if (bs) {
        cJSON_AddItemToArray(bs, cJSON_CreateNumber(128));
        cJSON_AddItemToArray(bs, cJSON_CreateNumber(128));
    }
    cJSON_DeleteItemFromObjectCaseSensitive(c, "quantization_config");
    cJSON_AddItemToObject(c, "quantization_config", q);
    return 0;
}

cJSON *
sg_mkmodel_config(const sg_mkmodel_opts *o, char *err, int errlen)
{
    const char *preset = o->preset ? o->preset : "tiny";
    cJSON      *c = NULL;
    int         which = -1;

    if (o->config_path) {
        c = load_json(o->config_path, err, errlen);
        if (c == NULL)
            return NULL;
    } else {
        for (int i = 0; sg_mkmodel_presets[i]; i++) {
            if (strcmp(preset, sg_mkmodel_presets[i]) == 0)
                which = i;
        }
        if (which < 0) {
            sg_err(err, errlen, "unknown preset '%s' (tiny, small, v32-attn)",
                   preset);
            return NULL;
        }
        c = preset_config(which);
        if (c == NULL) {
            sg_err(err, errlen, "out of memory");
            return NULL;
        }
    }
    for (int i = 0; i < o->n_sets; i++) {
        if (apply_set(c, o->sets[i], err, errlen) != 0) {
            cJSON_Delete(c);
            return NULL;
        }
    }
    if (o->fp8 && add_fp8(c) != 0) {
        cJSON_Delete(c);
        sg_err(err, errlen, "out of memory");
        return NULL;
    }
    sort_keys(c);
    return c;
}
