"""docs/benchmarks.md: each benchmark owns the text between its `bench:<name>` markers."""

from __future__ import annotations

from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def replace_section(document: str, name: str, body: str, *, heading: str | None = None) -> str:
    """`document` with `body` between the markers of `name`; the rest is kept as it is.

    Without the markers the section is appended, under `## heading` when one is given.
    """
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in document and end in document:
        head, _, rest = document.partition(start)
        _, _, tail = rest.partition(end)
        return head + block + tail
    intro = f"## {heading}\n\n" if heading else ""
    return (document or "# Benchmarks\n").rstrip() + "\n\n" + intro + block + "\n"


def write_section(name: str, body: str, *, heading: str | None = None) -> None:
    """Replace (or append) the section `name` of docs/benchmarks.md."""
    document = DOCS.read_text() if DOCS.exists() else ""
    DOCS.parent.mkdir(parents=True, exist_ok=True)
    DOCS.write_text(replace_section(document, name, body, heading=heading))
