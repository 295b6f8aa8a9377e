"""The report pauses the cyclic collector while it builds, and always resumes it."""

from __future__ import annotations

import gc

import pytest

from relaymd.views.gc_pause import gc_paused


def test_paused_inside_resumed_after_even_on_error() -> None:
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the inner one leaves it to the outermost
    assert gc.isenabled()
    with pytest.raises(ValueError), gc_paused():
        raise ValueError("boom")
    assert gc.isenabled()


def test_leaves_a_collector_the_caller_disabled_off() -> None:
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
