/*
 * The CPU backend's worker threads: one parallel loop at a time, split in
 * chunks that the caller and the workers take from a shared counter.
 *
 * Not OpenMP: libgomp's idle workers spin after every parallel region
 * (unless OMP_WAIT_POLICY=passive is set before the process starts, which
 * a library cannot do), and on a shared host -- nginx workers, a test
 * machine -- the spinning costs the serial thread its CPU: the tiny
 * model's forward pass ran 10-25x slower.  These workers sleep on a
 * condition variable, and a loop whose chunks are all taken by the time a
 * late worker wakes costs that worker nothing.
 *
 * Between the two, a worker that has just finished a loop watches for the
 * next one for a short, bounded time (CPU_POOL_SPIN_US) before it sleeps:
 * inside a forward pass the next loop usually starts within microseconds,
 * and a worker still awake joins it at once, where a sleeping one is woken
 * by a system call and often arrives after the loop has ended.  Between
 * steps and requests the workers sleep as before.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "cpu_internal.h"
#include "sg_fault.h"

struct cpu_pool {
    pthread_mutex_t  call;         /* one parallel loop at a time */
    pthread_mutex_t  mu;
    pthread_cond_t   wake;         /* workers: a new loop (gen changed) */
    pthread_cond_t   done;         /* caller: the last worker left */
    pthread_t       *threads;
    int              n_workers;    /* started */
    int              stop;
    atomic_ullong    gen;          /* loops started; changed under mu,
                                    * also read without it (the spin) */
    long             spin_ns;      /* how long a worker watches for work */
    int              open;         /* the current loop still takes workers */
    int              inside;       /* workers that joined it, not yet out */

    /* the current loop */
    cpu_range_fn     fn;
    void            *ctx;
    int64_t          n, chunk;
    atomic_llong     next;
    double           min_work;     /* loops below it run serially */
    pid_t            pid;          /* the process whose threads these are */
    atomic_int       oom;          /* an op ran out of memory */
};

/* Set while a thread runs chunks: a loop started from inside one runs
 * serially. */
static _Thread_local int in_worker;
/* The pool whose loop this thread runs (for cpu_oom). */
static _Thread_local cpu_pool *loop_pool;

void
cpu_oom(void)
{
    if (loop_pool != NULL)
        atomic_store(&loop_pool->oom, 1);
}

void
cpu_backend_oom(sg_backend *b)
{
    cpu_pool *p = b->impl;

    if (p != NULL)
        atomic_store(&p->oom, 1);
}

int
cpu_take_oom(sg_backend *b)
{
    cpu_pool *p = b->impl;

    return p != NULL && atomic_exchange(&p->oom, 0) != 0;
}

static void
run_chunks(cpu_pool *p)
{
    int64_t i0;

    while ((i0 = atomic_fetch_add(&p->next, p->chunk)) < p->n) {
        int64_t i1 = i0 + p->chunk < p->n ? i0 + p->chunk : p->n;
        p->fn(p->ctx, i0, i1);
    }
}

static inline void
cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static int64_t
now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Called without the lock: returns once a loop newer than `seen` has
 * started, or after spin_ns. */
static void
watch_for_work(cpu_pool *p, uint64_t seen)
{
    int64_t end;

    if (p->spin_ns <= 0)
        return;
    end = now_ns() + p->spin_ns;
    do {
        for (int i = 0; i < 64; i++) {
            if (atomic_load_explicit(&p->gen, memory_order_acquire) != seen)
                return;
            cpu_relax();
        }
    } while (now_ns() < end);
}

/*
 * A worker joins a loop only while it is open: one that wakes after the
 * caller has taken every chunk and closed the loop goes back to sleep, and
 * the caller never waits for a worker that has not joined (on a busy
 * machine a sleeping worker can take milliseconds to be scheduled, and a
 * decode step runs a few such loops per layer).
 */
static void *
worker_main(void *arg)
{
    cpu_pool *p = arg;
    uint64_t  seen = 0;

    in_worker = 1;
    loop_pool = p;
    sg_fault_engine_thread();
    pthread_mutex_lock(&p->mu);
    for (;;) {
        if (p->gen == seen && !p->stop) {
            pthread_mutex_unlock(&p->mu);
            watch_for_work(p, seen);
            pthread_mutex_lock(&p->mu);
        }
        while (!p->stop && (p->gen == seen || !p->open))
            pthread_cond_wait(&p->wake, &p->mu);
        if (p->stop)
            break;
        seen = p->gen;
        p->inside++;
        pthread_mutex_unlock(&p->mu);
        run_chunks(p);
        pthread_mutex_lock(&p->mu);
        if (--p->inside == 0 && !p->open)
            pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int
cpu_online_cpus(void)
{
    cpu_set_t set;

    if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

cpu_pool *
cpu_pool_new(int n_threads, double min_work, long spin_us)
{
    cpu_pool *p = calloc(1, sizeof(*p));

    if (p == NULL)
        return NULL;
    p->min_work = min_work;
    p->spin_ns = spin_us * 1000;
    atomic_init(&p->gen, 0);
    p->pid = getpid();
    pthread_mutex_init(&p->call, NULL);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    atomic_init(&p->next, 0);
    atomic_init(&p->oom, 0);
    if (n_threads > 1) {
        p->threads = calloc(n_threads - 1, sizeof(pthread_t));
        for (int i = 0; p->threads && i < n_threads - 1; i++) {
            if (pthread_create(&p->threads[i], NULL, worker_main, p) != 0)
                break;                 /* fewer workers still work */
            p->n_workers++;
        }
    }
    return p;
}

void
cpu_pool_free(cpu_pool *p)
{
    if (p == NULL)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n_workers; i++)
        pthread_join(p->threads[i], NULL);
    free(p->threads);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done);
    pthread_mutex_destroy(&p->mu);
    pthread_mutex_destroy(&p->call);
    free(p);
}

void
cpu_parallel(sg_backend *b, int64_t n, int64_t min_chunk, double work,
             cpu_range_fn fn, void *ctx)
{
    cpu_pool *p = b->impl, *outer = loop_pool;
    int       nt = p ? p->n_workers + 1 : 1;
    int64_t   chunk;

    if (n <= 0)
        return;
    if (min_chunk < 1)
        min_chunk = 1;
    /* a forked child (an nginx worker of a master that loaded the model)
     * has none of its parent's threads: it runs loops serially */
    if (nt == 1 || in_worker || work < p->min_work || n <= min_chunk
        || getpid() != p->pid) {
        loop_pool = p;
        fn(ctx, 0, n);
        loop_pool = outer;
        return;
    }
    /* about four chunks per thread: a late or slow thread leaves its share
     * to the others */
    chunk = (n + 4 * nt - 1) / (4 * nt);
    if (chunk < min_chunk)
        chunk = min_chunk;

    pthread_mutex_lock(&p->call);
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->ctx = ctx;
    p->n = n;
    p->chunk = chunk;
    atomic_store(&p->next, 0);
    p->gen++;
    p->open = 1;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);

    in_worker = 1;
    loop_pool = p;
    run_chunks(p);
    loop_pool = outer;
    in_worker = 0;

    /* every chunk is taken: close the loop, wait for the workers that
     * joined it to finish theirs */
    pthread_mutex_lock(&p->mu);
    p->open = 0;
    while (p->inside > 0)
        pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
    pthread_mutex_unlock(&p->call);
}
