"""The queue-aware ETA: simulating time left plus a measured queue wait per handoff."""

from __future__ import annotations

import pytest

from relaymd.views.eta import RECENT_WAITS, estimate_eta, expected_queue_wait, human_span

HOUR = 3600.0


def test_issue_example_41_h_simulating_and_11_handoffs_of_15_min() -> None:
    # 41 h left at 1 step/s; 3.5 h simulate per allocation; the running one has 2.5 h left.
    eta = estimate_eta(int(41 * HOUR), 1.0, 3.5 * HOUR, 2.5 * HOUR, [900.0] * 5)
    assert eta is not None
    assert eta.handoffs == 11  # ceil((41 - 2.5) / 3.5)
    assert eta.queue_wait_s == 900.0
    assert eta.total_s == 41 * HOUR + 11 * 900
    assert eta.basis == "~1 d 19 h: 1 d 17 h simulating + 11 handoffs x ~15 min queue"


def test_waiting_job_pays_a_queue_wait_for_its_next_allocation_too() -> None:
    eta = estimate_eta(7200, 2.0, 4 * HOUR, None, [600.0])
    assert eta is not None
    assert (eta.simulating_s, eta.handoffs, eta.total_s) == (3600.0, 1, 4200.0)


def test_job_finishing_inside_its_segment_has_no_handoff_and_no_queue_in_its_basis() -> None:
    eta = estimate_eta(3600, 1.0, 4 * HOUR, 2 * HOUR, [1200.0])
    assert eta is not None
    assert (eta.handoffs, eta.total_s) == (0, 3600.0)
    assert eta.basis == "~1 h: 1 h simulating"


def test_median_of_recent_waits_ignores_old_ones() -> None:
    old = [10 * HOUR] * 20
    recent = [60.0, 120.0, 600.0, 30.0, 90.0, 300.0, 45.0, 75.0, 100.0, 110.0]
    assert len(recent) == RECENT_WAITS
    assert expected_queue_wait(old + recent) == pytest.approx(95.0)
    assert expected_queue_wait([]) == 0.0


def test_no_rate_means_no_eta_and_no_waits_are_said_so() -> None:
    assert estimate_eta(100, None, HOUR, None, []) is None
    assert estimate_eta(100, 0.0, HOUR, None, []) is None
    eta = estimate_eta(int(10 * HOUR), 1.0, 4 * HOUR, None, [])
    assert eta is not None
    assert eta.basis == "~10 h: 10 h simulating + 3 handoffs x no measured queue"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (40, "40 s"),
        (900, "15 min"),
        (5400, "1 h 30 min"),
        (41 * HOUR, "1 d 17 h"),
        (2 * 86400, "2 d"),
    ],
)
def test_human_span(seconds: float, text: str) -> None:
    assert human_span(seconds) == text
