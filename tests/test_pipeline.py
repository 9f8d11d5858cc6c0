"""``p1logger run`` end to end, in-process, against a real influxd: nothing lost, nothing twice.

Each test runs the real `p1logger.cli.main` (or `build_pipeline`) on fixture
telegrams and reads the result back from influxd with InfluxQL. Clocks and
sleeps are injected (`fake_meter.inject_run`), so retries, backoff and
Retry-After waits cost no real time; the wall clock is fixed, so the logger's
own health points collapse into one point per run that can be checked exactly.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from helpers.fake_meter import (
    BELGIAN_3PH,
    DUTCH_DSMR5,
    DUTCH_DSMR22,
    ManualClock,
    Sleeps,
    SocketMeter,
    clean_environment,
    corrupt,
    fixture,
    inject_run,
    restamp,
    restamped_series,
    run_argv,
    running,
    spool_lines,
    wait_for,
)
from helpers.influx_servers import InfluxServer, V2Proxy

from p1logger import cli
from p1logger import pipeline as pipeline_module
from p1logger.commands import run as run_command
from p1logger.crc import crc16
from p1logger.decode import Telegram
from p1logger.pipeline import Pipeline, PipelineSettings
from p1logger.spool import Spool
from p1logger.inputs import open_source

# The logger's wall clock in these runs: the receive time of telegrams without a time of
# their own (DSMR 2.2), and the time of the health points.
RECEIVED_AT_S = 1700000000.25

# The Belgian fixture (BELGIAN_3PH, 2023-11-02 12:15:48 CET) gives these 12 points at the telegram's time...
BELGIAN_T0 = 1698923748
BELGIAN_EVERY_TELEGRAM = """\
energy,meter=1SAG3100721326 import_t1_kwh=301.548,import_t2_kwh=270.014,export_t1_kwh=0.005,export_t2_kwh=0.0,import_total_kwh=571.562,export_total_kwh=0.005,active_tariff=1i {t}
capacity,meter=1SAG3100721326 demand_kw=0.052 {t}
power,meter=1SAG3100721326,phase=total import_w=338.0,export_w=0.0 {t}
power,meter=1SAG3100721326,phase=L1 import_w=47.0,export_w=0.0 {t}
power,meter=1SAG3100721326,phase=L2 import_w=179.0,export_w=0.0 {t}
power,meter=1SAG3100721326,phase=L3 import_w=111.0,export_w=0.0 {t}
voltage,meter=1SAG3100721326,phase=L1 voltage_v=232.9 {t}
voltage,meter=1SAG3100721326,phase=L2 voltage_v=228.1 {t}
voltage,meter=1SAG3100721326,phase=L3 voltage_v=228.1 {t}
current,meter=1SAG3100721326,phase=L1 current_a=0.27 {t}
current,meter=1SAG3100721326,phase=L2 current_a=0.88 {t}
current,meter=1SAG3100721326,phase=L3 current_a=0.52 {t}
"""
# ...and these 7 once, each at its own time: gas and water at their capture times, the
# month's peak at its quarter, the history per month (July: the meter's placeholder, so
# the month's start, 2023-07-01 00:00 CEST).
BELGIAN_ONCE = """\
gas,channel=1,device=7FLO2123088027,meter=1SAG3100721326 volume_m3=92.287 1698923402
water,channel=2,device=8SET0000961173,meter=1SAG3100721326 volume_m3=8.579 1698923732
capacity,meter=1SAG3100721326 month_peak_kw=3.064 1698921900
capacity_history,meter=1SAG3100721326,month=2023-07 history_peak_kw=0.0 1688162400
capacity_history,meter=1SAG3100721326,month=2023-08 history_peak_kw=1.862 1693498500
capacity_history,meter=1SAG3100721326,month=2023-09 history_peak_kw=4.229 1694363400
capacity_history,meter=1SAG3100721326,month=2023-10 history_peak_kw=4.927 1697454000
"""
# Dutch DSMR 5 (2018-11-06 14:04:29 CET), gas at its own capture time.
DUTCH_DSMR5_LP = """\
energy,meter=E0034006810516416 import_t1_kwh=3808.351,import_t2_kwh=2948.827,export_t1_kwh=1285.951,export_t2_kwh=2876.514,import_total_kwh=6757.178,export_total_kwh=4162.465,active_tariff=2i 1541509469
power,meter=E0034006810516416,phase=total import_w=0.0,export_w=498.0 1541509469
power,meter=E0034006810516416,phase=L1 import_w=0.0,export_w=676.0 1541509469
power,meter=E0034006810516416,phase=L2 import_w=33.0,export_w=0.0 1541509469
power,meter=E0034006810516416,phase=L3 import_w=132.0,export_w=0.0 1541509469
voltage,meter=E0034006810516416,phase=L1 voltage_v=236.0 1541509469
voltage,meter=E0034006810516416,phase=L2 voltage_v=232.6 1541509469
voltage,meter=E0034006810516416,phase=L3 voltage_v=235.1 1541509469
current,meter=E0034006810516416,phase=L1 current_a=2.0 1541509469
current,meter=E0034006810516416,phase=L2 current_a=0.0 1541509469
current,meter=E0034006810516416,phase=L3 current_a=0.0 1541509469
gas,channel=1,device=G0039001700460117,meter=E0034006810516416 volume_m3=1569.646 1541509210
"""
# DSMR 2.2 has no telegram time: the receive time; its gas time has no S/W flag (CET in November).
DUTCH_DSMR22_LP = """\
energy,meter=ZBEV005106844912 import_t1_kwh=16719.94,import_t2_kwh=19403.22,export_t1_kwh=859.681,export_t2_kwh=1817.057,import_total_kwh=36123.16,export_total_kwh=2676.738,active_tariff=2i 1700000000
power,meter=ZBEV005106844912,phase=total import_w=890.0,export_w=0.0 1700000000
gas,channel=2,device=28011008306429013,meter=ZBEV005106844912 volume_m3=13368.864 1637611200
"""
# Two health lines per run (at start and at the end), at the same fixed time: the last one stays.
THREE_METERS_HEALTH = (
    "p1logger,instance=test telegrams_ok=3i,telegrams_rejected=0i,queue_depth=0i,spool_points=0i,"
    "points_dropped=0i,telegrams_dropped=0i,write_latency_ms=0.0,last_telegram_age_s=0.0 1700000000\n"
)
THREE_METERS_LP = (
    BELGIAN_EVERY_TELEGRAM.format(t=BELGIAN_T0) + BELGIAN_ONCE + DUTCH_DSMR5_LP + DUTCH_DSMR22_LP + THREE_METERS_HEALTH
)

# The v2 runs: N Belgian telegrams one second apart, 12 points each, 7 once, 2 health lines.
N = 30
BELGIAN_COUNTS = {
    "energy": N, "capacity": N + 1, "capacity_history": 4, "power": 4 * N, "voltage": 3 * N, "current": 3 * N,
    "gas": 1, "water": 1, "p1logger": 1,
}
BELGIAN_LINES_SENT = 12 * N + 7 + 2

# `p1logger run` retries a live write 3 times; the waits between attempts are
# 0.5 * 2**(n-1) s plus up to 1 s of jitter (n = the attempt that failed).
FIRST_WAIT_S = (0.5, 1.5)
SECOND_WAIT_S = (1.0, 2.0)


def assert_live_retry_waits(sleeps: list[float], failed_attempts: int) -> None:
    """The waits after `failed_attempts` failed attempts of one live write, and no other wait."""
    bounds = [FIRST_WAIT_S, SECOND_WAIT_S][:failed_attempts]
    assert len(sleeps) == len(bounds), sleeps
    for wait_s, (low_s, high_s) in zip(sleeps, bounds):
        assert low_s <= wait_s <= high_s, sleeps


@pytest.fixture(autouse=True)
def _hermetic(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No settings from the machine; `run` installs signal handlers, so put pytest's back."""
    clean_environment(monkeypatch)
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


# ------------------------------------------------------------------ helpers


def parse_lp(text: str) -> list[dict[str, Any]]:
    """Expected line protocol (no escapes needed here) as InfluxQL rows: {time, tags..., fields...}."""
    rows = []
    for line in text.splitlines():
        series, field_text, time_text = line.split(" ")
        measurement, *tags = series.split(",")
        row: dict[str, Any] = {"measurement": measurement, "time": int(time_text)}
        for tag in tags:
            key, value = tag.split("=", 1)
            row[key] = value
        for item in field_text.split(","):
            key, value = item.split("=", 1)
            row[key] = int(value[:-1]) if value.endswith("i") else float(value)
        rows.append(row)
    return rows


def expected_field_types(text: str) -> dict[str, dict[str, str]]:
    types: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        series, field_text, _ = line.split(" ")
        measurement = series.split(",")[0]
        for item in field_text.split(","):
            key, value = item.split("=", 1)
            types.setdefault(measurement, {})[key] = "integer" if value.endswith("i") else "float"
    return types


def stored_rows(server: InfluxServer, db: str, measurement: str) -> list[dict[str, Any]]:
    rows = [{k: v for k, v in row.items() if v is not None} for row in server.rows(db, measurement)]
    return [{"measurement": measurement, **row} for row in rows]


def measurements(server: InfluxServer, db: str) -> set[str]:
    series = server.query("SHOW MEASUREMENTS", db)["results"][0].get("series", [])
    return {row[0] for s in series for row in s["values"]}


def _series_key(row: dict[str, Any]) -> tuple[int, list[tuple[str, str]]]:
    # Tags are the string columns; time and tags identify a point.
    return row["time"], sorted((k, v) for k, v in row.items() if isinstance(v, str))


def assert_stored_exactly(server: InfluxServer, db: str, expected_lp: str) -> None:
    """Every point exactly; the health point's write latency is whatever the last write took."""
    expected = parse_lp(expected_lp)
    latencies = [row.get("write_latency_ms") for row in stored_rows(server, db, "p1logger")]
    for row in expected:
        if row["measurement"] == "p1logger" and latencies:
            assert isinstance(latencies[0], (int, float)) and latencies[0] >= 0
            row["write_latency_ms"] = latencies[0]
    names = {row["measurement"] for row in expected}
    assert measurements(server, db) == names
    for name in sorted(names):
        want = sorted((row for row in expected if row["measurement"] == name), key=_series_key)
        got = sorted(stored_rows(server, db, name), key=_series_key)
        assert got == want, name
        assert server.field_types(db, name) == expected_field_types(expected_lp)[name], name


def counts(server: InfluxServer, db: str) -> dict[str, int]:
    return {name: server.count(db, name) for name in sorted(measurements(server, db))}


def done_line(caplog: pytest.LogCaptureFixture) -> str:
    done = [r.getMessage() for r in caplog.records if r.name == run_command.__name__ and r.getMessage().startswith("done:")]
    assert len(done) == 1, done
    return done[0]


def messages(caplog: pytest.LogCaptureFixture, start: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(start)]


def three_meters_file(tmp_path: Path) -> Path:
    path = tmp_path / "three-meters.txt"
    path.write_bytes(fixture(BELGIAN_3PH) + fixture(DUTCH_DSMR5) + fixture(DUTCH_DSMR22))
    return path


def belgian_file(tmp_path: Path, count: int = N) -> Path:
    path = tmp_path / "belgian.txt"
    path.write_bytes(b"".join(restamped_series(fixture(BELGIAN_3PH), count)))
    return path


# ------------------------------------------------------------------ (a) every field read back, v1


def test_three_meters_every_value_type_tag_and_timestamp_read_back(
    influxd: InfluxServer, influx_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    inject_run(monkeypatch, wall_clock=lambda: RECEIVED_AT_S)
    # One write at the end (flush interval 60 s), so the health point's latency is still 0.0.
    argv = run_argv(f"file:{three_meters_file(tmp_path)}", influxd.url, influx_db, tmp_path / "spool",
                    "--flush-interval-s", "60")

    assert cli.main(["run", *argv]) == 0

    assert_stored_exactly(influxd, influx_db, THREE_METERS_LP)
    assert done_line(caplog) == "done: 3 telegrams, 0 rejected, 36 points written, 0 spooled, 0 in the spool, 0 dropped"
    assert spool_lines(tmp_path / "spool" / "influx" / "spool.db") == []


# ------------------------------------------------------------------ (b) the v2 API and its faults


def run_v2(
    proxy: V2Proxy, db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    timeout_s: float = 2.0,
) -> str:
    """N Belgian telegrams through `p1logger run` to the proxy, in batches of 50; returns the "done" line.

    The flush interval is long, so batches leave only when full or at the end;
    a failed write is tried again after the (short, injected) retry wait.
    """
    caplog.set_level(logging.INFO)
    monkeypatch.setenv("INFLUX_TOKEN", proxy.token)
    inject_run(monkeypatch, wall_clock=lambda: RECEIVED_AT_S)
    argv = [
        "--source", f"file:{belgian_file(tmp_path)}", "--influx-api", "v2", "--influx-url", proxy.url,
        "--influx-org", proxy.org, "--influx-bucket", db, "--influx-timeout-s", str(timeout_s),
        "--spool-dir", str(tmp_path / "spool"), "--instance", "test",
        "--batch-max-points", "50", "--flush-interval-s", "60",
    ]
    assert cli.main(["run", *argv]) == 0
    assert spool_lines(tmp_path / "spool" / "influx" / "spool.db") == []
    return done_line(caplog)


class OnLog(logging.Handler):
    """Runs `action` once, in the logging thread, when a message starting with `prefix` is logged."""

    def __init__(self, prefix: str, action: Callable[[], None]) -> None:
        super().__init__()
        self.prefix = prefix
        self.action: Callable[[], None] | None = action

    def emit(self, record: logging.LogRecord) -> None:
        if self.action is not None and record.getMessage().startswith(self.prefix):
            action, self.action = self.action, None
            action()


@contextmanager
def on_log(logger_name: str, prefix: str, action: Callable[[], None]) -> Iterator[None]:
    handler = OnLog(prefix, action)
    logging.getLogger(logger_name).addHandler(handler)
    try:
        yield
    finally:
        logging.getLogger(logger_name).removeHandler(handler)


def lines_stored_by_proxy(proxy: V2Proxy) -> int:
    """Lines in writes the proxy stored: equal to the lines made means none was sent twice."""
    return sum(record.lines for record in proxy.writes() if record.status == 204)


def test_v2_clean_run(
    v2_proxy: V2Proxy, influxd: InfluxServer, influx_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    done = run_v2(v2_proxy, influx_db, tmp_path, monkeypatch, caplog)

    assert counts(influxd, influx_db) == BELGIAN_COUNTS
    assert done == f"done: {N} telegrams, 0 rejected, {BELGIAN_LINES_SENT} points written, 0 spooled, 0 in the spool, 0 dropped"
    # 369 lines in batches of 50: 7 full ones, the rest at the end, then the last health point; each sent once.
    assert v2_proxy.write_statuses() == [204] * 9
    assert lines_stored_by_proxy(v2_proxy) == BELGIAN_LINES_SENT
    # Batches of 50 lines (about 4 KiB) go as they are: gzip starts at GZIP_MIN_BYTES, for backfills.
    assert [record.content_encoding for record in v2_proxy.writes()] == [None] * 9


def test_v2_500_is_retried_from_the_spool_and_no_batch_is_sent_twice(
    v2_proxy: V2Proxy, influxd: InfluxServer, influx_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    v2_proxy.fail_with(500, times=2)
    done = run_v2(v2_proxy, influx_db, tmp_path, monkeypatch, caplog)

    assert counts(influxd, influx_db) == BELGIAN_COUNTS
    # The first batch waited in the spool through 2 failed attempts; then every batch went once, oldest first.
    assert done == (f"done: {N} telegrams, 0 rejected, {BELGIAN_LINES_SENT} points written, 50 spooled, "
                    "0 in the spool, 0 dropped")
    assert v2_proxy.write_statuses() == [500] * 2 + [204] * 9
    assert [record.lines for record in v2_proxy.writes()] == [50] * 2 + [50] * 7 + [18, 1]
    assert lines_stored_by_proxy(v2_proxy) == BELGIAN_LINES_SENT
    assert [m.split(";")[0].split(" (")[0] for m in messages(caplog, "output influx")] == [
        "output influx unavailable", "output influx takes writes again",
    ]


def test_v2_503_waits_for_retry_after(
    v2_proxy: V2Proxy, influxd: InfluxServer, influx_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    v2_proxy.fail_with(503, times=1, retry_after_s=0.3)
    done = run_v2(v2_proxy, influx_db, tmp_path, monkeypatch, caplog)

    assert counts(influxd, influx_db) == BELGIAN_COUNTS
    assert done == f"done: {N} telegrams, 0 rejected, {BELGIAN_LINES_SENT} points written, 50 spooled, 0 in the spool, 0 dropped"
    assert v2_proxy.write_statuses() == [503] + [204] * 9
    first, second = v2_proxy.writes()[:2]
    assert second.at_s - first.at_s >= 0.3  # not the 0.01 s retry wait: the server's Retry-After
    assert lines_stored_by_proxy(v2_proxy) == BELGIAN_LINES_SENT


def test_v2_429_is_retried(
    v2_proxy: V2Proxy, influxd: InfluxServer, influx_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    v2_proxy.fail_with(429, times=1)
    done = run_v2(v2_proxy, influx_db, tmp_path, monkeypatch, caplog)

    assert counts(influxd, influx_db) == BELGIAN_COUNTS
    assert done == f"done: {N} telegrams, 0 rejected, {BELGIAN_LINES_SENT} points written, 50 spooled, 0 in the spool, 0 dropped"
    assert v2_proxy.write_statuses() == [429] + [204] * 9
    assert lines_stored_by_proxy(v2_proxy) == BELGIAN_LINES_SENT


def test_v2_partial_write_dead_letters_exactly_the_bad_points(
    v2_proxy: V2Proxy, influxd: InfluxServer, influx_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The server refuses the 12 points of the 11th telegram (every line with its time) and stores the rest.
    bad_time = BELGIAN_T0 + 10
    v2_proxy.partial_write(f" {bad_time}")
    done = run_v2(v2_proxy, influx_db, tmp_path, monkeypatch, caplog)

    expected = dict(BELGIAN_COUNTS)
    for name, per_telegram in (("energy", 1), ("capacity", 1), ("power", 4), ("voltage", 3), ("current", 3)):
        expected[name] -= per_telegram
    assert counts(influxd, influx_db) == expected
    assert influxd.rows(influx_db, "energy")[10]["time"] == bad_time + 1  # the gap is exactly that telegram
    assert done == (f"done: {N} telegrams, 0 rejected, {BELGIAN_LINES_SENT - 12} points written, "
                    "0 spooled, 0 in the spool, 12 dropped")
    dead = (tmp_path / "spool" / "influx" / "dead-letter.lp").read_text(encoding="utf-8").splitlines()
    assert [line for line in dead if not line.startswith("#")] == BELGIAN_EVERY_TELEGRAM.format(t=bad_time).splitlines()
    reasons = [line for line in dead if line.startswith("#")]
    assert len(reasons) == 12
    assert all(line.endswith(f"rejected by InfluxDB: HTTP 400: partial write: line holds marker ' {bad_time}' dropped=1")
               for line in reasons)
    # The refusal is counted in the logger's own health point.
    assert influxd.rows(influx_db, "p1logger")[0]["points_dropped"] == 12


def test_v2_401_is_spooled_then_drained(
    v2_proxy: V2Proxy, influxd: InfluxServer, influx_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    v2_proxy.fail_with(401, times=1)
    done = run_v2(v2_proxy, influx_db, tmp_path, monkeypatch, caplog)

    assert counts(influxd, influx_db) == BELGIAN_COUNTS
    assert done == (f"done: {N} telegrams, 0 rejected, {BELGIAN_LINES_SENT} points written, "
                    "50 spooled, 0 in the spool, 0 dropped")
    assert v2_proxy.write_statuses() == [401] + [204] * 9
    assert lines_stored_by_proxy(v2_proxy) == BELGIAN_LINES_SENT


def test_v2_connection_refused_is_spooled_then_drained(
    v2_proxy: V2Proxy, influxd: InfluxServer, influx_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    v2_proxy.refuse()
    # The server is back as soon as the output has said it is unavailable.
    with on_log("p1logger.outputs.lines", "output influx unavailable", v2_proxy.reopen):
        done = run_v2(v2_proxy, influx_db, tmp_path, monkeypatch, caplog)

    assert counts(influxd, influx_db) == BELGIAN_COUNTS
    assert done == (f"done: {N} telegrams, 0 rejected, {BELGIAN_LINES_SENT} points written, "
                    "50 spooled, 0 in the spool, 0 dropped")
    assert v2_proxy.write_statuses() == [204] * 9  # refused connections never reached it
    assert lines_stored_by_proxy(v2_proxy) == BELGIAN_LINES_SENT
    assert messages(caplog, "output influx unavailable") == [
        (f"output influx unavailable (InfluxDB did not take the write after 1 attempt (no answer from {v2_proxy.url}: "
         "connection refused); the data is kept); keeping data in its spool")
    ]


def test_v2_hang_longer_than_the_timeout_is_retried(
    v2_proxy: V2Proxy, influxd: InfluxServer, influx_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    v2_proxy.hang(30.0, times=1)
    done = run_v2(v2_proxy, influx_db, tmp_path, monkeypatch, caplog, timeout_s=0.5)

    assert counts(influxd, influx_db) == BELGIAN_COUNTS
    assert done == f"done: {N} telegrams, 0 rejected, {BELGIAN_LINES_SENT} points written, 50 spooled, 0 in the spool, 0 dropped"
    assert v2_proxy.write_statuses() == [None] + [204] * 9  # the hung request stored nothing
    assert lines_stored_by_proxy(v2_proxy) == BELGIAN_LINES_SENT


class InfluxdOutage:
    """An extra point builder (no points) in the writer thread that stops the real influxd
    after telegram `stop_after` and starts it again after telegram `start_after`."""

    name = "outage"

    def __init__(self, server: InfluxServer, stop_after: int, start_after: int) -> None:
        self.server = server
        self.stop_after, self.start_after = stop_after, start_after
        self.telegrams = 0

    def figures(self) -> None:
        return None

    def build(self, telegram: Telegram, received_at_s: float) -> list[str]:
        self.telegrams += 1
        if self.telegrams == self.stop_after:
            self.server.stop()
        elif self.telegrams == self.start_after:
            self.server.start()
        return []


def test_influxd_stopped_and_started_in_the_middle_of_a_file_stores_every_reading_once(
    influxd: InfluxServer, influx_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """P1_SOURCE=file:X INFLUX_API=v1: influxd goes down after telegram 5 and comes back after
    telegram 15; every reading of X is stored exactly once, from the same run."""
    caplog.set_level(logging.INFO)
    outage = InfluxdOutage(influxd, stop_after=5, start_after=15)
    inject_run(monkeypatch, extra_builders=[outage], wall_clock=lambda: RECEIVED_AT_S)
    source = tmp_path / "dutch.txt"
    # Two batches a telegram (--batch-max-points 6), so writes fail while influxd is away.
    source.write_bytes(b"".join(restamped_series(fixture(DUTCH_DSMR5), 20)))
    spool_dir = tmp_path / "spool"
    try:
        assert cli.main(["run", *run_argv(f"file:{source}", influxd.url, influx_db, spool_dir,
                                          "--batch-max-points", "6")]) == 0
    finally:
        if not influxd.running:
            influxd.start()

    assert outage.telegrams == 20
    assert len(messages(caplog, "output influx unavailable")) == 1
    assert len(messages(caplog, "output influx takes writes again")) == 1
    # 20 telegrams x 11 points, the gas reading once, and the health points (all stamped
    # with the same injected wall time, so InfluxDB keeps one).
    assert counts(influxd, influx_db) == {
        "current": 60, "energy": 20, "gas": 1, "p1logger": 1, "power": 80, "voltage": 60,
    }
    assert [row["time"] for row in influxd.rows(influx_db, "energy")] == [1541509469 + i for i in range(20)]
    assert spool_lines(spool_dir / "influx" / "spool.db") == []


# ------------------------------------------------------------------ (d) database down, then a restart


def test_database_down_everything_spooled_then_drained_by_the_next_run(
    influxd: InfluxServer, influx_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    dutch = fixture(DUTCH_DSMR5)
    first, second = tmp_path / "first.txt", tmp_path / "second.txt"
    first.write_bytes(b"".join(restamped_series(dutch, 20)))
    second.write_bytes(b"".join(restamped_series(dutch, 5, first_offset_s=20)))
    spool_dir = tmp_path / "spool"
    inject_run(monkeypatch, wall_clock=lambda: RECEIVED_AT_S)
    extra = ("--batch-max-points", "50", "--flush-interval-s", "60")

    influxd.stop()
    try:
        assert cli.main(["run", *run_argv(f"file:{first}", influxd.url, influx_db, spool_dir, *extra)]) == 0
    finally:
        influxd.start()
    # 20 telegrams x 11 points + 1 gas + 2 health lines, all in the spool.
    first_run = 20 * 11 + 1 + 2
    assert done_line(caplog) == f"done: 20 telegrams, 0 rejected, 0 points written, {first_run} spooled, {first_run} in the spool, 0 dropped"
    assert messages(caplog, f"output influx: {first_run} points stay") == [
        f"output influx: {first_run} points stay in its spool; the next run sends them"]
    assert messages(caplog, "output influx unavailable") == [
        (f"output influx unavailable (InfluxDB did not take the write after 1 attempt (no answer from {influxd.url}: "
         "connection refused); the data is kept); keeping data in its spool")
    ]
    assert counts(influxd, influx_db) == {}

    caplog.clear()
    assert cli.main(["run", *run_argv(f"file:{second}", influxd.url, influx_db, spool_dir, *extra)]) == 0

    # Every spooled line written once, plus the second run's own 5 x 11 + 1 gas + 2 health.
    assert done_line(caplog) == f"done: 5 telegrams, 0 rejected, {first_run + 5 * 11 + 1 + 2} points written, 0 spooled, 0 in the spool, 0 dropped"
    assert counts(influxd, influx_db) == {
        "current": 75, "energy": 25, "gas": 1, "p1logger": 1, "power": 100, "voltage": 75,
    }
    assert [row["time"] for row in influxd.rows(influx_db, "energy")] == [1541509469 + i for i in range(25)]
    assert spool_lines(spool_dir / "influx" / "spool.db") == []


def test_a_spool_from_before_outputs_had_a_directory_each_is_sent(
    influxd: InfluxServer, influx_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    spool_dir = tmp_path / "spool"
    old = [f"power,meter=OLD import_w={i}.0,export_w=0.0 {1541509000 + i}" for i in range(3)]
    with Spool(spool_dir / "spool.db") as spool:
        spool.put(old)
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    inject_run(monkeypatch, wall_clock=lambda: RECEIVED_AT_S)
    assert cli.main(["run", *run_argv(f"file:{empty}", influxd.url, influx_db, spool_dir)]) == 0
    assert [row["import_w"] for row in influxd.rows(influx_db, "power")] == [0, 1, 2]
    assert not (spool_dir / "spool.db").exists()


# ------------------------------------------------------------------ (f) crashes, CRC errors, secrets


class ExplodingBuilder:
    """A point builder with a bug."""

    name = "exploding"

    def figures(self) -> None:
        return None

    def build(self, telegram: Telegram, received_at_s: float) -> list[str]:
        raise RuntimeError("a bug in a point builder")


def test_writer_thread_crash_makes_run_exit_non_zero(
    influxd: InfluxServer, influx_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    inject_run(monkeypatch, extra_builders=[ExplodingBuilder()])
    argv = run_argv(f"file:{three_meters_file(tmp_path)}", influxd.url, influx_db, tmp_path / "spool")

    assert cli.main(["run", *argv]) == 1

    critical = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert [r.getMessage() for r in critical] == [
        "p1-writer thread failed; stopping so that a supervisor restarts p1logger"
    ]
    assert critical[0].exc_info is not None and str(critical[0].exc_info[1]) == "a bug in a point builder"
    assert not messages(caplog, "done:")


class ExplodingSource:
    """Delivers a file, then fails the way a driver bug would (not a SourceError)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.description = inner.description

    def read(self) -> bytes:
        try:
            return bytes(self.inner.read())
        except EOFError:
            raise RuntimeError("a bug in a source") from None

    def close(self) -> None:
        self.inner.close()


def test_reader_thread_crash_exits_non_zero_after_storing_what_was_read(
    influxd: InfluxServer, influx_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(pipeline_module, "open_source",
                        lambda *args, **kwargs: ExplodingSource(open_source(*args, **kwargs)))
    inject_run(monkeypatch, wall_clock=lambda: RECEIVED_AT_S)
    argv = run_argv(f"file:{three_meters_file(tmp_path)}", influxd.url, influx_db, tmp_path / "spool",
                    "--flush-interval-s", "60")

    assert cli.main(["run", *argv]) == 1

    # By the time run returns, the writer has stored all it held: exactly what (a) stores.
    assert_stored_exactly(influxd, influx_db, THREE_METERS_LP)
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL] == [
        "p1-reader thread failed; stopping so that a supervisor restarts p1logger"
    ]


@pytest.mark.slow
def test_crc_errors_are_one_summary_line_per_interval(
    influxd: InfluxServer, influx_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    clock = ManualClock()
    inject_run(monkeypatch, clock=clock, wall_clock=lambda: RECEIVED_AT_S)
    dutch = fixture(DUTCH_DSMR5)
    meter = SocketMeter()

    def corrupt_then_valid(first_s: int, corrupted: int, valid_total: int) -> None:
        for i in range(corrupted):
            meter.send(corrupt(restamp(dutch, first_s + i)))
        rejected = pipeline.health.telegrams_rejected + corrupted
        wait_for(lambda: pipeline.health.telegrams_rejected == rejected, f"{rejected} rejected telegrams")
        assert not messages(caplog, "rejected")[len(summaries_so_far):]  # nothing until the interval has passed
        clock.advance(60)
        meter.send(restamp(dutch, first_s + corrupted))  # the next read after the interval logs the summary
        wait_for(lambda: pipeline.health.telegrams_ok == valid_total, f"{valid_total} valid telegrams")

    summaries_so_far: list[str] = []
    try:
        argv = run_argv(meter.url, influxd.url, influx_db, tmp_path / "spool", "--watchdog-s", "100000")
        with running(argv) as pipeline:
            meter.accept()
            meter.send(restamp(dutch, 0))
            corrupt_then_valid(1, 100, 2)
            wait_for(lambda: bool(messages(caplog, "rejected")), "the first summary")
            summaries_so_far.extend(messages(caplog, "rejected"))
            corrupt_then_valid(102, 50, 3)
    finally:
        meter.close()

    assert pipeline.failure is None
    summaries = [r for r in caplog.records if "CRC" in r.getMessage() or "rejected" in r.getMessage()]

    def summary(count: int, last: bytes) -> tuple[int, str]:
        message = (f"rejected {count} telegram(s) in the last 60 s ({count} crc); "
                   f"last: CRC {last[-6:-2].decode()} does not match {corrupt_crc(last)}")
        return logging.WARNING, message

    assert [(r.levelno, r.getMessage()) for r in summaries] == [
        summary(100, restamp(dutch, 100)),
        summary(50, restamp(dutch, 151)),
    ]
    assert influxd.count(influx_db, "energy") == 3
    assert influxd.rows(influx_db, "p1logger")[0]["telegrams_rejected"] == 150


def corrupt_crc(telegram: bytes) -> str:
    """The CRC the logger computes over a corrupted telegram's body."""
    bad = corrupt(telegram)
    return f"{crc16(bad[: bad.index(b'!') + 1]):04X}"


class HangingUpServer:
    """A ser2net that is busy: accepts every connection and closes it at once."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"socket://127.0.0.1:{self.listener.getsockname()[1]}"
        self.accepted = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return  # closed
            self.accepted += 1
            connection.close()

    def close(self) -> None:
        self.listener.close()


def test_a_source_that_opens_and_fails_at_once_is_retried_with_growing_waits(
    influxd: InfluxServer, influx_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    server = HangingUpServer()
    stop_after_four: list[Pipeline] = []
    sleeps = Sleeps(lambda calls: stop_after_four[0].stop() if calls == 4 else None)
    inject_run(monkeypatch, sleep=sleeps, clock=ManualClock(), wall_clock=lambda: RECEIVED_AT_S)
    try:
        with running(run_argv(server.url, influxd.url, influx_db, tmp_path / "spool")) as pipeline:
            stop_after_four.append(pipeline)
            wait_for(lambda: len(sleeps) == 4, "four reconnect waits")
    finally:
        server.close()

    assert pipeline.failure is None
    assert sleeps == [1.0, 2.0, 4.0, 8.0]
    assert server.accepted == 4
    source_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("source ")]
    assert source_lines == [f"source reading {server.url}", f"source lost: lost {server.url}: read failed: socket disconnected"] * 4


TOKEN = "tok-9f3c1e7a-DO-NOT-LEAK-5b2d"


def test_token_is_in_no_log_line_or_file_whatever_fails(
    v2_proxy: V2Proxy, influxd: InfluxServer, influx_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)  # every library's debug output too
    monkeypatch.setenv("INFLUX_TOKEN", TOKEN)  # the proxy wants another token: 401
    inject_run(monkeypatch)
    argv = [
        "--source", f"file:{belgian_file(tmp_path, 5)}", "--influx-api", "v2", "--influx-url", v2_proxy.url,
        "--influx-org", v2_proxy.org, "--influx-bucket", influx_db, "--spool-dir", str(tmp_path / "spool"),
        "--batch-max-points", "20", "--log-level", "DEBUG",
    ]

    assert cli.main(["run", *argv]) == 0  # 401 for the token: all kept
    v2_proxy.refuse()
    assert cli.main(["run", *argv]) == 0  # connection refused while draining: still kept
    assert cli.main(["run", *argv, "--influx-org", ""]) == 2  # a configuration error

    assert v2_proxy.write_statuses() and set(v2_proxy.write_statuses()) == {401}  # retried, never taken
    assert messages(caplog, "InfluxDB refused the write (HTTP 401)")
    assert [m for m in caplog.messages if "connection refused" in m]
    assert capsys.readouterr().err == "p1logger run: no InfluxDB organization: set INFLUX_ORG\n"
    left = spool_lines(tmp_path / "spool" / "influx" / "spool.db")
    assert len(left) == 2 * (5 * 12 + 7 + 2)
    texts = [caplog.text, *left] + [str(r.exc_info[1]) for r in caplog.records if r.exc_info]
    texts += [path.read_text(errors="replace") for path in (tmp_path / "spool").rglob("*") if path.is_file()
              and not path.name.startswith("spool.db")]
    assert not [text for text in texts if TOKEN in text]
