#!/usr/bin/env bash
# Builds the demo corpus: a JSONL of documents ({"id","title","text",
# "metadata"}) from text that every Debian machine of this project has:
# the manual pages of sections 5, 7 and 8 (file formats, overviews,
# administration: tcp(7), epoll(7), signal(7), nginx(8), ...) with their
# roff markup stripped, and /usr/share/common-licenses.  Output is
# deterministic (sorted inputs, no dates): the same machine gives the same
# bytes.
#
#   tools/make_corpus.sh [OUT.jsonl]     (default build/corpus/demo.jsonl)
#   SECTIONS="7" tools/make_corpus.sh    (fewer sections: a smaller corpus)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-build/corpus/demo.jsonl}
sections=${SECTIONS:-"5 7 8"}
mkdir -p "$(dirname "$out")"
export LC_ALL=C

python3 - "$out" $sections <<'PY'
import gzip, json, os, re, sys

out, sections = sys.argv[1], sys.argv[2:]

ESCAPES = {
    r"\-": "-", r"\(em": "--", r"\(en": "-", r"\(bu": "*", r"\(aq": "'",
    r"\(dq": '"', r"\(lq": '"', r"\(rq": '"', r"\(oq": "'", r"\(cq": "'",
    r"\(co": "(c)", r"\(rg": "(R)", r"\(tm": "(TM)", r"\(mu": "x",
    r"\(<=": "<=", r"\(>=": ">=", r"\(->": "->", r"\(ga": "`", r"\e": "\\",
    r"\&": "", r"\ ": " ", r"\~": " ", r"\|": "", r"\^": "", r"\,": "",
    r"\/": "", r"\:": "", r"\%": "", r"\c": "",
}
ESC_RE = re.compile("|".join(re.escape(k) for k in
                             sorted(ESCAPES, key=len, reverse=True)))
FONT_RE = re.compile(r"\\f(\[[^\]]*\]|\(..|.)")
SIZE_RE = re.compile(r"\\s[-+]?\d+")
OTHER_RE = re.compile(r"\\\*(\[[^\]]*\]|\(..|.)|\\\[[^\]]*\]|\\\(..")
ALT = {"BR", "RB", "BI", "IB", "IR", "RI", "SM", "SB", "B", "I"}

def inline(s):
    s = FONT_RE.sub("", s)
    s = SIZE_RE.sub("", s)
    s = ESC_RE.sub(lambda m: ESCAPES[m.group(0)], s)
    s = OTHER_RE.sub("", s)
    return s

def args(s):
    parts = re.findall(r'"[^"]*"|\S+', s)
    return [p.strip('"') for p in parts]

def strip_roff(src, name_of=None):
    title, lines, para = None, [], []
    def flush():
        if para:
            lines.append(" ".join(para))
            para.clear()
    for raw in src.splitlines():
        if raw.startswith(('.\\"', "'\\\"", '\\"')):
            continue
        if raw.startswith((".", "'")):
            m = re.match(r"[.'](\S+)\s*(.*)", raw)
            if not m:
                continue
            req, rest = m.group(1), m.group(2)
            if req in ("TH", "Dt"):
                a = args(inline(rest))
                if a:
                    title = "%s(%s)" % (a[0].lower(), a[1] if len(a) > 1 else "")
            elif req == "Nm" and name_of is not None and not rest:
                para.append(name_of)
            elif req == "Nm":
                para.append(inline(rest))
            elif req in ("SH", "SS", "Sh", "Ss"):
                flush()
                lines.append("")
                lines.append(("## " if req in ("SH", "Sh") else "### ")
                             + inline(" ".join(args(rest))).strip())
            elif req in ("PP", "P", "LP", "sp", "br", "TP", "IP", "HP",
                         "RS", "RE", "nf", "fi", "in", "TQ", "EX", "EE",
                         "Pp", "Bl", "El", "Bd", "Ed", "It"):
                flush()
                if req == "IP" and rest:
                    a = args(rest)
                    if a and a[0]:
                        para.append(inline(a[0]))
            elif req in ALT:
                a = args(rest)
                para.append(inline("".join(a) if len(req) == 2 else " ".join(a)))
            elif req in ("UR", "MT"):
                para.append(inline(rest))
            elif req == "Fl":
                para.append("-" + inline(" ".join(args(rest))))
            elif re.fullmatch(r"[A-Z][a-z]", req):
                # other mdoc macros: keep their words, drop the macro
                # names they nest (".Op Fl s Ar signal")
                words = [w for w in args(rest)
                         if not re.fullmatch(r"[A-Z][a-z]|Ns|No", w)]
                para.append(inline(" ".join(words)))
            # every other request (macros, tables, conditionals) is dropped
            continue
        t = inline(raw).strip()
        if t:
            para.append(t)
        else:
            flush()
    flush()
    text, blank = [], False
    for l in lines:
        if l == "":
            if not blank and text:
                text.append("")
            blank = True
            continue
        if l.startswith("#"):
            if text and text[-1] != "":
                text.append("")
            text.append(l)
            text.append("")
            blank = True
            continue
        text.append(l)
        text.append("")
        blank = True
    return title, "\n".join(text).strip() + "\n"

docs = 0
size = 0
with open(out, "w", encoding="utf-8") as f:
    for sec in sections:
        d = "/usr/share/man/man%s" % sec
        if not os.path.isdir(d):
            continue
        for name in sorted(os.listdir(d)):
            path = os.path.join(d, name)
            if not name.endswith(".gz") or os.path.islink(path):
                continue
            try:
                src = gzip.open(path, "rb").read().decode("utf-8", "replace")
            except OSError:
                continue
            if src.lstrip().startswith(".so "):     # alias of another page
                continue
            title, text = strip_roff(src, name[:-3].rsplit(".", 1)[0])
            if len(text) < 200:
                continue
            base = name[:-3]
            doc = {"id": "man%s/%s" % (sec, base),
                   "title": title or base,
                   "text": text,
                   "metadata": {"source": "man", "section": sec}}
            f.write(json.dumps(doc, ensure_ascii=False, sort_keys=True) + "\n")
            docs += 1
            size += len(text)
    d = "/usr/share/common-licenses"
    for name in sorted(os.listdir(d)) if os.path.isdir(d) else []:
        path = os.path.join(d, name)
        if os.path.islink(path) or not os.path.isfile(path):
            continue
        text = open(path, encoding="utf-8", errors="replace").read()
        doc = {"id": "license/%s" % name, "title": "%s license" % name,
               "text": text, "metadata": {"source": "license"}}
        f.write(json.dumps(doc, ensure_ascii=False, sort_keys=True) + "\n")
        docs += 1
        size += len(text)
print("make_corpus: %d documents, %.1f MB of text -> %s"
      % (docs, size / 1e6, out), file=sys.stderr)
PY
