#!/usr/bin/env bash
# The one test command: install what the tests need on a fresh machine, lint the code (ruff, with
# pyproject.toml's rules), then run pytest on the CPU. Debian's graphviz (the `dot` program) is
# installed when missing, for the cell drawings.
set -euo pipefail
cd "$(dirname "$0")/.."

python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt

bash scripts/install_graphviz.sh

# The linter first: any finding fails the command (set -e) before the tests run.
python -m ruff check .

# Two workers (pytest-xdist), one per core; each test process uses one thread (tests/conftest.py).
CUDA_VISIBLE_DEVICES="" OMP_NUM_THREADS=1 python -m pytest -q -n 2 --dist loadgroup "$@"
