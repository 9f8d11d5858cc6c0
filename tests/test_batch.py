"""Batcher: exact batch sizes and contents, time-based flushing, order."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p1logger.batch import Batcher
from p1logger.errors import ConfigError


class FakeClock:
    def __init__(self, now_s: float = 1000.0) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


def lines(start: int, count: int) -> list[str]:
    return [f"power,meter=E0043 import_w={i}.0,export_w=0.0 {1589284449 + i}" for i in range(start, start + count)]


def test_small_add_stays_pending_until_taken() -> None:
    batcher = Batcher(max_points=5, clock=FakeClock())

    assert batcher.add(lines(0, 2)) == []
    assert batcher.add(lines(2, 2)) == []
    assert batcher.pending_points == 4
    assert batcher.take() == lines(0, 4)
    assert batcher.pending_points == 0
    assert batcher.take() == []


def test_add_that_fills_a_batch_returns_exactly_it() -> None:
    batcher = Batcher(max_points=3, clock=FakeClock())

    assert batcher.add(lines(0, 3)) == [lines(0, 3)]
    assert batcher.pending_points == 0
    assert batcher.seconds_until_due() is None
    assert batcher.due() is False


def test_large_add_is_split_in_order_and_remainder_stays_pending() -> None:
    batcher = Batcher(max_points=3, clock=FakeClock())

    assert batcher.add(lines(0, 8)) == [lines(0, 3), lines(3, 3)]
    assert batcher.pending_points == 2
    assert batcher.take() == lines(6, 2)


def test_pending_lines_lead_the_next_full_batch() -> None:
    batcher = Batcher(max_points=4, clock=FakeClock())

    assert batcher.add(lines(0, 3)) == []
    # 3 pending + 6 new = 9: two full batches of 4 and one line left over.
    assert batcher.add(lines(3, 6)) == [lines(0, 4), lines(4, 4)]
    assert batcher.pending_points == 1
    assert batcher.take() == lines(8, 1)


def test_due_after_flush_interval_measured_from_oldest_line() -> None:
    clock = FakeClock(1000.0)
    batcher = Batcher(max_points=100, flush_interval_s=1.0, clock=clock)

    assert batcher.seconds_until_due() is None
    batcher.add(lines(0, 1))
    assert batcher.due() is False
    assert batcher.seconds_until_due() == 1.0

    clock.now_s = 1000.5
    batcher.add(lines(1, 1))  # a newer line does not restart the wait
    assert batcher.seconds_until_due() == 0.5
    assert batcher.due() is False

    clock.now_s = 1000.75
    assert batcher.seconds_until_due() == 0.25

    clock.now_s = 1001.0
    assert batcher.due() is True
    assert batcher.seconds_until_due() == 0.0

    clock.now_s = 1005.0
    assert batcher.seconds_until_due() == 0.0
    assert batcher.take() == lines(0, 2)
    assert batcher.due() is False
    assert batcher.seconds_until_due() is None


def test_take_restarts_the_timer() -> None:
    clock = FakeClock(50.0)
    batcher = Batcher(max_points=100, flush_interval_s=2.0, clock=clock)
    batcher.add(lines(0, 1))
    clock.now_s = 53.0
    assert batcher.take() == lines(0, 1)

    clock.now_s = 60.0
    batcher.add(lines(1, 1))
    assert batcher.due() is False
    assert batcher.seconds_until_due() == 2.0


def test_leftover_after_full_batch_waits_from_its_own_arrival() -> None:
    clock = FakeClock(10.0)
    batcher = Batcher(max_points=2, flush_interval_s=1.0, clock=clock)
    batcher.add(lines(0, 1))

    clock.now_s = 10.75
    assert batcher.add(lines(1, 2)) == [lines(0, 2)]
    # The old line left in the full batch; the leftover arrived at 10.75.
    assert batcher.seconds_until_due() == 1.0
    clock.now_s = 11.5
    assert batcher.due() is False
    clock.now_s = 11.75
    assert batcher.due() is True


def test_empty_add_does_not_start_the_timer() -> None:
    clock = FakeClock()
    batcher = Batcher(max_points=10, flush_interval_s=1.0, clock=clock)

    assert batcher.add([]) == []
    clock.now_s += 5.0
    assert batcher.due() is False
    assert batcher.seconds_until_due() is None


def test_zero_interval_is_due_at_once() -> None:
    batcher = Batcher(max_points=10, flush_interval_s=0.0, clock=FakeClock())
    batcher.add(lines(0, 1))

    assert batcher.due() is True
    assert batcher.seconds_until_due() == 0.0


def test_single_str_is_refused() -> None:
    batcher = Batcher(clock=FakeClock())

    with pytest.raises(TypeError, match="not a single str"):
        batcher.add("power import_w=1.0 1")
    assert batcher.pending_points == 0


def test_returned_batches_are_not_shared_with_the_batcher() -> None:
    batcher = Batcher(max_points=2, clock=FakeClock())
    [batch] = batcher.add(lines(0, 3))
    batch.append("tampered")
    taken = batcher.take()
    batcher.add(lines(3, 1))

    assert taken == lines(2, 1)
    assert batcher.take() == lines(3, 1)


@pytest.mark.parametrize("max_points", [0, -1, 1.5, True, "5000"])
def test_bad_max_points_is_a_config_error(max_points: object) -> None:
    with pytest.raises(ConfigError, match="batch size"):
        Batcher(max_points=max_points)  # type: ignore[arg-type]


@pytest.mark.parametrize("interval_s", [-0.5, math.nan])
def test_bad_flush_interval_is_a_config_error(interval_s: float) -> None:
    with pytest.raises(ConfigError, match="flush interval"):
        Batcher(flush_interval_s=interval_s)


@settings(max_examples=200, deadline=None)
@given(
    max_points=st.integers(min_value=1, max_value=7),
    add_sizes=st.lists(st.integers(min_value=0, max_value=20), max_size=12),
)
def test_every_line_comes_out_once_in_order_in_bounded_batches(max_points: int, add_sizes: list[int]) -> None:
    batcher = Batcher(max_points=max_points, clock=FakeClock())
    sent: list[str] = []
    received: list[str] = []
    for size in add_sizes:
        new = lines(len(sent), size)
        sent.extend(new)
        for batch in batcher.add(new):
            assert len(batch) == max_points
            received.extend(batch)
        assert batcher.pending_points < max_points
        assert batcher.pending_points == len(sent) - len(received)
    received.extend(batcher.take())

    assert received == sent
