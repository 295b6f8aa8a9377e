"""Turn a downloaded relay (`outputs/<epoch>/<name>.<start>-<end>.<ext>`) into one trajectory and
one state-data table, as if the simulation had never been interrupted.

Chunks are ordered by step, epochs numerically (not as strings: 2 before 10). Where chunks
overlap (a killed segment's last chunk whose checkpoint never reached storage, redone by its
successor from the same step) the later epoch wins, whole chunk for whole chunk
(docs/storage-layout.md). The DCD is merged frame for frame (no re-encoding, so the frames are
bitwise those the workers wrote); the CSV keeps one header and gets step/time columns that run
on across segments.
"""

from __future__ import annotations

import re
import struct
from itertools import pairwise
from pathlib import Path

from pydantic import BaseModel

ASSEMBLED_DIR = "assembled"
TRAJECTORY = "trajectory.dcd"
STATE_DATA = "state_data.csv"
TOPOLOGY = "topology.pdb"
_CHUNK = re.compile(r"^(?P<stem>.+)\.(?P<start>\d{10})-(?P<end>\d{10})\.(?P<ext>[A-Za-z0-9]+)$")
_AKMA_PS = 0.04888821  # DCD stores the time step in AKMA units


class AssembleError(Exception):
    """The downloaded chunks cannot be joined (gap, mismatched atoms, corrupt file)."""


class Chunk(BaseModel):
    epoch: int
    start: int
    end: int
    path: Path


class AssembledOutputs(BaseModel):
    """What `assemble_outputs` wrote; `None` where the job wrote no such output."""

    directory: Path
    topology: Path | None = None  # the job's PDB, when the download found one
    trajectory: Path | None = None
    xtc: Path | None = None
    state_data: Path | None = None
    frames: int = 0
    rows: int = 0
    first_step: int = 0
    last_step: int = 0
    chunks_used: list[Path] = []
    chunks_dropped: list[Path] = []  # overlapped by a later epoch


def find_chunks(outputs_dir: Path, stem: str, ext: str) -> list[Chunk]:
    """Every `<stem>.<start>-<end>.<ext>` under `outputs_dir/<epoch>/`, in (start, epoch) order."""
    found: list[Chunk] = []
    if not outputs_dir.is_dir():
        return found
    for epoch_dir in outputs_dir.iterdir():
        if not (epoch_dir.is_dir() and epoch_dir.name.isdigit()):
            continue
        for path in epoch_dir.iterdir():
            match = _CHUNK.match(path.name)
            if match and match["stem"] == stem and match["ext"] == ext:
                found.append(
                    Chunk(
                        epoch=int(epoch_dir.name),
                        start=int(match["start"]),
                        end=int(match["end"]),
                        path=path,
                    )
                )
    return sorted(found, key=lambda c: (c.start, c.epoch))


class ReportSteps(BaseModel):
    """The steps a reporter writes at: every `interval` steps, at `phase` modulo it (OpenMM's
    reporters fire when the step is a multiple of their interval)."""

    interval: int
    phase: int = 0

    def any_between(self, after: int, upto: int) -> bool:
        """Whether a report falls on a step in (after, upto]."""
        first = after + (self.phase - after - 1) % self.interval + 1
        return first <= upto


def select_chunks(
    chunks: list[Chunk], reports: ReportSteps | None = None
) -> tuple[list[Chunk], list[Chunk]]:
    """(kept, dropped): a chunk is dropped when a later epoch's chunk overlaps its steps.
    The kept ones must tile their step range without gaps, except a stretch on which no
    report falls: a checkpoint interval shorter than the report interval writes nothing,
    so the worker has no chunk to store for it (`reports`, when the chunks tell it)."""
    kept: list[Chunk] = []
    dropped: list[Chunk] = []
    for chunk in chunks:
        overlapped = any(
            other.epoch > chunk.epoch and other.start < chunk.end and chunk.start < other.end
            for other in chunks
        )
        (dropped if overlapped else kept).append(chunk)
    for before, after in pairwise(kept):
        if after.start == before.end:
            continue
        empty_stretch = (
            reports is not None
            and after.start > before.end
            and not reports.any_between(before.end, after.start)
        )
        if not empty_stretch:
            raise AssembleError(
                f"steps {before.end}..{after.start} are missing between {before.path} and "
                f"{after.path}: download the job again (or wait for its next segment)"
            )
    return kept, dropped


def dcd_report_steps(chunks: list[Chunk]) -> ReportSteps | None:
    """The frame steps, from the first chunk's DCD header (first step, interval)."""
    for chunk in chunks:
        with chunk.path.open("rb") as fh:
            head = fh.read(20)
        if len(head) == 20 and head[4:8] == b"CORD":
            first_step, interval = struct.unpack_from("<ii", head, 12)
            if interval > 0:
                return ReportSteps(interval=interval, phase=first_step % interval)
    return None


def csv_report_steps(chunks: list[Chunk]) -> ReportSteps | None:
    """The row steps, from the smallest step difference within a chunk."""
    steps = sorted(
        {int(float(row[0])) for chunk in chunks for row in _csv_rows(chunk.path) if row[0]}
    )
    gaps = [b - a for a, b in pairwise(steps) if b > a]
    if not gaps:
        return None
    interval = min(gaps)
    return ReportSteps(interval=interval, phase=steps[0] % interval)


class _DcdLayout(BaseModel):
    header: bytes
    atoms: int
    frame_bytes: int
    first_step: int
    interval: int
    step_ps: float


def _dcd_layout(data: bytes, path: Path) -> _DcdLayout:
    """Header and frame size of a DCD as OpenMM's DCDFile writes it (little endian)."""
    try:
        if struct.unpack_from("<i", data, 0)[0] != 84 or data[4:8] != b"CORD":
            raise AssembleError(f"{path} is not a DCD file")
        first_step, interval = struct.unpack_from("<ii", data, 12)
        (dt_akma,) = struct.unpack_from("<f", data, 44)
        (has_box,) = struct.unpack_from("<i", data, 48)
        (comment_bytes,) = struct.unpack_from("<i", data, 92)
        header_len = 104 + comment_bytes + 8
        (atoms,) = struct.unpack_from("<i", data, header_len - 8)
    except struct.error:
        raise AssembleError(f"{path} is truncated") from None
    frame = 3 * (8 + 4 * atoms) + (56 if has_box else 0)
    if (len(data) - header_len) % frame:
        raise AssembleError(f"{path} ends inside a frame: the chunk is truncated")
    return _DcdLayout(
        header=data[:header_len],
        atoms=atoms,
        frame_bytes=frame,
        first_step=first_step,
        interval=interval,
        step_ps=dt_akma * _AKMA_PS / max(interval, 1),
    )


def merge_dcd(chunks: list[Chunk], target: Path) -> tuple[int, float | None]:
    """Concatenate the chunks' frames under the first chunk's header; (frames, step in ps)."""
    header: bytearray | None = None
    atoms = frames = 0
    step_ps: float | None = None
    tmp = target.with_name(target.name + ".part")
    with tmp.open("wb") as out:
        for chunk in chunks:
            data = chunk.path.read_bytes()
            layout = _dcd_layout(data, chunk.path)
            if header is None:
                header, atoms, step_ps = bytearray(layout.header), layout.atoms, layout.step_ps
                out.write(header)
            elif layout.atoms != atoms:
                raise AssembleError(f"{chunk.path} has {layout.atoms} atoms, not {atoms}")
            body = data[len(layout.header) :]
            frames += len(body) // layout.frame_bytes
            out.write(body)
        if header is not None:
            # NSET (frame count) and the last frame's step, as DCDFile keeps them.
            first_step, interval = struct.unpack_from("<ii", header, 12)
            out.seek(8)
            out.write(struct.pack("<i", frames))
            out.seek(20)
            out.write(struct.pack("<i", first_step + max(frames - 1, 0) * interval))
    tmp.replace(target)
    return frames, step_ps


def _csv_step_ps(chunks: list[Chunk]) -> float | None:
    """The time step from two rows of one chunk (each chunk's own times may start anywhere)."""
    for chunk in chunks:
        rows = [r for r in _csv_rows(chunk.path) if r]
        if len(rows) >= 2:
            (s0, t0), (s1, t1) = (
                (float(rows[0][0]), float(rows[0][1])),
                (
                    float(rows[-1][0]),
                    float(rows[-1][1]),
                ),
            )
            if s1 > s0:
                return (t1 - t0) / (s1 - s0)
    return None


def _csv_rows(path: Path) -> list[list[str]]:
    return [
        line.split(",")
        for line in path.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]


def merge_state_data(chunks: list[Chunk], target: Path, step_ps: float | None) -> int:
    """One header, rows in step order; Time recomputed as step x time step so it runs on."""
    header = ""
    lines: list[str] = []
    for chunk in chunks:
        text = chunk.path.read_text().splitlines()
        if not header and text and text[0].startswith("#"):
            header = text[0]
        for row in _csv_rows(chunk.path):
            step = int(float(row[0]))
            if not chunk.start < step <= chunk.end:
                continue  # a row outside the chunk's steps belongs to another chunk
            if step_ps is not None and len(row) > 1:
                row[1] = repr(round(step * step_ps, 9))
            lines.append(",".join(row))
    tmp = target.with_name(target.name + ".part")
    tmp.write_text("\n".join([header, *lines]) + "\n" if header else "\n".join(lines) + "\n")
    tmp.replace(target)
    return len(lines)


def covered_steps(
    kept: list[Chunk], reports: ReportSteps | None, through_step: int | None
) -> tuple[int, int]:
    """The step range the kept chunks account for. A stretch before the first chunk (from
    step 0) or after the last one (up to `through_step`, the job's verified step) on which no
    report falls is covered too: the reporter had nothing to write there, so no chunk exists."""
    first, last = kept[0].start, max(c.end for c in kept)
    if reports is None:
        return first, last
    if first > 0 and not reports.any_between(0, first):
        first = 0
    tail_empty = through_step is not None and not reports.any_between(last, through_step)
    if through_step is not None and through_step > last and tail_empty:
        last = through_step
    return first, last


def assemble_outputs(
    download_dir: Path,
    *,
    xtc: bool = False,
    topology: Path | None = None,
    through_step: int | None = None,
) -> AssembledOutputs:
    """Write `download_dir/assembled/{trajectory.dcd,state_data.csv}` from `outputs/<epoch>/`.

    `xtc=True` also writes `trajectory.xtc` (needs mdtraj installed, and `topology`, the job's
    PDB; by default `assembled/topology.pdb`, which `relaymd jobs download` puts there).
    `through_step`, the job's verified step, lets the reported range run past the last chunk
    when no frame or row was due after it.
    """
    outputs = download_dir / "outputs"
    out_dir = download_dir / ASSEMBLED_DIR
    result = AssembledOutputs(directory=out_dir, topology=topology)
    dcd_chunks = find_chunks(outputs, "trajectory", "dcd")
    csv_chunks = find_chunks(outputs, "state_data", "csv")
    dcd_reports, csv_reports = dcd_report_steps(dcd_chunks), csv_report_steps(csv_chunks)
    dcd_kept, dcd_dropped = select_chunks(dcd_chunks, dcd_reports)
    csv_kept, csv_dropped = select_chunks(csv_chunks, csv_reports)
    if not dcd_kept and not csv_kept:
        raise AssembleError(
            f"no trajectory or state-data chunks under {outputs}: download the outputs first"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    step_ps = None
    if dcd_kept:
        result.trajectory = out_dir / TRAJECTORY
        result.frames, step_ps = merge_dcd(dcd_kept, result.trajectory)
    if csv_kept:
        step_ps = _csv_step_ps(csv_kept) or step_ps
        result.state_data = out_dir / STATE_DATA
        result.rows = merge_state_data(csv_kept, result.state_data, step_ps)
    # Both outputs must account for a step for the assembly to claim it.
    ranges = [
        covered_steps(kept, reports, through_step)
        for kept, reports in ((dcd_kept, dcd_reports), (csv_kept, csv_reports))
        if kept
    ]
    result.first_step = max(first for first, _ in ranges)
    result.last_step = min(last for _, last in ranges)
    kept = dcd_kept + csv_kept
    result.chunks_used = [c.path for c in kept]
    result.chunks_dropped = [c.path for c in dcd_dropped + csv_dropped]
    if xtc and result.trajectory is not None:
        result.xtc = write_xtc(result.trajectory, topology or out_dir / TOPOLOGY)
    return result


def write_xtc(dcd: Path, topology: Path) -> Path:
    """The merged DCD re-encoded as XTC with mdtraj (an optional dependency)."""
    try:
        import mdtraj
    except ImportError:
        raise AssembleError(
            "XTC output needs mdtraj beside relaymd: `uv tool install '.[operator]' --with "
            "mdtraj` (or `pip install mdtraj` in its environment); the DCD was written without it"
        ) from None
    if not topology.is_file():
        raise AssembleError(
            f"XTC output needs the job's topology PDB, and {topology} does not exist "
            "(set `engine.topology` in relaymd.yaml so the job carries one)"
        )
    target = dcd.with_suffix(".xtc")
    mdtraj.load_dcd(str(dcd), top=str(topology)).save_xtc(str(target))
    return target
