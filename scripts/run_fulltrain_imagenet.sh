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
#
# Both run through the campaign runner (scripts/launch.sh lists the variables): a selection with
# its ckpt/selection/selection.json and an ImageNet training with its results.json are skipped,
# an interrupted training is resumed.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGENET=${IMAGENET:-../data/imagenet}
CIFAR=${CIFAR:-../data}
NPROC=${NPROC:-8}   # GPUs of the ImageNet training (torchrun)
BATCH=${BATCH:-768}
source scripts/launch.sh   # run_jobs: GPUS, EXECUTOR, ...; DRY_RUN=1 prints only

if [ -n "${BASE_PATH:-}" ]; then
    cell=(--stages imagenet --base_path "$BASE_PATH" --genotype_name "${GENOTYPE_NAME:--1}")
else
    cell=(--stages select imagenet --runs "${CKPT:-ckpt}"/search-*)
fi
run_jobs "${cell[@]}" --data "$CIFAR" --imagenet_data "$IMAGENET" --imagenet_gpus "$NPROC" \
    --imagenet_batch_size "$BATCH"
