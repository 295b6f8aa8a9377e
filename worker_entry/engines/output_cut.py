"""Cut append-only sample files to exactly the lines that belong to a checkpoint.

A program like AToM-OpenMM appends samples to its output files between checkpoint rounds and
never cuts them back when it resumes from a round. A copy taken with a round can therefore
hold lines written after it, and the resumed program writes them again. The counts that belong
to a round come from the checkpoint itself, never from the output files:

* preset atom: each replica's checkpoint XML (an OpenMM State) stores AToM's bookkeeping as
  global parameters; `r<i>/<BASENAME>.out` has one line per `PRNT_FREQUENCY` MD steps, so the
  round owns `REMDSteps // PRNT_FREQUENCY` lines (AToM-OpenMM 8.5's rule);
* a generic command: a JSON file in its checkpoint set, `{"<file>": <lines>}`, written by the
  program in every round (`engine.output_line_counts`).
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path, PurePosixPath

from pydantic import BaseModel, Field

from relaymd.atom_config import AtomLayout
from worker_entry.engines.base import EngineFailure


class OutputCut(BaseModel):
    path: str  # relative to the folder it is applied in (work dir or checkpoint copy)
    lines: int = Field(ge=0)


class AtomRound(BaseModel):
    """What a complete AToM checkpoint set says about its replicas' sample files."""

    cuts: list[OutputCut]
    samples: int  # the slowest replica's samples: the checkpoint's progress


def _relpath(prefix: str, *parts: str) -> str:
    return PurePosixPath(prefix, *parts).as_posix()


def _parameters(path: Path) -> dict[str, str] | None:
    """Attributes of the State's <Parameters>; stops reading there (it precedes the
    positions and velocities, megabytes for a solvated system)."""
    try:
        for _, element in ET.iterparse(path, events=("start",)):
            if element.tag == "Parameters":
                return dict(element.attrib)
    except (OSError, ET.ParseError) as exc:
        raise EngineFailure(f"{path.name}: not a readable AToM checkpoint XML: {exc}") from None
    return None


def replica_md_steps(path: Path) -> int:
    """REMDSteps from an AToM replica checkpoint (OpenMM State XML: <Parameters REMDSteps=..>)."""
    params = _parameters(path)
    value = params.get("REMDSteps") if params is not None else None
    if value is None:
        raise EngineFailure(f"{path}: no REMDSteps global parameter; not an AToM-OpenMM checkpoint")
    try:
        steps = float(value)
    except ValueError:
        raise EngineFailure(f"{path}: REMDSteps = {value!r} is not a number") from None
    if steps < 0 or steps != int(steps):
        raise EngineFailure(f"{path}: REMDSteps = {value!r} is not a step count")
    return int(steps)


def atom_round(root: Path, atom_dir: str, layout: AtomLayout) -> AtomRound:
    """Cuts for every replica folder `r<i>` under root/atom_dir that holds a checkpoint."""
    cuts: list[OutputCut] = []
    base = root / atom_dir
    for ckpt in sorted(base.glob(f"r*/{layout.checkpoint_file}")):
        replica = ckpt.parent.name
        if not replica[1:].isdigit():
            continue
        lines = replica_md_steps(ckpt) // layout.prnt_frequency
        cuts.append(OutputCut(path=_relpath(atom_dir, replica, layout.out_name()), lines=lines))
    return AtomRound(cuts=cuts, samples=min((c.lines for c in cuts), default=0))


def counted_cuts(root: Path, counts_file: str) -> list[OutputCut]:
    """Cuts from the program's own `{"<file>": <lines>}` file in its checkpoint set."""
    path = root / counts_file
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise EngineFailure(
            f"engine.output_line_counts: {counts_file} is not in the checkpoint set; the "
            "program must write it in every checkpoint round (and checkpoint_globs match it)"
        ) from None
    except (OSError, ValueError) as exc:
        raise EngineFailure(f"engine.output_line_counts: {counts_file}: {exc}") from None
    if not isinstance(data, dict):
        raise EngineFailure(f'{counts_file}: expected {{"<file>": <lines>, ...}}')
    cuts = []
    for name, lines in data.items():
        rel = PurePosixPath(str(name))
        if rel.is_absolute() or ".." in rel.parts or not isinstance(lines, int) or lines < 0:
            raise EngineFailure(
                f"{counts_file}: entry {name!r}: {lines!r} must be a relative path inside the "
                "work dir and a line count >= 0"
            )
        cuts.append(OutputCut(path=rel.as_posix(), lines=lines))
    return cuts


def cut_file(path: Path, lines: int, what: str) -> None:
    """Keep exactly the first `lines` complete lines of `path`."""
    if not path.is_file():
        if lines == 0:
            return
        raise EngineFailure(f"{what}: {path.name} is missing, the checkpoint owns {lines} lines")
    kept = 0
    offset = 0
    with path.open("rb") as fh:
        for line in fh:
            if kept == lines or not line.endswith(b"\n"):
                break
            kept += 1
            offset += len(line)
    if kept < lines:
        raise EngineFailure(
            f"{what}: {path.name} has {kept} complete lines, its checkpoint owns {lines}; "
            "the output and the checkpoint disagree"
        )
    if path.stat().st_size != offset:
        os.truncate(path, offset)


def apply_cuts(root: Path, cuts: list[OutputCut], what: str) -> None:
    for cut in cuts:
        cut_file(root / cut.path, cut.lines, f"{what} {cut.path}")
