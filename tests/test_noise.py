"""Bounded noise: a trouble that lasts is logged at a bounded rate, counted, and costs bounded work.

A field-type conflict on every write (real influxd 1.x), a health state that
cannot be written, a writer that falls behind a live meter: each says so once,
then at most once a minute with what happened in between.
"""

from __future__ import annotations

import logging
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from helpers.fake_meter import DUTCH_DSMR5, ManualClock, fixture, restamped_series
from helpers.influx_servers import InfluxServer

from p1logger.contracts import WriteKind
from p1logger.outputs.influx.sink import DEAD_LETTER_LINES_PER_INTERVAL, InfluxSink
from p1logger.outputs.influx.target import InfluxTarget
from p1logger.pipeline import Pipeline, PipelineSettings
from p1logger.points import PointBuilder
from p1logger.reader import TelegramReader
from p1logger.timestamps import TimestampParser

T0 = 1700000000
BRUSSELS = ZoneInfo("Europe/Brussels")


def conflicting_batch(n: int) -> list[str]:
    """Ten points; the fifth gives import_w as an integer where the database has floats."""
    return [f"power,meter=M,n={n} import_w={'5i' if i == 4 else f'{i}.5'} {T0 + 10 * n + i}" for i in range(10)]


def test_a_persistent_field_type_conflict_is_summed_up_per_minute_and_bisected_only_while_kept(
    influxd: InfluxServer, influx_db: str, dead_letter_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="p1logger.outputs.influx.sink")
    clock = ManualClock()
    target = InfluxTarget(url=influxd.url, api="v1", org="", bucket=influx_db, timeout_s=5.0)
    sink = InfluxSink(target, dead_letter_path=dead_letter_path, max_attempts=1, clock=clock)
    posts: list[int] = []
    post = sink.transport.post
    sink.transport.post = lambda lines: posts.append(len(lines)) or post(lines)  # type: ignore[method-assign]
    assert sink.write([f"power,meter=M import_w=1.5 {T0 - 1}"]).ok

    requests_per_write = []
    for n in range(100):  # a write a second for 100 s
        before = len(posts)
        result = sink.write(conflicting_batch(n))
        requests_per_write.append(len(posts) - before)
        assert (result.kind, result.points_written, result.points_rejected) == (WriteKind.REJECTED, 9, 1)
        clock.advance(1.0)
    sink.close()

    # Stored: everything but the conflicting points, each once.
    assert influxd.count(influx_db, "power") == 1 + 100 * 9
    # The dead-letter file keeps the first 20 of each minute, each found by bisecting; past that the
    # server's "dropped=1" is counted without bisecting: one request per write.
    dead = [line for line in dead_letter_path.read_text().splitlines() if not line.startswith("#")]
    assert len(dead) == 2 * DEAD_LETTER_LINES_PER_INTERVAL
    assert dead[0] == conflicting_batch(0)[4] and dead[20] == conflicting_batch(60)[4]
    assert all(count > 1 for count in requests_per_write[:20] + requests_per_write[60:80])
    assert requests_per_write[20:60] == [1] * 40 and requests_per_write[80:] == [1] * 20
    # Logged: once at once, then one summary a minute (and the rest when the sink closes).
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3, warnings
    assert warnings[0].startswith("InfluxDB rejected 1 of 10 points (partial write: field type conflict")
    assert warnings[1].startswith("InfluxDB rejected 60 more points in 60 writes in the last 60 s")
    assert warnings[2].startswith("InfluxDB rejected 39 more points in 39 writes in the last 40 s")


class NoSource:
    description = "none"

    def read(self) -> bytes:
        raise EOFError

    def close(self) -> None:
        pass


def quiet_pipeline(tmp_path: Path, clock: ManualClock, **settings: object) -> Pipeline:
    return Pipeline(open_source=NoSource, reader=TelegramReader(TimestampParser(BRUSSELS)),
                    builders=[PointBuilder(BRUSSELS)], outputs=[], settings=PipelineSettings(**settings),  # type: ignore[arg-type]
                    clock=clock, wall_clock=lambda: float(T0))


def test_a_health_state_that_cannot_be_written_is_said_once_a_minute(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="p1logger.pipeline")
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the state directory should be")
    clock = ManualClock()
    pipeline = quiet_pipeline(tmp_path, clock, state_dir=blocker / "state")
    for _ in range(30):  # every 10 s for 5 minutes
        pipeline._health_tick()
        clock.advance(10.0)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 5
    assert all(m.startswith(f"cannot write the health state in {blocker / 'state'}:") for m in messages)
    assert [m.rsplit("(", 1)[1] for m in messages] == ["1 times since the last message)"] + \
        ["6 times since the last message)"] * 4


def test_queue_full_drops_are_counted_and_logged_at_a_bounded_rate(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="p1logger.pipeline")
    clock = ManualClock()
    pipeline = quiet_pipeline(tmp_path, clock, queue_max_telegrams=5)
    reader = TelegramReader(TimestampParser(BRUSSELS))
    telegrams = [item for raw in restamped_series(fixture(DUTCH_DSMR5), 3) for item in reader.feed(raw)]
    for n in range(125):  # a writer that never takes: 120 drops, over two minutes
        pipeline._enqueue(telegrams[n % 3], float(T0 + n), blocking=False)  # type: ignore[arg-type]
        clock.advance(1.0)
    pipeline._log_queue_drops(force=True)
    assert pipeline.health.telegrams_dropped == 120
    assert pipeline.queue.qsize() == 5
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "the writer is behind: dropped the oldest 1 telegrams from its full queue of 5 (1 since start)",
        "the writer is behind: dropped the oldest 60 telegrams from its full queue of 5 (61 since start)",
        "the writer is behind: dropped the oldest 59 telegrams from its full queue of 5 (120 since start)",
    ]
