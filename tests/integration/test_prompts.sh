#!/usr/bin/env bash
# `sparsegate prompts` (how the demo model's training prompts are made)
# against the gateway's own path: a collection ingested into a SQLite store
# and `sparsegate context` (the store listing, the search, the context
# builder /v1/rag runs) give the same prompt, token for token, when the
# collection fits the budget; bad input gets a message naming the line.
set -u
root=${SG_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
sg=$root/build/sparsegate
tok=$root/models/sparsegate-rag-tiny/tokenizer.json
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
pass() { echo "PASS $1"; }
bad() { echo "FAIL $1: $2"; fail=1; }

[ -f "$tok" ] || { echo "FAIL prompts/tokenizer: $tok missing"; exit 1; }

# a collection: documents in ingest's JSONL, and the same as passages
python3 - "$tmp" <<'PY'
import json, random, sys
tmp = sys.argv[1]
r = random.Random(5)
words = "the river bridge city was founded in metres long by".split()
docs = []
for i in r.sample(range(1000, 10000), 40):
    text = " ".join(r.choice(words) for _ in range(r.randint(20, 80)))
    text += " It is %d metres long." % r.randint(10, 9999)
    docs.append({"id": "p%d" % i, "title": "Notes %d" % (i % 7), "text": text})
with open(tmp + "/docs.jsonl", "w") as f:
    for d in docs:
        f.write(json.dumps(d) + "\n")
ps = [{"id": d["id"] + ":0000", "doc_id": d["id"], "title": d["title"],
       "text": d["text"], "collection": "c1"} for d in docs]
r.shuffle(ps)                  # the tool sorts them as the store lists them
with open(tmp + "/in.jsonl", "w") as f:
    for q in ("How long is the river?", "When was the city founded?"):
        f.write(json.dumps({"passages": ps, "question": q, "budget": 8192,
                            "answer": "It is 12 metres long."}) + "\n")
PY
"$sg" ingest --store "sqlite:$tmp/s.db" --collection c1 --jsonl "$tmp/docs.jsonl" \
    --passage-tokens 4096 --quiet 2>"$tmp/ingest.log" ||
    bad prompts/ingest "$(cat "$tmp/ingest.log")"
if "$sg" prompts --tokenizer "$tok" --in "$tmp/in.jsonl" --out "$tmp/p.bin" \
    2>"$tmp/err"; then
    pass prompts/runs
else
    bad prompts/runs "$(cat "$tmp/err")"
fi
i=0
for q in "How long is the river?" "When was the city founded?"; do
    "$sg" context --store "sqlite:$tmp/s.db" --collection c1 --budget 8192 \
        --tokenizer "$tok" --ids-out "$tmp/ctx$i.bin" "$q" >/dev/null 2>&1 ||
        bad prompts/context "sparsegate context failed"
    i=$((i + 1))
done
out=$(python3 - "$tmp" "$tok" <<'PY'
import json, struct, sys
tmp, tok = sys.argv[1], sys.argv[2]
raw = open(tmp + "/p.bin", "rb").read()
eos = next(a["id"] for a in json.load(open(tok))["added_tokens"]
           if a["content"] == "<｜end▁of▁sentence｜>")
at, msgs = 0, []
for i in range(2):
    n, na, placed, total = struct.unpack_from("<4i", raw, at)
    ids = struct.unpack_from("<%di" % (n + na), raw, at + 16)
    at += 16 + 4 * (n + na)
    ctx = open("%s/ctx%d.bin" % (tmp, i), "rb").read()
    ref = struct.unpack("<%di" % (len(ctx) // 4), ctx)
    if placed != total:
        msgs.append("q%d: %d of %d passages placed" % (i, placed, total))
    if tuple(ids[:n]) != ref:
        msgs.append("q%d: %d prompt ids vs %d from the store path" % (i, n, len(ref)))
    if na < 2 or ids[-1] != eos:
        msgs.append("q%d: answer not followed by the end of sentence" % i)
if at != len(raw):
    msgs.append("trailing bytes")
print("; ".join(msgs) or "ok")
PY
)
[ "$out" = ok ] && pass prompts/equal-gateway-context || bad prompts/equal-gateway-context "$out"

printf '{"passages": [{"id": "a"}], "question": "q", "budget": 512}\n' >"$tmp/bad.jsonl"
if "$sg" prompts --tokenizer "$tok" --in "$tmp/bad.jsonl" --out "$tmp/b.bin" \
    2>"$tmp/err"; then
    bad prompts/bad-passage "accepted a passage without text"
elif grep -q 'bad.jsonl:1: a passage has no "id" or "text"' "$tmp/err"; then
    pass prompts/bad-passage
else
    bad prompts/bad-passage "message: $(cat "$tmp/err")"
fi
"$sg" prompts --tokenizer "$tok" --in "$tmp/missing.jsonl" --out "$tmp/b.bin" \
    2>"$tmp/err" && bad prompts/missing-input "no error" ||
    { grep -q "missing.jsonl" "$tmp/err" && pass prompts/missing-input ||
      bad prompts/missing-input "message: $(cat "$tmp/err")"; }
exit $fail
