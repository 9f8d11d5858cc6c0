"""``render.JsonLines``, the fast JSON path of ``dump --format json``, writes byte for byte what the
reference ``render.json_line`` (``json.dumps``) writes: on every fixture, on simulated streams where
values change every second, and on the values where orjson and ``json.dumps`` disagree."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from p1logger import render
from p1logger.decode import Decoder, HistoryEntry, Reading, Telegram
from p1logger.reader import TelegramReader
from p1logger.simulate import PROFILES, MeterModel
from p1logger.timestamps import DEFAULT_TIMEZONE, TimestampParser

FIXTURES = Path(__file__).parent / "fixtures"
UTC = timezone.utc
T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def reference(telegram: Telegram, rejected: str | None = None) -> bytes:
    return json.dumps(render.telegram_json(telegram, rejected), separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def telegram(fields: dict[str, Reading], **extra: object) -> Telegram:
    return Telegram("ISK5\\2M550E-1011", T0, True, fields, **extra)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.txt")))
def test_every_fixture_as_the_reference_writes_it(name: str) -> None:
    raw = (FIXTURES / name).read_bytes()
    decoder = Decoder(TimestampParser(DEFAULT_TIMEZONE))
    body = raw[: raw.rfind(b"!") + 1]
    decoded = decoder.decode(body, True, raw)
    lines = render.JsonLines()
    assert lines.line(decoded) == reference(decoded)
    assert lines.line(decoded) == reference(decoded)  # again, from the cache
    assert lines.line(decoded, "crc") == reference(decoded, "crc")
    assert json.loads(lines.line(decoded))["header"] == decoded.header


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_a_simulated_day_part_as_the_reference_writes_it(profile: str) -> None:
    model = MeterModel(PROFILES[profile], T0)
    reader = TelegramReader(TimestampParser(PROFILES[profile].zone))
    stream = b"".join(model.next_telegram() for _ in range(400))
    decoded = [item for item in reader.feed(stream) if isinstance(item, Telegram)]
    assert len(decoded) == 400
    lines = render.JsonLines(cache_fields=64)  # small, so that it is emptied and refilled many times
    for item in decoded:
        assert lines.line(item) == reference(item)
        assert len(lines._fields) <= 64 and len(lines._frames) <= 64


@pytest.mark.parametrize("value", [1e-05, 0.00001234, 1e16, 1.5e22, -2e-7, math.nan, math.inf, -math.inf,
                                   2**64, -(2**63) - 1, 0.0, -0.0, 0.0001, 9999999999999998.0, "é\x00\"\\\n",
                                   None, True, 17])
def test_values_where_orjson_and_json_disagree_are_written_as_json_does(value: object) -> None:
    lines = render.JsonLines()
    fields = {"1-0:1.7.0": Reading(value, "kW"),  # type: ignore[arg-type]
              "0-1:24.2.1": Reading(value, "m3", T0),  # type: ignore[arg-type]
              "0-0:98.1.0": Reading((HistoryEntry(T0, value, "kW", "2024-04"),), "kW")}  # type: ignore[arg-type]
    item = telegram(fields)
    assert lines.line(item) == reference(item)
    assert lines.line(item) == reference(item)


def test_times_that_are_not_utc_are_written_in_utc() -> None:
    lines = render.JsonLines()
    for moment in (datetime(2024, 5, 1, 14, 0, 1, tzinfo=timezone(timedelta(hours=2))),
                   datetime(2024, 5, 1, 14, 0, 1), datetime(2024, 5, 1, 14, 0, 1, 500, tzinfo=UTC)):
        item = Telegram("h", moment, None, {"0-0:1.0.0": Reading(moment), "0-1:24.2.1": Reading(1.5, "m3", moment)})
        assert lines.line(item) == reference(item)
    assert render.iso_utc(datetime(2024, 5, 1, 14, 0, 1, 500, tzinfo=UTC)) == "2024-05-01T14:00:01Z"
    assert render.iso_utc(datetime(2024, 5, 1, 14, 7, 1, tzinfo=timezone(timedelta(hours=2)))) == "2024-05-01T12:07:01Z"
    assert render.iso_utc(datetime(2024, 5, 1, 14, 7, 2)) == "2024-05-01T14:07:02Z"
    assert render.iso_utc(None) is None


def test_one_reading_object_under_two_obis_codes_is_written_under_each() -> None:
    shared = Reading(230.1, "V")
    lines = render.JsonLines()
    first = telegram({"1-0:32.7.0": shared})
    second = telegram({"1-0:52.7.0": shared, "1-0:72.7.0": shared})
    for item in (first, second, first):
        assert lines.line(item) == reference(item)
    assert b'"1-0:52.7.0":{"value":230.1,"unit":"V"},"1-0:72.7.0":{"value":230.1,"unit":"V"}' in lines.line(second)


def test_unknown_invalid_and_rejected_telegrams_take_the_reference_path() -> None:
    lines = render.JsonLines()
    unknown = telegram({"1-0:1.7.0": Reading(1.25, "kW")}, unknown={"1-0:99.99.9": "(5)"})
    invalid = telegram({"1-0:1.7.0": Reading(1.25, "kW")}, invalid={"1-0:2.7.0": "cannot read"})
    for item in (unknown, invalid):
        assert lines.line(item) == reference(item)
    assert lines.line(unknown, "crc") == reference(unknown, "crc")
    assert json.loads(lines.line(unknown))["unknown"] == ["1-0:99.99.9"]


def test_the_header_and_meter_change_with_the_telegram() -> None:
    lines = render.JsonLines()
    a = Telegram("AAA5", T0, True, {"0-0:96.1.1": Reading("meter-a")})
    b = Telegram("BBB5", None, False, {"0-0:96.1.1": Reading("meter-b")})
    c = Telegram("BBB5", T0, None, {})
    for item in (a, b, a, c):
        assert lines.line(item) == reference(item)
    assert json.loads(lines.line(b)) == {"crc_ok": False, "header": "BBB5", "meter": "meter-b", "timestamp": None,
                                         "fields": {"0-0:96.1.1": {"value": "meter-b", "unit": None}}}
