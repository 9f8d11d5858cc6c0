"""Every dashboard query, the alert rule and the InfluxQL cookbook, run against a stored week in influxd.

The week (tests/helpers/stored_week.py) is a simulated Belgian meter stored by
`p1logger run`, crossing the spring DST change and the March/April boundary.
Each query is expanded as Grafana would send it (tests/helpers/grafana_influxql.py)
at NOW, a moment inside that week, and run against the real influxd 1.6.7.
Every query must answer without error and with data; the numbers a user
reads are compared exactly with values computed from the telegrams.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from helpers.grafana_influxql import (
    TimeRange,
    Variable,
    calculate_interval_ms,
    dashboard_requests,
    expand,
    influx_regular_escape,
    interpolate_variables,
    parse_relative,
    round_interval_ms,
    seconds_to_hms,
    server_macros,
)
from helpers.influx_servers import InfluxServer, http_request
from helpers.stored_week import (
    INSTANCE,
    Week,
    stored_week,
    OUTAGE,
    PRICE_EUR_PER_KW_YEAR,
    TARIFF,
    ZONE,
    _history,
    day_start_s,
    local_day,
    per_day,
    quarter_averages,
)

REPO = Path(__file__).resolve().parent.parent
DASHBOARD_DIR = REPO / "grafana" / "dashboards"
DATASOURCES = REPO / "grafana" / "provisioning" / "datasources" / "influxdb.yaml"
ALERT_RULE = REPO / "grafana" / "provisioning" / "alerting" / "capacity.yaml"
INFLUXQL_DOC = REPO / "docs" / "influxql.md"
METER = "1SAG1100000001"  # the be3 simulator's equipment id
# A Tuesday evening after the DST change and the month boundary.
NOW = datetime(2024, 4, 2, 18, 47, 10, tzinfo=ZONE)
# Grafana uses the panel's width in pixels when a panel sets no maxDataPoints.
PANEL_WIDTH_PX = 1000


def _yaml(path: Path) -> Any:
    from ruamel.yaml import YAML

    return YAML(typ="safe").load(path.read_text(encoding="utf-8"))


def datasource_min_interval() -> str:
    (datasource,) = _yaml(DATASOURCES)["datasources"]
    interval: str = datasource["jsonData"]["timeInterval"]
    return interval


# --------------------------------------------------------------------------- the stored week


@pytest.fixture(scope="module")
def week(influxd: InfluxServer, tmp_path_factory: pytest.TempPathFactory) -> Week:
    return stored_week(influxd, tmp_path_factory)


def rows(series: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for s in series:
        for values in s["values"]:
            out.append({**s.get("tags", {}), **dict(zip(s["columns"], values))})
    return out


def load_dashboard(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((DASHBOARD_DIR / f"{name}.json").read_text(encoding="utf-8"))
    return loaded


def requests_for(name: str, now: datetime = NOW) -> dict[str, Any]:
    """{where: Request} for every target of the dashboard."""
    return {
        r.where: r
        for r in dashboard_requests(
            name,
            load_dashboard(name),
            now=now.astimezone(timezone.utc),
            zone=ZONE,
            values={"meter": METER, "instance": INSTANCE},
            min_interval=datasource_min_interval(),
            default_max_data_points=PANEL_WIDTH_PX,
        )
    }


def panel_request(name: str, panel_id: int, ref: str = "A", now: datetime = NOW) -> Any:
    (request,) = [r for w, r in requests_for(name, now).items() if w.startswith(f"{name}: panel {panel_id} ") and w.endswith(f" {ref}")]
    return request


DASHBOARDS = ("live", "energy", "gas-water", "capacity", "health")


# --------------------------------------------------------------------------- every query runs and returns data


def all_requests() -> list[Any]:
    return [r for name in DASHBOARDS for r in requests_for(name).values()]


def variable_queries() -> list[tuple[str, str]]:
    found = []
    for name in DASHBOARDS:
        for var in load_dashboard(name)["templating"]["list"]:
            if var["type"] == "query":
                found.append((f"{name}: variable {var['name']}", var["query"]))
    return found


def test_every_dashboard_query_answers_with_data(week: Week) -> None:
    requests = all_requests()
    assert len(requests) == 54
    empty = []
    for request in requests:
        assert not re.search(r"\$\w|\$\{|\[\[", request.query), request.where
        series = week.series(request.query)
        values = [v for s in series for row in s["values"] for v in row[1:] if v is not None and not isinstance(v, str)]
        if not values:
            empty.append(request.where)
    assert empty == []


def test_every_variable_query_finds_the_stored_tag_values(week: Week) -> None:
    expected = {"meter": [METER], "instance": [INSTANCE]}
    queries = variable_queries()
    assert len(queries) == 6
    for where, query in queries:
        name = where.rsplit(" ", 1)[1]
        values = [row["value"] for row in rows(week.series(query))]
        assert values == expected[name], where


def test_the_provisioned_data_source_settings_work_on_influxd_without_authentication(week: Week) -> None:
    """Grafana's request with the data source's settings: POST, dbName, the token header (ignored by 1.x without auth)."""
    (datasource,) = _yaml(DATASOURCES)["datasources"]
    settings = datasource["jsonData"]
    database = settings["dbName"].replace("$P1_INFLUX_DATABASE", week.database)
    header = datasource["secureJsonData"]["httpHeaderValue1"].replace("$P1_INFLUX_TOKEN", "some-influxdb2-token")
    request = panel_request("live", 7)
    reply = http_request(
        int(week.server.url.rsplit(":", 1)[1]),
        settings["httpMode"],
        "/query?" + urllib.parse.urlencode({"db": database, "epoch": "ms"}),
        body=urllib.parse.urlencode({"q": request.query}).encode(),
        headers={settings["httpHeaderName1"]: header, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert reply.status == 200, reply.body
    (result,) = json.loads(reply.body)["results"]
    assert [s["columns"] for s in result["series"]] == [["time", "import_w", "export_w"]]


# --------------------------------------------------------------------------- exact values


def _only_row(week: Week, request: Any) -> dict[str, Any]:
    (row,) = rows(week.series(request.query))
    return row


def test_today_import_and_export_per_tariff(week: Week) -> None:
    now_s = int(NOW.timestamp())
    seen = week.before(now_s)
    today = local_day(now_s)
    for panel_id, direction in ((5, "import"), (6, "export")):
        request = panel_request("live", panel_id)
        # Grafana's "now-1d/d" starts yesterday at midnight; the last row is today.
        assert request.time_range.start == datetime(2024, 4, 1, tzinfo=ZONE).astimezone(timezone.utc)
        last = rows(week.series(request.query))[-1]
        assert last["time"] == day_start_s(today)
        for tariff in ("1", "2"):
            counter = f"1-0:{1 if direction == 'import' else 2}.8.{tariff}"
            expected = per_day([(t.time_s, t.value(counter, "kWh")) for t in seen])[today]
            assert last[f"{direction}_t{tariff}_kwh"] == expected
        total = per_day(
            [
                (t.time_s, round(sum(t.value(f"1-0:{1 if direction == 'import' else 2}.8.{n}", "kWh") for n in "12"), 6))
                for t in seen
            ]
        )[today]
        assert last[f"{direction}_total_kwh"] == total
        assert last[f"{direction}_t1_kwh"] > 0 or last[f"{direction}_t2_kwh"] > 0


def _per_day_series(week: Week, request: Any, column: str) -> dict[str, float]:
    return {local_day(row["time"]): row[column] for row in rows(week.series(request.query)) if row[column] is not None}


def test_gas_and_water_per_day_across_the_dst_change(week: Week) -> None:
    now_s = int(NOW.timestamp())
    seen = week.before(now_s)
    gas = sorted({t.mbus(1, "24.2.3", "m3") for t in seen})
    water = sorted({t.mbus(2, "24.2.1", "m3") for t in seen})
    expected_gas = per_day(gas)
    expected_water = {day: litres * 1000 for day, litres in per_day(water).items()}
    gas_days = _per_day_series(week, panel_request("gas-water", 6), "volume_m3")
    water_days = _per_day_series(week, panel_request("gas-water", 8), "volume_l")
    assert "2024-03-31" in gas_days  # the 23-hour day
    assert gas_days == expected_gas
    assert water_days == expected_water
    # The DST day's bucket starts at its own midnight (+01:00), the next one at +02:00.
    days = [row["time"] for row in rows(week.series(panel_request("gas-water", 6).query))]
    assert day_start_s("2024-04-01") - day_start_s("2024-03-31") == 23 * 3600
    assert {day_start_s("2024-03-31"), day_start_s("2024-04-01")} <= set(days)
    # The "today" stats show the last of those days.
    assert rows(week.series(panel_request("gas-water", 1).query))[-1]["volume_m3"] == expected_gas["2024-04-02"]
    assert rows(week.series(panel_request("gas-water", 3).query))[-1]["volume_l"] == expected_water["2024-04-02"]


def test_energy_per_week_adds_up_the_local_days_of_each_monday_to_sunday_week(week: Week) -> None:
    seen = week.before(int(NOW.timestamp()))
    for ref, code, direction in (("A", 1, "import"), ("B", 2, "export")):
        request = panel_request("energy", 6, ref)
        got = rows(week.series(request.query))
        for tariff in ("1", "2"):
            days = per_day([(t.time_s, t.value(f"1-0:{code}.8.{tariff}", "kWh")) for t in seen])
            weeks: dict[str, list[float]] = {}
            for day, kwh in sorted(days.items()):
                monday = datetime.strptime(day, "%Y-%m-%d") - timedelta(days=datetime.strptime(day, "%Y-%m-%d").weekday())
                weeks.setdefault(f"{monday:%Y-%m-%d}", []).append(kwh)
            assert sorted(weeks) == ["2024-03-25", "2024-04-01"]  # the DST change is in the first week
            # Each bar stands on the Sunday (noon UTC) before its Monday.
            shown = {f"{datetime.fromtimestamp(r['time'] + 12 * 3600, timezone.utc):%Y-%m-%d}": r[f"{direction}_t{tariff}_kwh"]
                     for r in got if r[f"{direction}_t{tariff}_kwh"] is not None}
            assert shown.keys() == weeks.keys()
            for monday, values in weeks.items():
                assert shown[monday] == pytest.approx(sum(values), abs=1e-9)


def closing_day(points: list[tuple[int, float]], day: str) -> float:
    """The reading at the day's last midnight minus the one at its first: how the logger's cost counts a day."""
    start_s = day_start_s(day)
    end_s = int((datetime.strptime(day, "%Y-%m-%d") + timedelta(days=1)).replace(tzinfo=ZONE).timestamp())

    def at(limit_s: int) -> float:
        return [value for time_s, value in points if time_s <= limit_s][-1]

    return at(end_s) - at(start_s)


def expected_cost(week: Week, day: str) -> dict[str, float]:
    """A whole day's cost by hand from the telegrams and the tariff: each register's kWh at its price,
    the export credit, gas and water, and the fixed charge once a day (also on the 23-hour day)."""
    seen = week.before(day_start_s(day) + 2 * 86400)
    kwh = {name: closing_day([(t.time_s, t.value(obis, "kWh")) for t in seen], day)
           for name, obis in (("i1", "1-0:1.8.1"), ("i2", "1-0:1.8.2"), ("e1", "1-0:2.8.1"), ("e2", "1-0:2.8.2"))}
    return {
        "import_eur": kwh["i1"] * TARIFF["import"][1] + kwh["i2"] * TARIFF["import"][2],
        "export_eur": kwh["e1"] * TARIFF["export"][1] + kwh["e2"] * TARIFF["export"][2],
        "gas_eur": closing_day(sorted({t.mbus(1, "24.2.3", "m3") for t in seen}), day) * TARIFF["gas"],
        "water_eur": closing_day(sorted({t.mbus(2, "24.2.1", "m3") for t in seen}), day) * TARIFF["water"],
        "fixed_eur": TARIFF["fixed"],
    }


WHOLE_DAYS = ("2024-03-28", "2024-03-29", "2024-03-30", "2024-03-31", "2024-04-01")


def assert_cost_row(row: dict[str, Any], expected: dict[str, float], day: str) -> None:
    for name, value in expected.items():
        # The fixed charge is shared over the quarters, each share stored to a millionth of a euro.
        tolerance = 100 * 1e-6 if name == "fixed_eur" else 1e-6
        assert row[name] == pytest.approx(value, abs=tolerance), (day, name)


def test_cost_per_day_and_today(week: Week) -> None:
    now_s = int(NOW.timestamp())
    stored = rows(week.series(f'SELECT "import_eur", "export_eur", "gas_eur", "water_eur", "fixed_eur", "total_eur" '
                              f'FROM "cost" WHERE "meter" = \'{METER}\' AND time <= {now_s}s'))
    by_day: dict[str, float] = {}
    for row in stored:
        by_day[local_day(row["time"])] = by_day.get(local_day(row["time"]), 0.0) + row["import_eur"]
    got = {local_day(r["time"]): r for r in rows(week.series(panel_request("energy", 13).query))}
    assert set(got) == set(by_day) and "2024-03-31" in got
    for day, import_eur in by_day.items():
        assert got[day]["import_eur"] == pytest.approx(import_eur, abs=1e-9), day
    # By hand, for the whole days; the logger counts a reading taken at midnight into the day that ends then.
    for day in WHOLE_DAYS:
        assert_cost_row(got[day], expected_cost(week, day), day)
    today = rows(week.series(panel_request("energy", 11).query))[-1]
    assert local_day(today["time"]) == "2024-04-02"
    assert today["total_eur"] == pytest.approx(sum(r["total_eur"] for r in stored if local_day(r["time"]) == "2024-04-02"),
                                               abs=1e-9)


def _month_peak_now(week: Week, now_s: int) -> float:
    """This month's peak at ``now_s``: the meter's 1-0:1.6.0 and the quarters we measured this month."""
    seen = week.before(now_s)
    month = f"{datetime.fromtimestamp(now_s, ZONE):%Y-%m}"
    month_start = int(datetime(2024, 4, 1, tzinfo=ZONE).timestamp())
    assert month == "2024-04"
    peak_time, peak_kw = seen[-1].month_peak()
    candidates = [peak_kw] if peak_time >= month_start else []
    candidates += [kw for end, kw in quarter_averages(seen).items() if end > month_start and end <= now_s]
    return max(candidates)


def _capacity_expectation(week: Week, now_s: int) -> tuple[float, float]:
    """(this month's peak, the unrounded 12-month mean) at ``now_s``, from the telegrams."""
    seen = week.before(now_s)
    peak = _month_peak_now(week, now_s)
    history = dict(seen[-1].history())
    months = ["2024-04"] + [f"{(datetime(2024, 4, 15) - timedelta(days=30.4 * n)):%Y-%m}" for n in range(1, 12)]
    assert months[-1] == "2023-05" and len(set(months)) == 12
    peaks = [peak] + [history[m] for m in months[1:]]
    return peak, sum(max(kw, 2.5) for kw in peaks) / len(peaks)


def test_this_months_peak_rolling_mean_and_yearly_cost(week: Week) -> None:
    now_s = int(NOW.timestamp())
    seen = week.before(now_s)
    history = dict(seen[-1].history())
    peak, mean = _capacity_expectation(week, now_s)
    assert peak > 2.5

    quarter = _only_row(week, panel_request("capacity", 1))
    assert quarter["running_peak_kw"] == peak
    assert _only_row(week, panel_request("capacity", 4))["rolling_mean_kw"] == round(mean, 3)
    cost = [row["yearly_cost_eur"] for row in rows(week.series(panel_request("capacity", 8).query))]
    assert cost[-1] == round(mean * PRICE_EUR_PER_KW_YEAR, 2)
    # The history bar chart: one bar per month of the meter's history, in month order.
    bars = rows(week.series(panel_request("capacity", 6).query))
    assert [(b["month"], b["history_peak_kw"]) for b in bars] == sorted(history.items())


def test_power_per_phase_at_a_chosen_second(week: Week) -> None:
    # Some telegram in the evening peak, with a 10-minute window ending just after it.
    chosen = next(t for t in week.telegrams if t.time_s >= int(datetime(2024, 4, 2, 19, 0, 0, tzinfo=ZONE).timestamp()))
    now = datetime.fromtimestamp(chosen.time_s + 5, timezone.utc)
    dashboard = load_dashboard("live")
    dashboard["time"] = {"from": "now-10m", "to": "now"}
    from helpers.grafana_influxql import dashboard_requests as requests_of

    (request,) = [
        r
        for r in requests_of(
            "live", dashboard, now=now, zone=ZONE, values={"meter": METER, "instance": INSTANCE},
            min_interval=datasource_min_interval(), default_max_data_points=PANEL_WIDTH_PX,
        )
        if "panel 8 " in r.where
    ]
    assert request.interval_ms == 10_000 and "GROUP BY time(10s)" in request.query
    by_phase = {row["phase"]: row["net_w"] for row in rows(week.series(request.query)) if row["time"] == chosen.time_s}
    expected = {}
    for phase, (imp, exp) in {"L1": (21, 22), "L2": (41, 42), "L3": (61, 62)}.items():
        import_w = round(chosen.value(f"1-0:{imp}.7.0", "kW") * 1000.0, 9)
        export_w = round(chosen.value(f"1-0:{exp}.7.0", "kW") * 1000.0, 9)
        expected[phase] = import_w - export_w
    assert by_phase == expected
    assert any(value != 0 for value in expected.values())


# --------------------------------------------------------------------------- the alert rule


def alert_queries() -> dict[str, Any]:
    rule = _yaml(ALERT_RULE)["groups"][0]["rules"][0]
    return {d["refId"]: d for d in rule["data"] if d["datasourceUid"] != "__expr__"}, rule


def evaluate_alert(week: Week, at_s: int) -> dict[str, tuple[float, float]]:
    """Grafana's evaluation at ``at_s``: meter -> (reduced A, reduced B); the rule fires where A > 0."""
    data, rule = alert_queries()
    assert [e["model"]["type"] for e in rule["data"] if e["datasourceUid"] == "__expr__"] == [
        "reduce",
        "reduce",
        "threshold",
    ]
    reduced: dict[str, dict[str, float]] = {}
    for ref, spec in data.items():
        window = spec["relativeTimeRange"]
        time_range = TimeRange(
            datetime.fromtimestamp(at_s - window["from"], timezone.utc), datetime.fromtimestamp(at_s - window["to"], timezone.utc)
        )
        text, _ = expand(
            spec["model"]["query"], variables={}, time_range=time_range,
            max_data_points=spec["model"]["maxDataPoints"], min_interval=f"{spec['model']['intervalMs'] // 1000}s",
        )
        for row in rows(week.series(text)):
            value = next(v for k, v in row.items() if k not in ("time", "meter"))
            # reduce "last" with mode dropNN: the last non-null value of each series
            if value is not None:
                reduced.setdefault(row["meter"], {})[ref] = value
    return {meter: (values.get("A", 0.0), values.get("B", 0.0)) for meter, values in reduced.items()}


def fires(week: Week, at_s: int) -> bool:
    _, rule = alert_queries()
    threshold = next(e for e in rule["data"] if e["refId"] == rule["condition"])
    assert threshold["model"]["conditions"][0]["evaluator"] == {"type": "gt", "params": [0]}
    return any(a > 0 for a, _ in evaluate_alert(week, at_s).values())


def _stored_quarters(week: Week) -> list[tuple[int, float, float]]:
    """(quarter end, stored quarter_avg_kw, stored running peak just before the quarter began)."""
    averages = rows(week.series(f'SELECT "quarter_avg_kw" FROM "capacity" WHERE "meter" = \'{METER}\' AND "quarter_avg_kw" >= 0'))
    running = {r["time"]: r["running_peak_kw"] for r in rows(week.series(
        f'SELECT "running_peak_kw" FROM "capacity" WHERE "meter" = \'{METER}\' AND "running_peak_kw" >= 0'))}
    out = []
    for row in averages:
        start = row["time"] - 900
        if start in running:
            out.append((row["time"], row["quarter_avg_kw"], running[start]))
    return out


def test_alert_fires_on_a_quarter_that_sets_a_new_peak(week: Week) -> None:
    _, rule = alert_queries()
    assert rule["for"] == "1m"
    quarters = _stored_quarters(week)
    new_peaks = [(end, avg, before) for end, avg, before in quarters if avg > max(before, 2.5)]
    assert new_peaks, "the stored week has no quarter that sets a new peak"
    end, _, _ = new_peaks[0]
    # "for: 1m" with a 1-minute interval: true at two evaluations in a row before the quarter ends.
    assert fires(week, end - 61) and fires(week, end - 1)
    _, shed = evaluate_alert(week, end - 1)[METER]
    assert shed >= 0


def test_alert_stays_quiet_on_a_quarter_below_the_peak(week: Week) -> None:
    quarters = _stored_quarters(week)
    quiet = [(end, avg, before) for end, avg, before in quarters if before >= 2.5 and avg < 0.5 * before]
    assert quiet, "the stored week has no quiet quarter"
    for end, _, _ in quiet[:5]:
        assert not any(fires(week, at) for at in range(end - 840, end, 60)), end


# --------------------------------------------------------------------------- the InfluxQL cookbook


INFLUXQL_BLOCK_RE = re.compile(r"^```sql influxql\n(.*?)^```\n+<!-- expect: (.*?) -->", re.MULTILINE | re.DOTALL)


def cookbook_recipes() -> list[tuple[str, str, str]]:
    text = INFLUXQL_DOC.read_text(encoding="utf-8")
    found = []
    for match in INFLUXQL_BLOCK_RE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        found.append((f"docs/influxql.md:{line}", match.group(1).strip(), match.group(2).strip()))
    return found


def test_every_influxql_recipe_has_an_expectation() -> None:
    text = INFLUXQL_DOC.read_text(encoding="utf-8")
    recipes = cookbook_recipes()
    assert text.count("```sql influxql") == len(recipes) == 14
    assert sorted(name for _, _, name in recipes) == sorted(RECIPE_CHECKS)


def _now_s() -> int:
    return int(NOW.timestamp())


def _daily(week: Week, points: list[tuple[int, float]], since_s: int) -> dict[str, float]:
    """per_day() for the days a query from ``since_s`` shows: the first day in range has no day before it."""
    first_day = local_day(since_s)
    return {day: value for day, value in per_day([p for p in points if p[0] >= day_start_s(first_day)]).items()}


def _by_day(result: list[dict[str, Any]], column: str) -> dict[str, float]:
    return {local_day(r["time"]): r[column] for r in result if r[column] is not None}


def _kw_to_w(kw: float) -> float:
    return round(kw * 1000.0, 9)


def check_power_now(week: Week, result: list[dict[str, Any]]) -> None:
    last = week.before(_now_s())[-1]
    (row,) = result
    assert (row["meter"], row["import_w"], row["export_w"]) == (
        METER, _kw_to_w(last.value("1-0:1.7.0", "kW")), _kw_to_w(last.value("1-0:2.7.0", "kW")))


def _check_counter_per_day(week: Week, result: list[dict[str, Any]], code: int) -> None:
    seen = week.before(_now_s())
    since = _now_s() - 31 * 86400
    for tariff in ("1", "2"):
        points = [(t.time_s, t.value(f"1-0:{code}.8.{tariff}", "kWh")) for t in seen]
        assert _by_day(result, f"t{tariff}_kwh") == _daily(week, points, since)
    assert len(_by_day(result, "t1_kwh")) == 6


def check_import_per_day(week: Week, result: list[dict[str, Any]]) -> None:
    _check_counter_per_day(week, result, 1)


def check_export_per_day(week: Week, result: list[dict[str, Any]]) -> None:
    _check_counter_per_day(week, result, 2)


def check_net_per_day(week: Week, result: list[dict[str, Any]]) -> None:
    seen = week.before(_now_s())
    since = _now_s() - 31 * 86400
    imported = _daily(week, [(t.time_s, round(t.value("1-0:1.8.1", "kWh") + t.value("1-0:1.8.2", "kWh"), 6)) for t in seen], since)
    exported = _daily(week, [(t.time_s, round(t.value("1-0:2.8.1", "kWh") + t.value("1-0:2.8.2", "kWh"), 6)) for t in seen], since)
    assert _by_day(result, "net_kwh") == {day: imported[day] - exported[day] for day in imported}
    assert any(v < 0 for v in exported.values()) is False


def check_max_power_per_day(week: Week, result: list[dict[str, Any]]) -> None:
    since = _now_s() - 7 * 86400
    expected: dict[str, float] = {}
    for t in week.before(_now_s()):
        if t.time_s >= since:
            day = local_day(t.time_s)
            expected[day] = max(expected.get(day, 0.0), _kw_to_w(t.value("1-0:1.7.0", "kW")))
    assert _by_day(result, "import_w") == expected


def check_month_peak(week: Week, result: list[dict[str, Any]]) -> None:
    month_start = int(datetime(2024, 4, 1, tzinfo=ZONE).timestamp())
    ours = [kw for end, kw in quarter_averages(week.telegrams).items() if end > month_start]
    (row,) = result
    assert row["peak_kw"] == max(ours) > 2.5  # the car charging on the evening of 1 April


def check_peak_history(week: Week, result: list[dict[str, Any]]) -> None:
    newest: dict[str, float] = {}
    for text in dict.fromkeys(t.lines["0-0:98.1.0"] for t in week.before(_now_s())):
        newest.update(_history(text))
    assert {r["month"]: r["peak_kw"] for r in result} == newest
    assert len(newest) == 14  # 2023-02 left the meter's list on 1 April; 2024-03 joined it


def check_capacity_now(week: Week, result: list[dict[str, Any]]) -> None:
    (row,) = result
    peak, mean = _capacity_expectation(week, _now_s())
    assert (row["running_peak_kw"], row["rolling_mean_kw"], row["yearly_cost_eur"]) == (
        peak, round(mean, 3), round(mean * PRICE_EUR_PER_KW_YEAR, 2))


def _check_mbus_per_day(week: Week, result: list[dict[str, Any]], channel: int, suffix: str, column: str,
                        factor: float) -> None:
    seen = week.before(_now_s())
    points = sorted({t.mbus(channel, suffix, "m3") for t in seen})
    expected = _daily(week, points, _now_s() - 31 * 86400)
    assert _by_day(result, column) == {day: value * factor if factor != 1 else value for day, value in expected.items()}


def check_gas_per_day(week: Week, result: list[dict[str, Any]]) -> None:
    _check_mbus_per_day(week, result, 1, "24.2.3", "volume_m3", 1)


def check_water_per_day(week: Week, result: list[dict[str, Any]]) -> None:
    _check_mbus_per_day(week, result, 2, "24.2.1", "volume_l", 1000)


def check_voltage_per_day(week: Week, result: list[dict[str, Any]]) -> None:
    since = _now_s() - 7 * 86400
    volts: dict[tuple[str, str], list[float]] = {}
    for t in week.before(_now_s()):
        if t.time_s >= since:
            for phase, code in (("L1", 32), ("L2", 52), ("L3", 72)):
                volts.setdefault((phase, local_day(t.time_s)), []).append(t.value(f"1-0:{code}.7.0", "V"))
    got = {(r["phase"], local_day(r["time"])): (r["mean_v"], r["min_v"]) for r in result if r["min_v"] is not None}
    assert set(got) == set(volts)
    for key, values in volts.items():
        assert got[key][1] == min(values)
        assert got[key][0] == pytest.approx(sum(values) / len(values), rel=1e-12)


def check_gaps(week: Week, result: list[dict[str, Any]]) -> None:
    times = [t.time_s for t in week.before(_now_s()) if t.time_s >= _now_s() - 7 * 86400]
    expected = [(b, b - a) for a, b in zip(times, times[1:]) if b - a > 15]
    assert [(r["time"], r["gap_s"]) for r in result] == expected
    outage_end = next(t for t in times if t >= int(OUTAGE[1].timestamp()))
    assert (outage_end, outage_end - max(t for t in times if t < outage_end)) in expected  # the unplugged cable


def check_rejected_per_hour(week: Week, result: list[dict[str, Any]]) -> None:
    assert len(result) >= 23 and {r["rejected"] for r in result} == {0}


def check_cost_per_day(week: Week, result: list[dict[str, Any]]) -> None:
    by_day = {local_day(r["time"]): r for r in result if r["total_eur"] is not None}
    for day in WHOLE_DAYS:
        expected = expected_cost(week, day)
        assert_cost_row(by_day[day], expected, day)
        total = expected["import_eur"] - expected["export_eur"] + expected["gas_eur"] + expected["water_eur"] + 0.25
        assert by_day[day]["total_eur"] == pytest.approx(total, abs=200 * 1e-6)


RECIPE_CHECKS = {
    name[len("check_"):]: check
    for name, check in dict(globals()).items()
    if name.startswith("check_") and callable(check)
}


@pytest.mark.parametrize("recipe", cookbook_recipes(), ids=lambda r: r[0])
def test_influxql_recipe_gives_the_value_computed_from_the_telegrams(week: Week, recipe: tuple[str, str, str]) -> None:
    _, query, check = recipe
    at = "'" + NOW.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") + "'"
    # A real now() has no data after it: the stored week does, so bound every WHERE by NOW as well.
    text = query.replace("now()", at).replace("WHERE ", f"WHERE time <= {at} AND ")
    assert "now()" not in text
    result = rows(week.series(text))
    assert result, "no data"
    RECIPE_CHECKS[check](week, result)


# --------------------------------------------------------------------------- the expander mirrors Grafana


def test_round_interval_follows_grafanas_table() -> None:
    assert [round_interval_ms(ms) for ms in (9, 14, 900, 1_500, 9_000, 43_200, 86_400, 200_000, 2_000_000)] == [
        1, 10, 1_000, 1_000, 10_000, 30_000, 60_000, 120_000, 1_800_000,
    ]
    assert round_interval_ms(172_800_000) == round_interval_ms(604_800_000) == 86_400_000
    assert round_interval_ms(4e9) == 31_536_000_000


def test_interval_text_and_minimum() -> None:
    assert [seconds_to_hms(s) for s in (0.5, 10, 60, 90, 3600, 86400)] == ["500ms", "10s", "1m", "1m", "1h", "1d"]
    day_ms = 86_400_000
    assert calculate_interval_ms(0, day_ms, 1000, "10s") == 60_000  # 86.4 s rounds to 1 m
    assert calculate_interval_ms(0, 600_000, 1000, "10s") == 10_000  # 0.6 s, raised to the minimum
    assert calculate_interval_ms(0, 600_000, 1000, None) == 500


def test_variables_are_escaped_like_grafanas_influxdb_data_source() -> None:
    variables = {
        "meter": Variable("meter", "FLU5\\253769484_A"),
        "tz": Variable("tz", "Europe/Brussels"),
        "n": Variable("n", "1SAG.1"),
    }
    query = "'$meter' '${meter}' '[[meter]]' tz('$tz') tz('${tz:raw}') '$n' $timeFilter $__interval $__interval_ms"
    assert interpolate_variables(query, variables, {"__interval": "10s", "__interval_ms": "10000"}) == (
        "'FLU5\\\\253769484_A' 'FLU5\\\\253769484_A' 'FLU5\\\\253769484_A' tz('Europe\\/Brussels') "
        "tz('Europe/Brussels') '1SAG.1' $timeFilter 10s 10000"
    )
    assert influx_regular_escape("a.b(c)") == "a\\.b\\(c\\)"
    assert influx_regular_escape("12.5") == "12.5"


def test_escaped_time_zone_is_an_influxql_error(week: Week) -> None:
    """Why the dashboards write ${tz:raw}: Grafana's default escaping breaks tz('Europe/Brussels')."""
    escaped = interpolate_variables("SELECT last(import_w) FROM power WHERE time > 0 GROUP BY time(1d) tz('$tz')",
                                    {"tz": Variable("tz", "Europe/Brussels")}, {})
    assert "tz('Europe\\/Brussels')" in escaped
    params = urllib.parse.urlencode({"q": escaped, "db": week.database})
    reply = http_request(int(week.server.url.rsplit(":", 1)[1]), "GET", f"/query?{params}")
    assert reply.status == 400 and b"error parsing query" in reply.body
    for dashboard in DASHBOARDS:
        text = json.dumps(load_dashboard(dashboard))
        assert "'$tz'" not in text and "tz('${tz:raw}')" in text or "tz(" not in text


def test_time_filter_and_relative_ranges() -> None:
    time_range = TimeRange(datetime(2024, 3, 31, 0, 0, tzinfo=ZONE), datetime(2024, 4, 1, 0, 0, tzinfo=ZONE))
    assert server_macros("WHERE $timeFilter GROUP BY time($__interval)", time_range, 60_000) == (
        "WHERE time >= 1711839600000ms and time <= 1711922400000ms GROUP BY time(1m)"
    )
    now = datetime(2024, 3, 31, 12, 0, tzinfo=ZONE)
    assert parse_relative("now/d", now, ZONE) == datetime(2024, 3, 30, 23, 0, tzinfo=timezone.utc)
    assert parse_relative("now-1d/d", datetime(2024, 4, 1, 9, 0, tzinfo=ZONE), ZONE) == datetime(
        2024, 3, 30, 23, 0, tzinfo=timezone.utc
    )
    assert parse_relative("now-3h", now, ZONE) == datetime(2024, 3, 31, 7, 0, tzinfo=timezone.utc)
    assert parse_relative("now/M", now, ZONE) == datetime(2024, 2, 29, 23, 0, tzinfo=timezone.utc)
