"""Pipeline behaviour at the edges, in-process with a fake sink and scripted sources.

Each test here pins a defect found in review: a stop during the final spool
drain, a partial telegram glued to the first one after a reconnect, unreadable
spooled batches missing from the health counters, and a quiet stdin pipe.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from helpers.fake_meter import ManualClock, wait_for

from p1logger.errors import SourceError
from p1logger.outputs.lines import LineOutput, LineOutputSettings
from p1logger.pipeline import Pipeline, PipelineSettings
from p1logger.points import PointBuilder
from p1logger.reader import TelegramReader
from p1logger.contracts import WriteKind, WriteResult
from p1logger.inputs.file import FileSource
from p1logger.spool import Spool
from p1logger.timestamps import TimestampParser

FIXTURES = Path(__file__).parent / "fixtures"
TELEGRAM = (FIXTURES / "wassasin_dsmr5__kaifa_dsmr42.txt").read_bytes()
BRUSSELS = ZoneInfo("Europe/Brussels")


class FakeSink:
    """Stores every line; can run a hook on each write."""

    def __init__(self) -> None:
        self.writes: list[list[str]] = []
        self.on_write = lambda: None

    def write(self, lines: Sequence[str], max_attempts: int | None = None) -> WriteResult:
        self.writes.append(list(lines))
        self.on_write()
        return WriteResult(WriteKind.OK, len(lines), 0, (), "ok", 1.0)

    def close(self) -> None:
        pass


class ScriptedSource:
    """Hands out the given chunks; an exception in the script is raised instead."""

    def __init__(self, script: list[bytes | BaseException]) -> None:
        self.script = script
        self.description = "scripted"

    def read(self) -> bytes:
        if not self.script:
            raise EOFError
        step = self.script.pop(0)
        if isinstance(step, BaseException):
            raise step
        return step

    def close(self) -> None:
        pass


def make_output(tmp_path: Path, sink: FakeSink, clock: Callable[[], float] = time.monotonic) -> LineOutput:
    return LineOutput("test", sink, LineOutputSettings(spool_dir=tmp_path / "test", retry_initial_s=0.01,
                                                       retry_max_s=0.01), clock=clock)


def make_pipeline(tmp_path: Path, sources: list[ScriptedSource], sink: FakeSink) -> Pipeline:
    timestamps = TimestampParser(BRUSSELS)
    return Pipeline(
        open_source=lambda: sources.pop(0),
        reader=TelegramReader(timestamps),
        builders=[PointBuilder(BRUSSELS)],
        outputs=[make_output(tmp_path, sink)],
        settings=PipelineSettings(instance="test"),
        sleep=lambda seconds: None,
        wall_clock=lambda: 1_700_000_000.0,
    )


def spooled(spool: Spool, batches: int, lines_per_batch: int = 3) -> None:
    for b in range(batches):
        spool.put([f"power,meter=x import_w={b}.{i} {1_600_000_000 + b * 10 + i}" for i in range(lines_per_batch)])


def test_a_stop_ends_the_final_drain_at_its_budget(tmp_path: Path) -> None:
    sink = FakeSink()
    clock = ManualClock()
    output = make_output(tmp_path, sink, clock)
    assert output.spool is not None
    spooled(output.spool, 50)
    in_first_write, go = threading.Event(), threading.Event()

    def each_write_takes_60_ms() -> None:
        if len(sink.writes) == 1:
            in_first_write.set()
            go.wait(10)
        clock.advance(0.06)

    sink.on_write = each_write_takes_60_ms
    output.start()
    assert in_first_write.wait(10)
    closer = threading.Thread(target=output.close, args=(0.1,))  # a stop request: a budget of 100 ms
    closer.start()
    wait_for(lambda: output._closing, "the close to begin")
    go.set()
    closer.join(10)
    # The write in hand, and one more within the budget; the rest stays spooled.
    assert len(sink.writes) == 2
    with Spool(tmp_path / "test" / "spool.db") as spool:
        assert spool.backlog_batches == 48


def test_without_a_stop_the_final_drain_empties_the_spool(tmp_path: Path) -> None:
    sink = FakeSink()
    output = make_output(tmp_path, sink)
    assert output.spool is not None
    spooled(output.spool, 50)
    output.start()
    output.close(None)  # a file source is done: send everything while it is taken
    assert len(sink.writes) == 50
    with Spool(tmp_path / "test" / "spool.db") as spool:
        assert spool.backlog_batches == 0


def test_a_partial_telegram_before_a_reconnect_does_not_cost_the_next_one(tmp_path: Path) -> None:
    half = TELEGRAM[: len(TELEGRAM) // 2]
    sources = [
        ScriptedSource([half, SourceError("lost scripted: the adapter was unplugged")]),
        ScriptedSource([TELEGRAM]),
    ]
    sink = FakeSink()
    pipeline = make_pipeline(tmp_path, sources, sink)
    pipeline.start()
    assert pipeline.wait(30)
    pipeline.join(30)
    assert pipeline.failure is None
    assert (pipeline.health.telegrams_ok, pipeline.health.telegrams_rejected) == (1, 0)
    written = [line for batch in sink.writes for line in batch]
    assert sum(1 for line in written if line.startswith("energy,")) == 1


def test_spooled_batches_that_cannot_be_read_back_are_counted_as_dropped(tmp_path: Path) -> None:
    sink = FakeSink()
    output = make_output(tmp_path, sink)
    assert output.spool is not None
    spooled(output.spool, 3, lines_per_batch=7)
    with sqlite3.connect(tmp_path / "test" / "spool.db") as other:
        first_id = other.execute("SELECT MIN(id) FROM batches").fetchone()[0]
        other.execute("UPDATE batches SET payload = ? WHERE id = ?", (b"\x00garbage", first_id))
    output.start()
    output.close(None)
    assert output.counters.points_dropped == 7
    assert output.counters.spool_points == 0
    assert sum(len(batch) for batch in sink.writes) == 14


@pytest.mark.skipif(sys.platform == "win32", reason="select() on pipes is POSIX")
def test_stdin_hands_over_what_arrived_without_waiting_for_64_kib(monkeypatch: pytest.MonkeyPatch) -> None:
    read_end, write_end = os.pipe()
    stdin = os.fdopen(read_end, "r")
    monkeypatch.setattr(sys, "stdin", stdin)
    try:
        source = FileSource("-", stdin_wait_s=0.05)
        # Nothing yet: a quiet pipe returns b"" instead of blocking, so a stop can be seen.
        assert source.read() == b""
        os.write(write_end, TELEGRAM)
        assert source.read() == TELEGRAM
        os.close(write_end)
        with pytest.raises(EOFError):
            source.read()
    finally:
        stdin.close()


def test_a_quiet_stdin_pipe_does_not_keep_run_from_stopping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    read_end, write_end = os.pipe()
    stdin = os.fdopen(read_end, "r")
    monkeypatch.setattr(sys, "stdin", stdin)
    sink = FakeSink()
    pipeline = make_pipeline(tmp_path, [], sink)
    pipeline.open_source = lambda: FileSource("-", stdin_wait_s=0.05)
    os.write(write_end, TELEGRAM)  # one telegram, then the pipe stays open and quiet
    try:
        pipeline.start()
        stored = threading.Event()
        for _ in range(200):
            if pipeline.health.telegrams_ok == 1:
                stored.set()
                break
            pipeline.stop_event.wait(0.05)
        assert stored.is_set()
        pipeline.stop()
        assert pipeline.wait(5), "run kept waiting on a quiet pipe after a stop"
        pipeline.join(5)
    finally:
        os.close(write_end)
        stdin.close()
    written = [line for batch in sink.writes for line in batch]
    assert sum(1 for line in written if line.startswith("energy,")) == 1
