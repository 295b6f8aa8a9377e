"""Report the newest glibc symbol version the operator binary needs, and enforce a minimum.

    python packaging/check-glibc.py dist/relaymd --max 2.28            # fail above 2.28
    python packaging/check-glibc.py dist/relaymd-onedir --max 2.28 --report-only

A onefile binary is the PyInstaller bootloader followed by a CArchive: the bootloader is read
in place, every archive entry that is an ELF file (libpython, extension modules, libssl, ...)
is extracted and read too. A onedir build is a folder: every ELF file under it is read.
The versions come from `objdump -T` (binutils): the `GLIBC_x.y` version needs of the dynamic
symbol table, i.e. exactly what the dynamic loader checks on the target machine.

Exit codes: 0 within the limit (or --report-only), 1 above it, 2 usage or tool errors.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

GLIBC_VERSION = re.compile(r"\bGLIBC_(\d+)\.(\d+)(?:\.(\d+))?\b")
ELF_MAGIC = b"\x7fELF"


class Need(NamedTuple):
    """The newest glibc version one ELF file needs."""

    name: str
    version: tuple[int, ...]


def parse_version(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split("."))
    except ValueError:
        raise SystemExit(f"error: {text!r} is not a glibc version like 2.28") from None


def show(version: tuple[int, ...]) -> str:
    return ".".join(str(part) for part in version) if version else "none"


def newest_glibc(elf: Path) -> tuple[int, ...]:
    """The highest GLIBC_x.y[.z] version named in the file's dynamic symbol table."""
    result = subprocess.run(
        ["objdump", "-T", str(elf)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        # Static or non-dynamic ELF files have no dynamic symbol table: nothing to need.
        if "not a dynamic object" in result.stderr or "no symbols" in result.stderr:
            return ()
        raise SystemExit(f"error: objdump -T {elf} failed: {result.stderr.strip()}")
    found = [
        tuple(int(g) for g in match.groups() if g is not None)
        for match in GLIBC_VERSION.finditer(result.stdout)
    ]
    return max(found, default=())


def is_elf(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(4) == ELF_MAGIC


def onefile_needs(binary: Path, scratch: Path) -> list[Need]:
    """The bootloader itself, then every ELF entry of the embedded CArchive."""
    try:
        from PyInstaller.archive.readers import CArchiveReader
    except ImportError:
        raise SystemExit(
            "error: PyInstaller is needed to read a onefile binary; run with the project's "
            ".venv/bin/python (uv sync), or check a --onedir build instead"
        ) from None
    needs = [Need(f"{binary.name} (bootloader)", newest_glibc(binary))]
    archive = CArchiveReader(str(binary))
    for index, name in enumerate(sorted(archive.toc)):
        data = archive.extract(name)
        if not data.startswith(ELF_MAGIC):
            continue
        extracted = scratch / f"{index:04d}-{Path(name).name}"
        extracted.write_bytes(data)
        needs.append(Need(name, newest_glibc(extracted)))
    return needs


def onedir_needs(folder: Path) -> list[Need]:
    return [
        Need(str(path.relative_to(folder)), newest_glibc(path))
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not path.is_symlink() and is_elf(path)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artefact", type=Path, help="dist/relaymd or dist/relaymd-onedir")
    parser.add_argument("--max", default="2.28", help="newest glibc allowed (default 2.28)")
    parser.add_argument(
        "--report-only", action="store_true", help="print the result, never fail on it"
    )
    args = parser.parse_args(argv)
    limit = parse_version(args.max)
    if shutil.which("objdump") is None:
        print("error: objdump not found; install binutils (apt-get install binutils)")
        return 2
    artefact: Path = args.artefact
    if not artefact.exists():
        print(f"error: {artefact} does not exist; build it with packaging/build-binary.sh")
        return 2
    with tempfile.TemporaryDirectory(prefix="relaymd-glibc-") as scratch:
        needs = (
            onedir_needs(artefact) if artefact.is_dir() else onefile_needs(artefact, Path(scratch))
        )
    if len(needs) < 2:
        print(f"error: found no bundled ELF files in {artefact}; is it a PyInstaller build?")
        return 2
    newest = max(need.version for need in needs)
    offenders = sorted((n for n in needs if n.version > limit), key=lambda n: n.version)
    for need in offenders:
        print(f"  needs GLIBC_{show(need.version)}: {need.name}")
    print(
        f"glibc: {artefact} needs GLIBC_{show(newest)} at most "
        f"({len(needs)} ELF files read; limit {show(limit)}; {len(offenders)} above it)"
    )
    if offenders and not args.report_only:
        print(
            f"error: {artefact} will not start on systems with glibc < {show(newest)}; "
            "build it with an interpreter and wheels made for an older glibc "
            "(docs/deploy.md, 'Supported systems')"
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
