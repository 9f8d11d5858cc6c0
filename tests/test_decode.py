"""Exact decoded values of real telegrams, and the decoder's handling of odd lines.

The expected values in ``tests/expected/<fixture>.json`` were written by hand
from the telegram text (value, unit, capture time converted to UTC, hex
identifiers decoded to text), not produced by running the decoder.  Each file
names the time zone the meter runs in; every field of the telegram is listed,
so a field that appears, disappears or changes type fails the test.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from p1logger import crc
from p1logger.decode import Decoder, HistoryEntry, Reading, Telegram, decode
from p1logger.errors import DecodeError
from p1logger.framing import Frame, Framer
from p1logger.obis import OBIS_TABLE
from p1logger.timestamps import TimestampParser

TESTS = Path(__file__).resolve().parent
FIXTURES = TESTS / "fixtures"
EXPECTED = TESTS / "expected"
DOC = TESTS.parent / "docs" / "telegram-format.md"
EXPECTED_NAMES = sorted(p.stem for p in EXPECTED.glob("*.json"))


def _frame(name: str) -> Frame:
    items = Framer().feed((FIXTURES / f"{name}.txt").read_bytes())
    assert len(items) == 1 and isinstance(items[0], Frame), items
    return items[0]


def _decode_fixture(name: str, zone: str) -> Telegram:
    frame = _frame(name)
    return Decoder(TimestampParser(zone)).decode(frame.body, crc.check(frame.body, frame.crc_text), frame.raw)


def _utc(value: datetime | None) -> str | None:
    if value is None:
        return None
    assert value.utcoffset() == timedelta(0), f"{value!r} is not in UTC"
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def _plain(value: Any) -> Any:
    """A decoded value in the JSON shape of tests/expected."""
    if isinstance(value, datetime):
        return {"utc": _utc(value)}
    if isinstance(value, tuple) and not isinstance(value, Reading):
        if all(isinstance(v, Reading) for v in value) and value:
            return {"readings": [_reading(v) for v in value]}
        assert all(isinstance(v, HistoryEntry) for v in value), value
        return {
            "history": [{"month": e.month, "time": _utc(e.time), "value": e.value, "unit": e.unit} for e in value]
        }
    return value


def _reading(reading: Reading) -> list[Any]:
    return [_plain(reading.value), reading.unit, _utc(reading.time)]


def assert_same(actual: Any, expected: Any, path: str) -> None:
    """Equal values of the same type all the way down (1 is not 1.0, "1" is not 1)."""
    assert type(actual) is type(expected), f"{path}: {actual!r} ({type(actual).__name__}) != {expected!r}"
    if isinstance(expected, dict):
        assert sorted(actual) == sorted(expected), f"{path}: keys {sorted(actual)} != {sorted(expected)}"
        for key in expected:
            assert_same(actual[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert len(actual) == len(expected), f"{path}: {len(actual)} items != {len(expected)}\n{actual!r}"
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_same(a, e, f"{path}[{i}]")
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_every_field_has_its_exact_value(name: str) -> None:
    expected = json.loads((EXPECTED / f"{name}.json").read_text())
    telegram = _decode_fixture(name, expected["zone"])
    assert telegram.invalid == {}
    assert telegram.unknown == {}
    assert_same(telegram.header, expected["header"], "header")
    assert_same(_utc(telegram.timestamp), expected["timestamp"], "timestamp")
    assert_same(telegram.crc_ok, expected["crc_ok"], "crc_ok")
    assert_same(telegram.meter_id, expected["meter_id"], "meter_id")
    assert_same({ch: list(dev) for ch, dev in telegram.mbus_devices().items()}, expected["mbus"], "mbus")
    assert_same({obis: _reading(r) for obis, r in telegram.fields.items()}, expected["fields"], "fields")
    # The order of the telegram is kept, so a dump reads like the meter's output.
    assert list(telegram.fields) == list(expected["fields"])
    assert telegram.raw == (FIXTURES / f"{name}.txt").read_bytes()


def test_expected_values_cover_the_required_telegrams() -> None:
    belgian = {p.stem for p in FIXTURES.glob("*.txt") if p.read_bytes().startswith(b"/FLU5")}
    assert len(belgian) == 17
    assert belgian <= set(EXPECTED_NAMES), belgian - set(EXPECTED_NAMES)
    headers = {json.loads((EXPECTED / f"{n}.json").read_text())["header"][:3] for n in EXPECTED_NAMES}
    # Iskra, Kaifa, Landis+Gyr, Sagemcom (Ene, FLU, Lux, EST, SAG), Kamstrup, EasyMeter, NWA.
    assert {"ISk", "ISK", "KFM", "XMX", "Ene", "FLU", "Lux", "EST", "SAG", "KAM", "ESY", "NWA"} <= headers
    assert len(EXPECTED_NAMES) >= 12


def test_the_same_line_cache_gives_the_same_values_telegram_after_telegram() -> None:
    decoder = Decoder(TimestampParser("Europe/Brussels"))
    for name in ("ndokter_dsmr_parser__fluvius_v171_alt", "slo1958_sl_xj_energymeter__fluvius_3ph_peak_history13"):
        body = _frame(name).body
        first = decoder.decode(body)
        again = decoder.decode(body)
        uncached = decode(body, TimestampParser("Europe/Brussels"))
        assert first.fields == again.fields == uncached.fields
        assert len(first.fields) == len(json.loads((EXPECTED / f"{name}.json").read_text())["fields"])


# --- M-Bus devices ---------------------------------------------------------------------


def test_mbus_readings_carry_their_own_capture_time_not_the_telegram_time() -> None:
    telegram = _decode_fixture("ndokter_dsmr_parser__fluvius_v171_alt", "Europe/Brussels")
    assert _utc(telegram.timestamp) == "2023-11-02T11:15:48Z"
    gas = telegram.fields["0-1:24.2.3"]
    water = telegram.fields["0-2:24.2.1"]
    assert (gas.value, gas.unit, _utc(gas.time)) == (92.287, "m3", "2023-11-02T11:10:02Z")
    assert (water.value, water.unit, _utc(water.time)) == (8.579, "m3", "2023-11-02T11:15:32Z")
    assert telegram.mbus_devices() == {"1": (3, "7FLO2123088027"), "2": (7, "8SET0000961173")}


def test_an_hourly_dsmr22_gas_reading_spans_two_lines_and_keeps_its_hour() -> None:
    telegram = _decode_fixture("nielsbasjes_dsmr_tools__iskra_mt382_dsmr22_a", "Europe/Amsterdam")
    assert telegram.timestamp is None  # DSMR 2.2 has no telegram time
    gas = telegram.fields["0-2:24.3.0"]
    # (211122210000): 22 Nov 2021 21:00 local, winter time, no flag.
    assert (gas.value, gas.unit, _utc(gas.time)) == (13368.864, "m3", "2021-11-22T20:00:00Z")
    assert telegram.mbus_devices() == {"2": (3, "28011008306429013")}
    assert telegram.invalid == {} and telegram.unknown == {}


def test_gas_on_channel_2_and_an_empty_channel() -> None:
    telegram = _decode_fixture("nielsbasjes_dsmr_tools__kaifa_dsmr42_gas_ch2", "Europe/Amsterdam")
    assert telegram.mbus_devices() == {"2": (3, "E0123456789")}
    gas = telegram.fields["0-2:24.2.1"]
    assert (gas.value, gas.unit, _utc(gas.time)) == (2000.671, "m3", "2020-04-10T08:00:00Z")
    assert _utc(telegram.timestamp) == "2020-04-10T08:24:33Z"


def test_an_unconnected_channel_with_an_epoch_placeholder_has_no_time() -> None:
    # 0-1:24.2.1(700101010000W)(00000000): the Unix epoch, read as 2070 before it was a placeholder.
    telegram = _decode_fixture("dsmrreader__iskra_am550e_dsmr50_mbus2", "Europe/Amsterdam")
    assert telegram.fields["0-1:24.2.1"] == Reading(0.0, None, None)
    gas = telegram.fields["0-2:24.2.1"]
    assert (gas.value, gas.unit, _utc(gas.time)) == (241.773, "m3", "2019-11-08T13:55:05Z")
    assert telegram.mbus_devices() == {"1": (3, None), "2": (3, "12345678901234567890123456789012")}


# --- Capacity tariff -------------------------------------------------------------------


def _synthetic(*lines: str) -> str:
    return "\r\n".join(["/TST5\\TEST", "", *lines, "!"]) + "\r\n"


def test_history_entries_belong_to_the_month_before_their_stamp_across_a_year_end() -> None:
    body = _synthetic(
        "0-0:1.0.0(250115120000W)",
        "0-0:98.1.0(3)(1-0:1.6.0)(1-0:1.6.0)(250101000000W)(241227191500W)(07.211*kW)"
        "(250201000000W)(632525252525W)(01.000*kW)(240401000000S)(240331023000S)(02.500*kW)",
    )
    telegram = decode(body, TimestampParser("Europe/Brussels"))
    history = telegram.fields["0-0:98.1.0"]
    assert history.unit == "kW"
    assert history.value == (
        HistoryEntry(datetime.fromisoformat("2024-12-27T18:15:00+00:00"), 7.211, "kW", "2024-12"),
        HistoryEntry(None, 1.0, "kW", "2025-01"),  # placeholder occurrence: no time, value kept
        HistoryEntry(datetime.fromisoformat("2024-03-31T00:30:00+00:00"), 2.5, "kW", "2024-03"),
    )


def test_a_month_peak_with_its_own_time() -> None:
    telegram = decode(_synthetic("1-0:1.6.0(251026023000W)(04.100*kW)"), TimestampParser("Europe/Brussels"))
    # 02:30 winter time on the night the clocks go back: the second 02:30.
    assert telegram.fields["1-0:1.6.0"] == Reading(4.1, "kW", datetime.fromisoformat("2025-10-26T01:30:00+00:00"))


# --- Odd and broken lines --------------------------------------------------------------


def test_a_placeholder_telegram_time_is_none_and_the_rest_still_decodes() -> None:
    telegram = decode(
        _synthetic("0-0:1.0.0(000101010000W)", "1-0:1.8.1(000123.456*kWh)", "0-1:24.2.1(250101120000W)(00012.345*m3)"),
        TimestampParser("Europe/Amsterdam"),
    )
    assert telegram.timestamp is None
    assert telegram.fields["0-0:1.0.0"] == Reading(None)
    assert telegram.fields["1-0:1.8.1"] == Reading(123.456, "kWh")
    assert telegram.fields["0-1:24.2.1"] == Reading(12.345, "m3", datetime.fromisoformat("2025-01-01T11:00:00+00:00"))


def test_bad_values_land_in_invalid_and_unknown_codes_in_unknown_while_the_rest_decodes() -> None:
    body = _synthetic(
        "1-0:1.8.1(12x.5*kWh)",
        "0-0:96.14.0(abc)",
        "1-0:1.8.2(000002.000*kWh",
        "1-0:99.97.0(5)(0-0:96.7.19)(190326095015W)(0000002014*s)",
        "0-0:98.1.0(2)(1-0:1.6.0)(1-0:1.6.0)(250101000000W)(241227191500W)",
        "0-1:24.3.0(090212160000)(00)(60)",
        "1-0:99.99.9(1)",
        "garbage without parentheses",
        "1-0:2.8.1(000003.000*kWh)",
    )
    telegram = decode(body, TimestampParser("Europe/Brussels"))
    assert sorted(telegram.invalid) == ["0-0:96.14.0", "0-0:98.1.0", "0-1:24.3.0", "1-0:1.8.1", "1-0:1.8.2", "1-0:99.97.0"]
    assert "not in parentheses" in telegram.invalid["1-0:1.8.2"]
    assert "announces 5 entries but holds 1" in telegram.invalid["1-0:99.97.0"]
    assert "threes" in telegram.invalid["0-0:98.1.0"]
    assert telegram.unknown == {"1-0:99.99.9": "(1)", "garbage without parentheses": ""}
    assert telegram.fields == {"1-0:2.8.1": Reading(3.0, "kWh")}


def test_an_empty_value_and_an_empty_power_failure_log() -> None:
    telegram = decode(
        _synthetic("1-0:1.7.0()", "0-0:96.14.0()", "1-0:99.97.0()", "0-0:96.13.0()"), TimestampParser("UTC")
    )
    assert telegram.fields == {
        "1-0:1.7.0": Reading(None),
        "0-0:96.14.0": Reading(None),
        "1-0:99.97.0": Reading((), "s"),
        "0-0:96.13.0": Reading(""),
    }


def test_iec_suffixes_and_sub_channels_use_the_base_row() -> None:
    telegram = decode(
        _synthetic("1-0:1.8.0*255(00000012.5*kWh)", "1-1:1.8.1(000001.000*kWh)", "1-1:1.6.0(250315014500W)(15.206*kW)"),
        TimestampParser("Europe/Vilnius"),
    )
    assert telegram.fields == {
        "1-0:1.8.0": Reading(12.5, "kWh"),
        "1-1:1.8.1": Reading(1.0, "kWh"),
        "1-1:1.6.0": Reading(15.206, "kW", datetime.fromisoformat("2025-03-14T23:45:00+00:00")),
    }
    assert telegram.unknown == {} and telegram.invalid == {}


def test_lf_only_line_ends_decode_like_crlf() -> None:
    crlf = _frame("wassasin_dsmr5__sagemcom_t211_dsmr50").body.decode("ascii")
    parser = TimestampParser("Europe/Amsterdam")
    assert decode(crlf.replace("\r\n", "\n"), parser).fields == decode(crlf, parser).fields


def test_text_that_is_not_a_telegram_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="does not start with '/'"):
        decode("1-0:1.8.1(000001.000*kWh)\r\n!\r\n", TimestampParser("UTC"))


# --- The OBIS table in docs/telegram-format.md -----------------------------------------

_DOC_ROW = re.compile(r"^\| `([^`]+)` \| `([a-z0-9_]+)` \| (.*?) \| (.*?) \|$")


def test_the_documented_obis_table_lists_exactly_the_code_table() -> None:
    text = DOC.read_text(encoding="utf-8")
    start, end = text.index("<!-- obis-table:start -->"), text.index("<!-- obis-table:end -->")
    rows = []
    for line in text[start:end].splitlines():
        match = _DOC_ROW.match(line)
        if match:
            obis, name, description, unit = match.groups()
            rows.append((obis, name, description.replace("\\|", "|"), unit or None))
        else:
            assert not line.startswith("| `"), f"unparsable table row: {line!r}"
    assert rows == [(d.obis, d.name, d.description, d.unit) for d in OBIS_TABLE]
