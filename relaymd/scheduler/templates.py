"""Job scripts are Jinja2 templates in clusters/ (as submitit's are): editable, testable text."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import jinja2

from relaymd.mailbox.shell import quote, shell_path
from relaymd.paths import bundled_clusters_dir
from relaymd.scheduler.shell import sbatch_value


@lru_cache(maxsize=16)
def environment(*folders: str) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(list(folders)),
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
    return environment(str(bundled_clusters_dir())).get_template(name).render(**context)


def render_file(path: Path, **context: object) -> str:
    """A site's own template; its `{% include %}`s look beside it, then among the shipped ones."""
    folders = (str(path.parent), str(bundled_clusters_dir()))
    return environment(*folders).get_template(path.name).render(**context)
