"""PyTorch reference logits of a checkpoint, in the fixtures' file layout,
and the comparison with the engine's `sparsegate run --dump`.

  reference.py write MODEL_DIR OUT_DIR --prompt-ids P.i32.bin --teacher T.i32.bin
  reference.py selftest [--build build]      random model: export, engine, compare
  reference.py fixtures MODEL_DIR OUT_DIR    the trained model's parity data
      (three held-out RAG prompts built by `sparsegate prompts`, their
      answers as teacher tokens; sparse with the FP8 indexer and dense)

The reference follows the engine: FP8 latent cache simulated, the indexer's
q/k in e4m3 with ue8m0 scales (index_fp8), top-k per row over causal keys.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export  # noqa: E402
from model import Model  # noqa: E402


def run_reference(model, prompt, teacher, mode="sparse", kv_fp8=True,
                  index_fp8=True):
    """Logits at the last prompt position and at each teacher step, and the
    per-layer top-k sets of every row (ascending, -1 padded)."""
    seq = torch.tensor(list(prompt) + list(teacher), dtype=torch.long)[None]
    P, N = len(prompt), len(teacher)
    sets = []
    with torch.no_grad():
        logits = model(seq, mode=mode, kv_fp8=kv_fp8, index_fp8=index_fp8,
                       topk_out=sets)[0]
    return (logits[P - 1].numpy(), logits[P:P + N].numpy(),
            [s[0] for s in sets])


def write(model_dir, out_dir, prompt, teacher, mode="sparse", prefix="",
          index_fp8=True):
    torch.set_num_threads(2)
    model = export.load(model_dir)
    model.eval()
    pre, dec, sets = run_reference(model, prompt, teacher, mode,
                                   index_fp8=index_fp8)
    os.makedirs(out_dir, exist_ok=True)
    np.asarray(prompt, dtype="<i4").tofile(os.path.join(out_dir, "prompt.i32.bin"))
    np.asarray(teacher, dtype="<i4").tofile(os.path.join(out_dir, "teacher.i32.bin"))
    pre.astype("<f4").tofile(os.path.join(out_dir, prefix + "prefill_logits.f32.bin"))
    dec.astype("<f4").tofile(os.path.join(out_dir, prefix + "decode_logits.f32.bin"))
    if sets:
        P = len(prompt)
        allrows = np.stack([s.numpy() for s in sets])        # [L, T, K]
        allrows[:, :, :] = np.sort(allrows, axis=-1)
        out = np.full_like(allrows, -1)
        for l in range(allrows.shape[0]):
            for t in range(allrows.shape[1]):
                row = allrows[l, t][allrows[l, t] >= 0]
                row = np.unique(row)
                out[l, t, :len(row)] = row
        out[:, :P].astype("<i4").tofile(
            os.path.join(out_dir, "prefill_topk_all.i32.bin"))
        out[:, P - 1:].astype("<i4").tofile(os.path.join(out_dir, "topk.i32.bin"))
    return pre, dec


def engine_run(sg, model_dir, ref_dir, out_dir, extra=()):
    n = os.path.getsize(os.path.join(ref_dir, "teacher.i32.bin")) // 4
    cmd = [sg, "run", "--model", model_dir, "--prompt-ids",
           os.path.join(ref_dir, "prompt.i32.bin"), "--steps", str(n),
           "--teacher", os.path.join(ref_dir, "teacher.i32.bin"),
           "--dump", out_dir] + list(extra)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def compare(ref_dir, out_dir, V, K):
    def rd(d, f):
        return np.fromfile(os.path.join(d, f), dtype="<f4")
    res = {}
    for f in ("prefill_logits.f32.bin", "decode_logits.f32.bin"):
        a, b = rd(ref_dir, f).reshape(-1, V), rd(out_dir, f).reshape(-1, V)
        res[f] = (float(np.abs(a - b).max()),
                  int((a.argmax(-1) == b.argmax(-1)).sum()), len(a))
    p = os.path.join(ref_dir, "prefill_topk_all.i32.bin")
    if os.path.exists(p):
        r = np.fromfile(p, dtype="<i4")
        o = np.fromfile(os.path.join(out_dir, "prefill_topk_all.i32.bin"),
                        dtype="<i4")
        if r.size == o.size:
            res["topk_sets_differing"] = topk_diff(r, o, K)
    return res


def topk_diff(r, o, K):
    """[rows whose set differs, rows] over every layer and prompt row."""
    rows, orows = r.reshape(-1, K), o.reshape(-1, K)
    diff = sum(set(a[a >= 0].tolist()) != set(b[b >= 0].tolist())
               for a, b in zip(rows, orows))
    return [int(diff), len(rows)]


def train_config():
    import train
    return train.CONFIG


def random_model(cfg, seed=1):
    torch.manual_seed(seed)
    m = Model(cfg, std=0.08)
    with torch.no_grad():
        for name, t, _ in export.named_tensors(m):
            if t.dim() == 1:
                t.add_(torch.randn_like(t) * 0.1)
    export.round_bf16_(m)
    return m


# the demo model's configuration, smaller: a random model for the self-test
SELFTEST_CFG = dict(train_config(), vocab_size=512, q_lora_rank=96,
                    index_n_heads=4, index_topk=16, rope_theta=1000.0,
                    max_position_embeddings=4096)
SELFTEST_CFG["rope_scaling"] = dict(SELFTEST_CFG["rope_scaling"], factor=8.0,
                                    original_max_position_embeddings=512)


def selftest(build):
    sg = os.path.join(build, "sparsegate")
    with tempfile.TemporaryDirectory() as tmp:
        m = random_model(SELFTEST_CFG)
        md = os.path.join(tmp, "model")
        export.export(m, md, None)
        g = torch.Generator().manual_seed(3)
        prompt = torch.randint(3, 512, (100,), generator=g).tolist()
        teacher = torch.randint(3, 512, (6,), generator=g).tolist()
        for mode, extra in (("dense", ["--dense"]), ("sparse", [])):
            ref = os.path.join(tmp, "ref_" + mode)
            out = os.path.join(tmp, "out_" + mode)
            write(md, ref, prompt, teacher, mode)
            engine_run(sg, md, ref, out, extra)
            print(mode, json.dumps(compare(ref, out, 512, SELFTEST_CFG["index_topk"])))


def fixtures(model_dir, out_dir, build):
    sys.path.insert(0, os.path.join(os.path.dirname(HERE_DIR), "bench"))
    import data
    import train
    sg = os.path.join(build, "sparsegate")
    tok = os.path.join(model_dir, "tokenizer.json")
    filler = os.path.join(os.path.dirname(HERE_DIR), "build", "train",
                          "filler.jsonl")
    gen = data.Gen(424242, data.load_filler(filler), heldout=True)
    os.makedirs(out_dir, exist_ok=True)
    for i, n in enumerate((200, 450, 800)):
        s = train.qa_samples(gen, 1, n)
        (ids, n_prompt, ok), = train.build_prompts(sg, tok, s, out_dir, "tmp")
        prompt, teacher = ids[:n_prompt].tolist(), ids[n_prompt:].tolist()
        d = os.path.join(out_dir, "p%d" % i)
        # the indexer unquantized: how often the engine's FP8 one differs
        write(model_dir, d, prompt, teacher, "sparse", index_fp8=False)
        write(model_dir, d, prompt, teacher, "dense", prefix="dense_")
        print("fixtures: %s: %d prompt + %d answer tokens" % (d, len(prompt),
                                                              len(teacher)))
    for f in ("tmp.jsonl", "tmp.bin"):
        os.remove(os.path.join(out_dir, f))


HERE_DIR = os.path.dirname(os.path.abspath(__file__))

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd")
    ap.add_argument("args", nargs="*")
    ap.add_argument("--build", default="build")
    a = ap.parse_args()
    if a.cmd == "selftest":
        selftest(a.build)
    elif a.cmd == "fixtures":
        fixtures(a.args[0], a.args[1], a.build)
