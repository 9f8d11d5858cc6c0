"""How fast the on-disk spool fills and drains, against a live meter's rate.

    python benchmarks/spool_drain.py [--batches 100] [--points-per-batch 5000]

Fills a fresh spool with batches of realistic line protocol (a three-phase
meter, one telegram a second), then drains it the way the writer does,
oldest() then ack(), with no database in the loop. Two baselines come from
the same run:

* the rate of merely iterating the same lines in memory (the ceiling: what
  the spool costs on top of doing nothing), and
* a live meter's production rate (``--live-points-per-s``, 40 by default),
  so the ratio says how many times faster than real time a backlog can be
  drained, before InfluxDB's own write time is counted.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from p1logger.spool import Spool  # noqa: E402

METER = "E0043007017512345"
START_S = 1_700_000_000


def telegram_lines(n: int) -> list[str]:
    """The points one telegram of a three-phase Belgian meter gives."""
    t = START_S + n
    phase_w = [(n * 37 + k * 911) % 2300 + 0.5 * k for k in range(3)]
    lines = [
        f"power,meter={METER} import_w={sum(phase_w):.1f},export_w=0.0 {t}",
        *(f"power,meter={METER},phase=L{k + 1} import_w={w:.1f},export_w=0.0 {t}" for k, w in enumerate(phase_w)),
        *(f"voltage,meter={METER},phase=L{k + 1} voltage_v={229.0 + ((n + k) % 40) / 10:.1f} {t}" for k in range(3)),
        *(f"current,meter={METER},phase=L{k + 1} current_a={w / 230:.2f} {t}" for k, w in enumerate(phase_w)),
        f"energy,meter={METER} import_t1_kwh={12000 + n / 3600:.3f},import_t2_kwh=9876.543,"
        f"export_t1_kwh=1234.567,export_t2_kwh=456.789,import_total_kwh={21876.543 + n / 3600:.3f},"
        f"export_total_kwh=1691.356,active_tariff={1 + (n // 3600) % 2}i {t}",
        f"capacity,meter={METER} demand_kw={sum(phase_w) / 1000:.3f},projected_kw={sum(phase_w) / 900:.3f},"
        f"running_peak_kw=4.321,shed_kw=0.0,peak_warning=0i {t}",
    ]
    return lines


def point_stream() -> Iterator[str]:
    n = 0
    while True:
        yield from telegram_lines(n)
        n += 1


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def make_batches(batches: int, points_per_batch: int) -> list[list[str]]:
    stream = point_stream()
    return [[next(stream) for _ in range(points_per_batch)] for _ in range(batches)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--points-per-batch", type=int, default=5000)
    parser.add_argument("--live-points-per-s", type=float, default=40.0)
    parser.add_argument("--dir", type=Path, default=None, help="where to put the spool (default: a temp dir)")
    args = parser.parse_args()

    batches = make_batches(args.batches, args.points_per_batch)
    total_points = args.batches * args.points_per_batch

    # Baseline: touch every line once, in memory.
    start = time.perf_counter()
    touched_bytes = 0
    for batch in batches:
        for line in batch:
            touched_bytes += len(line)
    memory_s = time.perf_counter() - start

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "spool.db"
        spool = Spool(path)
        start = time.perf_counter()
        for batch in batches:
            spool.put(batch)
        fill_s = time.perf_counter() - start
        stored_bytes = spool.backlog_bytes
        assert spool.backlog_points == total_points
        spool.close()
        file_bytes = path.stat().st_size

        del batches  # from here on, memory is the drain's own
        spool = Spool(path)  # drain after a restart, as after an outage
        drained = 0
        rss_before = rss_peak = rss_bytes()
        half_s = last_ack_s = 0.0
        start = time.perf_counter()
        while (spooled := spool.oldest()) is not None:
            drained += len(spooled.lines)
            acked_at = time.perf_counter()
            spool.ack(spooled.id)
            # The last ack also gives the emptied file's pages back (incremental_vacuum): a one-off cost
            # that grows with the file, not part of the per-batch rate.
            last_ack_s = time.perf_counter() - acked_at
            if drained % (args.points_per_batch * 10) == 0:
                rss_peak = max(rss_peak, rss_bytes())
            if not half_s and drained * 2 >= total_points:
                half_s = time.perf_counter() - start
        drain_s = time.perf_counter() - start
        spool.close()
        assert drained == total_points

    drain_rate = total_points / drain_s
    memory_rate = total_points / memory_s
    points_per_telegram = len(telegram_lines(0))
    print(f"command: python {shlex.join(sys.argv)}")
    print(
        f"python {platform.python_version()}, sqlite {sqlite3.sqlite_version}, "
        f"{platform.machine()}, {platform.system()}"
    )
    print(
        f"spool: {args.batches} batches x {args.points_per_batch} points = {total_points} points, "
        f"{touched_bytes / total_points:.1f} bytes/line raw, {stored_bytes / total_points:.2f} bytes/point "
        f"stored (compression {touched_bytes / stored_bytes:.1f}x), file {file_bytes / 1e6:.1f} MB"
    )
    print(f"fill  (put):          {total_points / fill_s:12,.0f} points/s  ({fill_s:.2f} s)")
    print(f"drain (oldest+ack):   {drain_rate:12,.0f} points/s  ({drain_s:.2f} s); first half "
          f"{total_points / 2 / half_s:,.0f}/s, second half "
          f"{total_points / 2 / (drain_s - half_s - last_ack_s):,.0f}/s "
          f"(linear: equal) + {last_ack_s:.2f} s at the end to give the file's pages back; memory grew "
          f"{(rss_peak - rss_before) / 1e6:.1f} MB while draining (flat: about 0)")
    print(f"baseline, in memory:  {memory_rate:12,.0f} points/s; drain/in-memory = {drain_rate / memory_rate:.3f}")
    print(
        f"baseline, live meter: {args.live_points_per_s:12,.0f} points/s; "
        f"drain/live = {drain_rate / args.live_points_per_s:,.0f}x "
        f"(this generator gives {points_per_telegram} points per telegram)"
    )
    outage_hours_per_gib = (1 << 30) / (stored_bytes / total_points) / args.live_points_per_s / 3600
    print(f"a 1 GiB spool holds {outage_hours_per_gib / 24:,.0f} days of points at the live rate")


if __name__ == "__main__":
    main()
