#!/usr/bin/env bash
# bench/section.sh NAME FILE: puts FILE's text into bench/RESULTS.md between
# <!-- NAME:begin --> and <!-- NAME:end --> (replacing what was there, or
# appending), stamped with the machine, the date and the command.
set -euo pipefail
cd "$(dirname "$0")/.."
name=$1
body=$2
res=bench/RESULTS.md
[ -f "$res" ] || printf '# Benchmark results\n\nEach section is written by its own script (bench/run.sh runs them all).\n' >"$res"
stamp="_$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/{print $2}') GB; \`bash bench/${name}.sh\`_"
new=$(mktemp)
{
    echo "<!-- $name:begin -->"
    echo "## $name"
    echo
    echo "$stamp"
    echo
    cat "$body"
    echo "<!-- $name:end -->"
} >"$new"
if grep -q "<!-- $name:begin -->" "$res"; then
    awk -v name="$name" -v newf="$new" '
        $0 == "<!-- " name ":begin -->" { while ((getline l < newf) > 0) print l; skip = 1; next }
        $0 == "<!-- " name ":end -->" { skip = 0; next }
        !skip { print }' "$res" >"$res.tmp" && mv "$res.tmp" "$res"
else
    { echo; cat "$new"; } >>"$res"
fi
rm -f "$new"
