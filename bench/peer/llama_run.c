/*
 * The `sparsegate run` protocol on llama.cpp, for bench/peer.sh: prefill a
 * prompt of token ids in one llama_decode call (llama.cpp splits it in its
 * own micro-batches), then greedy decode steps one token at a time, with
 * the same output lines as `sparsegate run` (wall and CPU time per phase).  Built by peer.sh against the
 * llama.cpp it builds; not part of SparseGate's build.
 *
 *   llama_run MODEL.gguf PROMPT.i32.bin STEPS THREADS [LOGITS.f32.bin [exact]]
 *
 * LOGITS: writes the prefill's last-row logits then each decode step's.
 * exact: f32 KV cache and no flash attention (llama.cpp's plainest path),
 * for the agreement check; the timed runs use llama.cpp's defaults.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "llama.h"

static double
clock_s(clockid_t id)
{
    struct timespec ts;

    clock_gettime(id, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

#define now() clock_s(CLOCK_MONOTONIC)
#define cpu_now() clock_s(CLOCK_PROCESS_CPUTIME_ID)

/* First index of the largest value, as sg_argmax. */
static llama_token
argmax(const float *x, int n)
{
    int best = 0;

    for (int i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

static void
quiet(enum ggml_log_level level, const char *text, void *data)
{
    if (level >= GGML_LOG_LEVEL_ERROR)
        fputs(text, stderr);
}

int
main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: llama_run MODEL.gguf PROMPT.i32.bin STEPS "
                "THREADS [LOGITS.f32.bin [exact]]\n");
        return 2;
    }
    const char *logits_path = argc > 5 ? argv[5] : NULL;
    int         exact = argc > 6 && strcmp(argv[6], "exact") == 0;
    int         steps = atoi(argv[3]), threads = atoi(argv[4]);
    FILE       *f = fopen(argv[2], "rb");
    long        bytes;

    if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (bytes = ftell(f)) <= 0) {
        fprintf(stderr, "llama_run: cannot read %s\n", argv[2]);
        return 1;
    }
    int          n_prompt = (int)(bytes / 4);
    llama_token *prompt = malloc(bytes);

    rewind(f);
    if (prompt == NULL || fread(prompt, 4, n_prompt, f) != (size_t)n_prompt) {
        fprintf(stderr, "llama_run: cannot read %s\n", argv[2]);
        return 1;
    }
    fclose(f);

    llama_log_set(quiet, NULL);
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    struct llama_model *model = llama_model_load_from_file(argv[1], mp);
    if (model == NULL) {
        fprintf(stderr, "llama_run: cannot load %s\n", argv[1]);
        return 1;
    }
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = n_prompt + steps + 64;
    cp.n_batch = n_prompt;
    cp.n_threads = threads;
    cp.n_threads_batch = threads;
    if (exact) {
        cp.type_k = GGML_TYPE_F32;
        cp.type_v = GGML_TYPE_F32;
        cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    }
    struct llama_context *ctx = llama_init_from_model(model, cp);
    if (ctx == NULL) {
        fprintf(stderr, "llama_run: cannot create a context\n");
        return 1;
    }
    int          n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    llama_token *tokens = malloc(sizeof(llama_token) * (steps + 1));
    FILE        *lf = logits_path ? fopen(logits_path, "wb") : NULL;

    double t0 = now(), c0 = cpu_now();
    if (llama_decode(ctx, llama_batch_get_one(prompt, n_prompt)) != 0) {
        fprintf(stderr, "llama_run: prefill failed\n");
        return 1;
    }
    const float *lg = llama_get_logits_ith(ctx, -1);
    double       t_prefill = now() - t0, c_prefill = cpu_now() - c0;

    tokens[0] = argmax(lg, n_vocab);
    if (lf)
        fwrite(lg, sizeof(float), n_vocab, lf);
    t0 = now();
    c0 = cpu_now();
    for (int i = 0; i < steps; i++) {
        if (llama_decode(ctx, llama_batch_get_one(&tokens[i], 1)) != 0) {
            fprintf(stderr, "llama_run: decode step %d failed\n", i);
            return 1;
        }
        lg = llama_get_logits_ith(ctx, -1);
        tokens[i + 1] = argmax(lg, n_vocab);
        if (lf)
            fwrite(lg, sizeof(float), n_vocab, lf);
    }
    double t_decode = now() - t0, c_decode = cpu_now() - c0;

    printf("tokens:");
    for (int i = 0; i <= steps; i++)
        printf(" %d", tokens[i]);
    printf("\nprefill: %d tokens in %.3f s (%.1f tok/s); decode: %d steps in "
           "%.3f s (%.2f tok/s)\n", n_prompt, t_prefill,
           n_prompt / t_prefill, steps, t_decode,
           steps / (t_decode > 0 ? t_decode : 1e-9));
    printf("cpu: prefill %.3f s, decode %.3f s\n", c_prefill, c_decode);
    if (lf)
        fclose(lf);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    free(prompt);
    free(tokens);
    return 0;
}
