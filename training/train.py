"""Trains the SparseGate demo model, DeepSeek-V3.2's recipe at small scale.

  /usr/bin/python3 training/train.py --out models/sparsegate-rag-tiny

Steps (each logged with its time):
  0. filler text from Debian's manual pages and licences (tools/make_corpus.sh)
  1. a byte-level BPE tokenizer trained on generated text (training/bpe.py)
  2. training prompts built by `sparsegate prompts` (the gateway's context
     builder and chat format) from generated passages and questions
  3. dense training on the RAG task, loss on every token, the answer
     weighted up, two heads' attention supervised (a previous-token head
     and a copy head: see supervision())
  4. indexer warm-up: everything else frozen, the indexer trained by KL to
     the head-summed, L1-normalised dense attention
  5. sparse training: attention over the indexer's top-k only; the indexer
     still trained by KL on its selected set (its input detached), the rest
     by the LM loss and the same supervision
  6. export (config.json, model.safetensors, tokenizer.json) + TRAINING.md
"""
import argparse
import json
import math
import os
import platform
import random
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import bpe  # noqa: E402
import data  # noqa: E402
import export  # noqa: E402
import longctx  # noqa: E402
from model import Model  # noqa: E402

CONFIG = {
    "vocab_size": 2048, "hidden_size": 128, "intermediate_size": 384,
    "moe_intermediate_size": 128, "num_hidden_layers": 3,
    "first_k_dense_replace": 1, "num_attention_heads": 4, "q_lora_rank": 96,
    "kv_lora_rank": 128, "qk_nope_head_dim": 32, "qk_rope_head_dim": 16,
    "v_head_dim": 32, "n_routed_experts": 4, "n_shared_experts": 1,
    "num_experts_per_tok": 2, "n_group": 1, "topk_group": 1,
    "routed_scaling_factor": 1.0, "norm_topk_prob": True,
    "index_n_heads": 2, "index_head_dim": 128, "index_topk": 128,
    # every rotary wavelength (the longest 2*pi*500^(7/8) = 1,187
    # positions) is shorter than the training contexts, so no rotary angle
    # at 32K is one training never saw.  YaRN's factor stays 1: a factor of
    # 32 stretched the two slowest dims to 1,876 and 7,497 positions, whose
    # angles past ~1,200 tokens no training context reached.
    # max_position_embeddings admits 64K positions.
    "rope_theta": 500.0, "max_position_embeddings": 65536,
    "rms_norm_eps": 1e-6, "bos_token_id": 0, "eos_token_id": 1,
    "rope_scaling": {"type": "yarn", "factor": 1.0,
                     "original_max_position_embeddings": 2048,
                     "beta_fast": 32, "beta_slow": 1, "mscale": 1.0,
                     "mscale_all_dim": 1.0},
}

LOG = []


def log(msg):
    line = "[%7.1fs] %s" % (time.time() - T0, msg)
    print(line, flush=True)
    LOG.append(line)


# ---- data ------------------------------------------------------------------


def build_prompts(sg, tokenizer, samples, work, name):
    """samples: dicts with passages, question, answer -> list of
    (ids int32 array, n_prompt, n_placed == n_passages)."""
    jl, out = os.path.join(work, name + ".jsonl"), os.path.join(work, name + ".bin")
    with open(jl, "w") as f:
        for s in samples:
            f.write(json.dumps({"passages": s["passages"],
                                "question": s["question"],
                                "answer": s.get("answer"),
                                "budget": s.get("budget", 65536)}) + "\n")
    subprocess.run([sg, "prompts", "--tokenizer", tokenizer, "--in", jl,
                    "--out", out], check=True)
    raw = np.fromfile(out, dtype="<i4")
    res, at = [], 0
    for _ in samples:
        n_prompt, n_ans, placed, total = raw[at:at + 4]
        ids = raw[at + 4:at + 4 + n_prompt + n_ans]
        at += 4 + n_prompt + n_ans
        res.append((ids.astype(np.int64), int(n_prompt), placed == total))
    return res


def qa_samples(gen, n, tokens, fact_share=0.5):
    out = []
    for _ in range(n):
        passages, facts = gen.context(tokens, fact_share=fact_share)
        f = gen.r.choice(facts)
        out.append({"passages": [{k: p[k] for k in ("id", "doc_id", "title",
                                                     "text", "collection")}
                                 for p in passages],
                    "question": f["question"], "answer": f["sentence"],
                    "fact": f})
    return out


def retrain_commands(model_dir):
    """The command lines of a model's TRAINING.md (the indented lines
    after "Retrain it with:"), with --resume paths as they were."""
    path = os.path.join(model_dir, "TRAINING.md")
    out, on = [], False
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("    bash training/train.sh"):
                line = line.strip()
                if "--vary" not in line:
                    line += " --vary 0"    # made before the variation
                out.append(line)
                on = True
            elif on:
                break
    if not out:
        raise SystemExit("train: %s names no command that made it" % path)
    return out


USER_ID = 3     # <｜User｜> (training/bpe.py SPECIALS)


def multi_pool(sg, tokenizer, gen, n, tokens, work, name, per=6, share=0.5):
    """Sequences that ask several questions about one context: the first
    turn is the gateway's prompt byte for byte, each further turn is
    <｜User｜> + that question's own prompt tail (what follows the shared
    passages) + its answer.  Every answer is a copy from the passages, so
    one forward pass teaches `per` copies instead of one.
    -> list of (ids, [(answer start, answer end)...])"""
    ctxs, flat = [], []
    for _ in range(n):
        passages, facts = gen.context(tokens, fact_share=share)
        gen.r.shuffle(facts)
        keep = [{k: p[k] for k in ("id", "doc_id", "title", "text",
                                     "collection")} for p in passages]
        ctxs.append(len(facts[:per]))
        for f in facts[:per]:
            flat.append({"passages": keep, "question": f["question"],
                         "answer": f["sentence"]})
    built = build_prompts(sg, tokenizer, flat, work, name)
    out, at = [], 0
    for k in ctxs:
        group, at = built[at:at + k], at + k
        if not group or not all(b[2] for b in group):
            continue
        ids0, np0, _ = group[0]
        seq, spans = list(ids0), [(np0, len(ids0))]
        for ids, n_prompt, _ in group[1:]:
            c = 0
            while c < n_prompt and ids[c] == ids0[c]:
                c += 1
            seq.append(USER_ID)
            seq.extend(ids[c:n_prompt])
            spans.append((len(seq), len(seq) + len(ids) - n_prompt))
            seq.extend(ids[n_prompt:])
        out.append((np.array(seq, dtype=np.int64), spans))
    return out


def copy_source(seq, s0, s1):
    """Where the answer seq[s0:s1] was copied from: the earlier position c
    where its tokens from the second on ("The" opens a turn but is " The"
    inside a passage) appear longest, and that length m; None when no
    earlier copy of at least 3 tokens is found."""
    ans = seq[s0:s1]
    if len(ans) < 4:
        return None
    best, best_m = None, 0
    for c in np.nonzero(seq[:s0] == ans[1])[0]:
        m = 0
        while 1 + m < len(ans) and c + m < s0 and seq[c + m] == ans[1 + m]:
            m += 1
        if m > best_m:
            best, best_m = int(c), m
    return (best, best_m) if best_m >= 3 else None


def put_targets(tgt, b, seq, s0, s1):
    """The copy head's target keys for one answer: reading answer token j
    (position s0 + j, predicting token j + 1), the passage position of
    token j + 1."""
    src = copy_source(seq, s0, s1)
    if src is not None:
        c, m = src
        tgt[b, s0:s0 + m] = torch.arange(c, c + m)


def multi_batch(pool, rng, B):
    """B sequences of pool (ids, [(answer start, end)...]), padded: the
    loss on every next token, the answers' weighted up, and the copy
    head's targets on the answer rows."""
    pick = [pool[rng.randrange(len(pool))] for _ in range(B)]
    T = max(len(p[0]) for p in pick)
    x = torch.full((B, T), 1, dtype=torch.long)
    w = torch.zeros(B, T)
    tgt = torch.full((B, T), -1, dtype=torch.long)
    for b, (ids, spans) in enumerate(pick):
        n = len(ids)
        x[b, :n] = torch.from_numpy(ids)
        w[b, :n - 1] = 1.0
        for s0, s1 in spans:
            w[b, s0 - 1:s1 - 1] = ANSWER_WEIGHT
            put_targets(tgt, b, ids, s0, s1)
    return x, w, tgt


ANSWER_WEIGHT = 8.0
ATTN_WEIGHT = 1.0


def supervision(model, tgt):
    """Attention supervision: head 0 of the first layer attends to the
    previous token (every row), head 0 of the last layer, on answer rows,
    to the passage token the answer copies next.  That is the induction
    circuit copying needs (a previous-token head, and a head whose query,
    the token just written, finds the key whose previous token matches);
    left to the LM loss alone it does not form in this budget (the copy
    warm-up measured 1,300 steps at ln V), and without it the model writes
    the answer's sentence shape around invented names and numbers."""
    B, T = tgt.shape
    prev = torch.arange(-1, T - 1).expand(B, T)
    return {0: (0, prev), model.cfg["num_hidden_layers"] - 1: (0, tgt)}


def lm_loss(logits, x, w):
    ce = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                         x[:, 1:].reshape(-1), reduction="none")
    ww = w[:, :-1].reshape(-1)
    return (ce * ww).sum() / ww.sum()


def answer_scores(model, pool, mode, n=None, first=10):
    """Teacher forced, over pool[:n]: the share of samples whose every
    answer token is the argmax (greedy decoding would then write exactly
    the answer), and the accuracy at each of the answer's first tokens
    (where copying fails shows there long before whole answers are
    right)."""
    model.eval()
    ok_all = 0
    hit, cnt = [0] * first, [0] * first
    items = pool[:n] if n else pool
    with torch.no_grad():
        for ids, n_prompt, _ in items:
            x = torch.from_numpy(ids)[None]
            pred = model(x, mode=mode)[0, n_prompt - 1:len(ids) - 1].argmax(-1)
            ok = (pred == x[0, n_prompt:]).tolist()
            ok_all += all(ok)
            for i, o in enumerate(ok[:first]):
                hit[i] += o
                cnt[i] += 1
    model.train()
    return (ok_all / len(items),
            [round(h / max(c, 1), 2) for h, c in zip(hit, cnt)])


def update_bias(load, rate=1e-3):
    """Auxiliary-loss-free balancing: nudge each expert's selection bias
    toward equal load (DeepSeek-V3)."""
    with torch.no_grad():
        for blk, cnt in load:
            c = cnt.float()
            blk.gate_bias += rate * torch.sign(c.mean() - c)
    load.clear()


def batch_losses(model, batch, mode, kl=False, lm=True, supervise=True,
                 load=None):
    """One batch (x, weights, copy targets) through the whole sequence:
    (loss, its parts for the log, tokens).  With supervise, the batch's
    copy targets train two heads' attention (see supervision)."""
    x, w, tgt = batch
    model.attn_targets = supervision(model, tgt) if supervise else None
    out = model(x, mode=mode, indexer_kl=kl, load=load)
    model.attn_targets = None
    logits, aux = out if kl else (out, [])
    loss = torch.zeros(())
    parts = {}
    if lm:
        loss = loss + weighted_lm(logits, x, w, parts)
    loss = add_mean(loss, parts, "attn", model.attn_aux, ATTN_WEIGHT)
    model.attn_aux.clear()
    loss = add_mean(loss, parts, "kl", aux)
    return loss, parts, x.numel()


def add_mean(loss, parts, key, terms, weight=1.0):
    """loss + weight * the mean of terms (none: loss as it is); parts[key]
    gets the mean."""
    if not terms:
        return loss
    mean = sum(terms) / len(terms)
    parts[key] = mean.item()
    return loss + weight * mean


def weighted_lm(logits, x, w, parts):
    """The LM loss (answers weighted up); parts gets it and the answers'
    own loss."""
    l1 = lm_loss(logits, x, w)
    parts["lm"] = l1.item()
    aw = w.clone()
    aw[aw < ANSWER_WEIGHT] = 0
    if aw.sum() > 0:
        with torch.no_grad():
            parts["answer"] = lm_loss(logits, x, aw).item()
    return l1


TAIL = 64       # the tokens before the first answer that train with it


def tail_targets(model, tgt, P):
    """supervision's targets [1, T] cut to the tail's rows [P, T)."""
    return {li: (head, t[0, P:])
            for li, (head, t) in supervision(model, tgt).items()}


def long_losses(model, seq, spans, load=None):
    """One long sequence (multi_pool's (ids, answer spans)) split at its
    first question (training/longctx.py): the passages without gradients,
    the questions and answers with them; the losses as batch_losses'."""
    T = len(seq)
    P = max(1, spans[0][0] - TAIL)
    ids = torch.from_numpy(seq)
    xs = longctx.prefix_states(model, ids, P)
    x, w, tgt = multi_batch([(seq, spans)], random.Random(0), 1)
    targets = tail_targets(model, tgt, P)
    logits, kls, sup = longctx.tail_forward(model, ids, P, xs, targets,
                                           load)
    parts = {}
    loss = weighted_lm(logits[None], x[:, P:], w[:, P:], parts)
    loss = add_mean(loss, parts, "attn", sup, ATTN_WEIGHT)
    return add_mean(loss, parts, "kl", kls), parts, T


def run_stage(name, model, params, seconds, lr, loss_fn, eval_fn=None,
              n_evals=0, curve=None):
    """Trains for `seconds` of wall time (the schedule follows the time, so
    a busy machine trains fewer steps, never longer).  loss_fn(load) ->
    (loss, parts, tokens) of one step."""
    if seconds <= 0:
        return
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95),
                            weight_decay=0.0)
    load = []
    t0 = time.time()
    step, evals_done, tokens = 0, 0, 0
    while True:
        step += 1
        frac = (time.time() - t0) / seconds
        if frac >= 1:
            break
        cur = lr * min(1.0, step / 30)           # warm-up, then cosine
        cur *= 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))  # to 1/10
        for g in opt.param_groups:
            g["lr"] = cur
        loss, parts, n = loss_fn(load)
        tokens += n
        opt.zero_grad()
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
        if not torch.isfinite(norm):     # one bad batch must not end the run
            log("%s step %d: gradient not finite, step skipped" % (name, step))
            continue
        opt.step()
        update_bias(load)
        if curve is not None:
            curve.append({"stage": name, "step": step,
                          "t": round(time.time() - T0, 1), **parts})
        if step % 10 == 0:
            msg = " ".join("%s %.3f" % kv for kv in parts.items())
            log("%s step %d (%.0f%%) %s (%.0f tok/s)" % (
                name, step, 100 * frac, msg, tokens / (time.time() - t0)))
        if eval_fn and evals_done < n_evals * frac - 1:
            evals_done += 1
            eval_fn(step)
    log("%s: %d steps in %.0f s" % (name, step - 1, time.time() - t0))
    if eval_fn:
        eval_fn(step - 1)


LONG_LENGTHS = (4096, 8192, 12288)
LONG_SHORT_SHARE = 0.3


def long_scores(model, items):
    """Teacher forced at long contexts, sparse (each prompt's passages
    through longctx.prefix_states, its question and answer through
    longctx.tail_forward), over items (ids, n_prompt, placed): the shares
    (exact answers, right among the answers' first four tokens, answer
    rows whose copy source is in the copy layer's top-k, answer rows whose
    previous token is in layer 0's)."""
    was_training = model.training
    model.eval()
    exact = first = n_first = 0
    last = len(model.layers) - 1
    hit = {0: [0, 0], last: [0, 0]}
    with torch.no_grad():
        for ids, n_prompt, _ in items:
            T = len(ids)
            P = max(1, n_prompt - TAIL)
            t = torch.from_numpy(ids)
            tgt = torch.full((1, T), -1, dtype=torch.long)
            put_targets(tgt, 0, ids, n_prompt, T)
            targets = tail_targets(model, tgt, P)
            # the previous-token target on the answer rows only
            head0, prev = targets[0]
            prev = prev.clone()
            prev[:n_prompt - P] = -1
            targets[0] = (head0, prev)
            hits = []
            logits = longctx.tail_forward(
                model, t, P, longctx.prefix_states(model, t, P), targets,
                hits=hits)[0]
            ok = (logits[n_prompt - 1 - P:T - 1 - P].argmax(-1)
                  == t[n_prompt:]).tolist()
            exact += all(ok)
            first += sum(ok[:4])
            n_first += len(ok[:4])
            for li, rows, sel in hits:
                hit[li][0] += sel
                hit[li][1] += rows
    model.train(was_training)
    return (exact / max(len(items), 1), first / max(n_first, 1),
            hit[last][0] / max(hit[last][1], 1),
            hit[0][0] / max(hit[0][1], 1))


def long_stage(a, model, params, seconds, mid_pool, rng, curve, evals,
               make_pool, make_eval):
    """7. sparse training at 4K-12K tokens (training/longctx.py): in DSA's
    serving mode the fact must be found among many more passages than the
    short stages show (the indexer's top-k at the answer rows held a
    fact's keys at 2K tokens and lost them by 8K); LONG_SHORT_SHARE of the
    steps stay on the short contexts so that what was learned there
    holds.  make_pool(name, tokens) builds multi_pool contexts,
    make_eval(name, tokens) held-out prompts."""
    pools = [make_pool("long%d" % L, L) for L in LONG_LENGTHS]
    held = {L: make_eval("eval_%d" % L, L) for L in (8192, 16384)}
    log("long prompts: %s contexts, held-out %s" % (
        "/".join(str(len(p)) for p in pools),
        "/".join(str(len(h)) for h in held.values())))

    def ev(step):
        for L, items in held.items():
            acc = long_scores(model, items)[0]
            evals.append({"stage": "sparse-long", "step": step,
                          "mode": "sparse", "tokens": L, "answer_exact": acc})
            log("eval sparse-long step %d: held-out answers exact (teacher "
                "forced, sparse) at %d tokens %.3f" % (step, L, acc))

    def loss_fn(load):
        if rng.random() < LONG_SHORT_SHARE:
            return batch_losses(model, multi_batch(mid_pool, rng, 4),
                                "sparse", kl=True, load=load)
        p = rng.choice(pools)
        seq, spans = p[rng.randrange(len(p))]
        return long_losses(model, seq, spans, load)
    ev(0)
    run_stage("sparse-long", model, params, seconds, 3e-4, loss_fn,
              eval_fn=ev, n_evals=1, curve=curve)


# ---- main ------------------------------------------------------------------


def main():
    global T0
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(ROOT, "models",
                                                  "sparsegate-rag-tiny"))
    ap.add_argument("--work", default=os.path.join(ROOT, "build", "train"))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--minutes", type=float, default=50,
                    help="wall time of the training stages")
    ap.add_argument("--resume", default=None,
                    help="continue from this exported model (its tokenizer "
                    "and weights)")
    ap.add_argument("--vary", type=float, default=0.5,
                    help="share of the training facts whose sentence is "
                    "varied with filler words (data.Gen.vary)")
    ap.add_argument("--hard", type=float, default=0.0,
                    help="share of the training contexts about entities of "
                    "one kind with look-alike names (data.Gen.context)")
    ap.add_argument("--stages", default="all", choices=("all", "long"),
                    help="all: dense, indexer warm-up, sparse; long: only "
                    "sparse training at 4K-12K tokens (long_stage), "
                    "continuing a --resume model")
    ap.add_argument("--stop-after", default=None,
                    help="end after this stage (trials)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1 beats 2 on a busy 2-core machine)")
    a = ap.parse_args()
    T0 = time.time()
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    rng = random.Random(a.seed)
    os.makedirs(a.work, exist_ok=True)
    sg = os.path.join(ROOT, "build", "sparsegate")
    if not os.path.exists(sg):
        subprocess.run(["make", "-C", ROOT, "-j2", "build/sparsegate"],
                       check=True)

    # 0. filler
    filler = os.path.join(a.work, "filler.jsonl")
    if not os.path.exists(filler):
        subprocess.run(["bash", os.path.join(ROOT, "tools", "make_corpus.sh"),
                        filler], check=True, env=dict(os.environ,
                                                      SECTIONS="5 7 8"))
    docs = data.load_filler(filler)
    gen = data.Gen(a.seed, docs, vary=a.vary, hard=a.hard)
    log("filler: %d documents" % len(docs))

    # 1. tokenizer
    tok = os.path.join(a.work, "tokenizer.json")
    text = []
    tgen = data.Gen(a.seed + 1000, docs, vary=a.vary)
    for s in qa_samples(tgen, 150, 1200):
        for p in s["passages"]:
            text.append("[passage %s | doc %s | %s]\n%s" % (
                p["id"], p["doc_id"], p["title"], p["text"]))
        text.append("Question: " + s["question"] + "\n\n" + s["answer"])
    if a.resume:
        with open(os.path.join(a.resume, "tokenizer.json"), encoding="utf-8") as f:
            tj = json.load(f)
        vocab = [None] * len(tj["model"]["vocab"])
        with open(tok, "w", encoding="utf-8") as f:
            json.dump(tj, f, ensure_ascii=False)
    else:
        vocab, merges = bpe.train("\n\n".join(text), CONFIG["vocab_size"])
        with open(tok, "w", encoding="utf-8") as f:
            json.dump(bpe.tokenizer_json(vocab, merges), f, ensure_ascii=False)
    log("tokenizer: %d tokens" % len(vocab))
    cfg = dict(CONFIG, vocab_size=len(vocab))

    # 2. prompts through the gateway's context builder
    def pool(n, tokens, name, g=gen, share=0.5):
        ss = qa_samples(g, n, tokens, share)
        built = build_prompts(sg, tok, ss, a.work, name)
        return [b for b in built if b[2]], ss
    # short contexts (two or three passages) with up to 8 questions each:
    # a third of the tokens are answers, so most of each step teaches
    # copying
    mshort = multi_pool(sg, tok, gen, 8000, 150, a.work, "short", per=8,
                        share=0.7)
    mmid = multi_pool(sg, tok, gen, 2500, 700, a.work, "mid")
    # long contexts (~2.5K tokens, six questions) for the sparse stage:
    # the mode that serves long contexts learns at more than twice the
    # length of the dense stages
    long_ = multi_pool(sg, tok, gen, 400, 2500, a.work, "long", per=6)
    egen = data.Gen(a.seed + 7777, docs, heldout=True)
    ev, _ = pool(60, 300, "eval_short", egen)
    evl, _ = pool(60, 700, "eval_mid", egen)
    evll, _ = pool(20, 2500, "eval_long", egen)
    log("prompts: short %d (~%d tokens, %.1f questions), mid %d (~%d, %.1f),"
        " long %d (~%d, %.1f), held-out %d + %d + %d" % (
            len(mshort), np.mean([len(p[0]) for p in mshort]),
            np.mean([len(p[1]) for p in mshort]), len(mmid),
            np.mean([len(p[0]) for p in mmid]),
            np.mean([len(p[1]) for p in mmid]), len(long_),
            np.mean([len(p[0]) for p in long_]),
            np.mean([len(p[1]) for p in long_]), len(ev), len(evl),
            len(evll)))

    model = export.load(a.resume) if a.resume else Model(cfg)
    if a.resume:
        log("resumed from %s" % a.resume)
    log("model: %.2f M parameters" % (sum(p.numel() for p in model.parameters()) / 1e6))
    curve, evals = [], []

    def ev_fn(tag, mode="dense", which=None):
        def f(step):
            acc, by_pos = answer_scores(model, which or ev, mode, 30)
            evals.append({"stage": tag, "step": step, "mode": mode,
                          "answer_exact": acc})
            log("eval %s step %d: held-out answers exact (teacher forced, "
                "%s) %.3f, by position %s" % (tag, step, mode, acc, by_pos))
        return f

    main_params = [p for n, p in model.named_parameters()
                   if ".indexer." not in n]
    idx_params = [p for n, p in model.named_parameters() if ".indexer." in n]

    def finish():
        """The final held-out scores, then the export (6)."""
        final = {"%d tokens" % n: {m: answer_scores(model, ps, m)[0]
                                   for m in ("dense", "sparse", "window")}
                 for n, ps in ((700, evl), (2500, evll))}
        log("final held-out answers exact (teacher forced): %s"
            % json.dumps(final))

        # 6. export
        export.round_bf16_(model)
        secs = time.time() - T0
        info = {"seed": a.seed, "minutes": a.minutes, "seconds": round(secs),
                "machine": "%s, %d cores, %s" % (platform.processor() or
                                                 platform.machine(),
                                                 os.cpu_count(),
                                                 platform.platform()),
                "torch": torch.__version__, "final": final, "evals": evals}
        cmd = "bash training/train.sh --seed %d --minutes %g --vary %g" % (
            a.seed, a.minutes, a.vary)
        if a.hard > 0:
            cmd += " --hard %g" % a.hard
        if a.stages != "all":
            cmd += " --stages " + a.stages
        if a.threads != 1:
            cmd += " --threads %d" % a.threads
        if a.resume:
            # the model it went on from, and how that one was made
            cmd = "%s\n%s --resume %s" % (
                "\n".join(retrain_commands(a.resume)), cmd,
                os.path.relpath(a.resume, ROOT))
        md = TRAINING_MD.format(cmd="\n    ".join(cmd.split("\n")),
                                minutes=secs / 60,
                                info=json.dumps(info, indent=1),
                                log="\n".join(LOG))
        export.export(model, a.out, tok, {"TRAINING.md": md,
                                          "curves.json": json.dumps(curve)})
        log("exported to %s" % a.out)

    M = a.minutes * 60     # wall-time budget of the training stages
    # 3. dense RAG training (attention supervised), several questions per
    # context, short then longer contexts
    if a.stages == "long":
        long_stage(a, model, main_params + idx_params, M, mmid, rng, curve,
                   evals, lambda name, L: multi_pool(sg, tok, gen, 120, L,
                                                     a.work, name, per=6),
                   lambda name, L: pool(10, L, name, egen)[0])
        finish()
        return
    run_stage("dense-short", model, main_params, 0.45 * M, 2e-3,
              lambda load: batch_losses(model, multi_batch(mshort, rng, 8),
                                        "dense", load=load),
              eval_fn=ev_fn("dense-short"), n_evals=3, curve=curve)
    if a.stop_after == "dense-short":
        finish()
        return
    run_stage("dense-mid", model, main_params, 0.20 * M, 1e-3,
              lambda load: batch_losses(model, multi_batch(mmid, rng, 4),
                                        "dense", load=load),
              eval_fn=ev_fn("dense-mid", which=evl), n_evals=1, curve=curve)
    # 4. indexer warm-up (rest frozen)
    for p in main_params:
        p.requires_grad_(False)
    run_stage("indexer-warmup", model, idx_params, 0.07 * M, 2e-3,
              lambda load: batch_losses(model, multi_batch(mmid, rng, 2),
                                        "dense", kl=True, lm=False,
                                        supervise=False, load=load),
              curve=curve)
    for p in main_params:
        p.requires_grad_(True)
    # 5. sparse training, half of it at ~2.5K tokens; the indexers are
    # also pointed at the supervised heads' keys (model.attend)
    run_stage("sparse", model, main_params + idx_params, 0.28 * M, 5e-4,
              lambda load: batch_losses(
                  model, multi_batch(long_, rng, 1) if rng.random() < 0.5
                  else multi_batch(mmid, rng, 4), "sparse", kl=True,
                  load=load), eval_fn=ev_fn("sparse", "sparse", evl),
              n_evals=1, curve=curve)
    finish()


TRAINING_MD = """# sparsegate-rag-tiny

A DeepSeek-V3.2-architecture model trained by the project on its generated
RAG task (training/train.py).  Retrain it with:

    {cmd}

The last command took {minutes:.1f} minutes on the machine below (a
--resume line continues the model the lines before it made, whose own
times are in their TRAINING.md).  Per-step losses are in curves.json.

```
{info}
```

## Log

```
{log}
```
"""

if __name__ == "__main__":
    main()
