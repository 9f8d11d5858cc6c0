"""Paced reads: once the meter's beat is measured, each telegram costs the reader one wake-up.

A virtual serial line delivers each telegram byte by byte at the line's rate, starting on the meter's
beat; its clock moves only when the reader sleeps or blocks, so these tests run in no real time and
count every wake-up exactly. Whatever the beat does (drifts, jitters, stops), every byte must come
through in order: pacing may cost wake-ups, never data.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from helpers.fake_meter import BELGIAN_3PH, fixture

from p1logger.config import SerialSettings
from p1logger.inputs.serial import (
    PROBE_GROWS_AFTER,
    PROBE_S,
    TAIL_COMPLETE,
    TAIL_EMPTY,
    TAIL_PARTIAL,
    LinePacer,
    SerialSource,
    tail_state,
    telegram_ends,
)

S_PER_BYTE = 10 / 115200
TELEGRAM = fixture(BELGIAN_3PH)


@dataclass
class VirtualLine:
    """A serial port whose bytes arrive on a schedule, against a clock that only the reader moves."""

    telegrams: Sequence[bytes]
    starts_s: Sequence[float]
    s_per_byte: float = S_PER_BYTE
    timeout: float = 1.0
    now_s: float = 0.0
    taken: int = 0
    wakeups: int = 0
    returned_at: list[tuple[float, int]] = field(default_factory=list)  # (time, bytes taken so far)
    # How late each blocking read that waits for a byte returns after it arrived, in turn (a reader woken
    # late on a busy machine); then on time.
    wake_delays_s: Sequence[float] = ()
    blocking_waits: int = 0

    def __post_init__(self) -> None:
        self.stream = b"".join(self.telegrams)
        self.arrival_s: list[float] = []
        for telegram, start in zip(self.telegrams, self.starts_s):
            self.arrival_s.extend(start + (i + 1) * self.s_per_byte for i in range(len(telegram)))

    def arrived(self) -> int:
        low, high = self.taken, len(self.arrival_s)
        while low < high:  # the first byte not yet arrived
            mid = (low + high) // 2
            if self.arrival_s[mid] <= self.now_s:
                low = mid + 1
            else:
                high = mid
        return low

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.wakeups += 1
            self.now_s += seconds

    def clock(self) -> float:
        return self.now_s

    @property
    def in_waiting(self) -> int:
        return self.arrived() - self.taken

    def read(self, size: int = 1) -> bytes:
        if size == 0:
            return b""
        if self.timeout and self.in_waiting == 0:
            # A blocking read sleeps until the next byte or the timeout.
            self.wakeups += 1
            nxt = self.arrival_s[self.taken] if self.taken < len(self.arrival_s) else None
            if nxt is None or nxt > self.now_s + self.timeout:
                self.now_s += self.timeout
                return b""
            delays = self.wake_delays_s
            self.now_s = nxt + (delays[self.blocking_waits] if self.blocking_waits < len(delays) else 0.0)
            self.blocking_waits += 1
        size = min(size, self.in_waiting)
        data = self.stream[self.taken:self.taken + size]
        self.taken += size
        return data

    def close(self) -> None:
        pass


def read_all(line: VirtualLine, until_s: float) -> bytes:
    source = SerialSource("loop://", SerialSettings(), read_timeout_s=line.timeout, sleep=line.sleep, clock=line.clock)
    source._port.close()
    source._port = line  # type: ignore[assignment]
    got = bytearray()
    while line.now_s < until_s and line.taken < len(line.stream):
        got += source.read()
        line.returned_at.append((line.now_s, line.taken))
    return bytes(got)


def latencies_s(line: VirtualLine) -> list[float]:
    """For each telegram, how long after its last byte arrived the reader returned it."""
    ends, total = [], 0
    for telegram in line.telegrams:
        total += len(telegram)
        ends.append((total, line.arrival_s[total - 1]))
    result = []
    for end, arrived_at in ends:
        returned = next((t for t, taken in line.returned_at if taken >= end), None)
        if returned is not None:
            result.append(returned - arrived_at)
    return result


def beat(count: int, period_s: float, jitter_s: float = 0.0, first_s: float = 0.3, seed: int = 1) -> list[float]:
    rng = random.Random(seed)
    return [first_s + k * period_s + rng.uniform(-jitter_s, jitter_s) for k in range(count)]


def run_line(starts: Sequence[float], telegram: bytes = TELEGRAM, **line_options: Any) -> tuple[VirtualLine, bytes]:
    line = VirtualLine([telegram] * len(starts), starts, **line_options)
    return line, read_all(line, until_s=starts[-1] + 5.0)


def test_a_steady_one_second_meter_costs_one_wakeup_per_telegram() -> None:
    short, _ = run_line(beat(100, 1.0))
    line, got = run_line(beat(300, 1.0))
    assert got == line.stream
    # Measuring the beat costs the first telegrams two or three wake-ups; then one each, plus a read
    # inside a telegram every dozen or so (each paced read comes 2 ms earlier than the last) that
    # measures the beat again. The same first 100 telegrams cost the same: the difference is steady state.
    assert (line.wakeups - short.wakeups) / 200 <= 1.1, (short.wakeups, line.wakeups)
    assert line.wakeups <= 300 * 1.15
    assert max(latencies_s(line)) < 0.05


@pytest.mark.parametrize("period_s", [0.999, 1.001, 10.0, 9.99])
def test_a_beat_that_drifts_from_the_estimate_still_loses_nothing(period_s: float) -> None:
    line, got = run_line(beat(200, period_s))
    assert got == line.stream
    # Plus, for a 10 s beat, the blocking reads (one a second) of the third telegram that confirms it.
    assert line.wakeups <= 200 * 1.2 + period_s / line.timeout, line.wakeups
    assert max(latencies_s(line)) < 0.05 + 0.002 * period_s


def test_a_jittery_dongle_costs_wakeups_not_data() -> None:
    line, got = run_line(beat(300, 1.0, jitter_s=0.03))
    assert got == line.stream
    assert line.wakeups <= 300 * 1.2, line.wakeups
    # A beat first measured over one jittery second is trusted less: reads come earlier until it is
    # measured over more, so no telegram waits for the next.
    assert max(latencies_s(line)) < 0.1


def test_a_meter_that_pauses_is_read_blocking_until_its_beat_returns() -> None:
    starts = beat(30, 1.0) + [t + 60.0 for t in beat(30, 1.0, first_s=30.0)]
    line, got = run_line(starts)
    assert got == line.stream
    # During the 60 s pause the reader wakes once per read timeout, as an unpaced one would.
    assert line.wakeups <= 60 * 1.3 + 60, line.wakeups
    assert max(latencies_s(line)) < 0.05


def test_a_beat_faster_than_half_a_second_is_not_paced() -> None:
    line, got = run_line(beat(100, 0.2))
    assert got == line.stream
    assert line.wakeups == 201  # first byte, then the rest, as before pacing (the first telegram waits once more)


def test_tail_state_tells_whole_partial_and_nothing() -> None:
    assert tail_state(b"") == TAIL_EMPTY
    assert tail_state(TELEGRAM) == TAIL_COMPLETE
    assert tail_state(TELEGRAM[:-3]) == TAIL_PARTIAL  # the CRC line cut short
    assert tail_state(TELEGRAM + TELEGRAM[:40]) == TAIL_PARTIAL
    assert tail_state(b"/ISK5\\2M550T-1012\r\n\r\n1-3:0.2.8(50)\r\n!\r\n") == TAIL_COMPLETE  # DSMR 2.2: no CRC
    assert telegram_ends(TELEGRAM + TELEGRAM) == 2


def test_the_pacer_learns_the_beat_from_anchored_reads() -> None:
    pacer = LinePacer(S_PER_BYTE)
    pacer.anchored(TELEGRAM, 10.0)  # the telegram started at 10.0 (its first byte's read returned then)
    assert pacer.period_s is None and pacer.next_read_at is None
    settle_s = len(TELEGRAM) * S_PER_BYTE * 1.1 + 0.02
    assert pacer.settle_s == pytest.approx(settle_s)
    pacer.anchored(TELEGRAM, 11.0)
    assert pacer.period_s is None and pacer.next_read_at is None  # one beat: not trusted yet
    pacer.anchored(TELEGRAM, 12.0)
    assert pacer.period_s == pytest.approx(1.0)
    assert pacer.next_read_at == pytest.approx(13.0 + settle_s)  # just after the next one should have ended
    pacer.paced(TELEGRAM)  # measured over two beats: 30 ms earlier, and the 2 ms probe
    assert pacer.next_read_at == pytest.approx(13.0 + settle_s + 1.0 - 0.03 - 0.002)
    pacer.anchored(TELEGRAM, 14.0)  # a read inside a telegram: four beats since the first
    assert pacer.period_s == pytest.approx(1.0)
    assert pacer.next_read_at == pytest.approx(15.0 + settle_s)
    pacer.paced(TELEGRAM)
    assert pacer.next_read_at == pytest.approx(15.0 + settle_s + 1.0 - 0.06 / 4 - 0.002)
    pacer.anchored(TELEGRAM, 17.5)  # a new beat, or a pause: measure it afresh
    assert pacer.period_s is None and pacer.next_read_at is None
    pacer.paced(TELEGRAM + TELEGRAM)  # two at once: measure again
    assert pacer.next_read_at is None
    assert pacer.rest_s(TELEGRAM[:200]) == pytest.approx(pacer.settle_s - 200 * S_PER_BYTE * 1.1)




@pytest.mark.parametrize(("period_s", "missing"), [(1.0, 50), (10.0, 30)])
def test_a_skipped_telegram_does_not_leave_the_reads_late(period_s: float, missing: int) -> None:
    # A meter that skips one telegram (or a dongle that drops one): the beat is measured again, not
    # over a run that counts the skipped beat as none (which read ever later, up to a whole beat).
    starts = beat(400 if period_s == 1.0 else 200, period_s)
    del starts[missing]
    line, got = run_line(starts)
    assert got == line.stream
    assert max(latencies_s(line)) < 0.05 + 0.002 * period_s


def test_a_meter_whose_phase_moves_is_read_on_its_new_phase() -> None:
    starts = beat(100, 1.0) + [t + 0.5 for t in beat(300, 1.0, first_s=100.3)]
    line, got = run_line(starts)
    assert got == line.stream
    assert max(latencies_s(line)) < 0.05


@pytest.mark.parametrize("late_s", [0.07, 0.13, 0.3])
def test_a_beat_measured_too_long_does_not_leave_the_reads_ever_later(late_s: float) -> None:
    # At start-up the reader may be woken late for a telegram's first byte (imports, the first
    # connection). A beat measured from two telegrams, the second woken ``late_s`` late, was that much
    # too long: each paced read came later than the last, every telegram found whole, nothing to correct
    # the beat, until the reads fell a whole telegram behind (seen in the footprint benchmark: 35 ms later
    # per telegram, for 24 telegrams). A first beat is now trusted over two beats that agree, and reads
    # that keep finding whole telegrams come ever earlier, so no telegram but the late one waits.
    line, got = run_line(beat(120, 1.0), wake_delays_s=[0.0, late_s])
    assert got == line.stream
    latencies = latencies_s(line)
    # The late one: woken late_s after its first byte came, then the settle wait (its time on the line, a
    # tenth more, and 20 ms).
    assert latencies[1] == pytest.approx(late_s + S_PER_BYTE + len(TELEGRAM) * S_PER_BYTE * 0.1 + 0.02)
    others = latencies[:1] + latencies[2:]
    assert max(others) < 0.1, [round(x, 3) for x in latencies[:30]]
    assert max(latencies[15:]) < 0.05, [round(x, 3) for x in latencies[:30]]
    assert line.wakeups <= 120 * 1.2, line.wakeups


def test_a_first_beat_with_one_late_start_is_not_trusted_until_two_beats_agree() -> None:
    pacer = LinePacer(S_PER_BYTE)
    for start_at in (10.0, 11.3, 12.0):  # the second read woken 0.3 s late: beats of 1.3 and 0.7
        pacer.anchored(TELEGRAM, start_at)
    assert pacer.period_s is None and pacer.next_read_at is None
    pacer.anchored(TELEGRAM, 13.0)  # over three beats 1.0, and the last beat 1.0 too
    assert pacer.period_s == pytest.approx(1.0)
    assert pacer.next_read_at == pytest.approx(14.0 + pacer.settle_s)


def test_reads_that_keep_finding_whole_telegrams_come_ever_earlier() -> None:
    pacer = LinePacer(S_PER_BYTE)
    for start_at in (10.0, 11.0, 12.0):
        pacer.anchored(TELEGRAM, start_at)
    steps = []
    for _ in range(PROBE_GROWS_AFTER + 8):
        before = pacer.next_read_at
        assert before is not None
        pacer.paced(TELEGRAM)
        assert pacer.next_read_at is not None
        steps.append(round(1.0 - 0.03 - (pacer.next_read_at - before), 6))  # how much earlier than the beat
    cap = round(pacer.settle_s / 2, 6)
    assert steps == [PROBE_S] * PROBE_GROWS_AFTER + [min(cap, PROBE_S * 2 ** k) for k in range(1, 9)]
    assert steps[-1] == cap  # never more than half a telegram's time on the line: the next read lands inside it
    beats = 2 + len(steps) + 1  # since the telegram at 10.0
    pacer.anchored(TELEGRAM, 10.0 + beats)  # a read that waited on the line: back to the small probe
    pacer.paced(TELEGRAM)
    assert pacer.next_read_at == pytest.approx(11.0 + beats + pacer.settle_s + 1.0 - 0.06 / beats - PROBE_S)


def test_a_jittery_first_beat_is_trusted_by_the_fifth_telegram() -> None:
    # A WiFi dongle on a 10 s meter: no beat agrees with the mean within 40 ms, but over four beats a
    # start's jitter is a quarter of it, and blocking reads cost a wake-up a second meanwhile.
    pacer = LinePacer(S_PER_BYTE)
    for start_at in (10.0, 20.06, 29.96, 40.05):
        pacer.anchored(TELEGRAM, start_at)
        assert pacer.period_s is None
    pacer.anchored(TELEGRAM, 49.97)
    assert pacer.period_s == pytest.approx((49.97 - 10.0) / 4)
