#!/usr/bin/env bash
# The worker image's Python environment without a container engine: the same build context
# as deploy/build-worker-image.sh (requirements.txt from uv.lock + the relaymd wheel) and the
# same three pip steps as the Dockerfile's RUN, in a clean `python -m venv` (pip only).
#   packaging/worker-venv.sh DEST        -> DEST/venv/bin/relaymd-worker
# A recipe the Dockerfile no longer follows fails here first: each pip step below must still
# appear in the Dockerfile verbatim.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $# -eq 1 ]] || { echo "usage: $0 DEST" >&2; exit 2; }
dest=$(realpath -m "$1")
python=${WORKER_PYTHON:-python3.11}
cuda_extra=$(sed -n 's/^ARG OPENMM_CUDA_EXTRA=//p' Dockerfile)

# shellcheck disable=SC2016  # the Dockerfile's text, with its own unexpanded variables
for step in 'pip install --no-cache-dir -r /tmp/relaymd/requirements.txt' \
    'pip install --no-cache-dir "openmm[${OPENMM_CUDA_EXTRA}]==${openmm_version}"' \
    'pip install --no-cache-dir --no-deps /tmp/relaymd/relaymd-*.whl' \
    'python -c "import openmm, worker_entry.cli"'; do
    if ! grep -qF -- "$step" Dockerfile; then
        echo "error: the Dockerfile no longer runs: $step" >&2
        echo "       update packaging/worker-venv.sh to the Dockerfile's new recipe" >&2
        exit 1
    fi
done

rm -rf "$dest"
mkdir -p "$dest/context"
uv export --frozen --no-hashes --no-dev --extra worker --no-emit-project \
    >"$dest/context/requirements.txt"
uv build --quiet --wheel --out-dir "$dest/context"

"$python" -m venv "$dest/venv"
pip=("$dest/venv/bin/python" -m pip --disable-pip-version-check --quiet)
"${pip[@]}" install -r "$dest/context/requirements.txt"
openmm_version=$("$dest/venv/bin/python" -c 'import importlib.metadata as m; print(m.version("openmm"))')
# The CUDA plug-in is resolved, not installed: its CUDA libraries are ~GBs and no GPU is here.
"${pip[@]}" install --dry-run "openmm[${cuda_extra}]==${openmm_version}"
"${pip[@]}" install --no-deps "$dest"/context/relaymd-*.whl
(cd "$dest" && venv/bin/python -c "import openmm, worker_entry.cli")
echo "worker venv: $dest/venv (openmm $openmm_version, CUDA extra $cuda_extra resolves)"
