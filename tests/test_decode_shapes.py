"""Issue #14: value groups read by their shape, newer meters' objects, and no silent changes.

Each case here failed on the decoder before issue #14 (the comment says what it did).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p1logger.decode import CAPTURE_CLOCK_OBIS, Decoder, HistoryEntry, Reading, decode
from p1logger.points import PointBuilder
from p1logger.render import json_line, table
from p1logger.timestamps import TimestampParser

UTC = timezone.utc
BRUSSELS = TimestampParser("Europe/Brussels")


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _telegram(*lines: str) -> str:
    return "\r\n".join(["/TST5\\SHAPES", "", *lines, "!"]) + "\r\n"


def _one(line: str, parser: TimestampParser = BRUSSELS) -> Reading:
    telegram = decode(_telegram(line), parser)
    assert telegram.invalid == {} and telegram.unknown == {}, (telegram.invalid, telegram.unknown)
    (reading,) = telegram.fields.values()
    return reading


# --------------------------------------------------------------------------- value and time in either order


@pytest.mark.parametrize(
    "line",
    [
        "1-0:1.6.0(08.796*kW)(260102010000)",  # the 2026 Walloon Iskra: value first, no flag
        "1-0:1.6.0(260102010000)(08.796*kW)",
        "1-0:1.6.0(08.796*kW)(260102010000W)",
        "1-0:1.6.0(260102010000W)(08.796*kW)",
    ],
)
def test_the_month_peak_reads_the_same_in_both_orders(line: str) -> None:
    # Before: the value-first form decoded as the value 260102010000.0 with no unit.
    # 2 January 2026 01:00 in Brussels is winter time, 00:00 UTC.
    assert _one(line) == Reading(8.796, "kW", _utc("2026-01-02T00:00:00"))


@pytest.mark.parametrize("obis", ["0-1:24.2.1", "0-2:24.2.3", "1-0:2.6.0"])
@pytest.mark.parametrize("flag", ["", "S"])
def test_mbus_readings_and_the_export_peak_read_the_same_in_both_orders(obis: str, flag: str) -> None:
    # 15 July 2025 10:05 summer time = 08:05 UTC, flagged or not.
    unit = "kW" if obis == "1-0:2.6.0" else "m3"
    expected = Reading(1234.567, unit, _utc("2025-07-15T08:05:00"))
    assert _one(f"{obis}(250715100500{flag})(01234.567*{unit})") == expected
    assert _one(f"{obis}(01234.567*{unit})(250715100500{flag})") == expected


def test_the_power_failure_log_reads_each_entry_in_either_order() -> None:
    # Before: a duration before its time was an invalid line.
    reading = _one("1-0:99.97.0(2)(0-0:96.7.19)(0000002014*s)(190326095015W)(190327100000W)(0000000042*s)")
    assert reading == Reading(
        (
            HistoryEntry(_utc("2019-03-26T08:50:15"), 2014.0, "s"),
            HistoryEntry(_utc("2019-03-27T09:00:00"), 42.0, "s"),
        ),
        "s",
    )


@pytest.mark.parametrize(
    "entry",
    [
        "(250101000000W)(241227191500W)(07.211*kW)",
        "(250101000000W)(07.211*kW)(241227191500W)",
        "(250101000000)(241227191500)(07.211*kW)",
        "(250101000000)(07.211*kW)(241227191500)",
    ],
)
def test_the_peak_history_reads_each_entry_by_shape(entry: str) -> None:
    reading = _one(f"0-0:98.1.0(1)(1-0:1.6.0)(1-0:1.6.0){entry}")
    assert reading == Reading((HistoryEntry(_utc("2024-12-27T18:15:00"), 7.211, "kW", "2024-12"),), "kW")


# Around the four DST transitions of 2025 and 2026 in Brussels, and an ordinary day.
_EDGES = [_utc(t) for t in ("2025-03-30T01:00:00", "2025-10-26T01:00:00", "2026-03-29T01:00:00",
                            "2026-10-25T01:00:00", "2026-01-15T12:00:00")]
_ZONE = ZoneInfo("Europe/Brussels")


@st.composite
def _moments(draw: st.DrawFn) -> datetime:
    edge = draw(st.sampled_from(_EDGES))
    return edge + timedelta(seconds=draw(st.integers(-3 * 3600, 3 * 3600)))


@settings(max_examples=300, deadline=None)
@given(
    moment=_moments(),
    value=st.decimals(min_value=0, max_value=99, places=3),
    value_first=st.booleans(),
    flagged=st.booleans(),
    obis=st.sampled_from(["1-0:1.6.0", "0-1:24.2.1", "1-0:2.6.0"]),
)
def test_group_order_and_dst_flags_across_transitions(
    moment: datetime, value: object, value_first: bool, flagged: bool, obis: str
) -> None:
    local = moment.astimezone(_ZONE)
    stamp = local.strftime("%y%m%d%H%M%S")
    repeated = local.replace(fold=1 - local.fold).utcoffset() != local.utcoffset()
    if flagged:
        stamp += "S" if local.dst() else "W"
        expected_time = moment
    else:
        # Without a flag the repeated autumn hour is read as its first occurrence (summer time).
        expected_time = local.replace(tzinfo=None).replace(tzinfo=_ZONE, fold=0).astimezone(UTC)
        assert expected_time == moment or (repeated and expected_time == moment - timedelta(hours=1))
    number = f"{float(str(value)):06.3f}*kW"
    groups = f"({number})({stamp})" if value_first else f"({stamp})({number})"
    reading = Decoder(BRUSSELS).decode(_telegram(f"{obis}{groups}")).fields[obis]
    assert reading == Reading(float(str(value)), "kW", expected_time)


# --------------------------------------------------------------------------- placeholder dates


@pytest.mark.parametrize(
    "stamp",
    ["000101010000W", "000101000000W", "000101000001W", "000101000000S", "632525252525W", "35255255255255255S",
     "000000000000W", "700101010000W", "000101010000"],
)
def test_every_placeholder_spelling_is_no_time_in_every_object(stamp: str) -> None:
    # Before: 000101000000W and 000101000001W became readings at 1999-12-31T23:00Z.
    telegram = decode(
        _telegram(
            f"0-0:1.0.0({stamp})",
            f"1-0:1.6.0({stamp})(01.000*kW)",
            f"0-1:24.2.1({stamp})(00001.000*m3)",
            f"1-0:99.97.0(1)(0-0:96.7.19)({stamp})(0000000010*s)",
            f"0-0:98.1.0(1)(1-0:1.6.0)(1-0:1.6.0)(250101000000W)({stamp})(02.000*kW)",
        ),
        BRUSSELS,
    )
    assert telegram.invalid == {}
    assert telegram.timestamp is None
    assert telegram.fields["0-0:1.0.0"] == Reading(None)
    assert telegram.fields["1-0:1.6.0"] == Reading(1.0, "kW", None)
    assert telegram.fields["0-1:24.2.1"] == Reading(1.0, "m3", None)
    assert telegram.fields["1-0:99.97.0"] == Reading((HistoryEntry(None, 10.0, "s"),), "s")
    assert telegram.fields["0-0:98.1.0"] == Reading((HistoryEntry(None, 2.0, "kW", "2024-12"),), "kW")


# --------------------------------------------------------------------------- capture objects and new registers

EMUCS_CAPTURE = (
    "0-0:98.1.1(2)(1-0:1.6.0)(1-0:1.6.0)(1-0:2.6.0)(1-0:2.6.0)"
    "(260101000000W)(251215184500W)(05.123*kW)(251201121500W)(03.000*kW)"
    "(251201000000W)(251115184500W)(04.123*kW)(251101121500W)(02.000*kW)"
)


def test_a_multi_column_capture_object_keeps_every_column() -> None:
    # Before: 0-0:98.1.1 was an unknown line; a 0-0:98.1.0 with four columns was invalid, its text cut off.
    for line in (EMUCS_CAPTURE, EMUCS_CAPTURE.replace("0-0:98.1.1", "0-0:98.1.0")):
        reading = _one(line)
        first = reading.value[0]  # type: ignore[index]
        assert isinstance(first, HistoryEntry)
        assert (first.value, first.unit, first.month) == (5.123, "kW", "2025-12")
        assert first.columns == (
            (CAPTURE_CLOCK_OBIS, Reading(None, None, _utc("2025-12-31T23:00:00"))),
            ("1-0:1.6.0", Reading(None, None, _utc("2025-12-15T17:45:00"))),
            ("1-0:1.6.0", Reading(5.123, "kW")),
            ("1-0:2.6.0", Reading(None, None, _utc("2025-12-01T11:15:00"))),
            ("1-0:2.6.0", Reading(3.0, "kW")),
        )
        assert len(reading.value) == 2  # type: ignore[arg-type]
        assert reading.value[1].columns[4] == ("1-0:2.6.0", Reading(2.0, "kW"))  # type: ignore[index,union-attr]
    # The peak history proper still gives the import peak and its time.
    history = _one(EMUCS_CAPTURE.replace("0-0:98.1.1", "0-0:98.1.0")).value
    assert [(e.time, e.value, e.month) for e in history] == [  # type: ignore[union-attr]
        (_utc("2025-12-15T17:45:00"), 5.123, "2025-12"),
        (_utc("2025-11-15T17:45:00"), 4.123, "2025-11"),
    ]


def test_a_capture_object_that_does_not_add_up_is_invalid_with_its_whole_text() -> None:
    line = EMUCS_CAPTURE.removesuffix("(02.000*kW)")  # the last entry one column short
    telegram = decode(_telegram(line), BRUSSELS)
    why = telegram.invalid["0-0:98.1.1"]
    assert line[len("0-0:98.1.1"):] in why  # the whole raw text, not its first 60 characters
    assert "groups of 5" in why


def test_new_energy_registers_and_export_demand_are_decoded_and_stored() -> None:
    # Before: 1-0:1.8.5, 1-0:2.8.5, 1-0:2.4.0 and 1-0:2.6.0 were unknown lines and stored nowhere.
    body = _telegram(
        "0-0:96.1.1(4D455445525F31)",
        "0-0:1.0.0(260115120000W)",
        "1-0:1.8.3(000100.001*kWh)", "1-0:1.8.4(000200.002*kWh)", "1-0:1.8.5(000300.003*kWh)",
        "1-0:2.8.3(000010.001*kWh)", "1-0:2.8.4(000020.002*kWh)", "1-0:2.8.5(000030.003*kWh)",
        "1-0:2.4.0(01.234*kW)",
        "1-0:2.6.0(03.456*kW)(260110131500)",
    )
    telegram = decode(body, BRUSSELS)
    assert telegram.unknown == {} and telegram.invalid == {}
    assert telegram.fields["1-0:1.8.5"] == Reading(300.003, "kWh")
    assert telegram.fields["1-0:2.8.5"] == Reading(30.003, "kWh")
    assert telegram.fields["1-0:2.4.0"] == Reading(1.234, "kW")
    assert telegram.fields["1-0:2.6.0"] == Reading(3.456, "kW", _utc("2026-01-10T12:15:00"))
    lines = PointBuilder(ZoneInfo("Europe/Brussels")).build(telegram, 0.0)
    time_s = int(_utc("2026-01-15T11:00:00").timestamp())
    peak_s = int(_utc("2026-01-10T12:15:00").timestamp())
    assert lines == [
        "energy,meter=METER_1 import_t3_kwh=100.001,import_t4_kwh=200.002,import_t5_kwh=300.003,"
        "export_t3_kwh=10.001,export_t4_kwh=20.002,export_t5_kwh=30.003,import_total_kwh=600.006,"
        f"export_total_kwh=60.006 {time_s}",
        f"capacity,meter=METER_1 export_demand_kw=1.234 {time_s}",
        f"capacity,meter=METER_1 export_month_peak_kw=3.456 {peak_s}",
    ]


# --------------------------------------------------------------------------- Nordic, Baltic, business and heat meters


def test_nordic_values_without_a_star_and_their_units_are_converted_when_stored() -> None:
    # Before: "(00006678.394kWh)" was invalid; Wh, MWh, kV and kA were left out of the points.
    body = _telegram(
        "0-0:1.0.0(260115120000W)",
        "1-0:1.8.0(00006678.394kWh)",
        "1-0:2.8.0(00001234567*Wh)",
        "1-0:1.8.1(0000012.5MWh)",
        "1-0:1.7.0(1727*W)",
        "1-0:32.7.0(0000.242*kV)",
        "1-0:31.7.0(0000.005*kA)",
        "1-0:32.24.0(0000.237*kV)",
        "1-0:15.7.0(00000003.262*kW)",
        "1-0:14.7.0(0000.049*kHz)",
    )
    telegram = decode(body, TimestampParser("Europe/Vilnius"))
    assert telegram.unknown == {} and telegram.invalid == {}
    assert telegram.fields["1-0:1.8.0"] == Reading(6678.394, "kWh")
    assert telegram.fields["1-0:2.8.0"] == Reading(1234567.0, "Wh")
    assert telegram.fields["1-0:1.8.1"] == Reading(12.5, "MWh")
    assert telegram.fields["1-0:32.24.0"] == Reading(0.237, "kV")
    time_s = int(_utc("2026-01-15T10:00:00").timestamp())
    lines = PointBuilder(ZoneInfo("Europe/Vilnius")).build(telegram, 0.0)
    assert lines == [
        f"energy,meter=TST5\\SHAPES import_total_kwh=6678.394,export_total_kwh=1234.567,import_t1_kwh=12500.0 {time_s}",
        f"power,meter=TST5\\SHAPES,phase=total import_w=1727.0 {time_s}",
        f"voltage,meter=TST5\\SHAPES,phase=L1 voltage_v=242.0 {time_s}",
        f"current,meter=TST5\\SHAPES,phase=L1 current_a=5.0 {time_s}",
    ]


def test_a_business_meter_time_as_a_dlms_octet_string() -> None:
    # Before: null, not reported invalid, and the telegram lost its time.
    # 07EA = 2026, 0B = November, 1E = 30th, 01 = Monday, 0E:1E:00 = 14:30:00, FF = no hundredths,
    # 8000 = no deviation, 00 = clock status without the DST bit: winter time, 13:30 UTC.
    telegram = decode(_telegram("0-0:1.0.0(07EA0B1E010E1E00FF800000)"), BRUSSELS)
    assert telegram.timestamp == _utc("2026-11-30T13:30:00")
    # Summer: 2026-07-01 12:00 with the DST bit (0x80) is 10:00 UTC; a "not specified" year is no time.
    assert decode(_telegram("0-0:1.0.0(07EA0701030C0000FF800080)"), BRUSSELS).timestamp == _utc("2026-07-01T10:00:00")
    assert decode(_telegram("0-0:1.0.0(FFFFFFFFFFFFFFFFFF8000FF)"), BRUSSELS).fields["0-0:1.0.0"] == Reading(None)


@pytest.mark.parametrize("text", ["07EA0B1E010E1E00FF8000", "NOT-A-TIME", "2601150000W", "07EA0D1E010E1E00FF800000"])
def test_an_unreadable_telegram_time_is_reported_invalid_with_its_raw_text(text: str) -> None:
    telegram = decode(_telegram(f"0-0:1.0.0({text})", "1-0:1.8.1(000001.000*kWh)"), BRUSSELS)
    assert telegram.timestamp is None
    assert text in telegram.invalid["0-0:1.0.0"]
    assert telegram.fields == {"1-0:1.8.1": Reading(1.0, "kWh")}


@pytest.mark.parametrize(
    ("device_type", "value", "measurement", "stored"),
    [("004", "(00012.345*GJ)", "heat", "12.345"), ("012", "(00012.345GJ)", "heat", "12.345"),
     ("004", "(0001.5*MWh)", "heat", "5.4"), ("010", "(00001.250*GJ)", "cooling", "1.25"),
     ("011", "(01250*MJ)", "cooling", "1.25")],
)
def test_heat_and_cooling_meters_on_mbus_are_stored_in_gj(device_type: str, value: str, measurement: str,
                                                          stored: str) -> None:
    body = _telegram("0-0:1.0.0(260115120000W)", f"0-1:24.1.0({device_type})", "0-1:96.1.0(3132333435)",
                     f"0-1:24.2.1(260115115500W){value}")
    telegram = decode(body, BRUSSELS)
    assert telegram.invalid == {}
    capture_s = int(_utc("2026-01-15T10:55:00").timestamp())
    lines = PointBuilder(ZoneInfo("Europe/Brussels")).build(telegram, 0.0)
    assert lines == [f"{measurement},channel=1,device=12345,meter=TST5\\SHAPES energy_gj={stored} {capture_s}"]


# --------------------------------------------------------------------------- no silent changes


def test_an_unreadable_value_keeps_its_whole_raw_text() -> None:
    long_text = "(" + "12x.5" * 30 + "*kWh)"
    telegram = decode(_telegram(f"1-0:1.8.1{long_text}", f"1-0:1.8.2{long_text[:-1]}"), BRUSSELS)
    assert long_text in telegram.invalid["1-0:1.8.1"]
    assert long_text[:-1] in telegram.invalid["1-0:1.8.2"]


def test_unknown_lines_with_a_clear_shape_are_read_and_shown() -> None:
    body = _telegram(
        "0-0:1.0.0(260115120000W)",
        "1-0:99.98.0(260101120000W)(12.5*kWh)",
        "1-0:77.7.0(1.5kW)",
        "1-0:88.8.8(ABC)(DEF)",
        "1-0:66.6.0(0042)",
    )
    decoder = Decoder(BRUSSELS)
    for _ in range(2):  # once decoded, once from the line cache
        telegram = decoder.decode(body)
        assert telegram.unknown == {"1-0:99.98.0": "(260101120000W)(12.5*kWh)", "1-0:77.7.0": "(1.5kW)",
                                    "1-0:88.8.8": "(ABC)(DEF)", "1-0:66.6.0": "(0042)"}
        assert telegram.unknown_values == {
            "1-0:99.98.0": Reading(12.5, "kWh", _utc("2026-01-01T11:00:00")),
            "1-0:77.7.0": Reading(1.5, "kW"),
            "1-0:66.6.0": Reading(42),
        }
    document = json.loads(json_line(telegram))
    assert document["fields"]["1-0:99.98.0"] == {"value": 12.5, "unit": "kWh", "unknown": True,
                                                 "raw_text": "(260101120000W)(12.5*kWh)",
                                                 "time": "2026-01-01T11:00:00Z"}
    assert document["fields"]["1-0:88.8.8"] == {"value": "(ABC)(DEF)", "unit": None, "raw": True}
    text = table(telegram, "BE")
    assert "1-0:99.98.0  (unknown, read by shape)" in text
    assert "12.5 kWh  at 2026-01-01 11:00:00 UTC   raw (260101120000W)(12.5*kWh)" in text
