"""The spool never stops the logger: a full disk while a backlog drains, and a damaged spool file.

Against the real influxd. The full disk is a small tmpfs mounted for the test
(CI runs as root); the spool's backlog and a filler file leave no byte free.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
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


class Disk:
    """Where the spool lives, and a way to make that disk full and free again."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def fill(self, output: LineOutput) -> None:
        raise NotImplementedError

    def free(self, output: LineOutput) -> None:
        raise NotImplementedError


class TmpfsDisk(Disk):
    """A 3 MiB tmpfs filled with zeros to the last byte: a disk that really is full."""

    def fill(self, output: LineOutput) -> None:
        self.filler = self.root / "filler"
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            for size in (65536, 4096, 1):  # unbuffered, down to the last byte
                try:
                    while True:
                        os.write(fd, b"\0" * size)
                except OSError:
                    pass
        finally:
            os.close(fd)

    def free(self, output: LineOutput) -> None:
        self.filler.unlink()


class FaultySpoolDisk(Disk):
    """Without the right to mount: the spool's writes fail as SQLite fails on a full disk (SQLITE_FULL)."""

    def fill(self, output: LineOutput) -> None:
        spool = output.spool
        assert spool is not None

        def full(*args: object, **kwargs: object) -> None:
            raise sqlite3.OperationalError("database or disk is full")

        spool._transaction = full  # type: ignore[method-assign]  # every write goes through a transaction

    def free(self, output: LineOutput) -> None:
        assert output.spool is not None
        del output.spool._transaction


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Disk]:
    """A small tmpfs when this runs as root (CI), else a fault-injecting stand-in: never skipped."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount_point)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        yield FaultySpoolDisk(mount_point)
        return
    try:
        yield TmpfsDisk(mount_point)
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def backlog_lines(batch: int) -> list[str]:
    return [f"power,meter=BACKLOG import_w={batch}.{i},export_w=0.0 {BACKLOG_T0 + batch * 50 + i}" for i in range(50)]


@pytest.mark.slow
def test_a_full_disk_while_a_backlog_drains_does_not_stop_live_data(
    small_disk: Disk, influxd: InfluxServer, influx_db: str, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    spool_dir = small_disk.root / "spool"
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
            small_disk.fill(output)
            influxd.start()
            meter.accept()
            for n, telegram in enumerate(telegrams[:20]):
                meter.send(telegram)
                wait_for(lambda: influxd.count(influx_db, "energy") == n + 1, f"live reading {n} stored")
            wait_for(lambda: influxd.count(influx_db, "power") >= 80 + 100 * 50, "the backlog drained")
            assert output.counters.spool_errors > 0  # the disk really was full
            small_disk.free(output)  # space again: the removals that failed are done now
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
