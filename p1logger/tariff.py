"""The tariff file: what a kWh, a m3 and a day cost, contract by contract.

A TOML file (``P1_TARIFF_FILE`` / ``--tariff``) holds a list of contracts, each
in force from a local date in the meter's time zone.  A contract prices
imported and exported energy in one of three ways:

- fixed, per tariff register (1-0:1.8.1 is register 1) or one price for all;
- by time-of-use slot, by the local hour of day (Wallonia's 2026 green, orange
  and red slots are a preset);
- dynamic, from a CSV of day-ahead prices (15-minute or hourly rows), times a
  multiplier plus an adder.

It is read and checked once at start-up: every mistake found gives one line
naming the file, the contract and the fix, and all of them together are one
ConfigError (exit 2).  A dynamic CSV is read again when its file changes, so a
daily ``p1logger prices fetch`` keeps a running logger priced.  Prices given
without VAT get it from ``vat_percent``; export credit gets none.  See
``docs/cost.md``.
"""

from __future__ import annotations

import bisect
import logging
import math
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from p1logger.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, from PyPI
    import tomli as tomllib

logger = logging.getLogger(__name__)

QUARTER_S = 900
HOUR_S = 3600
# A contract with more slots than this is a mistake, not a tariff.
_MAX_SLOTS = 24

# Slots by local hour of day ("HH:MM-HH:MM", the end may wrap past midnight), every day of the week.
TIME_OF_USE_PRESETS: dict[str, dict[str, tuple[str, ...]]] = {
    # CWaPE's optional "Impact" tariff, from 1 January 2026: green (ECO) 01-07 and 11-17,
    # orange (MEDIUM) 07-11 and 22-01, red (PIC) 17-22.
    "wallonia-2026": {
        "green": ("01:00-07:00", "11:00-17:00"),
        "orange": ("07:00-11:00", "22:00-01:00"),
        "red": ("17:00-22:00",),
    },
    # Wallonia's two-rate tariff from 2026, every day alike: off-peak 22-07 and 11-17.
    "wallonia-2026-two-rate": {
        "peak": ("07:00-11:00", "17:00-22:00"),
        "off-peak": ("22:00-07:00", "11:00-17:00"),
    },
}

KNOWN_KEYS = frozenset({
    "name", "from", "to",
    "import_eur_per_kwh", "export_eur_per_kwh", "time_of_use",
    "import_prices_csv", "import_multiplier", "import_adder_eur_per_kwh",
    "export_prices_csv", "export_multiplier", "export_adder_eur_per_kwh",
    "exclusive_night_meter", "exclusive_night_eur_per_kwh",
    "vat_percent", "fixed_eur_per_day", "gas_eur_per_m3", "water_eur_per_m3", "capacity_eur_per_kw_year",
})


# --------------------------------------------------------------------------- price series (CSV)


@dataclass
class PriceSeries:
    """Day-ahead prices from a CSV: ``start`` (ISO 8601 with offset), ``eur_per_kwh``.

    Each row holds until the next one; the last row lasts as long as the row before it
    (an hour when it is alone).  An hourly row therefore covers its four quarters.
    """

    path: Path
    starts_s: list[int] = field(default_factory=list)
    prices: list[float] = field(default_factory=list)
    last_step_s: int = HOUR_S
    mtime_ns: int = -1

    @property
    def end_s(self) -> int | None:
        """The first second without a price; None for an empty file."""
        return self.starts_s[-1] + self.last_step_s if self.starts_s else None

    def price_at(self, time_s: int) -> float | None:
        index = bisect.bisect_right(self.starts_s, time_s) - 1
        if index < 0:
            return None
        if index == len(self.starts_s) - 1 and time_s >= self.starts_s[index] + self.last_step_s:
            return None
        return self.prices[index]

    def load(self) -> list[str]:
        """Read the file; the mistakes found (the series is left as it was when there are any)."""
        try:
            stat = os.stat(self.path)
            text = self.path.read_text(encoding="utf-8-sig")
        except OSError as exc:
            return [f"{self.path}: cannot read it ({exc.strerror}): run 'p1logger prices fetch' or fix the path"]
        starts, prices, errors = parse_price_csv(text, str(self.path))
        if errors:
            return errors
        self.starts_s, self.prices = starts, prices
        if len(starts) >= 2:
            self.last_step_s = starts[-1] - starts[-2]
        self.mtime_ns = stat.st_mtime_ns
        return []

    def refresh(self) -> bool:
        """Read the file again if it changed; True when new prices were loaded."""
        try:
            mtime = os.stat(self.path).st_mtime_ns
        except OSError:
            return False
        if mtime == self.mtime_ns:
            return False
        errors = self.load()
        for error in errors:
            logger.error("%s; keeping the prices read before", error)
        return not errors


def parse_price_csv(text: str, name: str) -> tuple[list[int], list[float], list[str]]:
    """Rows of ``start,eur_per_kwh``; a header, blank lines and ``#`` comments are skipped."""
    starts: list[int] = []
    prices: list[float] = []
    errors: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        row = raw.strip()
        if not row or row.startswith("#"):
            continue
        cells = [cell.strip() for cell in row.replace(";", ",").split(",")]
        if not starts and cells[0].lower() in ("start", "time", "timestamp"):
            continue  # the header
        where = f"{name} line {number}"
        if len(cells) < 2:
            errors.append(f"{where}: {row!r} is not 'start,eur_per_kwh'")
            continue
        try:
            # Python 3.10 reads no "Z" suffix.
            moment = datetime.fromisoformat(cells[0][:-1] + "+00:00" if cells[0].endswith("Z") else cells[0])
        except ValueError:
            errors.append(f"{where}: {cells[0]!r} is not an ISO 8601 time such as 2026-03-01T00:00:00+01:00")
            continue
        if moment.tzinfo is None:
            errors.append(f"{where}: {cells[0]!r} has no UTC offset: write it as 2026-03-01T00:00:00+01:00")
            continue
        try:
            price = float(cells[1])
        except ValueError:
            price = math.nan
        if not math.isfinite(price):
            errors.append(f"{where}: {cells[1]!r} is not a price in EUR per kWh")
            continue
        start_s = int(moment.timestamp())
        if start_s % QUARTER_S:
            errors.append(f"{where}: {cells[0]} does not start a quarter-hour")
            continue
        if starts and start_s <= starts[-1]:
            errors.append(f"{where}: {cells[0]} is out of order (not after the row before it): sort the file by time")
            continue
        if starts and start_s - starts[-1] > HOUR_S:
            gap_start = datetime.fromtimestamp(starts[-1] + _step(starts), moment.tzinfo)
            errors.append(f"{where}: price gap: no price from {gap_start.isoformat()} to {cells[0]}")
        starts.append(start_s)
        prices.append(price)
    return starts, prices, errors


def _step(starts: Sequence[int]) -> int:
    return starts[-1] - starts[-2] if len(starts) >= 2 else HOUR_S


# --------------------------------------------------------------------------- contracts


@dataclass(frozen=True)
class Slots:
    """Time-of-use slots: the slot name of each quarter of a local day (96 entries)."""

    names: tuple[str, ...]
    by_quarter: tuple[str, ...]

    def at(self, local: datetime) -> str:
        return self.by_quarter[(local.hour * 60 + local.minute) // 15]


@dataclass(frozen=True)
class Side:
    """How one direction (import or export) is priced, before VAT."""

    by_register: Mapping[int, float] | None = None  # register -> EUR/kWh
    flat: float | None = None  # one price for every register
    by_slot: Mapping[str, float] | None = None  # time-of-use slot -> EUR/kWh
    csv: PriceSeries | None = None
    multiplier: float = 1.0
    adder: float = 0.0
    adder_by_slot: Mapping[str, float] | None = None

    @property
    def priced(self) -> bool:
        return any(x is not None for x in (self.by_register, self.flat, self.by_slot, self.csv))

    @property
    def dynamic(self) -> bool:
        return self.csv is not None


@dataclass(frozen=True)
class Contract:
    index: int  # 1-based, as the file lists them
    name: str
    start: date
    end: date | None  # the last day in force, inclusive; None = until the next contract
    import_side: Side
    export_side: Side
    slots: Slots | None
    vat_percent: float = 0.0
    fixed_eur_per_day: float = 0.0
    gas_eur_per_m3: float | None = None
    water_eur_per_m3: float | None = None
    capacity_eur_per_kw_year: float | None = None
    exclusive_night_meter: str | None = None
    exclusive_night_eur_per_kwh: float | None = None

    @property
    def label(self) -> str:
        return f"contract {self.index} ({self.name or 'from ' + self.start.isoformat()})"

    @property
    def vat_factor(self) -> float:
        return 1.0 + self.vat_percent / 100.0

    def _side_price(self, side: Side, quarter_s: int, local: datetime, register: int) -> float | None:
        slot = self.slots.at(local) if self.slots is not None else None
        if side.csv is not None:
            market = side.csv.price_at(quarter_s)
            if market is None:
                return None
            adder = side.adder_by_slot[slot] if side.adder_by_slot is not None and slot is not None else side.adder
            return market * side.multiplier + adder
        if side.by_slot is not None and slot is not None:
            return side.by_slot[slot]
        if side.by_register is not None:
            return side.by_register.get(register)
        return side.flat

    def import_price(self, quarter_s: int, local: datetime, register: int, meter: str) -> float | None:
        """EUR per kWh imported, VAT included; None when there is no price for this quarter."""
        if self.exclusive_night_meter is not None and meter == self.exclusive_night_meter:
            price = self.exclusive_night_eur_per_kwh
        else:
            price = self._side_price(self.import_side, quarter_s, local, register)
        return None if price is None else price * self.vat_factor

    def export_price(self, quarter_s: int, local: datetime, register: int) -> float | None:
        """EUR per kWh exported (a credit, without VAT); None when there is no price."""
        return self._side_price(self.export_side, quarter_s, local, register)

    def with_vat(self, value: float | None) -> float | None:
        return None if value is None else value * self.vat_factor


@dataclass
class Tariff:
    path: Path
    zone: ZoneInfo
    contracts: list[Contract]
    _date_cache: dict[date, Contract | None] = field(default_factory=dict)

    def contract_on(self, day: date) -> Contract | None:
        """The contract in force on a local day."""
        if day in self._date_cache:
            return self._date_cache[day]
        found = None
        for contract in self.contracts:
            if contract.start <= day and (contract.end is None or day <= contract.end):
                found = contract
        if len(self._date_cache) > 400:
            self._date_cache.clear()
        self._date_cache[day] = found
        return found

    def series(self) -> list[PriceSeries]:
        seen: dict[Path, PriceSeries] = {}
        for contract in self.contracts:
            for side in (contract.import_side, contract.export_side):
                if side.csv is not None:
                    seen[side.csv.path] = side.csv
        return list(seen.values())

    def refresh(self) -> bool:
        """Reload the price CSVs that changed on disk; True when any did."""
        return any([series.refresh() for series in self.series()])

    def capacity_price(self, day: date) -> float | None:
        contract = self.contract_on(day)
        return contract.capacity_eur_per_kw_year if contract is not None else None

    def check_meter(self, meter: str, import_registers: Sequence[int], export_registers: Sequence[int]) -> list[str]:
        """A missing price for a register the meter reports, one line per contract and register.

        An export register is listed only when it has counted anything: a meter without
        solar panels needs no export price.
        """
        errors: list[str] = []
        for contract in self.contracts:
            exclusive = contract.exclusive_night_meter is not None and meter == contract.exclusive_night_meter
            for direction, side, registers in (("import", contract.import_side, import_registers),
                                               ("export", contract.export_side, export_registers)):
                if direction == "import" and exclusive:
                    continue
                if not registers:
                    continue
                if not side.priced:
                    errors.append(f"{self.path}: {contract.label}: no {direction} price, but meter {meter} reports "
                                  f"{direction} registers {_registers(registers)}: set {direction}_eur_per_kwh "
                                  f"or {direction}_prices_csv")
                    continue
                if side.by_register is not None and side.csv is None and side.by_slot is None:
                    missing = [r for r in registers if r not in side.by_register]
                    if missing:
                        errors.append(f"{self.path}: {contract.label}: no {direction} price for register "
                                      f"{_registers(missing)} that meter {meter} reports: add "
                                      f"{', '.join(f'{m} = ...' for m in missing)} to {direction}_eur_per_kwh")
        return errors


def _registers(registers: Sequence[int]) -> str:
    return ", ".join(str(r) for r in registers)


# --------------------------------------------------------------------------- reading the file


def load_tariff(path: str | Path, zone: ZoneInfo) -> Tariff:
    """Read and check a tariff file; a ConfigError lists every mistake, one per line."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read the tariff file {path} ({exc.strerror}): fix P1_TARIFF_FILE or --tariff") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    return parse_tariff(data, path, zone)


def parse_tariff(data: Mapping[str, Any], path: Path, zone: ZoneInfo) -> Tariff:
    errors: list[str] = []
    raw = data.get("contract")
    unknown_top = sorted(set(data) - {"contract"})
    if unknown_top:
        errors.append(f"{path}: unknown setting {', '.join(unknown_top)}: the file holds [[contract]] tables only")
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{path}: no [[contract]] table: add one with at least 'from = 2026-01-01' and a price")
    series: dict[Path, PriceSeries] = {}
    contracts: list[Contract] = []
    spans: list[_Span] = []  # also of the contracts with a mistake, so their dates are checked too
    for index, table in enumerate(raw, start=1):
        if not isinstance(table, dict):
            errors.append(f"{path}: contract {index} is not a table")
            continue
        contract = _contract(table, index, path, series, spans, errors)
        if contract is not None:
            contracts.append(contract)
    contracts.sort(key=lambda c: c.start)
    spans.sort(key=lambda c: c.start)
    for before, after in zip(spans, spans[1:]):
        if after.start == before.start or (before.end is not None and after.start <= before.end):
            errors.append(f"{path}: {after.label} overlaps {before.label}: a day can be in one contract only; "
                          f"end {before.label} before {after.start.isoformat()}")
        elif before.end is not None and after.start > before.end + timedelta(days=1):
            errors.append(f"{path}: price gap: no contract from {(before.end + timedelta(days=1)).isoformat()} to "
                          f"{(after.start - timedelta(days=1)).isoformat()}, between {before.label} and {after.label}")
    for csv in series.values():
        errors.extend(csv.load())
    if errors:
        raise ConfigError("\n".join(errors))
    return Tariff(path, zone, contracts)


def _number(table: Mapping[str, Any], key: str, where: str, errors: list[str], *, default: float | None = None,
            minimum: float | None = None) -> float | None:
    value = table.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        errors.append(f"{where}: {key} = {value!r} is not a number")
        return default
    if minimum is not None and value < minimum:
        errors.append(f"{where}: {key} = {value} is below {minimum}")
        return default
    return float(value)


def _date(value: Any, key: str, where: str, errors: list[str]) -> date | None:
    if isinstance(value, datetime):
        errors.append(f"{where}: {key} = {value} has a time of day: write a local date such as 2026-03-01")
        return None
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    errors.append(f"{where}: {key} = {value!r} is not a date such as 2026-03-01")
    return None


@dataclass(frozen=True)
class _Span:
    start: date
    end: date | None
    label: str


def _contract(table: Mapping[str, Any], index: int, path: Path, series: dict[Path, PriceSeries],
              spans: list[_Span], errors: list[str]) -> Contract | None:
    where = f"{path}: contract {index}"
    count = len(errors)
    unknown = sorted(set(table) - KNOWN_KEYS)
    if unknown:
        errors.append(f"{where}: unknown setting {', '.join(unknown)} (see docs/cost.md for the settings)")
    if "from" not in table:
        errors.append(f"{where}: no 'from' date: add from = 2026-01-01, the first local day it is in force")
        return None
    start = _date(table["from"], "from", where, errors)
    end = _date(table["to"], "to", where, errors) if "to" in table else None
    name = table.get("name")
    label = f"contract {index} ({name or 'from ' + (start.isoformat() if start else '?')})"
    if start is not None and end is not None and end < start:
        errors.append(f"{where}: to = {end} is before from = {start}")
    elif start is not None:
        spans.append(_Span(start, end, label))
    slots = _slots(table.get("time_of_use"), where, errors) if "time_of_use" in table else None
    if "time_of_use" in table and slots is None:
        return None  # the prices by slot cannot be checked against slots that are wrong
    import_side = _side(table, "import", where, slots, path, series, errors)
    export_side = _side(table, "export", where, slots, path, series, errors)
    vat = _number(table, "vat_percent", where, errors, default=0.0, minimum=0.0)
    fixed = _number(table, "fixed_eur_per_day", where, errors, default=0.0)
    gas = _number(table, "gas_eur_per_m3", where, errors)
    water = _number(table, "water_eur_per_m3", where, errors)
    capacity = _number(table, "capacity_eur_per_kw_year", where, errors, minimum=0.0)
    night = _number(table, "exclusive_night_eur_per_kwh", where, errors)
    night_meter = table.get("exclusive_night_meter")
    if night_meter is not None and not isinstance(night_meter, str):
        errors.append(f"{where}: exclusive_night_meter must be the meter's equipment id as text (0-0:96.1.1)")
        night_meter = None
    if (night_meter is None) != (night is None):
        errors.append(f"{where}: exclusive night needs both exclusive_night_meter (that meter's id) and "
                      "exclusive_night_eur_per_kwh")
    if not import_side.priced and night is None:
        errors.append(f"{where}: no import price: set import_eur_per_kwh or import_prices_csv")
    if len(errors) > count or start is None:
        return None
    return Contract(
        index=index, name=str(name) if name else "", start=start, end=end,
        import_side=import_side, export_side=export_side, slots=slots,
        vat_percent=vat or 0.0, fixed_eur_per_day=fixed or 0.0, gas_eur_per_m3=gas, water_eur_per_m3=water,
        capacity_eur_per_kw_year=capacity, exclusive_night_meter=night_meter, exclusive_night_eur_per_kwh=night,
    )


def _side(table: Mapping[str, Any], direction: str, where: str, slots: Slots | None, path: Path,
          series: dict[Path, PriceSeries], errors: list[str]) -> Side:
    price_key = f"{direction}_eur_per_kwh"
    csv_key = f"{direction}_prices_csv"
    adder_key = f"{direction}_adder_eur_per_kwh"
    prices = table.get(price_key)
    csv_name = table.get(csv_key)
    if prices is not None and csv_name is not None:
        errors.append(f"{where}: both {price_key} and {csv_key}: a contract is fixed or dynamic, keep one")
        return Side()
    if csv_name is not None:
        if not isinstance(csv_name, str) or not csv_name:
            errors.append(f"{where}: {csv_key} must be a file name")
            return Side()
        csv_path = Path(csv_name)
        if not csv_path.is_absolute():
            csv_path = path.parent / csv_path  # relative to the tariff file, not to where p1logger runs
        csv = series.setdefault(csv_path, PriceSeries(csv_path))
        multiplier = _number(table, f"{direction}_multiplier", where, errors, default=1.0)
        adder_raw = table.get(adder_key)
        adder_by_slot = None
        adder = 0.0
        if isinstance(adder_raw, dict):
            adder_by_slot = _slot_prices(adder_raw, adder_key, where, slots, errors)
        else:
            adder = _number(table, adder_key, where, errors, default=0.0) or 0.0
        return Side(csv=csv, multiplier=multiplier if multiplier is not None else 1.0, adder=adder,
                    adder_by_slot=adder_by_slot)
    for key in (f"{direction}_multiplier", adder_key):
        if key in table:
            errors.append(f"{where}: {key} applies to {csv_key} only: add {csv_key} or remove {key}")
    if prices is None:
        return Side()
    if isinstance(prices, dict):
        keys = list(prices)
        if slots is not None and all(not key.isdigit() for key in keys):
            return Side(by_slot=_slot_prices(prices, price_key, where, slots, errors))
        by_register: dict[int, float] = {}
        for key, value in prices.items():
            if not key.isdigit() or not 1 <= int(key) <= 9:
                hint = " (time-of-use slots need time_of_use)" if slots is None else ""
                errors.append(f"{where}: {price_key} key {key!r} is not a tariff register 1-9{hint}")
                continue
            number = _number(prices, key, f"{where}: {price_key}", errors)
            if number is not None:
                by_register[int(key)] = number
        return Side(by_register=by_register)
    flat = _number(table, price_key, where, errors)
    return Side(flat=flat)


def _slot_prices(prices: Mapping[str, Any], key: str, where: str, slots: Slots | None,
                 errors: list[str]) -> dict[str, float] | None:
    if slots is None:
        errors.append(f"{where}: {key} is priced by slot but there is no time_of_use")
        return None
    result: dict[str, float] = {}
    for name in prices:
        if name not in slots.names:
            errors.append(f"{where}: {key} names slot {name!r}, which time_of_use does not define "
                          f"(slots: {', '.join(slots.names)})")
    for name in slots.names:
        if name not in prices:
            errors.append(f"{where}: {key} has no price for the {name!r} slot")
            continue
        number = _number(prices, name, f"{where}: {key}", errors)
        if number is not None:
            result[name] = number
    return result


def _minutes(text: str) -> int | None:
    try:
        hours, minutes = text.strip().split(":")
        value = int(hours) * 60 + int(minutes)
    except ValueError:
        return None
    return value if 0 <= value <= 24 * 60 and value % 15 == 0 else None


def _slots(spec: Any, where: str, errors: list[str]) -> Slots | None:
    if isinstance(spec, str):
        if spec not in TIME_OF_USE_PRESETS:
            errors.append(f"{where}: time_of_use = {spec!r} is not a preset ({', '.join(TIME_OF_USE_PRESETS)}) "
                          "nor a table of slots")
            return None
        spec = TIME_OF_USE_PRESETS[spec]
    if not isinstance(spec, Mapping) or not spec or len(spec) > _MAX_SLOTS:
        errors.append(f"{where}: time_of_use must be a preset name or a table such as "
                      "{{ green = [\"11:00-17:00\"], red = [\"17:00-11:00\"] }}")
        return None
    by_quarter: list[str | None] = [None] * 96
    count = len(errors)
    for name, ranges in spec.items():
        for text in ranges if isinstance(ranges, (list, tuple)) else [ranges]:
            parts = str(text).split("-")
            bounds = [_minutes(p) for p in parts] if len(parts) == 2 else [None]
            if None in bounds:
                errors.append(f"{where}: time_of_use slot {name!r}: {text!r} is not a range such as \"07:00-11:00\" "
                              "on whole quarter-hours")
                continue
            begin, end = bounds[0] // 15, bounds[1] // 15  # type: ignore[operator]
            quarter = begin
            while True:
                if by_quarter[quarter % 96] is not None:
                    errors.append(f"{where}: time_of_use: {_hhmm(quarter % 96)} is in both {by_quarter[quarter % 96]!r} "
                                  f"and {name!r}")
                    break
                by_quarter[quarter % 96] = name
                quarter += 1
                if quarter % 96 == end % 96:
                    break
    if len(errors) == count and None in by_quarter:
        first = by_quarter.index(None)
        errors.append(f"{where}: time_of_use: no slot holds {_hhmm(first)}: every hour of the day needs a slot")
    if len(errors) > count:
        return None
    return Slots(tuple(spec), tuple(name for name in by_quarter if name is not None))


def _hhmm(quarter: int) -> str:
    return f"{quarter // 4:02d}:{quarter % 4 * 15:02d}"
