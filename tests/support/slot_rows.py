"""Allocation rows of one multi-GPU group (ADR 0026), as tests build them."""

from __future__ import annotations

from typing import Any

from relaymd.ids import slot_allocation_id
from relaymd.models import Allocation


def slot_row(
    group_id: str,
    slot: int,
    *,
    cluster: str,
    partition: str,
    slot_count: int = 4,
    walltime_s: int = 3600,
    **fields: Any,
) -> Allocation:
    """GPU slot `slot` of group `group_id`; further Allocation fields by keyword."""
    return Allocation(
        id=slot_allocation_id(group_id, slot),
        group_id=group_id,
        slot=slot,
        slot_count=slot_count,
        cluster=cluster,
        partition=partition,
        image="openmm",
        walltime_s=walltime_s,
        **fields,
    )
