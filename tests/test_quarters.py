"""The capacity arithmetic and the warning rule, as pure functions (p1logger/quarters.py)."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from p1logger.quarters import (
    MIN_ELAPSED_S,
    SUSTAIN_WINDOW_S,
    SustainedPower,
    hold_s,
    month_bounds_s,
    month_start,
    next_month,
    quarter_start_s,
    warning_call,
)
from p1logger.simulate import day_events

ZONE = ZoneInfo("Europe/Brussels")


def test_quarters_and_months_in_one_place() -> None:
    noon = int(datetime(2026, 1, 15, 12, 7, 30, tzinfo=timezone.utc).timestamp())
    assert quarter_start_s(noon) == noon - 7 * 60 - 30
    # March 2026 in Brussels: 1 March 00:00 CET to 1 April 00:00 CEST, 31 days less the hour DST skips.
    first, following, label = month_bounds_s(int(datetime(2026, 3, 15, tzinfo=timezone.utc).timestamp()), ZONE)
    assert label == "2026-03"
    assert datetime.fromtimestamp(first, timezone.utc) == datetime(2026, 2, 28, 23, 0, tzinfo=timezone.utc)
    assert following - first == 31 * 86400 - 3600
    assert month_start("2026-04", ZONE) == datetime(2026, 3, 31, 22, 0, tzinfo=timezone.utc)
    assert next_month("2025-12") == "2026-01"


def test_the_held_power_is_the_lowest_in_force_in_the_window_and_forgets_after_a_gap() -> None:
    held = SustainedPower(window_s=90)
    for t in range(0, 90):
        held.add(t, 2.0 if t % 30 else 0.5)  # a dip every 30 s
        assert held.kw() is None  # the window is not covered yet
    held.add(90, 2.0)
    assert held.kw() == 0.5
    for t in range(91, 190):
        held.add(t, 9.0 if t >= 100 else 2.0)
    assert held.kw() == 2.0  # 9 kW since t=100, but the 2 kW at t=99 is still inside the 90 s at t=189
    held.add(190, 9.0)
    assert held.kw() == 9.0
    assert held.kw(30) == 9.0 and held.kw(200) == 9.0  # a shorter window; a longer one is the whole window
    # Readings 5 minutes apart (a sparse meter or a test): the earlier reading holds until the next one.
    held.add(490, 9.0)
    assert held.kw() == 9.0
    held.add(790, 1.0)
    assert held.kw() == 1.0 and held.kw(30) == 1.0
    held.add(1700, 9.0)  # a gap longer than a quarter hour: start over
    assert held.kw() is None
    held.add(1699, 9.0)  # a clock step back: start over too
    assert held.kw() is None


def test_the_rule_projects_with_the_held_power_only() -> None:
    # Limit 4.0 kW. 300 s into the quarter with 0.25 kWh used (3 kW average), 600 s left.
    # A kettle now (current 5.2 kW) but only 3.0 kW held, projected with 0.15 kW of flicker added back:
    # (900 + 3.15 x 600) / 900 = 3.1 -> no warning.
    call = warning_call(0.25, 300, 600, 5.2, 3.0, 4.0)
    assert call is not None and not call.warn and call.projected_kw == 3.1 and call.sustained_kw == 3.0
    # The same, with 5.2 kW held (an EV charger; the flicker never lifts it above the current power):
    # (900 + 5.2 x 600) / 900 = 4.467 -> warn; allowed
    # (3600 - 900) / 600 = 4.5 kW, so shed 0.7 kW for the 600 s left.
    call = warning_call(0.25, 300, 600, 5.2, 5.2, 4.0)
    assert call is not None and call.warn
    assert (call.projected_kw, call.shed_kw, call.shed_for_s) == (4.467, 0.7, 600)
    # A margin moves the warning, not the shedding.
    call = warning_call(0.25, 300, 600, 5.2, 5.2, 4.0, margin_kw=0.5)
    assert call is not None and not call.warn and call.shed_kw == 0.7
    # Held power above the current power counts only the current: the load has just dropped.
    call = warning_call(0.25, 300, 600, 1.0, 5.2, 4.0)
    assert call is not None and not call.warn and call.sustained_kw == 1.0
    # Already above whatever happens: 1.1 kWh by 300 s is 4.4 kW even with nothing after it.
    call = warning_call(1.1, 300, 600, 0.5, 0.5, 4.0)
    assert call is not None and call.warn and call.shed_kw == 0.5


def test_no_call_without_enough_to_judge() -> None:
    assert warning_call(0.1, 300, 600, 5.0, None, 4.0) is None
    assert warning_call(0.1, MIN_ELAPSED_S - 1, 900 - MIN_ELAPSED_S + 1, 9.0, 9.0, 4.0) is None
    assert SUSTAIN_WINDOW_S == 90


def test_the_hold_time_is_a_sixth_of_what_is_left_between_30_and_90_s() -> None:
    assert [hold_s(left) for left in (900, 540, 539, 300, 180, 100, 0)] == [90, 90, 89, 50, 30, 30, 30]


def test_the_simulated_days_have_real_peaks_beside_short_spikes() -> None:
    events = []
    for day in range(1, 32):
        midnight = datetime(2026, 1, day, tzinfo=ZONE)
        events.extend(day_events(int(midnight.timestamp()), midnight, seed=1))
    # The same day and seed give the same runs.
    midnight = datetime(2026, 1, 5, tzinfo=ZONE)
    assert day_events(int(midnight.timestamp()), midnight, 1) == day_events(int(midnight.timestamp()), midnight, 1)
    names = {event.name for event in events}
    assert {"kettle", "microwave", "oven", "heat pump", "EV charging"} <= names
    short = [e for e in events if e.end_s - e.start_s < 300]
    long = [e for e in events if e.end_s - e.start_s >= 1800 and e.kw >= 2.2 and not e.on_s]
    assert len(short) > 100 and len(long) > 50
    # The oven cycles on its thermostat.
    oven = next(e for e in events if e.name == "oven")
    assert oven.kw_at(oven.start_s) == oven.kw and oven.kw_at(oven.start_s + oven.on_s) == 0.0
