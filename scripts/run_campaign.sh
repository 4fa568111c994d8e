#!/usr/bin/env bash
# The paper's whole campaign as one command: every search (VARIANTS x SEEDS), the CIFAR-10 retrain
# of each search as soon as it has finished, and with STAGES="search retrain select imagenet" the
# selection rounds over all searches and the ImageNet retrain of the winner. Jobs with
# dependencies, run by campaign.py; run it again to skip what finished and resume what was cut.
#
#   GPUS="0 1 2 3 4 5 6 7" bash scripts/run_campaign.sh     # one job per GPU, the next as one frees up
#   JOBS=2 bash scripts/run_campaign.sh                      # a CPU machine: 2 processes side by side
#   EXECUTOR=slurm PARTITION=gpu TIME=2880 CPUS=8 bash scripts/run_campaign.sh   # SLURM job arrays
#   DRY_RUN=1 bash scripts/run_campaign.sh                   # the job list
#   python scripts/campaign_status.py                        # the table of jobs, while it runs
#
# Logs and campaign.json (every job's state, command, log files and run directory) go to
# $CKPT/campaign/. The searches and retrains use the settings of run_search.sh and run_fulltrain.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=${DATA:-../data}
IMAGENET=${IMAGENET:-../data/imagenet}
SEEDS=${SEEDS:-"0 1 2"}
VARIANTS=${VARIANTS:-"s1 s2 s1r s1r_larger"}
STAGES=${STAGES:-"search retrain"}
IMAGENET_GPUS=${IMAGENET_GPUS:-8}   # the ImageNet retrain runs on this many GPUs (torchrun)
CKPT=${CKPT:-ckpt}                 # the searches' run directories; ckpt/campaign: logs, campaign.json
SEARCH_ARGS=${SEARCH_ARGS:-}       # more train_search.py flags for every search
RETRAIN_ARGS=${RETRAIN_ARGS:-}     # more train.py flags for every retrain
source scripts/launch.sh   # NPROC, GPUS, JOBS, EXECUTOR, ... as campaign.py flags; DRY_RUN=1 prints only

# shellcheck disable=SC2086  # (the lists split into words on purpose)
python campaign.py --stages $STAGES --variants $VARIANTS --seeds $SEEDS --data "$DATA" --imagenet_data "$IMAGENET" \
    --imagenet_gpus "$IMAGENET_GPUS" --ckpt "$CKPT" --search_args "$SEARCH_ARGS" --retrain_args "$RETRAIN_ARGS" \
    "${where[@]}"
