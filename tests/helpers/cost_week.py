"""A simulated week of a Belgian meter and its energy cost worked out by hand (tests of #15).

The week (Monday 2026-03-23 to Monday 2026-03-30, Europe/Brussels, with the
switch to summer time on Sunday) is one telegram every 5 minutes from the
simulated Belgian meter, with one hour missing on Wednesday morning.  The
expected cost is worked out here straight from the telegram text, independently
of p1logger.cost: counter differences between consecutive telegrams, shared
over the quarter-hours they cover by time, times the price of each quarter;
gas and water when their capture time moves; the fixed part shared evenly over
a day's quarters.  ``p1logger cost``, the stored ``cost`` points and the MQTT
state are all checked against these figures.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

from p1logger.simulate import PROFILES, MeterModel
from p1logger.timestamps import TimestampParser

REPO = Path(__file__).resolve().parents[2]

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
    tariff: int = 1  # 0-0:96.14.0, the register counting now


def _read(text: str, time_s: int) -> Seen:
    def kwh(code: str) -> float:
        match = re.search(rf"^1-0:{re.escape(code)}\((\d+\.\d+)\*kWh\)", text, re.MULTILINE)
        assert match, code
        return float(match.group(1))

    gas = re.search(r"^0-1:24\.2\.3\((\w+)\)\((\d+\.\d+)\*m3\)", text, re.MULTILINE)
    water = re.search(r"^0-2:24\.2\.1\((\w+)\)\((\d+\.\d+)\*m3\)", text, re.MULTILINE)
    assert gas and water
    indicator = re.search(r"^0-0:96\.14\.0\((\d+)\)", text, re.MULTILINE)
    assert indicator
    return Seen(time_s, {1: kwh("1.8.1"), 2: kwh("1.8.2")}, {1: kwh("2.8.1"), 2: kwh("2.8.2")},
                (gas.group(1), float(gas.group(2))), (water.group(1), float(water.group(2))),
                int(indicator.group(1)))


@dataclass(frozen=True)
class Week:
    raw: bytes
    seen: list[Seen]


def make_week() -> Week:
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


def day_quarters(day: date) -> int:
    """96, or 92 and 100 on the days the clocks change."""
    start = datetime(day.year, day.month, day.day, tzinfo=ZONE)
    following = day + timedelta(days=1)
    end = datetime(following.year, following.month, following.day, tzinfo=ZONE)
    return int(end.timestamp() - start.timestamp()) // 900


def by_quarter(seen: list[Seen], contract_on: Callable[[date], dict[str, Any]]) -> dict[int, dict[str, float]]:
    """Quarter start (epoch s) -> its amounts and euros, for every quarter the telegrams cover."""
    quarters: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for before, after in zip(seen, seen[1:]):
        span = after.time_s - before.time_s
        quarter = before.time_s - before.time_s % 900
        while quarter < after.time_s:
            share = (min(after.time_s, quarter + 900) - max(before.time_s, quarter)) / span
            contract = contract_on(local_day(quarter))
            totals = quarters[quarter]
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
                quarters[where][f"{kind}_m3"] += m3
                quarters[where][f"{kind}_eur"] += m3 * contract[kind] * (1 + contract["vat"] / 100)
    for start, totals in quarters.items():
        day = local_day(start)
        contract = contract_on(day)
        totals["fixed_eur"] = contract["fixed"] * (1 + contract["vat"] / 100) / day_quarters(day)
        totals["total_eur"] = (totals["import_eur"] - totals["export_eur"] + totals["gas_eur"] + totals["water_eur"]
                               + totals["fixed_eur"])
    return quarters


def by_hand(seen: list[Seen], contract_on: Callable[[date], dict[str, Any]]) -> dict[date, dict[str, float]]:
    """Local day -> its amounts and euros."""
    days: dict[date, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for start, totals in by_quarter(seen, contract_on).items():
        for key, value in totals.items():
            days[local_day(start)][key] += value
    return days


def week_total(days: dict[date, dict[str, float]]) -> dict[str, float]:
    total: dict[str, float] = defaultdict(float)
    for values in days.values():
        for key, value in values.items():
            total[key] += value
    return total


EUR_KEYS = ("import_eur", "export_eur", "gas_eur", "water_eur", "fixed_eur", "total_eur")


# --------------------------------------------------------------------------- running the logger


def cli_env(**settings: str | Path) -> dict[str, str]:
    """The machine's environment without any P1_* or INFLUX_* setting, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("P1_", "INFLUX_"))}
    env.update({k: str(v) for k, v in settings.items()})
    return env


def p1logger(*args: str, env: dict[str, str], timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "p1logger", *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=timeout_s, check=False)


def log_messages(stderr: str) -> list[str]:
    """The messages of the log lines ("<date> <time> LEVEL logger: message")."""
    return [m.group(1) for m in re.finditer(r"^\S+ \S+ [A-Z]+ [\w.]+: (.*)$", stderr, re.MULTILINE)]
