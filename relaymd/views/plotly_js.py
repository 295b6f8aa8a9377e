"""plotly.js, the one part of the plotly package the views use (figures are built as plain
specs, relaymd.views.plotly_spec): read from the installed package's data without importing
plotly's Python modules, or from the operator binary, which carries only this file."""

from __future__ import annotations

import importlib.util
import sys
from functools import cache
from pathlib import Path

RELATIVE = Path("plotly") / "package_data" / "plotly.min.js"


def plotly_js_path() -> Path:
    """Where plotly.min.js is; ImportError (naming plotly) when it is not installed."""
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle is not None:  # the PyInstaller binary (packaging/relaymd.spec adds the file)
        frozen = Path(bundle) / RELATIVE
        if frozen.is_file():
            return frozen
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("plotly is not installed", name="plotly")
    installed = Path(next(iter(spec.submodule_search_locations))).parent / RELATIVE
    if not installed.is_file():
        raise ImportError(f"plotly has no {RELATIVE} at {installed}", name="plotly")
    return installed


@cache
def plotly_js() -> str:
    return plotly_js_path().read_text(encoding="utf-8")
