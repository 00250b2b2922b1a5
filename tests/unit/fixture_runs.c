#include "fixture_runs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "offline/protocol.h"

void *
fixture_file(const char *variant, const char *run, const char *file,
    size_t *n)
{
    char   path[2048];
    size_t len = 0;
    void  *p;

    snprintf(path, sizeof(path), "%s/tiny-v32/%s/expected/%s%s%s",
             check_fixtures_dir(), variant, run ? run : "", run ? "/" : "",
             file);
    p = check_read_file(path, &len);
    if (n)
        *n = len / 4;
    return p;
}

void
fixture_check_fp8_forced(sg_model *m, const char *name, double *dp,
    double *dd)
{
    const char     *run = "fix_sparse";
    sg_protocol     p = { 0 };
    sg_protocol_out o;
    size_t          np, nt;
    char            err[512];
    int32_t *prompt = fixture_file("fp8", NULL, "prompt.i32.bin", &np);
    int32_t *tokens = fixture_file("fp8", run, "tokens.i32.bin", &nt);
    float   *pl = fixture_file("fp8", run, "prefill_logits.f32.bin", NULL);
    float   *dl = fixture_file("fp8", run, "decode_logits.f32.bin", NULL);
    int32_t *ptk = fixture_file("fp8", run, "prefill_topk_all.i32.bin", NULL);
    int32_t *tk = fixture_file("fp8", run, "topk.i32.bin", NULL);
    int32_t *pex = fixture_file("fp8", run, "prefill_experts_all.i32.bin",
                                NULL);
    int32_t *ex = fixture_file("fp8", run, "experts.i32.bin", NULL);

    if (dp)
        *dp = -1;
    if (dd)
        *dd = -1;
    if (!m || !prompt || !tokens || !pl || !dl || !ptk || !tk || !pex
        || !ex)
    {
        CHECK(0, check_named(name, "run"), "no model or missing fixture "
              "files under %s", check_fixtures_dir());
        goto done;
    }
    int V = m->cfg.vocab_size, N = (int)nt - 1;

    p.prompt = prompt;
    p.n_prompt = (int)np;
    p.steps = N;
    p.teacher = tokens;
    p.force_prefill_topk = ptk;
    p.force_topk = tk;
    p.force_prefill_experts = pex;
    p.force_experts = ex;
    if (sg_protocol_run(m, &p, &o, err, sizeof(err)) != 0) {
        CHECK(0, check_named(name, "run"), "%s", err);
        goto done;
    }
    double a = check_max_abs(o.prefill_logits, pl, V);
    double b = check_max_abs(o.decode_logits, dl, (size_t)N * V);
    CHECK(a <= 0.5 && b <= 0.5, check_named(name, "logits"),
          "max |d| prefill %.3g decode %.3g > 0.5", a, b);
    CHECK(memcmp(o.tokens, tokens, sizeof(int32_t) * (N + 1)) == 0,
          check_named(name, "argmax"),
          "argmax differs from the reference tokens");
    if (dp)
        *dp = a;
    if (dd)
        *dd = b;
    sg_protocol_out_free(&o);
done:
    free(prompt); free(tokens); free(pl); free(dl); free(ptk); free(tk);
    free(pex); free(ex);
}
