/*
 * Where a checkpoint's tensors come from, for error messages (the loader's
 * own files: checkpoint.c answers, weights.c asks).
 */
#ifndef SG_CHECKPOINT_FILE_H
#define SG_CHECKPOINT_FILE_H

#include "checkpoint.h"

/* The file name (no directory) holding t, a tensor of ck; "?" otherwise. */
const char *sg_checkpoint_file_of(const sg_checkpoint *ck,
    const sg_tensor *t);

/* What was searched for names: "model.safetensors.index.json", or the list
 * of *.safetensors files when the checkpoint has no index. */
const char *sg_checkpoint_source(const sg_checkpoint *ck);

#endif
