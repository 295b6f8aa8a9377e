"""Config loading: embedded default, profile lookup, and errors that name file and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from relaymd.config import ConfigError, load_config

GOOD = """
storage: {url: "s3://bucket/relaymd", endpoint_url: "https://s3.us-west-004.backblazeb2.com"}
clusters: [clusterA, clusterB]
"""


def test_no_config_gives_the_embedded_default(isolated_dirs: Path) -> None:
    loaded = load_config()
    assert loaded.embedded
    [local] = loaded.clusters
    assert (local.name, local.transport, local.scheduler) == ("local", "local", "direct")
    assert loaded.config.storage.url.startswith("file://" + str(isolated_dirs / "data"))


def test_xdg_config_file_is_used_and_profiles_resolve_by_name(isolated_dirs: Path) -> None:
    path = isolated_dirs / "config" / "relaymd" / "config.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(GOOD)
    loaded = load_config()
    assert loaded.source == path
    assert [c.name for c in loaded.clusters] == ["clusterA", "clusterB"]


def test_profile_beside_the_config_wins(tmp_path: Path) -> None:
    (tmp_path / "clusters").mkdir()
    (tmp_path / "clusters" / "mine.yaml").write_text(
        "name: mine\ntransport: local\nscheduler: direct\nscratch: /tmp/s\n"
        "partitions: [{name: p, walltime_minutes: 5}]\nnative_worker: [relaymd-worker]\n"
    )
    config = tmp_path / "config.yaml"
    config.write_text('storage: {url: "file:///tmp/store"}\nclusters: [mine]\n')
    assert load_config(config).cluster("mine").scheduler == "direct"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'storage: {url: "file:///x"}\nclusters: [nowhere]\n',
            "cluster profile 'nowhere' not found",
        ),
        ("storage: {url: ftp://x}\nclusters: [clusterA]\n", "storage.url"),
        (
            'storage: {url: "file:///x"}\nclusters: [clusterA]\ndeamon: {}\n',
            "deamon: unknown field",
        ),
        (
            'storage: {url: "file:///x"}\nclusters:\n  - name: c\n    scratch: /s\n'
            "    ssh: {host: h, prot: 22}\n    partitions: [{name: p, walltime_minutes: 0}]\n"
            "    native_worker: [w]\n",
            "clusters[0].ssh.prot: unknown field",
        ),
        (
            'storage: {url: "file:///x"}\nclusters:\n  - name: c\n    transport: local\n'
            "    scratch: /s\n    partitions: [{name: p, walltime_minutes: 3}]\n"
            "    native_worker: [w]\n",
            "cluster c: partition p: walltime_minutes 3 leaves no time for a segment",
        ),
        ("storage: [\n", "not valid YAML"),
        ("- just a list\n", "expected a mapping"),
    ],
)
def test_errors_name_the_file_and_the_field(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value)
    assert expected in str(err.value)


def test_bad_value_is_shown(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        'storage: {url: "file:///x"}\nclusters:\n  - name: c\n    transport: local\n'
        "    scratch: /s\n    partitions: [{name: p, walltime_minutes: -3}]\n"
        "    native_worker: [w]\n"
    )
    with pytest.raises(ConfigError, match=r"partitions\[0\]\.walltime_minutes: .*got -3"):
        load_config(path)


def test_missing_explicit_config_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELAYMD_CONFIG", str(tmp_path / "absent.yaml"))
    with pytest.raises(ConfigError, match=r"absent\.yaml: config file not found"):
        load_config()


def test_unknown_cluster_lookup_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="configured clusters: local"):
        load_config().cluster("clusterZ")


def test_embedded_default_too_short_for_a_segment_is_refused(
    isolated_dirs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELAYMD_LOCAL_WALLTIME_MIN", "3")
    with pytest.raises(ConfigError, match=r"embedded default .*walltime_minutes 3 leaves no time"):
        load_config()


def _one_partition_config(tmp_path: Path, partition: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        'storage: {url: "file:///x"}\nclusters:\n  - name: c\n    transport: local\n'
        f"    scratch: /s\n    partitions:\n      - name: p\n        {partition}\n"
        "    native_worker: [w]\n"
    )
    return path


def test_sexagesimal_walltime_minutes_is_refused_not_read_as_base_60(tmp_path: Path) -> None:
    # PyYAML 1.1 reads 4:00:00 as the int 14400; a user meant four hours.
    path = _one_partition_config(tmp_path, "walltime_minutes: 4:00:00")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message
    assert "partitions[0].walltime_minutes" in message
    assert 'walltime: "4:00:00"' in message
    assert "14400" not in message


@pytest.mark.parametrize(
    ("written", "minutes"),
    [
        ("walltime: 4:00:00", 240.0),  # unquoted: still read as text, not base 60
        ('walltime: "4:00:00"', 240.0),
        ('walltime: "1-00:00:00"', 1440.0),
        ('walltime: "1-2"', 1560.0),  # days-hours
        ('walltime: "2-03:30"', 2 * 1440 + 3 * 60 + 30.0),  # days-hours:minutes
        ('walltime: "0:30:30"', 30.5),
        ("walltime: 90", 90.0),  # minutes, as SLURM reads a bare number
        ("walltime_minutes: 90", 90.0),
        ("walltime_minutes: 7.5", 7.5),
    ],
)
def test_walltime_accepts_slurm_time_formats(tmp_path: Path, written: str, minutes: float) -> None:
    loaded = load_config(_one_partition_config(tmp_path, written))
    assert loaded.cluster("c").partitions[0].walltime_minutes == minutes


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ('walltime: "4h"', "walltime '4h' is not a SLURM time"),
        ('walltime: "1:75:00"', "walltime '1:75:00' is not a SLURM time"),
        ('walltime: "0:00:00"', "walltime must be longer than zero"),
        ("walltime: 60\n        walltime_minutes: 60", "give `walltime` or `walltime_minutes`"),
        ("walltime: unlimited", "walltime 'unlimited' is not a SLURM time"),
        # SLURM reads MM:SS, so "4:00" is four minutes to sbatch and four hours to a person.
        (
            "walltime: 4:00",
            "walltime '4:00' is ambiguous: SLURM reads it as 4 min 0 s; write \"4:00:00\"",
        ),
        ('walltime: "30:30"', "walltime '30:30' is ambiguous"),
        ("walltime_minutes: 4:00", 'write walltime: "4:00:00"'),
    ],
)
def test_bad_walltimes_name_file_and_field(tmp_path: Path, written: str, expected: str) -> None:
    path = _one_partition_config(tmp_path, written)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value)
    assert "partitions[0]" in str(err.value)
    assert expected in str(err.value)


def test_other_colon_numbers_stay_text(tmp_path: Path) -> None:
    # e.g. a port-like or time-like string elsewhere never silently becomes base 60.
    from relaymd.config import read_user_yaml

    path = tmp_path / "x.yaml"
    path.write_text("a: 1:30\nb: 12\nc: 1.5\nd: 1:30.5\n")
    assert read_user_yaml(path) == {"a": "1:30", "b": 12, "c": 1.5, "d": "1:30.5"}
