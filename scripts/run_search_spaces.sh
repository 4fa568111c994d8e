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
#   NPROC=4 bash scripts/run_search_spaces.sh               # torchrun, 4 processes per run
#
# Every search runs FP-DARTS-s1r (--sal_type task --num_compare 5); the rest is each space's
# recipe, the defaults of train_search.py (README, "Other search spaces"):
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
NB201_FILE=${NB201_FILE:-}
NB201_SPLITS=${NB201_SPLITS:-}
source scripts/launch.sh   # NPROC processes (torchrun) or one; DRY_RUN=1 prints only

search() {  # space, data set
    local space=$1 dataset=$2 flags=()
    if [ "$space" = nb201 ]; then
        if [ -n "$NB201_SPLITS" ]; then flags+=(--nb201_splits "$NB201_SPLITS"); fi
        if [ -n "$NB201_FILE" ]; then flags+=(--nb201_file "$NB201_FILE"); fi
    fi
    for seed in $SEEDS; do
        "${launch[@]}" train_search.py --search_space "$space" --dataset "$dataset" --sal_type task \
            --num_compare 5 "${flags[@]}" --data "$DATA" --seed "$seed" --task "$seed" \
            --save "${space}_${dataset}"
    done
}

evaluate() {  # a finished S1-S4 search run directory
    local run=$1 spec dataset layers channels
    spec=${run##*/search-}; spec=${spec%%-*}; dataset=${spec#*_}
    case $dataset in
        cifar10) layers=20; channels=36 ;;
        *) layers=8; channels=16 ;;
    esac
    "${launch[@]}" train.py --mode train --cutout --auxiliary --base_dir "$run" --dataset "$dataset" \
        --data "$DATA" --layers "${LAYERS:-$layers}" --init_channels "${CHANNELS:-$channels}" \
        --batch_size 96 --seed "${SEED:-0}"
}

case $STAGE in
    search)
        for space in $SPACES; do
            case $space in
                s1|s2|s3|s4) datasets=${DATASETS:-"cifar10 cifar100 svhn"} ;;
                nb201) datasets=${DATASETS:-"cifar10 cifar100 imagenet16"} ;;
                *) echo "unknown space '$space' (s1 s2 s3 s4 nb201)" >&2; exit 2 ;;
            esac
            for dataset in $datasets; do
                search "$space" "$dataset"
            done
        done ;;
    eval)
        for run in ${RUNS:-ckpt/search-s[1-4]_*}; do
            [ -f "$run/genotype.json" ] || { echo "skipping $run: the search has not finished" >&2; continue; }
            evaluate "$run"
        done ;;
    *) echo "unknown STAGE '$STAGE' (search, eval)" >&2; exit 2 ;;
esac
