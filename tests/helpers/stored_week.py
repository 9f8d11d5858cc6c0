"""A simulated week of a Belgian meter, stored in influxd by the logger itself.

The week runs from Wednesday 2024-03-27 00:00 to Wednesday 2024-04-03 00:00
Brussels time, so it holds the spring DST change (Sunday 31 March has 23
hours) and the March/April month boundary. p1logger's simulator
(p1logger.simulate.MeterModel, profile be3) makes one telegram every
TELEGRAM_INTERVAL_S seconds of simulated time (and one just before each quarter
ends); a heat meter is added on M-Bus
channel 3 (the simulator has none) so the heat panels have data, and an electric car charges at 3.7 kW on two
evenings (the simulated household alone never exceeds the 2.5 kW floor of the
capacity tariff, so no quarter would set a billed peak), and the cable is unplugged for five
minutes on the last day. The
telegrams are written to a file and stored by `python -m p1logger run
--source file:...` with INFLUX_API=v1, the real write path.

A fixed tariff file (TARIFF_TOML) turns on the logger's `cost` points.

The logger's own health points (measurement `p1logger`) carry the wall-clock
time of the run, so a replay that takes seconds leaves one or two of them;
health points for the simulated week are added with p1logger.points.
health_line, the formatter the logger uses, as a logger running that week
would have written them with each telegram.

Expected values are computed here from the telegram text with regular
expressions, independently of the decoder.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import urllib.parse
from dataclasses import dataclass
from functools import cached_property, lru_cache
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable
from zoneinfo import ZoneInfo

from helpers.influx_servers import InfluxServer, http_request

from p1logger import simulate
from p1logger.crc import crc16
from p1logger.points import health_line
from p1logger.simulate import PROFILES, MeterModel

ZONE = ZoneInfo("Europe/Brussels")
START = datetime(2024, 3, 27, tzinfo=ZONE)
END = datetime(2024, 4, 3, tzinfo=ZONE)
TELEGRAM_INTERVAL_S = 30
# ... and one 10 s before each quarter ends: the logger compares its quarter
# average with the meter's 1-0:1.4.0 only when a telegram is that close.
QUARTER_CLOSE_S = 10
SEED = 3
INSTANCE = "testpi"
PRICE_EUR_PER_KW_YEAR = 60.0
HEAT_ID = "9HEAT0000000001"
# A fixed two-register contract (docs/cost.md), so the logger stores `cost` points.
TARIFF = {"import": {1: 0.32, 2: 0.26}, "export": {1: 0.04, 2: 0.03}, "fixed": 0.25, "gas": 1.15, "water": 4.5}
TARIFF_TOML = """
[[contract]]
name = "fixed"
from = 2024-01-01
import_eur_per_kwh = { 1 = 0.32, 2 = 0.26 }
export_eur_per_kwh = { 1 = 0.04, 2 = 0.03 }
fixed_eur_per_day = 0.25
gas_eur_per_m3 = 1.15
water_eur_per_m3 = 4.50
"""
REPO = Path(__file__).resolve().parents[2]


_LINE_RE = re.compile(r"^(\d+-\d+:\d+\.\d+\.\d+)(\(.*\))\r?$", re.MULTILINE)
_VALUE_RE = re.compile(r"\(([0-9.]+)\*([A-Za-z0-9]+)\)$")
_STAMPED_RE = re.compile(r"^\((\d{12})([SW])\)\(([0-9.]+)\*([A-Za-z0-9]+)\)$")


@dataclass(frozen=True)
class Telegram:
    time_s: int  # the meter's clock, UTC
    text: str

    @cached_property
    def lines(self) -> dict[str, str]:
        """OBIS -> everything after it on its line."""
        return dict(_LINE_RE.findall(self.text))

    def value(self, obis: str, unit: str) -> float:
        match = _VALUE_RE.search(self.lines[obis])
        assert match is not None and match.group(2) == unit, f"{obis} in {unit} at {self.time_s}"
        return float(match.group(1))

    def mbus(self, channel: int, obis_suffix: str, unit: str) -> tuple[int, float]:
        """(capture time, value) of an M-Bus reading."""
        match = _STAMPED_RE.match(self.lines[f"0-{channel}:{obis_suffix}"])
        assert match is not None and match.group(4) == unit
        return _meter_time(match.group(1), match.group(2)), float(match.group(3))

    def history(self) -> list[tuple[str, float]]:
        """0-0:98.1.0 as (YYYY-MM of the month, kW), newest first."""
        return _history(self.lines["0-0:98.1.0"])

    def month_peak(self) -> tuple[int, float]:
        match = _STAMPED_RE.match(self.lines["1-0:1.6.0"])
        assert match is not None and match.group(4) == "kW"
        return _meter_time(match.group(1), match.group(2)), float(match.group(3))


@lru_cache(maxsize=64)
def _history(text: str) -> list[tuple[str, float]]:
    out = []
    for stamp, season, kw in re.findall(r"\((\d{12})([SW])\)\(\d{12}[SW]\)\(([0-9.]+)\*kW\)", text):
        # The entry is stamped 00:00 on the first of the month after the one it belongs to.
        month_after = datetime.fromtimestamp(_meter_time(stamp, season), ZONE)
        out.append((f"{month_after - timedelta(days=1):%Y-%m}", float(kw)))
    return out


def _meter_time(stamp: str, season: str) -> int:
    offset = timedelta(hours=2 if season == "S" else 1)
    local = datetime.strptime(stamp, "%y%m%d%H%M%S").replace(tzinfo=timezone(offset))
    return int(local.timestamp())


def _with_heat_meter(telegram: bytes, moment: datetime, heat_gj: float) -> bytes:
    """The telegram with a heat meter on M-Bus channel 3 and a new CRC."""
    body = telegram[: telegram.rindex(b"!")]
    local = moment.astimezone(ZONE)
    stamp = local.strftime("%y%m%d%H%M%S") + ("S" if local.dst() else "W")
    lines = (
        "0-3:24.1.0(004)\r\n"
        f"0-3:96.1.1({HEAT_ID.encode('ascii').hex().upper()})\r\n"
        f"0-3:24.2.1({stamp})({heat_gj:08.3f}*GJ)\r\n"
    )
    body += lines.encode("ascii") + b"!"
    return body + f"{crc16(body):04X}\r\n".encode("ascii")


# Local (start, end) of the car's charging sessions.
CHARGING = (
    (datetime(2024, 3, 28, 18, 40, tzinfo=ZONE), datetime(2024, 3, 28, 20, 10, tzinfo=ZONE)),
    (datetime(2024, 4, 1, 18, 40, tzinfo=ZONE), datetime(2024, 4, 1, 19, 50, tzinfo=ZONE)),
)
CHARGER_KW = 3.7
# The cable is unplugged for a few minutes: the gap panels have something to show.
OUTAGE = (datetime(2024, 4, 2, 10, 0, tzinfo=ZONE), datetime(2024, 4, 2, 10, 5, tzinfo=ZONE))


def _with_car(household: Callable[[datetime, random.Random], float]) -> Callable[[datetime, random.Random], float]:
    def load_kw(local: datetime, rng: random.Random) -> float:
        charging = any(start <= local < end for start, end in CHARGING)
        return household(local, rng) + (CHARGER_KW if charging else 0.0)

    return load_kw


def _step_s(time_s: int) -> int:
    into_quarter = time_s % 900
    close = 900 - QUARTER_CLOSE_S
    if into_quarter < close < into_quarter + TELEGRAM_INTERVAL_S:
        return close - into_quarter
    if into_quarter == close:
        return QUARTER_CLOSE_S
    return TELEGRAM_INTERVAL_S


def make_telegrams() -> list[Telegram]:
    household = simulate.load_kw
    simulate.load_kw = _with_car(household)  # type: ignore[assignment]
    try:
        return _simulate()
    finally:
        simulate.load_kw = household  # type: ignore[assignment]


def _simulate() -> list[Telegram]:
    model = MeterModel(PROFILES["be3"], START, seed=SEED)
    end = END.astimezone(timezone.utc)
    telegrams = []
    while model.now < end:
        # The heat meter reports every 5 minutes, like the gas meter.
        capture = datetime.fromtimestamp(int(model.now.timestamp()) // 300 * 300, timezone.utc)
        heat_gj = round(40.0 + (capture.timestamp() - START.timestamp()) / 3600 * 0.0021, 3)
        if not OUTAGE[0] <= model.now < OUTAGE[1]:
            raw = _with_heat_meter(model.telegram(), capture, heat_gj)
            telegrams.append(Telegram(int(model.now.timestamp()), raw.decode("ascii")))
        model.advance_to(model.now + timedelta(seconds=_step_s(int(model.now.timestamp()))))
    return telegrams


def store(server: InfluxServer, database: str, telegrams: list[Telegram], work: Path) -> str:
    """Replay the telegrams through `p1logger run` into ``database``; the logger's log is returned."""
    recording = work / "week.p1"
    tariff = work / "tariff.toml"
    tariff.write_text(TARIFF_TOML, encoding="utf-8")
    recording.write_bytes(b"".join(t.text.encode("ascii") for t in telegrams))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("P1_", "INFLUX_"))}
    env.update(
        INFLUX_API="v1",
        INFLUX_URL=server.url,
        INFLUX_BUCKET=database,
        P1_SPOOL_DIR=str(work / "spool"),
        P1_INSTANCE=INSTANCE,
        P1_TIMEZONE="Europe/Brussels",
        P1_CAPACITY_PRICE=str(PRICE_EUR_PER_KW_YEAR),
        P1_TARIFF_FILE=str(tariff),
        PYTHONPATH=str(REPO),
    )
    result = subprocess.run(
        [sys.executable, "-m", "p1logger", "run", "--source", f"file:{recording}"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [
        health_line(
            INSTANCE,
            t.time_s,
            telegrams_ok=i + 1,
            telegrams_rejected=0,
            queue_depth=i % 3,
            spool_points=0,
            points_dropped=0,
            telegrams_dropped=0,
            write_latency_ms=12.5 + i % 7,
            last_telegram_age_s=0.4,
        )
        for i, t in enumerate(telegrams)
    ]
    for chunk in range(0, len(lines), 5000):
        body = "\n".join(lines[chunk : chunk + 5000]).encode()
        query = urllib.parse.urlencode({"db": database, "precision": "s"})
        reply = http_request(int(server.url.rsplit(":", 1)[1]), "POST", f"/write?{query}", body=body)
        assert reply.status == 204, reply.body
    return result.stderr


# --------------------------------------------------------------------------- expected values


def local_day(time_s: int) -> str:
    return f"{datetime.fromtimestamp(time_s, ZONE):%Y-%m-%d}"


def day_start_s(day: str) -> int:
    return int(datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=ZONE).timestamp())


def last_by_day(points: list[tuple[int, float]]) -> dict[str, float]:
    """The last value of each local day, points in time order."""
    out: dict[str, float] = {}
    for time_s, value in points:
        out[local_day(time_s)] = value
    return out


def per_day(points: list[tuple[int, float]]) -> dict[str, float]:
    """Each day's last value minus the previous day's last value, as the dashboards count a day."""
    last = last_by_day(points)
    days = sorted(last)
    return {day: last[day] - last[before] for before, day in zip(days, days[1:])}


def quarter_averages(telegrams: list[Telegram]) -> dict[int, float]:
    """Quarter end (s) -> average import kW, from the counters at both boundaries (rounded as the logger does)."""
    import_at = {t.time_s: t.value("1-0:1.8.1", "kWh") + t.value("1-0:1.8.2", "kWh") for t in telegrams}
    out = {}
    for time_s in sorted(import_at):
        end = time_s + 900
        if time_s % 900 == 0 and end in import_at:
            energy = round(import_at[end] - import_at[time_s], 6)
            out[end] = round(energy * 3600.0 / 900, 3)
    return out


# --------------------------------------------------------------------------- the week, once per influxd

DATABASE = "p1week"


@dataclass
class Week:
    server: InfluxServer
    database: str
    telegrams: list[Telegram]

    def query(self, influxql: str, *, epoch: str = "s") -> dict[str, Any]:
        """The raw answer; an error anywhere in it fails the test."""
        params = urllib.parse.urlencode({"q": influxql, "db": self.database, "epoch": epoch})
        reply = http_request(int(self.server.url.rsplit(":", 1)[1]), "GET", f"/query?{params}")
        answer: dict[str, Any] = json.loads(reply.body or b"{}")
        errors = [answer.get("error")] + [r.get("error") for r in answer.get("results", [])]
        assert reply.status == 200 and not any(errors), f"{influxql}\n-> HTTP {reply.status}: {reply.body[:500]!r}"
        return answer

    def series(self, influxql: str) -> list[dict[str, Any]]:
        (result,) = self.query(influxql)["results"]
        found: list[dict[str, Any]] = result.get("series", [])
        return found

    def before(self, time_s: int) -> list[Telegram]:
        return [t for t in self.telegrams if t.time_s <= time_s]


@lru_cache(maxsize=1)
def week_telegrams() -> tuple[Telegram, ...]:
    return tuple(make_telegrams())


def stored_week(server: InfluxServer, tmp_path_factory: Any) -> Week:
    """The week in ``server``: stored by the first test module that asks, found there by the next."""
    server.start()
    telegrams = list(week_telegrams())
    if DATABASE not in server.databases():
        server.create_database(DATABASE)
        store(server, DATABASE, telegrams, tmp_path_factory.mktemp("week"))
    return Week(server, DATABASE, telegrams)
