"""Live footprint of ``p1logger run``: CPU, wake-ups and peak memory at a real meter's pace.

    python benchmarks/footprint.py [--seconds 60] [--api v2|v1] [--callgrind]

A simulated Belgian three-phase meter (p1logger.simulate, profile be3) sends
one telegram a second into a pseudo-terminal, paced like a 115200-baud UART;
``p1logger run`` reads it through pyserial, as from /dev/ttyUSB0, and writes
to a private influxd 1.x started here (127.0.0.1 only, as in the tests), through
the InfluxDB 2 HTTP API of tests/helpers (``--api v2``, the Docker default) or
directly (``--api v1``). The logger runs with its defaults (1 s flush, INFO
logging, optional features on).

Wake-ups are the context switches of all the logger's threads over the window
(/proc/PID/task/*/status): each voluntary one is a thread going to sleep, to be
woken again.  The CPU per telegram-second, in all and per thread, is set against
dsmr_parser parsing the same telegram (CRC checked), measured in this process in
the same run; against the same parse made once a second by a process of its own;
and against the floor, a process that only wakes once a second and does nothing.
With ``--callgrind`` the logger runs under valgrind's callgrind and its user-space
instructions over the window are counted, per thread (slow, but the count does
not depend on the machine's load).

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
from helpers.influx_servers import InfluxServer, V2Proxy, find_influxd, http_request  # noqa: E402

from p1logger.simulate import PROFILES, MeterModel  # noqa: E402

CPU_BUDGET_FRACTION = 0.01
RSS_BUDGET_BYTES = 35 * 1024 * 1024
WAKEUPS_BUDGET_PER_S = 5.0
DSMR_PARSER_RATIO_TARGET = 0.6  # the live loop's CPU per telegram-second, in dsmr_parser parses of that telegram
# A Raspberry Pi 3's Cortex-A53 at 1.2 GHz, in-order, running CPython: about 0.5 instructions per cycle
# (CPython's interpreter loop on small in-order cores; an assumption, not a measurement).
PI_INSTRUCTIONS_PER_S = 1.2e9 * 0.5
V2_TOKEN = "footprint-token"
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


def context_switches(pid: int) -> dict[int, int]:
    """Voluntary context switches (the thread went to sleep) of each thread of a process, by thread id."""
    counts: dict[int, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "status").read_text()
        except OSError:
            continue  # a thread that just ended
        counts[int(task.name)] = sum(int(line.split()[1]) for line in text.splitlines()
                                     if line.startswith("voluntary_ctxt_switches:"))
    return counts


def threads_user_system_s(pid: int) -> tuple[float, float]:
    """User and system CPU of all the threads of a process, in clock ticks' resolution."""
    user = system = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user += int(fields[11])
        system += int(fields[12])
    return user / CLOCK_TICKS_PER_S, system / CLOCK_TICKS_PER_S


def thread_cpu_s(pid: int) -> dict[int, float]:
    """CPU time of each thread of a process, by thread id, to the nanosecond (/proc/PID/task/*/schedstat)."""
    times: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            times[int(task.name)] = int((task / "schedstat").read_text().split()[0]) / 1e9
        except OSError:
            continue  # a thread that just ended
    return times


def threads_cpu_s(pid: int) -> float:
    """CPU time of all the threads of a process, to the nanosecond."""
    return sum(thread_cpu_s(pid).values())


def dsmr_parser_cpu_s(telegram: bytes, repeat: int) -> float:
    """CPU seconds dsmr_parser takes to parse this telegram, CRC checked (the median of ``repeat`` rounds)."""
    from dsmr_parser import telegram_specifications
    from dsmr_parser.parsers import TelegramParser

    parser = TelegramParser(telegram_specifications.BELGIUM_FLUVIUS, apply_checksum_validation=True)
    text = telegram.decode("ascii")
    parser.parse(text)
    rounds = []
    for _ in range(repeat):
        start = time.process_time()
        for _ in range(20):
            parser.parse(text)
        rounds.append((time.process_time() - start) / 20)
    return sorted(rounds)[len(rounds) // 2]


# The same parse at the logger's pace: a process that sleeps a second, wakes and parses the telegram,
# as a logger built on dsmr_parser would at the least. On a virtual machine whose idle cores cost a
# wake-up milliseconds of CPU, only this baseline pays what the logger pays for being woken.
PACED_BASELINE = """
import sys, time
from dsmr_parser import telegram_specifications
from dsmr_parser.parsers import TelegramParser
parser = TelegramParser(telegram_specifications.BELGIUM_FLUVIUS, apply_checksum_validation=True)
text = open(sys.argv[1], encoding="ascii", newline="").read()
parser.parse(text)
print("ready", flush=True)
while True:
    time.sleep(1.0)
    parser.parse(text)
"""

# The floor under both: a process that only sleeps a second and wakes, doing nothing. What one wake-up
# costs here, whatever a thread does once awake.
WAKE_BASELINE = """
import time
print("ready", flush=True)
while True:
    time.sleep(1.0)
"""


def callgrind_instructions(path: Path) -> int:
    for line in reversed(path.read_text().splitlines()):
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise SystemExit(f"no instruction total in {path}")


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
    parser.add_argument("--api", choices=("v2", "v1"), default="v2", help="InfluxDB API (default %(default)s)")
    parser.add_argument("--callgrind", action="store_true",
                        help="run the logger under valgrind --tool=callgrind and count its instructions")
    parser.add_argument("--keep-callgrind", type=Path, default=None,
                        help="with --callgrind: copy the window's profiles, one per thread, into this folder "
                             "(for callgrind_annotate)")
    args = parser.parse_args()

    binary, detail = find_influxd()
    if binary is None:
        raise SystemExit(f"needs influxd 1.x: {detail}")
    with tempfile.TemporaryDirectory(prefix="p1-footprint-") as scratch:
        root = Path(scratch)
        (root / "influxd").mkdir()
        influxd = InfluxServer(binary, root / "influxd")
        influxd.start()
        proxy: V2Proxy | None = None
        meter = PtyMeter(root / "ttyP1", chunk_bytes=64, chunk_gap_s=64 / UART_BYTES_PER_S)
        baseline: subprocess.Popen[bytes] | None = None
        paced_baseline: subprocess.Popen[str] | None = None
        wake_baseline: subprocess.Popen[str] | None = None
        logger: subprocess.Popen[str] | None = None
        callgrind_out = root / "callgrind.out"
        try:
            influxd.create_database("p1")
            version = http_request(influxd.http_port, "GET", "/ping").headers.get("x-influxdb-version", "?")
            meter.plug()
            model = MeterModel(PROFILES["be3"], datetime.now(timezone.utc))
            telegrams = [model.next_telegram() for _ in range(args.seconds)]

            baseline = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({args.seconds + 600})"])
            (root / "telegram.txt").write_bytes(telegrams[0])
            paced_baseline = subprocess.Popen([sys.executable, "-c", PACED_BASELINE, str(root / "telegram.txt")],
                                              stdout=subprocess.PIPE, text=True)
            assert paced_baseline.stdout is not None
            paced_baseline.stdout.readline()
            wake_baseline = subprocess.Popen([sys.executable, "-c", WAKE_BASELINE], stdout=subprocess.PIPE, text=True)
            assert wake_baseline.stdout is not None
            wake_baseline.stdout.readline()
            env = {k: v for k, v in os.environ.items() if not k.startswith(("P1_", "INFLUX_"))}
            env.update(P1_SOURCE=str(meter.link), INFLUX_BUCKET="p1", P1_SPOOL_DIR=str(root / "spool"),
                       P1_INSTANCE="footprint", PYTHONPATH=str(REPO))
            if args.api == "v2":
                proxy = V2Proxy(influxd, token=V2_TOKEN, org="home", keep_alive=True)
                proxy.start()
                env.update(INFLUX_API="v2", INFLUX_URL=proxy.url, INFLUX_ORG="home", INFLUX_TOKEN=V2_TOKEN)
            else:
                env.update(INFLUX_API="v1", INFLUX_URL=influxd.url)
            command = [sys.executable, "-m", "p1logger", "run"]
            if args.callgrind:
                command = ["valgrind", "--tool=callgrind", "--separate-threads=yes", f"--callgrind-out-file={callgrind_out}", *command]
            started = time.monotonic()
            logger = subprocess.Popen(command, env=env, cwd=REPO, text=True,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            stderr = Lines(logger.stderr)
            stderr.wait_for("source reading", 300 if args.callgrind else 30)
            startup_wall_s = time.monotonic() - started
            # Two telegrams first, so that the window starts in the steady state (first connection, caches).
            paced(telegrams[:2], meter.send, 1.0)
            time.sleep(1.0)
            startup_cpu_s = cpu_s(logger.pid)
            thread_cpu0 = thread_cpu_s(logger.pid)
            window_cpu0 = sum(thread_cpu0.values())
            user0, system0 = threads_user_system_s(logger.pid)
            baseline_cpu0 = cpu_s(baseline.pid)
            paced_cpu0 = threads_cpu_s(paced_baseline.pid)
            wake_cpu0 = threads_cpu_s(wake_baseline.pid)
            switches0 = context_switches(logger.pid)
            if args.callgrind:
                subprocess.run(["callgrind_control", "--zero", str(logger.pid)], check=True, capture_output=True)

            window_start = time.monotonic()
            paced(telegrams[2:], meter.send, 1.0)
            time.sleep(1.0)  # the last telegram's flush interval
            window_s = time.monotonic() - window_start
            thread_cpu1 = thread_cpu_s(logger.pid)
            used_cpu_s = sum(thread_cpu1.values()) - window_cpu0
            user1, system1 = threads_user_system_s(logger.pid)
            switches1 = context_switches(logger.pid)
            if args.callgrind:
                subprocess.run(["callgrind_control", "--dump=window", str(logger.pid)], check=True,
                               capture_output=True)
            baseline_cpu_s = cpu_s(baseline.pid) - baseline_cpu0
            paced_cpu_s = threads_cpu_s(paced_baseline.pid) - paced_cpu0
            wake_cpu_s = threads_cpu_s(wake_baseline.pid) - wake_cpu0
            peak_rss = status_bytes(logger.pid, "VmHWM")
            rss_now = status_bytes(logger.pid, "VmRSS")
            baseline_rss = status_bytes(baseline.pid, "VmHWM")
            logger.send_signal(signal.SIGTERM)
            returncode = logger.wait(timeout=120 if args.callgrind else 15)
            stored = influxd.count("p1", "energy")
            instructions = 0
            thread_instructions: list[int] = []
            if args.callgrind:
                # --separate-threads: one dump per thread, its name ending in the thread's number.
                window_dumps = sorted(p for p in root.glob("callgrind.out*")
                                      if "window" in p.read_text(errors="replace")[:2000])
                if not window_dumps:
                    raise SystemExit("callgrind wrote no dump for the window")
                thread_instructions = [callgrind_instructions(p) for p in window_dumps]
                instructions = sum(thread_instructions)
                if args.keep_callgrind is not None:
                    args.keep_callgrind.mkdir(parents=True, exist_ok=True)
                    for dump in window_dumps:
                        (args.keep_callgrind / dump.name).write_bytes(dump.read_bytes())
        finally:
            for process in (logger, baseline, paced_baseline, wake_baseline):
                if process is not None and process.poll() is None:
                    process.kill()
                    process.wait()
            meter.close()
            if proxy is not None:
                proxy.stop()
            influxd.stop()

    measured = args.seconds - 2
    cpu_fraction = used_cpu_s / window_s
    per_telegram_s = used_cpu_s / measured
    dsmr_s = dsmr_parser_cpu_s(telegrams[0], 15)
    woken = {tid: switches1.get(tid, 0) - switches0.get(tid, 0) for tid in switches1}
    wakeups_per_s = sum(woken.values()) / window_s
    per_thread = ", ".join(f"{count / window_s:.1f}" for _, count in sorted(woken.items()))
    per_thread_cpu = ", ".join(f"{(cpu1 - thread_cpu0.get(tid, 0.0)) / measured * 1e3:.2f}"
                               for tid, cpu1 in sorted(thread_cpu1.items()))
    print(f"p1logger run footprint: {measured} telegrams at 1/s over a pty (simulated Belgian three-phase "
          f"meter, {len(telegrams[0])} bytes/telegram), {args.api} to influxd {version} on 127.0.0.1"
          f"{' (through the v2 API of tests/helpers)' if args.api == 'v2' else ''}"
          f"{'; under callgrind' if args.callgrind else ''}")
    print(f"machine: {platform.system()} {platform.machine()}, Python {platform.python_version()}, "
          f"{os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f}")
    print(f"start-up:  {startup_cpu_s:.2f} s CPU (with the first 2 telegrams), {startup_wall_s:.1f} s to open the port")
    print(f"CPU:       {used_cpu_s:.3f} s in {window_s:.1f} s = {cpu_fraction:.2%} of one core "
          f"(idle Python baseline: {baseline_cpu_s:.2f} s); user {user1 - user0:.2f} s, system {system1 - system0:.2f} s")
    print(f"wake-ups:  {wakeups_per_s:.1f}/s over all threads (per thread, by id: {per_thread}); "
          f"budget {WAKEUPS_BUDGET_PER_S:.0f}/s -> {wakeups_per_s / WAKEUPS_BUDGET_PER_S:.2f}x budget")
    print(f"ratio: {per_telegram_s * 1e3:.2f} ms CPU per telegram-second = "
          f"{per_telegram_s / dsmr_s:.2f} dsmr_parser parses of the same telegram ({dsmr_s * 1e3:.2f} ms each); "
          f"target <= {DSMR_PARSER_RATIO_TARGET}")
    print(f"per thread: {per_thread_cpu} ms CPU per telegram-second, by thread id")
    paced_parse_s = paced_cpu_s / window_s
    print(f"ratio at the same pace: {per_telegram_s / paced_parse_s:.2f} dsmr_parser parses made once a second "
          f"({paced_parse_s * 1e3:.2f} ms CPU each, woken from a 1 s sleep in a process of its own, in the same "
          f"window: {paced_parse_s / dsmr_s:.1f}x the parse in a loop)")
    wake_s = wake_cpu_s / window_s
    print(f"wake-up floor: {wake_s * 1e3:.2f} ms CPU per wake-up of a process that only sleeps 1 s "
          f"= {wake_s / dsmr_s:.2f} dsmr_parser parses; the logger's {wakeups_per_s:.1f} wake-ups/s at that "
          f"cost alone, with no work done: {wakeups_per_s * wake_s / dsmr_s:.2f} parses")
    if args.callgrind:
        per_second = instructions / measured
        print(f"instructions: {per_second / 1e6:.2f} M user-space instructions per telegram-second "
              f"(callgrind, {instructions:,} over {measured} telegrams; the run is slowed, so wake-ups and "
              f"CPU above are not representative)")
        print("instructions per thread: " + ", ".join(f"{count / measured / 1e6:.3f}" for count in thread_instructions)
              + " M per telegram-second, in the order the threads started")
        print(f"Raspberry Pi estimate: {per_second / PI_INSTRUCTIONS_PER_S:.2%} of one Cortex-A53 core "
              f"(at {PI_INSTRUCTIONS_PER_S / 1e9:.1f} G instructions/s: 1.2 GHz x 0.5 per cycle, assumed)")
    print(f"memory:    peak RSS {mb(peak_rss)} (now {mb(rss_now)}); budget {mb(RSS_BUDGET_BYTES)} -> "
          f"{peak_rss / RSS_BUDGET_BYTES:.2f}x budget; idle Python baseline {mb(baseline_rss)} -> "
          f"{peak_rss / baseline_rss:.1f}x baseline")
    print(f"stored:    {stored} of {args.seconds} telegrams in influxd; SIGTERM exit status {returncode}")
    if stored != args.seconds or returncode != 0:
        raise SystemExit("readings were lost or the logger did not stop cleanly:\n" + "".join(stderr.lines))


if __name__ == "__main__":
    main()
