#!/usr/bin/env bash
# FP-DARTS end to end in a few minutes, on a CPU, offline: the handwritten digits that
# scikit-learn ships (8x8 images, 10 classes; 1,437 for training, 360 held out for the test).
#
#   bash scripts/quickstart.sh            # installs what is missing, then searches, trains, tests
#
# 1. installs requirements.txt unless everything is importable already (a second run skips it),
#    and Graphviz with apt-get when `dot` is missing;
# 2. searches a cell with FP-DARTS-s1: first-order DARTS on a small supernet (cells of 3 nodes,
#    9 edges), then prunes the weakest op of the normal and of the reduce cell by search-loss
#    saliency at every prune event, down to the DARTS cell (2 inputs per node);
# 3. trains the found cell from scratch (a fresh network, no weights from the search);
# 4. reports the test accuracy, the genotype, and where the drawings of the cells and the search's
#    summary figure are (scripts/plot_search.py draws more from the search's run directory).
#
# Everything lands in $OUT (default: quickstart/). The sizes below are knobs for a quick look;
# the paper's settings are in scripts/run_search.sh and scripts/run_fulltrain.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-quickstart}
SUBSET=${SUBSET:-600}                # training images the search uses: 300 weights, 300 architecture
STEPS=${STEPS:-3}                    # nodes per cell: 9 edges, 63 candidate ops, 6 kept
SEARCH_EPOCHS=${SEARCH_EPOCHS:-16}   # 2 warm-up epochs, then 57 prune events (63 -> 6 ops per cell)
WARMUP=${WARMUP:-2}
PRUNE_INTERVAL=${PRUNE_INTERVAL:-1}  # weight steps between prune events (the paper: half an epoch)
BATCH=${BATCH:-64}                   # search batch (training from scratch uses 64)
TRAIN_EPOCHS=${TRAIN_EPOCHS:-20}     # training from scratch, on all 1,437 training images
SEED=${SEED:-0}

if python -c "import torch, torchvision, sklearn, tensorboard, graphviz, matplotlib" 2>/dev/null; then
    echo "== requirements: already installed"
else
    echo "== installing requirements.txt"
    python -m pip install --quiet -r requirements.txt
fi
bash scripts/install_graphviz.sh   # the drawings of the cells; skipped when present

mkdir -p "$OUT"
start=$(date +%s)
echo "== 1/2 search (FP-DARTS-s1 on digits)"
python train_search.py --dataset digits --subset "$SUBSET" --batch_size "$BATCH" --init_channels 8 --layers 3 \
    --steps "$STEPS" --epochs "$SEARCH_EPOCHS" --warmup "$WARMUP" --prune_interval "$PRUNE_INTERVAL" \
    --report_freq 1000 --seed "$SEED" --save quickstart --out_dir "$OUT" > "$OUT/search.out"
search=$(ls -td "$OUT"/search-quickstart-* | head -1)
tail -n 2 "$OUT/search.out"

echo "== 2/2 train the found cell from scratch"
python train.py --base_dir "$search" --dataset digits --no_auxiliary --no_cutout --epochs "$TRAIN_EPOCHS" \
    --batch_size 64 --learning_rate 0.05 --init_channels 16 --layers 4 --drop_path_prob 0.1 \
    --report_freq 1000 --seed "$SEED" > "$OUT/train.out"
evaluation=$(ls -td "$search"/eval-* | head -1)

python - "$search" "$evaluation" "$(( $(date +%s) - start ))" <<'EOF'
import json
import sys
from pathlib import Path

search, evaluation, seconds = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
found = json.loads((search / "results.json").read_text())
trained = json.loads((evaluation / "results.json").read_text())
print(f"\nsearch run:      {search}")
print(f"genotype:        {search / 'genotype.json'}")
print(f"  normal: {found['genotype']['normal']}")
print(f"  reduce: {found['genotype']['reduce']}")
drawings = sorted(str(p) for p in search.glob("genotype_*.png"))
print(f"drawings:        {', '.join(drawings) or 'none (Graphviz missing)'}")
summary = search / "summary.png"
print(f"summary figure:  {summary if summary.is_file() else 'none (see search.out)'}")
print(f"trained network: {evaluation} ({trained['params_M']:.3f}M parameters)")
print(f"test accuracy:   {trained['final_test_top1']:.2f}% on the 360 held-out digits (chance: 10%)")
print(f"wall time:       {seconds} s for the search and the training")
EOF
