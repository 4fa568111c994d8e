#!/usr/bin/env bash
# The project's GPU check, for a machine with one GPU (under 8 minutes on an H100; --quick under 3):
# the search iteration (full / pruned, float32 / bf16 / channels_last), s2's Hessian rows, the
# DARTS_V2 training step with and without AMP and channels_last, a digits search + retraining on
# the GPU, a 1-process NCCL torchrun run, the pruner's events to the end state in every space
# (prune), a search stopped by SIGTERM and resumed (resume), and with 2 GPUs a 2-process NCCL
# search + retraining (torchrun_2gpu). It prints the device, a PASS/FAIL table on stderr, then one
# JSON summary on the last line; with OUT set, the summary is also written to $OUT/gpu_check.json
# after every section.
#
#   bash bench/gpu_check.sh                 # the whole check
#   bash bench/gpu_check.sh --quick         # tiny sizes (the paths, not the figures; also on a CPU)
#
# On a CPU it runs as well and lists in "skipped" what needs CUDA. Exit status: 0 when every
# section passed, 1 when one failed (its error is in "errors"), 124 when it ran past LIMIT seconds
# (470, or 170 with --quick: the device budget is 15 minutes, start-up included).
set -uo pipefail
cd "$(dirname "$0")/.."
limit=470
for arg in "$@"; do
    [[ $arg == --quick ]] && limit=170
done
LIMIT=${LIMIT:-$limit}
if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >&2 || true
fi
timeout "$LIMIT" python bench/gpu_check.py "$@"
