"""Replay: archives and captures into a real influxd, idempotent, resumable; the progress display.

Counts are read back from influxd: replaying twice must store exactly what
replaying once did, and a resumed replay exactly what an uninterrupted one did.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from helpers.influx_servers import V2_ORG, V2_TOKEN
from helpers.influx_servers import Fault, InfluxServer, V2Proxy
from helpers.archive_telegrams import BRUSSELS, NO_CLOCK_TELEGRAM, T0, FakeClock, bad_crc, telegram

from p1logger.outputs.archive import ArchiveWriter, RecordFile
from p1logger.cli import main as cli_main
from p1logger.commands.replay import ProgressReport
from p1logger.pipeline import RecordMaker
from p1logger.replay import FileIdentity, Replayer, ReplayState, file_identity
from p1logger.errors import SinkError
from p1logger.points import PointBuilder
from p1logger.outputs.influx.sink import InfluxSink
from p1logger.outputs.influx.target import InfluxTarget
from p1logger.timestamps import TimestampParser

ROOT = Path(__file__).resolve().parent.parent
METER = "K8EG004046395507"
# Received from 23:59:45 local on 2 January: the archive's files change day after 15 telegrams.
RECEIVED_0 = datetime(2017, 1, 2, 23, 59, 45, tzinfo=BRUSSELS).timestamp() + 0.25
MEASUREMENTS = ("energy", "power", "voltage", "current", "gas", "p1logger")


def make_archive(directory: Path, count: int = 30, *, gas_every_s: int = 10) -> float:
    """``count`` telegrams a second apart, 3 rejected ones after the 4th, and a DSMR 2.2 telegram (no clock) last.

    Written by the real archive writer: day one is compressed, day two plain. Returns the last receive time.
    """
    clock = FakeClock(RECEIVED_0)
    writer = ArchiveWriter(directory, BRUSSELS, clock=clock, background=False)
    writer.open()
    for n in range(count):
        clock.now_s = RECEIVED_0 + n
        writer(telegram(n, gas_every_s=gas_every_s), True)
        if n == 3:
            for k in range(3):
                writer(bad_crc(100 + k), False)
    clock.now_s = RECEIVED_0 + count + 0.5
    writer(NO_CLOCK_TELEGRAM, True)
    writer.close()
    return clock.now_s


def counts(server: InfluxServer, db: str) -> dict[str, int]:
    return {m: server.count(db, m) for m in MEASUREMENTS}


def full_counts(telegrams: int, gas_points: int) -> dict[str, int]:
    """What ``telegrams`` of the fixture meter plus the DSMR 2.2 telegram store."""
    return {"energy": telegrams + 1, "power": 4 * telegrams + 1, "voltage": 3 * telegrams, "current": 3 * telegrams,
            "gas": gas_points + 1, "p1logger": 0}


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("INFLUX_", "P1_")):
            monkeypatch.delenv(name)


def replay_cli(server: InfluxServer, db: str, spool: Path, *paths: Path | str, extra: tuple[str, ...] = ()) -> int:
    return cli_main(["replay", *map(str, paths), "--influx-api", "v1", "--influx-url", server.url,
                     "--influx-bucket", db, "--spool-dir", str(spool), "--timezone", "Europe/Brussels", *extra])


# ------------------------------------------------------------------ into influxd


def test_replaying_twice_stores_every_reading_exactly_once(
    influxd: InfluxServer, influx_db: str, tmp_path: Path, no_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = tmp_path / "archive"
    last_received = make_archive(archive)
    assert sorted(p.name for p in archive.glob("p1-*")) == ["p1-2017-01-02.txt.gz", "p1-2017-01-03.txt"]
    assert replay_cli(influxd, influx_db, tmp_path / "spool", archive) == 0
    first = counts(influxd, influx_db)
    # Gas captured every 10 s: one point per capture, 3 in 30 s; no health points.
    assert first == full_counts(30, gas_points=3)
    rows_first = {m: influxd.rows(influx_db, m) for m in MEASUREMENTS}
    err = capsys.readouterr().err
    assert "p1logger replay: 31 telegrams, 336 points stored; 2 files done, 0 already done before; " \
           "3 telegrams rejected (as when received)" in err

    # The same files again, ignoring the saved progress: the same points, not one more.
    assert replay_cli(influxd, influx_db, tmp_path / "spool", archive, extra=("--restart",)) == 0
    assert counts(influxd, influx_db) == first
    assert {m: influxd.rows(influx_db, m) for m in MEASUREMENTS} == rows_first
    # And without --restart, the state says both files are done.
    assert replay_cli(influxd, influx_db, tmp_path / "spool", archive) == 0
    assert "0 telegrams, 0 points stored; 0 files done, 2 already done before" in capsys.readouterr().err
    assert counts(influxd, influx_db) == first

    # The meter's clock places the points; the DSMR 2.2 telegram (no clock) sits at its recorded receive time.
    energy = {(row["meter"], row["time"]) for row in rows_first["energy"]}
    assert energy == {(METER, T0 + n) for n in range(30)} | {("00000000000000", int(last_received))}
    assert [row["time"] for row in rows_first["gas"] if row["meter"] == METER] == [T0, T0 + 10, T0 + 20]
    assert [row["volume_m3"] for row in rows_first["gas"] if row["meter"] == METER] == [0.0, 0.01, 0.02]


def test_receive_time_mode_uses_the_archived_receive_times(
    influxd: InfluxServer, influx_db: str, tmp_path: Path, no_env: None
) -> None:
    make_archive(tmp_path / "archive", count=5)
    assert replay_cli(influxd, influx_db, tmp_path / "spool", tmp_path / "archive",
                      extra=("--timestamps", "receive")) == 0
    times = sorted(row["time"] for row in influxd.rows(influx_db, "power") if row["phase"] == "total")
    assert times == [int(RECEIVED_0) + n for n in range(5)] + [int(RECEIVED_0 + 5.5)]


def test_a_plain_capture_replays_but_cannot_place_a_telegram_without_a_clock(
    influxd: InfluxServer, influx_db: str, tmp_path: Path, no_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    capture = tmp_path / "capture.txt.gz"
    capture.write_bytes(gzip.compress(b"noise" + telegram(0) + bad_crc(1) + telegram(2) + NO_CLOCK_TELEGRAM))
    assert replay_cli(influxd, influx_db, tmp_path / "spool", capture) == 0
    assert counts(influxd, influx_db) == {"energy": 2, "power": 8, "voltage": 6, "current": 6, "gas": 1,
                                          "p1logger": 0}
    assert "1 telegrams without a meter clock or a recorded receive time, skipped" in capsys.readouterr().err


def v2_replayer(proxy: V2Proxy, db: str, state: ReplayState, **kwargs: Any) -> Replayer:
    target = InfluxTarget(url=proxy.url, api="v2", org=V2_ORG, bucket=db, token=V2_TOKEN, timeout_s=5.0)
    sink = InfluxSink(target, dead_letter_path=None, max_attempts=2, sleep=lambda _s: None)
    timestamps = TimestampParser("Europe/Brussels")
    return Replayer(sink, RecordMaker([PointBuilder(timestamps.zone)]), timestamps, state, **kwargs)


def test_a_replay_stopped_by_a_failing_database_resumes_and_stores_the_same_total(
    influxd: InfluxServer, influx_db: str, v2_proxy: V2Proxy, tmp_path: Path
) -> None:
    archive = tmp_path / "archive"
    make_archive(archive, gas_every_s=1)  # 12 points per telegram: a batch of 24 is two telegrams
    paths = sorted(archive.glob("p1-*"))
    state_path = tmp_path / "state.json"
    # The batch holding telegram 10 fails for good, until the fault is cleared.
    v2_proxy.push(Fault("status", times=None, status=503, marker=f" {T0 + 10}"))
    first = v2_replayer(v2_proxy, influx_db, ReplayState(state_path, "dest"), batch_max_points=24)
    with pytest.raises(SinkError, match="503"):
        first.run(paths)
    # The failed batch (10, 11) was read, not stored; so was the next (12, 13), read while it was being written.
    assert first.stats.telegrams == 14
    stored = counts(influxd, influx_db)
    assert stored == {"energy": 10, "power": 40, "voltage": 30, "current": 30, "gas": 10, "p1logger": 0}
    saved = json.loads(state_path.read_text())["destinations"]["dest"]
    assert saved[str(paths[0].resolve())]["complete"] is False

    v2_proxy.clear_faults()
    second = v2_replayer(v2_proxy, influx_db, ReplayState(state_path, "dest"), batch_max_points=24)
    stats = second.run(paths)
    # Resumed after telegram 9: 20 telegrams and the DSMR 2.2 one are left.
    assert (stats.telegrams, stats.files_done, stats.files_skipped) == (21, 2, 0)
    assert counts(influxd, influx_db) == full_counts(30, gas_points=30)


def test_a_stop_request_writes_what_was_read_and_resumes(
    influxd: InfluxServer, influx_db: str, v2_proxy: V2Proxy, tmp_path: Path
) -> None:
    archive = tmp_path / "archive"
    make_archive(archive, gas_every_s=1)
    paths = sorted(archive.glob("p1-*"))
    stop = threading.Event()

    class StopAfter(ProgressReport):
        """Ctrl-C, as seen by the replay: the stop event, set once 7 telegrams are read."""

        def update(self, done_bytes: int, read_bytes: int, telegrams: int) -> None:
            if telegrams >= 7:
                stop.set()

    progress = StopAfter(1, io.StringIO(), bar=False)
    first = v2_replayer(v2_proxy, influx_db, ReplayState(tmp_path / "s.json", "d"), batch_max_points=24,
                        stop=stop, progress=progress)
    first.run(paths)
    # Batches of 24 hold telegrams 0-5; telegram 6 was pending and is written on the way out.
    assert first.stats.telegrams == 7
    assert counts(influxd, influx_db)["energy"] == 7
    second = v2_replayer(v2_proxy, influx_db, ReplayState(tmp_path / "s.json", "d"), batch_max_points=24)
    assert second.run(paths).telegrams == 24
    assert counts(influxd, influx_db) == full_counts(30, gas_points=30)


def test_ctrl_c_stops_the_command_cleanly_and_a_rerun_completes(
    influxd: InfluxServer, influx_db: str, tmp_path: Path
) -> None:
    recording = RecordFile(tmp_path / "big.txt", clock=FakeClock(RECEIVED_0))
    for n in range(4000):
        recording(telegram(n), True)
    recording.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INFLUX_", "P1_"))}
    command = [sys.executable, "-m", "p1logger", "replay", str(tmp_path / "big.txt"), "--influx-api", "v1",
               "--influx-url", influxd.url, "--influx-bucket", influx_db, "--spool-dir", str(tmp_path / "spool"),
               "--batch-max-points", "110"]
    child = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and child.poll() is None and influxd.count(influx_db, "energy") == 0:
            time.sleep(0.01)
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 130, err
    assert b"interrupted; the progress is saved" in err
    stored_first = influxd.count(influx_db, "energy")
    assert 0 < stored_first < 4000
    state = json.loads((tmp_path / "spool" / "replay-state.json").read_text())
    (entry,) = state["destinations"][f"{influxd.url} database '{influx_db}'"].values()
    assert entry["complete"] is False and 0 < entry["offset"] < (tmp_path / "big.txt").stat().st_size

    rerun = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, timeout=60)
    assert rerun.returncode == 0, rerun.stderr
    resumed = int(rerun.stderr.decode().split("p1logger replay: ")[1].split(" telegrams")[0])
    assert 4000 - resumed == stored_first  # what was read before Ctrl-C was written and saved, and not read again
    assert counts(influxd, influx_db) == {"energy": 4000, "power": 16000, "voltage": 12000, "current": 12000,
                                          "gas": 400, "p1logger": 0}


# ------------------------------------------------------------------ without a database


def test_state_resumes_only_an_unchanged_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "a.txt"
    data.write_bytes(b"x" * 100)
    identity = file_identity(data)
    state = ReplayState(tmp_path / "state.json", "dest", clock=FakeClock(0.0))
    assert state.resume_offset(data, identity) == 0
    state.update(data, identity, 40)
    state.save()
    again = ReplayState(tmp_path / "state.json", "dest")
    assert again.resume_offset(data, identity) == 40
    assert ReplayState(tmp_path / "state.json", "other destination").resume_offset(data, identity) == 0
    assert again.resume_offset(data, FileIdentity(identity.size_bytes + 10, identity.mtime_ns)) == 0
    again.update(data, identity, 100, complete=True)  # saved at once
    assert ReplayState(tmp_path / "state.json", "dest").resume_offset(data, identity) is None
    assert ReplayState(tmp_path / "state.json", "dest", restart=True).resume_offset(data, identity) == 0
    (tmp_path / "state.json").write_text("{not json")
    assert ReplayState(tmp_path / "state.json", "dest").resume_offset(data, identity) == 0
    assert "ignoring the replay state" in caplog.text


def test_progress_bar_on_a_terminal() -> None:
    out = io.StringIO()
    clock = FakeClock(100.0)
    report = ProgressReport(10_000_000, out, bar=True, clock=clock)
    report.update(1_000_000, 1_000_000, 500)  # too soon: nothing
    assert out.getvalue() == ""
    clock.now_s = 102.0
    report.update(2_500_000, 2_000_000, 4000)
    # 2 MB read in 2 s: the 7.5 MB left take 7.5 s.
    assert out.getvalue() == "\r[#######-----------------------]  25.0% 2.5/10.0 MB 2,000 telegrams/s ETA 0:00:08\x1b[K"
    clock.now_s = 110.0
    report.finish(10_000_000, 9_500_000, 20000)
    assert out.getvalue().endswith("\r[##############################] 100.0% 10.0/10.0 MB 2,000 telegrams/s "
                                   "ETA 0:00:00\x1b[K\n")


def test_progress_lines_elsewhere_every_ten_seconds() -> None:
    out = io.StringIO()
    clock = FakeClock(0.0)
    report = ProgressReport(4_000_000, out, bar=False, clock=clock)
    clock.now_s = 9.9
    report.update(100, 100, 1)
    assert out.getvalue() == ""
    clock.now_s = 10.0
    report.update(1_000_000, 1_000_000, 3000)
    clock.now_s = 15.0
    report.update(2_000_000, 2_000_000, 6000)
    report.finish(4_000_000, 4_000_000, 12000)  # lines: no closing bar
    assert out.getvalue() == "p1logger replay: 25.0% (1.0/4.0 MB), 3000 telegrams, 300 telegrams/s, ETA 0:00:30\n"


def test_replay_refuses_missing_inputs(tmp_path: Path, no_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["replay", str(tmp_path / "nope.txt"), "--influx-api", "v1"]) == 2
    assert "nope.txt: no such file or directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli_main(["replay", str(tmp_path / "empty"), "--influx-api", "v1"]) == 2
    assert "holds no archive files" in capsys.readouterr().err


def test_replay_to_influxdb_2_needs_a_token(
    tmp_path: Path, no_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    make_archive(tmp_path / "archive", count=1)
    assert cli_main(["replay", str(tmp_path / "archive"), "--influx-org", "home"]) == 2
    assert capsys.readouterr().err == ("p1logger replay: no InfluxDB token: set INFLUX_TOKEN or INFLUX_TOKEN_FILE "
                                       "(or INFLUX_API=v1 for InfluxDB 1.x)\n")
