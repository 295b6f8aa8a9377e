"""A job row's JSON text, with its spec's part kept between writes.

A job's spec (the user's submission) never changes after it is stored, and it is two thirds of
the cost of serializing the row; a heartbeat's news rewrites the row with a new speed every
few polls, thousands of rows a poll at campaign scale. The spec's text is kept per spec object
(rows copied with model_copy share it) and spliced into the rest of the row's text: the same
text `job.model_dump_json()` gives (tests/unit/test_job_json.py holds it to that).
"""

from __future__ import annotations

from pydantic_core import to_json

from relaymd.models import Job, JobSpec

# Entries held at most before the memo starts over: the active jobs of a big campaign.
CAPACITY = 65_536
_WITHOUT_SPEC = {"spec"}
_ID_KEY = len('{"id":')

# id(spec) -> (spec, its text); the spec is held, so its id cannot be reused meanwhile.
_spec_texts: dict[int, tuple[JobSpec, str]] = {}


def _spec_text(spec: JobSpec) -> str:
    held = _spec_texts.get(id(spec))
    if held is not None and held[0] is spec:
        return held[1]
    if len(_spec_texts) >= CAPACITY:
        _spec_texts.clear()
    text = spec.model_dump_json()
    _spec_texts[id(spec)] = (spec, text)
    return text


def job_json(job: Job) -> str:
    """`job.model_dump_json()`, with the spec's text reused."""
    rest = job.model_dump_json(exclude=_WITHOUT_SPEC)
    after_id = _ID_KEY + len(to_json(job.id).decode())  # characters, not bytes
    return f'{rest[:after_id]},"spec":{_spec_text(job.spec)}{rest[after_id:]}'
