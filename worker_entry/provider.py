"""Which provider machine this worker runs on, as the provider's container environment says
(SaladCloud sets SALAD_MACHINE_ID), so the daemon can match the heartbeat against the
provider's own list of instances (ADR 0025). None anywhere else."""

from __future__ import annotations

import os

MACHINE_ID_ENV = "SALAD_MACHINE_ID"


def provider_machine_id() -> str | None:
    return os.environ.get(MACHINE_ID_ENV) or None
