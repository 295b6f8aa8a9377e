#!/usr/bin/env bash
# Build and push the worker image, then the Apptainer .sif made from it.
#
#   deploy/build-worker-image.sh REGISTRY        e.g. ghcr.io/mylab  or  docker.io/me
#
# Tags are the commit's git SHA and never move: a dirty tree is refused (the image would not
# be what the SHA says), and a tag already in the registry is reused, never overwritten.
# Output: REGISTRY/relaymd-worker:<sha> and $RELAYMD_SIF_DIR/relaymd-worker-<sha>.sif
# (default dist/). Copy the .sif to the cluster's shared storage and name it in the
# profile's `images:` (docs/deploy.md). Needs git, uv, docker (logged in) and apptainer.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $# -ne 1 || $1 == -* ]]; then
    echo "usage: $0 REGISTRY   (e.g. ghcr.io/mylab)" >&2
    exit 2
fi
registry=${1%/}
sif_dir=${RELAYMD_SIF_DIR:-dist}

for tool in git uv docker apptainer; do
    command -v "$tool" >/dev/null || { echo "error: $tool not found on PATH" >&2; exit 2; }
done

if [[ -n $(git status --porcelain --untracked-files=normal) ]]; then
    echo "error: the working tree has uncommitted or untracked changes; commit or remove" \
        "them first (images are tagged with the commit SHA and must contain exactly it)" >&2
    git status --short >&2
    exit 1
fi
sha=$(git rev-parse --short=12 HEAD)
image=$registry/relaymd-worker:$sha

if docker manifest inspect "$image" >/dev/null 2>&1; then
    echo "$image already in the registry; tags are immutable, not rebuilding"
else
    context=build/worker-image
    rm -rf "$context"
    mkdir -p "$context"
    # The same export .ci/run feeds the native worker tests: one dependency set, two installs.
    uv export --frozen --no-hashes --no-dev --extra worker --no-emit-project \
        >"$context/requirements.txt"
    uv build --wheel --out-dir "$context"
    docker build --file Dockerfile --tag "$image" \
        --label "org.opencontainers.image.revision=$(git rev-parse HEAD)" "$context"
    docker push "$image"
fi

mkdir -p "$sif_dir"
sif=$sif_dir/relaymd-worker-$sha.sif
apptainer build --force --build-arg "IMAGE=$image" "$sif" deploy/relaymd-worker.def
echo "built $image and $sif"
