// Bytes one decode step must read, per engine, for a checkpoint and a list
// of contexts: the bound on how far apart two memory-bound engines' decode
// rates can be when both stream at the same rate.
//
//   node bench/peer/decode_bytes.mjs MODEL_DIR 4096 8192 16384 32768
//
// Weights: every tensor a token passes through, read once per step: all
// of them but the embedding (one row) and the routed experts (the top-k of
// each MoE layer).  Cache, SparseGate: the FP8 latent + scales and the f32
// RoPE key of the index_topk selected keys (engine/model/kv.c), plus the
// indexer key (FP8 + scale) of every earlier token.  Cache, llama.cpp
// (f16 cache, DSA as a mask over a dense KQ): latent + RoPE key of every
// earlier token, plus its indexer key in f16.
import { readFileSync, existsSync } from "node:fs";
import { join } from "node:path";

const [dir, ...ctxArgs] = process.argv.slice(2);
if (!dir || ctxArgs.length === 0) {
  console.error("usage: decode_bytes.mjs MODEL_DIR CONTEXT...");
  process.exit(2);
}
const cfg = JSON.parse(readFileSync(join(dir, "config.json"), "utf8"));
const size = { BF16: 2, F16: 2, F32: 4, F8_E4M3: 1, I32: 4 };

function tensors() {
  const idx = join(dir, "model.safetensors.index.json");
  const files = existsSync(idx)
    ? [...new Set(Object.values(JSON.parse(readFileSync(idx, "utf8")).weight_map))]
    : ["model.safetensors"];
  const out = [];
  for (const f of files) {
    const buf = readFileSync(join(dir, f));
    const n = Number(buf.readBigUInt64LE(0));
    const hdr = JSON.parse(buf.subarray(8, 8 + n).toString("utf8"));
    for (const [name, t] of Object.entries(hdr)) {
      if (name === "__metadata__") continue;
      if (!(t.dtype in size)) throw new Error(`${f}: ${name}: dtype ${t.dtype}`);
      out.push({ name, bytes: t.shape.reduce((a, b) => a * b, 1) * size[t.dtype],
                 rows: t.shape[0] });
    }
  }
  return out;
}

let weights = 0;
const E = cfg.n_routed_experts, k = cfg.num_experts_per_tok;
for (const t of tensors()) {
  if (t.name.includes("embed_tokens")) weights += t.bytes / t.rows;
  else if (/\.mlp\.experts\.\d+\./.test(t.name)) weights += t.bytes * k / E;
  else weights += t.bytes;
}
const Lyr = cfg.num_hidden_layers, topk = cfg.index_topk;
const lora = cfg.kv_lora_rank, rope = cfg.qk_rope_head_dim, idim = cfg.index_head_dim;
const sgSel = lora + 4 * Math.ceil(lora / 128) + 4 * rope;   // per selected key
const sgIdx = idim + 4;                                       // per earlier key
const llKey = 2 * (lora + rope) + 2 * idim;                   // per earlier key
const MB = (b) => (b / 1e6).toFixed(1);

console.log("| context | weights MB | cache MB SG / llama.cpp | total MB SG / llama.cpp | bound on the decode ratio |");
console.log("|---:|---:|---:|---:|---:|");
for (const c of ctxArgs.map(Number)) {
  const sgCache = Lyr * (Math.min(c, topk) * sgSel + c * sgIdx);
  const llCache = Lyr * c * llKey;
  const sg = weights + sgCache, ll = weights + llCache;
  console.log(`| ${c} | ${MB(weights)} | ${MB(sgCache)} / ${MB(llCache)} | ${MB(sg)} / ${MB(ll)} | ${(ll / sg).toFixed(2)}x |`);
}
