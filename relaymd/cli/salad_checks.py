"""`relaymd clusters test <salad cluster>` (ADR 0025): the API key from the secrets provider,
the organization and project it may use, the GPU classes, and the container group's image."""

from __future__ import annotations

from relaymd.cli.cluster_checks import CheckResult
from relaymd.config import LoadedConfig
from relaymd.models import ClusterProfile
from relaymd.models.salad import SaladSettings
from relaymd.providers.salad.client import SaladClient, SaladError, error_text
from relaymd.providers.salad.keys import salad_api_key
from relaymd.secrets import make_secrets_provider
from relaymd.secrets.base import SecretsError


def salad_checks(loaded: LoadedConfig, profile: ClusterProfile) -> list[CheckResult]:
    settings = profile.salad
    assert settings is not None  # the profile's validator guarantees it for `salad`
    try:
        key = salad_api_key(profile, make_secrets_provider(loaded.config.secrets))
    except SecretsError as exc:
        return [CheckResult(name="salad-key", ok=False, detail=str(exc))]
    client = SaladClient(settings, key)
    try:
        groups = client.list_groups()
    except SaladError as exc:
        return [CheckResult(name="salad-project", ok=False, detail=error_text(exc))]
    where = f"organization {settings.organization}, project {settings.project}"
    results = [CheckResult(name="salad-project", ok=True, detail=f"the key may use {where}")]
    results.append(_gpu_check(client, settings))
    group = next((g for g in groups.items if g.name == settings.container_group), None)
    if group is None:
        detail = f"no group {settings.container_group} yet: created with {settings.image} on demand"
    elif group.container.image != settings.image:
        detail = f"group runs {group.container.image}: updated to {settings.image} on next cycle"
    else:
        detail = f"group {settings.container_group} runs {settings.image}"
    results.append(CheckResult(name="salad-image", ok=True, detail=detail))
    return results


def _gpu_check(client: SaladClient, settings: SaladSettings) -> CheckResult:
    try:
        known = {c.id: c.name for c in client.gpu_classes().items}
    except SaladError as exc:
        return CheckResult(name="salad-gpus", ok=False, detail=error_text(exc))
    unknown = [g for g in settings.gpu_classes if g not in known]
    if unknown:
        return CheckResult(
            name="salad-gpus",
            ok=False,
            detail=f"unknown GPU class id(s) {', '.join(unknown)}",
            hint=f"use ids from GET /organizations/{settings.organization}/gpu-classes",
        )
    names = [known[g] for g in settings.gpu_classes] or ["any (CPU only)"]
    return CheckResult(name="salad-gpus", ok=True, detail=", ".join(names))
