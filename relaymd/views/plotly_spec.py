"""The slice of plotly.js's figure schema the views use, as pydantic models: the figures are
drawn by plotly.js in the browser. Building them in plotly's Python classes validated and
deep-copied every point (17 s for 20 000 segments); these dump straight to JSON."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

Value = str | float | None


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Marker(Spec):
    color: str | None = None


class Line(Spec):
    dash: Literal["solid", "dash", "dot"] | None = None


class Trace(Spec):
    type: Literal["bar", "scatter", "box"]
    name: str
    x: list[Value] | None = None
    y: list[Value] | None = None
    base: list[str] | None = None  # a bar's start on a date axis
    orientation: Literal["h", "v"] | None = None
    marker: Marker | None = None
    line: Line | None = None
    mode: str | None = None
    text: list[str] | None = None
    textposition: Literal["inside", "outside", "auto", "none"] | None = None
    hovertext: list[str | None] | None = None
    hoverinfo: str | None = None
    boxpoints: Literal["all", "outliers", False] | None = None


class Axis(Spec):
    type: Literal["date", "category", "linear"] | None = None
    title: dict[str, str] | None = None
    tickformat: str | None = None
    range: list[float] | None = None
    categoryorder: Literal["array"] | None = None
    categoryarray: list[str] | None = None
    gridcolor: str = "#e5e5e5"
    automargin: bool = True


class Layout(Spec):
    title: dict[str, str]
    height: int
    barmode: Literal["overlay", "group", "stack"] | None = None
    xaxis: Axis = Axis()
    yaxis: Axis = Axis()
    legend: dict[str, str] | None = None
    margin: dict[str, int] = {"l": 60, "r": 20, "t": 50, "b": 40}
    plot_bgcolor: str = "white"
    paper_bgcolor: str = "white"


class Figure(Spec):
    data: list[Trace]
    layout: Layout

    def to_json(self) -> str:
        """JSON safe to put inside a <script> element."""
        return (
            self.model_dump_json(exclude_none=True).replace("</", "<\\/").replace("<!--", "<\\!--")
        )


def titled(text: str) -> dict[str, str]:
    return {"text": text}
