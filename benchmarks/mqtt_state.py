"""What the MQTT output costs per telegram, against the InfluxDB points for the same telegram.

    python benchmarks/mqtt_state.py [--telegrams 3600]

Telegrams from the simulated Belgian three-phase meter (p1logger.simulate,
profile be3), decoded once. Then, in the same run:

- baseline: ``PointBuilder.build`` (the line protocol InfluxDB gets);
- MQTT: ``state.build_state`` + ``state.encode`` (the JSON state message);
- MQTT with the interval option (``Averager``, 10 s).

Prints microseconds per telegram and the ratio MQTT / points. No broker: the
network cost is paho's and the broker's, not p1logger's.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from p1logger.decode import Telegram  # noqa: E402
from p1logger.outputs.mqtt import state  # noqa: E402
from p1logger.points import PointBuilder  # noqa: E402
from p1logger.reader import TelegramReader  # noqa: E402
from p1logger.simulate import PROFILES, MeterModel  # noqa: E402
from p1logger.timestamps import TimestampParser  # noqa: E402

ZONE = ZoneInfo("Europe/Brussels")


def telegrams(count: int) -> list[Telegram]:
    model = MeterModel(PROFILES["be3"], datetime(2025, 6, 17, 22, 0, tzinfo=timezone.utc))
    raw = b"".join([model.telegram()] + [model.next_telegram() for _ in range(count - 1)])
    decoded = [t for t in TelegramReader(TimestampParser(ZONE)).feed(raw) if isinstance(t, Telegram)]
    assert len(decoded) == count
    return decoded


def best_of(repeats: int, work: object) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()  # type: ignore[operator]
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--telegrams", type=int, default=3600)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    items = [(t, int(t.timestamp.timestamp()) if t.timestamp else 0) for t in telegrams(args.telegrams)]

    def points() -> None:
        builder = PointBuilder(ZONE)
        for t, time_s in items:
            builder.build(t, float(time_s))

    def mqtt() -> None:
        for t, time_s in items:
            state.encode(state.build_state(t, time_s))

    def mqtt_interval() -> None:
        averager = state.Averager(10)
        for t, time_s in items:
            due = averager.add(state.build_state(t, time_s), time_s)
            if due is not None:
                state.encode(due)

    n = len(items)
    base = best_of(args.repeats, points) / n * 1e6
    json_us = best_of(args.repeats, mqtt) / n * 1e6
    interval_us = best_of(args.repeats, mqtt_interval) / n * 1e6
    print(f"{n} telegrams (be3), best of {args.repeats}, Python {sys.version.split()[0]}")
    print(f"  points (baseline):        {base:7.1f} us/telegram")
    print(f"  MQTT state + JSON:        {json_us:7.1f} us/telegram  ratio {json_us / base:.2f}")
    print(f"  MQTT, 10 s interval:      {interval_us:7.1f} us/telegram  ratio {interval_us / base:.2f}")


if __name__ == "__main__":
    main()
