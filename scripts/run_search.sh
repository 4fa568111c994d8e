#!/usr/bin/env bash
# The paper's searches on CIFAR-10: FP-DARTS-s1, -s2, -s1r, and s1r on the larger search space,
# three seeds each (the README's results are means over three searches). Each search writes
# ckpt/search-<variant>-<time>-task<seed>/ (genotype.json, results.json, ...).
#
#   bash scripts/run_search.sh              # all variants, seeds 0 1 2, one after the other
#   VARIANTS="s1r" SEEDS="0" bash scripts/run_search.sh
#   NPROC=4 bash scripts/run_search.sh      # each search on 4 GPUs (torchrun; same global batch)
#   GPUS="0 1 2 3" bash scripts/run_search.sh   # 4 searches at a time, one per GPU
#   EXECUTOR=slurm PARTITION=gpu TIME=2880 bash scripts/run_search.sh   # SLURM arrays (submitit)
#
# The jobs run through the campaign runner (the variants' flags are VARIANTS in
# scripts/campaign_cli.py): finished searches are skipped, interrupted ones resumed; logs and
# campaign.json in ckpt/campaign/; scripts/launch.sh lists the other variables. The variants:
#   s1: first-order Taylor saliency S = -(dL/dbeta) * beta of the search loss;
#   s2: plus the exact Hessian diagonal term, on about 500 Hessian rows per event;
#   s1r: the 5 lowest-saliency candidates re-checked by removing each one and measuring the
#        validation loss on iter_compare + 1 = 31 batches;
#   s1r_larger: s1r without the 2-inputs-per-node rule; 8 ops per cell, anywhere in the cell.
#
# Common settings are the authors' defaults (see `python train_search.py --help`):
#   --epochs 60 --warmup 10      10 epochs of plain first-order DARTS, then a prune event in the
#                                middle and at the end of every epoch (the last one in epoch 54)
#   --batch_size 64 --train_portion 0.5
#                                half of the training set trains the weights, the other half
#                                alpha and the saliency (global batch, split over NPROC processes)
#   --init_channels 16 --layers 8, SGD 0.025 -> 0.001 cosine, Adam 3e-4 on alpha
#   --reg_type norm --reg_alpha 0.1
#                                the regulariser that pushes the mixing weight of pruned ops to 0
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=${DATA:-../data}
SEEDS=${SEEDS:-"0 1 2"}
VARIANTS=${VARIANTS:-"s1 s2 s1r s1r_larger"}
source scripts/launch.sh   # run_jobs: NPROC, GPUS, JOBS, EXECUTOR, ...; DRY_RUN=1 prints only

# shellcheck disable=SC2086  # (the lists split into words on purpose)
run_jobs --stages search --variants $VARIANTS --seeds $SEEDS --data "$DATA"
