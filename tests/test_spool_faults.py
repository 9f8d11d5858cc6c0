"""The spool never stops the logger: a full disk while a backlog drains, and a damaged spool file.

Against the real influxd. The full disk is a small tmpfs mounted for the test
(CI runs as root); the spool's backlog and a filler file leave no byte free.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require_server
from helpers.fake_meter import (
    DUTCH_DSMR5,
    SocketMeter,
    clean_environment,
    fixture,
    inject_run,
    restamped_series,
    run_argv,
    running,
    spool_lines,
    wait_for,
)
from helpers.influx_servers import InfluxServer

from p1logger import cli
from p1logger.outputs.lines import LineOutput
from p1logger.spool import Spool

RECEIVED_AT_S = 1700000000.25
DUTCH_T0 = 1541509469
BACKLOG_T0 = 1500000000


@pytest.fixture(autouse=True)
def _hermetic(monkeypatch: pytest.MonkeyPatch) -> None:
    clean_environment(monkeypatch)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs: a disk that really fills up."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount_point)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        require_server("a tmpfs mount (root)", result.stderr.strip() or "mount failed")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def fill(directory: Path) -> Path:
    """Write zeros until the file system says it is full (unbuffered, down to the last byte)."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for size in (65536, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def backlog_lines(batch: int) -> list[str]:
    return [f"power,meter=BACKLOG import_w={batch}.{i},export_w=0.0 {BACKLOG_T0 + batch * 50 + i}" for i in range(50)]


@pytest.mark.slow
def test_a_full_disk_while_a_backlog_drains_does_not_stop_live_data(
    small_disk: Path, influxd: InfluxServer, influx_db: str, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    spool_dir = small_disk / "spool"
    with Spool(spool_dir / "influx" / "spool.db") as spool:
        for batch in range(100):
            spool.put(backlog_lines(batch))
    inject_run(monkeypatch, wall_clock=lambda: RECEIVED_AT_S)
    meter = SocketMeter()
    telegrams = restamped_series(fixture(DUTCH_DSMR5), 30)
    influxd.stop()  # the backlog waits while the disk fills up
    try:
        with running(run_argv(meter.url, influxd.url, influx_db, spool_dir, "--flush-interval-s", "0.1",
                              "--watchdog-s", "1000")) as pipeline:
            output = pipeline.outputs[0]
            assert isinstance(output, LineOutput)
            filler = fill(small_disk)
            influxd.start()
            meter.accept()
            for n, telegram in enumerate(telegrams[:20]):
                meter.send(telegram)
                wait_for(lambda: influxd.count(influx_db, "energy") == n + 1, f"live reading {n} stored")
            wait_for(lambda: influxd.count(influx_db, "power") >= 80 + 100 * 50, "the backlog drained")
            assert output.counters.spool_errors > 0  # the disk really was full
            filler.unlink()  # space again: the removals that failed are done now
            for n, telegram in enumerate(telegrams[20:], start=20):
                meter.send(telegram)
                wait_for(lambda: influxd.count(influx_db, "energy") == n + 1, f"live reading {n} stored")
    finally:
        meter.close()
        influxd.start()

    assert pipeline.failure is None
    assert [row["time"] for row in influxd.rows(influx_db, "energy")] == [DUTCH_T0 + n for n in range(30)]
    assert influxd.count(influx_db, "power") == 30 * 4 + 100 * 50  # every backlog point once, every live one
    assert spool_lines(spool_dir / "influx" / "spool.db") == []
    noise = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len([m for m in noise if m.startswith("cannot write the health state")]) <= 1
    assert len([m for m in noise if "storage errors since start" in m]) <= 3  # once a minute per kind at most


@pytest.mark.slow
def test_a_truncated_spool_is_moved_aside_and_logging_goes_on(
    influxd: InfluxServer, influx_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    spool_dir = tmp_path / "spool"
    path = spool_dir / "influx" / "spool.db"
    with Spool(path) as spool:
        for batch in range(40):
            spool.put(backlog_lines(batch))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a power cut on an SD card
    source = tmp_path / "dutch.txt"
    source.write_bytes(b"".join(restamped_series(fixture(DUTCH_DSMR5), 10)))
    inject_run(monkeypatch, wall_clock=lambda: RECEIVED_AT_S)

    assert cli.main(["run", *run_argv(f"file:{source}", influxd.url, influx_db, spool_dir)]) == 0

    assert [row["time"] for row in influxd.rows(influx_db, "energy")] == [DUTCH_T0 + n for n in range(10)]
    (kept,) = sorted((spool_dir / "influx").glob("spool.db.damaged-*"))
    assert kept.read_bytes() == data[: len(data) // 2]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [f"spool file {path} is damaged (database disk image is malformed): kept it as {kept} and "
                      "started a fresh spool; the points in it are not sent"]
    assert spool_lines(path) == []
    assert os.path.exists(path)
