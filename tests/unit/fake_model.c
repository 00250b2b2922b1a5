/* The fake model of fake_model.h. */
#include <stdio.h>

#include "check.h"
#include "fake_model.h"
#include "model/kv.h"

static uint64_t
mix(uint64_t a, uint64_t b)
{
    uint64_t z = a * 0x9e3779b97f4a7c15ull + b + 0x632be59bd9b4e019ull;

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

int
fake_step(void *ctx, sg_batch_item *items, int n, char *err, int errlen)
{
    fake          *f = ctx;
    sg_block_pool *pool = sg_sched_pool(f->s);
    int            total = 0;

    f->calls++;
    f->empty_calls += n == 0;
    if (f->fail_percent && (int)(check_rand32() % 100) < f->fail_percent) {
        snprintf(err, errlen, "injected model error");
        return -1;
    }
    for (int i = 0; i < n; i++) {
        sg_seq   *seq = items[i].seq;
        int       end = seq->n_tokens + items[i].n_tokens;
        uint64_t  h = 0;

        total += items[i].n_tokens;
        if (seq->n_blocks * SG_KV_BLOCK < end) {
            f->violations++;
            continue;
        }
        for (int j = 0; j < items[i].n_tokens; j++) {
            int     pos = seq->n_tokens + j;
            int32_t blk = seq->blocks[pos / SG_KV_BLOCK];
            if (pos > 0) {
                int32_t pb = seq->blocks[(pos - 1) / SG_KV_BLOCK];
                h = f->kv[(size_t)pb * SG_KV_BLOCK + (pos - 1) % SG_KV_BLOCK];
            } else {
                h = 12345;
            }
            /* Only the sequence's own block may be written. */
            if (sg_block_refcount(pool, blk) != 1)
                f->violations++;
            h = mix(h, (uint64_t)items[i].tokens[j]);
            f->kv[(size_t)blk * SG_KV_BLOCK + pos % SG_KV_BLOCK] = h;
        }
        if (items[i].logits) {
            for (int v = 0; v < FAKE_VOCAB; v++)
                items[i].logits[v] = (float)(mix(h, v) >> 40) / 4194304.0f;
        }
        seq->n_tokens = end;
    }
    if (total > f->max_batch_tokens)
        f->max_batch_tokens = total;
    f->total_tokens += total;
    return 0;
}

fake_seen fake_reqs[FAKE_MAXREQ];

void
fake_record(void *ctx, const sg_event *ev)
{
    fake_seen *r = &fake_reqs[ev->id];

    (void)ctx;
    if (r->terminal) {
        r->after_terminal++;
        return;
    }
    if (ev->kind == SG_EV_TOKEN) {
        if (r->n_tok < FAKE_MAXGEN)
            r->tok[r->n_tok] = ev->token;
        r->n_tok++;
        return;
    }
    r->terminal++;
    r->kind = ev->kind;
    r->finish = ev->finish;
    r->completion = ev->completion_tokens;
    r->cached = ev->cached_tokens;
    r->prompt = ev->prompt_tokens;
}
