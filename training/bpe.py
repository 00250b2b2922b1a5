"""Trains a byte-level BPE tokenizer.json (Hugging Face format, the one
engine/tok_load.c reads) with DeepSeek-V3's pre-tokenizer and special
tokens, so the chat format is unchanged.

  bpe.py --text corpus.txt --vocab 4096 --out tokenizer.json
"""
import argparse
import collections
import json

import regex

# DeepSeek-V3's pre-tokenizer: digits in groups of up to three, CJK runs,
# then words / punctuation / whitespace; bytes mapped by ByteLevel.
PRE_TOKENIZER = {"type": "Sequence", "pretokenizers": [
    {"type": "Split", "pattern": {"Regex": "\\p{N}{1,3}"},
     "behavior": "Isolated", "invert": False},
    {"type": "Split", "pattern": {"Regex": "[一-龥぀-ゟ゠-ヿ]+"},
     "behavior": "Isolated", "invert": False},
    {"type": "Split", "pattern": {"Regex":
        "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+"
        "|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*"
        "|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"},
     "behavior": "Isolated", "invert": False},
    {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
     "use_regex": False}]}
DECODER = {"type": "ByteLevel", "add_prefix_space": True,
           "trim_offsets": True, "use_regex": True}
POST = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
        "use_regex": True}

# (content, special) in id order; DeepSeek's bos 0, eos 1, pad 2.
SPECIALS = [("<｜begin▁of▁sentence｜>", True), ("<｜end▁of▁sentence｜>", True),
            ("<｜▁pad▁｜>", True), ("<｜User｜>", False),
            ("<｜Assistant｜>", False), ("<think>", False),
            ("</think>", False)]


def bytes_to_unicode():
    bs = (list(range(33, 127)) + list(range(161, 173))
          + list(range(174, 256)))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def pretokenize(text):
    pieces = [text]
    for step in PRE_TOKENIZER["pretokenizers"][:3]:
        rx = regex.compile(step["pattern"]["Regex"])
        out = []
        for p in pieces:
            at = 0
            for m in rx.finditer(p):
                if m.start() > at:
                    out.append(p[at:m.start()])
                if m.end() > m.start():
                    out.append(m.group())
                at = m.end()
            if at < len(p):
                out.append(p[at:])
        pieces = out
    return pieces


def train(text, vocab_size):
    b2u = bytes_to_unicode()
    words = collections.Counter()
    for line in text.split("\n\n"):
        for p in pretokenize(line + "\n\n"):
            words["".join(b2u[b] for b in p.encode())] += 1
    vocab = [c for _, c in SPECIALS] + [b2u[b] for b in range(256)]
    ids = {t: i for i, t in enumerate(vocab)}
    seqs = [[ids[ch] for ch in w] for w in words]
    counts = list(words.values())
    pairs = collections.Counter()
    where = collections.defaultdict(set)
    for wi, s in enumerate(seqs):
        for a, b in zip(s, s[1:]):
            pairs[(a, b)] += counts[wi]
            where[(a, b)].add(wi)
    merges = []
    while len(vocab) < vocab_size and pairs:
        (a, b), c = max(pairs.items(), key=lambda kv: (kv[1], -kv[0][0],
                                                        -kv[0][1]))
        if c < 2:
            break
        new = len(vocab)
        vocab.append(vocab[a] + vocab[b])
        merges.append((vocab[a], vocab[b]))
        for wi in list(where.pop((a, b), ())):
            s, n = seqs[wi], counts[wi]
            for x, y in zip(s, s[1:]):
                pairs[(x, y)] -= n
                if pairs[(x, y)] <= 0:
                    del pairs[(x, y)]
                where[(x, y)].discard(wi)
            out, i = [], 0
            while i < len(s):
                if i + 1 < len(s) and s[i] == a and s[i + 1] == b:
                    out.append(new)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            seqs[wi] = out
            for x, y in zip(out, out[1:]):
                pairs[(x, y)] += n
                where[(x, y)].add(wi)
        pairs.pop((a, b), None)
    return vocab, merges


def tokenizer_json(vocab, merges):
    added = [{"id": i, "content": c, "single_word": False, "lstrip": False,
              "rstrip": False, "normalized": not sp, "special": sp}
             for i, (c, sp) in enumerate(SPECIALS)]
    return {"version": "1.0", "truncation": None, "padding": None,
            "added_tokens": added,
            "normalizer": {"type": "Sequence", "normalizers": []},
            "pre_tokenizer": PRE_TOKENIZER, "post_processor": POST,
            "decoder": DECODER,
            "model": {"type": "BPE", "dropout": None, "unk_token": None,
                      "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False,
                      "byte_fallback": False,
                      "vocab": {t: i for i, t in enumerate(vocab)},
                      "merges": [[a, b] for a, b in merges]}}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--text", required=True)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    with open(a.text, encoding="utf-8") as f:
        text = f.read()
    vocab, merges = train(text, a.vocab)
    with open(a.out, "w", encoding="utf-8") as f:
        json.dump(tokenizer_json(vocab, merges), f, ensure_ascii=False)
    print("bpe: %d tokens (%d merges) -> %s" % (len(vocab), len(merges),
                                                  a.out))


if __name__ == "__main__":
    main()
