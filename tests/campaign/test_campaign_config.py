"""Campaign: config files and cluster profiles a user writes.

Each bad file is refused by `relaymd config validate` (and by the command that would use
it) with exit 2, a message naming the file and the field, no traceback, and nothing written.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cli_env import assert_clear_error, local_config, new_cli

DATA = "/nonexistent-data"  # never touched: every case is refused before use


def _with_partition(extra: str) -> str:
    return local_config(Path(DATA), partition=extra)


def _replace(old: str, new: str) -> str:
    text = local_config(Path(DATA))
    assert old in text
    return text.replace(old, new)


# name -> (config text or bytes, strings the message must contain)
CASES: dict[str, tuple[str | bytes, list[str]]] = {
    "not UTF-8": (b"storage:\n  url: file:///caf\xe9\n", ["UTF-8", "0xe9"]),
    "walltime 10^12 minutes": (
        _with_partition(", walltime_minutes: 1000000000000"),
        ["walltime_minutes", "less than or equal"],
    ),
    "walltime .inf": (_with_partition(", walltime_minutes: .inf"), ["walltime_minutes"]),
    "walltime .nan": (_with_partition(", walltime_minutes: .nan"), ["walltime_minutes"]),
    "walltime negative": (_with_partition(", walltime_minutes: -5"), ["walltime_minutes"]),
    "walltime too short for a segment": (
        _with_partition(", walltime_minutes: 0.5"),
        ["walltime_minutes", "leaves no time for a segment"],
    ),
    "max_pending absurd": (_with_partition(", max_pending: 1000000000"), ["max_pending"]),
    "gpus_per_allocation absurd": (
        _with_partition(", gpus_per_allocation: 100000"),
        ["gpus_per_allocation"],
    ),
    "account with a space (sbatch option smuggling)": (
        _with_partition(', account: "chem --uid=0"'),
        ["account", "#SBATCH"],
    ),
    "qos with a line break": (_with_partition(', qos: "high\\nexport X=1"'), ["qos", "#SBATCH"]),
    "constraint with a quote": (_with_partition(', constraint: "a100\'"'), ["constraint"]),
    "extra_sbatch not an option": (
        _with_partition(", extra_sbatch: [mail-type=END]"),
        ["extra_sbatch", "starting with `-`"],
    ),
    "poll interval .inf": (
        _replace(
            "    scheduler: direct\n", "    scheduler: direct\n    poll: {min_interval_s: .inf}\n"
        ),
        ["poll.min_interval_s"],
    ),
    "command_timeout_s NaN": (
        _replace("    scheduler: direct\n", "    scheduler: direct\n    command_timeout_s: .nan\n"),
        ["command_timeout_s"],
    ),
    "daemon.stale_after_s negative": (
        local_config(Path(DATA)) + "daemon: {stale_after_s: -1}\n",
        ["daemon.stale_after_s"],
    ),
    "worker.heartbeat_interval_s absurd": (
        local_config(Path(DATA)) + "worker: {heartbeat_interval_s: 1e12}\n",
        ["worker.heartbeat_interval_s"],
    ),
    "daemon.start_backoff_s .inf": (
        local_config(Path(DATA)) + "daemon: {start_backoff_s: .inf}\n",
        ["daemon.start_backoff_s"],
    ),
    "unknown field": (
        local_config(Path(DATA)) + "deamon: {stale_after_s: 5}\n",
        ["deamon", "unknown field"],
    ),
    "not YAML": ("storage: [unclosed\n", ["not valid YAML", "line"]),
    "a list at the top level": ("- storage\n- clusters\n", ["mapping"]),
    "storage missing": ("clusters: [local]\n", ["storage"]),
    "storage url not a URL RelayMD knows": (
        _replace(f"url: file://{DATA}/storage", "url: ftp://example.org/x"),
        ["storage.url"],
    ),
    "ssh cluster without ssh section": (
        _replace("transport: local", "transport: ssh"),
        ["ssh"],
    ),
    "cluster profile not found": (
        local_config(Path(DATA)).replace("clusters:\n", "clusters:\n  - hpc-missing\n", 1),
        ["hpc-missing", "not found"],
    ),
    "secrets file provider without file": (
        local_config(Path(DATA)) + "secrets: {provider: file}\n",
        ["secrets", "file"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_config_is_refused_naming_file_and_field(tmp_path: Path, case: str) -> None:
    cli = new_cli(tmp_path)
    content, names = CASES[case]
    if isinstance(content, bytes):
        cli.config.write_bytes(content)
    else:
        cli.config.write_text(content)
    done = cli.run("config", "validate")
    assert_clear_error(done, 2, str(cli.config), *names)
    # The command that would use the config refuses it the same way, writing nothing.
    done = cli.run("jobs", "list")
    assert_clear_error(done, 2, str(cli.config))
    assert not cli.state_dir.exists() and not cli.data_dir.exists()


def test_bad_cluster_profile_names_the_profile_file(tmp_path: Path) -> None:
    cli = new_cli(tmp_path)
    profiles = tmp_path / "clusters"
    profiles.mkdir()
    profile = profiles / "hpc.yaml"
    profile.write_bytes(b"name: hpc\nscratch: /scr/\xff\xfe\npartitions: []\n")
    cli.config.write_text(f"storage: {{url: 'file://{DATA}/storage'}}\nclusters: [hpc]\n")
    done = cli.run("config", "validate")
    assert_clear_error(done, 2, str(profile), "UTF-8")


def test_cluster_profile_with_an_account_the_daemon_would_refuse(tmp_path: Path) -> None:
    cli = new_cli(tmp_path)
    profiles = tmp_path / "clusters"
    profiles.mkdir()
    profile = profiles / "hpc.yaml"
    profile.write_text(
        "name: hpc\ntransport: ssh\nssh: {host: login.example.org}\nscratch: /scratch/me\n"
        "images: {openmm: {sif: /sif/openmm.sif}}\n"
        "partitions:\n  - {name: gpu, walltime_minutes: 60, account: 'proj;rm -rf ~'}\n"
    )
    cli.config.write_text(f"storage: {{url: 'file://{DATA}/storage'}}\nclusters: [hpc]\n")
    done = cli.run("config", "validate")
    assert_clear_error(done, 2, str(profile), "account", "#SBATCH")
