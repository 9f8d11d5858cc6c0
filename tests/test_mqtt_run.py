"""``p1logger run`` on a simulated meter with the MQTT output: mosquitto and influxd, both real, both complete."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from helpers.ha_rules import energy_source, problems
from helpers.mqtt_servers import LOGGER_USER, READONLY_USER, MosquittoServer, Subscriber

REPO = Path(__file__).resolve().parent.parent
COUNT = 30
START = "2025-01-15T10:00:00+00:00"
T0 = 1736935200  # START in epoch seconds


def cli_env(**settings: str | Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("P1_", "INFLUX_"))}
    env.update({k: str(v) for k, v in settings.items()})
    return env


def run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "p1logger", "run"], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=False)


def simulated(tmp_path: Path, server: MosquittoServer, **extra: str | Path) -> tuple[dict[str, str], str, str]:
    tag = uuid.uuid4().hex[:8]
    prefix, discovery_prefix = f"p1run_{tag}", f"harun_{tag}"
    password = tmp_path / "mqtt-password"
    password.write_text(LOGGER_USER[1] + "\n")
    env = cli_env(
        P1_SOURCE="simulator", P1_SIMULATOR_COUNT=str(COUNT), P1_SIMULATOR_SPEED="1000", P1_SIMULATOR_START=START,
        P1_SPOOL_DIR=tmp_path / "spool", P1_INSTANCE="mqtt-run",
        P1_MQTT_URL=f"mqtt://{LOGGER_USER[0]}@127.0.0.1:{server.port}", P1_MQTT_PASSWORD_FILE=password,
        P1_MQTT_PREFIX=prefix, P1_MQTT_DISCOVERY_PREFIX=discovery_prefix, P1_MQTT_CLIENT_ID=f"run-{tag}",
        **extra,
    )
    return env, prefix, discovery_prefix


def states_by_time(sub: Subscriber, prefix: str) -> dict[str, dict[str, Any]]:
    return {m.json()["time"]: m.json() for m in sub.received(f"{prefix}/") if m.topic.endswith("/state")}


@pytest.mark.slow
def test_simulated_meter_to_mosquitto_and_influxd(mosquitto: MosquittoServer, influxd: Any, influx_db: str,
                                                 tmp_path: Path) -> None:
    tariff = tmp_path / "tariff.toml"
    tariff.write_text('[[contract]]\nfrom = "2025-01-01"\nimport_eur_per_kwh = 0.30\nexport_eur_per_kwh = 0.05\n'
                      'fixed_eur_per_day = 0.96\ngas_eur_per_m3 = 1.2\n')
    env, prefix, discovery_prefix = simulated(tmp_path, mosquitto, INFLUX_API="v1", INFLUX_URL=influxd.url,
                                              INFLUX_BUCKET=influx_db, P1_TARIFF_FILE=tariff)
    sub = Subscriber(mosquitto, [f"{prefix}/#", f"{discovery_prefix}/#"], client_id=f"ha-{prefix}").start()
    result = run(env)
    assert result.returncode == 0, result.stderr
    assert LOGGER_USER[1] not in result.stderr
    # Every telegram reached both: 30 states on the broker, 30 energy points in influxd, the same numbers.
    sub.wait_for(lambda ms: len({m.payload for m in ms if m.topic.endswith("/state")}) >= COUNT)
    states = states_by_time(sub, prefix)
    energy = influxd.rows(influx_db, "energy")
    assert len(energy) == COUNT
    assert sorted(states) == [f"2025-01-15T10:00:{s:02d}+00:00" for s in range(COUNT)]
    for row in energy:
        published = states[f"2025-01-15T10:00:{row['time'] - T0:02d}+00:00"]
        assert (published["energy_import_t1_kwh"], published["energy_import_t2_kwh"],
                published["energy_export_t1_kwh"]) == (row["import_t1_kwh"], row["import_t2_kwh"],
                                                        row["export_t1_kwh"])
    power = {(row["time"], row.get("phase")): row["import_w"] for row in influxd.rows(influx_db, "power")}
    for time_s, phase in power:
        key = "power_import_w" if phase == "total" else f"power_import_{phase.lower()}_w"
        assert states[f"2025-01-15T10:00:{time_s - T0:02d}+00:00"][key] == power[(time_s, phase)]
    # Discovery: every sensor passes Home Assistant's rules, and the Energy dashboard finds its sources.
    configs = {m.topic: m.json() for m in sub.received(f"{discovery_prefix}/") if m.payload}
    assert configs and all(problems(t.split("/")[1], c) == [] for t, c in configs.items())
    meter = next(iter(states.values()))["meter"]
    sources = {t.split("/")[-2]: energy_source(c) for t, c in configs.items() if energy_source(c)}
    assert sources == {
        "energy_import_t1_kwh": "grid", "energy_import_t2_kwh": "grid", "energy_import_total_kwh": "grid",
        "energy_export_t1_kwh": "grid", "energy_export_t2_kwh": "grid", "energy_export_total_kwh": "grid",
        "gas_volume_m3": "gas", "water_volume_m3": "water",
    }
    for phase in ("l1", "l2", "l3"):
        config = configs[f"{discovery_prefix}/sensor/p1logger_{meter}/power_import_{phase}_w/config"]
        assert (config["device_class"], config["state_class"], config["unit_of_measurement"]) == (
            "power", "measurement", "W")
    capacity = configs[f"{discovery_prefix}/sensor/p1logger_{meter}/capacity_rolling_mean_kw/config"]
    assert capacity["unit_of_measurement"] == "kW"
    # The energy cost builder's live figures ride along, with their own sensors.
    last = states[f"2025-01-15T10:00:{COUNT - 1:02d}+00:00"]
    assert (last["cost_import_price_eur_per_kwh"], last["cost_export_price_eur_per_kwh"]) == (0.3, 0.05)
    assert last["cost_prices_missing"] is False
    today = configs[f"{discovery_prefix}/sensor/p1logger_{meter}/cost_today_total_eur/config"]
    assert (today["device_class"], today["unit_of_measurement"]) == ("monetary", "EUR")
    assert [m.payload for m in sub.received(f"{prefix}/status")][-1] == b"offline"  # a clean stop
    sub.stop()


@pytest.mark.slow
def test_mqtt_alone(mosquitto: MosquittoServer, tmp_path: Path) -> None:
    env, prefix, _ = simulated(tmp_path, mosquitto, P1_OUTPUT="mqtt", P1_LOG_LEVEL="DEBUG")
    # The password in the URL this time: it must not show anywhere either.
    env["P1_MQTT_URL"] = f"mqtt://{LOGGER_USER[0]}:{LOGGER_USER[1]}@127.0.0.1:{mosquitto.port}"
    del env["P1_MQTT_PASSWORD_FILE"]
    sub = Subscriber(mosquitto, [f"{prefix}/+/state"], client_id=f"ha-{prefix}").start()
    result = run(env)
    assert result.returncode == 0, result.stderr
    assert LOGGER_USER[1] not in result.stderr + result.stdout
    assert f"MQTT connected to mqtt://p1logger@127.0.0.1:{mosquitto.port}" in result.stderr
    assert not list((tmp_path / "spool").rglob("spool.db"))  # no InfluxDB output, so no spool
    sub.wait_for(lambda ms: len(ms) >= COUNT)
    assert len(states_by_time(sub, prefix)) == COUNT
    sub.stop()


@pytest.mark.slow
def test_a_dead_broker_never_costs_influxdb_a_reading(broker: MosquittoServer, influxd: Any, influx_db: str,
                                                      tmp_path: Path) -> None:
    broker.stop()
    env, _, _ = simulated(tmp_path, broker, INFLUX_API="v1", INFLUX_URL=influxd.url, INFLUX_BUCKET=influx_db)
    result = run(env)
    assert result.returncode == 0, result.stderr
    assert influxd.count(influx_db, "energy") == COUNT
    assert "MQTT broker mqtt://p1logger@127.0.0.1" in result.stderr and "is not reachable" in result.stderr


def test_a_wrong_password_is_one_line_and_exit_2(mosquitto: MosquittoServer, influxd: Any, influx_db: str,
                                                 tmp_path: Path) -> None:
    env, _, _ = simulated(tmp_path, mosquitto, INFLUX_API="v1", INFLUX_URL=influxd.url, INFLUX_BUCKET=influx_db)
    Path(env["P1_MQTT_PASSWORD_FILE"]).write_text("wrong-password-do-not-leak\n")
    result = run(env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"p1logger run: the MQTT broker 127.0.0.1:{mosquitto.port} refused user 'p1logger' (Not authorized): fix "
        "the user in P1_MQTT_URL or the password in P1_MQTT_PASSWORD_FILE")
    assert "wrong-password-do-not-leak" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_doctor_checks_the_broker_the_login_and_publishing(mosquitto: MosquittoServer, tmp_path: Path) -> None:
    env, prefix, discovery_prefix = simulated(tmp_path, mosquitto, P1_OUTPUT="mqtt")
    result = subprocess.run([sys.executable, "-m", "p1logger", "doctor", "--wait-s", "5"], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert f"ok  MQTT: connected to mqtt://p1logger@127.0.0.1:{mosquitto.port}" in lines
    assert f"ok  MQTT: may publish on {prefix}/#" in lines
    assert f"ok  MQTT: may publish on {discovery_prefix}/#" in lines
    # The same with a user the broker's ACL lets read only: the refused publish is a FIX line.
    env["P1_MQTT_URL"] = f"mqtt://{READONLY_USER[0]}@127.0.0.1:{mosquitto.port}"
    Path(env["P1_MQTT_PASSWORD_FILE"]).write_text(READONLY_USER[1])
    refused = subprocess.run([sys.executable, "-m", "p1logger", "doctor", "--wait-s", "5"], env=env, cwd=REPO,
                             capture_output=True, text=True, timeout=120, check=False)
    assert refused.returncode == 1
    assert (f"FIX MQTT: the broker refused a publish on {prefix}/doctor (Not authorized): let user reader publish "
            f"to {prefix}/# in its ACL") in refused.stdout.splitlines()
    assert READONLY_USER[1] not in refused.stdout + refused.stderr
