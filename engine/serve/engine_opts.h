/*
 * From the public options and facts of sparsegate.h to the engine's own
 * types: the host never sees sg_model_opts or sg_config.
 */
#ifndef SG_ENGINE_OPTS_H
#define SG_ENGINE_OPTS_H

#include "model/model.h"
#include "sparsegate.h"

/* The model options an engine started with o loads its model with. */
void sg_engine_model_opts(const sg_engine_opts *o, sg_model_opts *mo);

/* The host's view of a configuration. */
void sg_model_info_of(const sg_config *c, sg_model_info *info);

#endif
