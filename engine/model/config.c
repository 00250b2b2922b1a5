/*
 * config.json of a DeepSeek-V3.2 checkpoint (Hugging Face field names) into
 * sg_config, with the derived values and the consistency checks the engine
 * relies on.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "config.h"
#include "util/err.h"
#include "util/file.h"

typedef struct {
    const char *path;
    const char *section;        /* "" or "rope_scaling." etc. */
    char       *err;
    int         errlen;
    int         failed;
} cfg_reader;

static void
fail(cfg_reader *r, const char *fmt, ...)
{
    va_list ap;
    int     n;

    if (r->failed)
        return;
    r->failed = 1;
    n = snprintf(r->err, r->errlen, "%s: ", r->path);
    if (n < 0 || n >= r->errlen)
        return;
    va_start(ap, fmt);
    vsnprintf(r->err + n, r->errlen - n, fmt, ap);
    va_end(ap);
}

/* The item, or NULL; a missing required field is reported. */
static const cJSON *
field(cfg_reader *r, const cJSON *obj, const char *name, int required)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);

    if ((it == NULL || cJSON_IsNull(it)) && required)
        fail(r, "field '%s%s' missing", r->section, name);
    return cJSON_IsNull(it) ? NULL : it;
}

static void
get_int(cfg_reader *r, const cJSON *obj, const char *name, int required,
    int def, int *out)
{
    const cJSON *it = field(r, obj, name, required);
    double       v;

    *out = def;
    if (it == NULL)
        return;
    v = cJSON_IsNumber(it) ? it->valuedouble : NAN;
    if (!cJSON_IsNumber(it) || v != floor(v) || fabs(v) > 2147483647.0) {
        fail(r, "field '%s%s' must be an integer", r->section, name);
        return;
    }
    *out = (int)v;
}

static void
get_num(cfg_reader *r, const cJSON *obj, const char *name, int required,
    double def, double *out)
{
    const cJSON *it = field(r, obj, name, required);

    *out = def;
    if (it == NULL)
        return;
    if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble)) {
        fail(r, "field '%s%s' must be a number", r->section, name);
        return;
    }
    *out = it->valuedouble;
}

static void
get_bool(cfg_reader *r, const cJSON *obj, const char *name, int required,
    int def, int *out)
{
    const cJSON *it = field(r, obj, name, required);

    *out = def;
    if (it == NULL)
        return;
    if (!cJSON_IsBool(it)) {
        fail(r, "field '%s%s' must be true or false", r->section, name);
        return;
    }
    *out = cJSON_IsTrue(it);
}

/* A string field, or def when absent. */
static const char *
get_str(cfg_reader *r, const cJSON *obj, const char *name, int required,
    const char *def)
{
    const cJSON *it = field(r, obj, name, required);

    if (it == NULL)
        return def;
    if (!cJSON_IsString(it)) {
        fail(r, "field '%s%s' must be a string", r->section, name);
        return def;
    }
    return it->valuestring;
}

/* eos_token_id may be a list in HF configs; the first one is ours. */
static void
get_token_id(cfg_reader *r, const cJSON *obj, const char *name, int *out)
{
    const cJSON *it = field(r, obj, name, 0);

    if (it && cJSON_IsArray(it)) {
        const cJSON *first = cJSON_GetArrayItem(it, 0);

        if (first == NULL) {
            *out = -1;
            return;
        }
        if (!cJSON_IsNumber(first) || first->valuedouble < 0) {
            fail(r, "field '%s' must hold token ids", name);
            return;
        }
        *out = (int)first->valuedouble;
        return;
    }
    get_int(r, obj, name, 0, -1, out);
}

static void
read_rope_scaling(cfg_reader *r, const cJSON *root, sg_config *c)
{
    const cJSON *rs = field(r, root, "rope_scaling", 0);
    const char  *type;
    double       orig;

    c->yarn_enabled = 0;
    if (rs == NULL)
        return;
    if (!cJSON_IsObject(rs)) {
        fail(r, "field 'rope_scaling' must be an object or null");
        return;
    }
    r->section = "rope_scaling.";
    type = get_str(r, rs, "type", 0, NULL);
    if (type == NULL)
        type = get_str(r, rs, "rope_type", 0, NULL);
    if (type == NULL) {
        fail(r, "field 'rope_scaling.type' missing");
    } else if (strcmp(type, "yarn") != 0) {
        fail(r, "field 'rope_scaling.type' is '%s'; only 'yarn' is "
             "supported", type);
    }
    get_num(r, rs, "factor", 1, 1, &c->yarn_factor);
    get_num(r, rs, "original_max_position_embeddings", 1, 0, &orig);
    if (!r->failed && (orig != floor(orig) || orig < 1 || orig > 2147483647.0))
        fail(r, "field 'rope_scaling.original_max_position_embeddings' "
             "must be a positive integer");
    c->yarn_original_max_position_embeddings = (int)orig;
    /* Defaults as in Hugging Face's DeepseekV3 code. */
    get_num(r, rs, "beta_fast", 0, 32, &c->yarn_beta_fast);
    get_num(r, rs, "beta_slow", 0, 1, &c->yarn_beta_slow);
    get_num(r, rs, "mscale", 0, 1, &c->yarn_mscale);
    get_num(r, rs, "mscale_all_dim", 0, 0, &c->yarn_mscale_all_dim);
    r->section = "";
    c->yarn_enabled = 1;
}

static void
read_quantization(cfg_reader *r, const cJSON *root, sg_config *c)
{
    const cJSON *q = field(r, root, "quantization_config", 0);
    const cJSON *bs;
    const char  *s;

    c->fp8 = 0;
    c->scale_ue8m0 = 1;      /* the indexer and FP8 KV use ue8m0 anyway */
    c->weight_block_size = 128;
    if (q == NULL)
        return;
    if (!cJSON_IsObject(q)) {
        fail(r, "field 'quantization_config' must be an object");
        return;
    }
    r->section = "quantization_config.";
    s = get_str(r, q, "quant_method", 1, "");
    if (!r->failed && strcmp(s, "fp8") != 0)
        fail(r, "field 'quantization_config.quant_method' is '%s'; only "
             "'fp8' is supported", s);
    s = get_str(r, q, "fmt", 0, "e4m3");
    if (!r->failed && strcmp(s, "e4m3") != 0)
        fail(r, "field 'quantization_config.fmt' is '%s'; only 'e4m3' is "
             "supported", s);
    bs = field(r, q, "weight_block_size", 0);
    if (bs && !r->failed) {
        const cJSON *a = cJSON_GetArrayItem(bs, 0);
        const cJSON *b = cJSON_GetArrayItem(bs, 1);

        if (!cJSON_IsArray(bs) || cJSON_GetArraySize(bs) != 2
            || !cJSON_IsNumber(a) || !cJSON_IsNumber(b)
            || a->valuedouble != 128 || b->valuedouble != 128)
        {
            fail(r, "field 'quantization_config.weight_block_size' must be "
                 "[128, 128]");
        }
    }
    /* An explicit null means per-block float scales (DeepSeek-V3). */
    if (cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(q, "scale_fmt"))) {
        c->scale_ue8m0 = 0;
    } else {
        s = get_str(r, q, "scale_fmt", 0, "ue8m0");
        if (!r->failed && strcmp(s, "ue8m0") != 0)
            fail(r, "field 'quantization_config.scale_fmt' is '%s'; only "
                 "'ue8m0' (or null) is supported", s);
    }
    r->section = "";
    c->fp8 = 1;
}

static void
read_fields(cfg_reader *r, const cJSON *root, sg_config *c)
{
    const char *s;
    double      d;
    int         tie;

    get_int(r, root, "vocab_size", 1, 0, &c->vocab_size);
    get_int(r, root, "hidden_size", 1, 0, &c->hidden_size);
    get_int(r, root, "intermediate_size", 1, 0, &c->intermediate_size);
    get_int(r, root, "moe_intermediate_size", 1, 0,
            &c->moe_intermediate_size);
    get_int(r, root, "num_hidden_layers", 1, 0, &c->num_hidden_layers);
    get_int(r, root, "first_k_dense_replace", 1, 0,
            &c->first_k_dense_replace);
    get_int(r, root, "num_attention_heads", 1, 0, &c->num_attention_heads);
    get_int(r, root, "q_lora_rank", 1, 0, &c->q_lora_rank);
    get_int(r, root, "kv_lora_rank", 1, 0, &c->kv_lora_rank);
    get_int(r, root, "qk_nope_head_dim", 1, 0, &c->qk_nope_head_dim);
    get_int(r, root, "qk_rope_head_dim", 1, 0, &c->qk_rope_head_dim);
    get_int(r, root, "v_head_dim", 1, 0, &c->v_head_dim);
    get_int(r, root, "n_routed_experts", 1, 0, &c->n_routed_experts);
    get_int(r, root, "n_shared_experts", 1, 0, &c->n_shared_experts);
    get_int(r, root, "num_experts_per_tok", 1, 0, &c->num_experts_per_tok);
    get_int(r, root, "n_group", 1, 0, &c->n_group);
    get_int(r, root, "topk_group", 1, 0, &c->topk_group);
    get_num(r, root, "routed_scaling_factor", 1, 1, &d);
    c->routed_scaling_factor = (float)d;
    s = get_str(r, root, "scoring_func", 0, "sigmoid");
    if (!r->failed && strcmp(s, "sigmoid") != 0)
        fail(r, "field 'scoring_func' is '%s'; DeepSeek-V3.2 needs "
             "'sigmoid'", s);
    get_bool(r, root, "norm_topk_prob", 1, 0, &c->norm_topk_prob);
    get_int(r, root, "index_n_heads", 1, 0, &c->index_n_heads);
    get_int(r, root, "index_head_dim", 1, 0, &c->index_head_dim);
    get_int(r, root, "index_topk", 1, 0, &c->index_topk);
    get_num(r, root, "rope_theta", 0, 10000, &c->rope_theta);
    get_int(r, root, "max_position_embeddings", 1, 0,
            &c->max_position_embeddings);
    get_num(r, root, "rms_norm_eps", 0, 1e-6, &d);
    c->rms_norm_eps = (float)d;
    get_token_id(r, root, "bos_token_id", &c->bos_token_id);
    get_token_id(r, root, "eos_token_id", &c->eos_token_id);
    get_bool(r, root, "tie_word_embeddings", 0, 0, &tie);
    if (!r->failed && tie)
        fail(r, "field 'tie_word_embeddings' is true; DeepSeek-V3.2 "
             "checkpoints have their own lm_head");
    read_rope_scaling(r, root, c);
    read_quantization(r, root, c);
}

int
sg_config_load(const char *path, sg_config *cfg, char *err, int errlen)
{
    cfg_reader r = { path, "", err, errlen, 0 };
    size_t     n;
    char      *buf;
    cJSON     *root = NULL;

    memset(cfg, 0, sizeof(*cfg));
    buf = sg_read_file(path, (size_t)64 << 20, &n);
    if (buf == NULL) {
        if (errno == EFBIG)
            return sg_err(err, errlen, "%s: over 64 MiB, too large for a "
                          "config", path);
        return sg_err(err, errlen, "%s: cannot read: %s", path,
                      strerror(errno));
    }
    root = cJSON_ParseWithLength(buf, n);
    if (root == NULL || !cJSON_IsObject(root)) {
        const char *at = cJSON_GetErrorPtr();

        snprintf(err, errlen, "%s: not a JSON object (error near byte %ld)",
                 path, root == NULL && at && at >= buf && at <= buf + n
                     ? (long)(at - buf) : 0L);
        cJSON_Delete(root);
        free(buf);
        return -1;
    }
    read_fields(&r, root, cfg);
    cJSON_Delete(root);
    free(buf);
    if (r.failed)
        return -1;
    /* Consistency errors name the file too. */
    if (sg_config_finish(cfg, err, errlen) != 0) {
        char tmp[512];

        snprintf(tmp, sizeof(tmp), "%s", err);
        snprintf(err, errlen, "%s: %s", path, tmp);
        return -1;
    }
    return 0;
}

static int
is_pow2(int v)
{
    return v > 0 && (v & (v - 1)) == 0;
}

#define REQUIRE(cond, ...) \
    do { \
        if (!(cond)) { \
            snprintf(err, errlen, __VA_ARGS__); \
            return -1; \
        } \
    } while (0)

#define POSITIVE(f) REQUIRE(c->f > 0, "field '" #f "' must be positive " \
                            "(is %d)", c->f)

int
sg_config_finish(sg_config *c, char *err, int errlen)
{
    int per_group;

    POSITIVE(vocab_size);
    POSITIVE(hidden_size);
    POSITIVE(intermediate_size);
    POSITIVE(moe_intermediate_size);
    POSITIVE(num_hidden_layers);
    POSITIVE(num_attention_heads);
    POSITIVE(q_lora_rank);
    POSITIVE(kv_lora_rank);
    POSITIVE(qk_nope_head_dim);
    POSITIVE(qk_rope_head_dim);
    POSITIVE(v_head_dim);
    POSITIVE(n_routed_experts);
    POSITIVE(num_experts_per_tok);
    POSITIVE(n_group);
    POSITIVE(topk_group);
    POSITIVE(index_n_heads);
    POSITIVE(index_head_dim);
    POSITIVE(index_topk);
    POSITIVE(max_position_embeddings);
    REQUIRE(c->n_shared_experts >= 0, "field 'n_shared_experts' must not be "
            "negative (is %d)", c->n_shared_experts);
    REQUIRE(c->first_k_dense_replace >= 0
            && c->first_k_dense_replace <= c->num_hidden_layers,
            "field 'first_k_dense_replace' (%d) must be in [0, "
            "num_hidden_layers = %d]", c->first_k_dense_replace,
            c->num_hidden_layers);
    REQUIRE(c->n_routed_experts % c->n_group == 0,
            "field 'n_group' (%d) does not divide n_routed_experts (%d)",
            c->n_group, c->n_routed_experts);
    REQUIRE(c->topk_group <= c->n_group, "field 'topk_group' (%d) exceeds "
            "n_group (%d)", c->topk_group, c->n_group);
    per_group = c->n_routed_experts / c->n_group;
    /* Group scores sum each group's two best experts (DeepSeek's gate). */
    REQUIRE(c->n_group == 1 || per_group >= 2, "field 'n_group' (%d) leaves "
            "fewer than 2 experts per group", c->n_group);
    REQUIRE(c->num_experts_per_tok <= c->topk_group * per_group,
            "field 'num_experts_per_tok' (%d) exceeds the %d experts of "
            "topk_group (%d) groups", c->num_experts_per_tok,
            c->topk_group * per_group, c->topk_group);
    /* The FP8 latent cache quantizes in blocks of 128. */
    REQUIRE(c->kv_lora_rank % 128 == 0, "field 'kv_lora_rank' (%d) must be "
            "a multiple of 128", c->kv_lora_rank);
    /* The indexer's Hadamard rotation and its one-scale-per-128 FP8. */
    REQUIRE(c->index_head_dim % 128 == 0 && is_pow2(c->index_head_dim),
            "field 'index_head_dim' (%d) must be a power of two and a "
            "multiple of 128", c->index_head_dim);
    REQUIRE(c->qk_rope_head_dim % 2 == 0, "field 'qk_rope_head_dim' (%d) "
            "must be even", c->qk_rope_head_dim);
    REQUIRE(c->qk_rope_head_dim <= c->index_head_dim, "field "
            "'qk_rope_head_dim' (%d) exceeds index_head_dim (%d)",
            c->qk_rope_head_dim, c->index_head_dim);
    REQUIRE(c->routed_scaling_factor > 0, "field 'routed_scaling_factor' "
            "must be positive");
    REQUIRE(c->rope_theta > 1, "field 'rope_theta' must be > 1");
    REQUIRE(c->rms_norm_eps > 0, "field 'rms_norm_eps' must be positive");
    if (c->yarn_enabled) {
        REQUIRE(c->yarn_factor > 0, "field 'rope_scaling.factor' must be "
                "positive");
        REQUIRE(c->yarn_original_max_position_embeddings > 0, "field "
                "'rope_scaling.original_max_position_embeddings' must be "
                "positive");
        REQUIRE(c->yarn_beta_fast > 0 && c->yarn_beta_slow > 0, "fields "
                "'rope_scaling.beta_fast' and 'beta_slow' must be positive");
    }
    if (c->fp8) {
        /* FP8 GEMMs quantize their input in blocks of 128 channels. */
        const struct { const char *what; long v; } in[] = {
            { "hidden_size", c->hidden_size },
            { "q_lora_rank", c->q_lora_rank },
            { "num_attention_heads * v_head_dim",
              (long)c->num_attention_heads * c->v_head_dim },
            { "intermediate_size", c->intermediate_size },
            { "moe_intermediate_size", c->moe_intermediate_size },
        };

        for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++) {
            REQUIRE(in[i].v % 128 == 0, "field '%s' (%ld) must be a multiple "
                    "of 128 in an FP8 checkpoint", in[i].what, in[i].v);
        }
    }

    c->weight_block_size = 128;
    c->qk_head_dim = c->qk_nope_head_dim + c->qk_rope_head_dim;
    c->softmax_scale = 1.0 / sqrt((double)c->qk_head_dim);
    if (c->yarn_enabled
        && c->max_position_embeddings > c->yarn_original_max_position_embeddings
        && c->yarn_factor > 1)
    {
        double mscale = 0.1 * c->yarn_mscale_all_dim * log(c->yarn_factor) + 1;

        c->softmax_scale *= mscale * mscale;
    }
    return 0;
}
