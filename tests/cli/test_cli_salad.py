"""`relaymd clusters test <salad cluster>` against the SaladCloud stand-in (ADR 0025): the
API key from the secrets provider, the project, the GPU classes, the group's image; exit 1
with the failing check named, and the key never printed."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cli_env import CliEnv
from tests.support.salad_standin import GPU_CLASSES, SaladStandin

KEY = "salad-cli-key-93ab"
IMAGE = "ghcr.io/lab/relaymd-worker:1"


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[SaladStandin]:
    with SaladStandin(
        api_key=KEY, organization="lab", project="md", images={IMAGE}, root=tmp_path,
        extra_path=str(Path(sys.executable).parent),
    ) as s:  # fmt: skip
        yield s


def _add_salad(cli: CliEnv, url: str, project: str = "md", gpu: str | None = None) -> None:
    gpu_id = gpu or GPU_CLASSES[0]["id"]
    cli.config.write_text(
        cli.config.read_text()
        + f"""\
  - name: salad
    scheduler: salad
    images: {{openmm: {{uri: "docker://{IMAGE}"}}}}
    partitions:
      - {{name: any, walltime_minutes: 600, gpus_per_allocation: 1}}
    salad:
      organization: lab
      project: {project}
      container_group: relay
      image: {IMAGE}
      gpu_classes: [{gpu_id}]
      api_url: {url}
"""
    )


def _checks(cli: CliEnv, key: str) -> tuple[int, dict[str, dict[str, object]], str]:
    done = cli.run("clusters", "test", "salad", "--json", env={"SALAD_API_KEY": key})
    checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    return done.returncode, checks, done.stdout + done.stderr


def test_a_good_key_project_and_gpu_class_pass(cli: CliEnv, standin: SaladStandin) -> None:
    _add_salad(cli, standin.url)
    code, checks, _ = _checks(cli, KEY)
    assert code == 0, checks
    assert checks["salad-gpus"]["detail"] == GPU_CLASSES[0]["name"]
    assert "created with " + IMAGE in str(checks["salad-image"]["detail"])
    listed = cli.run("clusters", "list", env={"COLUMNS": "400"})
    assert "salad (after 30m waiting, max 2 replicas)" in listed.stdout, listed.stdout


def test_a_refused_key_fails_without_printing_it(cli: CliEnv, standin: SaladStandin) -> None:
    _add_salad(cli, standin.url)
    code, checks, text = _checks(cli, "not-the-key-77")
    assert code == 1 and checks["salad-project"]["ok"] is False
    assert "401" in text and "api_key_secret" in text and "not-the-key-77" not in text


def test_an_unknown_project_is_named(cli: CliEnv, standin: SaladStandin) -> None:
    _add_salad(cli, standin.url, project="nope")
    code, checks, _ = _checks(cli, KEY)
    assert code == 1 and "salad.project" in str(checks["salad-project"]["detail"])


def test_an_unknown_gpu_class_is_named(cli: CliEnv, standin: SaladStandin) -> None:
    _add_salad(cli, standin.url, gpu="00000000-0000-0000-0000-000000000000")
    code, checks, _ = _checks(cli, KEY)
    assert code == 1 and checks["salad-gpus"]["ok"] is False
    assert "00000000-0000-0000-0000-000000000000" in str(checks["salad-gpus"]["detail"])


def test_a_missing_key_names_the_secret(cli: CliEnv, standin: SaladStandin) -> None:
    _add_salad(cli, standin.url)
    code, checks, _ = _checks(cli, "")
    assert code == 1 and "SALAD_API_KEY" in str(checks["salad-key"]["detail"])
