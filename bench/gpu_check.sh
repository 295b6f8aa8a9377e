#!/usr/bin/env bash
# GPU readiness of a worker node in one table, in under 8 minutes (bench/gpu_check.py says
# what each row measures). Run from a checkout with `uv sync` done and OpenMM's CUDA plug-in
# installed at the locked openmm version, as the worker image has it:
#   uv pip install "openmm[cuda12]==$(uv run python -c 'import openmm; print(openmm.__version__)')"
#   bash bench/gpu_check.sh            # CUDA, ~25 000-atom water box, CUDA -> CPU resume
#   bash bench/gpu_check.sh --dry-run  # no GPU: CPU, small box, CPU -> Reference resume
# Exit status 0 when every row passes.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
exec timeout 480 "$python" -m bench.gpu_check "$@"
