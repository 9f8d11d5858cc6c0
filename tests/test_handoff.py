"""The reader's hand-off to the writer: a ring only when the writer would not wake by itself in time.

`Handoff` is pure and takes the time from its callers, so each ordering of the two threads is played out
here with plain numbers. The last test runs a real pipeline on a paced source: every telegram arrives once
and in order, whether it was rung for or found by a writer that woke by itself.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from zoneinfo import ZoneInfo

import pytest
from helpers.fake_meter import fixture, restamped_series, wait_for

from p1logger.contracts import Record
from p1logger.pipeline import HANDOFF_MARGIN_S, HANDOFF_SLACK_S, Handoff, Pipeline, PipelineSettings
from p1logger.points import PointBuilder
from p1logger.reader import TelegramReader
from p1logger.timestamps import TimestampParser

HEALTH_TIMEOUT_S = 12.0


def test_without_a_beat_the_writer_sleeps_until_rung_and_the_reader_always_rings() -> None:
    handoff = Handoff()
    handoff.expect(100.0, None)
    assert handoff.writer_sleeps(100.001, HEALTH_TIMEOUT_S) == HEALTH_TIMEOUT_S
    assert handoff.should_ring(100.002)


def test_on_a_beat_the_writer_wakes_after_the_next_read_and_the_reader_does_not_ring() -> None:
    handoff = Handoff()
    handoff.expect(100.0, 0.95)  # the reader read at 100.0; its next paced read is at 100.95
    expected_at = 100.95 + HANDOFF_SLACK_S
    assert handoff.writer_sleeps(100.004, HEALTH_TIMEOUT_S) == expected_at - 100.004
    # The reader reads at 100.95 and queues the telegram 3 ms later: the writer, waking at 100.98, finds it.
    assert not handoff.should_ring(100.953)
    # A reader that hands over within the margin of the writer's own wake-up rings, in case it is too late.
    assert handoff.should_ring(expected_at - HANDOFF_MARGIN_S)
    assert handoff.should_ring(expected_at + 0.5)


def test_a_writer_that_woke_to_nothing_waits_to_be_rung() -> None:
    handoff = Handoff()
    handoff.expect(100.0, 0.95)
    handoff.writer_sleeps(100.004, HEALTH_TIMEOUT_S)
    # It woke at 100.98 and the reader, late, has not read yet: the expected time is past, so it sleeps
    # until rung (or the health tick), and the reader's late telegram rings.
    assert handoff.writer_sleeps(100.981, HEALTH_TIMEOUT_S) == HEALTH_TIMEOUT_S
    assert handoff.should_ring(101.2)


def test_a_beat_longer_than_the_health_tick_leaves_the_health_tick_in_charge() -> None:
    handoff = Handoff()
    handoff.expect(100.0, 9.9)  # DSMR 4: every 10 s
    assert handoff.writer_sleeps(100.004, 4.0) == 4.0
    assert handoff.should_ring(109.91)


def test_a_reader_that_lost_its_beat_is_rung_for_again() -> None:
    handoff = Handoff()
    handoff.expect(100.0, 0.95)
    handoff.writer_sleeps(100.004, HEALTH_TIMEOUT_S)
    assert not handoff.should_ring(100.953)
    handoff.expect(100.953, None)  # the next read found two telegrams: reads block until the beat is found
    assert handoff.writer_sleeps(100.99, HEALTH_TIMEOUT_S) == HEALTH_TIMEOUT_S
    assert handoff.should_ring(101.5)


def test_a_writer_that_is_awake_is_rung_for_even_before_the_time_it_had_set() -> None:
    handoff = Handoff()
    handoff.expect(100.0, 0.95)
    handoff.writer_sleeps(100.004, HEALTH_TIMEOUT_S)  # to wake at 100.98
    handoff.writer_woke()  # early, by a ring left over from before
    # Awake, it may go back to sleep any moment, for the next read's time: a telegram queued now rings.
    assert handoff.should_ring(100.5)


def test_a_late_readers_telegram_is_rung_for_when_the_writer_sleeps_between_its_read_and_hand_off() -> None:
    """The writer woke by itself at 100.98 to nothing; the reader, late, reads at 101.0 and hands over."""
    handoff = Handoff()
    handoff.expect(100.0, 0.95)
    handoff.writer_sleeps(100.004, HEALTH_TIMEOUT_S)
    handoff.writer_woke()  # 100.98, the queue is empty
    # The interpreter lock passes to the writer between the reader's read and its hand-off: the writer goes
    # back to sleep. The reader has not yet said when its next read comes, so the writer sleeps until rung.
    assert handoff.writer_sleeps(100.985, HEALTH_TIMEOUT_S) == HEALTH_TIMEOUT_S
    assert handoff.should_ring(101.003)
    handoff.expect(101.003, 0.95)  # after the hand-off: the next read's time
    handoff.writer_woke()
    assert handoff.writer_sleeps(101.004, HEALTH_TIMEOUT_S) == 101.953 + HANDOFF_SLACK_S - 101.004


class WatchedHandoff(Handoff):
    """The pipeline's hand-off, noting each ring decision and letting the source wait for the writer to sleep."""

    def __init__(self) -> None:
        super().__init__()
        self.rings: list[bool] = []
        self.writer_asleep = threading.Event()

    def should_ring(self, now: float) -> bool:
        ring = super().should_ring(now)
        self.rings.append(ring)
        return ring

    def writer_sleeps(self, now: float, timeout_s: float) -> float:
        sleep_s = super().writer_sleeps(now, timeout_s)
        self.writer_asleep.set()
        return sleep_s


class PacedSource:
    """One telegram per read, each once the writer has gone to sleep, saying when its next read comes."""

    description = "paced test source"
    live = True

    def __init__(self, telegrams: list[bytes], next_read_in_s: float, handoff: WatchedHandoff) -> None:
        self._telegrams = list(telegrams)
        self._next_read_in_s = next_read_in_s
        self._handoff = handoff

    def next_data_in_s(self) -> float | None:
        return self._next_read_in_s

    def read(self) -> bytes:
        if not self._handoff.writer_asleep.wait(0.5) or not self._telegrams:
            return b""  # as a serial read that times out: the pipeline reads again, or sees a stop request
        self._handoff.writer_asleep.clear()
        return self._telegrams.pop(0)

    def close(self) -> None:
        pass


class Collected:
    name = "collected"

    def __init__(self) -> None:
        self.records: list[Record] = []

    def start(self) -> None:
        pass

    def submit(self, record: Record) -> None:
        self.records.append(record)

    def submit_health(self, snapshot: Mapping[str, object], lines: Sequence[str]) -> None:
        pass

    def observe_raw(self, raw: bytes, valid: bool, received_at_s: float) -> None:
        pass

    def close(self, budget_s: float | None) -> None:
        pass

    def health(self) -> Mapping[str, object]:
        return {}


@pytest.mark.slow  # real threads on real time (about 1 s), as a meter's beat is; nothing is timed
def test_a_paced_source_delivers_every_telegram_once_and_in_order_mostly_unrung() -> None:
    telegrams = restamped_series(fixture("ndokter_dsmr_parser__fluvius_v171.txt"), 20)
    output = Collected()
    pipeline = Pipeline(open_source=lambda: source, reader=TelegramReader(TimestampParser("Europe/Brussels")),
                        builders=[PointBuilder(ZoneInfo("Europe/Brussels"))], outputs=[output],
                        settings=PipelineSettings(watchdog_s=3600.0))
    handoff = pipeline._handoff = WatchedHandoff()  # noqa: SLF001 - watching the decisions of the real threads
    # Each read comes once the writer sleeps, 50 ms before the writer's own wake-up (plus the slack).
    source = PacedSource(telegrams, next_read_in_s=0.05, handoff=handoff)
    pipeline.start()
    try:
        wait_for(lambda: len(output.records) == len(telegrams), "every telegram at the output")
    finally:
        pipeline.stop()
        pipeline.join(10.0)
    assert [record.telegram.raw for record in output.records] == telegrams
    assert pipeline.health.telegrams_ok == len(telegrams)
    # The first telegram is rung for (the writer slept with no beat known yet); after it, a hand-off rings
    # only if this machine stalled the reader for 70 ms, which does not happen to every one of them.
    assert handoff.rings[0] is True and len(handoff.rings) == len(telegrams)
    assert handoff.rings.count(False) >= 1
