#!/usr/bin/env bash
# Retrieval benchmark: builds the demo corpus, starts private redis and
# PostgreSQL servers (stopped by pid at exit), ingests the corpus into each
# store and measures, per store:
#   - recall@10 on tests/retrieval/questions.jsonl (a hit: a top-10
#     passage from an answer document that contains the answer phrase),
#     and MRR;
#   - retrieval + context building latency for a 64K-token context
#     (search, canonical listing, token cache, build), p50/p99 over the
#     question set, async store path, real DeepSeek tokenizer;
#   - the tokenization the Redis token cache saves (encode time per
#     request without / with a warm cache, and what the cache costs);
#   - prefix reuse: common prompt prefix of pairs of different questions
#     over the collection, as a share of the context tokens.
# Writes its section of bench/RESULTS.md (bench/section.sh retrieval).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
SG=$root/build/sparsegate
. tests/retrieval/servers.sh

make -s build/sparsegate >/dev/null
corpus=build/corpus/demo.jsonl
[ -s "$corpus" ] || tools/make_corpus.sh "$corpus"

tmp=$(mktemp -d /tmp/sg-bench-retr.XXXXXX)
chmod 755 "$tmp"
# a private copy: a rebuild during the run must not pull it away
cp "$SG" "$tmp/sparsegate"
SG=$tmp/sparsegate
# set +e: a failing cleanup step must not skip the rest of the cleanup
trap 'set +e; sg_servers_stop; rm -rf "$tmp"' EXIT
sg_servers_init "$tmp/srv"
sg_redis_start
sg_pg_start
# a second redis database number is not needed: token cache keys (tok:*)
# never collide with passage keys

export SG_BENCH_TMP=$tmp SG_BENCH_SG=$SG SG_BENCH_CORPUS=$corpus
export SG_BENCH_PG="postgres:$SG_PG" SG_BENCH_REDIS="redis:$SG_REDIS"
python3 - <<'PY' >"$tmp/section.md"
import array, json, os, re, statistics, subprocess, sys, time

tmp, sg, corpus = os.environ["SG_BENCH_TMP"], os.environ["SG_BENCH_SG"], os.environ["SG_BENCH_CORPUS"]
stores = {
    "sqlite": "sqlite:%s/demo.db" % tmp,
    "postgres": os.environ["SG_BENCH_PG"],
    "redis": os.environ["SG_BENCH_REDIS"],
}
qfile = "tests/retrieval/questions.jsonl"
questions = [json.loads(l) for l in open(qfile) if l.strip()]
docs_text = {}

def run(args, **kw):
    kw.setdefault("env", os.environ)
    return subprocess.run([sg] + args, capture_output=True, text=True, **kw)

out = []
ingest = {}
for name, uri in stores.items():
    t = time.time()
    r = run(["ingest", "--store", uri, "--collection", "demo", "--jsonl", corpus, "--quiet"])
    if r.returncode:
        sys.exit("ingest into %s failed: %s" % (name, r.stderr))
    m = re.search(r"(\d+) documents, (\d+) passages, ([\d.]+) MB", r.stderr)
    ingest[name] = (time.time() - t, int(m.group(2)), int(m.group(1)), float(m.group(3)))

def relevant(p, q):
    return p["doc_id"] in q["docs"] and q["contains"].lower() in p["text"].lower()

recall = {}
def search_env(name):
    return dict(os.environ, SG_PG_RANK="cd") if name == "postgres (ts_rank_cd)" else os.environ
for name, uri in list(stores.items()) + [("postgres (ts_rank_cd)", stores["postgres"])]:
    hits, rr, lat = 0, 0.0, []
    for q in questions:
        r = run(["search", "--async", "--store", uri, "--collection", "demo",
                 "--limit", "10", "--json", q["q"]], env=search_env(name))
        ps = [json.loads(l) for l in r.stdout.splitlines() if l.strip()]
        rank = next((i for i, p in enumerate(ps) if relevant(p, q)), None)
        if rank is not None:
            hits += 1
            rr += 1.0 / (rank + 1)
        m = re.search(r"in (\d+) ms", r.stderr)
    recall[name] = (hits / len(questions), rr / len(questions))

def latency(uri, extra):
    r = run(["context", "--async", "--store", uri, "--collection", "demo",
             "--budget", "65536", "--repeat", str(2 * len(questions)),
             "--questions", qfile] + extra)
    m = re.search(r"LATENCY p50=([\d.]+) p99=([\d.]+) encode_p50=([\d.]+) "
                  r"cache_p50=([\d.]+) tokens=(\d+)", r.stdout)
    if not m:
        sys.exit("context failed: %s %s" % (r.stdout, r.stderr))
    return [float(x) for x in m.groups()]

lat = {name: latency(uri, []) for name, uri in stores.items()}
# Token cache: a first pass fills it, the measured pass reads it.
cache_uri = stores["redis"]
latency(stores["sqlite"], ["--token-cache", cache_uri])
lat_cached = {name: latency(uri, ["--token-cache", cache_uri])
              for name, uri in stores.items()}

# Prefix reuse between consecutive different questions (sqlite store: the
# prompt does not depend on the store, only on the passages).
shares = []
prev = None
for i, q in enumerate(questions[:8]):
    f = "%s/ids%d.bin" % (tmp, i)
    r = run(["context", "--store", stores["sqlite"], "--collection", "demo",
             "--budget", "65536", "--ids-out", f, q["q"]])
    a = array.array("i")
    a.frombytes(open(f, "rb").read())
    if prev is not None:
        n = 0
        m = min(len(a), len(prev))
        while n < m and a[n] == prev[n]:
            n += 1
        shares.append(n / max(len(a), len(prev)))
    prev = a

load = open("/proc/loadavg").read().split()[:3]
print("Corpus: `tools/make_corpus.sh` (man pages of sections 5, 7, 8 and "
      "/usr/share/common-licenses): %d documents, %.1f MB, %d passages of "
      "~256 tokens.  Load average during the run: %s (a shared 2-core "
      "machine: absolute times move with the load)." %
      (ingest["sqlite"][2], ingest["sqlite"][3], ingest["sqlite"][1], " ".join(load)))
print()
print("| store | ingest (s) | recall@10 | MRR@10 | 64K context p50 (ms) | p99 (ms) | encoding p50 no cache (ms) | with warm Redis token cache: p50 / p99 (ms) | encoding p50 (ms) | cache I/O p50 (ms) |")
print("|---|---|---|---|---|---|---|---|---|---|")
for name in list(stores) + ["postgres (ts_rank_cd)"]:
    if name not in lat:
        print("| %s | | %.2f (%d/%d) | %.2f | | | | | | |" % (name, recall[name][0],
              round(recall[name][0] * len(questions)), len(questions), recall[name][1]))
        continue
    l, c = lat[name], lat_cached[name]
    print("| %s | %.1f | %.2f (%d/%d) | %.2f | %.1f | %.1f | %.1f | %.1f / %.1f | %.2f | %.1f |" % (
        name, ingest[name][0], recall[name][0], round(recall[name][0] * len(questions)),
        len(questions), recall[name][1], l[0], l[1], l[2], c[0], c[1], c[2], c[3]))
print()
print("Prompts are %d tokens (budget 65,536). Latency is one request as the gateway "
      "makes it, measured in-process over %d requests cycling through the "
      "question set: async search (top 16), canonical listing of the "
      "collection for the shared block, token cache lookups/stores when "
      "used, dedupe, budget fit, chat format, ids." % (int(lat["sqlite"][4]), 2 * len(questions)))
print()
print("Prefix reuse: consecutive pairs of %d different questions over the "
      "collection share %.1f%% of the prompt tokens at least (mean %.1f%%): "
      "the shared block (92%% of the passage budget, canonical order) and the "
      "system prompt come first, the question-specific passages and the "
      "question last." % (len(shares) + 1, 100 * min(shares), 100 * statistics.mean(shares)))
print()
print("What limits it: Postgres ranks every passage that matches any word of "
      "the question (an OR query: thousands of rows, ts_rank reads each "
      "tsvector), which is most of its time; FTS5 (bm25) and the Redis Lua "
      "script (ZUNIONSTORE over per-term posting sets with idf weights) "
      "score from posting lists. Without the token cache every request "
      "encodes the ~300 passages of its 64K prompt (the 'encoding p50 no "
      "cache' column); with a warm cache only the template and the question "
      "are encoded, and the cache I/O column (one MGET, one EVAL storing "
      "misses) is what is paid instead. "
      "SQLite runs in the calling thread (a few ms); Postgres and Redis "
      "run through the non-blocking sg_aquery path, driven here by poll(2).")
PY
cat "$tmp/section.md"
bash bench/section.sh retrieval "$tmp/section.md"
