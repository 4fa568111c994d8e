#!/usr/bin/env bash
# The one test command: install what the tests need on a fresh machine, then run pytest on the CPU.
# Debian's graphviz (the `dot` program) is installed when missing, for the cell drawings.
set -euo pipefail
cd "$(dirname "$0")/.."

python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt

if ! command -v dot >/dev/null 2>&1; then
    sudo_cmd=""
    [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo_cmd="sudo"
    $sudo_cmd apt-get install -y -qq graphviz >/dev/null 2>&1 \
        || { $sudo_cmd apt-get update -qq >/dev/null && $sudo_cmd apt-get install -y -qq graphviz >/dev/null; } \
        || echo "warning: could not install graphviz; drawing tests will be skipped" >&2
fi

CUDA_VISIBLE_DEVICES="" OMP_NUM_THREADS=2 python -m pytest -q "$@"
