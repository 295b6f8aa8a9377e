"""The container a Salad replica runs: the worker image, started with a mailbox of its own in
the job bucket (ADR 0022), the bucket's address and keys in its environment (ADR 0025)."""

from __future__ import annotations

from relaymd.models import StorageAccess
from relaymd.models.salad import SaladSettings
from relaymd.providers.salad.api_models import Container, Resources

MAILBOX_ROOT_ENV = "RELAYMD_MAILBOX_ROOT"
# Values a person must never see in a log or a listing. SaladCloud's API has no secret flag
# for environment variables (checked in its OpenAPI description): they are sent only in the
# create/patch body over HTTPS and shown as "(secret)" everywhere on this side.
SECRET_ENV = frozenset({"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"})
# Each replica names its mailbox after the machine it landed on and its start time, so a
# restarted replica is a new allocation (an id is adopted once, ever: ADR 0022).
WORKER_SCRIPT = (
    'exec relaymd-worker --mailbox "${RELAYMD_MAILBOX_ROOT}/salad-'
    '${SALAD_MACHINE_ID:-$(hostname)}-$(date +%s)" --mailbox-poll "${RELAYMD_MAILBOX_POLL}" "$@"'
)


def mailbox_root(access: StorageAccess) -> str:
    return f"{access.url.rstrip('/')}/mailbox"


def environment(settings: SaladSettings, access: StorageAccess) -> dict[str, str]:
    env = {
        MAILBOX_ROOT_ENV: mailbox_root(access),
        "RELAYMD_MAILBOX_POLL": f"{settings.mailbox_poll_s:g}",
    }
    if access.endpoint_url:
        env["AWS_ENDPOINT_URL"] = access.endpoint_url
    if access.region:
        env["AWS_REGION"] = access.region
    if access.access_key_id is not None:
        env["AWS_ACCESS_KEY_ID"] = access.access_key_id.get_secret_value()
    if access.secret_access_key is not None:
        env["AWS_SECRET_ACCESS_KEY"] = access.secret_access_key.get_secret_value()
    return env


def container(settings: SaladSettings, access: StorageAccess) -> Container:
    return Container(
        image=settings.image,
        resources=Resources(
            cpu=settings.vcpu, memory=settings.memory_mb, gpu_classes=settings.gpu_classes
        ),
        # `sh -c SCRIPT NAME ARGS...`: the extra options arrive as positional parameters ("$@"),
        # never parsed as shell, so no option can smuggle shell syntax in.
        command=["sh", "-c", WORKER_SCRIPT, "relaymd-worker", *settings.worker_args],
        environment_variables=environment(settings, access),
    )


def redacted(env: dict[str, str]) -> dict[str, str]:
    return {k: "(secret)" if k in SECRET_ENV else v for k, v in env.items()}
