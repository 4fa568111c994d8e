#!/usr/bin/env bash
# The authors' other search settings: FP-DARTS-s1r on RobustDARTS' spaces S1-S4 (CIFAR-10,
# CIFAR-100, SVHN) and on NAS-Bench-201 (CIFAR-10, CIFAR-100, ImageNet16-120), three seeds each;
# then, for S1-S4, the found cells trained from scratch. Each search writes
# ckpt/search-<space>_<dataset>-<time>-task<seed>/; collect the tables with
#   python scripts/collect_results.py ckpt
#
#   bash scripts/run_search_spaces.sh                       # every search, one after the other
#   SPACES="s2 s3" DATASETS="cifar10" SEEDS="0" bash scripts/run_search_spaces.sh
#   NB201_FILE=~/NAS-Bench-201-v1_1-096897.pth NB201_SPLITS=~/NAS-Bench-201/configs/nas-benchmark SPACES=nb201 \
#       bash scripts/run_search_spaces.sh
#   STAGE=eval bash scripts/run_search_spaces.sh            # train every finished S1-S4 cell
#   STAGE="search eval" GPUS="0 1 2 3" bash scripts/run_search_spaces.sh   # each cell as soon as its search ends
#   NPROC=4 bash scripts/run_search_spaces.sh               # torchrun, 4 processes per run
#   DRY_RUN=1 bash scripts/run_search_spaces.sh             # the job list
#
# The jobs run through the campaign runner, like run_search.sh: finished runs are skipped,
# interrupted ones resumed; logs and campaign.json in ckpt/campaign/; scripts/launch.sh lists the
# other variables (GPUS, JOBS, EXECUTOR=slurm, CKPT, ...). STAGE=eval trains the finished searches
# RUNS (default ckpt/search-s[1-4]_*); STAGE="search eval" trains each S1-S4 cell after its search.
#
# Every search runs FP-DARTS-s1r (--sal_type task --num_compare 5); the rest is each space's
# recipe, the defaults of train_search.py (docs/spaces.md):
# S1-S4 (the authors' RobustDARTS code): 50 epochs, 20 of them warm-up, drop-path 0.2 in the
#   supernet ramped over the epochs, two prune events per epoch until every node keeps 2 live ops
#   on 2 edges.
# NAS-Bench-201 (the authors' PruneNAS config): 16 channels, 5 cells per stage, 40 epochs (10
#   warm-up, then pruning until one op per edge), SGD with Nesterov momentum and weight decay
#   5e-4, lr warm-up then a truncated cosine, the weight step first, no pruned-op regulariser,
#   scoring on test-time transforms, and
#   --nb201_splits (from NB201_SPLITS) the benchmark's split files (without them: the
#                               --train_portion split, and the run directory says so)
#   --nb201_file (from NB201_FILE) records each epoch's cell's benchmark accuracies
# S1-S4 evaluation (STAGE=eval; train.py, the DARTS protocol: 600 epochs, batch 96, cutout,
# auxiliary head, drop-path 0.2, SVHN flipped as in the authors' code), in RobustDARTS' sizes:
#   CIFAR-10:          --layers 20 --init_channels 36
#   CIFAR-100, SVHN:   --layers 8 --init_channels 16
# (the FP-DARTS authors' own script trained 20 cells of 36 channels on SVHN too: give
#  LAYERS=20 CHANNELS=36 to use one size for every data set).
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=${DATA:-../data}
SEEDS=${SEEDS:-"0 1 2"}
SPACES=${SPACES:-"s1 s2 s3 s4 nb201"}
STAGE=${STAGE:-search}
source scripts/launch.sh   # run_jobs: NPROC, GPUS, JOBS, EXECUTOR, ...; DRY_RUN=1 prints only

stages=()
for stage in $STAGE; do
    case $stage in
        search) stages+=(search) ;;
        eval) stages+=(retrain) ;;
        *) echo "unknown STAGE '$stage' (search, eval)" >&2; exit 2 ;;
    esac
done
# shellcheck disable=SC2086  # (the lists split into words on purpose, RUNS is a glob)
flags=(--stages "${stages[@]}" --spaces $SPACES --seeds $SEEDS --data "$DATA" --retrain_seed "${SEED:-0}")
if [ -n "${DATASETS:-}" ]; then flags+=(--datasets $DATASETS); fi
if [[ " ${stages[*]} " != *" search "* ]]; then flags+=(--runs ${RUNS:-${CKPT:-ckpt}/search-s[1-4]_*}); fi
env_flags NB201_SPLITS:nb201_splits NB201_FILE:nb201_file LAYERS:layers CHANNELS:init_channels
run_jobs "${flags[@]}"
