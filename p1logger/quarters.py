"""The capacity tariff's arithmetic: quarters, months, peaks, projections and the warning rule.

Pure: no I/O, no logging, no clock.  Every quarter-hour and month calculation
in p1logger lives here (the tracker in ``capacity.py``, the simulator and the
``capacity`` command use these), so a rule is written once.  See
``docs/capacity.md`` for the tariff and for why the warning rule is what it is.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

QUARTER_S = 900
FLOOR_KW = 2.5  # every month is billed as at least this much
MONTHS_BILLED = 12
TARIFF_START_MONTH = "2023-01"  # Fluvius counted no peak from before the tariff started

# The warning rule (docs/capacity.md, "Warnings"): project the quarter with the
# power the household has held for a while, not with the power of this very
# second, so a kettle's two minutes do not cry wolf.  "A while" is a sixth of
# the time left in the quarter, at least MIN_HOLD_S and at most SUSTAIN_WINDOW_S:
# early in a quarter a spike has time to end before it matters; late in it, a
# load that is on will mostly still be on at the end.
SUSTAIN_WINDOW_S = 90
MIN_HOLD_S = 30
# Readings further apart than this are not taken as one continuous load.
MAX_GAP_S = QUARTER_S
# The held power is a minimum, so it reads a steady load low by its flicker
# (a fridge, a meter's rounding): this much is added back before projecting.
FLICKER_KW = 0.15
# No warning before this much of the quarter has been seen: the first
# telegrams of a quarter carry too little energy to say anything.
MIN_ELAPSED_S = 60


def round_kw(value: float) -> float:
    return round(value, 3)  # watt resolution, as the meter reports


def round_eur(value: float) -> float:
    return round(value, 2)


def quarter_start_s(time_s: int) -> int:
    """Start of the quarter hour holding ``time_s``.

    Quarters are aligned to :00, :15, :30 and :45 local time.  Every time zone
    in use today is a whole number of quarter hours from UTC (Brussels is +1 h
    or +2 h), so local quarters are UTC quarters, and each one is 900 s of real
    time, also across a DST change.
    """
    return time_s - time_s % QUARTER_S


def local_month(moment: datetime, zone: ZoneInfo) -> str:
    return f"{moment.astimezone(zone):%Y-%m}"


def month_bounds_s(time_s: int, zone: ZoneInfo) -> tuple[int, int, str]:
    """(first second, first second of the next month, "YYYY-MM") of the local month holding ``time_s``."""
    local = datetime.fromtimestamp(time_s, zone)
    first = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0, fold=0)
    following = first.replace(year=first.year + 1, month=1) if first.month == 12 else first.replace(month=first.month + 1)
    return int(first.timestamp()), int(following.timestamp()), f"{local:%Y-%m}"


def month_start(month: str, zone: ZoneInfo) -> datetime:
    """00:00 local time on the first day of ``YYYY-MM``, in UTC."""
    return datetime(int(month[:4]), int(month[5:7]), 1, tzinfo=zone).astimezone(timezone.utc)


def next_month(month: str) -> str:
    year, number = int(month[:4]), int(month[5:7])
    year, number = (year + 1, 1) if number == 12 else (year, number + 1)
    return f"{year:04d}-{number:02d}"


def billed_months(month: str, count: int = MONTHS_BILLED) -> list[str]:
    """``month`` and the ``count - 1`` months before it, newest first, never before the tariff started."""
    year, number = int(month[:4]), int(month[5:7])
    months: list[str] = []
    for _ in range(count):
        name = f"{year:04d}-{number:02d}"
        if name < TARIFF_START_MONTH:
            break
        months.append(name)
        year, number = (year - 1, 12) if number == 1 else (year, number - 1)
    return months


def billed_kw(peak_kw: float) -> float:
    return max(peak_kw, FLOOR_KW)


def rolling_mean_kw(peaks_kw: Sequence[float]) -> float | None:
    """Mean of monthly peaks, each counted as at least 2.5 kW (unrounded); None without any month."""
    if not peaks_kw:
        return None
    return sum(billed_kw(peak) for peak in peaks_kw) / len(peaks_kw)


def average_kw(energy_kwh: float, covered_s: int) -> float:
    """Average demand over ``covered_s`` seconds; for a whole quarter this is energy x 4."""
    return energy_kwh * 3600.0 / covered_s


def projected_kw(energy_kwh: float, covered_s: int, power_kw: float, remaining_s: int) -> float:
    """The quarter's average if ``power_kw`` holds for the ``remaining_s`` seconds left."""
    return (energy_kwh * 3600.0 + power_kw * remaining_s) / (covered_s + remaining_s)


def shed_kw(energy_kwh: float, covered_s: int, power_kw: float, remaining_s: int, limit_kw: float) -> float:
    """How much of ``power_kw`` to switch off now so that the quarter ends at ``limit_kw``.

    Never more than ``power_kw`` itself: when even that is not enough, the
    quarter will end above the limit whatever happens.
    """
    if remaining_s <= 0:
        return 0.0
    allowed_kw = (limit_kw * (covered_s + remaining_s) - energy_kwh * 3600.0) / remaining_s
    return min(power_kw, max(0.0, power_kw - allowed_kw))


class SustainedPower:
    """The power the household has held: the lowest reading since a given time.

    Between two telegrams the power is taken as the earlier reading, so the
    power held over the last ``window`` seconds is the lowest of the readings
    in the window and the last one before it.  That works at one telegram a
    second and at one every 10 s or 5 minutes alike.  Bounded: the readings of
    the longest window (capped at ``max_samples``).  None until the window is
    covered, and again after a clock that steps back or a gap of more than a
    quarter hour.
    """

    def __init__(self, window_s: int = SUSTAIN_WINDOW_S, max_samples: int = 1024) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[int, float]] = deque(maxlen=max_samples)

    def reset(self) -> None:
        self._samples.clear()

    def add(self, time_s: int, power_kw: float) -> None:
        samples = self._samples
        if samples and (time_s < samples[-1][0] or time_s - samples[-1][0] > MAX_GAP_S):
            samples.clear()  # a clock step or a long gap: what came before says nothing about now
        samples.append((time_s, power_kw))
        oldest = time_s - self.window_s
        while len(samples) > 1 and samples[1][0] <= oldest:
            samples.popleft()  # keep one reading at or before the window's start: it was in force there

    def kw(self, window_s: int | None = None) -> float | None:
        """The lowest power in force during the last ``window_s`` seconds (at most the whole window)."""
        samples = self._samples
        window = self.window_s if window_s is None else min(window_s, self.window_s)
        if not samples:
            return None
        oldest = samples[-1][0] - window
        if samples[0][0] > oldest:
            return None  # not covered: nothing is known from the window's start
        lowest = math.inf
        for time_s, power in reversed(samples):
            if power < lowest:
                lowest = power
            if time_s <= oldest:
                break
        return lowest


def hold_s(remaining_s: int) -> int:
    """How long a load must have been held before the rule projects with it."""
    return max(MIN_HOLD_S, min(SUSTAIN_WINDOW_S, remaining_s // 6))


@dataclass(frozen=True, slots=True)
class WarningCall:
    """What the warning rule says about the running quarter at one telegram."""

    warn: bool
    projected_kw: float  # with the sustained power held to the quarter's end
    sustained_kw: float
    shed_kw: float  # to switch off now (out of the current power) to end at the limit
    shed_for_s: int  # for how long: to the end of the quarter


def warning_call(
    energy_kwh: float,
    elapsed_s: int,
    remaining_s: int,
    power_kw: float,
    sustained_kw: float | None,
    limit_kw: float,
    margin_kw: float = 0.0,
) -> WarningCall | None:
    """The rule: warn when the quarter ends above the limit even if only the held power continues.

    ``sustained_kw`` is the lowest power of the hold window (``hold_s``); it is
    projected with ``FLICKER_KW`` added back, never above the current power.

    ``energy_kwh`` is what the quarter used in its first ``elapsed_s``
    seconds.  A spike shorter than the sustain window never enters the
    projection, so short kettle and oven bursts do not warn; an EV charger or
    a heat pump that keeps running does, minutes before the quarter ends.
    None when there is not enough to judge yet.
    """
    if sustained_kw is None or elapsed_s < MIN_ELAPSED_S or remaining_s < 0:
        return None
    held = min(sustained_kw, power_kw)
    projected = projected_kw(energy_kwh, elapsed_s, min(held + FLICKER_KW, power_kw), remaining_s)
    shed = shed_kw(energy_kwh, elapsed_s, power_kw, remaining_s, limit_kw)
    return WarningCall(projected > limit_kw + margin_kw, round_kw(projected), round_kw(held), round_kw(shed), remaining_s)


def local_text(moment: datetime, zone: ZoneInfo, *, date: bool = True) -> str:
    """``2025-10-26 02:45+02:00``: local time with its offset, unambiguous in the hour DST repeats."""
    local = moment.astimezone(zone)
    offset = f"{local:%z}"
    return f"{local:%Y-%m-%d %H:%M}"[0 if date else 11:] + f"{offset[:3]}:{offset[3:]}"


def quarter_label(start_s: int, zone: ZoneInfo) -> str:
    """``2025-03-30 01:45+01:00–03:00+02:00``: a quarter's local start and end."""
    start = datetime.fromtimestamp(start_s, timezone.utc)
    end = datetime.fromtimestamp(start_s + QUARTER_S, timezone.utc)
    return f"{local_text(start, zone)}–{local_text(end, zone, date=False)}"
