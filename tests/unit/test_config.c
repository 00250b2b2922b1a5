/*
 * config.json reading: derived values on fresh random configs, defaults,
 * and a clear "config.json: field 'x' ..." error for every missing field,
 * wrong JSON type and inconsistent value; mkmodel's presets and --set.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "check.h"
#include "model/config.h"
#include "offline/mkmodel.h"

static char tmp_root[] = "/tmp/sg_config.XXXXXX";
static char cfg_path[600];
static char err[1024];

/* The tiny preset's config.json object. */
static cJSON *
tiny_json(void)
{
    sg_mkmodel_opts o;

    memset(&o, 0, sizeof(o));
    o.preset = "tiny";
    return sg_mkmodel_config(&o, err, sizeof(err));
}

static int
load_json(cJSON *j, sg_config *c)
{
    char *s = cJSON_Print(j);
    FILE *f = fopen(cfg_path, "w");

    fputs(s, f);
    fclose(f);
    free(s);
    return sg_config_load(cfg_path, c, err, sizeof(err));
}

/* Replaces (or with v == NULL deletes) key, "a.b" for nested ones. */
static void
set(cJSON *j, const char *key, cJSON *v)
{
    const char *dot = strchr(key, '.');

    if (dot) {
        char head[64];

        snprintf(head, sizeof(head), "%.*s", (int)(dot - key), key);
        set(cJSON_GetObjectItem(j, head), dot + 1, v);
        return;
    }
    if (v == NULL)
        cJSON_DeleteItemFromObjectCaseSensitive(j, key);
    else if (cJSON_HasObjectItem(j, key))
        cJSON_ReplaceItemInObjectCaseSensitive(j, key, v);
    else
        cJSON_AddItemToObject(j, key, v);
}

/* Loads tiny with key changed; expects -1 and both strings in the message
 * (the file name always). */
static void
expect_bad(const char *test, const char *key, cJSON *v, const char *what)
{
    cJSON    *j = tiny_json();
    sg_config c;
    int       rc;

    set(j, key, v);
    rc = load_json(j, &c);
    cJSON_Delete(j);
    if (rc == -1)
        printf("# %s: %s\n", test, err);
    CHECK(rc == -1 && strstr(err, "config.json") && strstr(err, what), test,
          "rc %d, message \"%s\", wanted '%s'", rc, rc ? err : "", what);
}

static void
test_bad_fields(void)
{
    expect_bad("config_missing_field", "kv_lora_rank", NULL,
               "field 'kv_lora_rank' missing");
    expect_bad("config_missing_nested_field", "rope_scaling.factor", NULL,
               "field 'rope_scaling.factor' missing");
    expect_bad("config_wrong_type_string", "kv_lora_rank",
               cJSON_CreateString("128"), "'kv_lora_rank' must be an integer");
    expect_bad("config_wrong_type_fraction", "hidden_size",
               cJSON_CreateNumber(256.5), "'hidden_size' must be an integer");
    expect_bad("config_wrong_type_bool", "norm_topk_prob",
               cJSON_CreateNumber(1), "'norm_topk_prob' must be true or false");
    expect_bad("config_wrong_type_nested", "rope_scaling.factor",
               cJSON_CreateString("4"),
               "'rope_scaling.factor' must be a number");
    expect_bad("config_wrong_type_object", "rope_scaling",
               cJSON_CreateNumber(4), "'rope_scaling'");
    expect_bad("config_n_group_not_dividing", "n_group",
               cJSON_CreateNumber(3), "'n_group' (3) does not divide "
               "n_routed_experts (16)");
    expect_bad("config_topk_group_too_big", "topk_group",
               cJSON_CreateNumber(5), "'topk_group'");
    expect_bad("config_experts_per_tok_too_many", "num_experts_per_tok",
               cJSON_CreateNumber(9), "'num_experts_per_tok'");
    expect_bad("config_one_expert_per_group", "n_group",
               cJSON_CreateNumber(16), "'n_group'");
    expect_bad("config_kv_lora_not_128", "kv_lora_rank",
               cJSON_CreateNumber(100), "'kv_lora_rank' (100)");
    expect_bad("config_index_head_dim", "index_head_dim",
               cJSON_CreateNumber(384), "'index_head_dim' (384)");
    expect_bad("config_rope_odd", "qk_rope_head_dim",
               cJSON_CreateNumber(63), "'qk_rope_head_dim' (63)");
    expect_bad("config_dense_layers", "first_k_dense_replace",
               cJSON_CreateNumber(4), "'first_k_dense_replace' (4)");
    expect_bad("config_negative", "num_attention_heads",
               cJSON_CreateNumber(-4), "'num_attention_heads'");
    expect_bad("config_scoring_func", "scoring_func",
               cJSON_CreateString("softmax"), "'scoring_func' is 'softmax'");
    expect_bad("config_rope_type", "rope_scaling.type",
               cJSON_CreateString("linear"), "'rope_scaling.type' is 'linear'");
    expect_bad("config_tied_embeddings", "tie_word_embeddings",
               cJSON_CreateTrue(), "'tie_word_embeddings'");
    {
        cJSON *q = cJSON_Parse("{\"quant_method\":\"fp8\","
                               "\"weight_block_size\":[64,64]}");

        expect_bad("config_block_size", "quantization_config", q,
                   "'quantization_config.weight_block_size'");
        q = cJSON_Parse("{\"quant_method\":\"gptq\"}");
        expect_bad("config_quant_method", "quantization_config", q,
                   "'quantization_config.quant_method' is 'gptq'");
    }
    /* FP8 GEMMs need 128-multiples on their input side. */
    {
        cJSON    *j = tiny_json();
        sg_config c;
        int       rc;

        set(j, "quantization_config", cJSON_Parse("{\"quant_method\":"
                                                  "\"fp8\"}"));
        set(j, "moe_intermediate_size", cJSON_CreateNumber(96));
        rc = load_json(j, &c);
        cJSON_Delete(j);
        CHECK(rc == -1 && strstr(err, "config.json")
              && strstr(err, "'moe_intermediate_size' (96) must be a "
                        "multiple of 128"), "config_fp8_block_multiple",
              "rc %d: %s", rc, err);
    }
}

static void
test_bad_files(void)
{
    sg_config c;
    FILE     *f = fopen(cfg_path, "w");
    int       rc;

    fputs("{\"hidden_size\": 256,", f);
    fclose(f);
    rc = sg_config_load(cfg_path, &c, err, sizeof(err));
    CHECK(rc == -1 && strstr(err, "config.json") && strstr(err, "JSON"),
          "config_malformed_json", "rc %d: %s", rc, err);
    rc = sg_config_load("/nonexistent/dir/config.json", &c, err, sizeof(err));
    CHECK(rc == -1 && strstr(err, "/nonexistent/dir/config.json"),
          "config_missing_file", "rc %d: %s", rc, err);
}

/* softmax_scale on fresh random shapes and YaRN settings. */
static void
test_softmax_scale(void)
{
    int bad = 0;

    for (int t = 0; t < 20; t++) {
        cJSON    *j = tiny_json();
        sg_config c;
        int       nope = 16 * (1 + check_rand32() % 8);
        int       rope = 2 * (1 + check_rand32() % 32);
        double    factor = check_randu(1.5f, 40.0f);
        double    mad = check_randu(0.5f, 1.5f);
        int       orig = 64 << (check_rand32() % 4);
        int       maxp = check_rand32() % 2 ? orig * 4 : orig;
        double    want = 1.0 / sqrt(nope + rope);

        set(j, "qk_nope_head_dim", cJSON_CreateNumber(nope));
        set(j, "qk_rope_head_dim", cJSON_CreateNumber(rope));
        set(j, "max_position_embeddings", cJSON_CreateNumber(maxp));
        set(j, "rope_scaling.factor", cJSON_CreateNumber(factor));
        set(j, "rope_scaling.mscale_all_dim", cJSON_CreateNumber(mad));
        set(j, "rope_scaling.original_max_position_embeddings",
            cJSON_CreateNumber(orig));
        if (maxp > orig)
            want *= pow(0.1 * mad * log(factor) + 1, 2);
        if (load_json(j, &c) != 0 || fabs(c.softmax_scale - want) > 1e-12 * want
            || c.qk_head_dim != nope + rope)
        {
            if (!bad++)
                printf("# nope %d rope %d factor %g: got %.12g want %.12g "
                       "(%s)\n", nope, rope, factor, c.softmax_scale, want,
                       err);
        }
        cJSON_Delete(j);
    }
    CHECK(bad == 0, "config_softmax_scale_random", "%d of 20 differ", bad);
}

static void
test_defaults(void)
{
    cJSON    *j = tiny_json();
    sg_config c;
    int       rc;

    set(j, "rope_scaling", cJSON_CreateNull());
    set(j, "eos_token_id", cJSON_Parse("[1, 7]"));
    set(j, "rms_norm_eps", NULL);
    set(j, "quantization_config", cJSON_Parse("{\"quant_method\":\"fp8\","
                                              "\"scale_fmt\":null}"));
    set(j, "intermediate_size", cJSON_CreateNumber(512));
    rc = load_json(j, &c);
    cJSON_Delete(j);
    CHECK(rc == 0 && !c.yarn_enabled && c.eos_token_id == 1
          && c.rms_norm_eps == 1e-6f && c.fp8 && !c.scale_ue8m0
          && fabs(c.softmax_scale - 1 / sqrt(128.0)) < 1e-12,
          "config_defaults", "rc %d (%s) yarn %d eos %d fp8 %d ue8m0 %d",
          rc, rc ? err : "", c.yarn_enabled, c.eos_token_id, c.fp8,
          c.scale_ue8m0);
}

static void
test_presets(void)
{
    sg_mkmodel_opts o;
    const char     *sets[] = { "num_hidden_layers=8", "rope_scaling.factor=8",
                               "scoring_func=sigmoid" };
    sg_config       c;
    cJSON          *j;
    int             rc;

    for (int p = 0; sg_mkmodel_presets[p]; p++) {
        char name[64];

        memset(&o, 0, sizeof(o));
        o.preset = sg_mkmodel_presets[p];
        o.fp8 = p == 2;
        j = sg_mkmodel_config(&o, err, sizeof(err));
        rc = j ? load_json(j, &c) : -1;
        cJSON_Delete(j);
        snprintf(name, sizeof(name), "preset_%s_valid", o.preset);
        CHECK(rc == 0, name, "%s", err);
        if (rc == 0 && p == 1) {
            CHECK(c.vocab_size == 129280 && c.hidden_size == 512
                  && c.num_hidden_layers == 4 && c.index_topk == 2048
                  && c.max_position_embeddings == 131072
                  && c.yarn_factor == 40, "preset_small_values", "differs");
        }
        if (rc == 0 && p == 2) {
            double want = pow(192, -0.5) * pow(0.1 * log(40.0) + 1, 2);

            CHECK(c.hidden_size == 7168 && c.num_attention_heads == 128
                  && c.q_lora_rank == 1536 && c.kv_lora_rank == 512
                  && c.index_n_heads == 64 && c.index_head_dim == 128
                  && c.max_position_embeddings == 163840 && c.fp8
                  && fabs(c.softmax_scale - want) < 1e-12,
                  "preset_v32_attn_values", "scale %g", c.softmax_scale);
        }
    }
    memset(&o, 0, sizeof(o));
    o.sets = sets;
    o.n_sets = 3;
    j = sg_mkmodel_config(&o, err, sizeof(err));
    rc = j ? load_json(j, &c) : -1;
    cJSON_Delete(j);
    CHECK(rc == 0 && c.num_hidden_layers == 8 && c.yarn_factor == 8,
          "mkmodel_set_overrides", "rc %d layers %d factor %g", rc,
          c.num_hidden_layers, c.yarn_factor);
    sets[0] = "hiden_size=3";
    j = sg_mkmodel_config(&o, err, sizeof(err));
    CHECK(j == NULL && strstr(err, "hiden_size"), "mkmodel_set_unknown_field",
          "%s", j ? "accepted" : err);
    cJSON_Delete(j);
}

int
main(void)
{
    check_seed_from_env();
    if (mkdtemp(tmp_root) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(cfg_path, sizeof(cfg_path), "%s/config.json", tmp_root);
    test_bad_fields();
    test_bad_files();
    test_softmax_scale();
    test_defaults();
    test_presets();
    unlink(cfg_path);
    rmdir(tmp_root);
    return check_finish();
}
