"""Where a trained model's long-context recall goes, measured in PyTorch.

  /usr/bin/python3 training/probe.py MODEL_DIR [--lengths 2048,8192,16384]
      [--questions 16] [--seed 1] [--work build/probe]

For held-out questions (the training's held-out generator: another seed,
held-out sentence shapes and kinds of entity) in contexts of each length,
teacher forced, in DSA's serving mode (training/longctx.py):
  exact      the answer's every token is the argmax
  first 4    the share of the answer's first four tokens that are
  copy key   the share of answer rows whose copy source (the passage token
             the answer copies next, train.put_targets) is in the copy
             layer's top-k: what the indexer keeps of the fact
  prev key   the same for the previous token in the first layer
The gateway's own quality benchmark (bench/quality.sh) measures the
engine's greedy answers; this says why they fail where they do.
"""
import argparse
import os
import subprocess
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import data  # noqa: E402
import export  # noqa: E402
import train  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--lengths", default="2048,8192,16384")
    ap.add_argument("--questions", type=int, default=16)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--work", default=os.path.join(ROOT, "build", "probe"))
    a = ap.parse_args()
    torch.set_num_threads(2)
    os.makedirs(a.work, exist_ok=True)
    sg = os.path.join(ROOT, "build", "sparsegate")
    filler = os.path.join(a.work, "filler.jsonl")
    if not os.path.exists(filler):
        subprocess.run(["bash", os.path.join(ROOT, "tools", "make_corpus.sh"),
                        filler], check=True, env=dict(os.environ,
                                                      SECTIONS="5 7 8"))
    gen = data.Gen(a.seed + 7777, data.load_filler(filler), heldout=True)
    model = export.load(a.model).eval()
    tok = os.path.join(a.model, "tokenizer.json")
    print("| context | exact | first 4 tokens | copy key in top-k "
          "(layer %d) | previous token in top-k (layer 0) |"
          % (len(model.layers) - 1))
    print("|---|---|---|---|---|")
    for L in (int(v) for v in a.lengths.split(",")):
        built = train.build_prompts(sg, tok, train.qa_samples(
            gen, a.questions, L), a.work, "probe%d" % L)
        items = [b for b in built if b[2]]
        r = train.long_scores(model, items)
        print("| %dK (%d questions) | %.0f%% | %.0f%% | %.0f%% | %.0f%% |"
              % ((L + 512) // 1024, len(items), *(100 * v for v in r)),
              flush=True)


if __name__ == "__main__":
    main()
