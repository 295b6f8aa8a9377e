"""Load the operator's config: a YAML file, or the embedded default when there is none.

Lookup: an explicit path, else $RELAYMD_CONFIG, else `<XDG config>/relaymd/config.yaml`;
with none of these present, the embedded default (one `local` cluster with the direct
scheduler, `file://` storage under the XDG data dir) so a first run needs no setup.
Cluster entries may be names of profiles in `clusters/<name>.yaml`, looked up beside the
config file, in the XDG config dir, then among the profiles shipped with RelayMD.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from relaymd import paths
from relaymd.executables import local_worker_command
from relaymd.job_template import TemplateError, with_site_template
from relaymd.models import ClusterProfile, Config, Partition, StorageConfig

LOCAL_CLUSTER = "local"


class ConfigError(Exception):
    """A config problem the user can fix; the message names the file and the field."""


class LoadedConfig(BaseModel):
    config: Config
    source: Path | None = None  # None: the embedded default

    @property
    def embedded(self) -> bool:
        return self.source is None

    @property
    def clusters(self) -> list[ClusterProfile]:
        # load_config resolves every name, so only profiles remain.
        return [c for c in self.config.clusters if isinstance(c, ClusterProfile)]

    def cluster(self, name: str) -> ClusterProfile:
        for profile in self.clusters:
            if profile.name == name:
                return profile
        known = ", ".join(p.name for p in self.clusters)
        raise ConfigError(f"unknown cluster {name!r}; configured clusters: {known}")


def embedded_default() -> LoadedConfig:
    from relaymd.envvars import EnvVarError, env_float
    from relaymd.models.cluster import MAX_WALLTIME_MINUTES

    data = paths.data_dir()
    try:
        walltime = env_float(
            "RELAYMD_LOCAL_WALLTIME_MIN", 60.0, maximum=float(MAX_WALLTIME_MINUTES)
        )
    except EnvVarError as exc:
        raise ConfigError(str(exc)) from None
    local = ClusterProfile(
        name=LOCAL_CLUSTER,
        transport="local",
        scheduler="direct",
        scratch=str(data / "scratch"),
        partitions=[
            Partition(
                name="local",
                walltime_minutes=walltime,
                gpus_per_allocation=0,
                max_pending=1,
                max_running=1,
            )
        ],
        native_worker=local_worker_command(),
        max_workers=1,
        command_timeout_s=30.0,
    )
    config = Config(storage=StorageConfig(url=(data / "storage").as_uri()), clusters=[local])
    _check_walltimes(config, [local], "the embedded default (RELAYMD_LOCAL_WALLTIME_MIN)")
    return LoadedConfig(config=config, source=None)


def _format_location(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _is_internal_loc(part: str | int) -> bool:
    return isinstance(part, str) and (
        part in ("ClusterProfile", "str") or part.startswith("function-") or "[" in part
    )


def format_validation_error(source: Path | str, error: ValidationError) -> str:
    """One line per problem: file, field path, message and the offending value."""
    lines = [f"{source}: invalid configuration"]
    for item in error.errors():
        # `ClusterProfile | str` reports a failure per branch: a mapping was meant as a
        # profile, so the "not a string" branch is noise.
        if "str" in item["loc"] and isinstance(item.get("input"), dict):
            continue
        # Union branches and validators add their own names to the path; keep what a user wrote.
        loc = tuple(p for p in item["loc"] if not _is_internal_loc(p))
        where = _format_location(loc)
        value = item.get("input")
        shown = "" if isinstance(value, dict | list) else f" (got {value!r})"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown field; check its spelling against docs/configuration.md"
            shown = ""
        lines.append(f"  {where}: {message}{shown}")
    return "\n".join(lines)


class _UserYamlLoader(yaml.SafeLoader):
    """YAML 1.1 reads `4:00:00` as the base-60 int 14400: keep such scalars as text."""


def _no_base_60(
    number: Callable[[yaml.SafeLoader, yaml.ScalarNode], Any],
) -> Callable[[yaml.SafeLoader, yaml.ScalarNode], Any]:
    def construct(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
        if ":" in str(node.value):
            return str(node.value)
        return number(loader, node)

    return construct


_UserYamlLoader.add_constructor(
    "tag:yaml.org,2002:int", _no_base_60(yaml.SafeLoader.construct_yaml_int)
)
_UserYamlLoader.add_constructor(
    "tag:yaml.org,2002:float", _no_base_60(yaml.SafeLoader.construct_yaml_float)
)


def read_user_yaml(path: Path) -> Any:
    """A user's YAML file, with `H:MM:SS`-looking scalars kept as text."""
    return _read_yaml(path)


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
            f"{exc.start}); save the file as UTF-8"
        ) from None
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except PermissionError:
        raise ConfigError(f"{path}: cannot read the config file (permission denied)") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, expected a YAML file") from None
    try:
        return yaml.load(text, Loader=_UserYamlLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}:{where}: not valid YAML: {problem}") from None


def _profile_dirs(source: Path | None) -> list[Path]:
    dirs = []
    if source is not None:
        dirs.append(source.parent / "clusters")
    dirs.append(paths.config_file().parent / "clusters")
    dirs.append(paths.bundled_clusters_dir())
    return list(dict.fromkeys(dirs))


def load_cluster_profile(name: str, source: Path | None = None) -> ClusterProfile:
    for directory in _profile_dirs(source):
        candidate = directory / f"{name}.yaml"
        if candidate.is_file():
            try:
                return ClusterProfile.model_validate(_read_yaml(candidate))
            except ValidationError as exc:
                raise ConfigError(format_validation_error(candidate, exc)) from None
    searched = ", ".join(str(d) for d in _profile_dirs(source))
    raise ConfigError(
        f"{source or 'config'}: cluster profile {name!r} not found (looked for {name}.yaml in "
        f"{searched})"
    )


def parse_config(data: Any, source: Path) -> LoadedConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of settings at the top level")
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc)) from None
    resolved = [
        c if isinstance(c, ClusterProfile) else load_cluster_profile(c, source)
        for c in config.clusters
    ]
    names = [c.name for c in resolved]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"{source}: clusters: duplicate cluster name(s) {', '.join(duplicates)}")
    _check_walltimes(config, resolved, str(source))
    resolved = [_with_site_template(c, source) for c in resolved]
    config = config.model_copy(update={"clusters": resolved})
    return LoadedConfig(config=config, source=source)


def _with_site_template(profile: ClusterProfile, source: Path) -> ClusterProfile:
    if profile.scheduler in ("storage", "salad"):
        return profile  # nothing is submitted there: no job script (ADR 0022)
    try:
        return with_site_template(profile, source)
    except TemplateError as exc:
        raise ConfigError(f"{source}: cluster {profile.name}: {exc}") from None


def _check_walltimes(config: Config, clusters: list[ClusterProfile], source: str) -> None:
    """A partition too short for one segment would queue jobs forever: refuse it now."""
    needed = config.worker.initial_margin_s + config.daemon.min_segment_s
    for profile in clusters:
        for partition in profile.partitions:
            if partition.walltime_minutes * 60 <= needed:
                raise ConfigError(
                    f"{source}: cluster {profile.name}: partition {partition.name}: "
                    f"walltime_minutes {partition.walltime_minutes:g} leaves no time for a "
                    f"segment: it must exceed the first handoff margin "
                    f"({config.worker.initial_margin_s:g} s, from worker.handoff_margin_min_s/"
                    f"max_s) plus daemon.min_segment_s ({config.daemon.min_segment_s:g} s); "
                    f"raise the walltime or lower those settings"
                )


def load_config(path: Path | str | None = None) -> LoadedConfig:
    explicit = Path(path).expanduser() if path else None
    if explicit is None and os.environ.get("RELAYMD_CONFIG"):
        explicit = paths.config_file()
    if explicit is not None:
        return parse_config(_read_yaml(explicit), explicit)
    default = paths.config_file()
    if default.is_file():
        return parse_config(_read_yaml(default), default)
    return embedded_default()
