/*
 * Built instead of the CUDA backend when this machine has no nvcc
 * (/usr/local/cuda/bin/nvcc): asking for CUDA then gives a clear error and
 * the engine keeps working on the CPU backend.
 */
#include <stdio.h>

#include "backend.h"

sg_backend *
sg_backend_cuda_new(int device, char *err, int errlen)
{
    (void)device;
    snprintf(err, errlen, "built without CUDA (no nvcc at "
             "/usr/local/cuda/bin/nvcc when this engine was compiled)");
    return NULL;
}
