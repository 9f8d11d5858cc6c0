"""`LineOutput`, the batching, spool and retry every line-protocol output shares, with a scripted destination.

Oldest first, each batch delivered once, the spool holding every batch from
the moment it is cut until it is acknowledged, and a memory queue taking
over when the spool cannot store.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from helpers.fake_meter import wait_for

from p1logger.contracts import WriteKind, WriteResult
from p1logger.outputs.lines import LineOutput, LineOutputSettings
from p1logger.spool import Spool

T0 = 1_600_000_000


class Destination:
    """Takes batches, or refuses them while `down` is set."""

    def __init__(self) -> None:
        self.down = threading.Event()
        self.taken: list[list[str]] = []
        self.refused = 0

    def write(self, lines: Sequence[str], max_attempts: int | None = None) -> WriteResult:
        assert max_attempts == 1  # retries come from the spool, never inside a write
        if self.down.is_set():
            self.refused += 1
            return WriteResult(WriteKind.TRANSIENT, 0, 0, tuple(lines), "down", 1.0)
        self.taken.append(list(lines))
        return WriteResult(WriteKind.OK, len(lines), 0, (), "ok", 1.0)

    def close(self) -> None:
        pass


def point(n: int) -> str:
    return f"power,meter=M import_w={n}.0 {T0 + n}"


def output(tmp_path: Path, destination: Destination, **settings: object) -> LineOutput:
    return LineOutput("test", destination, LineOutputSettings(
        spool_dir=tmp_path / "test", flush_interval_s=0.05, batch_max_points=5, retry_initial_s=0.01,
        retry_max_s=0.02, **settings))  # type: ignore[arg-type]


def times(batches: list[list[str]]) -> list[int]:
    return [int(line.rsplit(" ", 1)[1]) - T0 for batch in batches for line in batch]


def test_a_backlog_and_live_lines_through_an_outage_arrive_oldest_first_each_once(tmp_path: Path) -> None:
    with Spool(tmp_path / "test" / "spool.db") as earlier_run:
        for b in range(3):
            earlier_run.put([point(n) for n in range(5 * b, 5 * b + 5)])
    destination = Destination()
    destination.down.set()
    out = output(tmp_path, destination)
    out.start()
    for n in range(15, 40):
        out.submit_lines([point(n)])
    wait_for(lambda: destination.refused >= 3, "a few refused tries")
    assert out.spool is not None and out.spool.backlog_points == 40  # everything cut is in the spool
    destination.down.clear()
    wait_for(lambda: sum(map(len, destination.taken)) == 40, "everything delivered")
    for n in range(40, 43):
        out.submit_lines([point(n)])
    out.close(None)
    assert times(destination.taken) == list(range(43))
    assert out.counters.state == "up" and out.counters.points_written == 43
    with Spool(tmp_path / "test" / "spool.db") as spool:
        assert spool.backlog_points == 0


def test_batches_the_spool_cannot_store_wait_in_memory_after_the_spooled_ones(tmp_path: Path) -> None:
    destination = Destination()
    destination.down.set()
    out = output(tmp_path, destination)
    assert out.spool is not None
    spool = out.spool
    real_put = spool.put
    refusing = threading.Event()

    def put(lines: Sequence[str], *, drop_on_failure: bool = True) -> int | None:
        return None if refusing.is_set() else real_put(lines, drop_on_failure=drop_on_failure)

    spool.put = put  # type: ignore[method-assign]
    out.start()
    for n in range(10):
        out.submit_lines([point(n)])
    wait_for(lambda: spool.backlog_points == 10, "two batches spooled")
    refusing.set()  # the disk is full from here on
    for n in range(10, 20):
        out.submit_lines([point(n)])
    wait_for(lambda: out.counters.memory_points == 10, "two batches in memory")
    refusing.clear()  # room again: those in memory go to the spool first, then the new ones
    for n in range(20, 25):
        out.submit_lines([point(n)])
    destination.down.clear()
    wait_for(lambda: sum(map(len, destination.taken)) == 25, "everything delivered")
    out.close(None)
    assert times(destination.taken) == list(range(25))
    assert out.counters.points_dropped == 0


def test_once_the_disk_has_room_again_what_waited_in_memory_goes_to_the_spool_first(tmp_path: Path) -> None:
    # A full disk for a moment during a long outage: what waited in memory must not stay there (lost by a kill,
    # dropped once the memory queue is full) while the spool has room again.
    destination = Destination()
    destination.down.set()
    out = output(tmp_path, destination, memory_max_points=10)
    assert out.spool is not None
    spool = out.spool
    real_put = spool.put
    refusing = threading.Event()

    def put(lines: Sequence[str], *, drop_on_failure: bool = True) -> int | None:
        return None if refusing.is_set() else real_put(lines, drop_on_failure=drop_on_failure)

    spool.put = put  # type: ignore[method-assign]
    out.start()
    for n in range(5):
        out.submit_lines([point(n)])
    wait_for(lambda: spool.backlog_points == 5, "one batch spooled")
    refusing.set()
    for n in range(5, 15):
        out.submit_lines([point(n)])
    wait_for(lambda: out.counters.memory_points == 10, "two batches in memory")
    refusing.clear()
    for n in range(15, 35):  # four more batches: twice what the memory queue holds
        out.submit_lines([point(n)])
    wait_for(lambda: spool.backlog_points == 35, "everything in the spool")
    assert (out.counters.memory_points, out.counters.points_dropped) == (0, 0)
    destination.down.clear()
    wait_for(lambda: sum(map(len, destination.taken)) == 35, "everything delivered")
    out.close(None)
    assert times(destination.taken) == list(range(35))
    assert out.counters.points_dropped == 0


def test_a_full_memory_queue_drops_the_oldest_and_counts_them(tmp_path: Path) -> None:
    destination = Destination()
    destination.down.set()
    out = output(tmp_path, destination, durable=False, memory_max_points=10)
    out.start()
    for n in range(20):  # four batches of five; room for two
        out.submit_lines([point(n)])
    wait_for(lambda: out.counters.points_dropped == 10, "two batches dropped")
    destination.down.clear()
    wait_for(lambda: sum(map(len, destination.taken)) == 10, "the newest two delivered")
    out.close(None)
    assert times(destination.taken) == list(range(10, 20))
    assert not (tmp_path / "test").exists()  # a non-durable output made no spool file


class HungPipe(Destination):
    """Standard output whose reader stopped reading: the first write never returns until `release` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.calls = 0

    def write(self, lines: Sequence[str], max_attempts: int | None = None) -> WriteResult:
        self.calls += 1
        self.release.wait(30.0)
        return super().write(lines, max_attempts)


def test_a_stop_while_the_output_hangs_in_a_write_keeps_the_queued_batches_for_the_next_run(tmp_path: Path) -> None:
    pipe = HungPipe()
    out = output(tmp_path, pipe, durable=False, close_grace_s=0.05)
    out.start()
    for n in range(5):
        out.submit_lines([point(n)])
    wait_for(lambda: pipe.calls == 1, "the first write under way")
    for n in range(5, 15):
        out.submit_lines([point(n)])
    out.close(0.05)
    try:
        # The batch in the hung write stays with the thread; the two queued behind it wait in the spool.
        with Spool(tmp_path / "test" / "spool.db") as spool:
            assert spool.backlog_points == 10
            kept = []
            while (batch := spool.oldest()) is not None:
                kept.append(batch.lines)
                spool.ack(batch.id)
        assert times(kept) == list(range(5, 15))
        assert (out.counters.spool_points, out.counters.memory_points, out.counters.points_dropped) == (10, 5, 0)
    finally:
        pipe.release.set()


def test_the_flush_tick_keeps_a_fixed_beat_half_a_beat_from_the_telegrams(tmp_path: Path) -> None:
    """The output thread's tick runs on a fixed beat (a late wake does not shift it), and when lines come
    close to a tick it moves half a beat earlier: the writer's hand-over and the output's cut then never
    meet on the lock, and neither thread wakes twice (docs/performance.md, wake-ups). Driven by hand,
    with a manual clock and no thread."""
    now = [100.0]
    out = LineOutput("test", Destination(), LineOutputSettings(spool_dir=None, flush_interval_s=1.0),
                     clock=lambda: now[0])
    out.submit_lines([point(0)])
    with out._cond:
        out._tick_locked(now[0])  # the thread's first look: half an interval early
        assert out._next_tick_at == 100.5
        now[0] = 100.53  # a late wake
        out._tick_locked(now[0])
        assert out._next_tick_at == 101.5  # the beat, not 101.53
        assert out.counters.memory_points == 1  # cut at the tick
    now[0] = 101.0
    out.submit_lines([point(1)])  # half a beat from the tick: nothing moves
    assert out._next_tick_at == 101.5
    now[0] = 101.4
    out.submit_lines([point(2)])  # a meter whose beat drifted to within 0.2 s of the tick
    assert out._next_tick_at == 101.0  # half a beat earlier: due now, so the thread cuts at once
    with out._cond:
        out._tick_locked(now[0])
        assert out._next_tick_at == 102.0
        assert out.counters.memory_points == 3
    now[0] = 102.4
    out.submit_lines([point(3)])  # the next telegram, a beat later: clear of the tick
    assert out._next_tick_at == 102.0


class SplitDestination(Destination):
    """A destination whose answer can be read later (InfluxDB's HTTP), recording the order of events."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[str] = []
        self._sent: list[str] | None = None

    def write(self, lines: Sequence[str], max_attempts: int | None = None) -> WriteResult:
        self.events.append(f"write {times([list(lines)])}")
        return super().write(lines, max_attempts)

    def begin(self, lines: Sequence[str]) -> None:
        assert self._sent is None, "a second batch sent before the first one's answer was read"
        self.events.append(f"begin {times([list(lines)])}")
        self._sent = list(lines)

    def finish(self) -> WriteResult:
        assert self._sent is not None
        lines, self._sent = self._sent, None
        self.events.append("finish")
        return super().write(lines, 1)


def test_a_live_batch_is_answered_at_the_next_flush_and_an_outage_backlog_is_sent_plainly(tmp_path: Path) -> None:
    destination = SplitDestination()
    out = output(tmp_path, destination)
    out.counters.state = "up"  # as after the first write of a run
    out.start()
    for n in range(3):  # one batch per flush interval, each sent once the one before it was answered
        out.submit_lines([point(n)])
        wait_for(lambda: f"begin [{n}]" in destination.events, f"batch {n} sent")
    destination.down.set()
    out.submit_lines([point(3)])
    wait_for(lambda: destination.refused >= 1, "an answer that says the destination is down")
    for n in range(4, 8):
        out.submit_lines([point(n)])
    wait_for(lambda: destination.refused >= 2, "a retry refused")
    destination.down.clear()
    wait_for(lambda: sum(map(len, destination.taken)) == 8, "everything delivered")
    out.close(None)
    assert times(destination.taken) == list(range(8))
    assert out.counters.points_written == 8 and out.counters.state == "up"
    begun = [event for event in destination.events if event.startswith("begin")]
    assert begun[:4] == ["begin [0]", "begin [1]", "begin [2]", "begin [3]"]
    # Each answer is read before anything else is sent; while the destination was down, and while
    # a backlog drained, batches went plainly, one answer at a time.
    for before, after in zip(destination.events, destination.events[1:]):
        if before.startswith("begin"):
            assert after == "finish"
    assert any(event.startswith("write") for event in destination.events)
    with Spool(tmp_path / "test" / "spool.db") as spool:
        assert spool.backlog_points == 0


def test_batches_a_full_spool_drops_during_an_outage_are_forgotten_as_waiting(tmp_path: Path) -> None:
    destination = Destination()
    destination.down.set()
    tried: set[str] = set()
    refuse = destination.write

    def write(lines: Sequence[str], max_attempts: int | None = None) -> WriteResult:
        tried.add(lines[0])
        return refuse(lines, max_attempts)

    destination.write = write  # type: ignore[method-assign]
    out = output(tmp_path, destination, spool_max_bytes=400)  # room for about three batches
    out.start()
    spool = out.spool
    assert spool is not None

    def oldest_tried() -> bool:
        oldest = spool.oldest()
        return oldest is not None and oldest.lines[0] in tried

    for batch in range(40):
        for n in range(5 * batch, 5 * batch + 5):
            out.submit_lines([point(n)])
        # Once the spool is full, each batch put drops its oldest: the next try is of another batch.
        wait_for(lambda: spool.backlog_points > 0 and oldest_tried(), f"the oldest tried after batch {batch}")
    assert out.spool is not None
    assert out.spool.dropped_points >= 150 and len(tried) >= 30
    # Only batches still in the spool can still be waiting.
    assert len(out._waited) <= out.spool.backlog_batches
    destination.down.clear()
    out.close(None)
    assert out.counters.points_written + out.spool.dropped_points == 200
