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

/* What the host sees, per request id (0..FAKE_MAXREQ), and the request
 * itself, to rerun it alone. */
#define FAKE_MAXREQ 400
#define FAKE_MAXGEN 48

typedef struct fake_seen {
    int      accepted;
    int      terminal;           /* terminal events received */
    int      after_terminal;     /* events after the terminal one */
    int      kind, finish;
    int      n_tok;
    int32_t  tok[FAKE_MAXGEN];
    int      completion, cached, prompt;
    int      rank;               /* where it was placed (ranks.c) */
    int32_t *prompt_ids;
    int      n_prompt, max_tokens;
    float    temperature, top_p;
    uint64_t seed;
} fake_seen;

extern fake_seen fake_reqs[FAKE_MAXREQ];

/* sg_emit_fn: records an event into fake_reqs[ev->id]. */
void fake_record(void *ctx, const sg_event *ev);

#endif
