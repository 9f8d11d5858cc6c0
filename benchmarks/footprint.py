"""Live footprint of ``p1logger run``: CPU and peak memory at a real meter's pace.

    python benchmarks/footprint.py [--seconds 60]

A simulated Belgian three-phase meter (p1logger.simulate, profile be3) sends
one telegram a second into a pseudo-terminal, paced like a 115200-baud UART;
``p1logger run`` reads it through pyserial, as from /dev/ttyUSB0, and writes
to a private influxd 1.x started here (127.0.0.1 only, as in the tests). The
logger runs with its defaults (1 s flush, INFO logging, optional features on).

Measured from /proc: CPU as utime + stime over the measuring window (start-up
is reported on its own), peak memory as VmHWM. Budgets: 1% of one core and
60 MB. The baseline, measured in the same run, is an idle Python process
(``python -c "import time; time.sleep(...)"``): the floor any Python program
starts from. At the end the logger gets SIGTERM and the stored telegrams are
counted, so the figures are for a run that lost nothing.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from helpers.fake_meter import PtyMeter, paced  # noqa: E402
from helpers.influx_servers import InfluxServer, find_influxd, http_request  # noqa: E402

from p1logger.simulate import PROFILES, MeterModel  # noqa: E402

CPU_BUDGET_FRACTION = 0.01
RSS_BUDGET_BYTES = 60 * 1024 * 1024
UART_BYTES_PER_S = 11520  # 115200 baud, 8N1
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_S


def status_bytes(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def mb(value: int) -> str:
    return f"{value / (1024 * 1024):.1f} MB"


class Lines:
    """A child's stderr, collected as it comes."""

    def __init__(self, stream: IO[str] | None) -> None:
        assert stream is not None
        self.lines: list[str] = []
        self._thread = threading.Thread(target=lambda: self.lines.extend(stream), daemon=True)
        self._thread.start()

    def wait_for(self, text: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not any(text in line for line in self.lines):
            if time.monotonic() > deadline:
                raise SystemExit(f"no {text!r} from p1logger run within {timeout_s} s:\n{''.join(self.lines)}")
            time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60, help="telegrams to send, one a second (default %(default)s)")
    args = parser.parse_args()

    binary, detail = find_influxd()
    if binary is None:
        raise SystemExit(f"needs influxd 1.x: {detail}")
    with tempfile.TemporaryDirectory(prefix="p1-footprint-") as scratch:
        root = Path(scratch)
        (root / "influxd").mkdir()
        influxd = InfluxServer(binary, root / "influxd")
        influxd.start()
        meter = PtyMeter(root / "ttyP1", chunk_bytes=64, chunk_gap_s=64 / UART_BYTES_PER_S)
        baseline: subprocess.Popen[bytes] | None = None
        logger: subprocess.Popen[str] | None = None
        try:
            influxd.create_database("p1")
            version = http_request(influxd.http_port, "GET", "/ping").headers.get("x-influxdb-version", "?")
            meter.plug()
            model = MeterModel(PROFILES["be3"], datetime.now(timezone.utc))
            telegrams = [model.next_telegram() for _ in range(args.seconds)]

            baseline = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({args.seconds + 60})"])
            env = {k: v for k, v in os.environ.items() if not k.startswith(("P1_", "INFLUX_"))}
            env.update(P1_SOURCE=str(meter.link), INFLUX_API="v1", INFLUX_URL=influxd.url, INFLUX_BUCKET="p1",
                       P1_SPOOL_DIR=str(root / "spool"), P1_INSTANCE="footprint")
            started = time.monotonic()
            logger = subprocess.Popen([sys.executable, "-m", "p1logger", "run"], env=env, cwd=REPO, text=True,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            stderr = Lines(logger.stderr)
            stderr.wait_for("source reading", 30)
            startup_wall_s = time.monotonic() - started
            startup_cpu_s = cpu_s(logger.pid)
            baseline_cpu0 = cpu_s(baseline.pid)

            window_start = time.monotonic()
            paced(telegrams, meter.send, 1.0)
            time.sleep(1.0)  # the last telegram's flush interval
            window_s = time.monotonic() - window_start
            used_cpu_s = cpu_s(logger.pid) - startup_cpu_s
            baseline_cpu_s = cpu_s(baseline.pid) - baseline_cpu0
            peak_rss = status_bytes(logger.pid, "VmHWM")
            rss_now = status_bytes(logger.pid, "VmRSS")
            baseline_rss = status_bytes(baseline.pid, "VmHWM")

            logger.send_signal(signal.SIGTERM)
            returncode = logger.wait(timeout=15)
            stored = influxd.count("p1", "energy")
        finally:
            for process in (logger, baseline):
                if process is not None and process.poll() is None:
                    process.kill()
                    process.wait()
            meter.close()
            influxd.stop()

    cpu_fraction = used_cpu_s / window_s
    print(f"p1logger run footprint: {args.seconds} telegrams at 1/s over a pty (simulated Belgian three-phase "
          f"meter, {len(telegrams[0])} bytes/telegram), v1 to influxd {version} on 127.0.0.1")
    print(f"machine: {platform.system()} {platform.machine()}, Python {platform.python_version()}, "
          f"{os.cpu_count()} cores")
    print(f"start-up:  {startup_cpu_s:.2f} s CPU, {startup_wall_s:.1f} s to open the port (once)")
    print(f"CPU:       {used_cpu_s:.2f} s in {window_s:.1f} s = {cpu_fraction:.2%} of one core; "
          f"budget {CPU_BUDGET_FRACTION:.0%} -> {cpu_fraction / CPU_BUDGET_FRACTION:.2f}x budget "
          f"(idle Python baseline: {baseline_cpu_s:.2f} s)")
    print(f"memory:    peak RSS {mb(peak_rss)} (now {mb(rss_now)}); budget {mb(RSS_BUDGET_BYTES)} -> "
          f"{peak_rss / RSS_BUDGET_BYTES:.2f}x budget; idle Python baseline {mb(baseline_rss)} -> "
          f"{peak_rss / baseline_rss:.1f}x baseline")
    print(f"stored:    {stored} of {args.seconds} telegrams in influxd; SIGTERM exit status {returncode}")
    if stored != args.seconds or returncode != 0:
        raise SystemExit("readings were lost or the logger did not stop cleanly:\n" + "".join(stderr.lines))


if __name__ == "__main__":
    main()
