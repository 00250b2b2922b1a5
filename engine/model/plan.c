/*
 * The memory planner (plan.h).
 */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "checkpoint.h"
#include "group.h"
#include "kv.h"
#include "plan.h"
#include "sparsegate.h"
#include "util/file.h"

int
sg_size_parse(const char *s, size_t *out)
{
    static const struct { const char *unit; double mul; } units[] = {
        { "", 1 },
        { "KB", 1e3 }, { "MB", 1e6 }, { "GB", 1e9 }, { "TB", 1e12 },
        { "KiB", 1024.0 }, { "MiB", 1048576.0 }, { "GiB", 1073741824.0 },
        { "TiB", 1099511627776.0 },
        { "k", 1024.0 }, { "m", 1048576.0 }, { "g", 1073741824.0 },
        { "t", 1099511627776.0 },
    };
    char  *end;
    double v;

    if (s == NULL || !isdigit((unsigned char)*s))
        return -1;
    errno = 0;
    v = strtod(s, &end);
    if (errno || end == s)
        return -1;
    for (size_t i = 0; i < sizeof(units) / sizeof(*units); i++) {
        const char *u = units[i].unit;
        /* single letters in either case, as nginx reads sizes */
        int match = strlen(u) == 1 ? strcasecmp(end, u) == 0
                                   : strcmp(end, u) == 0;
        if (match) {
            double bytes = v * units[i].mul;
            if (bytes < 1 || bytes > 1e18)
                return -1;
            *out = (size_t)bytes;
            return 0;
        }
    }
    return -1;
}

/* 1 when dir holds a *.safetensors file. */
static int
has_safetensors(const char *dir)
{
    DIR           *d = opendir(dir);
    struct dirent *e;
    int            found = 0;

    if (d == NULL)
        return 0;
    while (!found && (e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        found = n > 12 && strcmp(e->d_name + n - 12, ".safetensors") == 0;
    }
    closedir(d);
    return found;
}

/* metadata.total_size of dir/model.safetensors.index.json, or 0. */
static size_t
index_total(const char *dir)
{
    char   path[4200];
    char  *text;
    cJSON *j, *t;
    size_t n = 0;

    snprintf(path, sizeof(path), "%s/model.safetensors.index.json", dir);
    text = sg_read_file(path, (size_t)64 << 20, NULL);
    if (text == NULL)
        return 0;
    j = cJSON_Parse(text);
    t = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(j, "metadata"), "total_size");
    if (cJSON_IsNumber(t) && t->valuedouble > 0)
        n = (size_t)t->valuedouble;
    cJSON_Delete(j);
    free(text);
    return n;
}

typedef struct {
    size_t  replicated;
    size_t *expert;             /* [E] bytes of each routed expert */
} tally;

static void
count(void *ctx, sg_tensor *t, int expert)
{
    tally *ty = ctx;

    if (t->ndim == 0)
        return;
    if (expert < 0)
        ty->replicated += sg_tensor_bytes(t);
    else
        ty->expert[expert] += sg_tensor_bytes(t);
}

/* The largest rank's routed-expert bytes in a group of n. */
static size_t
rank_expert_bytes(const size_t *expert, int E, int n, int *per_rank)
{
    size_t most = 0;

    *per_rank = 0;
    for (int r = 0; r < n; r++) {
        int    a = sg_expert_first(r, n, E), b = sg_expert_first(r + 1, n, E);
        size_t sum = 0;
        for (int e = a; e < b; e++)
            sum += expert[e];
        if (sum > most)
            most = sum;
        if (b - a > *per_rank)
            *per_rank = b - a;
    }
    return most;
}

/*
 * The forward pass's largest working buffers (forward.c) for a step of T
 * rows, in bytes, with balanced routing: the residual stream and norms,
 * the q path, the indexer's queries and its score chunks (at most 32M
 * floats), the absorbed attention's 256-row pieces, the MHA form's keys
 * and values up to the backend's limit, the MoE exchange (rows sent,
 * received, results computed and returned: about T x top_k rows each)
 * and the logits of the sequences that want them.  An estimate.
 */
static size_t
workspace(const sg_config *c, int T, int running, size_t mha_max,
    int context)
{
    size_t D = c->hidden_size, H = c->num_attention_heads;
    size_t qk = c->qk_nope_head_dim + c->qk_rope_head_dim;
    size_t v = c->v_head_dim, lora = c->kv_lora_rank, k = c->num_experts_per_tok;
    size_t f = 0, kv_keys;

    f += 5 * (size_t)T * D;                               /* x h y z o */
    f += 2 * (size_t)T * c->q_lora_rank + (size_t)T * H * qk;
    f += (size_t)T * (lora + c->qk_rope_head_dim) * 2 + (size_t)T * H * v;
    f += (size_t)T * c->index_n_heads * c->index_head_dim * 5 / 4;
    f += (size_t)32 << 20;                                /* index scores */
    f += 2 * 256 * H * lora;                              /* absorbed */
    kv_keys = (size_t)context * H * (c->qk_nope_head_dim + v) * 4;
    f += (kv_keys < mha_max ? kv_keys : mha_max) / 4;
    f += (size_t)T * (c->n_routed_experts > 0 ? c->n_routed_experts : 1);
    f += 5 * (size_t)T * k * D;                           /* MoE exchange */
    f += (size_t)running * c->vocab_size;                 /* logits */
    return f * sizeof(float);
}

/* The plan for n devices from the tallies; fills the n-dependent part. */
static void
plan_for(const sg_plan_in *in, const tally *ty, int n, sg_plan *p)
{
    p->rank_weights = ty->replicated
        + rank_expert_bytes(ty->expert, p->cfg.n_routed_experts, n,
                            &p->rank_experts);
    p->cache_bytes = (int64_t)in->device_bytes - (int64_t)p->rank_weights
                     - (int64_t)p->workspace - (int64_t)p->reserve;
    p->cache_tokens = p->cache_bytes > 0
                      ? p->cache_bytes / (int64_t)p->kv_token : 0;
    p->fits = p->cache_tokens >= p->context;
}

int
sg_plan_make(const sg_plan_in *in, sg_plan *p, char *err, int errlen)
{
    char           dir[4096], cfg_path[4096];
    struct stat    st;
    sg_checkpoint *ck = NULL;
    sg_weights     w;
    tally          ty = { 0, NULL };
    int            T = in->step_tokens > 0 ? in->step_tokens
                                           : SG_DEFAULT_STEP_TOKENS;
    int            running = in->max_running > 0 ? in->max_running
                                                 : SG_DEFAULT_MAX_RUNNING;
    int            rc;

    memset(p, 0, sizeof(*p));
    memset(&w, 0, sizeof(w));
    if (in->model == NULL || stat(in->model, &st) != 0) {
        snprintf(err, errlen, "%s: %s", in->model ? in->model : "(no model)",
                 strerror(errno));
        return -1;
    }
    if (S_ISDIR(st.st_mode)) {
        snprintf(dir, sizeof(dir), "%s", in->model);
        snprintf(cfg_path, sizeof(cfg_path), "%s/config.json", in->model);
    } else {
        const char *slash = strrchr(in->model, '/');
        snprintf(dir, sizeof(dir), "%.*s", slash ? (int)(slash - in->model)
                 : 1, slash ? in->model : ".");
        snprintf(cfg_path, sizeof(cfg_path), "%s", in->model);
    }
    if (in->n_devices < 1) {
        snprintf(err, errlen, "devices: %d (at least 1)", in->n_devices);
        return -1;
    }
    if (sg_config_load(cfg_path, &p->cfg, err, errlen) != 0
        || sg_config_finish(&p->cfg, err, errlen) != 0)
    {
        return -1;
    }
    if (in->n_devices > p->cfg.n_routed_experts) {
        snprintf(err, errlen, "%d devices: %s has %d routed experts, at most "
                 "one rank per expert", in->n_devices, cfg_path,
                 p->cfg.n_routed_experts);
        return -1;
    }

    /* the weights: from the files' headers when they are here */
    if (S_ISDIR(st.st_mode) && has_safetensors(dir)) {
        if (sg_checkpoint_open(dir, &ck, err, errlen) != 0)
            return -1;
        rc = sg_weights_bind(ck, &p->cfg, &w, err, errlen);
        p->from_files = 1;
    } else {
        rc = sg_weights_shape(&p->cfg, &w, err, errlen);
    }
    ty.expert = calloc(p->cfg.n_routed_experts, sizeof(size_t));
    if (rc == 0 && ty.expert == NULL) {
        snprintf(err, errlen, "out of memory");
        rc = -1;
    }
    if (rc != 0)
        goto out;
    sg_weights_visit(&w, &p->cfg, count, &ty);
    p->files_bytes = index_total(dir);
    p->replicated = ty.replicated;
    for (int e = 0; e < p->cfg.n_routed_experts; e++)
        p->experts += ty.expert[e];
    p->weights_total = p->replicated + p->experts;

    p->kv_token = sg_kv_bytes_split(&p->cfg, in->kv_fp8, &p->kv_latent,
                                    &p->kv_rope, &p->kv_index)
                  * (size_t)p->cfg.num_hidden_layers;
    p->context = in->context > 0 ? in->context
                                 : p->cfg.max_position_embeddings;
    /* the backends' MHA-form limits (model/backend.h): CPU 1 GiB, CUDA
     * none */
    p->workspace = workspace(&p->cfg, T, running,
                             in->cpu ? (size_t)1 << 30 : 0, p->context);
    p->reserve = in->reserve_bytes ? in->reserve_bytes
                 : in->cpu ? 0 : SG_PLAN_RESERVE;

    for (int n = 1; n <= p->cfg.n_routed_experts && p->min_devices == 0;
         n++)
    {
        plan_for(in, &ty, n, p);
        if (p->fits)
            p->min_devices = n;
    }
    plan_for(in, &ty, in->n_devices, p);
out:
    free(ty.expert);
    sg_weights_free(&w);
    sg_checkpoint_close(ck);
    return rc;
}

static const char *
gb(double bytes, char *buf, size_t cap)
{
    snprintf(buf, cap, "%.1f GB", bytes / 1e9);
    return buf;
}

void
sg_plan_print(const sg_plan_in *in, const sg_plan *p, FILE *f)
{
    const sg_config *c = &p->cfg;
    char a[32], b[32], d[32], e[32];
    int  moe = c->num_hidden_layers - c->first_k_dense_replace;

    fprintf(f, "model       %s: %d layers (%d MoE x %d experts, %d per token), "
            "hidden %d, %s weights\n", in->model, c->num_hidden_layers,
            moe, c->n_routed_experts, c->num_experts_per_tok, c->hidden_size,
            c->fp8 ? "FP8 e4m3 128x128-block" : "BF16");
    fprintf(f, "weights     %s loaded (%s): replicated %s, routed experts "
            "%s\n", gb(p->weights_total, a, sizeof(a)),
            p->from_files ? "sizes from the safetensors headers"
                          : "sizes from config.json's shapes",
            gb(p->replicated, b, sizeof(b)), gb(p->experts, d, sizeof(d)));
    if (p->files_bytes)
        fprintf(f, "            checkpoint files %s (index total_size; "
                "the MTP layer is not loaded)\n",
                gb(p->files_bytes, a, sizeof(a)));
    fprintf(f, "devices     %d x %s (%.1f GiB)\n", in->n_devices,
            gb(in->device_bytes, a, sizeof(a)),
            in->device_bytes / 1073741824.0);
    fprintf(f, "per rank    weights %s (%d experts per layer), working "
            "memory %s, runtime reserve %s\n",
            gb(p->rank_weights, a, sizeof(a)), p->rank_experts,
            gb(p->workspace, b, sizeof(b)), gb(p->reserve, d, sizeof(d)));
    fprintf(f, "kv cache    %zu bytes per token (%d layers x (latent %zu "
            "%s + RoPE key %zu + indexer key %zu))\n", p->kv_token,
            c->num_hidden_layers, p->kv_latent,
            in->kv_fp8 ? "FP8" : "f32", p->kv_rope, p->kv_index);
    if (p->cache_bytes > 0)
        fprintf(f, "            %s per rank = %lld tokens per rank, %lld "
                "in all; %.1f contexts of %d per rank\n",
                gb((double)p->cache_bytes, a, sizeof(a)),
                (long long)p->cache_tokens,
                (long long)p->cache_tokens * in->n_devices,
                (double)p->cache_tokens / p->context, p->context);
    else
        fprintf(f, "            none: each rank is %s short before any "
                "cache\n", gb(-(double)p->cache_bytes, a, sizeof(a)));
    if (p->fits)
        fprintf(f, "verdict     fits\n");
    else
        fprintf(f, "verdict     does not fit: a rank needs %s + one context "
                "of cache (%s) on a %s device\n",
                gb(p->rank_weights + p->workspace + p->reserve, a, sizeof(a)),
                gb((double)p->kv_token * p->context, b, sizeof(b)),
                gb(in->device_bytes, d, sizeof(d)));
    if (p->min_devices)
        fprintf(f, "            needs at least %d x %s\n", p->min_devices,
                gb(in->device_bytes, e, sizeof(e)));
    else
        fprintf(f, "            no group of %s devices fits (up to %d)\n",
                gb(in->device_bytes, e, sizeof(e)), c->n_routed_experts);
}
