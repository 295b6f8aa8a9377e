"""Campaign: job directories a user hands to `relaymd submit`.

Each bad directory is refused before a byte is uploaded, naming the file (and the link's
target, the limit or the field); afterwards there is no job row and no object in storage.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.cli_env import (
    assert_clear_error,
    job_rows,
    make_job_dir,
    new_cli,
    stored_objects,
)

GIB = 1 << 30


def _sparse(path: Path, size: int) -> None:
    with open(path, "wb") as fh:
        fh.truncate(size)  # no blocks written: the size is what a scan sees


def _link_out_to_secret(job: Path) -> list[str]:
    secret = job.parent / "dot-ssh" / "id_ed25519"
    secret.parent.mkdir()
    secret.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    (job / "notes.txt").symlink_to(secret)
    return [str(job / "notes.txt"), str(secret), "--follow-external-links"]


def _link_out_via_dotdot(job: Path) -> list[str]:
    (job.parent / "outside.dat").write_text("x")
    (job / "data.dat").symlink_to("../outside.dat")
    return [str(job / "data.dat"), str(job.parent / "outside.dat")]


def _chain_leaving(job: Path) -> list[str]:
    (job.parent / "far.txt").write_text("far")
    (job / "hop2").symlink_to(job.parent / "far.txt")
    (job / "hop1").symlink_to("hop2")  # inside, but its chain ends outside
    return [str(job / "hop1"), str(job.parent / "far.txt")]


def _oversized_member(job: Path) -> list[str]:
    _sparse(job / "trajectory.dcd", 8 * GIB + 512 * (1 << 20))
    return [str(job / "trajectory.dcd"), "8.0 GiB", "per file"]


def _oversized_total(job: Path) -> list[str]:
    for index in range(5):
        _sparse(job / f"part{index}.bin", 7 * GIB)
    return [str(job), "32.0 GiB", "in total"]


def _broken_link(job: Path) -> list[str]:
    (job / "gone.xml").symlink_to(job / "nowhere.xml")
    return [str(job / "gone.xml"), "broken symlink"]


def _link_to_directory(job: Path) -> list[str]:
    (job.parent / "shared").mkdir()
    (job / "shared").symlink_to(job.parent / "shared")
    return [str(job / "shared"), "symlink to something other than a file"]


def _fifo(job: Path) -> list[str]:
    os.mkfifo(job / "pipe")
    return [str(job / "pipe"), "not a regular file"]


def _a_file_not_a_directory(job: Path) -> list[str]:
    # The test submits `job`; turn it into a plain file.
    for child in job.iterdir():
        child.unlink()
    job.rmdir()
    job.write_text("not a folder\n")
    return [str(job), "not a directory"]


def _spec_not_utf8(job: Path) -> list[str]:
    (job / "relaymd.yaml").write_bytes(b"title: caf\xe9\nengine: {kind: openmm}\n")
    return [str(job / "relaymd.yaml"), "UTF-8"]


def _spec_not_yaml(job: Path) -> list[str]:
    (job / "relaymd.yaml").write_text("title: [unclosed\n")
    return [str(job / "relaymd.yaml"), "not valid YAML"]


def _spec_list(job: Path) -> list[str]:
    (job / "relaymd.yaml").write_text("- a\n- b\n")
    return [str(job / "relaymd.yaml"), "mapping"]


def _spec_unknown_field(job: Path) -> list[str]:
    (job / "relaymd.yaml").write_text("titel: x\nengine: {kind: openmm, total_steps: 10}\n")
    return [str(job / "relaymd.yaml"), "titel", "unknown field"]


def _spec_negative_steps(job: Path) -> list[str]:
    (job / "relaymd.yaml").write_text("engine: {kind: openmm, total_steps: -5}\n")
    return [str(job / "relaymd.yaml"), "engine.openmm.total_steps"]


def _input_missing(job: Path) -> list[str]:
    (job / "state.xml").unlink()
    return [str(job / "relaymd.yaml"), "engine.state", "state.xml"]


def _no_engine(job: Path) -> list[str]:
    (job / "relaymd.yaml").unlink()
    return [str(job / "relaymd.yaml"), "engine: missing"]


def _unknown_cluster(job: Path) -> list[str]:
    (job / "relaymd.yaml").write_text(
        "engine: {kind: openmm, total_steps: 10}\nresources: {gpus: 0}\n"
        "placement: {allowed_clusters: [marsbase]}\n"
    )
    return [str(job), "marsbase", "placement"]


def _too_many_gpus(job: Path) -> list[str]:
    (job / "relaymd.yaml").write_text("engine: {kind: openmm, total_steps: 10}\n")
    return [str(job), "resources.gpus"]


CASES: dict[str, tuple[Callable[[Path], list[str]], int]] = {
    "symlink to a private key": (_link_out_to_secret, 2),
    "relative symlink through ..": (_link_out_via_dotdot, 2),
    "symlink chain ending outside": (_chain_leaving, 2),
    "file over the worker's per-file limit": (_oversized_member, 2),
    "bundle over the worker's total limit": (_oversized_total, 2),
    "broken symlink": (_broken_link, 2),
    "symlink to a directory": (_link_to_directory, 2),
    "fifo": (_fifo, 2),
    "a file instead of a directory": (_a_file_not_a_directory, 2),
    "relaymd.yaml not UTF-8": (_spec_not_utf8, 2),
    "relaymd.yaml not YAML": (_spec_not_yaml, 2),
    "relaymd.yaml a list": (_spec_list, 2),
    "relaymd.yaml unknown field": (_spec_unknown_field, 2),
    "relaymd.yaml negative steps": (_spec_negative_steps, 2),
    "input file missing": (_input_missing, 4),
    "no engine anywhere": (_no_engine, 2),
    "unknown cluster": (_unknown_cluster, 2),
    "more GPUs than any partition": (_too_many_gpus, 2),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_job_directory_is_refused_before_upload(tmp_path: Path, case: str) -> None:
    cli = new_cli(tmp_path)
    job = make_job_dir(tmp_path)
    make, code = CASES[case]
    names = make(job)
    done = cli.run("submit", str(job))
    assert_clear_error(done, code, *names)
    assert job_rows(cli) == []
    assert stored_objects(cli) == []


def test_links_inside_the_job_directory_still_work(tmp_path: Path) -> None:
    cli = new_cli(tmp_path)
    job = make_job_dir(tmp_path)
    (job / "inputs").mkdir()
    (job / "inputs" / "real.pdb").write_text("ATOM\n")
    (job / "alias.pdb").symlink_to("inputs/real.pdb")
    done = cli.run("submit", str(job))
    assert done.returncode == 0, done.stderr
    assert [state for _, state, _, _ in job_rows(cli)] == ["queued"]


def test_external_links_with_the_flag_are_packed_with_a_warning(tmp_path: Path) -> None:
    cli = new_cli(tmp_path)
    job = make_job_dir(tmp_path)
    shared = tmp_path / "shared-params.xml"
    shared.write_text("<params/>\n")
    (job / "params.xml").symlink_to(shared)
    done = cli.run("submit", str(job), "--follow-external-links")
    assert done.returncode == 0, done.stderr
    assert "warning" in done.stderr and str(job / "params.xml") in done.stderr
    assert str(shared) in done.stderr
    [(_, state, _, _)] = job_rows(cli)
    assert state == "queued"
    import tarfile

    [bundle] = [p for p in stored_objects(cli) if p.name.endswith(".tar.gz")]
    with tarfile.open(bundle) as tar:
        assert tar.extractfile("params.xml").read() == b"<params/>\n"  # type: ignore[union-attr]
