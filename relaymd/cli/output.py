"""Console helpers: rich tables for people, `--json` for scripts (one JSON document on stdout)."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from relaymd.timestamps import iso_timestamp

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from relaymd.models import ClusterStatus

_console: Console | None = None
_err_console: Console | None = None


def console() -> Console:
    global _console
    if _console is None:
        from rich.console import Console

        _console = Console(highlight=False)
    return _console


def err_console() -> Console:
    global _err_console
    if _err_console is None:
        from rich.console import Console

        _err_console = Console(stderr=True, highlight=False)
    return _err_console


def table(*columns: str) -> Table:
    """An empty listing table with these column headings, in the CLI's one table style."""
    from rich.table import Table

    listing = Table(box=None, pad_edge=False)
    for column in columns:
        listing.add_column(column)
    return listing


def transfer_progress(enabled: bool) -> Progress:
    """A byte-counting progress display on stderr, so `--json` output on stdout stays clean."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=err_console(),
        disable=not enabled,
    )


# What --json documents are made of.
JsonValue = None | bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"]


def to_jsonable(value: object) -> JsonValue:
    """What --json prints: models (and lists, dicts of them) as their fields, every datetime
    as `iso_timestamp`."""
    from pydantic import BaseModel
    from pydantic_core import to_jsonable_python

    if isinstance(value, BaseModel):
        return to_jsonable(value.model_dump(mode="python"))
    if isinstance(value, datetime):
        return iso_timestamp(value)
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(k): to_jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, bool | int | float) or type(value) is str:
        return value
    converted: JsonValue = to_jsonable_python(value)  # enums, paths, secrets (masked), dates
    return converted


def print_json(value: object) -> None:
    """Plain stdout, no rich markup or wrapping, so `| jq` always parses."""
    sys.stdout.write(json.dumps(to_jsonable(value), indent=2, default=str) + "\n")
    sys.stdout.flush()


def age(when: datetime | None, now: datetime | None = None) -> str:
    """'12s', '5m', '3h', '2d' ago; '-' for never."""
    if when is None:
        return "-"
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = max(0.0, ((now or datetime.now(UTC)) - when).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def human_bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def state_style(state: str) -> str:
    return {
        "queued": "cyan",
        "assigned": "blue",
        "running": "green",
        "held": "yellow",
        "completed": "bold green",
        "failed": "bold red",
        "cancelled": "dim",
        "pending": "cyan",
        "submitting": "blue",
        "ended": "dim",
    }.get(state, "")


def styled(text: str, style: str) -> str:
    """`text` in rich markup with `style`, escaped; plain when there is no style."""
    from rich.markup import escape

    return f"[{style}]{escape(text)}[/]" if style else escape(text)


# C0/C1 controls (ESC starts terminal escape sequences) and the bidi overrides that can make
# a title display as something else.
_UNSAFE = {
    *range(0x00, 0x20),
    0x7F,
    *range(0x80, 0xA0),
    *range(0x202A, 0x202F),
    *range(0x2066, 0x206A),
}
_UNSAFE_TABLE = {code: (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}") for code in _UNSAFE}


_MULTILINE_TABLE = {k: v for k, v in _UNSAFE_TABLE.items() if k != ord("\n")}


def safe_text(text: str, *, multiline: bool = False) -> str:
    """A user string (title, path, message) shown literally: control characters become
    visible escapes, so a title cannot move the cursor, retitle the terminal or hide text.
    `multiline` keeps line breaks (error messages list one problem per line). Rich markup is
    a separate concern: pass the result through rich.markup.escape."""
    return text.translate(_MULTILINE_TABLE if multiline else _UNSAFE_TABLE)


def plain(text: object) -> str:
    """A user string for rich output: controls made visible, markup shown literally."""
    from rich.markup import escape

    return escape(safe_text(str(text)))


def backoff_lines(status: ClusterStatus, now: datetime | None = None) -> list[str]:
    """One line per partition of `status` backing off after start failures; empty when none."""
    when = now or datetime.now(UTC)
    return [record.describe(status.name, when) for record in status.backoff.values()]


def print_table(out: Console, listing: Table) -> None:
    """Print a table; to a pipe or a file as wide as its content needs. There is no screen
    to fit then, and fitting 80 columns cut the one cell a reader looks for (`complet…`)."""
    if out.is_terminal:
        out.print(listing)
        return
    from rich.measure import Measurement

    needed = Measurement.get(out, out.options.update_width(10_000), listing).maximum
    width = out.width
    out.width = max(width, needed)  # print(width=) would clamp to the console's width
    try:
        out.print(listing)
    finally:
        out.width = width
