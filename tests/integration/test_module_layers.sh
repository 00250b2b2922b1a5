#!/usr/bin/env bash
# The nginx module's shape, checked from its source (no build needed):
#   - the layer table at the top of ngx_module/ngx_http_sparsegate_module.c
#     names every .c file once, and each file includes only the module
#     headers of its own interface, conf.h, and files of lower rows
#   - a function defined in one file is called from other files of lower
#     rows never (no circles between files)
#   - the engine's API (sparsegate.h: sg_engine_*, sg_config_*) is spoken
#     in ngx_http_sparsegate_engine.c only
#   - every file keeps nginx's order: includes, then types and static data,
#     then functions
# Prints PASS/FAIL lines.
set -uo pipefail
cd "$(dirname "$0")/../.."

python3 - ngx_module <<'PY'
import os, re, sys

d = sys.argv[1]
prefix = "ngx_http_sparsegate_"
failed = 0

def check(name, ok, why=""):
    global failed
    print("PASS %s" % name if ok else "FAIL %s: %s" % (name, why))
    failed += 0 if ok else 1

def strip(t):
    t = re.sub(r"/\*.*?\*/", lambda m: "\n" * m.group(0).count("\n"), t,
               flags=re.S)
    return re.sub(r'"(\\.|[^"\\])*"', '""', t)

files = sorted(f for f in os.listdir(d) if f.endswith((".c", ".h")))
cfiles = [f for f in files if f.endswith(".c")]
text = {f: open(os.path.join(d, f)).read() for f in files}

# the layer table: rows of "x.c y.c  description" in module.c's first comment
head = text[prefix + "module.c"].split("*/")[0]
rank = {}
for n, line in enumerate(l for l in head.splitlines()
                         if re.match(r"\s*\*\s+\w+\.c\b", l)):
    for name in re.findall(r"\b(\w+)\.c\b", line):
        rank[prefix + name + ".c"] = n
check("layers_name_every_file", sorted(rank) == cfiles,
      "table %s vs files %s" % (sorted(rank), cfiles))

def row(header):
    """The row a module header belongs to (None: shared by every file)."""
    base = header[:-2]
    if base == prefix + "conf":
        return None
    if base == prefix + "endpoints":
        return rank.get(prefix + "rag.c")
    return rank.get(base + ".c")

defs = {}
for f in cfiles:
    for m in re.finditer(r"^(%s\w+)\(" % prefix, strip(text[f]), re.M):
        defs.setdefault(m.group(1), f)

def implements(f, header):
    """f defines a function the header declares: its own interface."""
    decl = re.findall(r"\b(%s\w+)\(" % prefix, strip(text[header]))
    return any(defs.get(n) == f for n in decl)

bad = []
for f in files:
    r = rank.get(f[:-2] + ".c", row(f))
    for inc in re.findall(r'#include\s+"(%s\w+\.h)"' % prefix, text[f]):
        ir = row(inc)
        if ir is None or r is None or ir > r:
            continue
        if f.endswith(".c") and implements(f, inc):
            continue
        if f.endswith(".h") and inc[:-2] == f[:-2]:
            continue
        bad.append("%s includes %s" % (f, inc))
check("layers_includes_downward", not bad, "; ".join(bad))

bad = set()
for f in cfiles:
    for m in re.finditer(r"\b(%s\w+)\b" % prefix, strip(text[f])):
        g = defs.get(m.group(1))
        if g and g != f and rank[g] <= rank[f]:
            bad.add("%s -> %s (%s)" % (f, g, m.group(1)))
check("layers_calls_downward", not bad, "; ".join(sorted(bad)))

bad = [f for f in files if f != prefix + "engine.c"
       and (re.search(r"\bsg_engine_\w+|\bsg_config_\w+|\bsg_request\b|"
                      r"\bsg_event\b", strip(text[f]))
            or '#include "sparsegate.h"' in text[f])]
check("engine_api_in_one_file", not bad, "also in %s" % bad)

bad = []
for f in cfiles:
    t = strip(text[f])
    first_fn = re.search(r"^\w[\w \*]*\n(%s\w+)\(" % prefix, t, re.M)
    last_inc = [m.start() for m in re.finditer(r"^#include", t, re.M)]
    if first_fn and last_inc and last_inc[-1] > first_fn.start():
        bad.append(f)
check("nginx_file_order", not bad, "an #include after a function in %s" % bad)

sys.exit(1 if failed else 0)
PY
