"""What Grafana sends to InfluxDB for a dashboard's InfluxQL query.

Grafana turns a raw InfluxQL target into the text InfluxDB receives in two
steps, and this module repeats both so the dashboards' queries can run against
a real influxd in the tests:

1. The browser (public/app/plugins/datasource/influxdb/datasource.ts,
   applyTemplateVariables) replaces the template variables through
   templateSrv.replace with the data source's interpolateQueryExpr: a single
   value of a variable that is neither multi-value nor "include all" goes
   through influxRegularEscape, which leaves a number alone and passes
   anything else to escapeRegex (packages/grafana-data/src/text/string.ts,
   which escapes \\ ^ $ * + ? . ( ) | [ ] { } and /). `${var:raw}` skips that.
   `$__interval` and `$__interval_ms` are scoped variables of the request,
   replaced in the same pass; the interval is calculateInterval(range,
   maxDataPoints, the data source's timeInterval): the range divided by the
   data points, rounded by the table in roundInterval, never below the
   minimum, written by secondsToHms.
2. The server (pkg/tsdb/influxdb/influxql/models/query.go, Build) replaces
   `$timeFilter` with `time >= <from>ms and time <= <to>ms`, then `$interval`,
   `$__interval_ms` and `$__interval`.

Time ranges use Grafana's relative syntax (`now-3h`, `now/d`, `now-1d/d`),
rounded in the dashboard's time zone, and a panel's `timeFrom` replaces the
dashboard range as applyPanelTimeOverrides does (`30d` means `now-30d`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping
from zoneinfo import ZoneInfo

# roundInterval: (upper bound in ms, interval in ms), first match wins.
_ROUND_TABLE_MS: tuple[tuple[float, int], ...] = (
    (10, 1),
    (15, 10),
    (35, 20),
    (75, 50),
    (150, 100),
    (350, 200),
    (750, 500),
    (1_500, 1_000),
    (3_500, 2_000),
    (7_500, 5_000),
    (12_500, 10_000),
    (17_500, 15_000),
    (25_000, 20_000),
    (45_000, 30_000),
    (90_000, 60_000),
    (210_000, 120_000),
    (450_000, 300_000),
    (750_000, 600_000),
    (1_050_000, 900_000),
    (1_500_000, 1_200_000),
    (2_700_000, 1_800_000),
    (5_400_000, 3_600_000),
    (9_000_000, 7_200_000),
    (16_200_000, 10_800_000),
    (32_400_000, 21_600_000),
    (86_400_000, 43_200_000),
    (172_800_000, 86_400_000),
    (604_800_000, 86_400_000),
    (1_814_400_000, 604_800_000),
)
_UNIT_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000, "y": 31_536_000_000}

# templateSrv's variable syntax: $name, [[name]] or [[name:format]], ${name} or ${name:format}.
VARIABLE_RE = re.compile(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?::([^}]+))?\}")
_REGEX_SPECIALS = re.compile(r"[\\^$*+?.()|\[\]{}/]")
_FLOAT_PREFIX = re.compile(r"\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def round_interval_ms(interval_ms: float) -> int:
    for bound, value in _ROUND_TABLE_MS:
        if interval_ms <= bound:
            return value
    return 2_592_000_000 if interval_ms < 3_628_800_000 else 31_536_000_000


def interval_to_ms(text: str) -> int:
    match = re.fullmatch(r"(\d+)(ms|s|m|h|d|w|y)", text)
    if match is None:
        raise ValueError(f"not a Grafana interval: {text!r}")
    return int(match.group(1)) * _UNIT_MS[match.group(2)]


def seconds_to_hms(seconds: float) -> str:
    """rangeutil.secondsToHms: the largest whole unit, as Grafana writes $__interval."""
    for unit, size in (("y", 31_536_000), ("d", 86_400), ("h", 3_600), ("m", 60)):
        if int(seconds // size):
            return f"{int(seconds // size)}{unit}"
    if int(seconds):
        return f"{int(seconds)}s"
    milliseconds = int(seconds * 1000)
    return f"{milliseconds}ms" if milliseconds else "less than a millisecond"


def calculate_interval_ms(from_ms: int, to_ms: int, max_data_points: int, min_interval: str | None) -> int:
    interval_ms = round_interval_ms((to_ms - from_ms) / max_data_points)
    low_limit_ms = interval_to_ms(min_interval) if min_interval else 1
    return max(interval_ms, low_limit_ms)


def _parse_float_prefix(value: str) -> float | None:
    """JavaScript's parseFloat: the number at the start of the text, if any."""
    match = _FLOAT_PREFIX.match(value)
    return float(match.group(0)) if match else None


def influx_regular_escape(value: str) -> str:
    if _parse_float_prefix(value) is None:
        return _REGEX_SPECIALS.sub(lambda m: "\\" + m.group(0), value)
    return value


# --------------------------------------------------------------------------- time ranges

_RELATIVE_RE = re.compile(r"now(?P<ops>(?:[+-]\d+[smhdwMy])*)(?:/(?P<round>[smhdwMy]))?")


def _add(moment: datetime, amount: int, unit: str) -> datetime:
    if unit in "smhdw":
        seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[unit]
        if unit in "dw":
            # Calendar days in the dashboard's zone, as moment.js adds them.
            return (moment.replace(tzinfo=None) + timedelta(days=amount * (7 if unit == "w" else 1))).replace(
                tzinfo=moment.tzinfo
            )
        return moment + timedelta(seconds=amount * seconds)
    months = amount * (12 if unit == "y" else 1)
    index = moment.year * 12 + moment.month - 1 + months
    return moment.replace(year=index // 12, month=index % 12 + 1)


def _round_down(moment: datetime, unit: str) -> datetime:
    if unit == "s":
        return moment.replace(microsecond=0)
    if unit == "m":
        return moment.replace(second=0, microsecond=0)
    if unit == "h":
        return moment.replace(minute=0, second=0, microsecond=0)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if unit == "d":
        return day
    if unit == "w":  # moment's startOf('isoWeek') is what Grafana's /w uses with a Monday week start
        return day - timedelta(days=day.weekday())
    if unit == "M":
        return day.replace(day=1)
    return day.replace(month=1, day=1)


def parse_relative(text: str, now: datetime, zone: ZoneInfo) -> datetime:
    """dateMath.parse for the relative forms the dashboards use; the answer is in UTC."""
    match = _RELATIVE_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"not a relative time Grafana understands here: {text!r}")
    moment = now.astimezone(zone)
    for sign, amount, unit in re.findall(r"([+-])(\d+)([smhdwMy])", match.group("ops")):
        moment = _add(moment, int(amount) * (1 if sign == "+" else -1), unit)
    if match.group("round"):
        moment = _round_down(moment, match.group("round"))
    # Re-attach the zone so a wall time across a DST change gets its own offset.
    moment = moment.replace(tzinfo=None).replace(tzinfo=zone)
    return moment.astimezone(timezone.utc)


@dataclass(frozen=True)
class TimeRange:
    start: datetime
    stop: datetime

    @property
    def from_ms(self) -> int:
        return int(self.start.timestamp() * 1000)

    @property
    def to_ms(self) -> int:
        return int(self.stop.timestamp() * 1000)


def panel_time_range(dashboard_range: Mapping[str, str], panel: Mapping[str, Any], now: datetime, zone: ZoneInfo) -> TimeRange:
    start_text, stop_text = dashboard_range["from"], dashboard_range["to"]
    time_from = panel.get("timeFrom")
    if time_from:
        # rangeUtil.describeTextRange: "30d" is "now-30d"; the range then ends now.
        start_text = time_from if "now" in time_from else f"now-{time_from}"
        stop_text = "now"
    return TimeRange(parse_relative(start_text, now, zone), parse_relative(stop_text, now, zone))


# --------------------------------------------------------------------------- variables and macros


@dataclass(frozen=True)
class Variable:
    name: str
    value: str
    multi: bool = False
    include_all: bool = False


def interpolate_variables(query: str, variables: Mapping[str, Variable], scoped: Mapping[str, str]) -> str:
    """templateSrv.replace(query, scopedVars, interpolateQueryExpr) for single values."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(4)
        fmt = match.group(3) or match.group(5)
        if name in scoped:
            value = scoped[name]
            return value if fmt == "raw" else influx_regular_escape(value)
        variable = variables.get(name)
        if variable is None:
            return match.group(0)  # not a variable (e.g. $timeFilter): left for the server
        if variable.multi or variable.include_all:
            raise NotImplementedError("multi-value variables are not used by the dashboards")
        if fmt is None:
            return influx_regular_escape(variable.value)
        if fmt == "raw":
            return variable.value
        raise NotImplementedError(f"variable format {fmt!r}")

    return VARIABLE_RE.sub(replace, query)


def server_macros(query: str, time_range: TimeRange, interval_ms: int) -> str:
    """query.go Build: what the Grafana server replaces, in its order."""
    interval_text = _format_interval(interval_ms)
    query = query.replace("$timeFilter", f"time >= {time_range.from_ms}ms and time <= {time_range.to_ms}ms")
    query = query.replace("$interval", interval_text)
    query = query.replace("$__interval_ms", str(interval_ms))
    return query.replace("$__interval", interval_text)


def _format_interval(interval_ms: int) -> str:
    """gtime.FormatInterval."""
    for unit, size in (("y", 31_536_000_000), ("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)):
        if interval_ms >= size:
            return f"{interval_ms // size}{unit}"
    return f"{interval_ms}ms" if interval_ms >= 1 else "1ms"


@dataclass(frozen=True)
class Request:
    """One target of one panel as Grafana would send it."""

    where: str
    query: str  # as InfluxDB receives it
    time_range: TimeRange
    interval_ms: int
    result_format: str


def expand(
    query: str,
    *,
    variables: Mapping[str, Variable],
    time_range: TimeRange,
    max_data_points: int,
    min_interval: str | None,
) -> tuple[str, int]:
    interval_ms = calculate_interval_ms(time_range.from_ms, time_range.to_ms, max_data_points, min_interval)
    scoped = {"__interval": seconds_to_hms(interval_ms / 1000), "__interval_ms": str(interval_ms)}
    text = interpolate_variables(query, variables, scoped)
    return server_macros(text, time_range, interval_ms), interval_ms


def dashboard_variables(dashboard: Mapping[str, Any], values: Mapping[str, str]) -> dict[str, Variable]:
    """The dashboard's variables: query variables take the given value, custom ones their saved current value."""
    found: dict[str, Variable] = {}
    for var in dashboard.get("templating", {}).get("list", []):
        value = values[var["name"]] if var["type"] == "query" else var["current"]["value"]
        found[var["name"]] = Variable(var["name"], value, bool(var.get("multi")), bool(var.get("includeAll")))
    return found


def iter_panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for panel in panels:
        out.append(panel)
        out.extend(iter_panels(panel.get("panels", [])))
    return out


def dashboard_requests(
    name: str,
    dashboard: Mapping[str, Any],
    *,
    now: datetime,
    zone: ZoneInfo,
    values: Mapping[str, str],
    min_interval: str | None,
    default_max_data_points: int,
) -> list[Request]:
    """Every panel target of a dashboard, expanded as Grafana would send it at ``now``."""
    variables = dashboard_variables(dashboard, values)
    requests = []
    for panel in iter_panels(list(dashboard.get("panels", []))):
        for target in panel.get("targets", []):
            time_range = panel_time_range(dashboard["time"], panel, now, zone)
            text, interval_ms = expand(
                target["query"],
                variables=variables,
                time_range=time_range,
                max_data_points=int(panel.get("maxDataPoints") or default_max_data_points),
                min_interval=panel.get("interval") or min_interval,
            )
            where = f"{name}: panel {panel['id']} {panel.get('title', '')!r} {target['refId']}"
            requests.append(Request(where, text, time_range, interval_ms, target.get("resultFormat", "time_series")))
    return requests
