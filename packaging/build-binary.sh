#!/usr/bin/env bash
# Build the self-contained operator executable (CLI + daemon) with PyInstaller.
#   packaging/build-binary.sh            -> dist/relaymd          (one file; the release artefact)
#   packaging/build-binary.sh --onedir   -> dist/relaymd-onedir/  (a folder; for comparison)
# Uses the project's uv environment (`uv sync --all-extras`; PyInstaller is in the dev group).
# OpenMM is never bundled: workers run it inside their container.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=onefile
case "${1:-}" in
    "") ;;
    --onedir) mode=onedir ;;
    --onefile) mode=onefile ;;
    *) echo "usage: $0 [--onefile|--onedir]" >&2; exit 2 ;;
esac

python=${PYTHON:-.venv/bin/python}
if ! "$python" -c 'import PyInstaller' 2>/dev/null; then
    echo "error: PyInstaller not importable by $python; run 'uv sync --all-extras' first" >&2
    exit 2
fi

RELAYMD_BUILD_MODE=$mode "$python" -m PyInstaller --noconfirm --clean --log-level WARN \
    --distpath dist --workpath "build/pyinstaller-$mode" packaging/relaymd.spec

if [ "$mode" = onefile ]; then
    binary=dist/relaymd artefact=dist/relaymd
else
    binary=dist/relaymd-onedir/relaymd artefact=dist/relaymd-onedir
fi

# The operator binary must not carry the MD engine (nor its numpy).
contents=$("$python" -m PyInstaller.utils.cliutils.archive_viewer --brief --recursive "$binary"
    find "$artefact")
if grep -Eiq '(^|[/ ])(openmm|numpy)([/._ ]|$)' <<<"$contents"; then
    echo "error: $binary contains openmm or numpy; they belong in the worker image only" >&2
    exit 1
fi
# Nor the trajectory tools `--assemble --xtc` imports lazily (~110 MB; it says "needs mdtraj").
if grep -Eq '(^|[/ ])(mdtraj|MDAnalysis|scipy|matplotlib)([/._ ]|$)' <<<"$contents"; then
    echo "error: $binary contains mdtraj, MDAnalysis, scipy or matplotlib; add them to EXCLUDES" >&2
    exit 1
fi
# setuptools' runtime hook would import it (~180 ms) on every start (docs/adr/0002).
if grep -Eq '(^|[ ])(pyi_rth_setuptools|setuptools)$' <<<"$contents"; then
    echo "error: $binary bundles setuptools; add what pulls it in to EXCLUDES in the spec" >&2
    exit 1
fi
"$binary" --version
echo "built $binary ($mode, $(du -sh "$artefact" | cut -f1))"
