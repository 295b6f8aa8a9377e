# RelayMD worker image: Python + relaymd with ONLY the `worker` extra (OpenMM) plus OpenMM's
# CUDA platform plug-in, installed with pip (never conda). No operator code paths run here:
# asyncssh, typer, aiosqlite, jinja2, rich and the Infisical SDK are not installed.
#
# Build it with deploy/build-worker-image.sh, which prepares the build context
# (build/worker-image/): requirements.txt from uv.lock (the same `uv export` as .ci/run, so the
# image gets exactly the dependency set the native tests run) and the relaymd wheel.
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim-bookworm

# cuda12 suits current cluster drivers (>= 525); cuda13 needs drivers >= 580.
ARG OPENMM_CUDA_EXTRA=cuda12

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

COPY requirements.txt relaymd-*.whl /tmp/relaymd/

# 1. the locked worker closure; 2. the CUDA plug-in at exactly the locked openmm version;
# 3. relaymd itself without dependencies (they are all in 1.).
RUN pip install --no-cache-dir -r /tmp/relaymd/requirements.txt \
    && openmm_version="$(python -c 'import importlib.metadata as m; print(m.version("openmm"))')" \
    && pip install --no-cache-dir "openmm[${OPENMM_CUDA_EXTRA}]==${openmm_version}" \
    && pip install --no-cache-dir --no-deps /tmp/relaymd/relaymd-*.whl \
    && rm -rf /tmp/relaymd \
    && python -c "import openmm, worker_entry.cli" \
    && useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin relaymd

# Apptainer runs the container as the submitting user anyway; under Docker, never as root.
USER 10001:10001
WORKDIR /home/relaymd

ENTRYPOINT ["relaymd-worker"]
CMD ["--help"]
