/*
 * The scheduler: the engine thread's policy, kept apart from threads and
 * from the model so that tests can drive it with a fake step function.
 *
 * Each step it (1) admits waiting requests in FIFO order while a sequence
 * slot is free and the pool can hold everything the request will ever
 * need (its blocks are reserved, not taken: cached blocks stay reusable
 * until a sequence really needs the room), matching each prompt's longest
 * cached prefix; (2) builds one batch of every running decode (one token
 * each) and prefill chunks of the admitted prompts, oldest first, within
 * the step's token budget; (3) runs it, caches the newly completed full
 * blocks, samples and emits tokens, and finishes requests.
 *
 * Cancelling frees a request's blocks at once (the call is made between
 * steps, on the thread that steps).
 */
#ifndef SG_SCHEDULER_H
#define SG_SCHEDULER_H

#include <stdint.h>

#include "block_pool.h"
#include "model/model.h"
#include "prefix_cache.h"
#include "sparsegate.h"

/* Runs the model on a batch (sg_forward's contract); 0, or -1 + message, or
 * SG_ENOMEM + message when memory ran out (the requests end with errors
 * that say so). */
typedef int (*sg_step_fn)(void *ctx, sg_batch_item *items, int n_items,
    char *err, int errlen);
/* Receives each event as it happens. */
typedef void (*sg_emit_fn)(void *ctx, const sg_event *ev);

typedef struct sg_sched_opts {
    int n_blocks;            /* cache pool size in blocks */
    int max_running;
    int max_queue;
    int max_context;         /* prompt + max_tokens */
    int step_tokens;
    int prefill_chunk;
    int prefix_cache;
    int vocab;
    int eos_id;              /* -1: none */
    int lockstep;            /* 1: every step calls the step function, with
                                an empty batch when nothing can run (a
                                rank of a device group: the MoE layers'
                                exchanges need every rank) */
} sg_sched_opts;

typedef struct sg_sched sg_sched;

/* Fills zero fields with the defaults of sparsegate.h and keeps the
 * budget large enough for every running decode. */
void sg_sched_opts_normalize(sg_sched_opts *o);

/* Checks a request against the limits; SG_OK, SG_EINVAL or SG_ETOOLONG
 * with a message.  Pure: safe on any thread. */
int sg_sched_validate(const sg_sched_opts *o, const sg_request *r,
    char *err, int errlen);

/* NULL when out of memory (message in err). */
sg_sched *sg_sched_new(const sg_sched_opts *o, sg_step_fn step,
    void *step_ctx, sg_emit_fn emit, void *emit_ctx, char *err, int errlen);
/* Frees everything; requests still held are dropped without events. */
void sg_sched_free(sg_sched *s);

/* Queues a request under the given id (validates it; SG_EBUSY when the
 * queue is full, SG_ENOMEM when out of memory); its cache_salt names its
 * prefix cache namespace. */
int sg_sched_submit(sg_sched *s, const sg_request *r, uint64_t id,
    char *err, int errlen);
/* Finishes a waiting or running request now (DONE, SG_FINISH_CANCELLED);
 * 0 when it was found. */
int sg_sched_cancel(sg_sched *s, uint64_t id);
void sg_sched_cancel_all(sg_sched *s);
/* Pauses (1) or resumes (0) a request's decoding; 0 when it was found. */
int sg_sched_pause(sg_sched *s, uint64_t id, int paused);

/* One step; returns the tokens run through the model (0: nothing to do
 * or nothing admissible). */
int sg_sched_step(sg_sched *s);
/* 1 when no request is waiting or running. */
int sg_sched_idle(const sg_sched *s);
/* 1 when a step may have work: a request waiting, or one running that is
 * not paused (or still has prompt to compute). */
int sg_sched_runnable(const sg_sched *s);
int sg_sched_waiting(const sg_sched *s);

void sg_sched_stats(const sg_sched *s, sg_engine_stats *st);

/* For placing a request on one of several schedulers (serve/ranks.c):
 * the leading full blocks of tokens (at most those a hit may cover) that
 * its cache holds or that a waiting or running prompt shares, in the
 * namespace of the salt, and the
 * tokens of work it holds (prompt tokens not yet computed plus tokens
 * still to generate, at most). */
int sg_sched_prefix_blocks(sg_sched *s, const int32_t *tokens, int n_tokens,
    const void *salt, size_t salt_len);
int64_t sg_sched_backlog(const sg_sched *s);
/* 1 when a submit would be refused for a full queue. */
int sg_sched_queue_full(const sg_sched *s);
/* The ids of the waiting and running requests (up to max written);
 * returns how many there are. */
int sg_sched_ids(const sg_sched *s, uint64_t *ids, int max);

/* Checks every invariant (block holders = sequences + cache, reservations
 * covered by free and evictable blocks, limits); 0 or -1 + message. */
int sg_sched_check(const sg_sched *s, char *err, int errlen);

/* Test hook: sees each request's logits before its token is sampled. */
typedef void (*sg_logits_fn)(void *ctx, uint64_t id, int n_generated,
    const float *logits, int vocab);
void sg_sched_set_logits_hook(sg_sched *s, sg_logits_fn fn, void *ctx);

/* For tests and the benchmark. */
sg_block_pool *sg_sched_pool(sg_sched *s);
sg_prefix_cache *sg_sched_cache(sg_sched *s);

#endif
