"""The written schema suits InfluxDB 3.

InfluxDB 3 (Core and Enterprise) keeps a table per measurement whose tag
columns are fixed by its first write: a later point that brings a tag the
table does not have is refused, and a name cannot be a tag and a field of one
table (docs.influxdata.com, "Use compatibility APIs to write data"; InfluxDB
pull request 25596, "Deny extra tags on write APIs"). So every point of a
measurement must carry exactly the same tags, none of them empty (an empty
tag is left out of line protocol, which makes a point without it), and no
tag may share a name with a field.

Checked on p1logger.points.SCHEMA, on every line the writer makes from every
fixture telegram (points, capacity figures, health), and on what `p1logger
run` stored in influxd for a simulated week.
"""

from __future__ import annotations

import re
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from helpers.influx_servers import InfluxServer
from helpers.stored_week import Week, stored_week

from p1logger.capacity import CapacityTracker
from p1logger.decode import Telegram
from p1logger.points import SCHEMA, PointBuilder, health_line
from p1logger.reader import TelegramReader
from p1logger.timestamps import TimestampParser

FIXTURES = Path(__file__).parent / "fixtures"
BRUSSELS = ZoneInfo("Europe/Brussels")
# measurement, tags (escaped separators allowed), fields, time
_LINE_RE = re.compile(r"^(?P<m>[^, ]+)(?P<tags>(?:,(?:[^=,\\ ]+)=(?:\\.|[^,\\ ])+)*) (?P<fields>\S+) (?P<t>\d+)$")
_TAG_RE = re.compile(r",([^=,\\ ]+)=((?:\\.|[^,\\ ])+)")


def schema_problems(lines: list[str]) -> list[str]:
    """What InfluxDB 3 would refuse or mis-store in these lines, given SCHEMA."""
    problems = []
    for line in lines:
        match = _LINE_RE.match(line)
        if match is None:
            problems.append(f"not line protocol: {line}")
            continue
        spec = SCHEMA.get(match["m"])
        if spec is None:
            problems.append(f"measurement not in SCHEMA: {line}")
            continue
        tags = dict(_TAG_RE.findall(match["tags"]))
        fields = {pair.split("=", 1)[0] for pair in match["fields"].split(",")}
        if set(tags) != spec.tags:
            problems.append(f"tags {sorted(tags)} instead of {sorted(spec.tags)}: {line}")
        if any(not value for value in tags.values()):
            problems.append(f"empty tag: {line}")
        if fields & set(tags):
            problems.append(f"{sorted(fields & set(tags))} both tag and field: {line}")
        if not fields <= set(spec.fields):
            problems.append(f"fields {sorted(fields - set(spec.fields))} not in SCHEMA: {line}")
    return problems


@pytest.fixture(scope="module")
def week(influxd: InfluxServer, tmp_path_factory: pytest.TempPathFactory) -> Week:
    return stored_week(influxd, tmp_path_factory)


def test_no_name_is_both_a_tag_and_a_field() -> None:
    clashes = {m: sorted(spec.tags & set(spec.fields)) for m, spec in SCHEMA.items() if spec.tags & set(spec.fields)}
    assert clashes == {}
    # InfluxDB 3 adds a `time` column to every table; a tag or field of that name would collide.
    assert all("time" not in spec.tags and "time" not in spec.fields for spec in SCHEMA.values())


def _fixture_lines(name: str) -> list[str]:
    lines: list[str] = []
    points = PointBuilder(BRUSSELS)
    capacity = CapacityTracker(BRUSSELS)
    for item in TelegramReader(TimestampParser(BRUSSELS)).feed((FIXTURES / name).read_bytes()):
        if isinstance(item, Telegram):
            lines += points.build(item, 1_700_000_000.5)
            lines += capacity.build(item, 1_700_000_000.5)
    return lines


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.txt")))
def test_every_point_from_every_fixture_carries_its_measurements_fixed_tags(name: str) -> None:
    lines = _fixture_lines(name)
    assert schema_problems(lines) == []


def test_the_fixtures_cover_every_measurement_and_tag() -> None:
    seen: dict[str, set[str]] = {}
    for path in sorted(FIXTURES.glob("*.txt")):
        for line in _fixture_lines(path.name):
            match = _LINE_RE.match(line)
            assert match is not None
            seen.setdefault(match["m"], set()).update(dict(_TAG_RE.findall(match["tags"])))
    health = health_line("pi", 0, telegrams_ok=1)
    assert schema_problems([health]) == []
    seen["p1logger"] = {"instance"}
    # A single telegram completes no quarter-hour, so no fixture makes `cost` points: the stored week has them.
    assert seen == {m: set(spec.tags) for m, spec in SCHEMA.items() if m != "cost"}


def test_the_check_finds_what_influxdb3_would_refuse() -> None:
    assert schema_problems(
        [
            "power,meter=M import_w=1.0 1",
            "gas,channel=1,meter=M volume_m3=1.0 1",
            "power,meter=M,phase=L1,import_w=2 import_w=1.0 1",
            "capacity,meter=M history_peak_kw=1.0 1",
        ]
    ) == [
        "tags ['meter'] instead of ['meter', 'phase']: power,meter=M import_w=1.0 1",
        "tags ['channel', 'meter'] instead of ['channel', 'device', 'meter']: gas,channel=1,meter=M volume_m3=1.0 1",
        "tags ['import_w', 'meter', 'phase'] instead of ['meter', 'phase']: power,meter=M,phase=L1,import_w=2 import_w=1.0 1",
        "['import_w'] both tag and field: power,meter=M,phase=L1,import_w=2 import_w=1.0 1",
        "fields ['history_peak_kw'] not in SCHEMA: capacity,meter=M history_peak_kw=1.0 1",
    ]


def test_the_stored_week_has_fixed_tags_and_no_name_clash(week: Week) -> None:
    tag_keys = {s["name"]: {row[0] for row in s["values"]} for s in week.series("SHOW TAG KEYS")}
    field_keys = {s["name"]: {row[0] for row in s["values"]} for s in week.series("SHOW FIELD KEYS")}
    assert set(tag_keys) == set(field_keys) == set(SCHEMA)
    for measurement, tags in tag_keys.items():
        assert tags == SCHEMA[measurement].tags, measurement
        assert not tags & field_keys[measurement], measurement
    # Every series key names every tag of its measurement.
    for row in week.series("SHOW SERIES")[0]["values"]:
        key = row[0]
        measurement = key.split(",", 1)[0]
        tags = dict(_TAG_RE.findall(key[len(measurement) :]))
        assert set(tags) == SCHEMA[measurement].tags and all(tags.values()), key
