"""The MQTT state message: exact payloads, units shared with the points, interval averaging."""

from __future__ import annotations

import json
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from p1logger.decode import Telegram
from p1logger.outputs.mqtt import state
from p1logger.points import PointBuilder
from p1logger.reader import TelegramReader
from p1logger.timestamps import TimestampParser

FIXTURES = Path(__file__).parent / "fixtures"
BRUSSELS = ZoneInfo("Europe/Brussels")


def telegram(name: str) -> Telegram:
    items = TelegramReader(TimestampParser(BRUSSELS)).feed((FIXTURES / name).read_bytes())
    assert len(items) == 1 and isinstance(items[0], Telegram), items
    return items[0]


def all_telegrams() -> list[Telegram]:
    found = []
    for path in sorted(FIXTURES.glob("*.txt")):
        for item in TelegramReader(TimestampParser(BRUSSELS)).feed(path.read_bytes()):
            if isinstance(item, Telegram):
                found.append(item)
    return found


def test_belgian_three_phase_state_with_gas_water_and_figures() -> None:
    t = telegram("ndokter_dsmr_parser__fluvius_v171.txt")
    figures = {
        "capacity": {"meter": "1SAG3101021605", "time_s": 1589284449, "demand_kw": 2.4, "month_peak_kw": 2.589, "rolling_mean_kw": 4.646, "projected_kw": 2.5,
                     "peak_warning": False, "shed_kw": 0.0},
        "cost": {"today_eur": 1.25, "unknown_figure": None},
    }
    payload = state.encode(state.build_state(t, 1589284449, figures))
    assert payload == (
        b'{"breaker_state":1,"capacity_demand_kw":2.4,"capacity_month_peak_kw":2.589,"capacity_peak_warning":false,'
        b'"capacity_projected_kw":2.5,"capacity_rolling_mean_kw":4.646,"capacity_shed_kw":0.0,"cost_today_eur":1.25,'
        b'"current_l1_a":0.0,"current_l2_a":0.0,"current_l3_a":0.0,"emucs_version":"50217",'
        b'"energy_export_t1_kwh":0.0,"energy_export_t2_kwh":0.011,"energy_export_total_kwh":0.011,'
        b'"energy_import_t1_kwh":0.034,"energy_import_t2_kwh":15.758,"energy_import_total_kwh":15.792,'
        b'"fuse_threshold_l1_a":999.0,"gas_time":"2020-05-12T11:45:58+00:00","gas_volume_m3":112.384,'
        b'"limiter_threshold_kw":999.9,"meter":"1SAG3101021605",'
        b'"power_export_l1_w":0.0,"power_export_l2_w":0.0,"power_export_l3_w":0.0,"power_export_w":0.0,'
        b'"power_import_l1_w":0.0,"power_import_l2_w":0.0,"power_import_l3_w":0.0,"power_import_w":0.0,'
        b'"tariff":1,"time":"2020-05-12T11:54:09+00:00",'
        b'"voltage_l1_v":234.7,"voltage_l2_v":234.7,"voltage_l3_v":234.7,'
        b'"water_time":"2020-05-12T11:45:58+00:00","water_volume_m3":872.234}'
    )


def test_dutch_dsmr42_state_with_counters_and_gas_on_channel_2() -> None:
    t = telegram("nielsbasjes_dsmr_tools__kaifa_dsmr42_gas_ch2.txt")
    assert state.build_state(t, 1586507073) == {
        "meter": "E0123456789",
        "time": "2020-04-10T08:24:33+00:00",
        "dsmr_version": "42",
        "power_import_w": 105.0,  # 0.105 kW
        "power_export_w": 0.0,
        "power_failures": 0,
        "long_power_failures": 0,
        "voltage_sags_l1": 0,
        "voltage_swells_l1": 0,
        "current_l1_a": 1.0,
        "power_import_l1_w": 105.0,
        "power_export_l1_w": 0.0,
        "energy_import_t1_kwh": 3000.497,
        "energy_import_t2_kwh": 1000.248,
        "energy_export_t1_kwh": 1000.458,
        "energy_export_t2_kwh": 3000.394,
        "energy_import_total_kwh": 4000.745,
        "energy_export_total_kwh": 4000.852,
        "tariff": 2,
        "gas_volume_m3": 2000.671,
        "gas_time": "2020-04-10T08:00:00+00:00",
    }


def _line_values(lines: list[str]) -> dict[str, float]:
    """``power,meter=x,phase=L1 import_w=1.0`` -> {"power_import_l1_w": 1.0}: the points under state keys."""
    found: dict[str, float] = {}
    for text in lines:
        series, fields, _ = text.rsplit(" ", 2)
        measurement, *tags = series.split(",")
        phase = next((t.split("=", 1)[1] for t in tags if t.startswith("phase=")), None)
        if measurement not in ("power", "voltage", "current", "energy"):
            continue
        for item in fields.split(","):
            name, value = item.split("=", 1)
            if value.endswith("i"):
                continue
            found[state._state_key(measurement, name, phase)] = float(value)
    return found


def test_every_fixture_state_agrees_with_the_points_written_to_influxdb() -> None:
    # One conversion for both outputs: what Home Assistant shows is what InfluxDB stores.
    checked = 0
    for t in all_telegrams():
        values = _line_values(PointBuilder(BRUSSELS).build(t, 1_700_000_000.0))
        current = state.telegram_state(t)
        for key, value in values.items():
            assert current[key] == value, (t.header, key)
            checked += 1
    assert checked > 500


def test_a_reading_in_a_unit_that_cannot_be_converted_is_left_out() -> None:
    t = telegram("ndokter_dsmr_parser__fluvius_v171.txt")
    from p1logger.decode import Reading

    t.fields["1-0:1.7.0"] = Reading(1.5, "MW")
    assert "power_import_w" not in state.telegram_state(t)


def test_field_payloads_are_bare_values() -> None:
    assert [state.field_payload(v) for v in (1.5, 3, True, False, "50217", None, 0.0)] == [
        b"1.5", b"3", b"1", b"0", b"50217", b"", b"0.0"
    ]


def test_interval_zero_publishes_every_telegram_as_is() -> None:
    averager = state.Averager(0)
    first = {"power_import_w": 100.0}
    assert averager.add(first, 10) is first
    assert averager.add({"power_import_w": 300.0}, 11) == {"power_import_w": 300.0}


def test_interval_averages_power_and_takes_the_latest_counters() -> None:
    averager = state.Averager(10)
    published = []
    for i in range(25):  # one telegram a second
        s = {"power_import_w": float(100 * i), "power_import_l1_w": 50.0, "voltage_l1_v": 230.0 + i,
             "energy_import_t1_kwh": 1.0 + i / 1000, "time": f"t{i}"}
        due = averager.add(s, 1000 + i)
        if due is not None:
            published.append(due)
    # At t=0 at once; at t=10 the mean of t=1..10; at t=20 the mean of t=11..20. Each telegram counts once.
    assert published == [
        {"power_import_w": 0.0, "power_import_l1_w": 50.0, "voltage_l1_v": 230.0, "energy_import_t1_kwh": 1.0,
         "time": "t0"},
        {"power_import_w": 550.0, "power_import_l1_w": 50.0, "voltage_l1_v": 240.0, "energy_import_t1_kwh": 1.01,
         "time": "t10"},
        {"power_import_w": 1550.0, "power_import_l1_w": 50.0, "voltage_l1_v": 250.0, "energy_import_t1_kwh": 1.02,
         "time": "t20"},
    ]
    # What is left at shutdown: the mean of t=21..24.
    assert averager.take() == {"power_import_w": 2250.0, "power_import_l1_w": 50.0, "voltage_l1_v": 254.0,
                               "energy_import_t1_kwh": 1.024, "time": "t24"}
    assert averager.take() is None


def test_interval_starts_over_when_the_meter_clock_goes_back() -> None:
    averager = state.Averager(10)
    assert averager.add({"power_import_w": 1.0}, 1000) is not None
    assert averager.add({"power_import_w": 3.0}, 1005) is None
    assert averager.add({"power_import_w": 5.0}, 900) == {"power_import_w": 4.0}


@pytest.mark.parametrize("key, averaged", [
    ("power_import_w", True), ("power_export_l3_w", True), ("capacity_demand_kw", False),
    ("energy_import_t1_kwh", False), ("voltage_l1_v", False), ("current_l1_a", False),
])
def test_only_power_figures_are_averaged(key: str, averaged: bool) -> None:
    assert state.is_averaged(key) is averaged


def test_state_json_leaves_out_what_is_not_a_finite_number() -> None:
    payload = state.encode({"power_import_w": float("nan"), "power_export_w": float("inf"), "tariff": 1})
    assert json.loads(payload) == {"tariff": 1}
