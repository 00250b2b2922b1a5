#!/usr/bin/env bash
# The training program's attention supervision (training/train.py,
# training/model.py): where an answer was copied from is found token for
# token, the targets land on the right rows, the loss is -log of the
# supervised head's weight on its target, and a few optimizer steps of a
# tiny model on it turn head 0 of the first layer into a previous-token
# head; the same target trains the layer's indexer alone and brings the
# previous token into its top-k.  The training data varies half of its
# sentences (none with vary=0, which draws nothing) and never a held-out
# corpus's; hard contexts hold one kind of entity with look-alike names.
# The long-context split gives one whole forward's logits.
# Needs Debian's PyTorch
# (installed here when missing, as training/train.sh does).
set -u
root=${SG_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
if ! /usr/bin/python3 -c 'import torch, numpy' 2>/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends python3-torch \
        python3-numpy >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null && apt-get install -y -q \
             --no-install-recommends python3-torch python3-numpy >/dev/null; } \
        || { echo "FAIL training/torch: python3-torch could not be installed"; exit 1; }
fi
cd "$root/training" && exec /usr/bin/python3 - <<'PY'
import os
import random

import numpy as np
import torch

import train as T
from model import Model

fails = 0


def check(name, ok, why=""):
    global fails
    print(("PASS " if ok else "FAIL ") + name + ("" if ok else ": " + why))
    fails += not ok


rng = random.Random(3)
# a prompt holding the answer's sentence (whose first token differs: "The"
# opens the turn, " The" sits inside a passage) among decoys sharing its
# tokens, then the answer
for trial in range(50):
    sent = [rng.randrange(20, 60) for _ in range(rng.randint(4, 12))]
    noise = [rng.randrange(20, 60) for _ in range(rng.randint(0, 40))]
    decoy = sent[1:1 + rng.randint(1, 2)]         # a shorter partial copy
    at = rng.randint(0, len(noise))
    pre = noise[:at] + decoy + [7] + noise[at:]
    c = len(pre) + 1
    seq = np.array(pre + [9] + sent[1:] + [5, 6] + [8] + sent[1:] + [1])
    s0 = len(pre) + 1 + len(sent) - 1 + 2
    seq[s0] = 8                                   # "The" of the answer
    src = T.copy_source(seq, s0, len(seq))
    want_m = len(sent) - 1
    if src is None or src[0] != c or src[1] < want_m:
        check("copy_source finds the copied sentence", False,
              "trial %d: got %s, want (%d, >=%d)" % (trial, src, c, want_m))
        break
else:
    check("copy_source finds the copied sentence (50 random prompts)", True)

seq = np.array([20, 21, 22, 23, 9, 8, 30, 31, 32, 1])
check("copy_source: no earlier copy -> None", T.copy_source(seq, 5, 10) is None)
seq = np.array([20, 30, 31, 23, 9, 8, 30, 31, 40, 1])
check("copy_source: a copy under 3 tokens does not count",
      T.copy_source(seq, 5, 10) is None)

tgt = torch.full((1, 20), -1, dtype=torch.long)
seq = np.array([0, 11, 12, 13, 14, 2, 8, 11, 12, 13, 14, 1] + [3] * 8)
T.put_targets(tgt, 0, seq, 6, 12)
want = [-1] * 6 + [1, 2, 3, 4] + [-1] * 10   # the end token: no copy
check("put_targets: answer row j -> source of token j + 1",
      tgt[0].tolist() == want, "%s" % tgt[0].tolist())

# the loss: -log p[target] on rows with a target the head could see
logp = torch.log_softmax(torch.randn(2, 5, 5), -1)
target = torch.tensor([[-1, 0, 2, -1, 4], [1, -1, -1, -1, -1]])
got = Model.attn_target_loss(logp, target)
ref = -np.mean([logp[0, 1, 0].item(), logp[0, 2, 2].item(),
                logp[0, 4, 4].item(), logp[1, 0, 1].item()])
check("attn_target_loss = mean -log p[target]",
      abs(got.item() - ref) < 1e-5 * abs(ref), "%g vs %g" % (got.item(), ref))
lp2 = logp.clone()
lp2[0, 1, 0] = float("-inf")                      # not selected (sparse)
got = Model.attn_target_loss(lp2, target)
ref2 = -np.mean([logp[0, 2, 2].item(), logp[0, 4, 4].item(),
                 logp[1, 0, 1].item()])
check("attn_target_loss skips keys the head cannot see",
      torch.isfinite(got).item() and abs(got.item() - ref2) < 1e-5 * abs(ref2),
      "%g vs %g" % (got.item(), ref2))
lp3 = torch.full((1, 4, 4), -100.0)     # e^-100: a float32 denormal
lp3[0, :, 0] = 0.0                                # all weight elsewhere
lp3.requires_grad_(True)
loss = Model.attn_target_loss(torch.log_softmax(lp3, -1),
                              torch.tensor([[-1, 1, 2, 3]]))
loss.backward()
check("attn_target_loss: a target with no weight gives a finite gradient",
      torch.isfinite(lp3.grad).all().item(), "%s" % lp3.grad)

# a tiny model: the supervision alone makes layer 0's head 0 attend to the
# previous token
torch.manual_seed(0)
cfg = dict(T.CONFIG, vocab_size=64, num_hidden_layers=2, index_topk=8)
m = Model(cfg)
opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
x = torch.randint(0, 64, (4, 32))
prev = torch.arange(-1, 31).expand(4, 32)


def prev_weight():
    probe = {}
    orig = Model.attn_target_loss

    def grab(logp, target):
        probe["w"] = logp.exp()[:, torch.arange(1, 32),
                                torch.arange(0, 31)].mean()
        return orig(logp, target)
    Model.attn_target_loss = staticmethod(grab)
    m.attn_targets = {0: (0, prev)}
    with torch.no_grad():
        m(x)
    m.attn_targets, Model.attn_target_loss = None, staticmethod(orig)
    m.attn_aux.clear()
    return probe["w"].item()


w0 = prev_weight()
for _ in range(60):
    m.attn_targets = T.supervision(m, torch.full((4, 32), -1))
    m(x)
    loss = sum(m.attn_aux) / len(m.attn_aux)
    m.attn_aux.clear()
    opt.zero_grad()
    loss.backward()
    opt.step()
m.attn_targets = None
w1 = prev_weight()
check("supervision trains a previous-token head (mean weight on t-1 %.2f -> %.2f)"
      % (w0, w1), w1 > 0.8 and w1 > 4 * w0)

# the sparse stage points each supervised layer's indexer at the same key
# (model.attend): its loss reaches the indexer alone, and trained on it the
# indexer's top-k takes in the previous token of every row
torch.manual_seed(1)
m = Model(cfg)
idx_params = [p for n, p in m.named_parameters() if ".indexer." in n]
main_params = [p for n, p in m.named_parameters() if ".indexer." not in n]


def prev_selected():
    got = []
    with torch.no_grad():
        m(x, mode="sparse", topk_out=got)
    rows = torch.arange(cfg["index_topk"], 32)   # rows with a choice
    hit = (got[0][:, rows] == (rows - 1)[None, :, None]).any(-1)
    return hit.float().mean().item()


m.attn_targets = T.supervision(m, torch.full((4, 32), -1))
m(x, mode="sparse", indexer_kl=True)
m.attn_targets = None
terms = list(m.attn_aux)
m.attn_aux.clear()
ok = len(terms) == 4     # per supervised layer: its head, its indexer
if ok:
    terms[1].backward()
    ok = (all(p.grad is None or not p.grad.any() for p in main_params)
          and any(p.grad is not None and p.grad.abs().sum() > 0
                  for p in idx_params))
check("the indexer's supervision term trains the indexer only", ok,
      "%d terms" % len(terms))
m.zero_grad()
s0 = prev_selected()
opt = torch.optim.AdamW(idx_params, lr=3e-3)
for _ in range(60):
    m.attn_targets = T.supervision(m, torch.full((4, 32), -1))
    m(x, mode="sparse", indexer_kl=True)
    m.attn_targets = None
    loss = m.attn_aux[1]
    m.attn_aux.clear()
    opt.zero_grad()
    loss.backward()
    opt.step()
s1 = prev_selected()
check("indexer supervision puts the previous token in the top-k "
      "(%.2f -> %.2f of rows)" % (s0, s1), s1 > 0.95 and s1 > s0 + 0.2)

# the long-context split (training/longctx.py): the passages without
# gradients, chunked, then the tail with gradients gives the logits of one
# whole sparse forward; with every key selected that is dense attention
import longctx

seed = int(os.environ.get("SG_TEST_SEED") or
           random.SystemRandom().randrange(1 << 30))
print("longctx checks: SG_TEST_SEED=%d" % seed)
torch.manual_seed(seed)
for topk, what in ((1 << 20, "every key selected (dense)"),
                   (8, "top-8 of 61-96 keys")):
    m = Model(dict(cfg, index_topk=topk)).eval()
    n = int(torch.randint(61, 97, ()))
    ids = torch.randint(0, 64, (n,))
    P = int(torch.randint(20, n - 5, ()))
    with torch.no_grad():
        ref = m(ids[None], mode="sparse")[0, P:]
        xs = longctx.prefix_states(m, ids, P, chunk=7)
        got = longctx.tail_forward(m, ids, P, xs, {})[0]
    err = ((got - ref).abs().max() / ref.abs().max()).item()
    check("longctx prefix %d + tail %d == one sparse forward, %s (rel %.1e)"
          % (P, n - P, what, err), err < 1e-5, "rel %g" % err)
with torch.no_grad():
    a = longctx.prefix_states(m, ids, P, chunk=5)
    b = longctx.prefix_states(m, ids, P, chunk=P)
err = max((u - v).abs().max().item() for u, v in zip(a, b))
check("longctx: the prefix's chunk size does not change it (%.1e)" % err,
      err < 1e-5)
isc = torch.tensor([[3.0, float("nan"), 1.0, 2.0, 5.0]] * 2)
idx, valid, _ = longctx.select(isc, 1, 3, True)
check("longctx.select: a row never takes a key after itself",
      all(i <= r + 1 or not v for row, vrow, r in zip(idx.tolist(),
          valid.tolist(), (0, 1)) for i, v in zip(row, vrow)),
      "%s %s" % (idx.tolist(), valid.tolist()))

lp = torch.log_softmax(torch.tensor([[1.0, 2.0, float("-inf")],
                                     [0.0, 0.0, 0.0]]), -1)
got = longctx.target_nll(lp, torch.tensor([[0, 1, 2], [0, 1, 2]]),
                         torch.tensor([[True, True, False], [True] * 3]),
                         torch.tensor([1, 2]))
want = -(lp[0, 1] + lp[1, 2]).item() / 2
check("longctx.target_nll: mean -log p of the target beside an unselected "
      "slot (%.4f)" % got.item(), abs(got.item() - want) < 1e-6,
      "%g vs %g" % (got.item(), want))

# one long_losses step: the tail's losses reach every weight (the prefix
# keys are projected again under gradients), the indexer's through its
# KL and supervision terms
m = Model(dict(cfg, index_topk=8)).train()
seq = np.array([int(v) for v in torch.randint(2, 64, (90,))])
seq[80:86] = seq[30:36]                        # an answer copied from 30
loss, parts, ntok = T.long_losses(m, seq, [(80, 87)])
loss.backward()
nograd = [name for name, p in m.named_parameters()
          if name != "layers.1.gate" and (p.grad is None or not
                                          torch.isfinite(p.grad).all()
                                          or not p.grad.any())]
check("long_losses: finite gradients reach every weight "
      "(parts %s)" % sorted(parts), not nograd and torch.isfinite(loss),
      "no gradient: %s" % nograd)

# the data: half of a training corpus's sentences varied (filler words in
# the shape), every sentence still opens on its entity and holds its
# value; a held-out corpus never varied
import data

common = ("river water stone light north house field table green open "
          "small paper").split()
docs = [{"id": "d%d" % i, "text": " ".join(rng.choice(common)
                                           for _ in range(300))}
        for i in range(8)]
stats = {}
for heldout in (False, True):
    g = data.Gen(5, docs, heldout=heldout)
    used, varied, whole = set(), 0, 0
    for _ in range(400):
        f = g.fact(used)
        shapes = {sh.format(E=f["entity"], v=f["value"])
                  for sh in data.ATTRS[f["attr"]][2]}
        varied += f["sentence"] not in shapes
        whole += (f["sentence"].startswith("The %s" % f["entity"])
                  and f["value"] in f["sentence"])
    stats[heldout] = (varied, whole)
check("training sentences varied about half the time, held-out never "
      "(%d / 400, %d / 400)" % (stats[False][0], stats[True][0]),
      140 <= stats[False][0] <= 260 and stats[True][0] == 0)
g0 = data.Gen(5, docs, vary=0.0)
gi = data.Gen(5, docs, vary=0.5)
gi.vary = lambda shape: shape       # a generator without the variation
same = all(g0.fact(set()) == gi.fact(set()) for _ in range(200))
check("vary=0 gives the corpus of a generator without variation", same)
check("every sentence opens on its entity and holds its value",
      stats[False][1] == 400 and stats[True][1] == 400, str(stats))
# one whole-sequence step as the stages take it: every loss term there
x_, w_, t_ = T.multi_batch([(seq, [(80, 87)])], random.Random(0), 1)
loss, parts, ntok = T.batch_losses(m, (x_, w_, t_), "sparse", kl=True)
check("batch_losses: lm, answer, attn and kl terms, finite (%s)"
      % sorted(parts), sorted(parts) == ["answer", "attn", "kl", "lm"]
      and torch.isfinite(loss).item() and ntok == 90)

# hard contexts (hard=1): one kind of entity per context, about half of
# the names opening on an earlier name's first syllable; hard=0 draws
# nothing (the corpus of a generator without hard contexts)
g = data.Gen(7, docs, vary=0.0, hard=1.0)
kinds_ok, shared, names = True, 0, 0
for _ in range(40):
    _, facts = g.context(800)
    kinds_ok &= len({f["kind"] for f in facts}) == 1
    seen = []
    for f in facts:
        name = f["entity"].split(" ")[0]
        shared += any(data.Gen.word_first(name) == data.Gen.word_first(o)
                      for o in seen)
        names += bool(seen)
        seen.append(name)
check("hard contexts: one kind each, %d of %d later names share a first "
      "syllable" % (shared, names),
      kinds_ok and 0.35 * names <= shared <= 0.9 * names)
g0 = data.Gen(7, docs, vary=0.5)
gh = data.Gen(7, docs, vary=0.5, hard=0.0)
check("hard=0 gives the corpus of a generator without hard contexts",
      all(g0.context(600) == gh.context(600) for _ in range(30)))
check("word_first splits a made-up word's first syllable",
      [data.Gen.word_first(w) for w in ("Deithfisk", "Brohaces", "Staelco")]
      == ["deith", "bro", "stael"])
print("training: %d failed" % fails)
raise SystemExit(1 if fails else 0)
PY
