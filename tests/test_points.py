"""Decoded telegrams to line protocol: exact lines, units, types and de-duplication."""

from __future__ import annotations

import dataclasses
import re
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from p1logger.crc import crc16
from p1logger.decode import Telegram
from p1logger.points import SCHEMA, PointBuilder, escape_tag, format_field, health_line
from p1logger.reader import TelegramReader
from p1logger.timestamps import TimestampParser

FIXTURES = Path(__file__).parent / "fixtures"
BRUSSELS = ZoneInfo("Europe/Brussels")
RECEIVED_AT_S = 1_700_000_000.7  # 2023-11-14T22:13:20Z


def telegram(name: str) -> Telegram:
    items = TelegramReader(TimestampParser(BRUSSELS)).feed((FIXTURES / name).read_bytes())
    assert len(items) == 1 and isinstance(items[0], Telegram), items
    return items[0]


def test_belgian_three_phase_with_gas_water_and_peaks() -> None:
    lines = PointBuilder(BRUSSELS).build(telegram("ndokter_dsmr_parser__fluvius_v171.txt"), RECEIVED_AT_S)
    meter = "1SAG3101021605"
    t = 1589284449  # 0-0:1.0.0(200512135409S) = 2020-05-12 11:54:09 UTC
    assert lines == [
        f"energy,meter={meter} import_t1_kwh=0.034,import_t2_kwh=15.758,export_t1_kwh=0.0,export_t2_kwh=0.011,"
        f"import_total_kwh=15.792,export_total_kwh=0.011,active_tariff=1i {t}",
        f"capacity,meter={meter} demand_kw=2.351 {t}",
        f"power,meter={meter},phase=total import_w=0.0,export_w=0.0 {t}",
        f"power,meter={meter},phase=L1 import_w=0.0,export_w=0.0 {t}",
        f"power,meter={meter},phase=L2 import_w=0.0,export_w=0.0 {t}",
        f"power,meter={meter},phase=L3 import_w=0.0,export_w=0.0 {t}",
        f"voltage,meter={meter},phase=L1 voltage_v=234.7 {t}",
        f"voltage,meter={meter},phase=L2 voltage_v=234.7 {t}",
        f"voltage,meter={meter},phase=L3 voltage_v=234.7 {t}",
        f"current,meter={meter},phase=L1 current_a=0.0 {t}",
        f"current,meter={meter},phase=L2 current_a=0.0 {t}",
        f"current,meter={meter},phase=L3 current_a=0.0 {t}",
        # Gas and water carry the M-Bus capture time 200512134558S = 11:45:58 UTC, not the telegram's.
        f"gas,channel=1,device=7FLO2119033733,meter={meter} volume_m3=112.384 1589283958",
        f"water,channel=2,device=8SAG1234567890,meter={meter} volume_m3=872.234 1589283958",
        # This month's peak at its own time (200509134558S), then the history at the occurrence times.
        f"capacity,meter={meter} month_peak_kw=2.589 1589024758",
        f"capacity_history,meter={meter},month=2020-04 history_peak_kw=3.695 1587662738",
        f"capacity_history,meter={meter},month=2020-03 history_peak_kw=5.98 1583407299",
        f"capacity_history,meter={meter},month=2020-02 history_peak_kw=4.318 1581303261",
    ]


def test_readings_with_their_own_time_are_written_only_when_that_time_changes() -> None:
    builder = PointBuilder(BRUSSELS)
    sent = telegram("ndokter_dsmr_parser__fluvius_v171.txt")
    assert sent.timestamp is not None
    first = builder.build(sent, RECEIVED_AT_S)
    again = builder.build(dataclasses.replace(sent, timestamp=sent.timestamp + timedelta(seconds=1)), RECEIVED_AT_S)
    assert len(first) == 18
    # The instantaneous points repeat (a second later); gas, water, the peak and the history do not.
    time_s = int(sent.timestamp.timestamp())
    assert again == [line.replace(f" {time_s}", f" {time_s + 1}") for line in first[:12]]


def test_history_placeholder_time_is_written_at_the_start_of_its_month() -> None:
    lines = PointBuilder(BRUSSELS).build(
        telegram("slo1958_sl_xj_energymeter__fluvius_3ph_peak_history13.txt"), RECEIVED_AT_S)
    history = [line for line in lines if "history_peak_kw" in line]
    assert len(history) == 13
    # (230801000000S)(632525252525W)(00.000*kW): July 2023, time unknown -> 2023-07-01 00:00 CEST.
    assert history[0] == "capacity_history,meter=1SAG3100716957,month=2023-07 history_peak_kw=0.0 1688162400"
    # (250101000000W)(241227191500W)(07.211*kW): December 2024 at 2024-12-27 18:15 UTC.
    assert "capacity_history,meter=1SAG3100716957,month=2024-12 history_peak_kw=7.211 1735323300" in history


def test_austrian_watt_hours_become_kilowatt_hours() -> None:
    lines = PointBuilder(BRUSSELS).build(telegram("ndokter_dsmr_parser__sagemcom_t210_d_r.txt"), RECEIVED_AT_S)
    t = 1665064214  # 221006155014S
    assert lines == [
        f"energy,meter=EST5\\253710000_A import_total_kwh=6545.766,import_t1_kwh=5017.12,import_t2_kwh=1528.646,"
        f"export_total_kwh=0.058,export_t1_kwh=0.0,export_t2_kwh=0.058 {t}",
        f"power,meter=EST5\\253710000_A,phase=total import_w=286.0,export_w=0.0 {t}",
    ]


def test_dsmr22_without_a_clock_uses_the_receive_time_and_legacy_gas() -> None:
    lines = PointBuilder(BRUSSELS).build(telegram("ndokter_dsmr_parser__v2_2.txt"), RECEIVED_AT_S)
    assert lines == [
        "energy,meter=00000000000000 import_t1_kwh=1.001,import_t2_kwh=1.001,export_t1_kwh=1.001,"
        "export_t2_kwh=1.001,import_total_kwh=2.002,export_total_kwh=2.002,active_tariff=1i 1700000000",
        "power,meter=00000000000000,phase=total import_w=1010.0,export_w=0.0 1700000000",
        # 0-1:24.3.0(161107190000) has no DST flag: 19:00 local in November = 18:00 UTC.
        "gas,channel=1,device=000000000000,meter=00000000000000 volume_m3=1.001 1478541600",
    ]


def test_receive_time_option_overrides_the_meter_clock_but_not_capture_times() -> None:
    lines = PointBuilder(BRUSSELS, use_receive_time=True).build(
        telegram("ndokter_dsmr_parser__fluvius_v171.txt"), RECEIVED_AT_S)
    assert lines[0].endswith(" 1700000000")
    assert lines[12].endswith(" 1589283958")  # gas keeps its own capture time


def test_heat_meter_in_gigajoule() -> None:
    lines = PointBuilder(BRUSSELS).build(telegram("ndokter_dsmr_parser__unpadded_crc_warmtelink.txt"), RECEIVED_AT_S)
    assert lines == ["heat,channel=1,device=621848012D2C0B0C,meter=ADC3100000158491 energy_gj=240.86 1771182323"]


def test_gas_on_channel_two_of_a_dutch_meter() -> None:
    lines = PointBuilder(BRUSSELS).build(telegram("nielsbasjes_dsmr_tools__kaifa_dsmr42_gas_ch2.txt"), RECEIVED_AT_S)
    gas = [line for line in lines if line.startswith("gas,")]
    assert len(gas) == 1 and gas[0].startswith("gas,channel=2,")


# A tag value may hold escaped spaces, commas and equals signs ("meter=ADN9\\ 7534").
_LINE = re.compile(r"^(?P<m>[a-z0-9_]+)(?P<tags>(?:,[a-z]+=(?:\\.|[^ \\])+)*) (?P<fields>\S+) (?P<t>\d+)$")


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.txt")))
def test_every_point_from_every_fixture_fits_the_schema(name: str) -> None:
    items = TelegramReader(TimestampParser(BRUSSELS)).feed((FIXTURES / name).read_bytes())
    for item in items:
        if not isinstance(item, Telegram):
            continue
        for line in PointBuilder(BRUSSELS).build(item, RECEIVED_AT_S):
            match = _LINE.match(line)
            assert match, line
            measurement = SCHEMA[match["m"]]
            tags = {pair.split("=", 1)[0] for pair in re.split(r"(?<!\\),", match["tags"])[1:]}
            assert tags <= measurement.tags, line
            for pair in match["fields"].split(","):
                key, value = pair.split("=", 1)
                expected = measurement.fields[key]
                if expected == "int":
                    assert re.fullmatch(r"-?\d+i", value), line
                else:
                    assert re.fullmatch(r"-?\d+\.\d+(e-?\d+)?", value), line


def test_escaping_and_field_formats() -> None:
    assert escape_tag("a b,c=d") == "a\\ b\\,c\\=d"
    assert escape_tag("FLU5\\253769484_A") == "FLU5\\253769484_A"
    assert escape_tag("ends\\") == "ends"
    assert format_field(0.0) == "0.0"
    assert format_field(3) == "3i"
    assert format_field(True) == "1i"
    assert format_field(1e-07) == "1e-07"


def test_health_line_types_and_unknown_fields() -> None:
    line = health_line("pi", 1700000000, telegrams_ok=5, write_latency_ms=12, last_telegram_age_s=0.5)
    assert line == "p1logger,instance=pi telegrams_ok=5i,write_latency_ms=12.0,last_telegram_age_s=0.5 1700000000"
    with pytest.raises(KeyError):
        health_line("pi", 1, not_a_field=1)


def test_hungarian_billing_values_are_not_written_as_monthly_peaks() -> None:
    # E.ON Hungary's 0-0:98.1.0 holds last month's billing registers (energies, then import and export
    # maximum demands), not Belgian monthly peaks: six kW values under one month tag would overwrite
    # each other, and the last (an export demand) would stand as the month's peak.
    budapest = ZoneInfo("Europe/Budapest")
    [item] = TelegramReader(TimestampParser(budapest)).feed(
        (FIXTURES / "ndokter_dsmr_parser__v5_eon_hu.txt").read_bytes())
    assert isinstance(item, Telegram)
    meter, t = "890082200002160", 1690204050  # 0-0:1.0.0(230724150730S)
    assert PointBuilder(budapest).build(item, RECEIVED_AT_S) == [
        f"energy,meter={meter} import_total_kwh=173.64,import_t1_kwh=47.719,import_t2_kwh=125.921,import_t3_kwh=0.0,"
        f"import_t4_kwh=0.0,export_total_kwh=627.177,export_t1_kwh=401.829,export_t2_kwh=225.348,export_t3_kwh=0.0,"
        f"export_t4_kwh=0.0,active_tariff=1i {t}",
        f"voltage,meter={meter},phase=L1 voltage_v=240.4 {t}",
        f"voltage,meter={meter},phase=L2 voltage_v=239.1 {t}",
        f"voltage,meter={meter},phase=L3 voltage_v=241.2 {t}",
        f"current,meter={meter},phase=L1 current_a=3.0 {t}",
        f"current,meter={meter},phase=L2 current_a=4.0 {t}",
        f"current,meter={meter},phase=L3 current_a=3.0 {t}",
        f"power,meter={meter},phase=total import_w=0.0,export_w=2601.0 {t}",
    ]
    billing = item.fields["0-0:98.1.0"].value
    assert isinstance(billing, tuple) and len(billing) == 19
    assert [(e.value, e.unit) for e in billing[-6:]] == [  # type: ignore[union-attr]
        (3.564, "kW"), (2.156, "kW"), (3.564, "kW"), (4.104, "kW"), (4.104, "kW"), (3.4, "kW")]


def test_a_message_padded_with_raw_ff_bytes_reads_as_empty() -> None:
    # E.ON Hungary pads an empty 0-0:96.13.0 with 1024 bytes of 0xFF, inside the CRC: not text.
    data = (FIXTURES / "kazhu_p1monitor__hungary_aux_eon_ff_message.bin").read_bytes()
    assert data.count(b"\xff") == 1024
    [item] = TelegramReader(TimestampParser(ZoneInfo("Europe/Budapest"))).feed(data)
    assert isinstance(item, Telegram) and item.crc_ok is True
    assert item.fields["0-0:96.13.0"].value == ""
    assert item.invalid == {} and item.unknown == {"0-0:96.50.68": "(ON)"}  # an E.ON object, kept raw
    assert not any(line.startswith("capacity_history") for line in PointBuilder(BRUSSELS).build(item, RECEIVED_AT_S))


def test_a_peak_history_is_read_from_the_columns_its_header_names() -> None:
    # e-MUCS H (Landis+Gyr E660, firmware 50250): (0-0:0.1.0)(1-0:1.6.0)(1-0:1.6.0)(1-0:2.6.0)(1-0:2.6.0),
    # so each row holds the billing period counter (15) before the import peak; 1.452 kW at
    # 2025-06-04 08:45 CEST is June's peak, not 15.
    lines = PointBuilder(BRUSSELS).build(telegram("mhendriks_dsmr3lib__landisgyr_e660_fluvius_50250_98_1_1.txt"),
                                         RECEIVED_AT_S)
    assert [line for line in lines if line.startswith("capacity_history")] == [
        "capacity_history,meter=68682514,month=2025-06 history_peak_kw=1.452 1749019500"]


def test_energy_counted_on_electricity_channel_1_is_written() -> None:
    # A Landis+Gyr E360 in a heat pump counts on 1-1:1.8.0, with no 1-0 object of the same kind.
    lines = PointBuilder(BRUSSELS).build(telegram("mhendriks_dsmr3lib__landisgyr_e360_weheat_1_1_channel.txt"),
                                         RECEIVED_AT_S)
    assert lines[0] == "energy,meter=LGF5E360 import_total_kwh=1.021,export_total_kwh=0.0 1761671981"


def test_a_channel_0_object_wins_over_its_channel_1_twin() -> None:
    body = (b"/TST5\\\\test\r\n\r\n0-0:1.0.0(250101120000W)\r\n1-0:1.8.0(000010.000*kWh)\r\n"
            b"1-1:1.8.0(000099.000*kWh)\r\n!")
    data = body + b"%04X\r\n" % crc16(body)
    [item] = TelegramReader(TimestampParser(BRUSSELS)).feed(data)
    assert isinstance(item, Telegram)
    assert PointBuilder(BRUSSELS).build(item, RECEIVED_AT_S) == [
        "energy,meter=TST5\\\\test import_total_kwh=10.0 1735729200"]
