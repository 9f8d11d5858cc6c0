"""Static checks of the Grafana dashboards, the alert rule and the two cookbooks.

The dashboards and docs/influxql.md are InfluxQL; tests/test_dashboard_queries.py
runs every one of those queries against influxd. Here:

- every dashboard type-checks against Grafana's own schema types for the
  pinned Grafana version (tools/grafana-check/check-dashboards.mjs);
- every Flux query of docs/flux.md parses and type-checks with InfluxData's
  Flux parser (tools/grafana-check/check-flux.mjs);
- every measurement, field and tag a query names (InfluxQL and Flux) is one
  the logger writes, and every field the logger writes is shown on some
  dashboard or listed in INTENTIONALLY_UNSHOWN.

The node checks need `npm ci --prefix tools/grafana-check`; without it they
skip, unless P1_TEST_REQUIRE_SERVERS=1 (as in CI), where they fail.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers.influx_servers import require_server

from p1logger.points import SCHEMA

REPO = Path(__file__).resolve().parent.parent
DASHBOARD_DIR = REPO / "grafana" / "dashboards"
CHECK_DIR = REPO / "tools" / "grafana-check"
FLUX_DOC = REPO / "docs" / "flux.md"
INFLUXQL_DOC = REPO / "docs" / "influxql.md"
ALERT_RULE = REPO / "grafana" / "provisioning" / "alerting" / "capacity.yaml"
DATA_MODEL = REPO / "docs" / "data-model.md"
NODE_TIMEOUT_S = 120.0

# (measurement, field) -> why no dashboard shows it. docs/data-model.md
# points here; keep the two in step.
_QUANTITIES_SHOWN_FROM_COUNTERS = "the energy and gas-water dashboards show these quantities from the meter's counters"
INTENTIONALLY_UNSHOWN: dict[tuple[str, str], str] = {
    **{("cost", name): _QUANTITIES_SHOWN_FROM_COUNTERS for name in ("import_kwh", "export_kwh", "gas_m3", "water_m3")},
    **{(measurement, "clock_fallback"): "a marker on readings whose meter clock stood still or stepped back, to "
       "query when looking into the meter's clock; not a figure to plot"
       for measurement in ("power", "voltage", "current", "energy", "capacity")},
}

FLUX_BLOCK_RE = re.compile(r"^```flux\n(.*?)^```", re.MULTILINE | re.DOTALL)


# --------------------------------------------------------------------------- tools


def _grafana_check_tool() -> str:
    """The node binary, once tools/grafana-check has its dependencies."""
    node = shutil.which("node")
    if node is None:
        require_server("node", "not on PATH")
    elif not (CHECK_DIR / "node_modules").is_dir():
        require_server("tools/grafana-check", "run `npm ci --prefix tools/grafana-check`")
    assert node is not None
    return node


def _run_node(script: str, args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_grafana_check_tool(), str(CHECK_DIR / script), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT_S,
        cwd=REPO,
        check=False,
    )


# --------------------------------------------------------------------------- the written schema


Schema = dict[str, dict[str, Any]]


def _backticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def reference_schema() -> Schema:
    """Measurements, fields (with types) and tags as docs/data-model.md lists them.

    Same shape as p1logger.points.SCHEMA:
    {measurement: {"fields": {name: "float" | "int"}, "tags": {tag, ...}}}.
    """
    lines = DATA_MODEL.read_text(encoding="utf-8").splitlines()
    schema: Schema = {}
    tag_rows: list[list[str]] = []
    section = ""
    measurement: str | None = None
    header: list[str] = []
    for line in lines:
        heading = re.match(r"^(#+)\s+(.*)$", line)
        if heading:
            level, title = len(heading.group(1)), heading.group(2)
            if level == 2:
                section, measurement = title.strip(), None
            elif level == 3 and section == "Measurements":
                measurement = _backticked(title)[0]
                schema[measurement] = {"fields": {}, "tags": set()}
            header = []
            continue
        if not line.startswith("|"):
            header = []
            continue
        cells = _cells(line)
        if not header:
            header = [c.lower() for c in cells]
            continue
        if set(line.replace("|", "").strip()) <= {"-", ":", " "}:
            continue
        row = dict(zip(header, cells, strict=True))
        if section == "Tags":
            tag_rows.append([row["tag"], row["on"]])
        elif measurement is not None and "field" in row:
            meaning = row.get("meaning", "")
            kind = row.get("type", meaning)
            field_type = "int" if re.match(r"\s*integer\b", kind) else "float"
            names = _backticked(row["field"])
            if "t3/t4" in meaning:
                names += [n.replace("_t1_", f"_t{i}_") for n in names if "_t1_" in n for i in (3, 4)]
            for name in names:
                schema[measurement]["fields"][name] = field_type
    for tag_cell, on_cell in tag_rows:
        (tag,) = _backticked(tag_cell)
        named = set(_backticked(on_cell))
        if on_cell.startswith("every measurement except"):
            targets = set(schema) - named
        else:
            targets = named & set(schema)
        assert targets, f"data-model.md: tag {tag} is on no known measurement ({on_cell!r})"
        for m in targets:
            schema[m]["tags"].add(tag)
    return schema


def emitted_schema() -> Schema:
    """p1logger.points.SCHEMA, what the writer emits, in the shape of reference_schema()."""
    return {m: {"fields": dict(spec.fields), "tags": set(spec.tags)} for m, spec in SCHEMA.items()}


# --------------------------------------------------------------------------- queries


@dataclass(frozen=True)
class FluxQuery:
    where: str  # e.g. "docs/flux.md:35"
    text: str


@dataclass(frozen=True)
class InfluxQLQuery:
    where: str  # e.g. "grafana/dashboards/live.json: panel 7 'Power' A"
    text: str  # as written, with Grafana's macros and variables in place


def load_dashboards() -> dict[Path, dict[str, Any]]:
    return {path: json.loads(path.read_text(encoding="utf-8")) for path in sorted(DASHBOARD_DIR.glob("*.json"))}


def iter_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from iter_panels(panel.get("panels", []))


def dashboard_queries() -> list[InfluxQLQuery]:
    queries: list[InfluxQLQuery] = []
    for path, dashboard in load_dashboards().items():
        rel = path.relative_to(REPO)
        for var in dashboard.get("templating", {}).get("list", []):
            if var["type"] == "query":
                queries.append(InfluxQLQuery(f"{rel}: variable {var['name']}", var["query"]))
        for panel in iter_panels(dashboard.get("panels", [])):
            for target in panel.get("targets", []):
                where = f"{rel}: panel {panel['id']} {panel.get('title', '')!r} {target['refId']}"
                queries.append(InfluxQLQuery(where, target["query"]))
    return queries


def alert_queries() -> list[InfluxQLQuery]:
    from ruamel.yaml import YAML

    rules = YAML(typ="safe").load(ALERT_RULE.read_text(encoding="utf-8"))
    return [
        InfluxQLQuery(f"{ALERT_RULE.relative_to(REPO)}: {rule['uid']} {data['refId']}", data["model"]["query"])
        for group in rules["groups"]
        for rule in group["rules"]
        for data in rule["data"]
        if "query" in data["model"]
    ]


INFLUXQL_BLOCK_RE = re.compile(r"^```sql influxql\n(.*?)^```", re.MULTILINE | re.DOTALL)


def influxql_doc_queries() -> list[InfluxQLQuery]:
    text = INFLUXQL_DOC.read_text(encoding="utf-8")
    return [
        InfluxQLQuery(f"docs/influxql.md:{text.count(chr(10), 0, m.start()) + 1}", m.group(1))
        for m in INFLUXQL_BLOCK_RE.finditer(text)
    ]


def doc_queries() -> list[FluxQuery]:
    text = FLUX_DOC.read_text(encoding="utf-8")
    queries = []
    for match in FLUX_BLOCK_RE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        queries.append(FluxQuery(f"docs/flux.md:{line}", match.group(1)))
    return queries


# --------------------------------------------------------------------------- names in queries

_R = r"r(?:\.([A-Za-z_]\w*)|\[\"([A-Za-z_]\w*)\"\])"
MEASUREMENT_RE = re.compile(r'r(?:\._measurement|\["_measurement"\])\s*==\s*"([^"]+)"')
FIELD_RE = re.compile(r'r(?:\._field|\["_field"\])\s*==\s*"([^"]+)"')
SET_RE = re.compile(r"contains\(\s*value:\s*" + _R + r"\s*,\s*set:\s*\[([^\]]*)\]")
TAG_FILTER_RE = re.compile(_R + r'\s*(?:==|!=)\s*"')
TAG_ARG_RE = re.compile(r'\btag:\s*"([^"]+)"')
COLUMN_REF_RE = re.compile(r"\b" + _R)
COLUMN_LIST_RE = re.compile(r"\b(?:columns|rowKey|columnKey):\s*\[([^\]]*)\]")
CREATED_NAME_RE = re.compile(r"\b([A-Za-z_]\w*)\s*:")
CREATED_STRING_RE = re.compile(r'\b(?:key|value|as|columnName):\s*"([^"]+)"')
STRING_RE = re.compile(r'"([^"]*)"')
# Columns Flux functions add by themselves: elapsed() writes `elapsed`.
IMPLICIT_COLUMNS = frozenset({"elapsed"})


@dataclass(frozen=True)
class NamesUsed:
    measurements: frozenset[str]
    fields: frozenset[str]
    tag_filters: frozenset[str]  # names compared to a string or passed as tag:
    columns: frozenset[str]  # every other column the query refers to
    created: frozenset[str]  # names the query itself creates


def names_used(flux: str) -> NamesUsed:
    def first(groups: tuple[str | None, ...]) -> str:
        return next(g for g in groups if g is not None)

    measurements = set(MEASUREMENT_RE.findall(flux))
    fields = set(FIELD_RE.findall(flux))
    for *column, members in SET_RE.findall(flux):
        target = {"_measurement": measurements, "_field": fields}.get(first(tuple(column)))
        if target is not None:
            target.update(STRING_RE.findall(members))
    tag_filters = {first(m) for m in TAG_FILTER_RE.findall(flux)} | set(TAG_ARG_RE.findall(flux))
    columns = {first(m) for m in COLUMN_REF_RE.findall(flux)}
    for members in COLUMN_LIST_RE.findall(flux):
        columns.update(STRING_RE.findall(members))
    created = set(CREATED_NAME_RE.findall(flux)) | set(CREATED_STRING_RE.findall(flux)) | IMPLICIT_COLUMNS
    return NamesUsed(
        frozenset(measurements),
        frozenset(fields),
        frozenset(t for t in tag_filters if not t.startswith("_")),
        frozenset(c for c in columns if not c.startswith("_")) - tag_filters,
        frozenset(created),
    )


def schema_problems(query: FluxQuery, schema: Schema) -> list[str]:
    used = names_used(query.text)
    if not used.measurements:
        return [f"{query.where}: names no measurement (filter on r._measurement)"]
    unknown = sorted(used.measurements - set(schema))
    if unknown:
        return [f"{query.where}: unknown measurement(s) {unknown}"]
    fields = {f for m in used.measurements for f in schema[m]["fields"]}
    tags = {t for m in used.measurements for t in schema[m]["tags"]}
    problems = [
        f"{query.where}: field {f!r} is not written to {sorted(used.measurements)}"
        for f in sorted(used.fields - fields)
    ]
    problems += [
        f"{query.where}: tag {t!r} is not on {sorted(used.measurements)}" for t in sorted(used.tag_filters - tags)
    ]
    problems += [
        f"{query.where}: column {c!r} is neither a tag or field of {sorted(used.measurements)} nor made by the query"
        for c in sorted(used.columns - tags - fields - used.created)
    ]
    return problems


# InfluxQL: FROM "measurement", "identifiers" (fields, tags or the query's own
# aliases), /regex/ field selectors, and tags compared with a 'string'.
IQL_FROM_RE = re.compile(r'\bFROM\s+"([^"]+)"')
IQL_IDENT_RE = re.compile(r'"([^"]+)"')
IQL_ALIAS_RE = re.compile(r'\bAS\s+"([^"]+)"')
IQL_REGEX_FIELD_RE = re.compile(r"\((/[^/]+/)\)")
IQL_TAG_COMPARE_RE = re.compile(r'"([^"]+)"\s*(?:=|!=|=~|!~)\s*\'')


def influxql_problems(query: InfluxQLQuery, schema: Schema) -> list[str]:
    measurements = IQL_FROM_RE.findall(query.text)
    if not measurements:
        return [f"{query.where}: names no measurement (FROM \"...\")"]
    unknown = sorted(set(measurements) - set(schema))
    if unknown:
        return [f"{query.where}: unknown measurement(s) {unknown}"]
    fields = {f for m in measurements for f in schema[m]["fields"]}
    tags = {t for m in measurements for t in schema[m]["tags"]}
    created = set(IQL_ALIAS_RE.findall(query.text))
    problems = []
    for name in sorted(set(IQL_IDENT_RE.findall(query.text)) - set(measurements) - created):
        if name not in fields | tags:
            problems.append(f"{query.where}: {name!r} is neither a tag nor a field of {sorted(set(measurements))}")
    for name in sorted(set(IQL_TAG_COMPARE_RE.findall(query.text)) - tags):
        problems.append(f"{query.where}: {name!r} is compared with a string but is not a tag of {sorted(set(measurements))}")
    for pattern in IQL_REGEX_FIELD_RE.findall(query.text):
        regex = re.compile(pattern.strip("/"))
        if not any(regex.search(f) for f in fields):
            problems.append(f"{query.where}: {pattern} selects no field of {sorted(set(measurements))}")
    return problems


def influxql_fields(query: InfluxQLQuery, schema: Schema) -> set[tuple[str, str]]:
    shown = set()
    for m in set(IQL_FROM_RE.findall(query.text)) & set(schema):
        named = set(IQL_IDENT_RE.findall(query.text))
        regexes = [re.compile(p.strip("/")) for p in IQL_REGEX_FIELD_RE.findall(query.text)]
        shown.update((m, f) for f in schema[m]["fields"] if f in named or any(r.search(f) for r in regexes))
    return shown


def shown_fields(schema: Schema) -> set[tuple[str, str]]:
    shown: set[tuple[str, str]] = set()
    for query in dashboard_queries():
        shown |= influxql_fields(query, schema)
    return shown


# --------------------------------------------------------------------------- tests: data model


def test_reference_schema_reads_every_measurement_of_the_data_model() -> None:
    schema = reference_schema()
    assert sorted(schema) == [
        "capacity", "capacity_history", "cost", "current", "energy", "gas", "heat", "p1logger", "power", "voltage",
        "water",
    ]
    assert schema["power"] == {"fields": {"import_w": "float", "export_w": "float", "clock_fallback": "int"},
                               "tags": {"meter", "phase"}}
    assert schema["energy"]["fields"]["active_tariff"] == "int"
    assert sorted(f for f in schema["energy"]["fields"] if f.startswith("import_")) == [
        "import_t1_kwh",
        "import_t2_kwh",
        "import_t3_kwh",
        "import_t4_kwh",
        "import_total_kwh",
    ]
    assert schema["capacity"]["tags"] == {"meter"}
    assert schema["capacity"]["fields"]["peak_warning"] == "int"
    assert schema["capacity_history"] == {"fields": {"history_peak_kw": "float"}, "tags": {"meter", "month"}}
    assert len(schema["capacity"]["fields"]) == 11  # clock_fallback too
    assert schema["gas"]["tags"] == {"meter", "channel", "device"}
    assert schema["p1logger"] == {
        "fields": {
            "telegrams_ok": "int",
            "telegrams_rejected": "int",
            "queue_depth": "int",
            "spool_points": "int",
            "points_dropped": "int",
            "telegrams_dropped": "int",
            "write_latency_ms": "float",
            "last_telegram_age_s": "float",
        },
        "tags": {"instance"},
    }
    assert sum(len(spec["fields"]) for spec in schema.values()) == 54  # 49, and clock_fallback in five measurements


def test_writer_schema_agrees_with_the_data_model() -> None:
    assert emitted_schema() == reference_schema()


def test_every_written_field_is_shown_or_listed_as_unshown() -> None:
    schema = emitted_schema()
    written = {(m, f) for m, spec in schema.items() for f in spec["fields"]}
    shown = shown_fields(schema)
    assert sorted(written - shown - set(INTENTIONALLY_UNSHOWN)) == []
    assert sorted(set(INTENTIONALLY_UNSHOWN) & shown) == [], "listed as unshown but a dashboard shows it"
    assert sorted(set(INTENTIONALLY_UNSHOWN) - written) == [], "listed as unshown but never written"
    assert all(reason.strip() for reason in INTENTIONALLY_UNSHOWN.values())


def test_every_name_a_query_uses_is_written() -> None:
    schema = emitted_schema()
    influxql = dashboard_queries() + alert_queries() + influxql_doc_queries()
    assert len(influxql) == 54 + 6 + 2 + 14
    problems = [p for q in influxql for p in influxql_problems(q, schema)]
    problems += [p for q in doc_queries() for p in schema_problems(q, schema)]
    assert problems == []


@pytest.mark.parametrize(
    ("influxql", "expected"),
    [
        ('SELECT last("import_kw") FROM "power"', ["q: 'import_kw' is neither a tag nor a field of ['power']"]),
        ("SELECT last(\"volume_m3\") FROM \"gas\" WHERE \"phase\" = 'L1'",
         ["q: 'phase' is neither a tag nor a field of ['gas']",
          "q: 'phase' is compared with a string but is not a tag of ['gas']"]),
        ('SELECT last("import_w") FROM "powr"', ["q: unknown measurement(s) ['powr']"]),
        ("SELECT last(import_w) FROM power", ['q: names no measurement (FROM "...")']),
        ("SELECT last(/^import_t[5-9]_kwh$/) FROM \"energy\"", ["q: /^import_t[5-9]_kwh$/ selects no field of ['energy']"]),
        ("SELECT last(\"import_w\") FROM \"power\" WHERE \"import_w\" = 'x'",
         ["q: 'import_w' is compared with a string but is not a tag of ['power']"]),
        ('SELECT sum("d") AS "x" FROM (SELECT last("volume_m3") AS "d" FROM "water")', []),
    ],
)
def test_influxql_name_check_catches_wrong_names(influxql: str, expected: list[str]) -> None:
    assert influxql_problems(InfluxQLQuery("q", influxql), reference_schema()) == expected


P1_LAST_HOUR = 'from(bucket: "p1") |> range(start: -1h) |> '


@pytest.mark.parametrize(
    ("flux", "expected"),
    [
        (
            P1_LAST_HOUR + 'filter(fn: (r) => r._measurement == "power" and r._field == "import_kw")',
            ["q: field 'import_kw' is not written to ['power']"],
        ),
        (
            P1_LAST_HOUR + 'filter(fn: (r) => r._measurement == "gas" and r.phase == "L1")',
            ["q: tag 'phase' is not on ['gas']"],
        ),
        (
            P1_LAST_HOUR + 'filter(fn: (r) => r._measurement == "powr")',
            ["q: unknown measurement(s) ['powr']"],
        ),
        (
            P1_LAST_HOUR + 'filter(fn: (r) => r._measurement == "voltage") |> group(columns: ["phse"])',
            ["q: column 'phse' is neither a tag or field of ['voltage'] nor made by the query"],
        ),
        (
            P1_LAST_HOUR + 'filter(fn: (r) => contains(value: r._field, set: ["import_t1_kwh", "import_t5_kwh"]))',
            ["q: names no measurement (filter on r._measurement)"],
        ),
        (
            P1_LAST_HOUR + 'filter(fn: (r) => r._measurement == "energy")'
            ' |> filter(fn: (r) => contains(value: r._field, set: ["import_t1_kwh", "import_t5_kwh"]))',
            ["q: field 'import_t5_kwh' is not written to ['energy']"],
        ),
    ],
)
def test_schema_check_catches_wrong_names(flux: str, expected: list[str]) -> None:
    assert schema_problems(FluxQuery("q", flux), reference_schema()) == expected


# --------------------------------------------------------------------------- tests: dashboards


def test_dashboards_have_meter_variable_time_range_and_unique_ids() -> None:
    dashboards = load_dashboards()
    assert sorted(p.name for p in dashboards) == [
        "capacity.json",
        "energy.json",
        "gas-water.json",
        "health.json",
        "live.json",
    ]
    uids = [d["uid"] for d in dashboards.values()]
    assert len(set(uids)) == len(uids)
    for path, dashboard in dashboards.items():
        names = {v["name"]: v for v in dashboard["templating"]["list"]}
        assert names["meter"]["type"] == "query", path.name
        assert names["meter"]["query"] == 'SHOW TAG VALUES FROM "power" WITH KEY = "meter"', path.name
        assert set(dashboard["time"]) == {"from", "to"}, path.name
        ids = [p["id"] for p in iter_panels(dashboard["panels"])]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
    health = {v["name"] for v in dashboards[DASHBOARD_DIR / "health.json"]["templating"]["list"]}
    assert "instance" in health


def test_every_data_panel_has_a_unit() -> None:
    missing = []
    for path, dashboard in load_dashboards().items():
        for panel in iter_panels(dashboard["panels"]):
            if panel["type"] in ("text", "row"):
                continue
            if not panel["fieldConfig"]["defaults"].get("unit"):
                missing.append(f"{path.name}: panel {panel['id']} {panel['title']!r}")
            for override in panel["fieldConfig"]["overrides"]:
                for prop in override["properties"]:
                    if prop["id"] == "unit" and not prop["value"]:
                        missing.append(f"{path.name}: panel {panel['id']} override {override['matcher']}")
    assert missing == []


def test_tariff_labels_give_both_national_meanings() -> None:
    meanings = {"1": ("BE day", "NL low"), "2": ("BE night", "NL normal")}
    labels: list[tuple[str, str]] = []
    for dashboard in load_dashboards().values():
        for panel in iter_panels(dashboard["panels"]):
            for override in panel["fieldConfig"]["overrides"]:
                field = re.search(r"(?:import|export)_t([12])_kwh", str(override["matcher"].get("options")))
                for prop in override["properties"]:
                    if field and prop["id"] == "displayName":
                        labels.append((field.group(1), prop["value"]))
            for mapping in panel["fieldConfig"]["defaults"].get("mappings", []):
                if "active_tariff" in " ".join(t["query"] for t in panel.get("targets", [])):
                    labels += [(value, result["text"]) for value, result in mapping["options"].items()]
    # 3 energy panels x 4 tariff names, today's import and export on the live dashboard x 2,
    # and the live tariff mapping for 1 and 2
    assert len(labels) == 18
    for tariff, label in labels:
        assert all(meaning in label for meaning in meanings[tariff]), label


def test_dashboards_typecheck_against_grafana_schema() -> None:
    result = _run_node("check-dashboards.mjs", [str(DASHBOARD_DIR.relative_to(REPO))])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "check-dashboards: 5 dashboard(s), 0 problem(s)"


def _line_of(text: str, needle: str) -> int:
    (index,) = [i for i, line in enumerate(text.splitlines(), start=1) if needle in line]
    return index


def test_dashboard_typecheck_catches_planted_errors(tmp_path: Path) -> None:
    dashboard = json.loads((DASHBOARD_DIR / "live.json").read_text(encoding="utf-8"))
    planted = copy.deepcopy(dashboard)
    stat_a, stat_b, stat_c = planted["panels"][:3]
    assert (stat_a["type"], stat_b["type"], stat_c["type"]) == ("stat", "stat", "stat")
    stat_a["fieldConfig"]["defaults"]["decimals"] = "two"  # wrong type
    stat_b["plantedField"] = True  # unknown panel property
    stat_c["options"]["colorMode"] = "neon"  # not a value of the enum
    path = tmp_path / "planted.json"
    text = json.dumps(planted, indent=2)
    path.write_text(text, encoding="utf-8")

    result = _run_node("check-dashboards.mjs", [str(path)])

    assert result.returncode == 1, result.stdout + result.stderr
    shown = os.path.relpath(path, REPO)
    decimals_line = _line_of(text, '"decimals": "two"')
    field_line = _line_of(text, '"plantedField"')
    enum_line = _line_of(text, '"neon"')
    errors = [line for line in result.stdout.splitlines() if ": error TS" in line]
    enum_error = f"{shown}:{enum_line}: error TS2322: Type '\"neon\"' is not assignable to type "
    assert errors[:2] == [
        f"{shown}:{decimals_line}: error TS2322: Type 'string' is not assignable to type 'number'.",
        f"{shown}:{field_line}: error TS2353: Object literal may only specify known properties, and "
        "'\"plantedField\"' does not exist in type 'PanelOf<\"stat\", Options, NoCustomFieldConfig>'.",
    ]
    assert len(errors) == 3 and errors[2].startswith(enum_error), errors
    # TypeScript lists the union in no fixed order.
    assert set(re.findall(r'"(\w+)"', errors[2][len(enum_error) :])) == {
        "value",
        "background",
        "background_solid",
        "none",
    }
    assert result.stdout.splitlines()[-1] == "check-dashboards: 1 dashboard(s), 3 problem(s)"


# --------------------------------------------------------------------------- tests: Flux


def _check_flux(queries: list[tuple[str, str]]) -> tuple[int, list[dict[str, Any]]]:
    payload = json.dumps([{"name": name, "query": query} for name, query in queries])
    result = _run_node("check-flux.mjs", [], stdin=payload)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


def test_cookbook_has_enough_queries() -> None:
    assert len(doc_queries()) >= 12


def test_every_flux_query_parses_and_typechecks() -> None:
    queries = doc_queries()
    returncode, results = _check_flux([(q.where, q.text) for q in queries])
    assert [r["name"] for r in results] == [q.where for q in queries]
    invalid = [(r["name"], r["errors"]) for r in results if not r["valid"]]
    assert invalid == []
    assert returncode == 0


def test_flux_check_catches_planted_errors() -> None:
    good = next(q for q in doc_queries() if "aggregateWindow(" in q.text).text
    lines = good.splitlines()
    filter_line = next(i for i, line in enumerate(lines, start=1) if "|> filter(" in line)
    window_line = next(i for i, line in enumerate(lines, start=1) if "aggregateWindow(" in line)
    syntax = good.replace("|> filter(", "|> filter((", 1)
    unknown_function = good.replace("aggregateWindow(", "aggregateWindw(", 1)

    returncode, results = _check_flux([("good", good), ("syntax", syntax), ("unknown", unknown_function)])

    assert returncode == 1
    assert [(r["name"], r["valid"]) for r in results] == [("good", True), ("syntax", False), ("unknown", False)]
    assert results[0]["errors"] == []
    assert filter_line in {e["line"] for e in results[1]["errors"]}
    assert {(e["line"], e["message"]) for e in results[2]["errors"]} == {
        (window_line, "undefined identifier aggregateWindw")
    }
