/*
 * The CPU backend's worker pool (engine/cpu/cpu_pool.c): every index of a
 * parallel loop runs exactly once, loop after loop, whether the workers
 * watch for the next loop (the bounded spin) or sleep at once, and a loop
 * started after the workers went back to sleep still runs and returns.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model/backend.h"
#include "cpu/cpu_internal.h"
#include "check.h"

enum { N = 997 };               /* odd: the chunks do not divide it */

typedef struct {
    atomic_int hits[N];
    atomic_int calls;
} count_ctx;

static void
count_range(void *arg, int64_t i0, int64_t i1)
{
    count_ctx *c = arg;

    atomic_fetch_add(&c->calls, 1);
    for (int64_t i = i0; i < i1; i++)
        atomic_fetch_add(&c->hits[i], 1);
}

/* `loops` loops back to back (as a forward pass runs them); returns how
 * many indexes did not run exactly once per loop. */
static int
run_loops(sg_backend *b, int loops, int64_t n)
{
    count_ctx *c = calloc(1, sizeof(*c));
    int        bad = 0;

    for (int l = 0; l < loops; l++)
        cpu_parallel(b, n, 1, 1e9, count_range, c);
    for (int64_t i = 0; i < n; i++)
        bad += atomic_load(&c->hits[i]) != loops;
    free(c);
    return bad;
}

static void
pool_case(const char *spin_us)
{
    char        name[128];
    sg_backend *b;

    setenv("SG_CPU_SPIN_US", spin_us, 1);
    b = sg_backend_cpu_new(3);
    snprintf(name, sizeof(name), "pool (spin %s us) created", spin_us);
    CHECK(b != NULL, name, "sg_backend_cpu_new failed");
    if (b == NULL)
        return;

    snprintf(name, sizeof(name), "pool (spin %s us): 3000 loops, each "
             "index once", spin_us);
    int bad = run_loops(b, 3000, N);
    CHECK(bad == 0, name, "%d indexes ran a wrong number of times", bad);

    snprintf(name, sizeof(name), "pool (spin %s us): loops of 1-7 items",
             spin_us);
    bad = 0;
    for (int64_t n = 1; n < 8; n++)
        bad += run_loops(b, 200, n);
    CHECK(bad == 0, name, "%d indexes ran a wrong number of times", bad);

    /* longer than any spin: the workers are asleep when this one starts */
    struct timespec nap = { 0, 20 * 1000 * 1000 };
    nanosleep(&nap, NULL);
    snprintf(name, sizeof(name), "pool (spin %s us): a loop after the "
             "workers slept", spin_us);
    bad = run_loops(b, 5, N);
    CHECK(bad == 0, name, "%d indexes ran a wrong number of times", bad);

    b->ops->destroy(b);
}

int
main(void)
{
    check_seed_from_env();
    pool_case("0");
    pool_case("50");
    pool_case("5000");
    unsetenv("SG_CPU_SPIN_US");
    return check_finish();
}
