/*
 * The forward pass's working buffers, kept with the model between calls so a
 * decode step allocates nothing (they only grow).
 */
#ifndef SG_FORWARD_SCRATCH_H
#define SG_FORWARD_SCRATCH_H

#include "model.h"

void sg_forward_scratch_free(sg_model *m);

#endif
