"""The report page: every chart of relaymd.views.figures and the job and failure tables, as
one HTML document. `relaymd report` inlines plotly.js (self-contained, works offline); the
dashboard links it from its own server and refreshes the page."""

from __future__ import annotations

import html

from pydantic import BaseModel

from relaymd.views.gc_pause import gc_paused
from relaymd.views.relay_facts import failure_causes
from relaymd.views.screen import job_cells
from relaymd.views.snapshot import JobView, RelaySnapshot

TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{{ title }}</title>
{% if refresh_s %}<meta http-equiv="refresh" content="{{ refresh_s }}">{% endif %}
<style>
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25em 0.7em; text-align: left; }
.chart { margin-bottom: 1.5em; } .muted { color: #777; }
</style>
{{ plotly_script }}
<script>const CONFIG = {"displaylogo": false, "responsive": true};</script>
</head><body>
<h1>{{ title }}</h1>
<p class="muted">From the state file as of {{ generated }} UTC. {{ daemon }}</p>
<h2>Jobs</h2>
<table id="jobs"><tr><th>job</th><th>title</th><th>state</th><th>done</th><th>steps</th>
<th>ns/day</th><th>where</th><th>handoff in</th><th>ETA</th></tr>
{% for row in jobs %}<tr>{% for cell in row %}<td>{{ cell }}</td>{% endfor %}</tr>
{% endfor %}</table>
{% for name, figure in charts %}<div class="chart"><div id="{{ name }}"></div>
<script>(function (f) { Plotly.newPlot("{{ name }}", f.data, f.layout, CONFIG); })(
{{ figure }});</script>
</div>
{% endfor %}
<h2>Failures and their causes</h2>
{% if causes %}<table id="failures"><tr><th>outcome</th><th>cause</th><th>segments</th>
<th>jobs</th></tr>
{% for c in causes %}<tr><td>{{ c.outcome }}</td><td>{{ c.reason }}</td><td>{{ c.segments }}</td>
<td>{{ c.jobs | join(", ") }}</td></tr>
{% endfor %}</table>{% else %}<p>No segment failed, was lost, stopped or cancelled.</p>{% endif %}
</body></html>
"""


class PageOptions(BaseModel):
    title: str = "RelayMD relay report"
    plotly_src: str | None = None  # None: inline plotly.js; else load it from this URL
    refresh_s: int | None = None


def render_page(snapshot: RelaySnapshot, options: PageOptions) -> str:
    """The whole HTML document for this snapshot."""
    with gc_paused():
        return _render(snapshot, options)


def _render(snapshot: RelaySnapshot, options: PageOptions) -> str:
    import jinja2
    from markupsafe import Markup

    from relaymd.views.figures import CHARTS
    from relaymd.views.screen import daemon_text, shown_jobs

    charts = [(name, Markup(build(snapshot).to_json())) for name, build in CHARTS]
    return (
        jinja2.Environment(autoescape=True)
        .from_string(TEMPLATE)
        .render(
            title=options.title,
            refresh_s=options.refresh_s,
            plotly_script=Markup(_plotly_script(options.plotly_src)),
            generated=f"{snapshot.generated_at:%Y-%m-%d %H:%M:%S}",
            daemon=daemon_text(snapshot),
            jobs=[_job_row(job) for job in shown_jobs(snapshot, limit=None)],
            charts=charts,
            causes=failure_causes(snapshot),
        )
    )


def _job_row(job: JobView) -> list[str]:
    done = f"{job.fraction:.0%}" if job.fraction is not None else "-"
    return [job.id, job.title, job.state, done, *job_cells(job)]


def _plotly_script(src: str | None) -> str:
    if src is not None:
        return f'<script src="{html.escape(src)}"></script>'
    from relaymd.views.plotly_js import plotly_js

    return f'<script type="text/javascript">{plotly_js()}</script>'
