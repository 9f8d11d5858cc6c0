"""How fast ``p1logger replay`` backfills an archive, against a live meter's rate.

    python benchmarks/replay.py [--telegrams 43200] [--batch-max-points 5000]

Writes an archive of realistic telegrams (the valid fixtures, each evolving
over time, one a second) with the real archive writer, so the days rotate and
the finished ones are compressed, then replays it three ways:

* reading the records only (file, gzip, the archive format);
* the full replay with a sink that takes the lines and stores nothing: the
  CPU cost of checking, decoding and making points, i.e. the ceiling;
* the full replay into a private InfluxDB 1.x (``influxd`` on 127.0.0.1),
  when one is installed: what a user sees.

A live meter sends one telegram a second, so telegrams/s is also the ratio to
real time: how many seconds of history one second of replay stores.
"""

from __future__ import annotations

import argparse
import gzip
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

from stream import realistic_stream  # noqa: E402

from p1logger.inputs.archive import ArchiveReader, archive_files  # noqa: E402
from p1logger.outputs.archive import ArchiveWriter  # noqa: E402
from p1logger.pipeline import RecordMaker  # noqa: E402
from p1logger.replay import Replayer, ReplayState  # noqa: E402
from p1logger.points import PointBuilder  # noqa: E402
from p1logger.contracts import WriteKind, WriteResult  # noqa: E402
from p1logger.outputs.influx.sink import InfluxSink  # noqa: E402
from p1logger.outputs.influx.target import InfluxTarget  # noqa: E402
from p1logger.timestamps import TimestampParser  # noqa: E402

ZONE = "Europe/Brussels"
START_S = 1_714_579_200.0  # 1 May 2024, 18:00 local time: 12 hours span two daily files
LIVE_TELEGRAMS_PER_S = 1.0


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


def make_archive(directory: Path, telegrams: int) -> None:
    now = [START_S]
    writer = ArchiveWriter(directory, ZoneInfo(ZONE), max_bytes=0, clock=lambda: now[0], background=False)
    writer.open()
    for n, raw in enumerate(realistic_stream(telegrams)):
        now[0] = START_S + n
        writer.write(raw, True, now[0])
    writer.close()


def timed_replay(sink: InfluxSink | DiscardSink, paths: list[Path], batch_max_points: int) -> tuple[float, int, int]:
    timestamps = TimestampParser(ZONE)
    replayer = Replayer(sink, RecordMaker([PointBuilder(timestamps.zone)]), timestamps, ReplayState(None, "benchmark"),
                        batch_max_points=batch_max_points)
    start = time.perf_counter()
    stats = replayer.run(paths)
    return time.perf_counter() - start, stats.telegrams, stats.points_written


def report(label: str, seconds: float, telegrams: int, points: int | None = None) -> None:
    rate = telegrams / seconds
    extra = f", {points / seconds:10,.0f} points/s" if points is not None else ""
    print(f"{label:<34} {rate:10,.0f} telegrams/s{extra}  = {rate / LIVE_TELEGRAMS_PER_S:,.0f}x real time "
          f"({seconds:.2f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--telegrams", type=int, default=43200, help="how many (default: 12 hours' worth)")
    parser.add_argument("--batch-max-points", type=int, default=5000)
    parser.add_argument("--dir", type=Path, default=None, help="where to put the archive (default: a temp dir)")
    args = parser.parse_args()

    print(f"command: python {shlex.join(sys.argv)}")
    print(f"python {platform.python_version()}, {platform.machine()}, {platform.system()}")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        archive = Path(tmp) / "archive"
        start = time.perf_counter()
        make_archive(archive, args.telegrams)
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
        seconds, telegrams, points = timed_replay(discard, paths, args.batch_max_points)
        report("replay, no database", seconds, telegrams, points)

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
            seconds, telegrams, points = timed_replay(InfluxSink(target, dead_letter_path=None), paths,
                                                      args.batch_max_points)
            stored = server.count("bench", "energy")
            report(f"replay into influxd ({detail.split()[1]})", seconds, telegrams, points)
            # Some fixtures share a meter id and a clock: their points overwrite each other, as they should.
            print(f"  energy points stored: {stored}, expected {len(discard.energy_keys)}")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
