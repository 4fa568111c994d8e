#!/usr/bin/env bash
# The paper's whole campaign as one command: every search (VARIANTS x SEEDS), the CIFAR-10 retrain
# of each search as soon as it has finished, and with STAGES="search retrain select imagenet" the
# selection rounds over all searches and the ImageNet retrain of the winner. Jobs with
# dependencies, run by the campaign runner; run it again to skip what finished and resume what
# was cut.
#
#   GPUS="0 1 2 3 4 5 6 7" bash scripts/run_campaign.sh     # one job per GPU, the next as one frees up
#   JOBS=2 bash scripts/run_campaign.sh                      # a CPU machine: 2 processes side by side
#   EXECUTOR=slurm PARTITION=gpu TIME=2880 CPUS=8 bash scripts/run_campaign.sh   # SLURM job arrays
#   DRY_RUN=1 bash scripts/run_campaign.sh                   # the job list
#   python scripts/campaign_status.py                        # the table of jobs, while it runs
#
# Logs and campaign.json (every job's state, command, log files and run directory) go to
# $CKPT/campaign/. The searches and retrains use the settings of run_search.sh and run_fulltrain.sh;
# scripts/launch.sh lists the other variables (NPROC, CKPT, SEARCH_ARGS, RETRAIN_ARGS, ...).
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=${DATA:-../data}
IMAGENET=${IMAGENET:-../data/imagenet}
SEEDS=${SEEDS:-"0 1 2"}
VARIANTS=${VARIANTS:-"s1 s2 s1r s1r_larger"}
STAGES=${STAGES:-"search retrain"}
IMAGENET_GPUS=${IMAGENET_GPUS:-8}   # the ImageNet retrain runs on this many GPUs (torchrun)
source scripts/launch.sh

# shellcheck disable=SC2086  # (the lists split into words on purpose)
run_jobs --stages $STAGES --variants $VARIANTS --seeds $SEEDS --data "$DATA" --imagenet_data "$IMAGENET" \
    --imagenet_gpus "$IMAGENET_GPUS"
