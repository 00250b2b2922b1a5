/*
 * Fault injection, as SQLite does it: a countdown that makes the N-th
 * allocation fail, so that a test can fail every allocation along a path
 * one by one and check that each failure ends in a clean error.
 *
 * Test builds only (make SAN=1 compiles with SG_FAULT_INJECTION and links
 * with -Wl,--wrap for malloc, calloc, realloc, strdup, strndup,
 * posix_memalign and aligned_alloc, so every allocation of the engine, of
 * retrieval, of the nginx module and of the test programs goes through
 * sg_fault_hit; the module's build also wraps its nginx pool calls).  In
 * other builds the calls below do nothing and sg_fault_available says 0.
 */
#ifndef SG_FAULT_H
#define SG_FAULT_H

/* 1 in a test build. */
int sg_fault_available(void);
/* Arms the countdown: the n-th allocation from now fails (n >= 1), and
 * only that one; n = 0 disarms. */
void sg_fault_arm(long n);
/* The same, counting the host's threads only: allocations of the engine's
 * threads (its step loop and CPU workers, which tests/unit/test_fault.c
 * fails one by one on their own) are not counted. */
void sg_fault_arm_host(long n);
/* Marks the calling thread as one of the engine's. */
void sg_fault_engine_thread(void);
/* Disarms; returns how many allocations were counted since sg_fault_arm
 * (the countdown stops counting once it has failed one). */
long sg_fault_disarm(void);
/* 1 when the armed allocation has failed. */
int sg_fault_fired(void);
/* The hook every allocation calls: 1 when this one is to fail. */
int sg_fault_hit(void);

#endif
