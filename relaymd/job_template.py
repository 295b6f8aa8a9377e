"""A site's own job-script template: where it is found, and the check run when config loads.

Sites differ (reservations, licences, `module` lines, node-local scratch), so a cluster may
render its job scripts from its own Jinja2 template instead of the shipped one. The template
is rendered once at load with a stand-in allocation of every partition and image, so a typo
is reported with its file before the daemon submits anything.
"""

from __future__ import annotations

from pathlib import Path

from relaymd import paths
from relaymd.models import ClusterProfile

# Named like the shipped templates (clusters/slurm.sbatch.j2, clusters/direct.sh.j2). jinja2 and
# the schedulers are imported only when a site template exists: hot commands load the config.
SUFFIX = {"slurm": "sbatch.j2", "direct": "sh.j2"}
PROBE_ALLOC_DIR = "/relaymd-template-check/alloc/a0probe"


class TemplateError(ValueError):
    """A site template that cannot be used; the message names the file."""


def find_site_template(profile: ClusterProfile, source: Path | None) -> Path | None:
    """The template a profile names (relative to the config file), or one in a templates/
    folder beside the config file or in the user's config folder; None for the shipped one."""
    base = source.parent if source is not None else paths.config_file().parent
    if profile.template:
        named = Path(profile.template).expanduser()
        return named if named.is_absolute() else base / named
    name = f"{profile.name}.{SUFFIX[profile.scheduler]}"
    for folder in dict.fromkeys([base / "templates", paths.config_file().parent / "templates"]):
        if (folder / name).is_file():
            return folder / name
    return None


def with_site_template(profile: ClusterProfile, source: Path | None) -> ClusterProfile:
    """`profile` with `template` set to the absolute path of its site template, checked."""
    found = find_site_template(profile, source)
    if found is None:
        return profile
    found = found.resolve()
    if not found.is_file():
        raise TemplateError(f"{found}: job-script template not found (`template:` names it)")
    checked = profile.model_copy(update={"template": str(found)})
    check_site_template(checked, found)
    return checked


def check_site_template(profile: ClusterProfile, path: Path) -> None:
    import jinja2

    from relaymd.scheduler import SlurmScheduler, UnsafeValue, make_scheduler
    from relaymd.scheduler.job_script import probe_allocations

    scheduler = make_scheduler(profile)
    for probe in probe_allocations(profile):
        try:
            text = scheduler.render_job_script(probe, profile, ["--alloc-dir", PROBE_ALLOC_DIR])
        except jinja2.TemplateSyntaxError as exc:
            where = exc.filename or str(path)
            raise TemplateError(f"{where}: line {exc.lineno}: {exc.message}") from None
        except jinja2.TemplateNotFound as exc:
            raise TemplateError(f"{path}: includes {exc.name!r}, which is not found") from None
        except (jinja2.TemplateError, UnsafeValue) as exc:
            raise TemplateError(f"{path}: does not render: {exc}") from None
        except OSError as exc:
            raise TemplateError(f"{path}: cannot read the template: {exc}") from None
        if PROBE_ALLOC_DIR not in text:
            raise TemplateError(
                f'{path}: never runs the worker; keep `{{% include "worker_exec.j2" %}}` '
                "(or its exec line) at the end"
            )
        if isinstance(scheduler, SlurmScheduler) and "#SBATCH --no-requeue" not in text:
            raise TemplateError(
                f"{path}: lacks `#SBATCH --no-requeue`: RelayMD requeues jobs itself, and a "
                "SLURM requeue would bring an allocation back after its job moved on"
            )
