"""Logging: registered secrets are redacted everywhere; JSON and console renderers work."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator

import orjson
import pytest

from relaymd import logging as relaymd_logging
from relaymd.logging import add_secret, configure, get_logger

SECRET = "s3cr3t-value"


@pytest.fixture
def buffer() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure(development=False, stream=stream)
    yield stream
    configure()


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_secret_is_redacted_in_fields_nested_values_and_exceptions(buffer: io.StringIO) -> None:
    add_secret(SECRET)
    log = get_logger("relaymd.test")
    log.info("as_field", token=SECRET)
    log.info("nested", request={"headers": {"auth": f"Bearer {SECRET}"}, "list": [SECRET, 1]})
    log.info(f"in the event itself {SECRET}")  # noqa: G004 - proving the event is redacted too
    try:
        raise RuntimeError(f"connect failed with key {SECRET}")
    except RuntimeError:
        log.exception("failed")
    log.info("object_value", value=ValueError(SECRET))
    text = buffer.getvalue()
    assert SECRET not in text
    lines = _lines(buffer)
    assert len(lines) == 5
    assert lines[0]["token"] == relaymd_logging.REDACTED
    assert lines[1]["request"] == {
        "headers": {"auth": f"Bearer {relaymd_logging.REDACTED}"},
        "list": [relaymd_logging.REDACTED, 1],
    }
    assert relaymd_logging.REDACTED in str(lines[2]["event"])
    assert f"connect failed with key {relaymd_logging.REDACTED}" in str(lines[3]["exception"])
    assert lines[4]["value"] == relaymd_logging.REDACTED
    assert lines[3]["level"] == "error" and lines[0]["event"] == "as_field"


def test_short_and_empty_values_are_not_registered(buffer: io.StringIO) -> None:
    add_secret("")
    add_secret(None)
    add_secret("abc")  # too short: would redact half of every log line
    get_logger("relaymd.test").info("plain", word="abc")
    assert _lines(buffer)[0]["word"] == "abc"


def test_console_mode_in_development(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAYMD_ENV", "development")
    stream = io.StringIO()
    configure(stream=stream)
    try:
        add_secret(SECRET)
        get_logger("relaymd.test").warning("job_started", job_id="j1", key=SECRET)
    finally:
        configure()
    text = stream.getvalue()
    assert "job_started" in text and "job_id=j1" in text and "warning" in text
    assert SECRET not in text and relaymd_logging.REDACTED in text
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(text)


def test_level_filtering(buffer: io.StringIO) -> None:
    configure(development=False, level="WARNING", stream=buffer)
    log = get_logger("relaymd.test")
    log.info("hidden")
    log.warning("shown")
    assert [line["event"] for line in _lines(buffer)] == ["shown"]


def test_log_timestamps_have_the_one_iso_form_of_the_json_outputs(buffer: io.StringIO) -> None:
    from datetime import datetime, timedelta

    get_logger("relaymd.test").info("stamped")
    [line] = _lines(buffer)
    stamp = str(line["timestamp"])
    # As `--json` writes times (docs/cli.md): ISO 8601, UTC, +00:00, microseconds.
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$", stamp), stamp
    assert datetime.fromisoformat(stamp).utcoffset() == timedelta(0)
