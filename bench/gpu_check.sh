#!/usr/bin/env bash
# The project's GPU check, for a machine with one GPU (under 8 minutes on an H200): the search
# iteration (full / pruned, float32 / bf16 / channels_last), s2's Hessian rows, the DARTS_V2
# training step with and without AMP and channels_last, a digits search + retraining on the
# GPU, and a 1-process NCCL torchrun run. It prints the device, then one JSON summary on the last
# line; with OUT set, the summary is also written to $OUT/gpu_check.json after every section.
#
#   bash bench/gpu_check.sh                 # the whole check
#   bash bench/gpu_check.sh --quick         # tiny sizes (the paths, not the figures; also on a CPU)
#
# On a CPU it runs as well and lists in "skipped" what needs CUDA. Exit status: 0 when every
# section ran, 1 when one failed (its error is in "errors"), 124 when it ran past LIMIT seconds.
set -uo pipefail
cd "$(dirname "$0")/.."
LIMIT=${LIMIT:-470}
if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >&2 || true
fi
timeout "$LIMIT" python bench/gpu_check.py "$@"
