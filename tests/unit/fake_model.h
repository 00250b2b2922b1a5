/*
 * A fake model for the scheduler tests (test_scheduler, test_ranks).  For
 * every position it writes a hash of the value at the previous position
 * and the token into the slot of the sequence's block table, and draws
 * its logits from the last one: a token depends on the whole prefix
 * exactly as with a real model, so a block reused from the prefix cache
 * with the wrong content, a write into a shared block, or a missing block
 * shows up in the output.
 */
#ifndef SG_FAKE_MODEL_H
#define SG_FAKE_MODEL_H

#include <stdint.h>

#include "serve/scheduler.h"

#define FAKE_VOCAB 64

typedef struct fake {
    sg_sched *s;             /* whose pool the fake checks writes against */
    uint64_t *kv;            /* [n_blocks * SG_KV_BLOCK] */
    int       n_blocks;
    int       fail_percent;  /* injected model errors */
    int       violations;    /* bad block tables, writes to shared blocks */
    int       max_batch_tokens;
    int       calls;
    int       empty_calls;   /* calls with no items (lockstep ranks) */
    long      total_tokens;
} fake;

/* sg_step_fn over a fake (ctx). */
int fake_step(void *ctx, sg_batch_item *items, int n, char *err, int errlen);

#endif
