/*
 * The public options' defaults and their translation into the model's
 * options; the model facts a host reads (sparsegate.h).
 */
#include <stdio.h>
#include <string.h>

#include "engine_opts.h"
#include "model/checkpoint.h"
#include "model/group.h"
#include "model/plan.h"

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
    mo->num.window = o->window;
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

int
sg_model_check_files(const char *model_dir, char *err, int errlen)
{
    sg_checkpoint *ck;

    /* the headers are parsed and every tensor's offsets checked against
     * its file's size; the files are mapped, never read past the header */
    if (sg_checkpoint_open(model_dir, &ck, err, errlen) != 0)
        return -1;
    sg_checkpoint_close(ck);
    return 0;
}

int
sg_engine_plan_make(const sg_engine_opts *o, size_t device_bytes,
    sg_engine_plan *p, char *err, int errlen)
{
    sg_plan_in in;
    sg_plan    pl;
    int        ids[SG_MAX_RANKS];

    memset(p, 0, sizeof(*p));
    memset(&in, 0, sizeof(in));
    in.model = o->model_dir;
    in.n_devices = 1;
    if (o->devices) {
        in.n_devices = sg_devices_parse(o->devices, ids, SG_MAX_RANKS, err,
                                        errlen);
        if (in.n_devices < 0)
            return -1;
    }
    in.cpu = o->backend == NULL || strcmp(o->backend, "cpu") == 0;
    in.device_bytes = device_bytes;
    in.kv_fp8 = o->kv_fp8;
    in.step_tokens = o->step_tokens;
    in.max_running = o->max_running;
    in.context = o->max_context;
    if (sg_plan_make(&in, &pl, err, errlen) != 0)
        return -1;
    p->n_ranks = in.n_devices;
    p->rank_weight_bytes = pl.rank_weights;
    p->weight_bytes = pl.weights_total;
    p->work_bytes = pl.workspace + pl.reserve;
    p->kv_bytes_per_token = pl.kv_token;
    p->max_context = pl.context;
    p->min_devices = device_bytes ? pl.min_devices : 0;
    return 0;
}
