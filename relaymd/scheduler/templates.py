"""Job scripts are Jinja2 templates in clusters/ (as submitit's are): editable, testable text."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import jinja2

from relaymd.scheduler.shell import quote, sbatch_value, shell_path


def clusters_dir() -> Path:
    """clusters/ next to the package in a source checkout, else the packaged relaymd/_clusters."""
    package = Path(__file__).resolve().parent.parent
    source_tree = package.parent / "clusters"
    if source_tree.is_dir():
        return source_tree
    return package / "_clusters"


@lru_cache(maxsize=4)
def environment(folder: str) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # shell, not HTML: every value goes through `q`/`qpath`/`sb`
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["q"] = quote
    env.filters["qpath"] = shell_path
    env.filters["sb"] = lambda value: sbatch_value("value", value)
    return env


def render(name: str, **context: object) -> str:
    return environment(str(clusters_dir())).get_template(name).render(**context)
