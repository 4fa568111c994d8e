#!/usr/bin/env bash
# Transfer a searched cell to ImageNet (the mobile setting: 48 channels, 14 cells, 250 epochs,
# label smoothing 0.1, auxiliary head, lr 0.1 with the authors' linear schedule).
#
# Which cell? "By model selection", without the test set: scripts/select_genotype.py retrains
# the candidates on CIFAR-10 with 10% of the training set held out, by successive halving
# (the authors planned 20 -> 60 -> 600 epochs), and prints the winner's --base_path /
# --genotype_name. Give them here, or let this script run the selection first:
#
#   BASE_PATH=ckpt/search-s1r-20261129-010203-task0 GENOTYPE_NAME=59 bash scripts/run_fulltrain_imagenet.sh
#   bash scripts/run_fulltrain_imagenet.sh                 # select among ckpt/search-*, then train
#
# The authors trained with a global batch of 768 over several GPUs (`--batch_size` is the global
# batch here; above 256 the learning rate warms up over 5 epochs). The ImageNet folder needs
# train/ and val/ with one sub-folder per class.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGENET=${IMAGENET:-../data/imagenet}
CIFAR=${CIFAR:-../data}
NPROC=${NPROC:-8}
source scripts/launch.sh   # NPROC processes (torchrun) or one; DRY_RUN=1 prints only
BATCH=${BATCH:-768}
run=()
[ -n "${DRY_RUN:-}" ] && run=(echo)   # DRY_RUN=1: print the commands only

if [ -z "${BASE_PATH:-}" ]; then
    "${run[@]}" python scripts/select_genotype.py ckpt/search-* --budgets 20 60 600 --keep 6 1 \
        --out_dir ckpt/selection --train_args "--dataset cifar10 --data $CIFAR"
    if [ -n "${DRY_RUN:-}" ]; then
        BASE_PATH="<selected run>" GENOTYPE_NAME="<selected epoch>"
    else
        read -r BASE_PATH GENOTYPE_NAME < <(python -c \
            "import json; s = json.load(open('ckpt/selection/selection.json')); print(s['run'], s['epoch'])")
    fi
fi

"${launch[@]}" train_imagenet.py --mode train --auxiliary \
    --base_path "$BASE_PATH" --genotype_name "${GENOTYPE_NAME:--1}" --data "$IMAGENET" \
    --batch_size "$BATCH" --sync_bn
