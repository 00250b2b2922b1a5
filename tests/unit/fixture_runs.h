/*
 * The reference fixtures (tests/fixtures/tiny-v32: DeepSeek's reference
 * code on tiny checkpoints) as the tests of every backend read them, and
 * the reference runs the engine is held to whatever the backend.
 */
#ifndef SG_FIXTURE_RUNS_H
#define SG_FIXTURE_RUNS_H

#include <stddef.h>

#include "model/model.h"

/* tiny-v32/VARIANT/expected/[RUN/]FILE, malloc'ed (NULL when missing);
 * *n gets its length in 4-byte values. */
void *fixture_file(const char *variant, const char *run, const char *file,
    size_t *n);

/*
 * The FP8 reference run (fp8 fix_sparse: FP8 KV, act_quant) on m with the
 * reference's decisions forced and its tokens fed back, held to the FP8
 * class: logits within 0.5 max |diff|, the same argmax.  Checks are named
 * NAME/run, NAME/logits, NAME/argmax; *dp, *dd (may be NULL) get the
 * prefill and decode max |diff|, or -1.
 */
void fixture_check_fp8_forced(sg_model *m, const char *name, double *dp,
    double *dd);

#endif
