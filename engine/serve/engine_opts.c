/*
 * The public options' defaults and their translation into the model's
 * options; the model facts a host reads (sparsegate.h).
 */
#include <stdio.h>
#include <string.h>

#include "engine_opts.h"

void
sg_engine_opts_default(sg_engine_opts *o)
{
    sg_model_opts mo;

    sg_model_opts_default(&mo);
    memset(o, 0, sizeof(*o));
    o->backend = mo.backend;
    o->kv_fp8 = mo.num.kv_fp8;
    o->kv_bytes = SG_DEFAULT_KV_BYTES;
    o->max_running = SG_DEFAULT_MAX_RUNNING;
    o->max_queue = SG_DEFAULT_MAX_QUEUE;
    o->step_tokens = SG_DEFAULT_STEP_TOKENS;
    o->prefill_chunk = SG_DEFAULT_PREFILL_CHUNK;
    o->prefix_cache = 1;
}

void
sg_engine_model_opts(const sg_engine_opts *o, sg_model_opts *mo)
{
    sg_model_opts_default(mo);
    if (o->backend != NULL)
        mo->backend = o->backend;
    mo->device = o->device;
    mo->n_threads = o->n_threads;
    mo->num.dense = o->dense;
    mo->num.kv_fp8 = o->kv_fp8;
    mo->num.index_share = o->index_share;
}

void
sg_model_info_of(const sg_config *c, sg_model_info *info)
{
    memset(info, 0, sizeof(*info));
    info->vocab_size = c->vocab_size;
    info->max_position_embeddings = c->max_position_embeddings;
    info->num_hidden_layers = c->num_hidden_layers;
    info->hidden_size = c->hidden_size;
    info->index_topk = c->index_topk;
    info->bos_token_id = c->bos_token_id;
    info->eos_token_id = c->eos_token_id;
}

int
sg_model_info_load(const char *model_dir, sg_model_info *info, char *err,
    int errlen)
{
    char      path[4096];
    sg_config c;

    if (model_dir == NULL) {
        snprintf(err, errlen, "no model directory given");
        return -1;
    }
    if ((size_t)snprintf(path, sizeof(path), "%s/config.json", model_dir)
        >= sizeof(path))
    {
        snprintf(err, errlen, "%s: model directory path too long",
                 model_dir);
        return -1;
    }
    if (sg_config_load(path, &c, err, errlen) != 0)
        return -1;
    sg_model_info_of(&c, info);
    return 0;
}
