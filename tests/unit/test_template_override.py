"""A site's own job-script template: found in the user's config folder or named by
`template:`, rendered instead of the shipped one, and checked when the config loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from relaymd.config import ConfigError, load_config
from relaymd.models import Allocation
from relaymd.scheduler import make_scheduler

SHIPPED = Path(__file__).resolve().parents[2] / "clusters" / "slurm.sbatch.j2"
CONFIG = """storage: {url: "file:///tmp/store"}
clusters:
  - name: siteA
    ssh: {host: login.a}
    scratch: /scratch/me
    partitions: [{name: gpu, walltime: "4:00:00"}]
    images: {openmm: {sif: /img/w.sif}}
"""


def _site_template(extra_line: str = "#SBATCH --reservation=mylab") -> str:
    # A site copy of the shipped template with one more #SBATCH line.
    text = SHIPPED.read_text()
    return text.replace("#SBATCH --no-requeue\n", f"#SBATCH --no-requeue\n{extra_line}\n")


def _render(config: Path) -> str:
    profile = load_config(config).cluster("siteA")
    alloc = Allocation.model_validate(
        {"id": "a1", "cluster": "siteA", "partition": "gpu", "image": "openmm", "walltime_s": 60}
    )
    return make_scheduler(profile).render_job_script(alloc, profile, ["--alloc-dir", "/d"])


def test_template_in_the_config_folder_overrides_the_shipped_one(isolated_dirs: Path) -> None:
    config_dir = isolated_dirs / "config" / "relaymd"
    (config_dir / "templates").mkdir(parents=True)
    (config_dir / "templates" / "siteA.sbatch.j2").write_text(_site_template())
    (config_dir / "config.yaml").write_text(CONFIG)
    text = _render(config_dir / "config.yaml")
    assert "#SBATCH --reservation=mylab" in text
    assert "relaymd-worker --alloc-dir /d" in text  # the shipped worker_exec.j2 still included


def test_template_field_is_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "mine.j2").write_text(_site_template("#SBATCH --exclusive"))
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.replace("    scratch:", "    template: mine.j2\n    scratch:"))
    assert "#SBATCH --exclusive" in _render(config)


def test_without_an_override_the_shipped_template_is_used(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    assert _render(config).startswith("#!/bin/bash\n#SBATCH --job-name=relaymd-a1\n")


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("#!/bin/bash\n{% if job.partition %}\n", "line 2"),  # syntax error, with its line
        ("#!/bin/bash\n#SBATCH --no-requeue\n{{ job.no_such_field }}\n", "no_such_field"),
        ("#!/bin/bash\n#SBATCH --no-requeue\necho hi\n", "never runs the worker"),
        ('#!/bin/bash\n{% include "worker_exec.j2" %}\n', "#SBATCH --no-requeue"),
        ('#!/bin/bash\n{% include "nowhere.j2" %}\n', "nowhere.j2"),
    ],
)
def test_a_broken_template_is_refused_at_load_naming_the_file(
    tmp_path: Path, template: str, expected: str
) -> None:
    (tmp_path / "bad.j2").write_text(template)
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.replace("    scratch:", "    template: bad.j2\n    scratch:"))
    with pytest.raises(ConfigError) as err:
        load_config(config)
    assert str(tmp_path / "bad.j2") in str(err.value)
    assert "siteA" in str(err.value)
    assert expected in str(err.value)


def test_a_missing_named_template_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.replace("    scratch:", "    template: absent.j2\n    scratch:"))
    with pytest.raises(ConfigError, match=r"absent\.j2: .*not found"):
        load_config(config)
