"""How fast a recorded day goes into InfluxDB: ``p1logger run`` with a ``file:`` source.

    python benchmarks/backfill.py [--seconds 86400]

The file is made here: one day of a simulated Belgian three-phase meter
(p1logger.simulate, profile be3: DSMR 5 / e-MUCS lines, one telegram a
second, values that move, gas and water every 5 minutes, the 13-month peak
history in every telegram, CRC computed), a June day with no DST change.

1. decode + points: the reader and the point builders exactly as
   ``p1logger run`` wires them (`build_pipeline`, optional features
   included), fed the file in the 64 KiB reads of a ``file:`` source; no
   database. The core alone (reader and `PointBuilder`, no features) is
   reported too.
2. end to end: ``p1logger run`` as a process, P1_SOURCE=file:, default
   batching, v1 to a private influxd 1.x started here (127.0.0.1 only), timed
   from start to exit; then the stored points are counted.

Baseline: the meter itself, one telegram a second. Targets: 10,000+
telegrams/s for decode + points, and the day stored in under 2 minutes.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from helpers.influx_servers import InfluxServer, find_influxd, http_request  # noqa: E402

from p1logger import cli  # noqa: E402
from p1logger.commands.run import build_pipeline  # noqa: E402
from p1logger.decode import Telegram  # noqa: E402
from p1logger.contracts import Builder as LineBuilder  # noqa: E402
from p1logger.points import PointBuilder  # noqa: E402
from p1logger.reader import TelegramReader  # noqa: E402
from p1logger.simulate import PROFILES, MeterModel  # noqa: E402

FILE_READ_BYTES = 65536  # what a file: source reads at a time
METER_RATE_PER_S = 1.0
TARGET_DECODE_PER_S = 10_000
TARGET_DAY_S = 120.0
# 00:00 on 2025-06-18 in Brussels (CEST): a whole day without a DST change.
DAY_START = datetime(2025, 6, 17, 22, 0, tzinfo=timezone.utc)


def make_day(path: Path, seconds: int) -> int:
    model = MeterModel(PROFILES["be3"], DAY_START)
    size = 0
    with open(path, "wb") as out:
        for _ in range(seconds):
            telegram = model.next_telegram()
            out.write(telegram)
            size += len(telegram)
    return size


def decode_and_points(blob: bytes, reader: TelegramReader, builders: list[PointBuilder | LineBuilder]) -> tuple[int, int, float]:
    """(telegrams, lines, seconds) for the whole blob."""
    telegrams = lines = 0
    start = time.perf_counter()
    for offset in range(0, len(blob), FILE_READ_BYTES):
        received_at = time.time()
        for item in reader.feed(blob[offset : offset + FILE_READ_BYTES]):
            if isinstance(item, Telegram):
                telegrams += 1
                for builder in builders:
                    lines += len(builder.build(item, received_at))
    return telegrams, lines, time.perf_counter() - start


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:9,.0f} telegrams/s"


def versus_meter(count: int, seconds: float) -> str:
    return f"{count / METER_RATE_PER_S / seconds:,.0f}x real time"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=86_400, help="telegrams in the file (default: one day)")
    args = parser.parse_args()
    # The capacity feature warns once per quarter the simulated household runs over its peak: not news here.
    logging.getLogger("p1logger").setLevel(logging.ERROR)
    binary, detail = find_influxd()
    if binary is None:
        raise SystemExit(f"needs influxd 1.x: {detail}")

    with tempfile.TemporaryDirectory(prefix="p1-backfill-") as scratch:
        root = Path(scratch)
        day = root / "day.txt"
        started = time.perf_counter()
        size = make_day(day, args.seconds)
        made_s = time.perf_counter() - started
        blob = day.read_bytes()

        # 1. decode + points, as run wires it, then the core alone.
        run_args = cli.build_parser().parse_args(
            ["run", "--source", f"file:{day}", "--influx-api", "v1", "--spool-dir", str(root / "bench-spool")])
        pipeline, _ = build_pipeline(run_args)
        wired: list[PointBuilder | LineBuilder] = list(pipeline.builders)
        run_counts = decode_and_points(blob, pipeline.reader, wired)
        for output in pipeline.outputs:
            output.close(0.0)
        core_counts = decode_and_points(blob, TelegramReader(pipeline.reader.timestamps),
                                        [PointBuilder(pipeline.reader.timestamps.zone)])
        for counts in (run_counts, core_counts):
            if counts[0] != args.seconds:
                raise SystemExit(f"decoded {counts[0]} of {args.seconds} telegrams")

        # 2. end to end into influxd.
        (root / "influxd").mkdir()
        influxd = InfluxServer(binary, root / "influxd")
        influxd.start()
        try:
            influxd.create_database("p1")
            version = http_request(influxd.http_port, "GET", "/ping").headers.get("x-influxdb-version", "?")
            env = {k: v for k, v in os.environ.items() if not k.startswith(("P1_", "INFLUX_"))}
            env.update(P1_SOURCE=f"file:{day}", INFLUX_API="v1", INFLUX_URL=influxd.url, INFLUX_BUCKET="p1",
                       P1_SPOOL_DIR=str(root / "spool"), P1_INSTANCE="backfill")
            started = time.perf_counter()
            result = subprocess.run([sys.executable, "-m", "p1logger", "run"], env=env, cwd=REPO,
                                    capture_output=True, text=True, check=False)
            stored_s = time.perf_counter() - started
            if result.returncode != 0:
                raise SystemExit(f"p1logger run failed ({result.returncode}):\n{result.stderr}")
            stored = {name: influxd.count("p1", name) for name in ("energy", "power", "voltage", "current")}
            done = [line.split(": ", 1)[1] for line in result.stderr.splitlines() if ": done: " in line]
        finally:
            influxd.stop()

    expected = {"energy": args.seconds, "power": 4 * args.seconds, "voltage": 3 * args.seconds,
                "current": 3 * args.seconds}
    telegrams, run_lines, run_s = run_counts
    print(f"backfill: {args.seconds:,} telegrams of a simulated Belgian three-phase meter "
          f"({size // args.seconds} bytes/telegram, {size / 1e6:.0f} MB, made in {made_s:.1f} s)")
    print(f"machine: {platform.system()} {platform.machine()}, Python {platform.python_version()}, "
          f"{os.cpu_count()} cores; influxd {version} on 127.0.0.1")
    print(f"decode + points, as run wires it:  {rate(telegrams, run_s)}  ({run_lines / telegrams:.1f} points/telegram)"
          f"  {versus_meter(telegrams, run_s)}; target {TARGET_DECODE_PER_S:,}/s -> "
          f"{telegrams / run_s / TARGET_DECODE_PER_S:.2f}x")
    print(f"decode + points, core only:        {rate(core_counts[0], core_counts[2])}  "
          f"({core_counts[1] / core_counts[0]:.1f} points/telegram)  {versus_meter(core_counts[0], core_counts[2])}")
    day_s = stored_s * 86_400 / args.seconds  # the same when the file is a day, as by default
    print(f"end to end into influxd:           {rate(args.seconds, stored_s)}  {args.seconds:,} telegrams in "
          f"{stored_s:.1f} s = {versus_meter(args.seconds, stored_s)}; a day in {day_s:.0f} s, target "
          f"{TARGET_DAY_S:.0f} s -> {day_s / TARGET_DAY_S:.2f}x the allowed time")
    print(f"stored: {', '.join(f'{name} {count:,}' for name, count in stored.items())} "
          f"({'all' if stored == expected else 'NOT all'} of them); {done[0] if done else 'no done line'}")
    if stored != expected:
        raise SystemExit(f"expected {expected}")


if __name__ == "__main__":
    main()
