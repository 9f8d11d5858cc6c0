"""The Belgian capacity tariff: quarter-hour averages, monthly peaks, the 12-month mean and its cost.

Since 2023 Flemish households pay for their highest quarter-hour average demand
of each month; the bill uses the mean of the last 12 monthly peaks, each
counted as at least 2.5 kW.  Everything is computed here, where it can be
tested, and written to the ``capacity`` measurement; the dashboards and the
alert rule only read it.  See ``docs/capacity.md`` for the rules and choices.

Pure: no I/O except logging.  ``CapacityTracker`` is a line builder (one per
meter stream); ``p1logger.builders`` plugs it into ``run`` and ``replay``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import TypeVar
from zoneinfo import ZoneInfo

from p1logger.decode import HistoryEntry, Reading, Telegram
from p1logger.points import MONTH_PEAK_OBIS, PEAK_HISTORY_OBIS, UNITS_KW, UNITS_KWH, UNITS_W, convert_reading, line
from p1logger.quarters import (
    FLOOR_KW,
    MONTHS_BILLED,
    QUARTER_S,
    TARIFF_START_MONTH,
    SustainedPower,
    average_kw,
    hold_s,
    billed_kw,
    billed_months,
    local_month,
    local_text,
    month_bounds_s,
    projected_kw,
    quarter_label,
    quarter_start_s,
    rolling_mean_kw,
    round_eur,
    round_kw,
    shed_kw,
    warning_call,
)

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

# An estimate of the 2025 Fluvius rate including VAT; it differs per grid area and year.
DEFAULT_PRICE_EUR_PER_KW_YEAR = 53.0
DEFAULT_MARGIN_KW = 0.0
DEFAULT_WRITE_INTERVAL_S = 10.0
# A reading this close to a quarter boundary stands for the counter at the boundary.
DEFAULT_BOUNDARY_TOLERANCE_S = 10
# Month peaks kept in memory: the billed year plus the month before it.
_MONTHS_KEPT = MONTHS_BILLED + 1
_ONE_SECOND = timedelta(seconds=1)

DEMAND_OBIS = "1-0:1.4.0"
POWER_OBIS = "1-0:1.7.0"
IMPORT_TOTAL_OBIS = "1-0:1.8.0"
IMPORT_TARIFF_OBIS = ("1-0:1.8.1", "1-0:1.8.2", "1-0:1.8.3", "1-0:1.8.4", "1-0:1.8.5")
_KW_UNITS = UNITS_KW
_W_UNITS = UNITS_W
_KWH_UNITS = UNITS_KWH



# --------------------------------------------------------------------------- reading a telegram


def _number(reading: Reading | None, units: Mapping[str, float]) -> float | None:
    return convert_reading(reading, units) if reading is not None else None


def import_kwh(fields: Mapping[str, Reading]) -> float | None:
    """All imported energy: 1-0:1.8.0, else the sum of the tariff counters; None when unreadable."""
    total = _number(fields.get(IMPORT_TOTAL_OBIS), _KWH_UNITS)
    if total is not None:
        return total
    parts = [_number(fields[obis], _KWH_UNITS) for obis in IMPORT_TARIFF_OBIS if obis in fields]
    if not parts or any(part is None for part in parts):
        return None
    return round(sum(part for part in parts if part is not None), 6)


def power_kw(fields: Mapping[str, Reading]) -> float | None:
    watts = _number(fields.get(POWER_OBIS), _W_UNITS)
    return None if watts is None else watts / 1000.0


# --------------------------------------------------------------------------- state


@dataclass(frozen=True, slots=True)
class Sample:
    """The import counter at one moment."""

    time_s: int
    import_kwh: float


@dataclass(frozen=True, slots=True)
class QuarterResult:
    """A finished quarter measured from the counters."""

    start_s: int
    end_s: int
    average_kw: float
    meter_demand_kw: float | None  # the meter's 1-0:1.4.0 in the quarter's last telegram
    diff_kw: float | None  # average_kw - meter_demand_kw


@dataclass(frozen=True, slots=True)
class MonthPeak:
    """One month of the rolling mean."""

    month: str
    peak_kw: float
    billed_kw: float
    source: str  # "running" (this month), "meter history" (0-0:98.1.0) or "logger" (seen by p1logger)
    time: datetime | None  # when the peak happened; None when the meter gives a placeholder


@dataclass(frozen=True, slots=True)
class QuarterNow:
    """The running quarter at the latest telegram."""

    start_s: int
    end_s: int
    measured: bool  # its start was seen, so it can be measured from the counters
    why_not: str | None
    energy_kwh: float | None  # imported since the quarter's start
    elapsed_s: int | None  # seconds those kWh cover
    average_so_far_kw: float | None
    meter_demand_kw: float | None  # the meter's 1-0:1.4.0 in the latest telegram
    power_kw: float | None  # 1-0:1.7.0
    limit_kw: float  # the peak to stay under: this month's peak, never below the 2.5 kW floor
    projected_kw: float | None
    shed_kw: float | None
    peak_warning: int | None  # the warning rule's decision, latched for the rest of the quarter once it warns
    sustained_kw: float | None = None  # the lowest power of the last 90 s, which the rule projects with
    rule_projected_kw: float | None = None  # the quarter's end if only the sustained power holds


@dataclass(slots=True)
class CapacityStats:
    telegrams: int = 0
    quarters_measured: int = 0
    quarters_skipped: int = 0  # a boundary reading was missing or the counter went back
    counter_resets: int = 0
    clock_steps_back: int = 0
    warnings: int = 0


@dataclass(frozen=True, slots=True)
class CapacityState:
    """Everything ``p1logger capacity`` shows, at the latest telegram."""

    meter: str
    time_s: int
    zone: ZoneInfo
    quarter: QuarterNow
    last_quarter: QuarterResult | None
    month: str
    meter_peak_kw: float | None  # 1-0:1.6.0 for this month
    meter_peak_time: datetime | None
    our_peak: QuarterResult | None  # the highest quarter p1logger measured this month
    running_peak_kw: float  # 0 until anything is seen this month
    months: tuple[MonthPeak, ...]  # this month first
    missing_months: tuple[str, ...]  # billed months neither the meter nor p1logger knows
    unplaced_history: tuple[HistoryEntry, ...]  # history entries without a month
    rolling_mean_kw: float
    price_eur_per_kw_year: float
    yearly_cost_eur: float
    margin_kw: float
    stats: CapacityStats

    def time(self) -> datetime:
        return datetime.fromtimestamp(self.time_s, timezone.utc)


@dataclass(slots=True)
class _Quarter:
    start_s: int
    opening: Sample | None
    why_not: str | None = None
    last_demand: tuple[int, float] | None = None  # (time_s, kW) of the latest 1-0:1.4.0 in it
    warned: bool = False

    @property
    def end_s(self) -> int:
        return self.start_s + QUARTER_S


# --------------------------------------------------------------------------- the tracker


class CapacityTracker:
    """Derives the capacity figures from one meter's telegrams (a pipeline LineBuilder).

    Telegrams without 1-0:1.4.0 and 1-0:1.6.0 (every meter outside Belgium)
    give nothing.  Memory is bounded: one running quarter and at most 13
    months of peaks.
    """

    def __init__(
        self,
        zone: ZoneInfo,
        price_eur_per_kw_year: float = DEFAULT_PRICE_EUR_PER_KW_YEAR,
        margin_kw: float = DEFAULT_MARGIN_KW,
        *,
        use_receive_time: bool = False,
        write_interval_s: float = DEFAULT_WRITE_INTERVAL_S,
        boundary_tolerance_s: int = DEFAULT_BOUNDARY_TOLERANCE_S,
    ) -> None:
        self.zone = zone
        self.price_eur_per_kw_year = price_eur_per_kw_year
        self.margin_kw = margin_kw
        self.use_receive_time = use_receive_time
        self.write_interval_s = write_interval_s
        self.boundary_tolerance_s = boundary_tolerance_s
        self.stats = CapacityStats()
        self._month_span: tuple[int, int, str] = (0, 0, "")
        self._start_over(None)

    def _start_over(self, meter: str | None) -> None:
        self._meter = meter
        self._last: Sample | None = None
        self._last_time_s: int | None = None
        self._quarter: _Quarter | None = None
        self._why_no_quarter = "p1logger started {} s into it"
        self._last_quarter: QuarterResult | None = None
        self._meter_peaks: dict[str, tuple[float, datetime | None]] = {}
        self._our_peaks: dict[str, QuarterResult] = {}
        self._peak_raw: Reading | None = None
        self._history_raw: Reading | None = None
        self._history: dict[str, tuple[float, datetime | None]] = {}
        self._unplaced: tuple[HistoryEntry, ...] = ()
        self._now: tuple[int, float | None, float | None] | None = None  # (time_s, power_kw, demand_kw)
        self._last_status_s: int | None = None
        self._last_warning: int | None = None
        self._sustained = SustainedPower()
        # (quarter start, time, limit) of the latest warning: what benchmarks and tests observe.
        self.last_warning: tuple[int, int, float] | None = None

    # ------------------------------------------------------------------ input

    def build(self, telegram: Telegram, received_at_s: float) -> list[str]:
        fields = telegram.fields
        if DEMAND_OBIS not in fields and MONTH_PEAK_OBIS not in fields:
            return []
        if telegram.timestamp is not None and not self.use_receive_time:
            time_s = int(telegram.timestamp.timestamp())
        else:
            time_s = int(received_at_s)
        meter = telegram.meter_id
        if meter != self._meter:
            if self._meter is not None:
                logger.info("meter %s replaces %s; starting over", meter, self._meter)
            self._start_over(meter)
        self.stats.telegrams += 1
        month = self._month_of(time_s)
        self._read_peaks(fields, month)
        lines: list[str] = []
        demand = _number(fields.get(DEMAND_OBIS), _KW_UNITS)
        closed = self._advance(time_s, import_kwh(fields), demand, lines)
        power = power_kw(fields)
        self._now = (time_s, power, demand)
        if power is not None:
            self._sustained.add(time_s, power)
        # The rule is judged on every telegram (a warning may start on any); the quarter's other figures
        # only when a line is due or a warning starts, about one telegram in ten.
        warning = self._peak_warning_now()
        quarter: QuarterNow | None = None
        current = self._quarter
        if warning == 1 and current is not None and not current.warned:
            quarter = self._quarter_now()
            self._warn_once(quarter)
        due = (
            closed
            or self._last_status_s is None
            or time_s - self._last_status_s >= self.write_interval_s
            or warning != self._last_warning
        )
        if due:
            lines.append(self._status_line(quarter or self._quarter_now(), time_s))
            self._last_status_s = time_s
            self._last_warning = warning
        return lines

    def _peak_warning_now(self) -> int | None:
        """``_quarter_now().peak_warning``, without the figures it does not need.

        When even the current power held to the quarter's end stays within the limit and its margin,
        the rule, which projects at most that power, cannot warn: the held power is not worked out.
        """
        assert self._quarter is not None and self._now is not None
        quarter = self._quarter
        time_s, power, _ = self._now
        used = self._used_so_far(time_s)
        if used is None or power is None:
            return None
        if quarter.warned:
            return 1
        energy, elapsed = used
        remaining = quarter.end_s - time_s
        limit = self._limit_kw(time_s)
        if remaining >= 0 and elapsed + remaining > 0 and \
                projected_kw(energy, elapsed, power, remaining) <= limit + self.margin_kw:
            return 0
        held = self._sustained.kw(hold_s(remaining))
        call = warning_call(energy, elapsed, remaining, power, held, limit, self.margin_kw)
        return int(call is not None and call.warn)

    def _month_of(self, time_s: int) -> str:
        # Asked several times per telegram; the answer only changes at a local midnight on the 1st.
        first_s, next_s, month = self._month_span
        if first_s <= time_s < next_s:
            return month
        self._month_span = month_bounds_s(time_s, self.zone)
        return self._month_span[2]

    def _read_peaks(self, fields: Mapping[str, Reading], month: str) -> None:
        # The decoder hands out the same Reading while a line does not change: most telegrams stop here.
        peak = fields.get(MONTH_PEAK_OBIS)
        history = fields.get(PEAK_HISTORY_OBIS)
        if peak is self._peak_raw and history is self._history_raw:
            return
        self._peak_raw = peak
        value = _number(peak, _KW_UNITS)
        if peak is not None and value is not None:
            # The meter stamps a peak at the end of its quarter (the DLMS capture
            # time), so a peak in a month's last quarter carries 00:00 of the
            # 1st: one second earlier is always inside the peak's own quarter.
            peak_month = month if peak.time is None else local_month(peak.time - _ONE_SECOND, self.zone)
            known = self._meter_peaks.get(peak_month)
            if known is None or value >= known[0]:
                self._meter_peaks[peak_month] = (value, peak.time)
                _prune(self._meter_peaks)
        if history is self._history_raw:
            return
        self._history_raw = history
        if history is None or not isinstance(history.value, tuple):
            return
        placed: dict[str, tuple[float, datetime | None]] = {}
        unplaced: list[HistoryEntry] = []
        for entry in history.value:
            if not isinstance(entry, HistoryEntry) or entry.value is None:
                continue
            factor = _KW_UNITS.get(entry.unit or "kW")
            if factor is None:
                continue
            if entry.month is None:
                unplaced.append(entry)
                continue
            kw = round(entry.value * factor, 9)
            known = placed.get(entry.month)
            if known is None or kw > known[0]:
                placed[entry.month] = (kw, entry.time)
        self._history = placed
        self._unplaced = tuple(unplaced)

    def _advance(self, time_s: int, energy: float | None, demand: float | None, lines: list[str]) -> bool:
        """Move the quarter bookkeeping to ``time_s``; True when a quarter was closed."""
        tolerance = self.boundary_tolerance_s
        if self._last_time_s is not None and time_s < self._last_time_s:
            self.stats.clock_steps_back += 1
            logger.warning("the meter clock went back from %s to %s; the running quarter is not measured",
                           self._label_time(self._last_time_s), self._label_time(time_s))
            if self._quarter is not None:
                self.stats.quarters_skipped += 1
            self._quarter = None
            self._last = None
            self._sustained.reset()
            self._last_status_s = None  # else no status point until the clock is back where it was
            self._why_no_quarter = "the meter clock went back {} s into it"
        self._last_time_s = time_s
        if energy is not None and self._last is not None and energy < self._last.import_kwh:
            self.stats.counter_resets += 1
            logger.warning("the import counter went back from %.3f to %.3f kWh (meter replaced?); "
                           "the running quarter is not measured", self._last.import_kwh, energy)
            if self._quarter is not None and self._quarter.opening is not None:
                self._quarter.opening = None
                self._quarter.why_not = "the import counter went back"
            self._last = None
        start = quarter_start_s(time_s)
        quarter = self._quarter
        closed = False
        current = Sample(time_s, energy) if energy is not None else None
        if quarter is None or start != quarter.start_s:
            opening: Sample | None = None
            why_not = None
            if quarter is not None:
                boundary = quarter.end_s
                reading = self._boundary_reading(boundary, current)
                self._close(quarter, reading, lines)
                closed = True
                if start == boundary:
                    opening = reading
            if opening is None and current is not None and time_s - start <= tolerance:
                opening = current
            if opening is None:
                if energy is None:
                    why_not = "the meter sends no import counter"
                elif quarter is None:
                    why_not = self._why_no_quarter.format(time_s - start)
                else:
                    why_not = f"no reading within {tolerance} s of its start"
            quarter = self._quarter = _Quarter(start, opening, why_not)
        if demand is not None:
            quarter.last_demand = (time_s, demand)
        if current is not None:
            self._last = current
        return closed

    def _boundary_reading(self, boundary_s: int, current: Sample | None) -> Sample | None:
        """The reading nearest to a boundary, if it is close enough to stand for the counter there."""
        candidates: list[tuple[int, int, Sample]] = []
        if current is not None and current.time_s - boundary_s <= self.boundary_tolerance_s:
            candidates.append((current.time_s - boundary_s, 0, current))
        last = self._last
        if last is not None and last.time_s < boundary_s and boundary_s - last.time_s <= self.boundary_tolerance_s:
            candidates.append((boundary_s - last.time_s, 1, last))
        return min(candidates, key=lambda c: (c[0], c[1]))[2] if candidates else None

    def _close(self, quarter: _Quarter, closing: Sample | None, lines: list[str]) -> None:
        label = quarter_label(quarter.start_s, self.zone)
        opening = quarter.opening
        if opening is None or closing is None:
            self.stats.quarters_skipped += 1
            reason = quarter.why_not if opening is None else f"no reading within {self.boundary_tolerance_s} s of its end"
            logger.info("quarter %s not measured: %s", label, reason)
            return
        covered_s = closing.time_s - opening.time_s
        average = round_kw(average_kw(closing.import_kwh - opening.import_kwh, covered_s))
        demand_kw = None
        if quarter.last_demand is not None and quarter.end_s - quarter.last_demand[0] <= self.boundary_tolerance_s:
            demand_kw = quarter.last_demand[1]
        diff = round_kw(average - demand_kw) if demand_kw is not None else None
        result = QuarterResult(quarter.start_s, quarter.end_s, average, demand_kw, diff)
        self._last_quarter = result
        self.stats.quarters_measured += 1
        values: dict[str, float] = {"quarter_avg_kw": average}
        if diff is not None:
            values["quarter_diff_kw"] = diff
        lines.append(line("capacity", {"meter": self._meter or ""}, values, quarter.end_s))
        month = self._month_of(quarter.start_s)
        best = self._our_peaks.get(month)
        if best is None or average > best.average_kw:
            self._our_peaks[month] = result
            _prune(self._our_peaks)

    # ------------------------------------------------------------------ figures

    def _seen_peak_kw(self, month: str) -> float | None:
        """The highest of the meter's 1-0:1.6.0 and p1logger's own quarters for ``month``, if any was seen."""
        meter = self._meter_peaks.get(month)
        ours = self._our_peaks.get(month)
        known = [kw for kw in (meter[0] if meter else None, ours.average_kw if ours else None) if kw is not None]
        return max(known) if known else None

    def running_peak_kw(self, month: str) -> float:
        """This month's peak so far: nothing seen yet (the month just began) means 0 so far."""
        seen = self._seen_peak_kw(month)
        return seen if seen is not None else 0.0

    def _months(self, month: str) -> tuple[list[MonthPeak], list[str]]:
        running = self.running_peak_kw(month)
        used = [MonthPeak(month, running, billed_kw(running), "running", None)]
        missing: list[str] = []
        for name in billed_months(month)[1:]:
            if name in self._history:
                kw, when = self._history[name]
                used.append(MonthPeak(name, kw, billed_kw(kw), "meter history", when))
                continue
            seen = self._seen_peak_kw(name)
            if seen is None:
                missing.append(name)
            else:
                used.append(MonthPeak(name, seen, billed_kw(seen), "logger", None))
        return used, missing

    def _used_so_far(self, time_s: int) -> tuple[float, int] | None:
        """The running quarter's energy (kWh) and the seconds it took, when the quarter opened and the last
        reading is of ``time_s``."""
        quarter = self._quarter
        if quarter is None or quarter.opening is None or self._last is None or self._last.time_s != time_s:
            return None
        return round(self._last.import_kwh - quarter.opening.import_kwh, 6), time_s - quarter.opening.time_s

    def _limit_kw(self, time_s: int) -> float:
        return billed_kw(self.running_peak_kw(self._month_of(time_s)))

    def _quarter_now(self) -> QuarterNow:
        assert self._quarter is not None and self._now is not None
        quarter = self._quarter
        time_s, power, demand = self._now
        limit = self._limit_kw(time_s)
        energy = elapsed = average = projected = shed = warning = sustained = rule_projected = None
        used = self._used_so_far(time_s)
        if used is not None:
            energy, elapsed = used
            if elapsed > 0:
                average = round_kw(average_kw(energy, elapsed))
            if power is not None:
                remaining = quarter.end_s - time_s
                projected = round_kw(projected_kw(energy, elapsed, power, remaining))
                shed = round_kw(shed_kw(energy, elapsed, power, remaining, limit))
                held = self._sustained.kw(hold_s(remaining))
                call = warning_call(energy, elapsed, remaining, power, held, limit, self.margin_kw)
                warning = int(quarter.warned or (call is not None and call.warn))
                if call is not None:
                    sustained, rule_projected = call.sustained_kw, call.projected_kw
        return QuarterNow(
            quarter.start_s, quarter.end_s, quarter.opening is not None, quarter.why_not, energy, elapsed,
            average, demand, power, limit, projected, shed, warning, sustained, rule_projected,
        )

    def _warn_once(self, quarter: QuarterNow) -> None:
        current = self._quarter
        if quarter.peak_warning != 1 or current is None or current.warned:
            return
        current.warned = True  # once per quarter, and peak_warning stays 1 to the quarter's end
        self.stats.warnings += 1
        now_s = self._now[0] if self._now is not None else quarter.end_s
        remaining_s = quarter.end_s - now_s
        self.last_warning = (quarter.start_s, now_s, quarter.limit_kw)
        logger.warning(
            "quarter %s is heading for %.3f kW with the %.3f kW held for the last %d s, above this month's peak "
            "of %.3f kW (margin %.3f kW): shed %.3f kW now, for the %d min %02d s left (until %s)",
            quarter_label(quarter.start_s, self.zone), quarter.rule_projected_kw or 0.0, quarter.sustained_kw or 0.0,
            hold_s(remaining_s), quarter.limit_kw, self.margin_kw, quarter.shed_kw or 0.0,
            remaining_s // 60, remaining_s % 60,
            local_text(datetime.fromtimestamp(quarter.end_s, timezone.utc), self.zone, date=False),
        )

    def _rolling(self, month: str) -> tuple[list[MonthPeak], list[str], float, float]:
        """The months of the mean, the missing ones, the mean (kW) and the yearly cost (EUR), rounded."""
        months, missing = self._months(month)
        mean = rolling_mean_kw([m.peak_kw for m in months])
        assert mean is not None  # the running month is always there
        return months, missing, round_kw(mean), round_eur(mean * self.price_eur_per_kw_year)

    def _status_line(self, quarter: QuarterNow, time_s: int) -> str:
        months, _, mean_kw, cost_eur = self._rolling(self._month_of(time_s))
        values: dict[str, float | int] = {
            "running_peak_kw": months[0].peak_kw,
            "rolling_mean_kw": mean_kw,
            "yearly_cost_eur": cost_eur,
        }
        if quarter.projected_kw is not None and quarter.shed_kw is not None and quarter.peak_warning is not None:
            values["projected_kw"] = quarter.projected_kw
            values["shed_kw"] = quarter.shed_kw
            values["peak_warning"] = quarter.peak_warning
        return line("capacity", {"meter": self._meter or ""}, values, time_s)

    def state(self) -> CapacityState | None:
        """The figures at the latest telegram with capacity data; None before the first one."""
        if self._now is None or self._quarter is None or self._meter is None:
            return None
        time_s = self._now[0]
        month = self._month_of(time_s)
        meter_peak = self._meter_peaks.get(month)
        months, missing, mean_kw, cost_eur = self._rolling(month)
        return CapacityState(
            meter=self._meter,
            time_s=time_s,
            zone=self.zone,
            quarter=self._quarter_now(),
            last_quarter=self._last_quarter,
            month=month,
            meter_peak_kw=meter_peak[0] if meter_peak else None,
            meter_peak_time=meter_peak[1] if meter_peak else None,
            our_peak=self._our_peaks.get(month),
            running_peak_kw=months[0].peak_kw,
            months=tuple(months),
            missing_months=tuple(missing),
            unplaced_history=self._unplaced,
            rolling_mean_kw=mean_kw,
            price_eur_per_kw_year=self.price_eur_per_kw_year,
            yearly_cost_eur=cost_eur,
            margin_kw=self.margin_kw,
            stats=replace(self.stats),
        )

    def _label_time(self, time_s: int) -> str:
        return local_text(datetime.fromtimestamp(time_s, timezone.utc), self.zone)


def _prune(by_month: dict[str, _T]) -> None:
    while len(by_month) > _MONTHS_KEPT:
        del by_month[min(by_month)]
