#!/usr/bin/env bash
# Retrains models/sparsegate-rag-tiny from nothing: installs Debian's
# PyTorch if missing (python3-torch, python3-numpy, python3-regex; nothing
# from pip), builds the `sparsegate` command (its context builder makes the
# training prompts), then runs training/train.py under nice.
#
#   bash training/train.sh [--minutes 50] [--seed 1] [--out DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
if ! /usr/bin/python3 -c 'import torch, numpy, regex' 2>/dev/null; then
    echo "train: installing python3-torch python3-numpy python3-regex (apt)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends python3-torch \
        python3-numpy python3-regex >/dev/null
fi
make -s -j2 build/sparsegate
# One torch thread: on a busy two-core machine two threads spin against
# each other and train at half the speed.
export OMP_WAIT_POLICY=passive
exec nice -n 10 /usr/bin/python3 training/train.py "$@"
