"""The MQTT output on a real mosquitto: exact messages, discovery, restarts of the broker and of Home Assistant,
TLS, passwords, ACLs and the bounded backlog."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from helpers.ha_rules import problems
from helpers.mqtt_servers import HA_USER, LOGGER_USER, READONLY_USER, MosquittoServer, Received, Subscriber
from test_mqtt_state import telegram

from p1logger import contracts
from p1logger.decode import Telegram
from p1logger.errors import ConfigError
from p1logger.outputs.mqtt import discovery, state
from p1logger.outputs.mqtt.output import MqttOutput, check
from p1logger.outputs.mqtt.settings import MqttSettings

T0 = 1589284449  # the fixture's own time


def Record(telegram: Telegram, time_s: int, figures: dict[str, dict[str, Any]] | None = None) -> contracts.Record:
    """A record as the writer makes it (the MQTT output reads the telegram, its time and the figures)."""
    return contracts.Record(telegram, float(time_s), time_s, (), figures or {})


def settings_for(server: MosquittoServer, user: tuple[str, str] = LOGGER_USER, **changes: Any) -> MqttSettings:
    tag = uuid.uuid4().hex[:8]
    base = MqttSettings(
        host="127.0.0.1", port=server.port, tls=False, username=user[0], password=user[1],
        client_id=f"p1logger-test-{tag}", prefix=f"p1t_{tag}", discovery_prefix=f"ha_{tag}",
    )
    return replace(base, **changes)


def wait_until(condition: Callable[[], bool], timeout_s: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def confirmed(output: MqttOutput, states: int = 1) -> Callable[[], bool]:
    """True once ``states`` states are published and the broker has acknowledged everything."""
    return lambda: output.states_published >= states and output.acked == output.queued


@pytest.fixture
def meter() -> Telegram:
    return telegram("ndokter_dsmr_parser__fluvius_v171.txt")


@pytest.fixture
def outputs() -> Iterator[list[MqttOutput]]:
    started: list[MqttOutput] = []
    yield started
    for output in started:
        output.close(2.0)


def start(outputs: list[MqttOutput], settings: MqttSettings, **kwargs: Any) -> MqttOutput:
    output = MqttOutput(settings, **kwargs)
    output.start()
    outputs.append(output)
    return output


def states(messages: list[Received], settings: MqttSettings) -> list[dict[str, Any]]:
    return [m.json() for m in messages if m.topic == f"{settings.prefix}/1SAG3101021605/state"]


def retained(server: MosquittoServer, topic_filter: str) -> dict[str, bytes]:
    """What a client subscribing now gets as retained messages."""
    late = Subscriber(server, [topic_filter], client_id=f"late-{uuid.uuid4().hex[:6]}").start()
    try:
        time.sleep(0.3)  # retained messages come right after the SUBACK
        return {m.topic: m.payload for m in late.received() if m.retain}
    finally:
        late.stop()


def test_state_and_discovery_messages_are_exact(mosquitto: MosquittoServer, outputs: list[MqttOutput],
                                                meter: Telegram) -> None:
    settings = settings_for(mosquitto)
    sub = Subscriber(mosquitto, [f"{settings.prefix}/#", f"{settings.discovery_prefix}/#"]).start()
    output = start(outputs, settings)
    # As CapacityBuilder.figures() gives them; "meter" and "time_s" are context, not sensors.
    figures = {"capacity": {"meter": "1SAG3101021605", "time_s": T0, "demand_kw": 2.351, "quarter_avg_kw": 1.8,
                            "month_peak_kw": 2.589, "rolling_mean_kw": 4.646, "projected_kw": 2.4, "shed_kw": 0.0,
                            "peak_warning": False, "yearly_cost_eur": 251.27}}
    output.submit(Record(meter, T0, figures))
    output.submit(Record(meter, T0 + 1, figures))
    wait_until(confirmed(output, 2), what="acknowledgements")
    messages = sub.wait_for(lambda ms: len(states(ms, settings)) == 2)
    expected = state.build_state(meter, T0, {k: dict(v) for k, v in figures.items()})
    assert states(messages, settings) == [expected, {**expected, "time": "2020-05-12T11:54:10+00:00"}]
    assert states(messages, settings)[0]["energy_import_t2_kwh"] == 15.758
    assert states(messages, settings)[0]["capacity_rolling_mean_kw"] == 4.646
    assert "capacity_meter" not in expected and "capacity_time_s" not in expected
    # Discovery: one retained config per key of the state plus the health sensors, sent once.
    keys = set(expected)
    configs = retained(mosquitto, f"{settings.discovery_prefix}/#")
    wanted = discovery.configs(output.topics, "1SAG3101021605", keys, "e-MUCS 50217")
    assert {t: json.loads(p) for t, p in configs.items()} == wanted
    assert len(configs) == len(keys) + len(discovery.HEALTH_KEYS) == 39 + 7
    for topic, payload in configs.items():
        assert problems(topic.split("/")[1], json.loads(payload)) == []
    sent = [m.topic for m in messages if m.topic.startswith(f"{settings.discovery_prefix}/")]
    assert sorted(sent) == sorted(wanted)  # not again for the second telegram
    assert retained(mosquitto, f"{settings.prefix}/status") == {f"{settings.prefix}/status": b"online"}
    health = dict(output.health())
    assert isinstance(health.pop("last_write_ok_at"), float)
    assert health == {"state": "up", "broker": f"mqtt://p1logger@127.0.0.1:{mosquitto.port}", "last_write_error": "",
                      "published": 1 + 46 + 2, "backlog": 0, "backlog_max": 10000, "dropping": False,
                      "dropped": 0, "refused": 0}
    output.close(5.0)
    assert retained(mosquitto, f"{settings.prefix}/status") == {f"{settings.prefix}/status": b"offline"}
    sub.stop()


def test_per_field_topics_and_health(mosquitto: MosquittoServer, outputs: list[MqttOutput], meter: Telegram) -> None:
    settings = settings_for(mosquitto, per_field_topics=True, discovery_prefix=None)
    sub = Subscriber(mosquitto, [f"{settings.prefix}/#"]).start()
    output = start(outputs, settings)
    output.submit(Record(meter, T0))
    output.submit_health({"telegrams_ok": 5, "telegrams_rejected": 1, "last_telegram_age_s": 0.51234,
                          "source_state": "reading", "spool_points": 0}, [])
    wait_until(confirmed(output))
    wait_until(lambda: len(sub.received(f"{settings.prefix}/health")) == 1)
    level = f"{settings.prefix}/1SAG3101021605"
    fields = {m.topic[len(level) + 1:]: m.payload for m in sub.received(level + "/") if not m.topic.endswith("/state")}
    expected = state.build_state(meter, T0)
    assert fields == {key: state.field_payload(value) for key, value in expected.items()}
    assert fields["energy_import_t2_kwh"] == b"15.758" and fields["tariff"] == b"1"
    assert sub.received(f"{settings.prefix}/health")[0].json() == {
        "telegrams_ok": 5, "telegrams_rejected": 1, "last_telegram_age_s": 0.512, "spool_points": 0,
        "mqtt_dropped": 0}
    assert not sub.received(f"{settings.discovery_prefix}/")  # discovery off
    sub.stop()


def test_interval_publishes_averaged_power(mosquitto: MosquittoServer, outputs: list[MqttOutput],
                                           meter: Telegram) -> None:
    settings = settings_for(mosquitto, interval_s=10.0, discovery_prefix=None)
    sub = Subscriber(mosquitto, [f"{settings.prefix}/+/state"]).start()
    output = start(outputs, settings)
    from p1logger.decode import Reading

    for i in range(21):
        t = Telegram(meter.header, meter.timestamp, True, dict(meter.fields))
        t.fields["1-0:1.7.0"] = Reading(i / 10, "kW")  # 0, 100, ... 2000 W
        output.submit(Record(t, T0 + i))
    messages = sub.wait_for(lambda ms: len(states(ms, settings)) == 3)
    assert [(s["time"][-14:], s["power_import_w"]) for s in states(messages, settings)] == [
        ("11:54:09+00:00", 0.0), ("11:54:19+00:00", 550.0), ("11:54:29+00:00", 1550.0)]
    sub.stop()


@pytest.mark.slow
def test_broker_restart_mid_run_loses_nothing(broker: MosquittoServer, outputs: list[MqttOutput],
                                              meter: Telegram) -> None:
    settings = settings_for(broker, discovery_prefix=None)
    # Home Assistant's side: a persistent session, so the broker keeps its messages while it is away too.
    sub = Subscriber(broker, [f"{settings.prefix}/+/state"], client_id="ha-persistent", persistent=True).start()
    output = start(outputs, settings)
    for i in range(10):
        output.submit(Record(meter, T0 + i))
    wait_until(lambda: len(states(sub.received(), settings)) == 10)
    wait_until(confirmed(output, 10))
    broker.stop()
    wait_until(lambda: not output.connected, what="the output to notice")
    for i in range(10, 30):  # while the broker is down: the backlog
        output.submit(Record(meter, T0 + i))
    wait_until(lambda: output.queued - output.acked == 20, what="20 messages in the backlog")
    broker.start()
    for i in range(30, 40):
        output.submit(Record(meter, T0 + i))
    wait_until(lambda: len({s["time"] for s in states(sub.received(), settings)}) == 40, timeout_s=30,
               what="all 40 states")
    times = sorted({s["time"] for s in states(sub.received(), settings)})
    assert times == sorted(state.iso_time(T0 + i) for i in range(40))
    assert output.dropped == 0
    # Availability is "online" again after the restart.
    wait_until(lambda: retained(broker, f"{settings.prefix}/status") == {f"{settings.prefix}/status": b"online"})
    sub.stop()


@pytest.mark.slow
def test_backlog_is_bounded_and_drops_are_counted(broker: MosquittoServer, outputs: list[MqttOutput],
                                                  meter: Telegram) -> None:
    settings = settings_for(broker, discovery_prefix=None, backlog_max_messages=5)
    sub = Subscriber(broker, [f"{settings.prefix}/+/state"], client_id="ha-bounded", persistent=True).start()
    output = start(outputs, settings)
    output.submit(Record(meter, T0))
    wait_until(lambda: len(states(sub.received(), settings)) == 1)
    wait_until(confirmed(output))
    broker.stop()
    wait_until(lambda: not output.connected)
    for i in range(1, 21):
        output.submit(Record(meter, T0 + i))
    wait_until(lambda: output.dropped == 15, what="15 drops")
    health = output.health()
    assert (health["state"], health["backlog"], health["backlog_max"], health["dropping"]) == ("down", 5, 5, True)
    broker.start()
    wait_until(lambda: len({s["time"] for s in states(sub.received(), settings)}) == 6, timeout_s=30)
    assert sorted({s["time"] for s in states(sub.received(), settings)}) == [
        state.iso_time(T0 + i) for i in range(6)]  # the oldest kept, the newest dropped
    assert output.dropped == 15
    wait_until(lambda: output.health()["backlog"] == 0, what="the backlog drained")
    health = output.health()
    assert (health["state"], health["dropping"], health["dropped"]) == ("up", False, 15)
    sub.stop()


def test_home_assistant_restart_resends_discovery(mosquitto: MosquittoServer, outputs: list[MqttOutput],
                                                  meter: Telegram) -> None:
    settings = settings_for(mosquitto)
    output = start(outputs, settings)
    output.submit(Record(meter, T0))
    wait_until(confirmed(output))
    ha = Subscriber(mosquitto, [f"{settings.discovery_prefix}/+/+/+/config", f"{settings.prefix}/#"],
                    user=HA_USER, client_id="ha-restart").start()
    time.sleep(0.3)
    ha.clear()
    ha.publish(f"{settings.discovery_prefix}/status", "online")  # Home Assistant's birth message
    messages = ha.wait_for(lambda ms: len([m for m in ms if m.topic.endswith("/config")]) == 39
                           and len(states(ms, settings)) == 1)
    configs = {m.topic: m.json() for m in messages if m.topic.endswith("/config")}
    assert configs == discovery.configs(output.topics, "1SAG3101021605", state.build_state(meter, T0).keys(),
                                        "e-MUCS 50217")
    assert states(messages, settings) == [state.build_state(meter, T0)]  # the latest state again
    assert [m.payload for m in messages if m.topic == f"{settings.prefix}/status"] == [b"online"]
    ha.stop()


def test_removed_sensors_and_meters_are_cleaned_up(mosquitto: MosquittoServer, outputs: list[MqttOutput],
                                                   meter: Telegram) -> None:
    settings = settings_for(mosquitto, cleanup_after_telegrams=3)
    topics = discovery.Topics(settings.prefix, settings.discovery_prefix or "")
    ha = Subscriber(mosquitto, ["#"], user=HA_USER, client_id="ha-cleanup").start()
    # Left by an earlier run: a sensor this meter no longer has, and a meter that was replaced.
    old_sensor = topics.config("sensor", "1SAG3101021605", "power_import_l4_w")
    old_meter = topics.config("sensor", "OLDMETER", "energy_import_t1_kwh")
    someone_else = f"{settings.discovery_prefix}/sensor/zigbee_lamp/power/config"
    for topic, key, meter_id in ((old_sensor, "power_import_l4_w", "1SAG3101021605"),
                                 (old_meter, "energy_import_t1_kwh", "OLDMETER")):
        ha.publish(topic, json.dumps(discovery.sensor_config(topics, meter_id, key)[1]), retain=True)
    ha.publish(someone_else, json.dumps({"state_topic": "zigbee/lamp"}), retain=True)
    output = start(outputs, settings)
    for i in range(2):
        output.submit(Record(meter, T0 + i))
    wait_until(confirmed(output, 2))
    time.sleep(0.5)
    assert set(retained(mosquitto, f"{settings.discovery_prefix}/#")) >= {old_sensor, old_meter}
    # From the third telegram on, and at least two telegrams after the broker acknowledged the subscription
    # that brings the retained configs (it may come a little after the first telegrams).
    wiped: set[str] = set()
    for i in range(2, 8):
        output.submit(Record(meter, T0 + i))
        wait_until(confirmed(output, i + 1))
        time.sleep(0.2)
        wiped = {m.topic for m in ha.received() if m.payload == b""}
        if wiped:
            break
    assert wiped == {old_sensor, old_meter}
    left = retained(mosquitto, f"{settings.discovery_prefix}/#")
    assert old_sensor not in left and old_meter not in left
    assert someone_else in left
    assert len(left) == 39 + 1
    ha.stop()


def test_tls_with_the_right_ca(mosquitto: MosquittoServer, outputs: list[MqttOutput], meter: Telegram) -> None:
    assert mosquitto.tls is not None and mosquitto.tls_port is not None
    settings = settings_for(mosquitto, host="localhost", port=mosquitto.tls_port, tls=True,
                            ca_file=mosquitto.tls.ca_cert, discovery_prefix=None)
    sub = Subscriber(mosquitto, [f"{settings.prefix}/+/state"]).start()
    output = start(outputs, settings)
    output.submit(Record(meter, T0))
    messages = sub.wait_for(lambda ms: len(ms) == 1)
    assert states(messages, settings) == [state.build_state(meter, T0)]
    assert check(settings) == [(True, f"MQTT: connected to mqtts://p1logger@localhost:{mosquitto.tls_port}"),
                               (True, "MQTT: may publish on " + settings.prefix + "/#")]
    sub.stop()


def test_tls_with_the_wrong_ca_is_one_clear_error(mosquitto: MosquittoServer) -> None:
    assert mosquitto.tls is not None and mosquitto.tls_port is not None
    settings = settings_for(mosquitto, host="localhost", port=mosquitto.tls_port, tls=True,
                            ca_file=mosquitto.tls.other_ca_cert)
    with pytest.raises(ConfigError) as caught:
        MqttOutput(settings).start()
    assert str(caught.value) == (
        f"TLS with the MQTT broker localhost:{mosquitto.tls_port} failed (self-signed certificate in certificate "
        "chain): fix P1_MQTT_CA_FILE (the CA that signed the broker's certificate)")
    assert check(settings) == [(False, f"MQTT: {caught.value}")]


def test_wrong_password_is_one_clear_error_without_the_password(mosquitto: MosquittoServer) -> None:
    settings = settings_for(mosquitto, user=("p1logger", "not-the-password"))
    with pytest.raises(ConfigError) as caught:
        MqttOutput(settings).start()
    assert str(caught.value) == (
        f"the MQTT broker 127.0.0.1:{mosquitto.port} refused user 'p1logger' (Not authorized): fix the user in "
        "P1_MQTT_URL or the password in P1_MQTT_PASSWORD_FILE")
    assert "not-the-password" not in repr(settings)
    assert check(settings) == [(False, f"MQTT: {caught.value}")]


def test_doctor_shows_a_publish_the_acl_refuses(mosquitto: MosquittoServer, outputs: list[MqttOutput],
                                                meter: Telegram) -> None:
    settings = settings_for(mosquitto, user=READONLY_USER)
    assert check(settings) == [
        (True, f"MQTT: connected to mqtt://reader@127.0.0.1:{mosquitto.port}"),
        (False, f"MQTT: the broker refused a publish on {settings.prefix}/doctor (Not authorized): let user reader "
                f"publish to {settings.prefix}/# in its ACL"),
        (False, f"MQTT: the broker refused a publish on {settings.discovery_prefix}/sensor/p1logger_doctor/check/"
                f"config (Not authorized): let user reader publish to {settings.discovery_prefix}/# in its ACL"),
    ]
    # At run time the refusals are counted (and logged at a bounded rate), never fatal.
    output = start(outputs, settings)
    output.submit(Record(meter, T0))
    wait_until(confirmed(output))
    assert output.refused == output.acked == 1 + 39 + 1
    good = settings_for(mosquitto)
    assert check(good) == [
        (True, f"MQTT: connected to mqtt://p1logger@127.0.0.1:{mosquitto.port}"),
        (True, f"MQTT: may publish on {good.prefix}/#"),
        (True, f"MQTT: may publish on {good.discovery_prefix}/#"),
    ]


def test_an_absent_broker_is_not_fatal_and_is_connected_to_later(broker: MosquittoServer,
                                                                  outputs: list[MqttOutput],
                                                                  meter: Telegram) -> None:
    broker.stop()
    settings = settings_for(broker, discovery_prefix=None)
    output = start(outputs, settings)  # no error: the readings wait in the backlog
    output.submit(Record(meter, T0))
    wait_until(lambda: output.queued == 1)  # the state; "online" follows the connection
    assert not output.connected
    broker.start()
    sub = Subscriber(broker, [f"{settings.prefix}/#"]).start()
    wait_until(confirmed(output), timeout_s=30)
    assert output.dropped == 0
    sub.stop()


def test_submit_never_blocks_and_counts_what_it_drops(mosquitto: MosquittoServer, meter: Telegram) -> None:
    output = MqttOutput(settings_for(mosquitto), queue_max=3)  # not started: nothing takes from the queue
    for i in range(10):
        output.submit(Record(meter, T0 + i))
    assert output.dropped == 7
    assert output.health()["dropped"] == 7


def test_tls_to_the_plain_listener_is_not_fatal_but_says_what_to_check(
        mosquitto: MosquittoServer, outputs: list[MqttOutput], caplog: pytest.LogCaptureFixture) -> None:
    # The plain listener drops a TLS hello like a broker that is restarting would: not a configuration
    # error for sure, so the logger runs on, and the warning names the likely mistake.
    assert mosquitto.tls is not None
    settings = settings_for(mosquitto, tls=True, ca_file=mosquitto.tls.ca_cert)
    start(outputs, settings)
    assert (f"MQTT broker mqtts://p1logger@127.0.0.1:{mosquitto.port} is not reachable (Connection reset by peer); "
            f"readings wait for it (up to 10000 messages); if this lasts, check that port {mosquitto.port} is the "
            "broker's TLS listener") in caplog.messages


@pytest.mark.slow
def test_discovery_is_sent_again_on_every_reconnect(broker: MosquittoServer, outputs: list[MqttOutput],
                                                    meter: Telegram) -> None:
    settings = settings_for(broker)
    ha = Subscriber(broker, [f"{settings.discovery_prefix}/+/+/+/config", f"{settings.prefix}/status"],
                    client_id="ha-reconnect", persistent=True).start()
    output = start(outputs, settings)
    output.submit(Record(meter, T0))
    wait_until(confirmed(output))
    ha.wait_for(lambda ms: len([m for m in ms if m.topic.endswith("/config")]) == 39)
    broker.stop()
    wait_until(lambda: not output.connected)
    ha.clear()
    broker.start()
    # Live (not retained) configs after the restart: sent again by p1logger, not replayed by the broker.
    messages = ha.wait_for(lambda ms: len({m.topic for m in ms if m.topic.endswith("/config") and not m.retain}) == 39
                           and any(m.payload == b"online" for m in ms), timeout_s=30)
    configs = {m.topic: m.json() for m in messages if m.topic.endswith("/config") and not m.retain}
    assert configs == discovery.configs(output.topics, "1SAG3101021605", state.build_state(meter, T0).keys(),
                                        "e-MUCS 50217")


def test_a_dead_worker_says_so_in_its_health_without_stopping_the_logger(
        mosquitto: MosquittoServer, outputs: list[MqttOutput], meter: Telegram) -> None:
    output = start(outputs, settings_for(mosquitto, discovery_prefix=None))
    output.submit(Record(meter, T0))
    wait_until(confirmed(output))
    assert output.health()["state"] == "up"
    output.submit(contracts.Record(None, float(T0 + 1), T0 + 1, (), {}))  # type: ignore[arg-type]  # a bug's record
    wait_until(lambda: output.health()["state"] == "failed", what="the failed state")
    health = output.health()
    assert (health["dropping"], health["last_write_error"]) == (True, "the output failed: AttributeError")
    assert getattr(output, "failure", None) is None  # the pipeline stops the logger on `failure`: MQTT must not


def test_two_loggers_with_one_client_id_say_so_once_instead_of_logging_every_reconnect(
        mosquitto: MosquittoServer, outputs: list[MqttOutput], caplog: pytest.LogCaptureFixture) -> None:
    settings = settings_for(mosquitto, reconnect_min_s=1.0, reconnect_max_s=1.0)
    caplog.set_level(logging.INFO, logger="p1logger.outputs.mqtt")
    first = start(outputs, settings)
    second = start(outputs, settings)
    wait_until(lambda: first.taken_over >= 1 and second.taken_over >= 1, what="the fight seen", timeout_s=30.0)
    said = [record.getMessage() for record in caplog.records]
    wait_until(lambda: first.taken_over + second.taken_over >= 8, what="more of the fight", timeout_s=30.0)
    # Up to the second short connection each output logs its state changes; from then on, only one
    # warning a minute, naming the setting to change: the six reconnects since added nothing.
    assert [record.getMessage() for record in caplog.records] == said
    takeovers = [message for message in said if "is another client connected with the same client id" in message]
    assert len(takeovers) == 2, said  # one per output
    assert all(f"{settings.client_id!r}? Give each logger its own P1_MQTT_CLIENT_ID" in m for m in takeovers)
