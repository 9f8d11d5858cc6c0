"""Home Assistant discovery configs: exact payloads, and Home Assistant's rules for every sensor p1logger makes."""

from __future__ import annotations

import json

import pytest
from helpers.ha_rules import energy_source, problems
from test_mqtt_state import all_telegrams, telegram

from p1logger import __version__
from p1logger.outputs.mqtt import discovery, state

TOPICS = discovery.Topics("p1logger", "homeassistant")
METER = "1SAG3101021605"


def _common(key: str, state_topic: str = f"p1logger/{METER}/state") -> dict[str, object]:
    return {
        "availability_topic": "p1logger/status",
        "device": {"identifiers": [f"p1logger_{METER}"], "model": "e-MUCS 50217", "name": f"P1 meter {METER}",
                   "serial_number": METER},
        "origin": {"name": "p1logger", "sw_version": __version__},
        "payload_available": "online",
        "payload_not_available": "offline",
        "qos": 1,
        "state_topic": state_topic,
        "unique_id": f"p1logger_{METER}_{key}",
    }


def test_exact_configs_for_the_energy_dashboard_sensors() -> None:
    assert discovery.sensor_config(TOPICS, METER, "energy_import_t1_kwh", "e-MUCS 50217") == (
        f"homeassistant/sensor/p1logger_{METER}/energy_import_t1_kwh/config",
        {**_common("energy_import_t1_kwh"), "name": "Energy import tariff 1",
         "value_template": "{{ value_json.energy_import_t1_kwh }}", "device_class": "energy",
         "state_class": "total_increasing", "unit_of_measurement": "kWh", "suggested_display_precision": 3},
    )
    assert discovery.sensor_config(TOPICS, METER, "gas_volume_m3", "e-MUCS 50217") == (
        f"homeassistant/sensor/p1logger_{METER}/gas_volume_m3/config",
        {**_common("gas_volume_m3"), "name": "Gas volume", "value_template": "{{ value_json.gas_volume_m3 }}",
         "device_class": "gas", "state_class": "total_increasing", "unit_of_measurement": "m³",
         "suggested_display_precision": 3},
    )
    assert discovery.sensor_config(TOPICS, METER, "power_export_l2_w", "e-MUCS 50217") == (
        f"homeassistant/sensor/p1logger_{METER}/power_export_l2_w/config",
        {**_common("power_export_l2_w"), "name": "Power export L2",
         "value_template": "{{ value_json.power_export_l2_w }}", "device_class": "power",
         "state_class": "measurement", "unit_of_measurement": "W", "suggested_display_precision": 0},
    )


def test_exact_configs_for_diagnostics_and_the_peak_warning() -> None:
    assert discovery.sensor_config(TOPICS, METER, "fuse_threshold_l1_a", "e-MUCS 50217")[1] == {
        **_common("fuse_threshold_l1_a"), "name": "Fuse threshold L1",
        "value_template": "{{ value_json.fuse_threshold_l1_a }}", "device_class": "current",
        "unit_of_measurement": "A", "entity_category": "diagnostic",
    }
    assert discovery.sensor_config(TOPICS, METER, "capacity_peak_warning", "e-MUCS 50217") == (
        f"homeassistant/binary_sensor/p1logger_{METER}/capacity_peak_warning/config",
        {**_common("capacity_peak_warning"), "name": "Capacity peak warning",
         "value_template": "{{ 'ON' if value_json.capacity_peak_warning else 'OFF' }}", "device_class": "problem"},
    )
    assert discovery.health_config(TOPICS, METER, "last_telegram_age_s", "e-MUCS 50217") == (
        f"homeassistant/sensor/p1logger_{METER}/health_last_telegram_age_s/config",
        {**_common("health_last_telegram_age_s", "p1logger/health"), "name": "Logger last telegram age",
         "value_template": "{{ value_json.last_telegram_age_s }}", "device_class": "duration",
         "state_class": "measurement", "unit_of_measurement": "s", "entity_category": "diagnostic",
         "suggested_display_precision": 0},
    )


FIGURES = {
    "capacity": {"demand_kw": 1.0, "month_peak_kw": 2.0, "rolling_mean_kw": 3.0, "projected_kw": 1.5,
                 "peak_warning": True, "shed_kw": 0.5, "yearly_cost_eur": 200.0},
    # As CostTracker.figures() gives them.
    "cost": {"quarter_start": "2020-05-12T11:45:00Z", "quarter_import_kwh": 0.2, "quarter_export_kwh": 0.0,
             "quarter_total_eur": 0.07, "import_price_eur_per_kwh": 0.31, "export_price_eur_per_kwh": 0.04,
             "today_total_eur": 1.5, "last_quarter_total_eur": 0.06, "prices_missing": False},
}


def test_every_sensor_of_every_fixture_satisfies_home_assistant() -> None:
    checked = 0
    for t in all_telegrams():
        current = state.build_state(t, 1_700_000_000, FIGURES)
        for topic, config in discovery.configs(TOPICS, t.meter_id, current.keys(), "DSMR 5").items():
            component = topic.split("/")[1]
            assert problems(component, config) == [], (topic, config)
            key = config["value_template"].split("value_json.")[1].split()[0]
            if not topic.split("/")[-2].startswith("health_"):
                assert key in current, topic
            checked += 1
    assert checked > 2000


def test_energy_dashboard_gets_import_export_per_tariff_and_totals_gas_water_and_power_per_phase() -> None:
    t = telegram("ndokter_dsmr_parser__fluvius_v171.txt")
    current = state.build_state(t, 1589284449, FIGURES)
    configs = {topic.split("/")[-2]: config for topic, config in
               discovery.configs(TOPICS, METER, current.keys()).items()}
    sources = {key: energy_source(config) for key, config in configs.items() if energy_source(config)}
    assert sources == {
        "energy_import_t1_kwh": "grid", "energy_import_t2_kwh": "grid", "energy_import_total_kwh": "grid",
        "energy_export_t1_kwh": "grid", "energy_export_t2_kwh": "grid", "energy_export_total_kwh": "grid",
        "gas_volume_m3": "gas", "water_volume_m3": "water",
    }
    # A quarter's energy is shown, but not offered to the Energy dashboard.
    assert (configs["cost_quarter_import_kwh"]["device_class"], configs["cost_quarter_import_kwh"].get("state_class"),
            configs["cost_quarter_import_kwh"]["unit_of_measurement"]) == ("energy", None, "kWh")
    for phase in ("", "_l1", "_l2", "_l3"):
        for direction in ("import", "export"):
            config = configs[f"power_{direction}{phase}_w"]
            assert (config["device_class"], config["state_class"], config["unit_of_measurement"]) == (
                "power", "measurement", "W")
    for key in ("voltage_l1_v", "voltage_l2_v", "voltage_l3_v"):
        assert (configs[key]["device_class"], configs[key]["unit_of_measurement"]) == ("voltage", "V")
    for key in ("current_l1_a", "current_l2_a", "current_l3_a"):
        assert (configs[key]["device_class"], configs[key]["unit_of_measurement"]) == ("current", "A")
    for key in ("capacity_demand_kw", "capacity_month_peak_kw", "capacity_rolling_mean_kw", "capacity_projected_kw",
                "capacity_shed_kw"):
        assert (configs[key]["device_class"], configs[key]["unit_of_measurement"]) == ("power", "kW")
    assert configs["capacity_yearly_cost_eur"]["device_class"] == "monetary"
    for key in ("cost_quarter_total_eur", "cost_today_total_eur", "cost_last_quarter_total_eur"):
        assert (configs[key]["device_class"], configs[key]["unit_of_measurement"]) == ("monetary", "EUR")
        assert "state_class" not in configs[key]
    for key in ("cost_import_price_eur_per_kwh", "cost_export_price_eur_per_kwh"):
        assert (configs[key]["unit_of_measurement"], configs[key]["state_class"]) == ("EUR/kWh", "measurement")
    assert (configs["cost_prices_missing"]["device_class"], configs["cost_prices_missing"]["entity_category"]) == (
        "problem", "diagnostic")
    assert configs["cost_quarter_start"]["device_class"] == "timestamp"


def test_identifiers_thresholds_and_counters_are_diagnostics() -> None:
    keys = ["meter", "time", "emucs_version", "dsmr_version", "breaker_state", "limiter_threshold_kw",
            "fuse_threshold_l1_a", "power_failures", "long_power_failures", "voltage_sags_l1", "voltage_swells_l3",
            "gas_time", "water_ch3_time"]
    configs = discovery.configs(TOPICS, METER, keys)
    categories = {topic.split("/")[-2]: config.get("entity_category") for topic, config in configs.items()}
    assert categories == {**{key: "diagnostic" for key in keys},
                          **{f"health_{key}": "diagnostic" for key in discovery.HEALTH_KEYS}}
    measured = discovery.configs(TOPICS, METER, ["power_import_w", "energy_import_t1_kwh", "gas_volume_m3",
                                                 "tariff"], health=False)
    assert [config.get("entity_category") for config in measured.values()] == [None, None, None, None]


def test_one_device_per_meter_with_unique_ids() -> None:
    a = discovery.configs(TOPICS, "A1", ["power_import_w", "energy_import_t1_kwh"])
    b = discovery.configs(TOPICS, "B2", ["power_import_w", "energy_import_t1_kwh"])
    ids = [c["unique_id"] for c in [*a.values(), *b.values()]]
    assert len(ids) == len(set(ids)) == 2 * (2 + len(discovery.HEALTH_KEYS))
    assert {json.dumps(c["device"]) for c in a.values()} == {
        '{"identifiers": ["p1logger_A1"], "name": "P1 meter A1", "serial_number": "A1"}'}


@pytest.mark.parametrize("key, name", [
    ("energy_import_t1_kwh", "Energy import tariff 1"), ("energy_export_total_kwh", "Energy export total"),
    ("power_import_l3_w", "Power import L3"), ("gas_ch2_volume_m3", "Gas channel 2 volume"),
    ("capacity_month_peak_kw", "Capacity month peak"), ("tariff", "Tariff"),
])
def test_sensor_names_read_as_words(key: str, name: str) -> None:
    assert discovery.sensor_name(key) == name


def test_meter_ids_become_safe_topic_levels() -> None:
    assert discovery.node_id("1SAG/31+0#2 x\\y") == "p1logger_1SAG_31_0_2_x_y"
    assert TOPICS.state("a/b") == "p1logger/a_b/state"


def test_ownership_of_a_retained_config() -> None:
    mine = json.dumps({"state_topic": "p1logger/X/state"}).encode()
    theirs = json.dumps({"state_topic": "other/X/state"}).encode()
    assert TOPICS.owns("homeassistant/sensor/p1logger_X/power_import_w/config", mine)
    assert not TOPICS.owns("homeassistant/sensor/p1logger_X/power_import_w/config", theirs)
    assert not TOPICS.owns("homeassistant/sensor/zigbee_X/power/config", mine)
    assert not TOPICS.owns("homeassistant/sensor/p1logger_X/power_import_w/config", b"")
