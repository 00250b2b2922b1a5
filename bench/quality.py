"""Fact recall of the trained model through the gateway (bench/quality.sh).

  quality.py prepare WORK --lengths 1024,4096,16384,32768 --questions 200
      held-out collections (another seed, held-out sentence shapes and
      kinds of entity) sized to fill each context length, as JSONL for
      `sparsegate ingest`, and the questions with their key values
  quality.py random-indexer MODEL OUT
      the model with the indexer's weights replaced by random ones
  quality.py ask WORK URL CONDITION
      every question through POST /v1/rag (greedy, streamed): the answer,
      whether it holds the key value, TTFT, prompt and cached tokens
  quality.py table WORK
      the markdown table of the results
"""
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "training"))
import data  # noqa: E402

EVAL_SEED = 20260611


def prompt_tokens(sg, tok, passages, budget, work):
    """Prompt length of a collection (and whether every passage fit)."""
    jl, out = os.path.join(work, "probe.jsonl"), os.path.join(work, "probe.bin")
    with open(jl, "w") as f:
        f.write(json.dumps({"passages": passages,
                            "question": "How long is the Xxxxxxxx yyyy?",
                            "budget": budget}) + "\n")
    subprocess.run([sg, "prompts", "--tokenizer", tok, "--in", jl, "--out",
                    out], check=True)
    with open(out, "rb") as f:
        n, _, placed, total = struct.unpack("<4i", f.read(16))
    return n, placed == total


def prepare(work, model, lengths, per_length, filler, seed=EVAL_SEED,
            prefix="eval"):
    sg = os.path.join(ROOT, "build", "sparsegate")
    tok = os.path.join(model, "tokenizer.json")
    docs = data.load_filler(filler)
    gen = data.Gen(seed, docs, heldout=True)
    rng = random.Random(seed)
    questions, colls = [], []
    for L in lengths:
        got, c = 0, 0
        while got < per_length:
            name = "%s%dk-%d" % (prefix, L // 1024, c)
            passages, facts = gen.context(int(L * 1.6), collection=name,
                                          unique_ids=True)
            keep = [{k: p[k] for k in ("id", "doc_id", "title", "text",
                                         "collection")} for p in passages]
            # trim until the prompt fits, with room for the question
            while True:
                n, _ = prompt_tokens(sg, tok, keep, 1 << 20, work)
                if n <= L - 48:
                    break
                drop = max(1, int(len(keep) * (n - L + 48) / n))
                victims = set(rng.sample(range(len(keep)), drop))
                keep = [p for i, p in enumerate(keep) if i not in victims]
            ids = {p["id"] for p in keep}
            facts = [f for f in facts if f["passage"] in ids]
            rng.shuffle(facts)
            take = facts[:per_length - got]
            for f in take:
                questions.append({"collection": name, "length": L,
                                  "question": f["question"],
                                  "value": f["value"],
                                  "sentence": f["sentence"],
                                  "passage": f["passage"],
                                  "heldout_shape": f["heldout_shape"],
                                  "heldout_kind": f["heldout_kind"],
                                  "prompt_tokens": n})
            with open(os.path.join(work, name + ".jsonl"), "w") as f:
                for p in keep:
                    f.write(json.dumps({"id": p["doc_id"], "title": p["title"],
                                        "text": p["text"]}) + "\n")
            colls.append(name)
            got += len(take)
            c += 1
            print("quality: %s: %d passages, %d prompt tokens, %d questions"
                  % (name, len(keep), n, len(take)), flush=True)
    with open(os.path.join(work, "questions.jsonl"), "w") as f:
        for q in questions:
            f.write(json.dumps(q) + "\n")
    with open(os.path.join(work, "collections.txt"), "w") as f:
        f.write("\n".join(colls) + "\n")


def random_indexer(model, out, seed=7):
    """Copies model to out with every indexer weight redrawn: normal with
    the std of the trained tensor (norm weights 1, biases 0)."""
    os.makedirs(out, exist_ok=True)
    for f in os.listdir(model):
        if f != "model.safetensors":
            shutil.copyfile(os.path.join(model, f), os.path.join(out, f))
    with open(os.path.join(model, "model.safetensors"), "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        blob = bytearray(f.read())
    rng = random.Random(seed)
    for name, e in header.items():
        if ".indexer." not in name or name == "__metadata__":
            continue
        assert e["dtype"] == "BF16"
        a, b = e["data_offsets"]
        vals = struct.unpack("<%dH" % ((b - a) // 2), blob[a:b])
        fl = [struct.unpack("<f", struct.pack("<I", v << 16))[0] for v in vals]
        if name.endswith("k_norm.weight"):
            new = [1.0] * len(fl)
        elif name.endswith("k_norm.bias"):
            new = [0.0] * len(fl)
        else:
            m = sum(fl) / len(fl)
            sd = (sum((x - m) ** 2 for x in fl) / len(fl)) ** 0.5
            new = [rng.gauss(0, sd) for _ in fl]
        raw = b"".join(struct.pack("<I", x)[2:] for x in
                       (struct.unpack("<I", struct.pack("<f", v))[0]
                        for v in new))
        blob[a:b] = raw
    with open(os.path.join(out, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", n))
        f.write(json.dumps(header, separators=(",", ":")).encode().ljust(n))
        f.write(blob)


def ask_one(url, q, max_tokens=48):
    body = json.dumps({"question": q["question"], "collection": q["collection"],
                       "context_budget": q["length"], "max_tokens": max_tokens,
                       "temperature": 0, "stream": True,
                       "stream_options": {"include_usage": True}}).encode()
    req = urllib.request.Request(url + "/v1/rag", data=body,
                                 headers={"Content-Type": "application/json"})
    t0 = time.time()
    ttft, text, usage = None, [], {}
    with urllib.request.urlopen(req, timeout=1800) as r:
        for line in r:
            line = line.decode("utf-8", "replace").strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            ev = json.loads(line[6:])
            if "error" in ev:
                raise RuntimeError(ev["error"].get("message"))
            for ch in ev.get("choices", []):
                c = ch.get("delta", {}).get("content")
                if c:
                    if ttft is None:
                        ttft = time.time() - t0
                    text.append(c)
            if ev.get("usage"):
                usage = ev["usage"]
    return {"answer": "".join(text), "ttft": ttft,
            "seconds": time.time() - t0,
            "prompt_tokens": usage.get("prompt_tokens"),
            "cached_tokens": (usage.get("prompt_tokens_details") or {})
            .get("cached_tokens")}


def ask(work, url, condition, limit=None):
    qs = [json.loads(l) for l in open(os.path.join(work, "questions.jsonl"))]
    by_len = {}
    for q in qs:
        by_len.setdefault(q["length"], []).append(q)
    out = os.path.join(work, "answers-%s.jsonl" % condition)
    done = 0
    with open(out, "w") as f:
        for L in sorted(by_len):
            for q in by_len[L][:limit]:
                r = ask_one(url, q)
                r.update(q)
                r["condition"] = condition
                r["correct"] = q["value"] in r["answer"]
                f.write(json.dumps(r) + "\n")
                f.flush()
                done += 1
                if done % 25 == 0:
                    print("quality: %s: %d answered" % (condition, done),
                          flush=True)


CONDS = [("sparse", "(a) DSA, trained indexer"),
         ("dense", "(b) dense attention"),
         ("random", "(c) DSA, random indexer"),
         ("window", "(d) window of the last index_topk keys")]


def table(work, topk):
    rows = {}
    for cond, _ in CONDS:
        p = os.path.join(work, "answers-%s.jsonl" % cond)
        if os.path.exists(p):
            rows[cond] = [json.loads(l) for l in open(p)]
    lengths = sorted({r["length"] for rs in rows.values() for r in rs})
    out = ["| context | " + " | ".join(n for c, n in CONDS if c in rows) + " |",
           "|---|" + "---|" * len(rows)]
    for L in lengths:
        cells = []
        for c, _ in CONDS:
            if c not in rows:
                continue
            rs = [r for r in rows[c] if r["length"] == L]
            k = sum(r["correct"] for r in rs)
            cells.append("%.1f%% (%d/%d)" % (100.0 * k / len(rs), k, len(rs))
                         if rs else "-")
        toks = [r["prompt_tokens"] for rs in rows.values() for r in rs
                if r["length"] == L and r.get("prompt_tokens")]
        out.append("| %dK (prompts %d-%d tokens) | %s |" % (
            L // 1024, min(toks), max(toks), " | ".join(cells)))
    out.append("")
    out.append("Fact recall: the greedy answer contains the fact's key "
               "value. index_topk = %d." % topk)
    if "sparse" in rows:
        rs = rows["sparse"]
        for tag, key in (("held-out sentence shapes", "heldout_shape"),
                         ("held-out kinds of entity", "heldout_kind")):
            a = [r for r in rs if r[key]]
            b = [r for r in rs if not r[key]]
            if a and b:
                out.append("(a) on %s: %.1f%% (%d), on the others: %.1f%% "
                           "(%d)." % (tag, 100.0 * sum(r["correct"] for r in a)
                                      / len(a), len(a),
                                      100.0 * sum(r["correct"] for r in b)
                                      / len(b), len(b)))
    out.append("")
    out.append("TTFT through /v1/rag (streamed, first content token), "
               "median over the questions of each length:")
    out.append("")
    out.append("| context | condition | cold (first question of a collection) "
               "| shared block cached (the others) | cached tokens |")
    out.append("|---|---|---|---|---|")
    for L in lengths:
        for c, name in CONDS:
            rs = [r for r in rows.get(c, []) if r["length"] == L
                  and r.get("ttft") is not None]
            if not rs:
                continue
            # the first question of a collection prefills it (its cached
            # tokens are only the system prompt shared with other
            # collections); the others find its shared block cached
            seen, cold, warm, ct = set(), [], [], []
            for r in rs:
                if r["collection"] in seen:
                    warm.append(r["ttft"])
                    ct.append(r.get("cached_tokens") or 0)
                else:
                    seen.add(r["collection"])
                    cold.append(r["ttft"])
            warm.sort()
            ct.sort()
            out.append("| %dK | %s | %s | %s | %s |" % (
                L // 1024, name,
                "%.2f s (%d)" % (sorted(cold)[len(cold) // 2], len(cold))
                if cold else "-",
                "%.2f s" % warm[len(warm) // 2] if warm else "-",
                "%d" % ct[len(ct) // 2] if ct else "-"))
    examples = [r for r in rows.get("sparse", []) if r["length"] == lengths[-1]][:3]
    if examples:
        out.append("")
        out.append("Examples, (a) at %dK:" % (lengths[-1] // 1024))
        out.append("")
        for r in examples:
            out.append("- Q: %s -> A: %s (%s; fact: \"%s\")" % (
                r["question"], r["answer"].replace("\n", " ").strip(),
                "right" if r["correct"] else "wrong", r["sentence"]))
    return "\n".join(out) + "\n"


def curves(model):
    """Training summary from the model's curves.json and TRAINING.md."""
    cv = json.load(open(os.path.join(model, "curves.json")))
    stages = []
    for r in cv:
        if not stages or stages[-1][0] != r["stage"]:
            stages.append((r["stage"], []))
        stages[-1][1].append(r)
    out = ["| stage | steps | loss at start -> end (mean of 10 steps) |",
           "|---|---|---|"]
    for name, rs in stages:
        parts = []
        for k in ("lm", "answer", "attn", "kl"):
            v = [r[k] for r in rs if k in r]
            if len(v) >= 2:
                a, b = v[:10], v[-10:]
                parts.append("%s %.2f -> %.2f" % (k, sum(a) / len(a),
                                                  sum(b) / len(b)))
        out.append("| %s | %d | %s |" % (name, len(rs), ", ".join(parts)))
    return "\n".join(out) + "\n"


def main():
    cmd = sys.argv[1]
    if cmd == "prepare":
        import argparse
        ap = argparse.ArgumentParser()
        ap.add_argument("cmd")
        ap.add_argument("work")
        ap.add_argument("--model", required=True)
        ap.add_argument("--filler", required=True)
        ap.add_argument("--lengths", default="1024,4096,16384,32768")
        ap.add_argument("--questions", type=int, default=200)
        ap.add_argument("--seed", type=int, default=EVAL_SEED)
        ap.add_argument("--prefix", default="eval")
        a = ap.parse_args()
        prepare(a.work, a.model, [int(x) for x in a.lengths.split(",")],
                a.questions, a.filler, a.seed, a.prefix)
    elif cmd == "random-indexer":
        random_indexer(sys.argv[2], sys.argv[3])
    elif cmd == "ask":
        ask(sys.argv[2], sys.argv[3], sys.argv[4],
            int(sys.argv[5]) if len(sys.argv) > 5 else None)
    elif cmd == "curves":
        sys.stdout.write(curves(sys.argv[2]))
    elif cmd == "table":
        sys.stdout.write(table(sys.argv[2], int(sys.argv[3])))
    else:
        sys.exit("quality.py: unknown command %s" % cmd)


if __name__ == "__main__":
    main()
