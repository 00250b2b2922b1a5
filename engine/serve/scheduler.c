/*
 * Scheduling policy: admission with reserved blocks, continuous batching
 * of decodes with chunked prefill, prefix-cache reuse, sampling, events.
 */
#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grammar.h"
#include "model/kv.h"
#include "sampling.h"
#include "scheduler.h"
#include "util/mem.h"

typedef struct sreq {
    uint64_t     id;
    void        *user;
    int32_t     *tokens;          /* prompt, then generated [n_prompt+max] */
    int          n_prompt;
    int          max_tokens;
    int          n_tokens;        /* prompt + generated so far */
    int32_t     *stop_ids;
    int          n_stop;
    int          ignore_eos;
    sg_sampler   sampler;
    /* the logits' transforms (sg_request) */
    float        rep, freq, pres;
    int32_t     *bias_ids;
    float       *bias_values;
    int          n_bias;
    sg_counts    counts;          /* when a penalty is on */
    int          logprobs, top_logprobs;
    sg_grammar_state *grammar;
    int32_t     *script;
    int          n_script, script_at;
    sg_seq       seq;
    int          need_blocks;     /* blocks of the longest possible run */
    int          n_cached_blocks; /* leading blocks that are cache nodes */
    int          cached_tokens;
    int32_t      ns;              /* its prefix cache namespace (held) */
    int          paused;          /* no decode until resumed */
    struct sreq *prev, *next;
} sreq;

typedef struct sreq_list {
    sreq *head, *tail;
    int   n;
} sreq_list;

struct sg_sched {
    sg_sched_opts    o;
    sg_step_fn       step;
    void            *step_ctx;
    sg_emit_fn       emit;
    void            *emit_ctx;
    sg_block_pool    pool;
    sg_prefix_cache *cache;
    sreq_list        waiting;
    sreq_list        running;     /* admission order */
    sg_batch_item   *items;       /* [max_running] */
    sreq           **item_req;
    float           *logits;      /* [max_running][vocab] */
    float           *work_p;      /* sampling scratch [vocab] */
    int32_t         *work_idx;
    uint64_t         prompt_tokens, cached_tokens, generated_tokens;
    uint64_t         done, cancelled, refused, evicted;
    sg_logits_fn     logits_hook;
    void            *logits_ctx;
};

static void
list_push(sreq_list *l, sreq *r)
{
    r->next = NULL;
    r->prev = l->tail;
    if (l->tail)
        l->tail->next = r;
    else
        l->head = r;
    l->tail = r;
    l->n++;
}

static void
list_remove(sreq_list *l, sreq *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        l->head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        l->tail = r->prev;
    r->prev = r->next = NULL;
    l->n--;
}

static int
blocks_for(int n_tokens)
{
    return (n_tokens + SG_KV_BLOCK - 1) / SG_KV_BLOCK;
}

void
sg_sched_opts_normalize(sg_sched_opts *o)
{
    if (o->max_running <= 0)
        o->max_running = SG_DEFAULT_MAX_RUNNING;
    if (o->max_queue <= 0)
        o->max_queue = SG_DEFAULT_MAX_QUEUE;
    if (o->step_tokens <= 0)
        o->step_tokens = SG_DEFAULT_STEP_TOKENS;
    if (o->prefill_chunk <= 0)
        o->prefill_chunk = SG_DEFAULT_PREFILL_CHUNK;
    /* Whole blocks, for the same reason as the budget cut in a step. */
    o->prefill_chunk = (o->prefill_chunk + SG_KV_BLOCK - 1) / SG_KV_BLOCK
                       * SG_KV_BLOCK;
    /* Every running decode gets its token each step. */
    if (o->step_tokens < o->max_running + 1)
        o->step_tokens = o->max_running + 1;
}

int
sg_sched_validate(const sg_sched_opts *o, const sg_request *r, char *err,
    int errlen)
{
    int need;

    if (r->prompt == NULL || r->n_prompt < 1) {
        snprintf(err, errlen, "prompt: empty");
        return SG_EINVAL;
    }
    if (r->max_tokens < 1) {
        snprintf(err, errlen, "max_tokens: %d, must be at least 1",
                 r->max_tokens);
        return SG_EINVAL;
    }
    if (!(r->temperature >= 0) || !isfinite(r->temperature)) {
        snprintf(err, errlen, "temperature: must be a number >= 0");
        return SG_EINVAL;
    }
    if (!(r->top_p >= 0 && r->top_p <= 1)) {
        snprintf(err, errlen, "top_p: must be between 0 and 1");
        return SG_EINVAL;
    }
    if (r->n_stop_ids < 0 || (r->n_stop_ids > 0 && r->stop_ids == NULL)) {
        snprintf(err, errlen, "stop ids: %d given without a list",
                 r->n_stop_ids);
        return SG_EINVAL;
    }
    if (r->top_k < 0 || !(r->min_p >= 0 && r->min_p <= 1)) {
        snprintf(err, errlen, "top_k must be >= 0 and min_p in [0, 1]");
        return SG_EINVAL;
    }
    if (!isfinite(r->presence_penalty) || !isfinite(r->frequency_penalty)
        || !(r->repetition_penalty >= 0) || !isfinite(r->repetition_penalty))
    {
        snprintf(err, errlen, "penalties: presence and frequency must be "
                 "numbers, repetition_penalty > 0");
        return SG_EINVAL;
    }
    if (r->logprobs && (r->top_logprobs < 0
                        || r->top_logprobs > SG_MAX_TOP_LOGPROBS)) {
        snprintf(err, errlen, "top_logprobs: %d, must be 0..%d",
                 r->top_logprobs, SG_MAX_TOP_LOGPROBS);
        return SG_EINVAL;
    }
    if (r->n_bias < 0 || (r->n_bias > 0 && (!r->bias_ids || !r->bias_values))
        || r->n_script < 0 || (r->n_script > 0 && r->script == NULL))
    {
        snprintf(err, errlen, "logit bias or script: a count without a "
                 "list");
        return SG_EINVAL;
    }
    for (int i = 0; i < r->n_bias; i++) {
        if (r->bias_ids[i] < 0 || r->bias_ids[i] >= o->vocab
            || !isfinite(r->bias_values[i])) {
            snprintf(err, errlen, "logit bias %d: token %d outside the "
                     "vocabulary (0..%d) or not a number", i,
                     (int)r->bias_ids[i], o->vocab - 1);
            return SG_EINVAL;
        }
    }
    for (int i = 0; i < r->n_script; i++) {
        if (r->script[i] < 0 || r->script[i] >= o->vocab) {
            snprintf(err, errlen, "script token %d: id %d is outside the "
                     "vocabulary", i, (int)r->script[i]);
            return SG_EINVAL;
        }
    }
    for (int i = 0; i < r->n_prompt; i++) {
        if (r->prompt[i] < 0 || r->prompt[i] >= o->vocab) {
            snprintf(err, errlen, "prompt token %d: id %d is outside the "
                     "vocabulary (0..%d)", i, (int)r->prompt[i], o->vocab - 1);
            return SG_EINVAL;
        }
    }
    if (o->max_context > 0
        && (int64_t)r->n_prompt + r->max_tokens > o->max_context)
    {
        snprintf(err, errlen, "prompt (%d tokens) + max_tokens (%d) exceeds "
                 "the context limit of %d tokens", r->n_prompt, r->max_tokens,
                 o->max_context);
        return SG_ETOOLONG;
    }
    /* The last generated token is never fed back, so its KV never needs a
     * slot. */
    need = blocks_for(r->n_prompt + r->max_tokens - 1);
    if (need > o->n_blocks) {
        snprintf(err, errlen, "prompt (%d tokens) + max_tokens (%d) needs %d "
                 "cache blocks of %d tokens; the whole pool has %d",
                 r->n_prompt, r->max_tokens, need, SG_KV_BLOCK, o->n_blocks);
        return SG_ETOOLONG;
    }
    return SG_OK;
}

sg_sched *
sg_sched_new(const sg_sched_opts *o, sg_step_fn step, void *step_ctx,
    sg_emit_fn emit, void *emit_ctx, char *err, int errlen)
{
    sg_sched *s = calloc(1, sizeof(*s));

    if (s == NULL)
        goto oom;
    s->o = *o;
    sg_sched_opts_normalize(&s->o);
    s->step = step;
    s->step_ctx = step_ctx;
    s->emit = emit;
    s->emit_ctx = emit_ctx;
    if (sg_block_pool_init(&s->pool, s->o.n_blocks) != 0) {
        snprintf(err, errlen, "cache pool of %d blocks: cannot allocate its "
                 "bookkeeping", s->o.n_blocks);
        free(s);
        return NULL;
    }
    s->cache = sg_prefix_cache_new(&s->pool);
    s->items = calloc(s->o.max_running, sizeof(*s->items));
    s->item_req = calloc(s->o.max_running, sizeof(*s->item_req));
    s->logits = malloc(sizeof(float) * s->o.max_running * (size_t)s->o.vocab);
    s->work_p = malloc(sizeof(float) * (size_t)s->o.vocab);
    s->work_idx = malloc(sizeof(int32_t) * (size_t)s->o.vocab);
    if (s->cache == NULL || s->items == NULL || s->item_req == NULL
        || s->logits == NULL || s->work_p == NULL || s->work_idx == NULL)
    {
        sg_sched_free(s);
        goto oom;
    }
    return s;
oom:
    snprintf(err, errlen, "scheduler: out of memory");
    return NULL;
}

static void
release_blocks(sg_sched *s, sreq *r)
{
    for (int i = 0; i < r->seq.n_blocks; i++)
        sg_block_unref(&s->pool, r->seq.blocks[i]);
    r->seq.n_blocks = 0;
    r->n_cached_blocks = 0;
}

static void
free_req(sg_sched *s, sreq *r)
{
    sg_prefix_cache_ns_put(s->cache, r->ns);
    free(r->tokens);
    free(r->stop_ids);
    free(r->bias_ids);
    free(r->bias_values);
    free(r->script);
    sg_counts_free(&r->counts);
    sg_grammar_state_free(r->grammar);
    free(r->seq.blocks);
    free(r);
}

void
sg_sched_free(sg_sched *s)
{
    sreq *r;

    if (s == NULL)
        return;
    while ((r = s->waiting.head) != NULL) {
        list_remove(&s->waiting, r);
        free_req(s, r);
    }
    while ((r = s->running.head) != NULL) {
        list_remove(&s->running, r);
        release_blocks(s, r);
        free_req(s, r);
    }
    sg_prefix_cache_free(s->cache);
    sg_block_pool_destroy(&s->pool);
    free(s->items);
    free(s->item_req);
    free(s->logits);
    free(s->work_p);
    free(s->work_idx);
    free(s);
}

int
sg_sched_submit(sg_sched *s, const sg_request *q, uint64_t id, char *err,
    int errlen)
{
    sreq *r;
    int   rc = sg_sched_validate(&s->o, q, err, errlen);

    if (rc != SG_OK) {
        s->refused++;
        return rc;
    }
    if (s->waiting.n >= s->o.max_queue) {
        snprintf(err, errlen, "the queue is full (%d requests waiting)",
                 s->waiting.n);
        s->refused++;
        return SG_EBUSY;
    }
    r = calloc(1, sizeof(*r));
    if (r == NULL)
        goto oom;
    r->id = id;
    r->user = q->user;
    r->n_prompt = q->n_prompt;
    r->max_tokens = q->max_tokens;
    r->n_tokens = q->n_prompt;
    r->ignore_eos = q->ignore_eos;
    r->need_blocks = blocks_for(q->n_prompt + q->max_tokens - 1);
    r->tokens = malloc(sizeof(int32_t) * ((size_t)q->n_prompt + q->max_tokens));
    r->seq.blocks = malloc(sizeof(int32_t) * r->need_blocks);
    r->seq.cap_blocks = r->need_blocks;
    if (r->tokens == NULL || r->seq.blocks == NULL)
        goto oom;
    memcpy(r->tokens, q->prompt, sizeof(int32_t) * q->n_prompt);
    if (q->n_stop_ids > 0) {
        r->stop_ids = malloc(sizeof(int32_t) * q->n_stop_ids);
        if (r->stop_ids == NULL)
            goto oom;
        memcpy(r->stop_ids, q->stop_ids, sizeof(int32_t) * q->n_stop_ids);
        r->n_stop = q->n_stop_ids;
    }
    r->ns = sg_prefix_cache_ns_get(s->cache, q->cache_salt,
                                   q->cache_salt ? q->cache_salt_len : 0);
    if (r->ns < 0) {
        r->ns = 0;
        goto oom;
    }
    sg_sampler_init(&r->sampler, q->temperature, q->top_p, q->seed);
    r->sampler.top_k = q->top_k;
    r->sampler.min_p = q->min_p;
    r->rep = q->repetition_penalty;
    r->freq = q->frequency_penalty;
    r->pres = q->presence_penalty;
    r->logprobs = q->logprobs;
    r->top_logprobs = q->top_logprobs;
    if (sg_memdup(&r->bias_ids, q->bias_ids, q->n_bias, sizeof(int32_t))
        || sg_memdup(&r->bias_values, q->bias_values, q->n_bias,
                     sizeof(float))
        || sg_memdup(&r->script, q->script, q->n_script, sizeof(int32_t)))
        goto oom;
    r->n_bias = q->n_bias;
    r->n_script = q->n_script;
    if (r->rep > 0 && r->rep != 1) {
        for (int i = 0; i < q->n_prompt; i++) {
            if (sg_counts_add(&r->counts, q->prompt[i], 0) != 0)
                goto oom;
        }
    }
    if (q->grammar != NULL
        && (r->grammar = sg_grammar_state_new(q->grammar)) == NULL)
        goto oom;
    list_push(&s->waiting, r);
    return SG_OK;
oom:
    if (r)
        free_req(s, r);
    snprintf(err, errlen, "out of memory");
    return SG_ENOMEM;
}

static void
emit_done(sg_sched *s, sreq *r, sg_event_kind kind, int finish, int error,
    const char *message)
{
    sg_event ev;

    memset(&ev, 0, sizeof(ev));
    ev.kind = kind;
    ev.id = r->id;
    ev.user = r->user;
    ev.token = -1;
    ev.finish = finish;
    ev.prompt_tokens = r->n_prompt;
    ev.cached_tokens = r->cached_tokens;
    ev.completion_tokens = r->n_tokens - r->n_prompt;
    if (message)
        snprintf(ev.message, sizeof(ev.message), "%s", message);
    if (kind == SG_EV_ERROR)
        ev.error = error ? error : SG_EENGINE;
    s->emit(s->emit_ctx, &ev);
}

/* Takes a request out of whichever list holds it, frees its blocks, sends
 * its last event and frees it.  On ERROR, reason is the error (SG_ENOMEM,
 * SG_EENGINE). */
static void
finish(sg_sched *s, sreq *r, int running, sg_event_kind kind, int reason,
    const char *message)
{
    list_remove(running ? &s->running : &s->waiting, r);
    release_blocks(s, r);
    if (kind == SG_EV_DONE && reason == SG_FINISH_CANCELLED)
        s->cancelled++;
    else if (kind == SG_EV_DONE)
        s->done++;
    emit_done(s, r, kind, kind == SG_EV_DONE ? reason : 0,
              kind == SG_EV_ERROR ? reason : 0, message);
    free_req(s, r);
}

static sreq *find(sg_sched *s, uint64_t id, int *running);

int
sg_sched_cancel(sg_sched *s, uint64_t id)
{
    int   running;
    sreq *r = find(s, id, &running);

    if (r == NULL)
        return -1;
    finish(s, r, running, SG_EV_DONE, SG_FINISH_CANCELLED, NULL);
    return 0;
}

static sreq *
find(sg_sched *s, uint64_t id, int *running)
{
    for (sreq *r = s->running.head; r; r = r->next) {
        if (r->id == id) {
            *running = 1;
            return r;
        }
    }
    for (sreq *r = s->waiting.head; r; r = r->next) {
        if (r->id == id) {
            *running = 0;
            return r;
        }
    }
    return NULL;
}

int
sg_sched_pause(sg_sched *s, uint64_t id, int paused)
{
    int   running;
    sreq *r = find(s, id, &running);

    if (r == NULL)
        return -1;
    r->paused = paused != 0;
    return 0;
}

void
sg_sched_cancel_all(sg_sched *s)
{
    while (s->running.head)
        finish(s, s->running.head, 1, SG_EV_DONE, SG_FINISH_CANCELLED, NULL);
    while (s->waiting.head)
        finish(s, s->waiting.head, 0, SG_EV_DONE, SG_FINISH_CANCELLED, NULL);
}

/* Blocks the running requests may still take. */
static int
reserved_blocks(const sg_sched *s)
{
    int n = 0;

    for (const sreq *r = s->running.head; r; r = r->next)
        n += r->need_blocks - r->seq.n_blocks;
    return n;
}

static int
available_blocks(const sg_sched *s)
{
    return s->pool.n_free + sg_prefix_cache_evictable(s->cache);
}

/* Leading full blocks tokens shares with the prompt of r. */
static int
shared_blocks(const sreq *r, const int32_t *tokens, int max)
{
    int k = 0, lim = r->n_prompt / SG_KV_BLOCK;

    if (lim > max)
        lim = max;
    while (k < lim
           && memcmp(r->tokens + (size_t)k * SG_KV_BLOCK,
                     tokens + (size_t)k * SG_KV_BLOCK,
                     sizeof(int32_t) * SG_KV_BLOCK) == 0)
    {
        k++;
    }
    return k;
}

/*
 * 1 when a running request is prefilling a prompt that shares with r a
 * prefix beyond r's hits, long enough that r had better wait for those
 * blocks to be cached than compute them a second time: a burst of
 * questions about one document computes the document once.  The shared
 * part must be at least half of r's prompt (and four blocks); the other
 * request progresses every step, so the wait is bounded.
 */
static int
worth_waiting(const sg_sched *s, const sreq *r, int hits)
{
    int max_hit = (r->n_prompt - 1) / SG_KV_BLOCK;

    for (const sreq *o = s->running.head; o; o = o->next) {
        int k;
        if (o->seq.n_tokens >= o->n_prompt || o->ns != r->ns)
            continue;                    /* not prefilling, or no sharing */
        k = shared_blocks(o, r->tokens, max_hit);
        /* Wait while o still has shared blocks to compute, if what is
         * shared in all is worth it. */
        int shared = k * SG_KV_BLOCK;
        if (k > hits && shared >= 4 * SG_KV_BLOCK && 2 * shared >= r->n_prompt)
            return 1;
    }
    return 0;
}

/* Admits the request at the head of the queue if its whole run fits;
 * 0 when it must wait. */
static int
try_admit(sg_sched *s, sreq *r)
{
    int hits = 0;

    if (s->o.prefix_cache) {
        /* At least the last prompt token is computed, so logits exist;
         * partial blocks are never shared. */
        int max_hit = (r->n_prompt - 1) / SG_KV_BLOCK;
        hits = sg_prefix_cache_match(s->cache, r->ns, r->tokens, r->n_prompt,
                                     max_hit, r->seq.blocks);
        if (worth_waiting(s, r, hits)) {
            for (int i = 0; i < hits; i++)
                sg_block_unref(&s->pool, r->seq.blocks[i]);
            return 0;
        }
    }
    if (r->need_blocks - hits + reserved_blocks(s) > available_blocks(s)) {
        for (int i = 0; i < hits; i++)
            sg_block_unref(&s->pool, r->seq.blocks[i]);
        return 0;
    }
    r->seq.n_blocks = hits;
    r->seq.n_tokens = hits * SG_KV_BLOCK;
    r->n_cached_blocks = hits;
    r->cached_tokens = hits * SG_KV_BLOCK;
    s->prompt_tokens += r->n_prompt;
    s->cached_tokens += r->cached_tokens;
    list_remove(&s->waiting, r);
    list_push(&s->running, r);
    return 1;
}

/* Gives a sequence the blocks for its first n_tokens tokens, evicting
 * cached blocks when the free list is empty; -1 only if the reservation
 * was broken (a bug, reported as a request error rather than a crash). */
static int
grow(sg_sched *s, sreq *r, int n_tokens)
{
    while (r->seq.n_blocks < blocks_for(n_tokens)) {
        int32_t id;
        if (r->seq.n_blocks >= r->seq.cap_blocks)
            return -1;
        if (s->pool.n_free == 0)
            s->evicted += sg_prefix_cache_evict_one(s->cache);
        id = sg_block_alloc(&s->pool);
        if (id < 0)
            return -1;
        r->seq.blocks[r->seq.n_blocks++] = id;
    }
    return 0;
}

static int
is_stop(const sg_sched *s, const sreq *r, int32_t tok)
{
    if (!r->ignore_eos && s->o.eos_id >= 0 && tok == s->o.eos_id)
        return 1;
    for (int i = 0; i < r->n_stop; i++)
        if (r->stop_ids[i] == tok)
            return 1;
    return 0;
}

/* The request's next token from its logits (transformed in place: the
 * penalties, the bias, the grammar's mask), with its logprobs in ev when
 * asked; -1 when the request was finished with an error. */
static int
next_token(sg_sched *s, sreq *r, float *logits, int32_t *tok, sg_event *ev)
{
    int vocab = s->o.vocab;

    if (r->counts.cap > 0 || r->freq != 0 || r->pres != 0)
        sg_penalize(logits, &r->counts, r->rep, r->freq, r->pres);
    for (int i = 0; i < r->n_bias; i++)
        logits[r->bias_ids[i]] += r->bias_values[i];
    if (r->grammar != NULL && r->script_at >= r->n_script) {
        int left = r->max_tokens - (r->n_tokens - r->n_prompt);
        if (sg_grammar_mask(r->grammar, left, logits, vocab) <= 0) {
            finish(s, r, 1, SG_EV_ERROR, 0, "constrained decoding: no token "
                   "is allowed here");
            return -1;
        }
    }
    if (r->script_at < r->n_script)
        *tok = r->script[r->script_at++];
    else
        *tok = sg_sample(&r->sampler, logits, vocab, s->work_p, s->work_idx);
    if (r->logprobs) {
        ev->n_top = sg_logprobs(logits, vocab, r->sampler.temperature, *tok,
                                &ev->logprob, r->top_logprobs, ev->top_ids,
                                ev->top_logprobs);
    }
    if ((r->counts.cap > 0 || r->freq != 0 || r->pres != 0)
        && sg_counts_add(&r->counts, *tok, 1) != 0) {
        finish(s, r, 1, SG_EV_ERROR, 0, "out of memory");
        return -1;
    }
    return 0;
}

/* Advances the grammar with the token: 1 when the output is complete
 * (nothing may follow).  A scripted token it refuses ends the constraint:
 * a script is a test's, and says what comes. */
static int
grammar_done(sreq *r, int32_t tok)
{
    int rc;

    if (r->grammar == NULL)
        return 0;
    rc = sg_grammar_advance(r->grammar, tok);
    if (rc < 0) {
        sg_grammar_state_free(r->grammar);
        r->grammar = NULL;
        return 0;
    }
    return rc == 1;
}

/* Adds one item to the batch; -1 when its blocks cannot be had. */
static int
add_item(sg_sched *s, int *n, sreq *r, int n_new, int want_logits)
{
    sg_batch_item *it = &s->items[*n];

    if (grow(s, r, r->seq.n_tokens + n_new) != 0) {
        finish(s, r, 1, SG_EV_ERROR, SG_EENGINE, "cache pool: no block for "
               "this request although one was reserved");
        return -1;
    }
    it->seq = &r->seq;
    it->tokens = r->tokens + r->seq.n_tokens;
    it->n_tokens = n_new;
    it->logits = want_logits ? s->logits + (size_t)*n * s->o.vocab : NULL;
    /* a prompt's last token computed alone is still a prompt token: the
     * forward pass then gives it the same form as in a cold run */
    it->prompt = r->seq.n_tokens < r->n_prompt;
    s->item_req[*n] = r;
    (*n)++;
    return 0;
}

int
sg_sched_step(sg_sched *s)
{
    int  n = 0, budget = s->o.step_tokens, ran = 0, rc;
    char err[160];

    while (s->waiting.head && s->running.n < s->o.max_running
           && try_admit(s, s->waiting.head))
    {
    }

    /* Decodes first: a running sequence's next token never waits (unless
     * it is paused). */
    for (sreq *r = s->running.head, *next; r; r = next) {
        next = r->next;
        if (r->seq.n_tokens >= r->n_prompt && budget > 0 && !r->paused) {
            if (add_item(s, &n, r, 1, 1) == 0)
                budget--;
        }
    }
    /* Then prompt chunks, oldest request first. */
    for (sreq *r = s->running.head, *next; r && budget > 0; r = next) {
        int left = r->n_prompt - r->seq.n_tokens, chunk;
        next = r->next;
        if (left <= 0)
            continue;
        chunk = left < s->o.prefill_chunk ? left : s->o.prefill_chunk;
        /* Chunks cut by the budget end on a block boundary when they can:
         * with chunks aligned to blocks, a prompt computed after a prefix
         * hit runs the very same chunks as without one (bitwise equal
         * results on a deterministic backend). */
        if (chunk > budget)
            chunk = budget >= SG_KV_BLOCK
                    ? budget / SG_KV_BLOCK * SG_KV_BLOCK : budget;
        if (add_item(s, &n, r, chunk, chunk == left) == 0)
            budget -= chunk;
    }
    if (n == 0 && !s->o.lockstep)
        return 0;

    for (int i = 0; i < n; i++)
        ran += s->items[i].n_tokens;
    err[0] = 0;
    rc = s->step(s->step_ctx, s->items, n, err, sizeof(err));
    if (rc != 0) {
        for (int i = 0; i < n; i++)
            finish(s, s->item_req[i], 1, SG_EV_ERROR,
                   rc == SG_ENOMEM ? SG_ENOMEM : SG_EENGINE,
                   err[0] ? err : "model step failed");
        return ran;
    }

    for (int i = 0; i < n; i++) {
        sreq          *r = s->item_req[i];
        sg_batch_item *it = &s->items[i];
        int            full = r->seq.n_tokens / SG_KV_BLOCK;
        int32_t        tok;
        sg_event       ev;

        if (s->o.prefix_cache && full > r->n_cached_blocks)
            r->n_cached_blocks = sg_prefix_cache_insert(s->cache, r->ns,
                r->tokens, full, r->seq.blocks, r->n_cached_blocks);
        if (it->logits == NULL)
            continue;

        if (s->logits_hook)
            s->logits_hook(s->logits_ctx, r->id, r->n_tokens - r->n_prompt,
                           it->logits, s->o.vocab);
        memset(&ev, 0, sizeof(ev));
        if (next_token(s, r, it->logits, &tok, &ev) != 0)
            continue;                    /* finished with an error */
        r->tokens[r->n_tokens++] = tok;
        s->generated_tokens++;
        ev.kind = SG_EV_TOKEN;
        ev.id = r->id;
        ev.user = r->user;
        ev.token = tok;
        ev.prompt_tokens = r->n_prompt;
        ev.cached_tokens = r->cached_tokens;
        ev.completion_tokens = r->n_tokens - r->n_prompt;
        s->emit(s->emit_ctx, &ev);

        if (is_stop(s, r, tok) || grammar_done(r, tok))
            finish(s, r, 1, SG_EV_DONE, SG_FINISH_STOP, NULL);
        else if (r->n_tokens - r->n_prompt >= r->max_tokens)
            finish(s, r, 1, SG_EV_DONE, SG_FINISH_LENGTH, NULL);
    }
    return ran;
}

int
sg_sched_prefix_blocks(sg_sched *s, const int32_t *tokens, int n_tokens,
    const void *salt, size_t salt_len)
{
    int     max = (n_tokens - 1) / SG_KV_BLOCK, best = 0;
    int32_t ns;

    if (!s->o.prefix_cache || max <= 0)
        return 0;
    /* within the request's namespace only: no other tenant's prefix
     * draws it to a rank */
    ns = sg_prefix_cache_ns_find(s->cache, salt, salt ? salt_len : 0);
    if (ns < 0)
        return 0;
    best = sg_prefix_cache_match(s->cache, ns, tokens, n_tokens, max, NULL);
    for (int l = 0; l < 2; l++) {
        for (const sreq *r = (l ? s->running : s->waiting).head; r;
             r = r->next)
        {
            int k = r->ns == ns ? shared_blocks(r, tokens, max) : 0;
            if (k > best)
                best = k;
        }
    }
    return best;
}

int64_t
sg_sched_backlog(const sg_sched *s)
{
    int64_t n = 0;

    for (int l = 0; l < 2; l++) {
        for (const sreq *r = (l ? s->running : s->waiting).head; r;
             r = r->next)
        {
            int left = r->n_prompt - r->seq.n_tokens;
            n += (left > 0 ? left : 0) + r->max_tokens
                 - (r->n_tokens - r->n_prompt);
        }
    }
    return n;
}

int
sg_sched_queue_full(const sg_sched *s)
{
    return s->waiting.n >= s->o.max_queue;
}

int
sg_sched_ids(const sg_sched *s, uint64_t *ids, int max)
{
    int n = 0;

    for (int l = 0; l < 2; l++) {
        for (const sreq *r = (l ? s->running : s->waiting).head; r;
             r = r->next, n++)
        {
            if (n < max)
                ids[n] = r->id;
        }
    }
    return n;
}

int
sg_sched_idle(const sg_sched *s)
{
    return s->waiting.n == 0 && s->running.n == 0;
}

int
sg_sched_runnable(const sg_sched *s)
{
    if (s->waiting.n > 0)
        return 1;
    for (const sreq *r = s->running.head; r; r = r->next)
        if (!r->paused || r->seq.n_tokens < r->n_prompt)
            return 1;
    return 0;
}

int
sg_sched_waiting(const sg_sched *s)
{
    return s->waiting.n;
}

void
sg_sched_stats(const sg_sched *s, sg_engine_stats *st)
{
    memset(st, 0, sizeof(*st));
    st->queued = s->waiting.n;
    st->running = s->running.n;
    st->kv_blocks_total = s->pool.n_blocks;
    st->kv_blocks_used = sg_block_pool_used(&s->pool);
    st->kv_blocks_cached = sg_prefix_cache_evictable(s->cache);
    st->prompt_tokens = s->prompt_tokens;
    st->cached_tokens = s->cached_tokens;
    st->generated_tokens = s->generated_tokens;
    st->requests_done = s->done;
    st->requests_cancelled = s->cancelled;
    st->requests_refused = s->refused;
    st->kv_blocks_evicted = s->evicted;
    for (const sreq *r = s->running.head; r; r = r->next)
        st->paused += r->paused;
    st->cache_namespaces = sg_prefix_cache_namespaces(s->cache);
}

int
sg_sched_check(const sg_sched *s, char *err, int errlen)
{
    int32_t *count;
    int      rc = -1, reserved, avail, held = 0;

    for (const sreq *r = s->running.head; r; r = r->next)
        held += r->ns > 0;
    for (const sreq *r = s->waiting.head; r; r = r->next)
        held += r->ns > 0;
    if (sg_block_pool_check(&s->pool, err, errlen) != 0
        || sg_prefix_cache_check(s->cache, err, errlen) != 0
        || sg_prefix_cache_check_ns(s->cache, held, err, errlen) != 0)
    {
        return -1;
    }
    if (s->running.n > s->o.max_running || s->waiting.n > s->o.max_queue) {
        snprintf(err, errlen, "%d running (max %d), %d waiting (max %d)",
                 s->running.n, s->o.max_running, s->waiting.n,
                 s->o.max_queue);
        return -1;
    }
    count = calloc(s->pool.n_blocks, sizeof(int32_t));
    if (count == NULL) {
        snprintf(err, errlen, "check: out of memory");
        return -1;
    }
    sg_prefix_cache_count_blocks(s->cache, count);
    for (const sreq *r = s->running.head; r; r = r->next) {
        if (r->seq.n_blocks < blocks_for(r->seq.n_tokens)
            || r->seq.n_blocks > r->need_blocks
            || r->n_cached_blocks > r->seq.n_blocks
            || r->seq.n_tokens > r->n_tokens)
        {
            snprintf(err, errlen, "request %llu: %d blocks for %d cached "
                     "tokens (needs at most %d)", (unsigned long long)r->id,
                     r->seq.n_blocks, r->seq.n_tokens, r->need_blocks);
            goto out;
        }
        for (int i = 0; i < r->seq.n_blocks; i++)
            count[r->seq.blocks[i]]++;
    }
    for (const sreq *r = s->waiting.head; r; r = r->next) {
        if (r->seq.n_blocks != 0) {
            snprintf(err, errlen, "waiting request %llu holds blocks",
                     (unsigned long long)r->id);
            goto out;
        }
    }
    for (int i = 0; i < s->pool.n_blocks; i++) {
        if (count[i] != sg_block_refcount(&s->pool, i)) {
            snprintf(err, errlen, "block %d: %d holders counted, refcount %d",
                     i, (int)count[i], sg_block_refcount(&s->pool, i));
            goto out;
        }
    }
    reserved = reserved_blocks(s);
    avail = available_blocks(s);
    if (reserved > avail) {
        snprintf(err, errlen, "%d blocks reserved but only %d free or "
                 "evictable", reserved, avail);
        goto out;
    }
    rc = 0;
out:
    free(count);
    return rc;
}

void
sg_sched_set_logits_hook(sg_sched *s, sg_logits_fn fn, void *ctx)
{
    s->logits_hook = fn;
    s->logits_ctx = ctx;
}

sg_block_pool *
sg_sched_pool(sg_sched *s)
{
    return &s->pool;
}

sg_prefix_cache *
sg_sched_cache(sg_sched *s)
{
    return s->cache;
}
