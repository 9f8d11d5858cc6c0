"""Energy cost: a simulated week priced by hand, and by ``p1logger cost`` and the stored ``cost`` points.

The week (Monday 2026-03-23 to Monday 2026-03-30, Europe/Brussels, with the
switch to summer time on Sunday) is one telegram every 5 minutes from the
simulated Belgian meter, with one hour missing on Wednesday morning.  The
expected cost is worked out here straight from the telegram text: counter
differences between consecutive telegrams, shared over the quarter-hours they
cover by time, times the price of each quarter; gas when its capture time
moves; the fixed part per whole day.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import pytest
from helpers.influx_servers import InfluxServer
from test_run_cli import cli_env, log_messages, p1logger

from p1logger.cli import main as cli_main
from p1logger.cost import CostSummary, CostTracker
from p1logger.reader import TelegramReader
from p1logger.simulate import PROFILES, MeterModel
from p1logger.timestamps import TimestampParser

ZONE_NAME = "Europe/Brussels"
TIMESTAMPS = TimestampParser(ZONE_NAME)
ZONE = TIMESTAMPS.zone
WEEK_START = datetime(2026, 3, 23, tzinfo=ZONE)
STEP_S = 300
WEEK_S = 7 * 86400 - 3600  # the week is an hour short: summer time starts on Sunday
MISSING = (datetime(2026, 3, 25, 9, 55, tzinfo=ZONE), datetime(2026, 3, 25, 11, 0, tzinfo=ZONE))  # exclusive
DAYS = [date(2026, 3, 23) + timedelta(days=i) for i in range(7)]
CENT = 0.0051  # rounding to the cent on one side only


# --------------------------------------------------------------------------- the week


@dataclass(frozen=True)
class Seen:
    """What one telegram says, read from its text."""

    time_s: int
    imports: dict[int, float]
    exports: dict[int, float]
    gas: tuple[str, float]  # (capture stamp as sent, m3)
    water: tuple[str, float]


def _read(text: str, time_s: int) -> Seen:
    def kwh(code: str) -> float:
        match = re.search(rf"^1-0:{re.escape(code)}\((\d+\.\d+)\*kWh\)", text, re.MULTILINE)
        assert match, code
        return float(match.group(1))

    gas = re.search(r"^0-1:24\.2\.3\((\w+)\)\((\d+\.\d+)\*m3\)", text, re.MULTILINE)
    water = re.search(r"^0-2:24\.2\.1\((\w+)\)\((\d+\.\d+)\*m3\)", text, re.MULTILINE)
    assert gas and water
    return Seen(time_s, {1: kwh("1.8.1"), 2: kwh("1.8.2")}, {1: kwh("2.8.1"), 2: kwh("2.8.2")},
                (gas.group(1), float(gas.group(2))), (water.group(1), float(water.group(2))))


@dataclass(frozen=True)
class Week:
    raw: bytes
    seen: list[Seen]


@pytest.fixture(scope="module")
def week() -> Week:
    model = MeterModel(PROFILES["be3"], WEEK_START.astimezone(timezone.utc), seed=3)
    raw: list[bytes] = []
    seen: list[Seen] = []
    start_s = int(WEEK_START.timestamp())
    for offset in range(0, WEEK_S + 1, STEP_S):
        model.advance_to(datetime.fromtimestamp(start_s + offset, timezone.utc))
        if MISSING[0].timestamp() < start_s + offset < MISSING[1].timestamp():
            continue
        telegram = model.telegram()
        raw.append(telegram)
        seen.append(_read(telegram.decode("ascii"), start_s + offset))
    return Week(b"".join(raw), seen)


# --------------------------------------------------------------------------- contracts, as the test prices them


def market_price(index: int) -> float:
    """Quarter-hour day-ahead prices, negative at times, as EUR per kWh."""
    return round(0.05 + 0.12 * math.sin(index / 9.0) + 0.01 * (index % 4), 5)


PRICES_FROM = datetime(2026, 3, 22, 23, 0, tzinfo=timezone.utc)


def prices_csv(path: Path, quarters: int = 8 * 96) -> None:
    rows = ["start,eur_per_kwh"]
    for i in range(quarters):
        moment = (PRICES_FROM + timedelta(minutes=15 * i)).astimezone(ZONE)
        rows.append(f"{moment.isoformat()},{market_price(i)}")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


def market_at(quarter_s: int) -> float:
    return market_price((quarter_s - int(PRICES_FROM.timestamp())) // 900)


FIXED = {"import": {1: 0.32, 2: 0.26}, "export": {1: 0.04, 2: 0.03}, "fixed": 0.25, "gas": 1.15, "water": 4.5, "vat": 0.0}
DYNAMIC = {"import": (1.1, 0.12), "export": (1.0, -0.01), "fixed": 0.30, "gas": 1.20, "water": 4.5, "vat": 6.0}

FIXED_TOML = """
[[contract]]
name = "fixed"
from = 2026-01-01
{to}
import_eur_per_kwh = {{ 1 = 0.32, 2 = 0.26 }}
export_eur_per_kwh = {{ 1 = 0.04, 2 = 0.03 }}
fixed_eur_per_day = 0.25
gas_eur_per_m3 = 1.15
water_eur_per_m3 = 4.50
"""
DYNAMIC_TOML = """
[[contract]]
name = "dynamic"
from = {start}
import_prices_csv = "prices.csv"
import_multiplier = 1.1
import_adder_eur_per_kwh = 0.12
export_prices_csv = "prices.csv"
export_adder_eur_per_kwh = -0.01
vat_percent = 6
fixed_eur_per_day = 0.30
gas_eur_per_m3 = 1.20
water_eur_per_m3 = 4.50
"""
SWITCH_DAY = date(2026, 3, 26)  # Thursday: the dynamic contract starts
SCENARIOS: dict[str, tuple[str, Callable[[date], dict[str, Any]]]] = {
    "fixed": (FIXED_TOML.format(to=""), lambda day: FIXED),
    "dynamic": (DYNAMIC_TOML.format(start="2026-01-01"), lambda day: DYNAMIC),
    "switch": (FIXED_TOML.format(to="to = 2026-03-25") + DYNAMIC_TOML.format(start="2026-03-26"),
               lambda day: DYNAMIC if day >= SWITCH_DAY else FIXED),
}


def tariff_files(folder: Path, scenario: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    prices_csv(folder / "prices.csv")
    path = folder / "tariff.toml"
    path.write_text(SCENARIOS[scenario][0], encoding="utf-8")
    return path


# --------------------------------------------------------------------------- by hand


def local_day(time_s: int) -> date:
    return datetime.fromtimestamp(time_s, timezone.utc).astimezone(ZONE).date()


def price(contract: dict[str, Any], direction: str, register: int, quarter_s: int) -> float:
    spec = contract[direction]
    if isinstance(spec, dict):
        value = spec[register]
    else:
        multiplier, adder = spec
        value = market_at(quarter_s) * multiplier + adder
    vat = 1 + contract["vat"] / 100 if direction == "import" else 1.0
    return value * vat


def by_hand(seen: list[Seen], contract_on: Callable[[date], dict[str, Any]]) -> dict[date, dict[str, float]]:
    days: dict[date, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for before, after in zip(seen, seen[1:]):
        span = after.time_s - before.time_s
        quarter = before.time_s - before.time_s % 900
        while quarter < after.time_s:
            share = (min(after.time_s, quarter + 900) - max(before.time_s, quarter)) / span
            contract = contract_on(local_day(quarter))
            totals = days[local_day(quarter)]
            for direction, old, new in (("import", before.imports, after.imports),
                                        ("export", before.exports, after.exports)):
                for register in (1, 2):
                    kwh = (new[register] - old[register]) * share
                    totals[f"{direction}_kwh"] += kwh
                    totals[f"{direction}_eur"] += kwh * price(contract, direction, register, quarter)
            quarter += 900
        where = after.time_s - 1 - (after.time_s - 1) % 900
        contract = contract_on(local_day(where))
        for kind, old, new in (("gas", before.gas, after.gas), ("water", before.water, after.water)):
            if new[0] != old[0]:
                m3 = new[1] - old[1]
                days[local_day(where)][f"{kind}_m3"] += m3
                days[local_day(where)][f"{kind}_eur"] += m3 * contract[kind] * (1 + contract["vat"] / 100)
    for day, totals in days.items():
        contract = contract_on(day)
        totals["fixed_eur"] = contract["fixed"] * (1 + contract["vat"] / 100)  # every day is whole
        totals["total_eur"] = (totals["import_eur"] - totals["export_eur"] + totals["gas_eur"] + totals["water_eur"]
                               + totals["fixed_eur"])
    return days


def week_total(days: dict[date, dict[str, float]]) -> dict[str, float]:
    total: dict[str, float] = defaultdict(float)
    for values in days.values():
        for key, value in values.items():
            total[key] += value
    return total


EUR_KEYS = ("import_eur", "export_eur", "gas_eur", "water_eur", "fixed_eur", "total_eur")


# --------------------------------------------------------------------------- p1logger cost agrees


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_p1logger_cost_agrees_with_the_week_worked_out_by_hand(
    scenario: str, week: Week, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recording = tmp_path / "week.txt"
    recording.write_bytes(week.raw)
    tariff = tariff_files(tmp_path / "tariff", scenario)
    expected = by_hand(week.seen, SCENARIOS[scenario][1])
    assert sorted(expected) == DAYS

    code = cli_main(["cost", "--input", str(recording), "--tariff", str(tariff), "--timezone", ZONE_NAME,
                     "--format", "json"])
    out = capsys.readouterr().out
    assert code == 0
    result = json.loads(out)

    assert result["from"] == "2026-03-23T00:00:00+01:00"
    assert result["to"] == "2026-03-30T00:00:00+02:00"
    # Every quarter of the week once: 96 a day, 92 on the day summer time starts.
    assert result["quarters"] == 6 * 96 + 92
    assert result["quarters_unpriced"] == 0
    assert [day["date"] for day in result["days"]] == [d.isoformat() for d in DAYS]
    for day in result["days"]:
        hand = expected[date.fromisoformat(day["date"])]
        for key in EUR_KEYS:
            assert abs(day[key] - hand[key]) <= CENT, (day["date"], key, day[key], hand[key])
        assert abs(day["import_kwh"] - hand["import_kwh"]) <= 0.0005
        assert abs(day["gas_m3"] - hand["gas_m3"]) <= 0.0005
    total = week_total(expected)
    for key in EUR_KEYS:
        assert abs(result[key] - total[key]) <= CENT, (key, result[key], total[key])
    if scenario == "switch":
        # The switch is visible: Wednesday pays the fixed contract's day charge, Thursday the dynamic one's.
        fixed = {day["date"]: day["fixed_eur"] for day in result["days"]}
        assert (fixed["2026-03-25"], fixed["2026-03-26"]) == (0.25, 0.32)


def test_the_table_shows_each_local_day_and_the_total(
    week: Week, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recording = tmp_path / "week.txt"
    recording.write_bytes(week.raw)
    tariff = tariff_files(tmp_path / "tariff", "fixed")
    assert cli_main(["cost", "--input", str(recording), "--tariff", str(tariff), "--timezone", ZONE_NAME]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("== energy cost from 2026-03-23T00:00:00+01:00 to 2026-03-30T00:00:00+02:00 "
                        "(Europe/Brussels)")
    assert [line.split()[0] for line in lines[3:10]] == [d.isoformat() for d in DAYS]
    total = week_total(by_hand(week.seen, SCENARIOS["fixed"][1]))
    assert lines[11].split()[0] == "total"
    assert abs(float(lines[11].split()[-1]) - total["total_eur"]) <= CENT


# --------------------------------------------------------------------------- the tracker itself


def telegrams(raw: bytes) -> list[Any]:
    reader = TelegramReader(TIMESTAMPS)
    return reader.feed(raw)


def test_live_figures_follow_the_quarters(week: Week, tmp_path: Path) -> None:
    from p1logger.tariff import load_tariff

    tariff = load_tariff(tariff_files(tmp_path, "switch"), ZONE)
    finished: list[Any] = []
    tracker = CostTracker(tariff, ZONE, on_quarter=finished.append)
    noon = int(datetime(2026, 3, 27, 12, 0, tzinfo=ZONE).timestamp())
    stored: list[str] = []
    for telegram in telegrams(week.raw):
        stored += tracker.build(telegram, 0.0)
        if int(telegram.timestamp.timestamp()) == noon:
            break
    figures = tracker.figures()
    assert figures is not None
    # Friday noon: the quarter 12:00-12:15 has just begun; 48 quarters of Friday are finished.
    friday = [q for q in finished if q.day == date(2026, 3, 27)]
    assert len(friday) == 48
    fixed_share = 0.30 * 1.06 / 96
    assert figures["quarter_start"] == "2026-03-27T11:00:00Z"
    assert figures["quarter_total_eur"] == round(fixed_share, 6)
    assert figures["import_price_eur_per_kwh"] == round(price(DYNAMIC, "import", 1, noon), 6)
    assert figures["export_price_eur_per_kwh"] == round(price(DYNAMIC, "export", 1, noon), 6)
    assert figures["today_total_eur"] == pytest.approx(sum(q.total_eur for q in friday) + fixed_share, abs=1e-6)
    last = stored[-1]
    assert last.startswith("cost,meter=1SAG1100000001 ")
    assert last.endswith(f" {noon - 900}")
    assert f"total_eur={figures['last_quarter_total_eur']!r}" in last
    assert figures["prices_missing"] is False


def test_counter_reset_and_clock_step_back_cost_nothing_negative_or_twice(week: Week, tmp_path: Path) -> None:
    from p1logger.tariff import load_tariff

    tariff = load_tariff(tariff_files(tmp_path, "fixed"), ZONE)
    decoded = telegrams(week.raw)[:13]  # the first hour: 00:00 to 01:00
    summary = CostSummary(ZONE)
    tracker = CostTracker(tariff, ZONE, on_quarter=summary.add)
    for telegram in decoded[:7]:
        tracker.build(telegram, 0.0)
    # The same telegram again, and one from 10 minutes before: a new baseline, nothing counted.
    tracker.build(decoded[6], 0.0)
    tracker.build(decoded[4], 0.0)
    # The meter restarts with its import counters 2800 kWh lower, and counts on from there.
    for telegram in decoded[7:]:
        for obis in ("1-0:1.8.1", "1-0:1.8.2"):
            reading = telegram.fields[obis]
            telegram.fields[obis] = reading._replace(value=round(reading.value - 2800.0, 3))
    for telegram in decoded[7:]:
        tracker.build(telegram, 0.0)
    assert (tracker.stats.clock_steps_back, tracker.stats.counter_resets) == (1, 2)
    seen = week.seen[:13]
    # Expected: the first 30 minutes, and 30:00-35:00 not at all (the reset), then 35:00 to 60:00.
    hand_kwh = sum(seen[6].imports[r] - seen[0].imports[r] + seen[12].imports[r] - seen[7].imports[r] for r in (1, 2))
    assert summary.total.import_kwh == pytest.approx(hand_kwh, abs=1e-9)
    assert summary.total.quarters == 4
    assert all(day.import_eur >= 0 for day in summary.days.values())


def test_a_counter_that_jumps_up_is_not_energy(week: Week, tmp_path: Path) -> None:
    from p1logger.tariff import load_tariff

    tariff = load_tariff(tariff_files(tmp_path, "fixed"), ZONE)
    decoded = telegrams(week.raw)[:4]
    reading = decoded[2].fields["1-0:1.8.1"]
    decoded[2].fields["1-0:1.8.1"] = reading._replace(value=reading.value + 500.0)  # 500 kWh in 5 minutes
    summary = CostSummary(ZONE)
    tracker = CostTracker(tariff, ZONE, on_quarter=summary.add)
    for telegram in decoded:
        tracker.build(telegram, 0.0)
    tracker.finish()
    seen = week.seen
    # 00:05-00:10 register 1 is skipped; at 00:15 it drops back by 500 and is skipped again.
    expected = (seen[1].imports[1] - seen[0].imports[1]) + sum(seen[3].imports[2] - seen[0].imports[2] for _ in [0])
    assert tracker.stats.counter_resets == 2
    assert summary.total.import_kwh == pytest.approx(expected, abs=1e-9)


def test_prices_that_run_out_warn_once_and_come_back_when_the_csv_grows(
    week: Week, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from p1logger.tariff import load_tariff

    folder = tmp_path / "t"
    path = tariff_files(folder, "dynamic")
    # Prices from Monday 00:00 to 06:00 local only.
    prices_csv(folder / "prices.csv", quarters=24)
    tariff = load_tariff(path, ZONE)
    summary = CostSummary(ZONE)
    tracker = CostTracker(tariff, ZONE, on_quarter=summary.add)
    decoded = telegrams(week.raw)
    caplog.set_level("WARNING", logger="p1logger.cost")
    for telegram in decoded[: 12 * 8 + 1]:  # to 08:00
        tracker.build(telegram, 0.0)
    figures = tracker.figures()
    assert figures is not None and figures["prices_missing"] is True and figures["import_price_eur_per_kwh"] is None
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert warnings[0].startswith("no import price for the quarter from 2026-03-23T06:00+01:00")
    assert f"{folder / 'prices.csv'} ends at 2026-03-23T06:00+01:00" in warnings[0]
    assert summary.total.quarters == 32 and summary.total.quarters_unpriced == 8
    # The kWh of the unpriced quarters are kept, without euros.
    assert summary.total.import_kwh == pytest.approx(sum(week.seen[96].imports.values())
                                                     - sum(week.seen[0].imports.values()), abs=1e-9)
    # A daily fetch writes the rest; the next quarter is priced again.
    prices_csv(folder / "prices.csv")
    import os
    os.utime(folder / "prices.csv", ns=(1, 1))
    for telegram in decoded[12 * 8 + 1: 12 * 8 + 4]:
        tracker.build(telegram, 0.0)
    assert tracker.figures()["prices_missing"] is False  # type: ignore[index]
    assert [r.getMessage() for r in caplog.records][1] == (
        "prices are back from 2026-03-23T08:00+01:00; 8 quarters since 2026-03-23T06:00+01:00 have no euros")


# --------------------------------------------------------------------------- stored points agree


def test_stored_cost_points_agree_with_the_week_worked_out_by_hand(
    week: Week, influxd: InfluxServer, influx_db: str, tmp_path: Path
) -> None:
    recording = tmp_path / "week.txt"
    recording.write_bytes(week.raw)
    tariff = tariff_files(tmp_path / "tariff", "switch")
    env = cli_env(P1_SOURCE=f"file:{recording}", INFLUX_API="v1", INFLUX_URL=influxd.url, INFLUX_BUCKET=influx_db,
                  P1_SPOOL_DIR=tmp_path / "spool", P1_TIMEZONE=ZONE_NAME, P1_TARIFF_FILE=tariff)
    result = p1logger("run", env=env, timeout_s=120)
    assert result.returncode == 0, result.stderr
    assert not [m for m in log_messages(result.stderr) if "price" in m], result.stderr

    rows = influxd.rows(influx_db, "cost")
    assert len(rows) == 6 * 96 + 92
    assert {row["meter"] for row in rows} == {"1SAG1100000001"}
    assert rows[0]["time"] == int(WEEK_START.timestamp())
    assert rows[-1]["time"] == int(WEEK_START.timestamp()) + WEEK_S - 900
    expected = by_hand(week.seen, SCENARIOS["switch"][1])
    stored: dict[date, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for row in rows:
        for key in EUR_KEYS:
            stored[local_day(row["time"])][key] += row[key]
    for day in DAYS:
        for key in EUR_KEYS:
            assert abs(stored[day][key] - expected[day][key]) <= CENT, (day, key)
    total = week_total(expected)
    summed = influxd.query("SELECT sum(total_eur) FROM cost", influx_db)["results"][0]["series"][0]["values"][0][1]
    assert abs(summed - total["total_eur"]) <= CENT
    # The dashboards' "by day" query: InfluxQL days in the meter's zone.
    by_day = influxd.query(f"SELECT sum(total_eur) FROM cost WHERE time >= '2026-03-22T23:00:00Z' AND "
                           f"time < '2026-03-29T22:00:00Z' GROUP BY time(1d) tz('{ZONE_NAME}')",
                           influx_db)["results"][0]["series"][0]["values"]
    assert len(by_day) == 7
    for (_, value), day in zip(by_day, DAYS):
        assert abs(value - expected[day]["total_eur"]) <= CENT, day


# --------------------------------------------------------------------------- a Dutch meter


def test_a_dutch_day_with_hourly_gas(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Register 1 is the low rate in the Netherlands; gas comes once an hour with its capture time."""
    zone = TimestampParser("Europe/Amsterdam").zone
    model = MeterModel(PROFILES["nl"], datetime(2026, 6, 1, tzinfo=zone).astimezone(timezone.utc), seed=5)
    seen: list[Seen] = []
    raw = b""
    start_s = int(datetime(2026, 6, 1, tzinfo=zone).timestamp())
    for offset in range(0, 86400 + 1, 300):
        model.advance_to(datetime.fromtimestamp(start_s + offset, timezone.utc))
        telegram = model.telegram()
        raw += telegram
        text = telegram.decode("ascii")
        gas = re.search(r"^0-1:24\.2\.1\((\w+)\)\((\d+\.\d+)\*m3\)", text, re.MULTILINE)
        assert gas
        seen.append(Seen(start_s + offset, {1: _kwh(text, "1.8.1"), 2: _kwh(text, "1.8.2")},
                         {1: _kwh(text, "2.8.1"), 2: _kwh(text, "2.8.2")}, (gas.group(1), float(gas.group(2))),
                         ("", 0.0)))
    (tmp_path / "week.txt").write_bytes(raw)
    tariff = write_text(tmp_path / "tariff.toml", """
[[contract]]
from = 2026-01-01
import_eur_per_kwh = { 1 = 0.25, 2 = 0.29 }   # 1 = low (night and weekend), 2 = normal
export_eur_per_kwh = { 1 = 0.05, 2 = 0.07 }
vat_percent = 21
fixed_eur_per_day = -0.35
gas_eur_per_m3 = 1.00
""")
    contract = {"import": {1: 0.25, 2: 0.29}, "export": {1: 0.05, 2: 0.07}, "fixed": -0.35, "gas": 1.0,
                "water": 0.0, "vat": 21.0}
    expected = by_hand(seen, lambda day: contract)[date(2026, 6, 1)]
    assert cli_main(["cost", "--input", str(tmp_path / "week.txt"), "--tariff", str(tariff), "--timezone",
                     "Europe/Amsterdam", "--format", "json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [day["date"] for day in result["days"]] == ["2026-06-01"]
    # 24 hourly gas readings in the day: 23 differences between them (the first is the baseline).
    assert abs(result["gas_m3"] - expected["gas_m3"]) <= 0.0005 and expected["gas_m3"] > 0
    for key in EUR_KEYS:
        assert abs(result[key] - expected[key]) <= CENT, key
    assert result["fixed_eur"] == round(-0.35 * 1.21, 2)


def _kwh(text: str, code: str) -> float:
    match = re.search(rf"^1-0:{re.escape(code)}\((\d+\.\d+)\*kWh\)", text, re.MULTILINE)
    assert match
    return float(match.group(1))


def write_text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- wired into run and replay


def test_the_cost_builder_is_on_with_a_tariff_file_and_its_figures_reach_the_records(
    week: Week, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from p1logger import cli
    from p1logger.builders import create_builders
    from p1logger.pipeline import RecordMaker

    monkeypatch.delenv("P1_TARIFF_FILE", raising=False)
    monkeypatch.delenv("P1_CAPACITY_PRICE", raising=False)
    without = cli.build_parser().parse_args(["run", "--source", "file:x"])
    assert [b.name for b in create_builders(without, ZONE, False)] == ["points", "capacity"]

    monkeypatch.setenv("P1_TARIFF_FILE", str(tariff_files(tmp_path / "t", "switch")))
    settings = cli.build_parser().parse_args(["run", "--source", "file:x"])
    builders = create_builders(settings, ZONE, False)
    assert [b.name for b in builders] == ["points", "capacity", "cost"]

    maker = RecordMaker(builders, want_figures=True)
    totals: dict[int, float] = {}
    published: dict[int, float] = {}
    for telegram in telegrams(week.raw[: len(week.raw) // 3]):
        record = maker.make(telegram, 0.0)
        for line in record.lines:
            if line.startswith("cost,"):
                time_s = int(line.rsplit(" ", 1)[1])
                totals[time_s] = float(re.search(r"total_eur=([-\d.e]+)", line).group(1))  # type: ignore[union-attr]
                figures = record.figures["cost"]
                published[time_s] = figures["last_quarter_total_eur"]  # type: ignore[assignment]
    assert len(totals) > 200
    assert published == totals


def test_the_tariff_files_capacity_price_is_used_when_none_is_set(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from p1logger import cli
    from p1logger.builders import create_builders

    path = tmp_path / "tariff.toml"
    path.write_text("[[contract]]\nfrom = 2020-01-01\nimport_eur_per_kwh = 0.3\ncapacity_eur_per_kw_year = 61.5\n",
                    encoding="utf-8")
    monkeypatch.delenv("P1_CAPACITY_PRICE", raising=False)
    settings = cli.build_parser().parse_args(["run", "--source", "file:x", "--tariff", str(path)])
    assert create_builders(settings, ZONE, False)[1].tracker.price_eur_per_kw_year == 61.5  # type: ignore[attr-defined]
    flagged = cli.build_parser().parse_args(["run", "--source", "file:x", "--tariff", str(path), "--capacity-price", "40"])
    assert create_builders(flagged, ZONE, False)[1].tracker.price_eur_per_kw_year == 40.0  # type: ignore[attr-defined]
    monkeypatch.setenv("P1_CAPACITY_PRICE", "48")
    settings = cli.build_parser().parse_args(["run", "--source", "file:x", "--tariff", str(path)])
    assert create_builders(settings, ZONE, False)[1].tracker.price_eur_per_kw_year == 48.0  # type: ignore[attr-defined]


def test_an_archive_gives_the_same_cost_as_the_recording(
    week: Week, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A gzipped daily archive file (``run --archive``), read like ``dump`` and ``capacity`` read it."""
    import gzip

    from p1logger.archive_format import encode_record

    plain = tmp_path / "week.txt"
    plain.write_bytes(week.raw)
    archive = tmp_path / "p1-2026-03-23.txt.gz"
    frames = [b"/" + part for part in week.raw.split(b"/") if part]  # the header starts with "/": one per telegram
    archive.write_bytes(gzip.compress(b"".join(encode_record(frame, True, 0.0) for frame in frames)))
    tariff = str(tariff_files(tmp_path / "t", "dynamic"))
    results = []
    for path in (plain, archive):
        assert cli_main(["cost", "--input", str(path), "--tariff", tariff, "--timezone", ZONE_NAME,
                         "--format", "json"]) == 0
        results.append(json.loads(capsys.readouterr().out))
    assert results[0] == results[1]
    assert results[0]["quarters"] == 6 * 96 + 92
