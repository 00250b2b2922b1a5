/*
 * libsparsegate's serving API: an engine that owns a model and a cache
 * pool on its own thread.  A host (the nginx module, the CLI, tests) submits
 * requests from its thread, waits for the engine's file descriptor to become
 * readable (an eventfd) and drains events.  No callback ever runs on a
 * foreign thread: the shape of hiredis's or libcurl-multi's host interface.
 *
 * This header is the whole of what a host may use of the engine: it
 * includes no other engine header, and the engine itself is an opaque
 * handle.  (The tokenizer a host needs is in tokenizer.h, beside it.)
 */
#ifndef SPARSEGATE_H
#define SPARSEGATE_H

#include <stddef.h>
#include <stdint.h>

typedef struct sg_engine sg_engine;
/* A constrained-decoding grammar (grammar.h makes them; the engine only
 * takes references). */
typedef struct sg_grammar sg_grammar;

/* The defaults, in the one place they are written: sg_engine_opts_default,
 * the engine's scheduler (for fields left 0) and the nginx module's
 * directives take them from here. */
#define SG_DEFAULT_KV_BYTES       ((size_t)1 << 30)   /* cache pool, 1 GiB */
#define SG_DEFAULT_MAX_RUNNING    64
#define SG_DEFAULT_MAX_QUEUE      256
#define SG_DEFAULT_STEP_TOKENS    2048
#define SG_DEFAULT_PREFILL_CHUNK  512

typedef struct sg_engine_opts {
    const char    *model_dir;        /* config.json + safetensors */

    /* how the model runs */
    const char    *backend;          /* "cpu" (default) or "cuda" */
    int            device;           /* CUDA device */
    const char    *devices;          /* a device group, "0-7" or "0,2,4":
                                        one rank per device, attention
                                        data-parallel, experts spread; with
                                        the CPU backend host ranks (NUMA
                                        nodes when there are several);
                                        NULL = the one device above */
    int            n_threads;        /* CPU threads; 0 = all cores */
    int            dense;            /* 1: indexer off, every causal key
                                        attended (DSA off) */
    int            kv_fp8;           /* 1 (default): latent cached as e4m3 +
                                        scales; 0: exact cache */
    int            window;           /* 1: each token attends its
                                        index_topk most recent keys (a
                                        baseline for what DSA keeps);
                                        excludes dense */
    int            index_share;      /* IndexCache: >= 2 runs the indexer on
                                        every index_share-th layer only;
                                        0 or 1: every layer */

    /* serving (kv_bytes, max_running and step_tokens per rank) */
    size_t         kv_bytes;         /* cache pool budget; 0 = 1 GiB */
    int            max_running;      /* sequences decoding at once; 0 = 64 */
    int            max_queue;        /* waiting requests; 0 = 256 */
    int            max_context;      /* prompt + generation; 0 = config max */
    int            step_tokens;      /* token budget per step; 0 = 2048 */
    int            prefill_chunk;    /* prefill chunk; 0 = 512 */
    int            prefix_cache;     /* 1: reuse cached prefixes */
} sg_engine_opts;

void sg_engine_opts_default(sg_engine_opts *o);

/* The facts of a model a host needs (from its config.json). */
typedef struct sg_model_info {
    int vocab_size;
    int max_position_embeddings;     /* the longest context it takes */
    int num_hidden_layers;
    int hidden_size;
    int index_topk;                  /* keys each query attends (DSA) */
    int bos_token_id;
    int eos_token_id;
} sg_model_info;

/* Reads them from model_dir/config.json without loading the model (a host
 * checks its configuration with them before any engine starts); -1 with a
 * message naming the file and field. */
int sg_model_info_load(const char *model_dir, sg_model_info *info,
    char *err, int errlen);

/* Checks every safetensors file of model_dir against its header (dtype,
 * shape, offsets inside the file: a truncated file is named with its
 * size and the offset it lacks), reading the headers only; -1 with a
 * message naming the file. */
int sg_model_check_files(const char *model_dir, char *err, int errlen);
/*
 * What an engine started with o needs on each of its devices, from
 * config.json and the checkpoint's headers (or, without its files, the
 * shapes the config implies), without loading a weight: a host checks its
 * configuration with it (nginx -t).  device_bytes: one device's memory,
 * for min_devices (0: not computed).  -1 with a message naming the file,
 * field or device list.
 */
typedef struct sg_engine_plan {
    int     n_ranks;                 /* devices in o->devices (1 without) */
    size_t  rank_weight_bytes;       /* the largest rank's weights */
    size_t  weight_bytes;            /* every weight once (what host ranks
                                        share through one file mapping) */
    size_t  work_bytes;              /* per rank: the forward pass's working
                                        memory + the runtime's reserve */
    size_t  kv_bytes_per_token;
    int     max_context;             /* the longest request's tokens */
    int     min_devices;             /* fewest devices of device_bytes that
                                        hold weights, work and one longest
                                        request's cache; 0: none */
} sg_engine_plan;

int sg_engine_plan_make(const sg_engine_opts *o, size_t device_bytes,
    sg_engine_plan *p, char *err, int errlen);

typedef struct sg_request {
    const int32_t *prompt;           /* copied by submit */
    int            n_prompt;
    int            max_tokens;
    float          temperature;      /* 0 = greedy */
    float          top_p;            /* 1 = off */
    uint64_t       seed;
    int            ignore_eos;
    const int32_t *stop_ids;         /* extra stop tokens (copied) */
    int            n_stop_ids;
    void          *user;             /* returned in every event */

    /*
     * The logits' transforms, in this order (every field 0 = off):
     * repetition_penalty (prompt and generated tokens: a positive logit
     * divided by it, a negative one multiplied), frequency_penalty x count
     * and presence_penalty (generated tokens), logit_bias added, the
     * grammar's mask; then the temperature.  Logprobs are those of this
     * processed distribution; the draw then keeps the top_k likeliest,
     * those at least min_p x the likeliest's probability, and the top_p
     * nucleus, in this order.
     */
    int            top_k;            /* 0: off */
    float          min_p;            /* 0: off; 0..1 */
    float          presence_penalty;
    float          frequency_penalty;
    float          repetition_penalty;   /* 0 or 1: off; else > 0 */
    const int32_t *bias_ids;         /* logit_bias (copied) */
    const float   *bias_values;
    int            n_bias;
    int            logprobs;         /* 1: token events carry logprobs */
    int            top_logprobs;     /* 0..SG_MAX_TOP_LOGPROBS likeliest */
    sg_grammar    *grammar;          /* constrained decoding: the tokens
                                        allowed at each step, the end
                                        (submit takes a reference) */
    /* Tokens emitted instead of sampled, one per step, while they last:
     * a test hook (a host offers it only when configured to); copied. */
    const int32_t *script;
    int            n_script;
    /* The prefix cache's namespace (bytes, copied): cached prefixes are
     * shared only between requests of the same salt, so that no tenant can
     * learn from cached_tokens what another's prompts hold.  A host puts
     * its tenant in it (the nginx module: a digest of the API key and the
     * client's cache_salt).  NULL or 0 bytes: the shared namespace. */
    const void    *cache_salt;
    size_t         cache_salt_len;
} sg_request;

#define SG_MAX_TOP_LOGPROBS  20

typedef enum {
    SG_EV_TOKEN = 1,                 /* one generated token */
    SG_EV_DONE,                      /* finished; usage filled */
    SG_EV_ERROR                      /* failed; message filled */
} sg_event_kind;

typedef enum {
    SG_FINISH_STOP = 1,              /* EOS, a stop token, or the
                                        grammar's end */
    SG_FINISH_LENGTH,                /* max_tokens or context limit */
    SG_FINISH_CANCELLED
} sg_finish_reason;

typedef struct sg_event {
    sg_event_kind kind;
    uint64_t      id;
    void         *user;
    int32_t       token;
    int           finish;            /* sg_finish_reason, on DONE */
    int           prompt_tokens;
    int           cached_tokens;     /* prompt tokens served by the prefix cache */
    int           completion_tokens;
    char          message[160];

    /* SG_EV_TOKEN of a request that asked for logprobs: the token's
     * log-probability and the n_top likeliest (largest first, ties by
     * id), under the processed distribution (sg_request). */
    float         logprob;
    int           n_top;
    int32_t       top_ids[SG_MAX_TOP_LOGPROBS];
    float         top_logprobs[SG_MAX_TOP_LOGPROBS];
    int           error;             /* on ERROR: SG_ENOMEM (out of memory:
                                        retry later) or SG_EENGINE */
} sg_event;

/* Submit results (and an ERROR event's error). */
#define SG_OK          0
#define SG_EINVAL     -1             /* bad request (message says why) */
#define SG_EBUSY      -2             /* queue full: retry later */
#define SG_ETOOLONG   -3             /* prompt + max_tokens over the limit */
#define SG_ENOMEM     -4             /* out of memory: retry later */
#define SG_EENGINE    -5             /* the engine failed (message says
                                        why): not the request's fault */

/* Loads the model and starts the engine thread. */
int sg_engine_start(const sg_engine_opts *o, sg_engine **out, char *err,
    int errlen);
/* Readable when events wait; never blocks the caller. */
int sg_engine_fd(const sg_engine *e);
/* The loaded model's facts (valid until sg_engine_stop). */
const sg_model_info *sg_engine_model_info(const sg_engine *e);
/*
 * Queues a request: SG_OK, or SG_EINVAL, SG_ETOOLONG, SG_EBUSY, SG_ENOMEM
 * at once with the reason.  After SG_OK exactly one DONE or ERROR event
 * follows, whatever happens (what it needs is reserved here), after any
 * number of TOKEN events.
 */
int sg_engine_submit(sg_engine *e, const sg_request *r, uint64_t *id,
    char *err, int errlen);
/* Stops a request and frees its cache at the next step; a DONE event with
 * SG_FINISH_CANCELLED follows (unless its last event is already out).
 * Never fails; an unknown or finished id is ignored. */
void sg_engine_cancel(sg_engine *e, uint64_t id);
/* Pauses a request's generation (paused 1) or lets it go on (0): a paused
 * sequence keeps its cache and slot but gets no tokens, so a host whose
 * client cannot take more output stops it from generating.  A prompt still
 * being computed is finished first.  Never fails; an unknown or finished
 * id is ignored. */
void sg_engine_pause(sg_engine *e, uint64_t id, int paused);
/* Moves up to max events out; returns how many (0 when none). */
int sg_engine_drain(sg_engine *e, sg_event *ev, int max);

typedef struct sg_engine_stats {
    int      queued;
    int      running;
    int      kv_blocks_total;
    int      kv_blocks_used;
    int      kv_blocks_cached;       /* held only by the prefix cache */
    uint64_t prompt_tokens;
    uint64_t cached_tokens;
    uint64_t generated_tokens;
    uint64_t requests_done;
    uint64_t requests_cancelled;
    uint64_t requests_refused;
    size_t   kv_block_bytes;         /* one block of 64 tokens, all layers */
    uint64_t kv_blocks_evicted;      /* cached blocks evicted for room */
    int      paused;                 /* running sequences paused */
    int      cache_namespaces;       /* prefix cache namespaces held */
} sg_engine_stats;

void sg_engine_get_stats(sg_engine *e, sg_engine_stats *st);
/* Cancels everything, joins the thread, frees the model. */
void sg_engine_stop(sg_engine *e);

#endif
