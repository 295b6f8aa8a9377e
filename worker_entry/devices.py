"""Which GPUs a segment's engine may use (ADR 0026).

A slot's worker runs with its own device in CUDA_VISIBLE_DEVICES and, under
`relaymd-worker slots`, the whole allocation's devices in RELAYMD_ALLOCATION_DEVICES. An
assignment's `devices` are slot indices into that list: the lead slot of a multi-GPU job
widens its engine to those devices; no `devices` means the slot's own.
"""

from __future__ import annotations

from collections.abc import Mapping

ALLOCATION_DEVICES_ENV = "RELAYMD_ALLOCATION_DEVICES"


class DeviceError(ValueError):
    """The assignment's devices cannot be mapped on this worker; the message says why."""


def own_devices(env: Mapping[str, str]) -> str | None:
    raw = env.get("CUDA_VISIBLE_DEVICES", "").strip()
    return raw or None


def engine_devices(slots: list[int], env: Mapping[str, str]) -> str | None:
    """The engine's CUDA_VISIBLE_DEVICES: the assignment's slots mapped through the
    allocation's devices, else the worker's own (None when it has none)."""
    if not slots:
        return own_devices(env)
    raw = env.get(ALLOCATION_DEVICES_ENV, "").strip()
    if not raw:
        raise DeviceError(
            f"the assignment names GPU slots {slots}, but this worker has no "
            f"{ALLOCATION_DEVICES_ENV} (it was not started by `relaymd-worker slots`)"
        )
    devices = [d.strip() for d in raw.split(",")]
    if len(set(slots)) != len(slots) or any(not 0 <= i < len(devices) for i in slots):
        raise DeviceError(
            f"the assignment names GPU slots {slots}; this allocation has "
            f"{len(devices)} ({ALLOCATION_DEVICES_ENV}={raw})"
        )
    return ",".join(devices[i] for i in slots)


def device_count(visible: str | None) -> int:
    return len([d for d in (visible or "").split(",") if d.strip()])
