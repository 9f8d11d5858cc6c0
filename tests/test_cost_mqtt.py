"""Energy cost on MQTT: ``p1logger run`` over the simulated week, against the real mosquitto.

The week, the contracts (a fixed one switching to a dynamic one with
quarter-hour prices on Thursday) and the hand computation are the ones the
``p1logger cost`` and stored-points tests use (``helpers.cost_week``). Every
telegram's state is checked: the prices in force, the running quarter's kWh,
the last finished quarter's cost and today's cost so far; and each local day's
cost, put together from the states, agrees with the hand computation to the
cent.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from helpers.cost_week import (CENT, DAYS, SCENARIOS, ZONE_NAME, Seen, by_hand, by_quarter, cli_env, day_quarters,
                               local_day, make_week, p1logger, price, tariff_files)
from helpers.ha_rules import price_entity_problems, problems
from helpers.mqtt_servers import LOGGER_USER, MosquittoServer, Subscriber

from p1logger.outputs.mqtt.state import iso_time

# A published figure is rounded to 6 decimals; the hand computation is not.
ROUNDED = 1e-6


def fixed_share(contract_on: Any, quarter_s: int) -> float:
    day = local_day(quarter_s)
    contract = contract_on(day)
    return float(contract["fixed"] * (1 + contract["vat"] / 100) / day_quarters(day))


def running_import_kwh(seen: list[Seen]) -> dict[int, float]:
    """Telegram time -> the import kWh of its quarter so far (from the quarter's start to the telegram)."""
    running: dict[int, float] = {seen[0].time_s: 0.0}
    for before, after in zip(seen, seen[1:]):
        quarter = after.time_s - after.time_s % 900
        if after.time_s == quarter:
            running[after.time_s] = 0.0
            continue
        share = (after.time_s - max(before.time_s, quarter)) / (after.time_s - before.time_s)
        so_far = running[before.time_s] if before.time_s > quarter else 0.0
        running[after.time_s] = so_far + sum(after.imports[r] - before.imports[r] for r in (1, 2)) * share
    return running


@pytest.mark.slow
def test_the_published_cost_agrees_with_the_week_worked_out_by_hand(mosquitto: MosquittoServer,
                                                                    tmp_path: Path) -> None:
    week = make_week()
    recording = tmp_path / "week.txt"
    recording.write_bytes(week.raw)
    tariff = tariff_files(tmp_path / "tariff", "switch")
    contract_on = SCENARIOS["switch"][1]
    tag = uuid.uuid4().hex[:8]
    prefix, discovery_prefix = f"p1cost_{tag}", f"hacost_{tag}"
    password = tmp_path / "mqtt-password"
    password.write_text(LOGGER_USER[1] + "\n")
    env = cli_env(P1_SOURCE=f"file:{recording}", P1_OUTPUT="mqtt", P1_TIMEZONE=ZONE_NAME, P1_TARIFF_FILE=tariff,
                  P1_SPOOL_DIR=tmp_path / "spool", P1_MQTT_URL=f"mqtt://{LOGGER_USER[0]}@127.0.0.1:{mosquitto.port}",
                  P1_MQTT_PASSWORD_FILE=password, P1_MQTT_PREFIX=prefix, P1_MQTT_DISCOVERY_PREFIX=discovery_prefix,
                  P1_MQTT_CLIENT_ID=f"cost-{tag}")
    sub = Subscriber(mosquitto, [f"{prefix}/+/state", f"{discovery_prefix}/#"], client_id=f"ha-{tag}").start()
    result = p1logger("run", env=env, timeout_s=120)
    assert result.returncode == 0, result.stderr
    sub.wait_for(lambda ms: len([m for m in ms if m.topic.endswith("/state")]) >= len(week.seen))
    states = {m.json()["time"]: m.json() for m in sub.received(f"{prefix}/") if m.topic.endswith("/state")}
    configs = {m.topic: m.json() for m in sub.received(f"{discovery_prefix}/") if m.payload}
    sub.stop()
    assert len(states) == len(week.seen)  # every telegram, none dropped

    quarters = by_quarter(week.seen, contract_on)
    running = running_import_kwh(week.seen)
    checked_quarters = 0
    for seen in week.seen:
        state = states[iso_time(seen.time_s)]
        quarter = seen.time_s - seen.time_s % 900
        contract = contract_on(local_day(quarter))
        # The prices in force now, for the register the meter counts on now.
        assert state["cost_import_price_eur_per_kwh"] == round(price(contract, "import", seen.tariff, quarter), 6)
        assert state["cost_export_price_eur_per_kwh"] == round(price(contract, "export", seen.tariff, quarter), 6)
        assert state["cost_prices_missing"] is False
        assert state["cost_quarter_start"] == iso_time(quarter).replace("+00:00", "Z")
        assert abs(state["cost_quarter_import_kwh"] - running[seen.time_s]) <= ROUNDED, seen.time_s
        if seen.time_s != quarter:
            continue
        # A quarter begins: today so far is the day's finished quarters and this quarter's fixed share.
        today = sum(q["total_eur"] for start, q in quarters.items()
                    if start < quarter and local_day(start) == local_day(quarter))
        today += fixed_share(contract_on, quarter)
        assert abs(state["cost_today_total_eur"] - today) <= 2 * ROUNDED, (seen.time_s, today)
        if seen is not week.seen[0]:
            finished = quarters[quarter - 900]["total_eur"]
            assert abs(state["cost_last_quarter_total_eur"] - finished) <= ROUNDED, seen.time_s
            checked_quarters += 1
    # Every quarter that ends with a telegram: all but the four that end inside the missing hour (10:00-10:45;
    # they are checked in today's cost at 11:00 and in Wednesday's total).
    assert checked_quarters == 6 * 96 + 92 - 4

    # Each day's cost as Home Assistant could add it up: today's cost before the day's last quarter,
    # plus that quarter as published when it ends.
    expected = by_hand(week.seen, contract_on)
    published: dict[date, float] = defaultdict(float)
    for day in DAYS:
        last_start = max(start for start in quarters if local_day(start) == day)
        before_last = states[iso_time(last_start)]["cost_today_total_eur"] - fixed_share(contract_on, last_start)
        published[day] = before_last + states[iso_time(last_start + 900)]["cost_last_quarter_total_eur"]
        assert abs(published[day] - expected[day]["total_eur"]) <= CENT, (day, published[day])

    # Discovery: the current price is a sensor the Energy dashboard accepts as a grid source's price,
    # and the euros are monetary sensors.
    meter = next(iter(states.values()))["meter"]
    last_state = states[iso_time(week.seen[-1].time_s)]
    for key in ("cost_import_price_eur_per_kwh", "cost_export_price_eur_per_kwh"):
        config = configs[f"{discovery_prefix}/sensor/p1logger_{meter}/{key}/config"]
        assert problems("sensor", config) == []
        assert price_entity_problems(config, last_state[key]) == []
        assert config["unit_of_measurement"] == "EUR/kWh"
    for key in ("cost_today_total_eur", "cost_last_quarter_total_eur", "cost_quarter_total_eur"):
        config = configs[f"{discovery_prefix}/sensor/p1logger_{meter}/{key}/config"]
        assert problems("sensor", config) == []
        assert (config["device_class"], config["unit_of_measurement"]) == ("monetary", "EUR")
