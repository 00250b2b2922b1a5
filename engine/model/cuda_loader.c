/*
 * sg_backend_cuda_new as the engine library provides it: the CUDA backend
 * (kernels/) is a shared object of its own, libsparsegate_cuda.so, opened
 * the first time a model asks for it.  Linked in, it would make every
 * program and the nginx module map cuBLAS (~200 MB and half a second per
 * start) and need the CUDA libraries installed even to run on the CPU.
 *
 * Where it is looked for, in order: $SG_CUDA_LIBRARY (a path); beside the
 * object that holds this code (the nginx module in build/nginx/, or the
 * program) and one directory up (build/); beside /proc/self/exe and one
 * up; then the dynamic loader's own search path.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "collective.h"

#define CUDA_LIBRARY "libsparsegate_cuda.so"

typedef sg_backend *(*cuda_new_fn)(int device, char *err, int errlen);
typedef sg_coll *(*nccl_new_fn)(sg_backend **b, int n, sg_coll *host,
    char *err, int errlen);

sg_coll *sg_coll_nccl_new(sg_backend **b, int n, sg_coll *host, char *err,
    int errlen);

/* dir of path (path itself when it has no slash: "." then) */
static void
dir_of(const char *path, char *dir, size_t cap)
{
    const char *slash = strrchr(path, '/');

    if (slash == NULL)
        snprintf(dir, cap, ".");
    else
        snprintf(dir, cap, "%.*s", (int)(slash - path), path);
}

/* Tries dir/CUDA_LIBRARY and dir/../CUDA_LIBRARY. */
static void *
open_near(const char *dir, char *why, size_t cap)
{
    static const char *const rel[] = { "", "../" };
    char  path[4096];
    void *h;

    for (size_t i = 0; i < sizeof(rel) / sizeof(*rel); i++) {
        snprintf(path, sizeof(path), "%s/%s%s", dir, rel[i], CUDA_LIBRARY);
        if (access(path, F_OK) != 0)
            continue;
        h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
        if (h != NULL)
            return h;
        /* there but not loadable (missing CUDA libraries): say why */
        snprintf(why, cap, "%s", dlerror());
    }
    return NULL;
}

static void *
open_library(char *why, size_t cap)
{
    const char *env = getenv("SG_CUDA_LIBRARY");
    char        dir[4096], self[4096];
    Dl_info     info;
    ssize_t     n;
    void       *h;

    why[0] = '\0';
    if (env && *env) {
        h = dlopen(env, RTLD_NOW | RTLD_LOCAL);
        if (h == NULL)
            snprintf(why, cap, "%s", dlerror());
        return h;
    }
    if (dladdr((void *)sg_backend_cuda_new, &info) && info.dli_fname) {
        dir_of(info.dli_fname, dir, sizeof(dir));
        if ((h = open_near(dir, why, cap)) != NULL)
            return h;
    }
    n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n > 0) {
        self[n] = '\0';
        dir_of(self, dir, sizeof(dir));
        if ((h = open_near(dir, why, cap)) != NULL)
            return h;
    }
    h = dlopen(CUDA_LIBRARY, RTLD_NOW | RTLD_LOCAL);
    if (h == NULL && why[0] == '\0')
        snprintf(why, cap, "%s", dlerror());
    return h;
}

/* The library, opened once (the ranks of a device group load their
 * backends at the same time, each on its own thread). */
static void *
library(char *err, int errlen)
{
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    static void           *lib;
    static char            why[1024];
    void                  *h;

#ifndef SG_HAVE_CUDA
    if (getenv("SG_CUDA_LIBRARY") == NULL) {
        snprintf(err, errlen, "built without CUDA (no nvcc at "
                 "/usr/local/cuda/bin/nvcc when this engine was compiled)");
        return NULL;
    }
#endif
    pthread_mutex_lock(&mu);
    if (lib == NULL)
        lib = open_library(why, sizeof(why));
    h = lib;
    pthread_mutex_unlock(&mu);
    if (h == NULL)
        snprintf(err, errlen, "cannot load the CUDA backend (%s): %s",
                 CUDA_LIBRARY, why);
    return h;
}

sg_backend *
sg_backend_cuda_new(int device, char *err, int errlen)
{
    void       *lib = library(err, errlen);
    cuda_new_fn fn;

    if (lib == NULL)
        return NULL;
    /* the library's own definition of this very name: a handle's lookup
     * starts in the library itself */
    fn = (cuda_new_fn)dlsym(lib, "sg_backend_cuda_new");
    if (fn == NULL || fn == sg_backend_cuda_new) {
        snprintf(err, errlen, "%s has no CUDA backend entry point",
                 CUDA_LIBRARY);
        return NULL;
    }
    return fn(device, err, errlen);
}

/* The NCCL collective of a group of CUDA backends (kernels/cuda_nccl.cu),
 * from the same library; it takes host (destroyed here on failure). */
sg_coll *
sg_coll_nccl_new(sg_backend **b, int n, sg_coll *host, char *err,
    int errlen)
{
    void       *lib = library(err, errlen);
    nccl_new_fn fn = lib ? (nccl_new_fn)dlsym(lib, "sg_coll_nccl_new")
                         : NULL;

    if (fn == NULL || fn == sg_coll_nccl_new) {
        if (lib)
            snprintf(err, errlen, "%s has no NCCL collective (built without "
                     "nccl.h)", CUDA_LIBRARY);
        host->ops->destroy(host);
        return NULL;
    }
    return fn(b, n, host, err, errlen);
}
