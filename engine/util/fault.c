/*
 * The fault injection countdown (sg_fault.h) and, in test builds, the
 * allocation functions the linker routes through it (-Wl,--wrap=malloc and
 * the rest: a call to malloc in any object linked so becomes a call to
 * __wrap_malloc, and __real_malloc is the C library's).
 */
#include <errno.h>
#include <execinfo.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "sg_fault.h"

static atomic_long countdown;    /* > 0: allocations left before one fails */
static atomic_long counted;
static atomic_int  fired;
static atomic_int  host_only;    /* the engine's threads are not counted */
static _Thread_local int engine_thread;

void
sg_fault_engine_thread(void)
{
    engine_thread = 1;
}

#ifdef SG_FAULT_INJECTION

int
sg_fault_available(void)
{
    return 1;
}

void
sg_fault_arm(long n)
{
    atomic_store(&counted, 0);
    atomic_store(&fired, 0);
    atomic_store(&host_only, 0);
    atomic_store(&countdown, n > 0 ? n : 0);
}

void
sg_fault_arm_host(long n)
{
    atomic_store(&counted, 0);
    atomic_store(&fired, 0);
    atomic_store(&host_only, 1);
    atomic_store(&countdown, n > 0 ? n : 0);
}

long
sg_fault_disarm(void)
{
    atomic_store(&countdown, 0);
    return atomic_load(&counted);
}

int
sg_fault_fired(void)
{
    return atomic_load(&fired);
}

int
sg_fault_hit(void)
{
    long left;

    if (atomic_load(&countdown) <= 0
        || (engine_thread && atomic_load(&host_only)))
        return 0;
    left = atomic_fetch_sub(&countdown, 1);
    if (left <= 0)
        return 0;                   /* another thread took the last one */
    atomic_fetch_add(&counted, 1);
    if (left == 1) {
        atomic_store(&fired, 1);
        /* where it failed, for a person reading a failure */
        if (getenv("SG_FAULT_BACKTRACE")) {
            void *frames[24];
            int   n = backtrace(frames, 24);
            backtrace_symbols_fd(frames, n, 2);
        }
        return 1;
    }
    return 0;
}

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);
int   __real_posix_memalign(void **p, size_t align, size_t n);
void *__real_aligned_alloc(size_t align, size_t n);

void *
__wrap_malloc(size_t n)
{
    return sg_fault_hit() ? NULL : __real_malloc(n);
}

void *
__wrap_calloc(size_t n, size_t size)
{
    return sg_fault_hit() ? NULL : __real_calloc(n, size);
}

void *
__wrap_realloc(void *p, size_t n)
{
    /* a failed realloc leaves the block as it was */
    return sg_fault_hit() ? NULL : __real_realloc(p, n);
}

char *
__wrap_strdup(const char *s)
{
    return sg_fault_hit() ? NULL : __real_strdup(s);
}

char *
__wrap_strndup(const char *s, size_t n)
{
    return sg_fault_hit() ? NULL : __real_strndup(s, n);
}

int
__wrap_posix_memalign(void **p, size_t align, size_t n)
{
    return sg_fault_hit() ? ENOMEM : __real_posix_memalign(p, align, n);
}

void *
__wrap_aligned_alloc(size_t align, size_t n)
{
    return sg_fault_hit() ? NULL : __real_aligned_alloc(align, n);
}

#else

int
sg_fault_available(void)
{
    return 0;
}

void
sg_fault_arm(long n)
{
    (void)n;
}

void
sg_fault_arm_host(long n)
{
    (void)n;
}

long
sg_fault_disarm(void)
{
    return atomic_load(&counted);
}

int
sg_fault_fired(void)
{
    return atomic_load(&fired);
}

int
sg_fault_hit(void)
{
    (void)countdown;
    (void)host_only;
    (void)engine_thread;
    return 0;
}

#endif
