/*
 * The benchmarks' clocks: wall time, and the CPU seconds of the whole
 * process (the engine's threads; a bench's own thread mostly waits), a
 * measure that a busy shared machine disturbs far less than wall time.
 */
#ifndef SG_BENCH_CLOCK_H
#define SG_BENCH_CLOCK_H

#include <sys/resource.h>
#include <time.h>

static inline double
now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static inline double
cpu_seconds(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec
           + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
}

#endif
