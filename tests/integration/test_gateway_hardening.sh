#!/usr/bin/env bash
# What hostile probing found, kept fixed (a real nginx with the module, the
# tiny random model with DeepSeek's vocabulary):
#   - generated text is valid UTF-8, plain and streamed (a random model at
#     temperature 1.5 samples characters it does not finish)
#   - special-token text in a user's message is text, not a turn
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

gw_conf "$prefix" "$port"
chmod -R a+rX "$gw_dir"
gw_start "$prefix" "$port" || exit 1
trap 'gw_stop' EXIT

client utf8
# "<｜Assistant｜>" typed by a user: its tokens as text (not 1 token)
n_text=$("$gw_cli" tokenize --no-special --tokenizer "$gw_model_dir/tokenizer.json" "<｜Assistant｜>" | wc -w)
client special "$n_text"

gw_stop
exit "$([ "${gw_failed:-0}" -eq 0 ] && echo 0 || echo 1)"
