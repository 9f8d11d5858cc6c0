"""How fast ``p1logger replay`` backfills an archive, against a live meter's rate.

    python benchmarks/replay.py [--telegrams 43200] [--stream both|corpus|belgian] [--batch-max-points 5000]

Writes an archive with the real archive writer, so the days rotate and the
finished ones are compressed, of one of two streams (both by default):

* ``corpus``: realistic telegrams of the valid fixtures (44 meters
  interleaved, each evolving over time, one telegram a second);
* ``belgian``: what a user replays: one simulated Belgian three-phase meter
  (p1logger.simulate, profile be3, the week of the March DST change), one
  telegram a second;

then replays it three ways:

* reading the records only (file, gzip, the archive format);
* the full replay with a sink that takes the lines and stores nothing: the
  CPU cost of checking, decoding and making points, i.e. the ceiling;
* the full replay into a private InfluxDB 1.x (``influxd`` on 127.0.0.1),
  when one is installed: what a user sees.

Both replays run the builders ``p1logger replay`` makes with its defaults
(points and the capacity tariff), through the same ``Replayer``.

A live meter sends one telegram a second, so telegrams/s is also the ratio to
real time: how many seconds of history one second of replay stores.
"""

from __future__ import annotations

import argparse
import gzip
import io
import logging
import os
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

from stream import realistic_stream  # noqa: E402

from p1logger import cli  # noqa: E402
from p1logger.builders import create_builders  # noqa: E402
from p1logger.commands.replay import ProgressReport  # noqa: E402
from p1logger.inputs.archive import ArchiveReader, archive_files  # noqa: E402
from p1logger.outputs.archive import ArchiveWriter  # noqa: E402
from p1logger.pipeline import RecordMaker  # noqa: E402
from p1logger.replay import Replayer, ReplayState  # noqa: E402
from p1logger.simulate import PROFILES, MeterModel  # noqa: E402
from p1logger.contracts import WriteKind, WriteResult  # noqa: E402
from p1logger.outputs.influx.sink import InfluxSink  # noqa: E402
from p1logger.outputs.influx.target import InfluxTarget  # noqa: E402
from p1logger.timestamps import TimestampParser  # noqa: E402

ZONE = "Europe/Brussels"
START_S = 1_714_579_200.0  # 1 May 2024, 18:00 local time: 12 hours span two daily files
# 27 March 2025, 00:00 in Brussels: a week from here includes the change to summer time.
BELGIAN_START = datetime(2025, 3, 26, 23, 0, tzinfo=timezone.utc)
LIVE_TELEGRAMS_PER_S = 1.0
WEEK_S = 7 * 86400


class DiscardSink:
    """Takes every line and stores nothing: the replay's own cost, without a database."""

    def __init__(self) -> None:
        # Series and time of each energy point: what a database would keep, to check the real run against.
        self.energy_keys: set[tuple[str, str]] = set()

    def write(self, lines: Sequence[str]) -> WriteResult:
        for line in lines:
            if line.startswith("energy,"):
                series, _, rest = line.partition(" ")
                self.energy_keys.add((series, rest.rpartition(" ")[2]))
        return WriteResult(WriteKind.OK, len(lines), 0, (), "", 0.0)

    def close(self) -> None:
        pass


def make_archive(directory: Path, telegrams: int, stream: str) -> None:
    raws: Iterable[bytes]
    if stream == "corpus":
        start_s, raws = START_S, realistic_stream(telegrams)
    else:
        model = MeterModel(PROFILES["be3"], BELGIAN_START)
        start_s = BELGIAN_START.timestamp()
        raws = (model.next_telegram() for _ in range(telegrams))
    now = [start_s]
    writer = ArchiveWriter(directory, ZoneInfo(ZONE), max_bytes=0, clock=lambda: now[0], background=False)
    writer.open()
    for n, raw in enumerate(raws):
        now[0] = start_s + n + 0.25
        writer.write(raw, True, now[0])
    writer.close()


def process_cpu_s(pid: int | None = None) -> float:
    """User + system CPU seconds of this process (all its threads), or of another one."""
    if pid is None:
        times = os.times()
        return times.user + times.system
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed_replay(sink: InfluxSink | DiscardSink, paths: list[Path], batch_max_points: int) -> tuple[float, int, int,
                                                                                                      float]:
    """(seconds, telegrams, points, CPU seconds of this process)."""
    timestamps = TimestampParser(ZONE)
    settings = cli.build_parser().parse_args(["replay", "archive"])
    maker = RecordMaker(create_builders(settings, timestamps.zone, False))
    # As `p1logger replay` runs it when its output is not a terminal: a progress line every 10 s.
    progress = ProgressReport(sum(path.stat().st_size for path in paths), io.StringIO(), bar=False)
    replayer = Replayer(sink, maker, timestamps, ReplayState(None, "benchmark"), batch_max_points=batch_max_points,
                        progress=progress)
    cpu_s = process_cpu_s()
    start = time.perf_counter()
    stats = replayer.run(paths)
    return time.perf_counter() - start, stats.telegrams, stats.points_written, process_cpu_s() - cpu_s


def report(label: str, seconds: float, telegrams: int, points: int | None = None) -> None:
    rate = telegrams / seconds
    extra = f", {points / seconds:10,.0f} points/s" if points is not None else ""
    week = f"; a week in {WEEK_S / rate:.0f} s" if points is not None else ""
    print(f"{label:<34} {rate:10,.0f} telegrams/s{extra}  = {rate / LIVE_TELEGRAMS_PER_S:,.0f}x real time "
          f"({seconds:.2f} s{week})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--telegrams", type=int, default=43200, help="how many (default: 12 hours' worth)")
    parser.add_argument("--stream", choices=("both", "corpus", "belgian"), default="both",
                        help="the fixtures' 44 meters interleaved, one simulated Belgian meter, or both (default)")
    parser.add_argument("--batch-max-points", type=int, default=5000)
    parser.add_argument("--dir", type=Path, default=None, help="where to put the archive (default: a temp dir)")
    args = parser.parse_args()
    # Meters' clock warnings (the corpus interleaves meters whose clocks disagree) and the capacity
    # tariff's peak warnings are not news here.
    logging.getLogger("p1logger").setLevel(logging.ERROR)

    print(f"command: python {shlex.join(sys.argv)}")
    print(f"python {platform.python_version()}, {platform.machine()}, {platform.system()}, {os.cpu_count()} cores; "
          f"load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    streams = ("corpus", "belgian") if args.stream == "both" else (args.stream,)
    for stream in streams:
        bench_stream(stream, args)


def bench_stream(stream: str, args: argparse.Namespace) -> None:
    title = {"corpus": "the fixtures' meters, interleaved", "belgian": "one simulated Belgian three-phase meter"}
    print(f"\n== stream: {stream} ({title[stream]})")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        archive = Path(tmp) / "archive"
        start = time.perf_counter()
        make_archive(archive, args.telegrams, stream)
        write_s = time.perf_counter() - start
        paths = archive_files(archive)
        start = time.perf_counter()
        records = raw_bytes = 0
        for path in paths:
            with ArchiveReader(path) as reader:
                for record in reader:
                    records += 1
                    raw_bytes += len(record.raw)
        read_s = time.perf_counter() - start
        disk_bytes = sum(p.stat().st_size for p in paths)
        print(f"archive: {records} telegrams ({raw_bytes / 1e6:.1f} MB) in {len(paths)} files "
              f"({', '.join(p.name for p in paths)}), {disk_bytes / 1e6:.1f} MB on disk")
        for path in paths:
            if path.suffix == ".gz":
                plain = len(gzip.decompress(path.read_bytes()))
                print(f"  {path.name}: {plain / 1e6:.1f} MB compressed to {path.stat().st_size / 1e6:.1f} MB "
                      f"({plain / path.stat().st_size:.1f}x)")
        report("archive writer (+ gzip)", write_s, args.telegrams)
        report("read records only", read_s, records)

        discard = DiscardSink()
        seconds, telegrams, points, cpu_s = timed_replay(discard, paths, args.batch_max_points)
        report("replay, no database", seconds, telegrams, points)
        print(f"  CPU: this process {cpu_s:.1f} s = {cpu_s / telegrams * 1e6:.0f} us/telegram")
        # Only the count is kept: a week's set of keys (600,000 tuples) would slow the collector in the next run.
        expected_energy = len(discard.energy_keys)
        del discard

        try:
            from helpers.influx_servers import InfluxServer, find_influxd
        except ImportError:
            print("replay into influxd: skipped (tests/influx_servers.py not found)")
            return
        binary, detail = find_influxd()
        if binary is None:
            print(f"replay into influxd: skipped ({detail})")
            return
        (Path(tmp) / "influxd").mkdir()
        server = InfluxServer(binary, Path(tmp) / "influxd")
        server.start()
        try:
            server.create_database("bench")
            target = InfluxTarget(url=server.url, api="v1", org="", bucket="bench", timeout_s=30.0)
            pid = server._proc.pid if server._proc is not None else None  # noqa: SLF001 - a benchmark's peek
            influxd_cpu_s = process_cpu_s(pid) if pid is not None else 0.0
            seconds, telegrams, points, cpu_s = timed_replay(InfluxSink(target, dead_letter_path=None), paths,
                                                             args.batch_max_points)
            influxd_cpu_s = process_cpu_s(pid) - influxd_cpu_s if pid is not None else float("nan")
            stored = server.count("bench", "energy")
            report(f"replay into influxd ({detail.split()[1]})", seconds, telegrams, points)
            # On a shared machine the wall time follows the load; the CPU each side needs does not.
            print(f"  CPU: this process {cpu_s:.1f} s = {cpu_s / telegrams * 1e6:.0f} us/telegram, influxd "
                  f"{influxd_cpu_s:.1f} s = {influxd_cpu_s / telegrams * 1e6:.0f} us/telegram; on two idle cores, "
                  f"at best {telegrams / max(cpu_s, influxd_cpu_s):,.0f} telegrams/s")
            # Some fixtures share a meter id and a clock: their points overwrite each other, as they should.
            print(f"  energy points stored: {stored}, expected {expected_energy}")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
