/*
 * The ranks of a device group as the engine thread schedules them: one
 * scheduler per rank (its own cache pool, prefix cache and admission
 * limits: max_running and the pool are per device), where each new
 * request goes, and steps taken in lockstep.
 *
 * Policy only, like scheduler.c: the model step is a function per rank and
 * the ranks' steps run through an executor the caller gives (the engine:
 * the device group's rank threads, which the MoE exchanges need; tests: a
 * loop over the ranks with a fake step).
 *
 * Placement: a request goes to the rank where it costs least: the time
 * until it is done there (the rank's backlog, in tokens of work, plus the
 * prompt tokens it would compute there: all of them less the leading
 * blocks that rank has cached or is computing for another request) plus
 * the work it adds to the group (those same tokens).  So a request
 * follows its cached prefix -- its documents, its conversation -- unless
 * that rank is behind the others by more than twice what the prefix
 * saves, and with no prefix anywhere it goes to the least loaded rank;
 * ties go to the lower rank.  A rank whose queue is full is skipped.
 *
 * Lockstep: when any rank has work, every rank steps (an idle one with an
 * empty batch); when none has, nobody steps.
 */
#ifndef SG_RANKS_H
#define SG_RANKS_H

#include <stdint.h>

#include "model/group.h"
#include "scheduler.h"

typedef struct sg_ranks sg_ranks;

/* Runs fn(fn_ctx, r) for every rank r, all at once or in turn (the shape
 * of sg_group_run). */
typedef void (*sg_ranks_exec_fn)(void *exec_ctx, sg_rank_fn fn,
    void *fn_ctx);

/*
 * n ranks, each with a scheduler of options o (lockstep when n > 1) whose
 * step function is step(step_ctx[r], ...).  Events of every rank reach
 * emit on the caller's thread, rank after rank, after each call below.
 * NULL when out of memory (message in err).
 */
sg_ranks *sg_ranks_new(int n, const sg_sched_opts *o, sg_step_fn step,
    void *const *step_ctx, sg_emit_fn emit, void *emit_ctx, char *err,
    int errlen);
void sg_ranks_free(sg_ranks *R);

int sg_ranks_count(const sg_ranks *R);
sg_sched *sg_ranks_sched(sg_ranks *R, int rank);

/* The rank a request would go to (the placement above), or -1 when every
 * rank's queue is full. */
int sg_ranks_place(sg_ranks *R, const int32_t *prompt, int n_prompt,
    const void *salt, size_t salt_len);

/* Queues a request on the rank placement picks (sg_sched_submit's
 * results); *rank gets it (may be NULL). */
int sg_ranks_submit(sg_ranks *R, const sg_request *r, uint64_t id,
    int *rank, char *err, int errlen);
/* 0 when the request was found on a rank and cancelled. */
int sg_ranks_cancel(sg_ranks *R, uint64_t id);
void sg_ranks_cancel_all(sg_ranks *R);
/* 0 when the request was found on a rank and paused (or resumed). */
int sg_ranks_pause(sg_ranks *R, uint64_t id, int paused);
/* 1 when a step of some rank may have work (sg_sched_runnable). */
int sg_ranks_runnable(const sg_ranks *R);

/* One lockstep step of every rank through exec (nothing when all are
 * idle); returns the tokens run over all ranks. */
int sg_ranks_step(sg_ranks *R, sg_ranks_exec_fn exec, void *exec_ctx);
int sg_ranks_idle(const sg_ranks *R);

/* The ranks' statistics added up. */
void sg_ranks_stats(const sg_ranks *R, sg_engine_stats *st);

/* Every scheduler's invariants, plus the group's: every rank called its
 * step function the same number of times, and no request id is on two
 * ranks.  0, or -1 with a message naming the rank. */
int sg_ranks_check(const sg_ranks *R, char *err, int errlen);

/* Test hook of every rank's scheduler (called on the rank's thread). */
void sg_ranks_set_logits_hook(sg_ranks *R, sg_logits_fn fn, void *ctx);

#endif
