"""What the energy costs, quarter-hour by quarter-hour, from the meter's own counters.

Each telegram's counters minus the previous telegram's give the energy of the
interval between them, register by register.  That energy belongs to the
quarter-hours the interval covers (almost always one; after a missing hour,
each quarter of the gap gets its share by time) and is priced with the price
in force for that quarter (``p1logger.tariff``).  When a telegram reaches a
quarter's end, the quarter is finished and written as one ``cost`` point,
stamped with the quarter's start, so that a day's points sum to that day.

Nothing is counted twice or negative: a telegram not later than the one before
it (a repeat, a clock that went back) and a counter that went back (a meter
restart or replacement) only set a new baseline.  A quarter without a price
(a price CSV that ends) keeps its kWh but not the euros, and says so once in
the log.  Gas and water are priced when a new capture time shows up, in the
quarter of that telegram.

A restart of ``run`` neither loses nor doubles cost: whenever a telegram ends
a quarter, the tracker's state as it was just before finishing that quarter
(the counters of that telegram, the quarters not yet stored, today's sum) is
written to ``<spool dir>/cost/checkpoint.json``. The first telegram after a
restart continues from it as if the telegrams in between had been missing: the
counters give the energy of the downtime exactly, shared over its quarters by
time. Quarters the checkpoint holds are finished again with the same values, so
a point that was stored before the restart is written again unchanged (the
same measurement, tags and time: InfluxDB keeps one). See docs/cost.md.

Pure except for logging, the checkpoint file and the tariff's reload of a changed price CSV.
``CostTracker`` is a builder (registered in ``p1logger.builders``, so ``run``
and ``replay`` store ``cost`` points and outputs get its figures);
``CostSummary`` adds quarters up by local day for ``p1logger cost``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from p1logger import settings as settings_table
from p1logger.decode import Telegram
from p1logger.errors import ConfigError
from p1logger.points import INSTANT_MAP, TARIFF_OBIS, convert_reading, line, mbus_readings
from p1logger.tariff import Contract, Tariff, load_tariff

logger = logging.getLogger(__name__)

QUARTER_S = 900
TARIFF_VARIABLE = "P1_TARIFF_FILE"
CAPACITY_PRICE_VARIABLE = "P1_CAPACITY_PRICE"
# A gap longer than this is not spread over its quarters: a meter that was away a month
# was more likely replaced than quiet, and its counters say nothing about when.
DEFAULT_MAX_GAP_S = 7 * 86400
# How often (meter time) a missing price makes the tariff look for a newer price CSV.
REFRESH_INTERVAL_S = 300
CHECKPOINT_FILE = "checkpoint.json"
# Above any household or small business connection (3 x 400 V x 250 A is 170 kW).
MAX_POWER_KW = 250.0

_REGISTERS = range(1, 10)
_IMPORT_OBIS = {n: f"1-0:1.8.{n}" for n in _REGISTERS}
_EXPORT_OBIS = {n: f"1-0:2.8.{n}" for n in _REGISTERS}
_KWH_UNITS = INSTANT_MAP["1-0:1.8.1"][3]
_PRICED_KINDS = ("gas", "water")
EUR_FIELDS = ("import_eur", "export_eur", "gas_eur", "water_eur", "fixed_eur", "total_eur")
AMOUNT_FIELDS = ("import_kwh", "export_kwh", "gas_m3", "water_m3")


def quarter_start_s(time_s: int) -> int:
    # Local quarters are UTC quarters: every zone in use is a whole number of quarters from UTC.
    return time_s - time_s % QUARTER_S


def registers(telegram: Telegram, obis_by_register: Mapping[int, str], total_obis: str) -> dict[int, float]:
    """kWh by tariff register; a meter that sends only the total gets it as register 1."""
    found: dict[int, float] = {}
    fields = telegram.fields
    for number, obis in obis_by_register.items():
        reading = fields.get(obis)
        if reading is not None:
            value = convert_reading(reading, _KWH_UNITS)
            if value is not None:
                found[number] = value
    if not found:
        total = fields.get(total_obis)
        value = convert_reading(total, _KWH_UNITS) if total is not None else None
        if value is not None:
            found[1] = value
    return found


# --------------------------------------------------------------------------- one quarter


@dataclass(slots=True)
class QuarterCost:
    """The cost of one quarter-hour, as far as it is known."""

    start_s: int
    local: datetime  # the quarter's start in the meter's zone
    contract: Contract | None
    import_kwh: float = 0.0
    export_kwh: float = 0.0
    gas_m3: float = 0.0
    water_m3: float = 0.0
    import_eur: float = 0.0
    export_eur: float = 0.0  # a credit: subtracted from the total
    gas_eur: float = 0.0
    water_eur: float = 0.0
    fixed_eur: float = 0.0
    missing: set[str] = field(default_factory=set)  # euros not known: "import", "export", "gas", "water", "contract"
    import_price: float | None = None  # EUR/kWh in force for the register active in the quarter
    export_price: float | None = None

    @property
    def total_eur(self) -> float:
        return self.import_eur - self.export_eur + self.gas_eur + self.water_eur + self.fixed_eur

    @property
    def day(self) -> date:
        return self.local.date()

    def fields(self) -> dict[str, float]:
        values: dict[str, float] = {
            "import_kwh": self.import_kwh, "export_kwh": self.export_kwh,
            "gas_m3": self.gas_m3, "water_m3": self.water_m3,
        }
        for name in ("import", "export", "gas", "water"):
            if name not in self.missing and "contract" not in self.missing:
                values[f"{name}_eur"] = getattr(self, f"{name}_eur")
        if "contract" not in self.missing:
            values["fixed_eur"] = self.fixed_eur
        if not self.missing:
            values["total_eur"] = self.total_eur
        if self.import_price is not None:
            values["import_price_eur_per_kwh"] = self.import_price
        if self.export_price is not None:
            values["export_price_eur_per_kwh"] = self.export_price
        return {key: round(value, 6) for key, value in values.items()}


def quarters_in_day(day: date, zone: ZoneInfo) -> int:
    """96, or 92 and 100 on the days the clocks change."""
    start = datetime(day.year, day.month, day.day, tzinfo=zone)
    following = day + timedelta(days=1)
    end = datetime(following.year, following.month, following.day, tzinfo=zone)
    return int(end.timestamp() - start.timestamp()) // QUARTER_S


# --------------------------------------------------------------------------- restarts

CHECKPOINT_VERSION = 1
_QUARTER_NUMBERS = ("import_kwh", "export_kwh", "gas_m3", "water_m3", "import_eur", "export_eur", "gas_eur",
                    "water_eur")


class CheckpointFile:
    """The tracker's state in one small JSON file, replaced atomically; a failure is logged, never raised."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._failing = False

    def load(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            logger.warning("cannot read the cost checkpoint %s (%s): cost starts from the next telegram",
                           self.path, exc)
            return None
        if not isinstance(data, dict) or data.get("version") != CHECKPOINT_VERSION:
            logger.warning("the cost checkpoint %s is not one this version wrote: cost starts from the next "
                           "telegram", self.path)
            return None
        return data

    def save(self, state: Mapping[str, Any]) -> None:
        temporary = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temporary.write_text(json.dumps(state, separators=(",", ":")), encoding="utf-8")
            os.replace(temporary, self.path)
        except OSError as exc:
            # A full disk must not stop the cost: only a restart would lose the quarter in progress.
            if not self._failing:
                logger.warning("cannot write the cost checkpoint %s (%s): a restart now would lose the cost of "
                               "the quarter in progress", self.path, exc.strerror or exc)
            self._failing = True
            return
        if self._failing:
            logger.info("the cost checkpoint %s is written again", self.path)
        self._failing = False


# --------------------------------------------------------------------------- the tracker


@dataclass(slots=True)
class CostStats:
    telegrams: int = 0
    quarters: int = 0
    quarters_unpriced: int = 0
    counter_resets: int = 0
    clock_steps_back: int = 0
    gaps_skipped: int = 0


@dataclass(slots=True)
class _Counters:
    time_s: int
    imports: dict[int, float]
    exports: dict[int, float]


class CostTracker:
    """Turns one meter's telegrams into ``cost`` points, one per quarter-hour (a pipeline builder).

    Memory is bounded: the counters of the last telegram, the quarters not yet
    finished (one, or the quarters of a gap being closed) and a day's total.
    """

    name = "cost"

    def __init__(
        self,
        tariff: Tariff,
        zone: ZoneInfo,
        *,
        use_receive_time: bool = False,
        max_gap_s: int = DEFAULT_MAX_GAP_S,
        on_quarter: Callable[[QuarterCost], None] | None = None,
        strict: bool = False,
        checkpoint: CheckpointFile | None = None,
    ) -> None:
        self.tariff = tariff
        self.zone = zone
        self.use_receive_time = use_receive_time
        self.max_gap_s = max_gap_s
        self.on_quarter = on_quarter
        self.strict = strict  # a register without a price is a ConfigError (p1logger cost), not a log line
        self.stats = CostStats()
        self._quarters_per_day: dict[date, int] = {}
        self._meter: str | None = None
        self._start_over(None)
        self.checkpoint = checkpoint
        self._resume = checkpoint.load() if checkpoint is not None else None

    def _start_over(self, meter: str | None) -> None:
        self._meter = meter
        self._last: _Counters | None = None
        self._captures: dict[str, tuple[int, float]] = {}
        self._open: dict[int, QuarterCost] = {}
        self._active_register = 1
        self._checked = False
        self._time_s: int | None = None
        self._day: date | None = None
        self._day_eur = 0.0
        self._day_missing = False
        self._last_quarter: QuarterCost | None = None
        self._unpriced_since: int | None = None
        self._next_refresh_s = 0

    # ------------------------------------------------------------------ input

    def build(self, telegram: Telegram, received_at_s: float) -> list[str]:
        if telegram.timestamp is not None and not self.use_receive_time:
            time_s = int(telegram.timestamp.timestamp())
        else:
            time_s = int(received_at_s)
        meter = telegram.meter_id
        lines: list[str] = []
        if self._resume is not None:
            self._resume_from(self._resume, meter, time_s)
            self._resume = None
        if meter != self._meter:
            if self._meter is not None:
                logger.info("meter %s replaces %s; cost starts over", meter, self._meter)
                self._close_before(None, lines)
            self._start_over(meter)
        self.stats.telegrams += 1
        imports = registers(telegram, _IMPORT_OBIS, "1-0:1.8.0")
        exports = registers(telegram, _EXPORT_OBIS, "1-0:2.8.0")
        tariff = telegram.fields.get(TARIFF_OBIS)
        if tariff is not None and isinstance(tariff.value, int) and tariff.value in _REGISTERS:
            self._active_register = tariff.value
        if not self._checked:
            self._check_meter(meter, imports, exports)
        current = _Counters(time_s, imports, exports)
        last = self._last
        if last is not None and time_s <= last.time_s:
            if time_s < last.time_s:
                self.stats.clock_steps_back += 1
                logger.warning("the meter clock went back from %s to %s; the energy in between is not priced",
                               self._label(last.time_s), self._label(time_s))
            # A new baseline at the later time: nothing counted twice, nothing negative.
            self._last = _Counters(last.time_s, imports, exports)
            self._baseline_captures(telegram)
            return lines
        self._time_s = time_s
        if last is not None:
            elapsed = time_s - last.time_s
            import_parts = self._deltas("import", last.imports, imports, elapsed)
            export_parts = self._deltas("export", last.exports, exports, elapsed)
            if elapsed > self.max_gap_s and (import_parts or export_parts):
                self.stats.gaps_skipped += 1
                logger.warning("no telegram from %s to %s (more than %d days): the %.3f kWh in between are not "
                               "priced", self._label(last.time_s), self._label(time_s), self.max_gap_s // 86400,
                               sum(import_parts.values()))
            elif import_parts or export_parts:
                self._spread(last.time_s, time_s, import_parts, export_parts)
            self._add_captures(telegram, time_s)
        else:
            self._baseline_captures(telegram)
        self._last = current
        if self.checkpoint is not None and any(start + QUARTER_S <= time_s for start in self._open):
            self.checkpoint.save(self.state())
        self._close_before(time_s, lines)
        return lines

    # ------------------------------------------------------------------ restarts

    def state(self) -> dict[str, Any]:
        """What a restart needs to go on where this left off (JSON)."""
        last = self._last
        return {
            "version": CHECKPOINT_VERSION,
            "meter": self._meter,
            "time_s": None if last is None else last.time_s,
            "imports": {} if last is None else {str(r): v for r, v in last.imports.items()},
            "exports": {} if last is None else {str(r): v for r, v in last.exports.items()},
            "captures": {kind: list(capture) for kind, capture in self._captures.items()},
            "active_register": self._active_register,
            "open": [{"start_s": q.start_s, "missing": sorted(q.missing),
                      **{name: getattr(q, name) for name in _QUARTER_NUMBERS}}
                     for q in sorted(self._open.values(), key=lambda q: q.start_s)],
            "day": None if self._day is None else self._day.isoformat(),
            "day_eur": self._day_eur,
            "day_missing": self._day_missing,
            "unpriced_since": self._unpriced_since,
        }

    def _resume_from(self, saved: Mapping[str, Any], meter: str, time_s: int) -> None:
        """Take up a checkpoint when the first telegram after a start continues it: same meter, later time."""
        saved_time = saved.get("time_s")
        if saved.get("meter") != meter or not isinstance(saved_time, int):
            logger.info("the cost checkpoint is for meter %s, not %s: cost starts from this telegram",
                        saved.get("meter"), meter)
            return
        if time_s <= saved_time:
            logger.info("the cost checkpoint (%s) is not older than the first telegram (%s): cost starts from "
                        "this telegram", self._label(saved_time), self._label(time_s))
            return
        try:
            self._start_over(meter)
            self._last = _Counters(saved_time, {int(r): float(v) for r, v in saved["imports"].items()},
                                   {int(r): float(v) for r, v in saved["exports"].items()})
            self._captures = {str(kind): (int(t), float(v)) for kind, (t, v) in saved["captures"].items()}
            self._active_register = int(saved["active_register"])
            for item in saved["open"]:
                quarter = self._quarter(int(item["start_s"]))
                for name in _QUARTER_NUMBERS:
                    setattr(quarter, name, float(item[name]))
                quarter.missing.update(str(m) for m in item["missing"])
            self._checked = True  # the checkpoint's meter was checked against the tariff when it was written
            self._time_s = saved_time
            self._day = None if saved["day"] is None else date.fromisoformat(saved["day"])
            self._day_eur = float(saved["day_eur"])
            self._day_missing = bool(saved["day_missing"])
            unpriced = saved["unpriced_since"]
            self._unpriced_since = None if unpriced is None else int(unpriced)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            logger.warning("the cost checkpoint is damaged (%s): cost starts from this telegram", exc)
            self._start_over(None)
            return
        logger.info("cost goes on from the checkpoint of %s (%d quarter(s) not yet stored)",
                    self._label(saved_time), len(self._open))

    def _check_meter(self, meter: str, imports: Mapping[int, float], exports: Mapping[int, float]) -> None:
        self._checked = True
        errors = self.tariff.check_meter(meter, sorted(imports), sorted(r for r, v in exports.items() if v > 0))
        if errors and self.strict:
            raise ConfigError("\n".join(errors))
        for error in errors:
            logger.error("%s", error)

    def _deltas(self, direction: str, before: Mapping[int, float], now: Mapping[int, float],
                elapsed_s: int) -> dict[int, float]:
        parts: dict[int, float] = {}
        # More than a large connection could carry in the time: a counter that jumped, not energy.
        limit_kwh = MAX_POWER_KW * elapsed_s / 3600 + 0.01
        for register, value in now.items():
            previous = before.get(register)
            if previous is None:
                continue
            delta = round(value - previous, 9)
            if delta < 0 or delta > limit_kwh:
                self.stats.counter_resets += 1
                logger.warning("%s register %d went %s from %.3f to %.3f kWh in %d s (meter restarted or "
                               "replaced?); starting from the new value", direction, register,
                               "back" if delta < 0 else "up", previous, value, elapsed_s)
                continue
            if delta > 0:
                parts[register] = delta
        return parts

    def _quarter(self, start_s: int) -> QuarterCost:
        quarter = self._open.get(start_s)
        if quarter is None:
            local = datetime.fromtimestamp(start_s, timezone.utc).astimezone(self.zone)
            contract = self.tariff.contract_on(local.date())
            quarter = self._open[start_s] = QuarterCost(start_s, local, contract)
            if contract is None:
                quarter.missing.add("contract")
        return quarter

    def _spread(self, begin_s: int, end_s: int, imports: Mapping[int, float], exports: Mapping[int, float]) -> None:
        """The interval's energy into the quarters it covers, each by its share of the time."""
        elapsed = end_s - begin_s
        start = quarter_start_s(begin_s)
        while start < end_s:
            share = (min(end_s, start + QUARTER_S) - max(begin_s, start)) / elapsed
            quarter = self._quarter(start)
            for register, kwh in imports.items():
                self._add_energy(quarter, "import", register, kwh * share)
            for register, kwh in exports.items():
                self._add_energy(quarter, "export", register, kwh * share)
            start += QUARTER_S

    def _price(self, quarter: QuarterCost, direction: str, register: int) -> float | None:
        contract = quarter.contract
        if contract is None:
            return None
        if direction == "import":
            return contract.import_price(quarter.start_s, quarter.local, register, self._meter or "")
        return contract.export_price(quarter.start_s, quarter.local, register)

    def _add_energy(self, quarter: QuarterCost, direction: str, register: int, kwh: float) -> None:
        price = self._price(quarter, direction, register)
        if price is None and quarter.contract is not None and self._refresh_due(quarter.start_s):
            price = self._price(quarter, direction, register)
        if direction == "import":
            quarter.import_kwh += kwh
        else:
            quarter.export_kwh += kwh
        if price is None:
            quarter.missing.add(direction)
        elif direction == "import":
            quarter.import_eur += kwh * price
        else:
            quarter.export_eur += kwh * price

    def _refresh_due(self, time_s: int) -> bool:
        """Look for a newer price CSV, at most every few minutes of meter time; True when one was read."""
        if time_s < self._next_refresh_s:
            return False
        self._next_refresh_s = time_s + REFRESH_INTERVAL_S
        return self.tariff.refresh()

    def _baseline_captures(self, telegram: Telegram) -> None:
        for reading in mbus_readings(telegram):
            if reading.measurement in _PRICED_KINDS:
                self._captures[reading.measurement] = (int(reading.time.timestamp()), reading.value)

    def _add_captures(self, telegram: Telegram, time_s: int) -> None:
        for reading in mbus_readings(telegram):
            kind = reading.measurement
            if kind not in _PRICED_KINDS:
                continue
            capture_s = int(reading.time.timestamp())
            previous = self._captures.get(kind)
            self._captures[kind] = (capture_s, reading.value)
            if previous is None or capture_s <= previous[0]:
                continue
            delta = round(reading.value - previous[1], 9)
            if delta < 0:
                self.stats.counter_resets += 1
                logger.warning("the %s meter went back from %.3f to %.3f m3; starting from the new value",
                               kind, previous[1], reading.value)
                continue
            if delta == 0:
                continue
            quarter = self._quarter(quarter_start_s(time_s - 1))
            contract = quarter.contract
            setattr(quarter, f"{kind}_m3", getattr(quarter, f"{kind}_m3") + delta)
            if contract is None:
                continue  # already missing: no contract
            # No gas or water price in the contract: not priced, by choice (docs/cost.md).
            price = contract.with_vat(contract.gas_eur_per_m3 if kind == "gas" else contract.water_eur_per_m3)
            if price is not None:
                setattr(quarter, f"{kind}_eur", getattr(quarter, f"{kind}_eur") + delta * price)

    # ------------------------------------------------------------------ finishing quarters

    def _close_before(self, time_s: int | None, lines: list[str]) -> None:
        """Finish every quarter that ends at or before ``time_s`` (all of them for None)."""
        for start in sorted(self._open):
            if time_s is not None and start + QUARTER_S > time_s:
                break
            self._finish(self._open.pop(start), lines)

    def finish(self) -> list[str]:
        """Finish the quarter in progress too (the end of a file)."""
        lines: list[str] = []
        self._close_before(None, lines)
        return lines

    def _fixed_eur(self, quarter: QuarterCost) -> float:
        contract = quarter.contract
        if contract is None:
            return 0.0
        day = quarter.day
        count = self._quarters_per_day.get(day)
        if count is None:
            if len(self._quarters_per_day) > 64:
                self._quarters_per_day.clear()
            count = self._quarters_per_day[day] = quarters_in_day(day, self.zone)
        return contract.fixed_eur_per_day * contract.vat_factor / count

    def _finish(self, quarter: QuarterCost, lines: list[str]) -> None:
        quarter.fixed_eur = self._fixed_eur(quarter)
        quarter.import_price = self._price(quarter, "import", self._active_register)
        quarter.export_price = self._price(quarter, "export", self._active_register)
        self.stats.quarters += 1
        self._note_prices(quarter)
        if self._day != quarter.day:
            self._day, self._day_eur, self._day_missing = quarter.day, 0.0, False
        self._day_eur += quarter.total_eur
        self._day_missing = self._day_missing or bool(quarter.missing)
        self._last_quarter = quarter
        lines.append(line("cost", {"meter": self._meter or ""}, quarter.fields(), quarter.start_s))
        if self.on_quarter is not None:
            self.on_quarter(quarter)

    def _note_prices(self, quarter: QuarterCost) -> None:
        """Say once when prices run out, and once when they are back."""
        if quarter.missing:
            self.stats.quarters_unpriced += 1
            if self._unpriced_since is None:
                self._unpriced_since = quarter.start_s
                logger.warning("no %s price for the quarter from %s: its amounts are stored without euros until "
                               "prices are there (%s; a dynamic contract needs 'p1logger prices fetch' every day)",
                               " or ".join(sorted(quarter.missing)), self._label(quarter.start_s),
                               self._why_unpriced(quarter))
        elif self._unpriced_since is not None:
            logger.warning("prices are back from %s; %d quarters since %s have no euros",
                           self._label(quarter.start_s), self.stats.quarters_unpriced,
                           self._label(self._unpriced_since))
            self._unpriced_since = None

    def _why_unpriced(self, quarter: QuarterCost) -> str:
        contract = quarter.contract
        if contract is None:
            return f"no contract in {self.tariff.path} is in force on {quarter.day.isoformat()}"
        for side in (contract.import_side, contract.export_side):
            if side.csv is not None and side.csv.end_s is not None and side.csv.end_s <= quarter.start_s:
                return f"{side.csv.path} ends at {self._label(side.csv.end_s)}"
        return f"{contract.label} in {self.tariff.path} has no such price"

    # ------------------------------------------------------------------ live figures

    def figures(self) -> Mapping[str, float | int | bool | str | None] | None:
        """The live figures: this quarter's running cost, today's, the prices in force now."""
        if self._time_s is None:
            return None
        now_s = self._time_s
        start = quarter_start_s(now_s)
        running = self._open.get(start)
        if running is None:
            running = self._quarter(start)  # an empty quarter, for its prices and fixed share
            del self._open[start]
        fixed = self._fixed_eur(running)
        import_price = self._price(running, "import", self._active_register)
        export_price = self._price(running, "export", self._active_register)
        quarter_eur = None if running.missing else round(running.total_eur + fixed, 6)
        day = running.day
        today = (self._day_eur if self._day == day else 0.0) + (running.total_eur + fixed)
        today_missing = bool(running.missing) or (self._day == day and self._day_missing)
        last = self._last_quarter
        return {
            "quarter_start": datetime.fromtimestamp(start, timezone.utc).isoformat().replace("+00:00", "Z"),
            "quarter_import_kwh": round(running.import_kwh, 6),
            "quarter_export_kwh": round(running.export_kwh, 6),
            "quarter_total_eur": quarter_eur,
            "import_price_eur_per_kwh": None if import_price is None else round(import_price, 6),
            "export_price_eur_per_kwh": None if export_price is None else round(export_price, 6),
            "today_total_eur": None if today_missing else round(today, 6),
            "last_quarter_total_eur": None if last is None or last.missing else round(last.total_eur, 6),
            "prices_missing": self._unpriced_since is not None or bool(running.missing),
        }

    def _label(self, time_s: int) -> str:
        local = datetime.fromtimestamp(time_s, timezone.utc).astimezone(self.zone)
        return local.isoformat(timespec="minutes")


# --------------------------------------------------------------------------- adding up


@dataclass
class Totals:
    import_kwh: float = 0.0
    export_kwh: float = 0.0
    gas_m3: float = 0.0
    water_m3: float = 0.0
    import_eur: float = 0.0
    export_eur: float = 0.0
    gas_eur: float = 0.0
    water_eur: float = 0.0
    fixed_eur: float = 0.0
    total_eur: float = 0.0
    quarters: int = 0
    quarters_unpriced: int = 0

    def add(self, quarter: QuarterCost) -> None:
        for name in AMOUNT_FIELDS + EUR_FIELDS:
            setattr(self, name, getattr(self, name) + getattr(quarter, name))
        self.quarters += 1
        self.quarters_unpriced += bool(quarter.missing)

    def json(self) -> dict[str, Any]:
        values: dict[str, Any] = {name: round(getattr(self, name), 3) for name in AMOUNT_FIELDS}
        values.update({name: round(getattr(self, name), 2) for name in EUR_FIELDS})
        values["quarters"] = self.quarters
        values["quarters_unpriced"] = self.quarters_unpriced
        return values


@dataclass
class CostSummary:
    """Quarters added up per local day and in total (``p1logger cost``)."""

    zone: ZoneInfo
    total: Totals = field(default_factory=Totals)
    days: dict[date, Totals] = field(default_factory=dict)
    first_s: int | None = None
    last_s: int | None = None

    def add(self, quarter: QuarterCost) -> None:
        self.total.add(quarter)
        self.days.setdefault(quarter.day, Totals()).add(quarter)

    def seen(self, time_s: int) -> None:
        self.first_s = time_s if self.first_s is None else min(self.first_s, time_s)
        self.last_s = time_s if self.last_s is None else max(self.last_s, time_s)

    def _local(self, time_s: int | None) -> str | None:
        if time_s is None:
            return None
        return datetime.fromtimestamp(time_s, timezone.utc).astimezone(self.zone).isoformat()

    def json(self) -> dict[str, Any]:
        return {
            "from": self._local(self.first_s),
            "to": self._local(self.last_s),
            "timezone": str(self.zone),
            **self.total.json(),
            "days": [{"date": day.isoformat(), **totals.json()} for day, totals in sorted(self.days.items())],
        }

    def table(self) -> str:
        header = (f"{'day':<12}{'import kWh':>11}{'export kWh':>11}{'gas m3':>9}{'import':>10}{'export':>10}"
                  f"{'gas':>9}{'water':>8}{'fixed':>8}{'total EUR':>11}")
        rows = [f"== energy cost from {self._local(self.first_s)} to {self._local(self.last_s)} ({self.zone})",
                header, "-" * len(header)]

        def row(label: str, t: Totals) -> str:
            mark = " *" if t.quarters_unpriced else ""
            return (f"{label:<12}{t.import_kwh:>11.3f}{t.export_kwh:>11.3f}{t.gas_m3:>9.3f}{t.import_eur:>10.2f}"
                    f"{-t.export_eur:>10.2f}{t.gas_eur:>9.2f}{t.water_eur:>8.2f}{t.fixed_eur:>8.2f}"
                    f"{t.total_eur:>11.2f}{mark}")

        for day, totals in sorted(self.days.items()):
            rows.append(row(day.isoformat(), totals))
        rows.append("-" * len(header))
        rows.append(row("total", self.total))
        if self.total.quarters_unpriced:
            rows.append(f"* {self.total.quarters_unpriced} quarter-hours had no price for part of their energy: "
                        "their euros are left out")
        return "\n".join(rows)


# --------------------------------------------------------------------------- settings


def add_tariff_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *, required: bool) -> None:
    settings_table.add(parser, TARIFF_VARIABLE)


def add_cost_arguments(parser: argparse.ArgumentParser) -> None:
    add_tariff_argument(parser.add_argument_group("energy cost"), required=False)


def open_tariff(path: str | None, zone: ZoneInfo) -> Tariff:
    if not path:
        raise ConfigError("no tariff file: give --tariff FILE or set P1_TARIFF_FILE (see docs/cost.md)")
    return load_tariff(Path(path), zone)


def create_tracker(settings: Any, zone: ZoneInfo, use_receive_time: bool) -> CostTracker | None:
    """The cost builder of ``run`` and ``replay``: on when a tariff file is set."""
    path = getattr(settings, "tariff", None)
    if not path:
        return None
    checkpoint = None
    spool_dir = getattr(settings, "spool_dir", None)
    # Only ``run`` goes on where it stopped; a replay rebuilds its state from the telegrams it reads.
    if getattr(settings, "command", None) == "run" and spool_dir:
        checkpoint = CheckpointFile(Path(spool_dir) / "cost" / CHECKPOINT_FILE)
    return CostTracker(open_tariff(path, zone), zone, use_receive_time=use_receive_time, checkpoint=checkpoint)


def tariff_capacity_price(settings: Any, zone: ZoneInfo, default: float) -> float | None:
    """The tariff file's capacity price for today, unless P1_CAPACITY_PRICE or --capacity-price says otherwise."""
    path = getattr(settings, "tariff", None)
    if not path or settings_table.raw(CAPACITY_PRICE_VARIABLE) is not None:
        return None
    if getattr(settings, "capacity_price", default) != default:
        return None
    return open_tariff(path, zone).capacity_price(datetime.now(zone).date())


def tariff_checks(path: str | None, zone: ZoneInfo, now_s: int) -> list[tuple[bool, str]]:
    """``p1logger doctor``'s lines about the tariff file: each mistake, or what it holds and how far prices go."""
    if not path:
        return []
    try:
        tariff = open_tariff(path, zone)
    except ConfigError as exc:
        return [(False, f"tariff: {line}") for line in str(exc).splitlines()]
    checks = [(True, f"tariff: {path}: {len(tariff.contracts)} contract(s), from "
                     f"{tariff.contracts[0].start.isoformat()}")]
    today = datetime.fromtimestamp(now_s, zone).date()
    contract = tariff.contract_on(today)
    if contract is None:
        checks.append((False, f"tariff: no contract is in force today ({today.isoformat()}): add one"))
        return checks
    for side in (contract.import_side, contract.export_side):
        csv = side.csv
        if csv is None:
            continue
        end_s = csv.end_s
        label = "no prices" if end_s is None else datetime.fromtimestamp(end_s, zone).isoformat(timespec="minutes")
        if end_s is None or end_s <= now_s:
            checks.append((False, f"tariff: {csv.path} has no price for now (it ends at {label}): "
                                  "run 'p1logger prices fetch'"))
        else:
            checks.append((True, f"tariff: {csv.path} has prices until {label}"))
    return list(dict.fromkeys(checks))
