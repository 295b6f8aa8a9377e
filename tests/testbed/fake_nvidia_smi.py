#!/usr/bin/python3
"""A stand-in for `nvidia-smi` on the testbed's nodes, which have no GPUs (tests/testbed/README.md).

It prints what the real one prints for the GPUs listed in `gpus.csv` beside it (or in
$FAKE_NVIDIA_SMI_GPUS): lines `index,uuid,name,memory_mib`. Like the real nvidia-smi it lists
every GPU of the node whatever CUDA_VISIBLE_DEVICES says. Supported:

    nvidia-smi --query-gpu=index,uuid,name,memory.total --format=csv[,noheader][,nounits]
    nvidia-smi -L
"""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

FIELDS = {"index": 0, "uuid": 1, "gpu_uuid": 1, "name": 2, "gpu_name": 2, "memory.total": 3}


def gpus() -> list[list[str]]:
    beside = Path(__file__).resolve().with_name("gpus.csv")
    path = os.environ.get("FAKE_NVIDIA_SMI_GPUS") or str(beside)
    with open(path, newline="") as fh:
        return [row for row in csv.reader(fh) if row and not row[0].startswith("#")]


def query(fields: list[str], fmt: set[str]) -> int:
    for field in fields:
        if field not in FIELDS:
            print(f'Field "{field}" is not a valid field to query.', file=sys.stderr)
            return 2
    units = "nounits" not in fmt
    if "noheader" not in fmt:
        print(", ".join(f + (" [MiB]" if f == "memory.total" else "") for f in fields))
    for row in gpus():
        unit = " MiB" if units else ""
        print(", ".join(row[FIELDS[f]] + (unit if f == "memory.total" else "") for f in fields))
    return 0


def main(argv: list[str]) -> int:
    if argv == ["-L"]:
        for index, uuid, name, _ in gpus():
            print(f"GPU {index}: {name} (UUID: {uuid})")
        return 0
    options = dict(a.split("=", 1) for a in argv if a.startswith("--") and "=" in a)
    if "--query-gpu" not in options or options.get("--format", "").split(",")[0] != "csv":
        print("fake nvidia-smi: only --query-gpu=... --format=csv[,...] and -L", file=sys.stderr)
        return 2
    fields = [f.strip() for f in options["--query-gpu"].split(",")]
    return query(fields, set(options["--format"].split(",")))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
