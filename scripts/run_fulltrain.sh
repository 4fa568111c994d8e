#!/usr/bin/env bash
# Train every searched cell from scratch on CIFAR-10 (the DARTS protocol), one run per search:
# 600 epochs, batch 96, 36 channels, 20 cells, cutout 16, auxiliary head (weight 0.4), drop-path
# 0.2, SGD 0.025 cosine, weight decay 3e-4. Each training writes <search run>/eval-<save>-<time>-g<epoch>/
# with results.json (final test top-1, params, mult-adds); then collect the table with
#   python scripts/collect_results.py ckpt
#
#   bash scripts/run_fulltrain.sh                       # every ckpt/search-*/ that finished
#   RUNS="ckpt/search-s1r-*" NPROC=2 bash scripts/run_fulltrain.sh
#   GPUS="0 1 2 3" bash scripts/run_fulltrain.sh        # 4 at a time, one per GPU (also EXECUTOR=slurm)
#
# Through the campaign runner: finished trainings are skipped, interrupted ones resumed
# (scripts/launch.sh lists the variables).
#
# The larger-space genotypes (3-element genes) are recognised automatically; `--no_restrict` is
# accepted too, as in the authors' README.
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=${DATA:-../data}
RUNS=${RUNS:-"${CKPT:-ckpt}/search-*"}
EPOCH=${EPOCH:--1}        # which epoch's genotype: -1 = the final one
SEED=${SEED:-0}
source scripts/launch.sh   # run_jobs: NPROC, GPUS, JOBS, EXECUTOR, ...; DRY_RUN=1 prints only

# shellcheck disable=SC2086  # (RUNS is a glob, expanded on purpose)
run_jobs --stages retrain --runs $RUNS --epoch "$EPOCH" --retrain_seed "$SEED" --data "$DATA"
