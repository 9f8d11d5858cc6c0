"""What a kill -9 can cost, measured against the real influxd: at most one flush interval of readings.

`p1logger run` reads a live socket meter, keeps an archive of everything it
received (`--archive`, the reference), and writes to InfluxDB 2 (the v2 proxy
in front of influxd). The database hangs: every write waits until its timeout.
Several seconds into that outage the logger is killed with SIGKILL; a second
run (an empty source) sends what the first one spooled. The readings lost are
those in the archive and not in the database; the bound is the readings the
archive received during the last flush interval before the kill. The test
prints the figures (docs/operations.md quotes them).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.fake_meter import DUTCH_DSMR5, SocketMeter, fixture, paced, restamped_series, wait_for
from helpers.influx_servers import InfluxServer, V2Proxy
from helpers.processes import StderrLines

from p1logger.inputs.archive import ArchiveReader, archive_files

REPO = Path(__file__).resolve().parent.parent
FLUSH_INTERVAL_S = 1.0
PER_SECOND = 4  # readings a second from the meter (each one second apart on the meter's clock)
# A thread wakes a little late on a busy machine (the tests share two cores): the tick that cuts a batch.
SCHEDULING_SLACK_S = 0.25
DUTCH_T0 = 1541509469


def archived(directory: Path) -> list[tuple[float, bytes]]:
    """(receive time, telegram) of every valid telegram the archive holds."""
    records = []
    for path in archive_files(directory):
        with ArchiveReader(path) as reader:
            records.extend((r.received_at_s or 0.0, r.raw) for r in reader if r.valid)
    return records


def environment(proxy: V2Proxy, db: str, spool_dir: Path, source: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("P1_", "INFLUX_"))}
    env.update(P1_SOURCE=source, INFLUX_API="v2", INFLUX_URL=proxy.url, INFLUX_ORG=proxy.org, INFLUX_BUCKET=db,
               INFLUX_TOKEN=proxy.token, INFLUX_TIMEOUT_S="1", P1_SPOOL_DIR=str(spool_dir),
               P1_FLUSH_INTERVAL_S=str(FLUSH_INTERVAL_S), P1_INSTANCE="kill-test")
    return env


@pytest.mark.slow
def test_kill_9_during_a_hung_database_outage_loses_at_most_one_flush_interval(
    v2_proxy: V2Proxy, influxd: InfluxServer, influx_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    meter = SocketMeter()
    spool_dir, archive = tmp_path / "spool", tmp_path / "archive"
    telegrams = restamped_series(fixture(DUTCH_DSMR5), 60)
    process = subprocess.Popen([sys.executable, "-m", "p1logger", "run", "--archive", str(archive)],
                               env=environment(v2_proxy, influx_db, spool_dir, meter.url), cwd=REPO, text=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = StderrLines(process)
    try:
        meter.accept()
        paced(telegrams[:12], meter.send, PER_SECOND)
        wait_for(lambda: influxd.count(influx_db, "energy") == 12, "the first readings in the database")
        v2_proxy.hang(60.0, times=None)  # from now on every write hangs until the logger's timeout
        paced(telegrams[12:], meter.send, PER_SECOND)  # 12 s of readings into the outage
        wait_for(lambda: len(archived(archive)) == len(telegrams), "every reading in the archive")
        process.send_signal(signal.SIGKILL)
        killed_at = time.time()
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        meter.close()
    assert any("output influx unavailable" in line for line in stderr.text().splitlines())

    v2_proxy.clear_faults()
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    rerun = subprocess.run([sys.executable, "-m", "p1logger", "run"], cwd=REPO, capture_output=True, text=True,
                           env=environment(v2_proxy, influx_db, spool_dir, f"file:{empty}"), timeout=60)
    assert rerun.returncode == 0, rerun.stderr

    received = archived(archive)
    stored = {row["time"] for row in influxd.rows(influx_db, "energy")}
    received_times = [DUTCH_T0 + n for n in range(len(received))]
    lost = [t for t in received_times if t not in stored]
    last_interval = [at for at, _ in received if at > killed_at - FLUSH_INTERVAL_S]
    bound = [at for at, _ in received if at > killed_at - FLUSH_INTERVAL_S - SCHEDULING_SLACK_S]
    with capsys.disabled():
        print(f"\nkill -9 {killed_at - received[-1][0]:.1f} s after the last reading, during a hung-database outage "
              f"of {len(received) - 12} readings: {len(received)} received, {len(stored)} stored, {len(lost)} lost; "
              f"bound: one flush interval ({FLUSH_INTERVAL_S:g} s) = {len(last_interval)} readings "
              f"({len(bound)} with {SCHEDULING_SLACK_S:g} s for a late thread)")
    assert set(stored) <= set(received_times)  # nothing made up
    assert len(lost) <= len(bound)
    # The lost ones, if any, are the newest: everything older was in the spool.
    assert lost == received_times[len(received_times) - len(lost):]
