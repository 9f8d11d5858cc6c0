"""PointBuilder keeps what each reading became; its lines equal the plain path's, byte for byte.

The plain path (``reuse_readings=False``) converts and formats every field of
every telegram again; the default keeps the result per Reading object and per
value. Both are fed the same decoded telegrams (the real fixtures, several
rounds and interleaved, and simulated meters across both DST changes, with
values that change every second) and must write the same lines.
"""

from __future__ import annotations

import dataclasses
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from p1logger.decode import Reading, Telegram
from p1logger.points import PointBuilder
from p1logger.reader import TelegramReader
from p1logger.simulate import PROFILES, MeterModel
from p1logger.timestamps import TimestampParser

FIXTURES = Path(__file__).parent / "fixtures"
BRUSSELS = ZoneInfo("Europe/Brussels")


def decoded(raws: list[bytes]) -> list[Telegram]:
    reader = TelegramReader(TimestampParser(BRUSSELS))
    return [item for raw in raws for item in reader.feed(raw) if isinstance(item, Telegram)]


def both_ways(telegrams: list[Telegram], start_s: float = 1_700_000_000.5) -> tuple[list[str], PointBuilder,
                                                                                     PointBuilder]:
    reusing, plain = PointBuilder(BRUSSELS), PointBuilder(BRUSSELS, reuse_readings=False)
    lines = []
    for n, telegram in enumerate(telegrams):
        received_at_s = start_s + n
        made = reusing.build(telegram, received_at_s)
        assert made == plain.build(telegram, received_at_s), f"telegram {n}"
        lines += made
    return lines, reusing, plain


def test_real_fixtures_in_rounds_write_what_the_plain_path_writes() -> None:
    raws = [path.read_bytes() for path in sorted(FIXTURES.glob("*.txt"))]
    # Three rounds through one reader: its line cache hands out the same Reading objects again, and the
    # fixtures' meters interleave (clock fallbacks, several meters in one builder).
    telegrams = decoded(raws * 3)
    lines, reusing, plain = both_ways(telegrams)
    assert len(telegrams) >= 150 and len(lines) > 1000
    assert any("clock_fallback=1i" in line for line in lines)
    assert reusing.implausible_values == plain.implausible_values
    assert reusing.clock.stats == plain.clock.stats


@pytest.mark.parametrize(("profile", "start"), [
    ("be3", datetime(2025, 3, 30, 0, 30, tzinfo=timezone.utc)),  # 02:00 CET -> 03:00 CEST at 01:00 UTC
    ("be1", datetime(2025, 10, 26, 0, 30, tzinfo=timezone.utc)),  # 03:00 CEST -> 02:00 CET at 01:00 UTC
    ("nl", datetime(2025, 10, 26, 0, 30, tzinfo=timezone.utc)),
])
def test_simulated_meters_across_a_dst_change_write_what_the_plain_path_writes(profile: str,
                                                                               start: datetime) -> None:
    model = MeterModel(PROFILES[profile], start)
    telegrams = decoded([model.next_telegram() for _ in range(3600)])
    lines, _, _ = both_ways(telegrams, start.timestamp())
    assert len(telegrams) == 3600
    # Values changed all along, and both sides of the change are in the stream.
    assert len({line.split(" ")[1] for line in lines if line.startswith("power,") and ",phase=L1 " in line}) > 100
    times = sorted(int(line.rsplit(" ", 1)[1]) for line in lines if line.startswith("energy,"))
    change_s = int(datetime(2025, 3 if profile == "be3" else 10, 30 if profile == "be3" else 26, 1,
                            tzinfo=timezone.utc).timestamp())
    assert times[0] < change_s < times[-1]
    assert times == list(range(times[0], times[0] + 3600))  # one a second, no gap or repeat at the change
    assert any(line.startswith(("gas,", "water,")) for line in lines)


def test_equal_values_that_are_written_differently_are_kept_apart() -> None:
    base = decoded([(FIXTURES / "ndokter_dsmr_parser__fluvius_v171.txt").read_bytes()])[0]
    start = base.timestamp
    assert start is not None

    def with_power(n: int, value: object) -> Telegram:
        fields = {**base.fields, "1-0:1.7.0": Reading(value, "kW")}  # type: ignore[arg-type]
        return dataclasses.replace(base, fields=fields, timestamp=start + timedelta(seconds=n))

    # -0.0 == 0.0 and True == 1 == 1.0, but each is written (or left out) its own way.
    values = [0.0, -0.0, 0.0, 1, 1.0, True, 1.0, -0.0, 2.5, 2.5]
    lines, _, _ = both_ways([with_power(n, value) for n, value in enumerate(values)])
    total = [line.split(" ")[1] for line in lines if line.startswith("power,") and "phase=total" in line]
    assert total == ["import_w=0.0,export_w=0.0", "import_w=-0.0,export_w=0.0", "import_w=0.0,export_w=0.0",
                     "import_w=1000.0,export_w=0.0", "import_w=1000.0,export_w=0.0", "export_w=0.0",
                     "import_w=1000.0,export_w=0.0", "import_w=-0.0,export_w=0.0", "import_w=2500.0,export_w=0.0",
                     "import_w=2500.0,export_w=0.0"]


def test_readings_that_come_and_go_from_their_points_write_what_the_plain_path_writes() -> None:
    """Random telegrams of one meter: powers, voltages and the tariff turning into text, None, bools, odd units
    and implausible values and back, and lines dropped: the plan is moved on, or made afresh, never stale."""
    base = decoded([(FIXTURES / "ndokter_dsmr_parser__fluvius_v171.txt").read_bytes()])[0]
    start = base.timestamp
    assert start is not None and "0-0:96.14.0" in base.fields and "1-0:32.7.0" in base.fields
    choices: dict[str, list[Reading]] = {
        "1-0:1.7.0": [Reading(v, u) for v in (0.0, -0.0, 1.25, 1.5, True, None, "x") for u in ("kW", "W", "V")],
        "1-0:32.7.0": [Reading(v, "V") for v in (229.5, 231.0, 1e6, None)] + [Reading(230.0, None)],
        "1-0:2.8.1": [Reading(v, "kWh") for v in (100.5, 100.75, None)],
        "0-0:96.14.0": [Reading(1), Reading(2), Reading("2"), Reading(None)],
    }
    rng = random.Random(13)
    fields = dict(base.fields)
    telegrams = []
    for n in range(3000):
        for obis in rng.sample(sorted(choices), rng.randint(0, 2)):
            fields[obis] = rng.choice(choices[obis])
        sent = dict(fields)
        if rng.random() < 0.05:
            del sent[rng.choice(sorted(choices))]  # a line missing from one telegram
        telegrams.append(dataclasses.replace(base, fields=sent, timestamp=start + timedelta(seconds=n)))
    lines, reusing, plain = both_ways(telegrams)
    assert reusing.implausible_values == plain.implausible_values > 0
    energy = [line for line in lines if line.startswith("energy,")]
    assert len(energy) == 3000
    assert {"active_tariff=1i", "active_tariff=2i"} <= {part for line in energy for part in line.split(" ")[1].split(",")}
    assert any("active_tariff" not in line for line in energy)
