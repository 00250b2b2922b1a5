/*
 * The memory planner (model/plan.h):
 *  - sizes from a checkpoint's headers equal the bytes the engine really
 *    prepares (the whole model, and each rank's share in a group);
 *  - sizes from config.json alone (no weights) equal those from the files
 *    of the fixtures' FP8 and BF16 checkpoints (the dtypes DeepSeek's
 *    checkpoints use);
 *  - DeepSeek-V3.2's published config (conf/deepseek-v3.2): the expert and
 *    replicated bytes against a count of its shapes written out here, the
 *    KV bytes per token against the engine's pool, the verdicts on 8 x H200,
 *    8 x H100 and 16 x H100, the fewest devices that fit;
 *  - sizes ("141GB", "80GiB", "512m") and errors naming what is wrong.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "model/group.h"
#include "model/model.h"
#include "model/plan.h"

static sg_plan_in
plan_in(const char *model, int n, size_t mem)
{
    sg_plan_in in;

    memset(&in, 0, sizeof(in));
    in.model = model;
    in.n_devices = n;
    in.device_bytes = mem;
    in.kv_fp8 = 1;
    return in;
}

static void
test_sizes(void)
{
    static const struct { const char *s; size_t v; } ok[] = {
        { "141GB", 141000000000ull }, { "80GiB", 80ull << 30 },
        { "143771MiB", 143771ull << 20 }, { "512m", 512ull << 20 },
        { "2g", 2ull << 30 }, { "2G", 2ull << 30 }, { "1073741824", 1ull << 30 },
        { "1.5TB", 1500000000000ull }, { "64KB", 64000 },
    };
    static const char *bad[] = { "", "GB", "-1GB", "12 GB", "12XB", "0",
                                 "1e30TB", "abc", NULL };
    int good = 1;

    for (size_t i = 0; i < sizeof(ok) / sizeof(*ok); i++) {
        size_t v = 0;
        if (sg_size_parse(ok[i].s, &v) != 0 || v != ok[i].v) {
            CHECK(0, "size/parse", "\"%s\" -> %zu, want %zu", ok[i].s, v,
                  ok[i].v);
            good = 0;
        }
    }
    for (int i = 0; bad[i]; i++) {
        size_t v;
        if (sg_size_parse(bad[i], &v) == 0) {
            CHECK(0, "size/refuse", "\"%s\" accepted", bad[i]);
            good = 0;
        }
    }
    CHECK(good, "size/units", " ");
}

/* A fixture checkpoint: the plan's sizes are the bytes the engine
 * prepares, alone and per rank; config.json alone gives the same. */
static void
test_fixture(const char *variant)
{
    char          dir[1024], tmp[] = "/tmp/sg_plan_XXXXXX", cfg[1200];
    char          err[512], name[96];
    sg_model_opts o;
    sg_model     *m = NULL;
    sg_plan       p, q;
    sg_plan_in    in;

    snprintf(dir, sizeof(dir), "%s/tiny-v32/%s", check_fixtures_dir(),
             variant);
    sg_model_opts_default(&o);
    o.n_threads = 1;
    if (sg_model_load(dir, &o, &m, err, sizeof(err)) != 0) {
        CHECK(0, check_named(variant, "load"), "%s", err);
        return;
    }
    in = plan_in(dir, 1, (size_t)1 << 30);
    if (sg_plan_make(&in, &p, err, sizeof(err)) != 0) {
        CHECK(0, check_named(variant, "plan"), "%s", err);
        sg_model_free(m);
        return;
    }
    CHECK(p.from_files && p.weights_total == m->prepared_bytes
          && p.rank_weights == m->prepared_bytes,
          check_named(variant, "files-equal-prepared"),
          "plan %zu, the engine prepared %zu", p.weights_total,
          m->prepared_bytes);
    CHECK(p.files_bytes > 0 && p.files_bytes >= p.weights_total,
          check_named(variant, "index-total"), "index total %zu",
          p.files_bytes);
    {
        sg_kv_pool *pool = sg_kv_pool_new(m->backend, &m->cfg, 1, 1);
        CHECK(pool && pool->bytes_per_token == p.kv_token,
              check_named(variant, "kv-per-token"), "plan %zu, pool %zu",
              p.kv_token, pool ? pool->bytes_per_token : 0);
        sg_kv_pool_free(pool);
    }
    sg_model_free(m);

    /* each rank's share, against a group's prepared bytes */
    for (int n = 2; n <= 4; n++) {
        int       dev[4] = { 0, 1, 2, 3 };
        sg_group *g = NULL;
        size_t    most = 0;

        in.n_devices = n;
        if (sg_plan_make(&in, &p, err, sizeof(err)) != 0
            || sg_group_load(dir, &o, dev, n, &g, err, sizeof(err)) != 0)
        {
            CHECK(0, check_named(variant, "group"), "%s", err);
            return;
        }
        for (int r = 0; r < n; r++)
            if (sg_group_model(g, r)->prepared_bytes > most)
                most = sg_group_model(g, r)->prepared_bytes;
        snprintf(name, sizeof(name), "%s/rank-weights-N%d", variant, n);
        CHECK(p.rank_weights == most, name, "plan %zu, largest rank %zu",
              p.rank_weights, most);
        sg_group_free(g);
    }

    /* config.json alone */
    if (mkdtemp(tmp) == NULL) {
        CHECK(0, check_named(variant, "tmp"), "mkdtemp");
        return;
    }
    snprintf(cfg, sizeof(cfg), "cp %s/config.json %s/", dir, tmp);
    if (system(cfg) != 0) {
        CHECK(0, check_named(variant, "copy"), "%s", cfg);
        return;
    }
    in = plan_in(tmp, 1, (size_t)1 << 30);
    in.n_devices = 3;
    sg_plan_in inf = in;
    inf.model = dir;
    if (sg_plan_make(&in, &q, err, sizeof(err)) != 0
        || sg_plan_make(&inf, &p, err, sizeof(err)) != 0)
    {
        CHECK(0, check_named(variant, "shapes"), "%s", err);
    } else {
        CHECK(!q.from_files && q.weights_total == p.weights_total
              && q.replicated == p.replicated && q.experts == p.experts
              && q.rank_weights == p.rank_weights,
              check_named(variant, "shapes-equal-files"),
              "shapes %zu (replicated %zu, experts %zu), files %zu (%zu, "
              "%zu)", q.weights_total, q.replicated, q.experts,
              p.weights_total, p.replicated, p.experts);
        /* a bare config.json path works too */
        snprintf(cfg, sizeof(cfg), "%s/config.json", tmp);
        in.model = cfg;
        CHECK(sg_plan_make(&in, &q, err, sizeof(err)) == 0
              && q.weights_total == p.weights_total,
              check_named(variant, "bare-config"), "%s", err);
    }
    check_rm_rf(tmp);
}

/* DeepSeek-V3.2's published config, counted out here independently. */
static void
test_v32(void)
{
    const char *model = "conf/deepseek-v3.2/config.json";
    sg_plan     p;
    sg_plan_in  in = plan_in(model, 8, (size_t)143771 << 20);
    char        err[512];
    /* FP8 e4m3 matrix [r, c]: r*c bytes + 4 * ceil(r/128) * ceil(c/128) */
#define FP8(r, c) ((double)(r) * (c) + 4.0 * ceil((r) / 128.0) \
                   * ceil((c) / 128.0))
    double D = 7168, I = 2048, E = 256, moe = 61 - 3;
    double expert = FP8(I, D) * 2 + FP8(D, I);
    double experts = moe * E * expert;
    double attn = FP8(1536, D) + FP8(128 * 192, 1536) + FP8(576, D)
                  + FP8(128 * 256, 512) + FP8(D, 128 * 128)
                  + 2 * (2 * D + 1536 + 512)              /* norms, bf16 */
                  + FP8(64 * 128, 1536) + FP8(128, D)    /* indexer */
                  + 2 * 2 * 128 + 2 * 64 * D;            /* k_norm, wproj */
    double dense = 3 * (FP8(18432, D) * 2 + FP8(D, 18432));
    double moe_rest = moe * (2 * E * D + 4 * E + FP8(I, D) * 2 + FP8(D, I));
    double emb = 2 * 2 * 129280 * D + 2 * D;
    double replicated = 61 * attn + dense + moe_rest + emb;

    if (sg_plan_make(&in, &p, err, sizeof(err)) != 0) {
        CHECK(0, "v32/plan", "%s", err);
        return;
    }
    CHECK((double)p.experts == experts && (double)p.replicated == replicated,
          "v32/weights-from-shapes", "experts %zu (counted %.0f), "
          "replicated %zu (counted %.0f)", p.experts, experts, p.replicated,
          replicated);
    CHECK(p.kv_token == 61 * (512 + 16 + 64 * 4 + 128 + 4), "v32/kv-per-token",
          "%zu bytes", p.kv_token);
    CHECK((double)p.rank_weights == replicated + experts / 8
          && p.rank_experts == 32, "v32/rank-weights-8",
          "%zu", p.rank_weights);
    printf("# V3.2: %.1f GB loaded, %.1f GB per rank of 8, %lld cache tokens "
           "per H200 rank\n", p.weights_total / 1e9, p.rank_weights / 1e9,
           (long long)p.cache_tokens);
    CHECK(p.fits && p.min_devices == 6, "v32/8xH200-fits",
          "fits %d, min %d", p.fits, p.min_devices);
    in.device_bytes = (size_t)81559 << 20;
    sg_plan_make(&in, &p, err, sizeof(err));
    CHECK(!p.fits && p.cache_bytes < 0 && p.min_devices > 8,
          "v32/8xH100-does-not-fit", "fits %d, min %d", p.fits,
          p.min_devices);
    in.n_devices = 16;
    sg_plan_make(&in, &p, err, sizeof(err));
    CHECK(p.fits && p.cache_tokens > 163840, "v32/16xH100-fits",
          "%lld tokens", (long long)p.cache_tokens);
    /* exact cache: 4x the latent */
    in.kv_fp8 = 0;
    sg_plan_make(&in, &p, err, sizeof(err));
    CHECK(p.kv_token == 61 * (512 * 4 + 64 * 4 + 128 + 4), "v32/kv-exact",
          "%zu", p.kv_token);
}

static void
test_errors(void)
{
    sg_plan    p;
    sg_plan_in in = plan_in("/nonexistent/model", 2, (size_t)1 << 30);
    char       err[512];

    CHECK(sg_plan_make(&in, &p, err, sizeof(err)) != 0
          && strstr(err, "/nonexistent/model"), "errors/missing-model",
          "'%s'", err);
    in.model = "conf/deepseek-v3.2";
    in.n_devices = 300;
    CHECK(sg_plan_make(&in, &p, err, sizeof(err)) != 0
          && strstr(err, "256 routed experts"), "errors/too-many-devices",
          "'%s'", err);
    in.model = "conf/sparsegate.conf";
    in.n_devices = 2;
    CHECK(sg_plan_make(&in, &p, err, sizeof(err)) != 0
          && strstr(err, "sparsegate.conf"), "errors/not-json", "'%s'", err);
}

int
main(void)
{
    check_seed_from_env();
    test_sizes();
    test_fixture("bf16");
    test_fixture("fp8");
    test_v32();
    test_errors();
    return check_finish();
}
