"""The serial path: a fake meter on a pseudo-terminal, read by the logger through pyserial.

The logger opens a symlink in tmp_path, as it would open /dev/serial/by-id/...;
the meter writes telegrams in UART-sized chunks, 20 a second (a real meter
sends one a second: too slow for a test). Unplugging closes the pty and
removes the link; plugging in again makes a new pty behind the same link.
Reconnect waits and the watchdog's clock are injected, so nothing here waits
on more than the meter's own pace.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.fake_meter import (
    DUTCH_DSMR5,
    ManualClock,
    PtyMeter,
    Sleeps,
    clean_environment,
    fixture,
    inject_run,
    paced,
    restamped_series,
    run_argv,
    running,
    wait_for,
)
from helpers.influx_servers import InfluxServer

from p1logger.pipeline import Pipeline

pytestmark = pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs pseudo-terminals (POSIX)")

RECEIVED_AT_S = 1700000000.0
PER_SECOND = 20
DUTCH_T0 = 1541509469  # 2018-11-06 14:04:29 CET, the fixture's own time


@pytest.fixture(autouse=True)
def _hermetic(monkeypatch: pytest.MonkeyPatch) -> None:
    clean_environment(monkeypatch)


@pytest.fixture
def meter(tmp_path: Path) -> Iterator[PtyMeter]:
    pty_meter = PtyMeter(tmp_path / "ttyP1")
    pty_meter.plug()
    yield pty_meter
    pty_meter.close()


def dutch_counts(telegrams: int) -> dict[str, int]:
    """Points in influxd after `telegrams` Dutch DSMR 5 telegrams: 11 each, the gas reading once, one health point."""
    return {"energy": telegrams, "power": 4 * telegrams, "voltage": 3 * telegrams, "current": 3 * telegrams,
            "gas": 1, "p1logger": 1}


def stored_counts(server: InfluxServer, db: str) -> dict[str, int]:
    series = server.query("SHOW MEASUREMENTS", db)["results"][0].get("series", [])
    return {row[0]: server.count(db, row[0]) for s in series for row in s["values"]}


def source_messages(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records
            if r.name == "p1logger.pipeline" and r.getMessage().startswith("source ")]


@pytest.mark.slow
def test_every_telegram_from_the_serial_port_is_stored(
    meter: PtyMeter, influxd: InfluxServer, influx_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    sleeps = Sleeps()
    inject_run(monkeypatch, sleep=sleeps, clock=ManualClock(), wall_clock=lambda: RECEIVED_AT_S)
    telegrams = restamped_series(fixture(DUTCH_DSMR5), 40)

    with running(run_argv(str(meter.link), influxd.url, influx_db, tmp_path / "spool")) as pipeline:
        wait_for(lambda: pipeline.health.source_state == f"reading {meter.link}", "the port to be open")
        paced(telegrams, meter.send, PER_SECOND)
        wait_for(lambda: pipeline.health.telegrams_ok == 40, "40 telegrams")

    assert pipeline.failure is None
    assert pipeline.health.telegrams_rejected == 0
    assert stored_counts(influxd, influx_db) == dutch_counts(40)
    assert [row["time"] for row in influxd.rows(influx_db, "energy")] == [DUTCH_T0 + i for i in range(40)]
    assert source_messages(caplog) == [(logging.INFO, f"source reading {meter.link}")]
    assert sleeps == []


@pytest.mark.slow
def test_unplugged_meter_is_reported_once_and_read_again_after_backoff(
    meter: PtyMeter, influxd: InfluxServer, influx_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    states_while_waiting: list[str] = []
    running_pipeline: list[Pipeline] = []

    def reconnect_wait(calls: int) -> None:
        states_while_waiting.append(running_pipeline[0].health.source_state)
        if calls == 2:
            meter.plug()  # plugged in again during the second wait

    sleeps = Sleeps(reconnect_wait)
    inject_run(monkeypatch, sleep=sleeps, clock=ManualClock(), wall_clock=lambda: RECEIVED_AT_S)
    telegrams = restamped_series(fixture(DUTCH_DSMR5), 20)

    with running(run_argv(str(meter.link), influxd.url, influx_db, tmp_path / "spool")) as pipeline:
        running_pipeline.append(pipeline)
        wait_for(lambda: pipeline.health.source_state == f"reading {meter.link}", "the port to be open")
        paced(telegrams[:10], meter.send, PER_SECOND)
        wait_for(lambda: pipeline.health.telegrams_ok == 10, "the first 10 telegrams")
        meter.unplug()
        wait_for(lambda: meter.plugs == 2 and pipeline.health.source_state == f"reading {meter.link}",
                 "the port to be open again")
        paced(telegrams[10:], meter.send, PER_SECOND)
        wait_for(lambda: pipeline.health.telegrams_ok == 20, "all 20 telegrams")

    assert pipeline.failure is None
    # Reconnect waits double: 1 s after the loss (before trying to open again), 2 s after the failed open.
    assert sleeps == [1.0, 2.0]
    messages = source_messages(caplog)
    assert states_while_waiting == [messages[1][1].removeprefix("source "), messages[2][1].removeprefix("source ")]
    assert messages[0] == (logging.INFO, f"source reading {meter.link}")
    assert messages[1][0] == logging.WARNING and messages[1][1].startswith(f"source lost: lost {meter.link}: ")
    assert messages[2:] == [
        (logging.ERROR, (f"source unavailable: serial device {meter.link} does not exist: "
                         "is the P1 cable plugged in? List devices with: ls -l /dev/serial/by-id/")),
        (logging.INFO, f"source reading {meter.link}"),
    ]
    assert pipeline.health.telegrams_rejected == 0
    assert stored_counts(influxd, influx_db) == dutch_counts(20)
    assert [row["time"] for row in influxd.rows(influx_db, "energy")] == [DUTCH_T0 + i for i in range(20)]


def test_watchdog_reopens_a_port_that_sends_no_valid_telegram(
    meter: PtyMeter, influxd: InfluxServer, influx_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    clock = ManualClock()
    sleeps = Sleeps()
    inject_run(monkeypatch, sleep=sleeps, clock=clock, wall_clock=lambda: RECEIVED_AT_S)
    telegrams = restamped_series(fixture(DUTCH_DSMR5), 6)
    reading = (logging.INFO, f"source reading {meter.link}")

    argv = run_argv(str(meter.link), influxd.url, influx_db, tmp_path / "spool", "--watchdog-s", "5")
    with running(argv) as pipeline:
        wait_for(lambda: pipeline.health.source_state == f"reading {meter.link}", "the port to be open")
        paced(telegrams[:3], meter.send, PER_SECOND)
        wait_for(lambda: pipeline.health.telegrams_ok == 3, "the first 3 telegrams")
        assert source_messages(caplog) == [reading]
        clock.advance(6)
        meter.send(b"\x00\xff" * 32)  # line noise, not a telegram: wakes the reader
        wait_for(lambda: source_messages(caplog).count(reading) == 2, "the port to be reopened")
        paced(telegrams[3:], meter.send, PER_SECOND)
        wait_for(lambda: pipeline.health.telegrams_ok == 6, "all 6 telegrams")

    assert pipeline.failure is None
    assert source_messages(caplog) == [
        reading,
        (logging.WARNING, f"source no valid telegram for 5 s on {meter.link}; reopening"),
        reading,
    ]
    assert sleeps == []  # a watchdog reopen is immediate: the port itself works
    assert stored_counts(influxd, influx_db) == dutch_counts(6)
