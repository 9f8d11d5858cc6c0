"""The Belgian capacity tariff: p1logger/capacity.py, `p1logger capacity` and the alert rule.

Telegrams come from `SimMeter`: a real Fluvius telegram (tests/fixtures/
slo1958_sl_xj_energymeter__fluvius_3ph_peak_history13.txt) with its clock,
import counters, power, 1-0:1.4.0, 1-0:1.6.0 and 0-0:98.1.0 rewritten from a
load profile, and its CRC recomputed. Energy is kept in joules (integers), so a
counter at a quarter boundary is exact and every figure below can be worked out
by hand; the arithmetic is written next to each expected value.

The simulated meter behaves as the e-MUCS spec describes (docs/capacity.md):
1-0:1.4.0 is the running quarter's energy divided by 15 minutes, 1-0:1.6.0 the
month's highest finished quarter stamped at that quarter's end, and at 00:00 on
the 1st the finished month moves into 0-0:98.1.0.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import pytest
from helpers.influx_servers import require_server

from p1logger import capacity, cli
from p1logger.capacity import CapacityTracker, quarter_label
from p1logger.commands import capacity as capacity_command
from p1logger.builders import CapacityBuilder, create_builders
from p1logger.crc import crc16
from p1logger.decode import Telegram, decode
from p1logger.points import SCHEMA
from p1logger.reader import TelegramReader
from p1logger.inputs.file import FileSource
from p1logger.timestamps import TimestampParser

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
FIXTURE = FIXTURES / "slo1958_sl_xj_energymeter__fluvius_3ph_peak_history13.txt"
DUTCH_FIXTURE = FIXTURES / "dsmrreader__kaifa_dsmr42.txt"
ALERT_RULE = REPO / "grafana" / "provisioning" / "alerting" / "capacity.yaml"
DATASOURCES = REPO / "grafana" / "provisioning" / "datasources" / "influxdb.yaml"
ZONE = ZoneInfo("Europe/Brussels")
METER = "1SAG3100716957"  # 0-0:96.1.1 of the fixture, decoded from hex
FIXTURE_T1_WH = 2601234  # 1-0:1.8.1(002601.234*kWh)
FIXTURE_T2_WH = 3437690  # 1-0:1.8.2(003437.690*kWh)
# The fixture's 1-0:1.6.0(250501101500S)(01.194*kW): 2025-05-01 10:15 CEST.
FIXTURE_PEAK = (1746087300, 1194)
# The sum of the fixture's history for 2024-06 .. 2025-04, the 11 months before May 2025:
# 3.297 + 3.090 + 3.378 + 3.649 + 4.113 + 4.428 + 7.211 + 5.494 + 4.987 + 4.323 + 3.535 = 47.505
FIXTURE_11_MONTHS_KW = 47.505
HISTORY_RE = re.compile(r"\((\d{12}[SW])\)\((\d{12}[SW])\)\((\d+\.\d+)\*kW\)")
EDITED_OBIS = ("0-0:1.0.0", "1-0:1.8.1", "1-0:1.8.2", "1-0:1.4.0", "1-0:1.6.0", "0-0:98.1.0", "1-0:1.7.0")


# --------------------------------------------------------------------------- the simulated meter


def utc_s(text: str) -> int:
    """Epoch seconds of an ISO time with its offset, e.g. "2025-05-02T00:00:00+02:00"."""
    return int(datetime.fromisoformat(text).timestamp())


def dsmr_stamp(time_s: int) -> str:
    """YYMMDDhhmmssX in Brussels, S in summer time and W in winter time, as the meter writes it."""
    hour, minutes, seconds = local_hour(time_s - time_s % 3600), time_s % 3600 // 60, time_s % 60
    return f"{hour[0]}{minutes:02d}{seconds:02d}{hour[1]}"


@functools.lru_cache(maxsize=4096)
def local_hour(hour_s: int) -> tuple[str, str, int, str]:
    """(YYMMDDhh, S or W, local hour, YYYY-MM) of the hour starting at ``hour_s``; Brussels is whole hours off UTC."""
    local = datetime.fromtimestamp(hour_s, ZONE)
    return f"{local:%y%m%d%H}", "S" if local.dst() else "W", local.hour, f"{local:%Y-%m}"


def fixture_history() -> list[tuple[str, str, int]]:
    """The fixture's 0-0:98.1.0 as (capture stamp, peak stamp, watts)."""
    text = FIXTURE.read_bytes().decode("ascii")
    history_line = next(row for row in text.split("\r\n") if row.startswith("0-0:98.1.0("))
    return [(cap, occ, round(float(kw) * 1000)) for cap, occ, kw in HISTORY_RE.findall(history_line)]


def kwh_text(joules: int) -> str:
    wh = joules // 3600  # a counter shows whole watt-hours done
    return f"{wh // 1000:06d}.{wh % 1000:03d}"


def kw_text(watts: float) -> str:
    return f"{watts / 1000:06.3f}"


class SimMeter:
    """A Fluvius meter following ``load_w(time_s)``; yields (time_s, telegram bytes)."""

    def __init__(
        self,
        load_w: Callable[[int], int],
        *,
        peak: tuple[int, int] = FIXTURE_PEAK,
        history: list[tuple[str, str, int]] | None = None,
        update_history: bool = True,
    ) -> None:
        self.load_w = load_w
        self.t1_j = FIXTURE_T1_WH * 3600
        self.t2_j = FIXTURE_T2_WH * 3600
        self.peak = peak  # (stamp time, watts) of this month's highest finished quarter
        self.history = list(fixture_history() if history is None else history)
        self.update_history = update_history
        self.counters_from_j = (0, 0)  # what the two counters show is counted from here (a counter reset)
        text = FIXTURE.read_bytes().decode("ascii")
        self.lines = text[: text.index("!") + 1].split("\r\n")
        self.index = {obis: next(i for i, row in enumerate(self.lines) if row.startswith(obis + "("))
                      for obis in EDITED_OBIS}

    def total_j(self) -> int:
        return self.t1_j + self.t2_j

    def history_text(self) -> str:
        entries = "".join(f"({cap})({occ})({kw_text(w)}*kW)" for cap, occ, w in self.history)
        return f"({len(self.history)})(1-0:1.6.0)(1-0:1.6.0){entries}"

    def telegram(self, time_s: int, quarter_j: int) -> bytes:
        lines = list(self.lines)
        shown_t1 = self.t1_j - self.counters_from_j[0]
        shown_t2 = self.t2_j - self.counters_from_j[1]
        values = {
            "0-0:1.0.0": f"({dsmr_stamp(time_s)})",
            "1-0:1.8.1": f"({kwh_text(shown_t1)}*kWh)",
            "1-0:1.8.2": f"({kwh_text(shown_t2)}*kWh)",
            # The running quarter's energy divided by the whole 15 minutes.
            "1-0:1.4.0": f"({kw_text(quarter_j / 900)}*kW)",
            "1-0:1.6.0": f"({dsmr_stamp(self.peak[0])})({kw_text(self.peak[1])}*kW)",
            "0-0:98.1.0": self.history_text(),
            "1-0:1.7.0": f"({kw_text(self.load_w(time_s))}*kW)",
        }
        for obis, value in values.items():
            lines[self.index[obis]] = obis + value
        body = "\r\n".join(lines)
        return f"{body}{crc16(body.encode('ascii')):04X}\r\n".encode("ascii")

    def run(self, start_s: int, end_s: int, step_s: int = 1,
            skip: Callable[[int], bool] = lambda t: False,
            events: dict[int, Callable[[SimMeter], None]] | None = None) -> Iterator[tuple[int, bytes]]:
        """Telegrams from ``start_s`` to ``end_s`` inclusive; the meter itself runs from the start of that quarter."""
        t = start_s - start_s % 900
        quarter_start_j = self.total_j()
        month = local_hour(t - t % 3600)[3]
        while t <= end_s:
            _, _, hour, now_month = local_hour(t - t % 3600)
            if t % 900 == 0:
                average_w = (self.total_j() - quarter_start_j) // 900
                if average_w > self.peak[1] and t > start_s - start_s % 900:
                    self.peak = (t, average_w)  # stamped at the quarter's end
                quarter_start_j = self.total_j()
            if now_month != month:
                if self.update_history:
                    self.history = [*self.history, (dsmr_stamp(t), dsmr_stamp(self.peak[0]), self.peak[1])][-13:]
                self.peak = (t, 0)
                month = now_month
            if events and t in events:
                events[t](self)
            if t >= start_s and not skip(t):
                yield t, self.telegram(t, self.total_j() - quarter_start_j)
            joules = self.load_w(t) * step_s
            if 7 <= hour < 22:
                self.t1_j += joules  # day tariff
            else:
                self.t2_j += joules
            t += step_s


def telegrams_of(chunks: Iterable[bytes]) -> Iterator[Telegram]:
    reader = TelegramReader(TimestampParser(ZONE))
    for chunk in chunks:
        for item in reader.feed(chunk):
            assert isinstance(item, Telegram), item
            assert item.crc_ok is True
            yield item


def track(stream: Iterable[tuple[int, bytes]], tracker: CapacityTracker | None = None,
          ) -> tuple[CapacityTracker, list[str]]:
    tracker = tracker or CapacityTracker(ZONE)
    lines: list[str] = []
    for telegram in telegrams_of(raw for _, raw in stream):
        lines.extend(tracker.build(telegram, 0.0))
    return tracker, lines


def quarter_lines(lines: list[str]) -> list[str]:
    return [text for text in lines if " quarter_avg_kw=" in text]


def status_lines(lines: list[str]) -> list[str]:
    return [text for text in lines if " running_peak_kw=" in text]


def line_at(lines: list[str], time_s: int) -> str:
    found = [text for text in status_lines(lines) if text.endswith(f" {time_s}")]
    assert len(found) == 1, found
    return found[0]


def constant(watts: int) -> Callable[[int], int]:
    return lambda t: watts


def by_utc_quarter(loads: dict[int, int], other_w: int) -> Callable[[int], int]:
    """Load per quarter, keyed by the quarter's start (epoch seconds)."""
    return lambda t: loads.get(t - t % 900, other_w)


# --------------------------------------------------------------------------- pure computations


def test_quarter_average_projection_and_shed_by_hand() -> None:
    # A whole quarter: 0.5 kWh in 900 s is 0.5 x 4 = 2 kW.
    assert capacity.average_kw(0.5, 900) == 2.0
    # 0.3 kWh in the first 540 s, then 9 kW for the last 360 s:
    # (0.3 x 3600 + 9 x 360) / 900 = (1080 + 3240) / 900 = 4.8 kW.
    assert capacity.projected_kw(0.3, 540, 9.0, 360) == pytest.approx(4.8, abs=1e-12)
    # To end at 4 kW the rest may average (4 x 900 - 1080) / 360 = 7 kW, so shed 9 - 7 = 2 kW.
    assert capacity.shed_kw(0.3, 540, 9.0, 360, 4.0) == pytest.approx(2.0, abs=1e-12)
    # Already past it: 1.2 kWh by 540 s allows (3600 - 4320) / 360 = -2 kW; shedding is capped at all 9 kW.
    assert capacity.shed_kw(1.2, 540, 9.0, 360, 4.0) == 9.0
    # Heading below the limit: nothing to shed.
    assert capacity.shed_kw(0.1, 540, 1.0, 360, 4.0) == 0.0
    assert capacity.shed_kw(0.3, 900, 9.0, 0, 4.0) == 0.0
    assert capacity.quarter_start_s(utc_s("2025-05-02T18:14:59+02:00")) == utc_s("2025-05-02T18:00:00+02:00")


def test_billed_months_are_this_month_and_the_eleven_before() -> None:
    assert capacity.billed_months("2025-02") == [
        "2025-02", "2025-01", "2024-12", "2024-11", "2024-10", "2024-09",
        "2024-08", "2024-07", "2024-06", "2024-05", "2024-04", "2024-03",
    ]
    # The tariff started in January 2023: Fluvius billed May 2023 on January to May only.
    assert capacity.billed_months("2023-05") == ["2023-05", "2023-04", "2023-03", "2023-02", "2023-01"]


def test_rolling_mean_floors_each_month_not_the_mean() -> None:
    # 1.0 and 0.0 count as 2.5 each: (2.5 + 2.5 + 7.0) / 3 = 4.0, not (1 + 0 + 7) / 3 = 2.667.
    assert capacity.rolling_mean_kw([1.0, 0.0, 7.0]) == 4.0
    assert capacity.rolling_mean_kw([]) is None


# --------------------------------------------------------------------------- the meter's own values


def fixture_telegram() -> Telegram:
    text = FIXTURE.read_bytes().decode("ascii")
    return decode(text[: text.index("!") + 1], TimestampParser(ZONE), crc_ok=True)


def test_history_months_hold_across_dst_and_keep_placeholders() -> None:
    history = fixture_telegram().fields["0-0:98.1.0"].value
    assert isinstance(history, tuple)
    by_month = {entry.month: entry for entry in history}
    # Stamped 00:00 on the 1st in winter time, peak in summer time: October's peak.
    assert by_month["2024-10"].time == datetime(2024, 10, 3, 18, 15, tzinfo=timezone.utc)  # 241003201500S
    # Stamped 00:00 on 1 April in summer time, peak in winter time: March's peak.
    assert by_month["2025-03"].time == datetime(2025, 3, 14, 15, 45, tzinfo=timezone.utc)  # 250314164500W
    # (230801000000S)(632525252525W)(00.000*kW): July 2023, value kept, time unknown.
    assert (by_month["2023-07"].value, by_month["2023-07"].time) == (0.0, None)
    assert len(history) == 13


def test_fixture_gives_the_rolling_mean_and_cost_by_hand() -> None:
    tracker = CapacityTracker(ZONE)
    lines = tracker.build(fixture_telegram(), 0.0)
    # May 2025 so far: 1.194 kW, billed 2.5. With the 11 months before (47.505 kW):
    # (2.5 + 47.505) / 12 = 50.005 / 12 = 4.16708 -> 4.167 kW; x 53 EUR = 220.855 -> 220.86 EUR.
    # 16:40:35 is 635 s into a quarter: not measured, so no projection.
    assert lines == [(f"capacity,meter={METER} running_peak_kw=1.194,rolling_mean_kw=4.167,yearly_cost_eur=220.86 "
                     f"{utc_s('2025-05-02T16:40:35+02:00')}")]
    state = tracker.state()
    assert state is not None
    assert [(m.month, m.peak_kw, m.billed_kw, m.source) for m in state.months] == [
        ("2025-05", 1.194, 2.5, "running"),
        ("2025-04", 3.535, 3.535, "meter history"), ("2025-03", 4.323, 4.323, "meter history"),
        ("2025-02", 4.987, 4.987, "meter history"), ("2025-01", 5.494, 5.494, "meter history"),
        ("2024-12", 7.211, 7.211, "meter history"), ("2024-11", 4.428, 4.428, "meter history"),
        ("2024-10", 4.113, 4.113, "meter history"), ("2024-09", 3.649, 3.649, "meter history"),
        ("2024-08", 3.378, 3.378, "meter history"), ("2024-07", 3.09, 3.09, "meter history"),
        ("2024-06", 3.297, 3.297, "meter history"),
    ]
    # 2024-05 and the placeholder 2023-07 are older than the 12 billed months.
    assert (state.rolling_mean_kw, state.yearly_cost_eur, state.missing_months) == (4.167, 220.86, ())
    assert state.quarter.why_not == "p1logger started 635 s into it"


def history_with(changes: dict[int, tuple[str, str, int]],
                 extra: Sequence[tuple[str, str, int]] = ()) -> list[tuple[str, str, int]]:
    history = fixture_history()
    for index, entry in changes.items():
        history[index] = entry
    return [*history, *extra]


def one_state(sim: SimMeter, at_s: int) -> tuple[CapacityTracker, list[str]]:
    return track(sim.run(at_s, at_s))


def test_placeholder_peak_time_is_kept_with_its_value_and_shown_as_unknown() -> None:
    # History index 8 is December 2024 (250101000000W); its peak time becomes a placeholder. A 14th
    # entry has placeholders for both stamps: it belongs to no month and is left out (but reported).
    history = history_with({8: ("250101000000W", "632525252525W", 7211)},
                           [("632525252525W", "632525252525W", 9000)])
    tracker, _ = one_state(SimMeter(constant(0), history=history), utc_s("2025-05-02T16:40:35+02:00"))
    state = tracker.state()
    assert state is not None
    december = next(m for m in state.months if m.month == "2024-12")
    assert (december.peak_kw, december.billed_kw, december.time) == (7.211, 7.211, None)
    assert [(e.value, e.time, e.month) for e in state.unplaced_history] == [(9.0, None, None)]
    assert state.rolling_mean_kw == 4.167  # as in the fixture: the value still counts, 9.0 does not
    document = capacity_command.state_json(state)
    assert {"month": "2024-12", "peak_kw": 7.211, "billed_kw": 7.211, "source": "meter history",
            "time": None} in document["rolling_mean"]["months"]
    assert document["rolling_mean"]["unplaced_history"] == [{"value": 9.0, "unit": "kW", "time": None}]
    table = capacity_command.state_table(state)
    assert "  2024-12           7.211 kW, billed 7.211 kW (meter history, at time unknown)" in table
    assert "  (1 history entries carry no date and are left out)" in table


def test_a_month_without_consumption_counts_as_the_floor() -> None:
    # February 2025 (history index 10, 250301000000W) had no consumption at all: peak 0.000 kW.
    history = history_with({10: ("250301000000W", "250201000000W", 0)})
    tracker, lines = one_state(SimMeter(constant(0), history=history), utc_s("2025-05-02T16:40:35+02:00"))
    state = tracker.state()
    assert state is not None
    february = next(m for m in state.months if m.month == "2025-02")
    assert (february.peak_kw, february.billed_kw) == (0.0, 2.5)
    # 47.505 - 4.987 (February's old peak) + 2.5 = 45.018 for the 11 months, + 2.5 for May:
    # 47.518 / 12 = 3.95983 -> 3.960 kW; x 53 = 209.8691 -> 209.87 EUR.
    assert (state.rolling_mean_kw, state.yearly_cost_eur) == (3.96, 209.87)
    assert lines == [(f"capacity,meter={METER} running_peak_kw=1.194,rolling_mean_kw=3.96,yearly_cost_eur=209.87 "
                     f"{utc_s('2025-05-02T16:40:35+02:00')}")]


def test_a_meter_without_capacity_data_gives_nothing() -> None:
    tracker = CapacityTracker(ZONE)
    text = DUTCH_FIXTURE.read_bytes().decode("ascii")
    telegram = decode(text[: text.index("!") + 1], TimestampParser(ZONE))
    assert tracker.build(telegram, 0.0) == []
    assert tracker.state() is None
    assert tracker.stats.telegrams == 0


# --------------------------------------------------------------------------- a recorded day


DAY_START = utc_s("2025-05-02T00:00:00+02:00")
DAY_END = utc_s("2025-05-03T00:00:00+02:00")


def day_load_w(time_s: int) -> int:
    """2 kW all day, except: nothing 03:00-04:00, 4 kW 12:00-12:15, 9 kW 18:09-18:15, 6 kW 20:00-20:15."""
    seconds = (time_s - DAY_START) % 86400
    if 3 * 3600 <= seconds < 4 * 3600:
        return 0
    if 12 * 3600 <= seconds < 12 * 3600 + 900:
        return 4000
    if 18 * 3600 + 540 <= seconds < 18 * 3600 + 900:
        return 9000
    if 20 * 3600 <= seconds < 20 * 3600 + 900:
        return 6000
    return 2000


@pytest.fixture(scope="module")
def recorded_day(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2025-05-02, one telegram a second from 00:00:00 to 00:00:00 the next day (86401 telegrams)."""
    path = tmp_path_factory.mktemp("capacity") / "day.txt"
    with path.open("wb") as out:
        for _, raw in SimMeter(day_load_w).run(DAY_START, DAY_END):
            out.write(raw)
    return path


def file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 16):
            yield chunk


class RecordingTracker(CapacityTracker):
    """The real tracker, keeping every line it builds (and each telegram's count)."""

    instances: ClassVar[list[RecordingTracker]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lines: list[str] = []
        self.telegrams_seen = 0
        RecordingTracker.instances.append(self)

    def build(self, telegram: Telegram, received_at_s: float) -> list[str]:
        self.telegrams_seen += 1
        built = super().build(telegram, received_at_s)
        self.lines.extend(built)
        return built


def test_recorded_day_agrees_with_the_hand_computation(recorded_day: Path, caplog: pytest.LogCaptureFixture,
                                                       capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.WARNING, logger="p1logger.capacity")
    # `p1logger capacity` reads the recording with the same tracker `p1logger run` uses; this subclass
    # only keeps the lines it builds, so the points and the printed state come from one pass.
    RecordingTracker.instances = []
    monkeypatch.setattr(capacity_command, "CapacityTracker", RecordingTracker)
    assert cli.main(["capacity", "--input", str(recorded_day), "--format", "json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    (tracker,) = RecordingTracker.instances
    lines = tracker.lines
    assert tracker.telegrams_seen == 86401

    # Our quarter averages, written at each quarter's end. The meter's 1-0:1.4.0 in the last telegram
    # (899 s into the quarter) is the energy of 899 s over 900 s, so the difference is 1/900 of it:
    #   2 kW: 2 x 899/900 = 1.99778 -> 1.998 on the wire; 2.000 - 1.998 = 0.002
    #   4 kW: 3.99556 -> 3.996; diff 0.004          6 kW: 5.99333 -> 5.993; diff 0.007
    #   nothing: 0.000, diff 0.0
    #   18:00-18:15: 2 kW for 540 s and 9 kW for 360 s = (1 080 000 + 3 240 000) J = 1.2 kWh -> x 4 = 4.8 kW;
    #     by 18:14:59, (1 080 000 + 9000 x 359) J / 900 s = 4790 W -> 4.790; diff 0.01
    special = {12 * 4: (4.0, 0.004), 18 * 4: (4.8, 0.01), 20 * 4: (6.0, 0.007)}
    special |= {index: (0.0, 0.0) for index in range(3 * 4, 4 * 4)}
    expected = []
    for index in range(96):
        average, diff = special.get(index, (2.0, 0.002))
        expected.append(f"capacity,meter={METER} quarter_avg_kw={average},quarter_diff_kw={diff} "
                        f"{DAY_START + (index + 1) * 900}")
    assert quarter_lines(lines) == expected

    # One status point every 10 s of meter time: 86400 / 10 + the telegram at 00:00 the next day.
    # Every change of peak_warning and every quarter end falls on a 10 s mark, so none is extra.
    assert len(status_lines(lines)) == 8641
    assert len(lines) == 8641 + 96

    # 00:00: the month's peak is still the meter's 1.194 kW (1 May); the rolling mean is the fixture's:
    # (2.5 + 47.505) / 12 = 4.167 kW, 220.86 EUR. Projection at the quarter's first second: 2 kW for
    # all 900 s = 2.0, under the limit max(1.194, 2.5) = 2.5: shed 0, no warning.
    assert line_at(lines, DAY_START) == (
        f"capacity,meter={METER} running_peak_kw=1.194,rolling_mean_kw=4.167,yearly_cost_eur=220.86,"
        f"projected_kw=2.0,shed_kw=0.0,peak_warning=0i {DAY_START}")
    # 18:09:00: the peak is 4.0 (12:00-12:15). 0.3 kWh so far, now 9 kW for the last 360 s:
    # projected (0.3 x 3600 + 9 x 360) / 900 = 4.8 > 4.0; allowed (4.0 x 900 - 1080) / 360 = 7 kW: shed 2.
    # Rolling mean (4.0 + 47.505) / 12 = 4.29208 -> 4.292; x 53 = 227.48 EUR.
    at_1809 = DAY_START + 18 * 3600 + 540
    assert line_at(lines, at_1809) == (
        f"capacity,meter={METER} running_peak_kw=4.0,rolling_mean_kw=4.292,yearly_cost_eur=227.48,"
        f"projected_kw=4.8,shed_kw=2.0,peak_warning=1i {at_1809}")
    # 00:00 the next day: the peak is 6.0 (20:00-20:15): (6.0 + 47.505) / 12 = 4.45875 -> 4.459 kW,
    # x 53 = 236.31375 -> 236.31 EUR.
    assert line_at(lines, DAY_END) == (
        f"capacity,meter={METER} running_peak_kw=6.0,rolling_mean_kw=4.459,yearly_cost_eur=236.31,"
        f"projected_kw=2.0,shed_kw=0.0,peak_warning=0i {DAY_END}")

    # One warning per quarter that heads above the peak, not one per telegram:
    #   12:00: 4 kW for 900 s = 4.0 over max(2.0, 2.5) = 2.5; shed 4 - 2.5 = 1.5
    #   18:09: 4.8 over 4.0; shed 2.0 (above)      20:00: 6.0 over 4.8; shed 6 - 4.8 = 1.2
    assert [r.getMessage() for r in caplog.records if r.name == "p1logger.capacity"] == [
        ("quarter 2025-05-02 12:00+02:00–12:15+02:00 is heading for 4.000 kW, above this month's peak "
        "of 2.500 kW (margin 0.000 kW): shed 1.500 kW now"),
        ("quarter 2025-05-02 18:00+02:00–18:15+02:00 is heading for 4.800 kW, above this month's peak "
        "of 4.000 kW (margin 0.000 kW): shed 2.000 kW now"),
        ("quarter 2025-05-02 20:00+02:00–20:15+02:00 is heading for 6.000 kW, above this month's peak "
        "of 4.800 kW (margin 0.000 kW): shed 1.200 kW now"),
    ]

    state = tracker.state()
    assert state is not None
    assert (state.stats.quarters_measured, state.stats.quarters_skipped, state.stats.warnings) == (96, 0, 3)
    assert state.our_peak is not None and state.our_peak.start_s == DAY_START + 20 * 3600
    # The meter's own 1-0:1.6.0 agrees: 6.0 kW stamped 20:15.
    assert (state.meter_peak_kw, state.meter_peak_time) == (6.0, datetime(2025, 5, 2, 18, 15, tzinfo=timezone.utc))

    assert printed == capacity_command.state_json(state)
    assert printed["last_quarter"] == {
        "start": "2025-05-02T21:45:00Z", "end": "2025-05-02T22:00:00Z",
        "start_local": "2025-05-02T23:45:00+02:00", "end_local": "2025-05-03T00:00:00+02:00",
        "average_kw": 2.0, "meter_demand_kw": 1.998, "diff_kw": 0.002,
    }
    assert printed["month"]["running_peak_kw"] == 6.0
    assert printed["rolling_mean"]["mean_kw"] == 4.459
    assert printed["cost"] == {"price_eur_per_kw_year": 53.0, "yearly_cost_eur": 236.31}
    assert printed["quarters"] == {"measured": 96, "skipped": 0, "counter_resets": 0}


# --------------------------------------------------------------------------- DST and month boundaries


def test_spring_quarter_spans_the_missing_hour() -> None:
    # 2025-03-30: 02:00 CET becomes 03:00 CEST. The quarter after 01:45 CET ends at 03:00 CEST, 900 s later.
    start, end = utc_s("2025-03-30T01:44:00+01:00"), utc_s("2025-03-30T03:16:00+02:00")
    spanning = utc_s("2025-03-30T01:45:00+01:00")
    after = utc_s("2025-03-30T03:00:00+02:00")
    assert after - spanning == 900
    sim = SimMeter(by_utc_quarter({spanning: 3000, after: 1000}, 500))
    stream = list(sim.run(start, end))
    stamps = [dsmr_stamp(t) for t, _ in stream]
    position = stamps.index("250330015959W")
    assert stamps[position + 1] == "250330030000S"
    tracker = CapacityTracker(ZONE)
    lines: list[str] = []
    during = None
    for (time_s, _), telegram in zip(stream, telegrams_of(raw for _, raw in stream)):
        lines.extend(tracker.build(telegram, 0.0))
        if time_s == utc_s("2025-03-30T01:59:59+01:00"):
            during = tracker.state()
    # 3 kW for 900 s = 0.75 kWh -> 3.0 kW; the meter at 01:59:59: 3 x 899/900 = 2.997, diff 0.003.
    # 1 kW -> 1.0 kW; meter 0.999, diff 0.001. The quarter before (from 01:44) is not measured.
    assert quarter_lines(lines) == [
        f"capacity,meter={METER} quarter_avg_kw=3.0,quarter_diff_kw=0.003 {after}",
        f"capacity,meter={METER} quarter_avg_kw=1.0,quarter_diff_kw=0.001 {after + 900}",
    ]
    assert during is not None
    assert quarter_label(during.quarter.start_s, ZONE) == "2025-03-30 01:45+01:00–03:00+02:00"
    assert "quarter-hour        2025-03-30 01:45+01:00–03:00+02:00" in capacity_command.state_table(during)
    assert tracker.stats.quarters_skipped == 1


def test_autumn_repeated_hour_gives_two_separate_quarters_at_each_local_time() -> None:
    # 2025-10-26: 03:00 CEST becomes 02:00 CET; 02:00-03:00 happens twice.
    first_0200 = utc_s("2025-10-26T02:00:00+02:00")
    second_0200 = utc_s("2025-10-26T02:00:00+01:00")
    assert second_0200 - first_0200 == 3600
    loads = {first_0200: 1000, first_0200 + 900: 1200, first_0200 + 1800: 1600, first_0200 + 2700: 4000,
             second_0200: 2000, second_0200 + 900: 2400}
    sim = SimMeter(by_utc_quarter(loads, 800), peak=(utc_s("2025-10-03T20:15:00+02:00"), 1500))
    stream = list(sim.run(utc_s("2025-10-26T01:59:00+02:00"), utc_s("2025-10-26T02:31:00+01:00")))
    stamps = [dsmr_stamp(t) for t, _ in stream]
    assert stamps[stamps.index("251026025959S") + 1] == "251026020000W"
    tracker, lines = track(stream)
    # Each quarter is W x 900 s: 1.0, 1.2, 1.6, 4.0, 2.0, 2.4 kW. The meter's last 1-0:1.4.0 is W x 899/900:
    # 0.999 (diff 0.001), 1.199 (0.001), 1.598 (0.002), 3.996 (0.004), 1.998 (0.002), 2.397 (0.003).
    assert quarter_lines(lines) == [
        f"capacity,meter={METER} quarter_avg_kw=1.0,quarter_diff_kw=0.001 {first_0200 + 900}",
        f"capacity,meter={METER} quarter_avg_kw=1.2,quarter_diff_kw=0.001 {first_0200 + 1800}",
        f"capacity,meter={METER} quarter_avg_kw=1.6,quarter_diff_kw=0.002 {first_0200 + 2700}",
        f"capacity,meter={METER} quarter_avg_kw=4.0,quarter_diff_kw=0.004 {second_0200}",
        f"capacity,meter={METER} quarter_avg_kw=2.0,quarter_diff_kw=0.002 {second_0200 + 900}",
        f"capacity,meter={METER} quarter_avg_kw=2.4,quarter_diff_kw=0.003 {second_0200 + 1800}",
    ]
    assert quarter_label(first_0200, ZONE) == "2025-10-26 02:00+02:00–02:15+02:00"
    assert quarter_label(first_0200 + 2700, ZONE) == "2025-10-26 02:45+02:00–02:00+01:00"
    assert quarter_label(second_0200, ZONE) == "2025-10-26 02:00+01:00–02:15+01:00"
    state = tracker.state()
    assert state is not None and state.our_peak is not None
    assert (state.month, state.our_peak.start_s, state.running_peak_kw) == ("2025-10", first_0200 + 2700, 4.0)


@pytest.mark.parametrize("meter_updates_history", [True, False])
def test_month_boundary_moves_the_rolling_window(meter_updates_history: bool) -> None:
    midnight = utc_s("2025-06-01T00:00:00+02:00")
    last_may = midnight - 900
    may_peak = (utc_s("2025-05-20T19:00:00+02:00"), 3200)
    sim = SimMeter(by_utc_quarter({last_may: 5000}, 400), peak=may_peak, update_history=meter_updates_history)
    tracker, lines = track(sim.run(midnight - 960, midnight + 960))
    # 23:45-00:00 belongs to May: 5 kW -> 5.0; the meter's last 1.4.0 is 5 x 899/900 = 4.994, diff 0.006.
    # 00:00-00:15 in June: 0.4 kW -> 0.4; meter 0.3996 -> 0.400, diff 0.0.
    assert quarter_lines(lines) == [
        f"capacity,meter={METER} quarter_avg_kw=5.0,quarter_diff_kw=0.006 {midnight}",
        f"capacity,meter={METER} quarter_avg_kw=0.4,quarter_diff_kw=0.0 {midnight + 900}",
    ]
    # 23:59:50, still May: the peak is the meter's 3.2 kW (20 May); (3.2 + 47.505) / 12 = 4.22542 -> 4.225,
    # x 53 = 223.95 EUR. 5 kW for 890 s shows as 1.236 kWh (whole Wh): projected
    # (1.236 x 3600 + 5 x 10) / 900 = 4.99956 -> 5.0 > 3.2, and even shedding all 5 kW cannot help.
    assert line_at(lines, midnight - 10) == (
        f"capacity,meter={METER} running_peak_kw=3.2,rolling_mean_kw=4.225,yearly_cost_eur=223.95,"
        f"projected_kw=5.0,shed_kw=5.0,peak_warning=1i {midnight - 10}")
    # 00:00, June: nothing seen in June yet, so 0 so far, billed 2.5. May is 5.0 (from the meter's
    # history, or from p1logger's own quarter when the meter has not moved it there yet). The 10 months
    # 2024-07 .. 2025-04 are 47.505 - 3.297 = 44.208: (2.5 + 5.0 + 44.208) / 12 = 51.708 / 12 = 4.309 kW,
    # x 53 = 228.377 -> 228.38 EUR.
    assert line_at(lines, midnight) == (
        f"capacity,meter={METER} running_peak_kw=0.0,rolling_mean_kw=4.309,yearly_cost_eur=228.38,"
        f"projected_kw=0.4,shed_kw=0.0,peak_warning=0i {midnight}")
    state = tracker.state()
    assert state is not None
    may = state.months[1]
    source = "meter history" if meter_updates_history else "logger"
    assert (may.month, may.peak_kw, may.source) == ("2025-05", 5.0, source)
    assert [m.month for m in state.months] == capacity.billed_months("2025-06")
    # June so far: 0.4 kW (ours and the meter's, stamped 00:15), billed 2.5: the mean is unchanged.
    assert (state.month, state.running_peak_kw, state.rolling_mean_kw, state.yearly_cost_eur) == (
        "2025-06", 0.4, 4.309, 228.38)


# --------------------------------------------------------------------------- gaps, restarts, resets


GAP_START = utc_s("2025-05-02T10:00:00+02:00")
GAP_END = GAP_START + 2700
GAP_PEAK = (utc_s("2025-05-01T19:15:00+02:00"), 4000)  # above the 3.6 kW below: no warnings in these tests


def test_a_meter_restart_inside_a_quarter_loses_nothing() -> None:
    # No telegrams from 10:05:00 to 10:08:59, but the counters at 10:00 and 10:15 are there:
    # 3.6 kW = 1 Wh a second, 900 Wh -> 0.9 kWh x 4 = 3.6 kW; the meter at 10:14:59: 3.6 x 899/900 = 3.596.
    sim = SimMeter(constant(3600), peak=GAP_PEAK)
    tracker, lines = track(sim.run(GAP_START, GAP_END, skip=lambda t: GAP_START + 300 <= t < GAP_START + 540))
    assert quarter_lines(lines) == [
        f"capacity,meter={METER} quarter_avg_kw=3.6,quarter_diff_kw=0.004 {GAP_START + 900 * n}" for n in (1, 2, 3)
    ]
    assert tracker.stats.quarters_skipped == 0


def test_a_gap_across_a_boundary_skips_both_quarters(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="p1logger.capacity")
    # Nothing from 10:14:00 to 10:16:29: no reading within 10 s of 10:15, so neither quarter can be measured.
    sim = SimMeter(constant(3600), peak=GAP_PEAK)
    tracker, lines = track(sim.run(GAP_START, GAP_END, skip=lambda t: GAP_START + 840 <= t < GAP_START + 990))
    assert quarter_lines(lines) == [f"capacity,meter={METER} quarter_avg_kw=3.6,quarter_diff_kw=0.004 {GAP_END}"]
    assert tracker.stats.quarters_skipped == 2
    assert [r.getMessage() for r in caplog.records if r.name == "p1logger.capacity"] == [
        "quarter 2025-05-02 10:00+02:00–10:15+02:00 not measured: no reading within 10 s of its end",
        "quarter 2025-05-02 10:15+02:00–10:30+02:00 not measured: no reading within 10 s of its start",
    ]


def test_a_counter_reset_skips_the_quarter(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="p1logger.capacity")

    def reset(meter: SimMeter) -> None:
        meter.counters_from_j = (meter.t1_j, meter.t2_j)  # both counters restart from 0

    sim = SimMeter(constant(3600), peak=GAP_PEAK)
    tracker, lines = track(sim.run(GAP_START, GAP_END, events={GAP_START + 420: reset}))
    # 10:06:59 shows 2601.234 + 0.419 (419 s at 1 Wh) + 3437.690 = 6039.343 kWh; 10:07:00 shows 0.000.
    assert [r.getMessage() for r in caplog.records] == [
        ("the import counter went back from 6039.343 to 0.000 kWh (meter replaced?); "
        "the running quarter is not measured")]
    assert quarter_lines(lines) == [
        f"capacity,meter={METER} quarter_avg_kw=3.6,quarter_diff_kw=0.004 {GAP_START + 900 * n}" for n in (2, 3)
    ]
    assert (tracker.stats.counter_resets, tracker.stats.quarters_skipped, tracker.stats.quarters_measured) == (1, 1, 2)


def test_a_late_boundary_reading_is_scaled_to_the_time_it_covers() -> None:
    # The telegram of 10:15:00 is missing. 10:14:59 and 10:15:01 are both 1 s away; the later one is taken.
    # 10:00:00 -> 10:15:01 is 901 s and 901 Wh: 0.901 x 3600 / 901 = 3.6 kW (x 4 would say 3.604).
    # 10:15:01 -> 10:30:00 is 899 s and 899 Wh: 3.6 kW again (x 4 would say 3.596).
    sim = SimMeter(constant(3600), peak=GAP_PEAK)
    _, lines = track(sim.run(GAP_START, GAP_END, skip=lambda t: t == GAP_START + 900))
    assert quarter_lines(lines) == [
        f"capacity,meter={METER} quarter_avg_kw=3.6,quarter_diff_kw=0.004 {GAP_START + 900 * n}" for n in (1, 2, 3)
    ]


def test_the_meter_clock_going_back_starts_the_quarter_over(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="p1logger.capacity")
    before = list(SimMeter(constant(3600), peak=GAP_PEAK).run(GAP_START, GAP_START + 300))
    after = list(SimMeter(constant(3600), peak=GAP_PEAK).run(GAP_START - 600, GAP_START + 960))
    tracker, lines = track(before + after)
    assert [r.getMessage() for r in caplog.records] == [
        ("the meter clock went back from 2025-05-02 10:05+02:00 to 2025-05-02 09:50+02:00; "
        "the running quarter is not measured")]
    # The abandoned 10:00 quarter and the 09:45 quarter re-entered at 09:50 are not measured; 10:00 again is.
    assert quarter_lines(lines) == [(f"capacity,meter={METER} quarter_avg_kw=3.6,quarter_diff_kw=0.004 "
                                    f"{GAP_START + 900}")]
    assert (tracker.stats.clock_steps_back, tracker.stats.quarters_skipped) == (1, 2)
    # Status points go on from the new time: at 09:50 the peak is the meter's 4.0 kW,
    # (4.0 + 47.505) / 12 = 4.29208 -> 4.292 kW, x 53 = 227.48 EUR; the 09:45 quarter is not measured.
    assert line_at(lines, GAP_START - 600) == (
        f"capacity,meter={METER} running_peak_kw=4.0,rolling_mean_kw=4.292,yearly_cost_eur=227.48 {GAP_START - 600}")
    # 10:00:00 .. 10:05:00 is 300 s: 31 points; 09:50:00 .. 10:16:00 is 1560 s: 157 points.
    assert len(status_lines(lines)) == 31 + 157


def test_receive_time_replaces_a_wrong_meter_clock() -> None:
    tracker = CapacityTracker(ZONE, use_receive_time=True)
    received_at = utc_s("2025-04-30T10:05:00+02:00") + 0.7
    lines = tracker.build(fixture_telegram(), received_at)
    # By the receive clock it is 30 April: April runs, and the meter's 1.194 kW of 1 May is not April's,
    # so April so far is 0 (billed 2.5). The 11 months before are 2024-05 .. 2025-03 from the history:
    # 3.701 + (47.505 - 3.535) = 47.671; (2.5 + 47.671) / 12 = 4.18092 -> 4.181 kW; x 53 = 221.59 EUR.
    assert lines == [(f"capacity,meter={METER} running_peak_kw=0.0,rolling_mean_kw=4.181,yearly_cost_eur=221.59 "
                     f"{int(received_at)}")]
    state = tracker.state()
    assert state is not None
    assert [m.month for m in state.months] == capacity.billed_months("2025-04")


# --------------------------------------------------------------------------- run arguments and setup


def run_args(argv: list[str]) -> argparse.Namespace:
    return cli.build_parser().parse_args(["run", "--source", "file:x", *argv])


def test_price_and_margin_come_from_flags_or_the_environment(monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    defaults = run_args([])
    assert (defaults.capacity_price, defaults.capacity_margin_kw) == (53.0, 0.0)
    monkeypatch.setenv("P1_CAPACITY_PRICE", "48.25")
    monkeypatch.setenv("P1_CAPACITY_MARGIN_KW", "-0.5")
    from_env = run_args([])
    assert (from_env.capacity_price, from_env.capacity_margin_kw) == (48.25, -0.5)
    flags = run_args(["--capacity-price", "60", "--capacity-margin-kw", "0.25"])
    assert (flags.capacity_price, flags.capacity_margin_kw) == (60.0, 0.25)
    with pytest.raises(SystemExit):
        run_args(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "[env P1_CAPACITY_PRICE]" in help_text and "[env P1_CAPACITY_MARGIN_KW]" in help_text


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("P1_CAPACITY_PRICE", "fifty", "'fifty' is not valid: expected a price of at least 0 in EUR per kW per year"),
    ("P1_CAPACITY_PRICE", "-1", "'-1' is not valid: expected a price of at least 0 in EUR per kW per year"),
    ("P1_CAPACITY_MARGIN_KW", "nan", "'nan' is not valid: expected a number of kW"),
])
def test_a_bad_setting_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                        variable: str, value: str, message: str) -> None:
    monkeypatch.setenv(variable, value)
    assert cli.main(["capacity", "--input", "x"]) == 2
    assert capsys.readouterr().err == f"p1logger capacity: {variable} {message}\n"


def test_the_builders_registry_adds_one_tracker_with_the_settings(tmp_path: Path) -> None:
    args = run_args(["--capacity-price", "40", "--capacity-margin-kw", "0.5", "--timestamps", "receive"])
    builders = create_builders(args, ZONE, use_receive_time=True)
    assert [builder.name for builder in builders] == ["points", "capacity"]
    assert isinstance(builders[1], CapacityBuilder)
    tracker = builders[1].tracker
    assert isinstance(tracker, CapacityTracker)
    assert (tracker.price_eur_per_kw_year, tracker.margin_kw, tracker.use_receive_time, tracker.zone) == (
        40.0, 0.5, True, ZONE)


def test_the_margin_moves_the_warning_but_not_the_shedding() -> None:
    # 2 kW then 9 kW from 18:09, with this month's peak at 4.0 kW (the meter's 1-0:1.6.0).
    start = utc_s("2025-05-02T18:00:00+02:00")

    def load(time_s: int) -> int:
        return 9000 if time_s >= start + 540 else 2000

    peak = (utc_s("2025-05-02T12:15:00+02:00"), 4000)
    for margin_kw, warning in ((0.5, 1), (1.0, 0)):
        tracker, lines = track(SimMeter(load, peak=peak).run(start, start + 540),
                               CapacityTracker(ZONE, margin_kw=margin_kw))
        # Projected 4.8: above 4.0 + 0.5, not above 4.0 + 1.0. Shedding 2 kW ends the quarter at 4.0 either way.
        assert status_lines(lines)[-1].split(" ")[1].endswith(f"projected_kw=4.8,shed_kw=2.0,peak_warning={warning}i")
        assert tracker.stats.warnings == warning


# --------------------------------------------------------------------------- p1logger capacity


def test_capacity_command_shows_the_fixture(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["capacity", "--input", str(FIXTURE), "--capacity-price", "50"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"== capacity tariff, meter {METER}, at 2025-05-02 16:40+02:00 (Europe/Brussels)"
    assert out[1:4] == [
        "quarter-hour        2025-05-02 16:30+02:00–16:45+02:00",
        "  average so far    not measured: p1logger started 635 s into it",
        "  meter 1-0:1.4.0   0.000 kW",
    ]
    assert "  meter peak        1.194 kW at 2025-05-01 10:15+02:00" in out
    assert "  2025-05           1.194 kW, billed 2.500 kW (running)" in out
    assert "  2024-10           4.113 kW, billed 4.113 kW (meter history, at 2024-10-03 20:15+02:00)" in out
    # 50.005 / 12 = 4.16708 kW x 50 EUR = 208.354 -> 208.35 EUR.
    assert out[-3:] == [
        "  mean              4.167 kW",
        "estimated cost      208.35 EUR per year at 50.00 EUR per kW per year",
        "quarters            0 measured, 0 not measured",
    ]


def test_capacity_command_without_capacity_data_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["capacity", "--input", str(DUTCH_FIXTURE)]) == 1
    assert capsys.readouterr().err == (
        f"p1logger capacity: no telegram with capacity data (1-0:1.4.0 or 1-0:1.6.0) in {DUTCH_FIXTURE}: "
        "only Belgian meters send them\n")


def test_capacity_command_counts_rejected_telegrams(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stream = [raw for _, raw in SimMeter(constant(3600)).run(GAP_START, GAP_START + 2)]
    broken = stream[1].replace(b"1-0:1.7.0(03.600*kW)", b"1-0:1.7.0(03.700*kW)")  # the CRC no longer matches
    path = tmp_path / "three.txt"
    path.write_bytes(stream[0] + broken + stream[2])
    assert cli.main(["capacity", "--input", str(path), "--format", "json"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "p1logger capacity: 2 valid, 1 rejected (1 crc)\n"
    assert json.loads(captured.out)["time_local"] == "2025-05-02T10:00:02+02:00"


def test_capacity_command_on_a_live_meter_prints_every_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "live.txt"
    path.write_bytes(b"".join(raw for _, raw in SimMeter(constant(3600)).run(GAP_START, GAP_START + 25)))
    monkeypatch.setattr(capacity_command, "open_input", lambda args: (FileSource(str(path)), True))
    assert cli.main(["capacity", "/dev/ttyUSB9", "--format", "json", "--every-s", "10"]) == 0
    times = [json.loads(row)["time_local"] for row in capsys.readouterr().out.splitlines()]
    # 26 telegrams, 10:00:00 .. 10:00:25: a state at 10:00:00, 10:00:10 and 10:00:20.
    assert times == ["2025-05-02T10:00:00+02:00", "2025-05-02T10:00:10+02:00", "2025-05-02T10:00:20+02:00"]
    assert cli.main(["capacity", "/dev/ttyUSB9", "--format", "json", "--once"]) == 0
    once = [json.loads(row) for row in capsys.readouterr().out.splitlines()]
    # The first telegram: at 10:00:00, 3.6 kW for the whole quarter projects to 3.6, over max(1.194, 2.5).
    assert [(s["time_local"], s["quarter"]["projected_kw"], s["quarter"]["shed_kw"]) for s in once] == [
        ("2025-05-02T10:00:00+02:00", 3.6, 1.1)]


# --------------------------------------------------------------------------- the Grafana alert rule




def load_yaml(path: Path) -> Any:
    try:
        from ruamel.yaml import YAML
    except ImportError:
        require_server("ruamel.yaml", "pip install -e '.[test]' (check-jsonschema brings it)")
    return YAML(typ="safe").load(path.read_text(encoding="utf-8"))


def test_alert_rule_reads_the_capacity_fields_through_the_provisioned_datasource() -> None:
    rules = load_yaml(ALERT_RULE)
    datasource_uid = load_yaml(DATASOURCES)["datasources"][0]["uid"]
    assert rules["apiVersion"] == 1
    (group,) = rules["groups"]
    (rule,) = group["rules"]
    data = {query["refId"]: query for query in rule["data"]}
    assert sorted(data) == ["A", "B", "C", "S", "W"]
    assert rule["condition"] == "C" and rule["for"] == "1m"
    fields = SCHEMA["capacity"].fields
    for ref_id, field_name in (("A", "peak_warning"), ("B", "shed_kw")):
        query = data[ref_id]
        assert query["datasourceUid"] == datasource_uid
        assert query["model"]["query"] == (
            f'SELECT last("{field_name}") AS "{field_name}" FROM "capacity" WHERE $timeFilter GROUP BY "meter"'
        )
        assert query["model"]["rawQuery"] is True
        assert field_name in fields
    assert [(data[r]["model"]["type"], data[r]["model"]["expression"]) for r in ("W", "S", "C")] == [
        ("reduce", "A"), ("reduce", "B"), ("threshold", "W")]
    assert all(data[r]["datasourceUid"] == "__expr__" for r in ("W", "S", "C"))
    assert data["C"]["model"]["conditions"][0]["evaluator"] == {"type": "gt", "params": [0]}
    assert '{{ printf "%.1f" $values.S.Value }} kW' in rule["annotations"]["description"]
    assert "{{ $labels.meter }}" in rule["annotations"]["summary"]
