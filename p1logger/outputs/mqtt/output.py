"""The MQTT output: every telegram's state on a broker, and Home Assistant discovery.

One worker thread of its own, fed by a bounded queue, so a slow or absent
broker never delays the writer or InfluxDB. paho-mqtt's network thread does the
I/O; messages go out at QoS 1 in a persistent MQTT 5 session (clean start off,
a session expiry of a week), so what the broker has not acknowledged is sent
again after a reconnect. While the broker is away paho holds at most
``backlog_max_messages``; past that new messages are dropped and counted.

At start-up a TLS failure or a refused user name/password is a ConfigError
(one line, exit 2); an unreachable broker is not: the logger runs and connects
when the broker comes, with paho's backoff between attempts.
"""

from __future__ import annotations

import logging
import queue
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from p1logger.contracts import Record
from p1logger.errors import ConfigError
from p1logger.outputs.mqtt import discovery, state
from p1logger.outputs.mqtt.settings import MqttSettings

logger = logging.getLogger(__name__)

SESSION_EXPIRY_S = 7 * 24 * 3600
QOS = 1
_RETAINED_SEEN_MAX = 10000  # owned retained configs remembered for cleanup; more is a broker full of meters
# Room in paho's queue beyond the backlog of readings, for availability and discovery: these are never
# dropped for a full backlog (Home Assistant must learn "online" after an outage), and there are only as
# many as the meters have sensors.
_CONTROL_ROOM = 2000
_LOG_EVERY_S = 60.0
_STALL_S = 10.0  # at exit, a broker that acknowledges nothing for this long is given up on
# CONNACK reason codes that mean the user name or password is wrong (v5 134, 135; v3 4, 5).
_AUTH_FAILURES = {134, 135, 4, 5}
_SESSION_TAKEN_OVER = 142  # MQTT 5 DISCONNECT reason code
_FLAP_S = 30.0  # a connection dropped sooner than this counts as short


class _Throttled:
    """Logs a recurring problem at once, then at most once per interval with a count."""

    def __init__(self, interval_s: float = _LOG_EVERY_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self._next_at = 0.0
        self._suppressed = 0
        self._lock = threading.Lock()

    def log(self, level: int, message: str, *args: object) -> None:
        with self._lock:
            now = self.clock()
            if now < self._next_at:
                self._suppressed += 1
                return
            suppressed, self._suppressed = self._suppressed, 0
            self._next_at = now + self.interval_s
        suffix = f" ({suppressed} more since the last report)" if suppressed else ""
        logger.log(level, message + suffix, *args)


def _reason(code: Any) -> tuple[int, str]:
    value = getattr(code, "value", code)
    return int(value) if isinstance(value, int) else -1, str(code)


def new_client(settings: MqttSettings, client_id: str, *, persistent: bool) -> mqtt.Client:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    if settings.username:
        client.username_pw_set(settings.username, settings.password)
    if settings.tls:
        client.tls_set(ca_certs=str(settings.ca_file) if settings.ca_file else None, cert_reqs=ssl.CERT_REQUIRED)
    client.reconnect_delay_set(max(1, round(settings.reconnect_min_s)), max(1, round(settings.reconnect_max_s)))
    client.max_queued_messages_set(settings.backlog_max_messages + _CONTROL_ROOM)
    if persistent:
        client.will_set(discovery.Topics(settings.prefix).availability, discovery.NOT_AVAILABLE, qos=QOS, retain=True)
    return client


def _connect_properties(persistent: bool) -> Properties:
    properties = Properties(PacketTypes.CONNECT)
    if persistent:
        properties.SessionExpiryInterval = SESSION_EXPIRY_S
    return properties


def tls_error(settings: MqttSettings, exc: BaseException) -> ConfigError:
    reason = str(getattr(exc, "verify_message", None) or getattr(exc, "reason", None) or exc)
    if "hostname" in reason.lower():
        fix = "the host in P1_MQTT_URL: use the name the broker's certificate was made for"
    elif "certificate" in reason.lower() or settings.ca_file is None:
        fix = "P1_MQTT_CA_FILE (the CA that signed the broker's certificate)"
    else:
        fix = "the broker's TLS set-up, or the port in P1_MQTT_URL (is it the TLS listener?)"
    return ConfigError(f"TLS with the MQTT broker {settings.host}:{settings.port} failed ({reason}): fix {fix}")


def auth_error(settings: MqttSettings, reason: str) -> ConfigError:
    who = f"user {settings.username!r}" if settings.username else "a client without user name"
    return ConfigError(f"the MQTT broker {settings.host}:{settings.port} refused {who} ({reason}): fix the user in "
                       "P1_MQTT_URL or the password in P1_MQTT_PASSWORD_FILE")


@dataclass
class _Connack:
    event: threading.Event
    code: int = -1
    reason: str = ""


class MqttOutput:
    """The Output contract (``p1logger.contracts.Output``) for an MQTT broker."""

    name = "mqtt"
    wants_figures = True  # capacity and cost figures go into the state

    def __init__(self, settings: MqttSettings, *, queue_max: int = 3600) -> None:
        self.settings = settings
        self.topics = discovery.Topics(settings.prefix, settings.discovery_prefix or "homeassistant")
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue(queue_max)
        self._averagers: dict[str, state.Averager] = {}
        self._latest: dict[str, state.State] = {}  # meter -> latest published state, re-sent after HA restarts
        self._models: dict[str, str | None] = {}
        self._announced: dict[str, dict[str, bytes]] = {}  # meter -> config topic -> payload
        self._known_keys: dict[str, set[str]] = {}  # meter -> every state key seen this run
        self._retained_seen: set[str] = set()
        self._cleaned = False  # leftovers of earlier runs removed: no need to watch configs any more
        self._subscribe_mid = -1
        self._subscribed_at: int | None = None  # telegrams seen when the config subscription was acknowledged
        self._telegrams = 0
        self._resync = threading.Event()
        self._birth = threading.Event()  # Home Assistant restarted: it wants the latest state too
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._client: mqtt.Client | None = None
        self._connack = _Connack(threading.Event())
        self.connected = False
        # Counters (health.json, <prefix>/health).
        self.queued = 0  # handed to paho at QoS 1
        # Message ids waiting for the broker's PUBACK: readings (bounded by the backlog) and control messages.
        self._waiting: dict[int, bool] = {}  # mid -> is a reading
        self._early_acks: set[int] = set()  # acknowledged before publish() returned its mid
        self._waiting_readings = 0  # how many of _waiting are readings
        self.acked = 0  # acknowledged by the broker
        self.dropped = 0  # input queue full, backlog full, or unconfirmed at exit
        self.refused = 0  # the broker answered "not authorized" (ACL) or another failure
        self.last_ack_at: float | None = None  # wall clock of the broker's latest acknowledgement
        self.last_error = ""
        self.states_published = 0
        self._drop_log = _Throttled()
        self._refuse_log = _Throttled()
        self._takeover_log = _Throttled()
        self.taken_over = 0  # disconnects right after connecting, one after another: another client with this id?
        self._connected_at = 0.0
        self._short_connections = 0
        self._state_log = ""
        self.worker_error: BaseException | None = None  # the worker died (not `failure`: that stops the logger)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        settings = self.settings
        client = new_client(settings, settings.client_id, persistent=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        self._client = client
        properties = _connect_properties(True)
        reachable = True
        try:
            client.connect(settings.host, settings.port, settings.keepalive_s, clean_start=False,
                           properties=properties)
        except ssl.SSLError as exc:
            raise tls_error(settings, exc) from None
        except OSError as exc:
            # Not a configuration error: the broker may come later, and the backlog holds what it misses.
            reachable = False
            hint = f"; if this lasts, check that port {settings.port} is the broker's TLS listener" \
                if settings.tls and isinstance(exc, ConnectionResetError) else ""
            logger.warning("MQTT broker %s is not reachable (%s); readings wait for it (up to %d messages)%s",
                           settings.describe(), exc.strerror or exc, settings.backlog_max_messages, hint)
            client.connect_async(settings.host, settings.port, settings.keepalive_s, clean_start=False,
                                 properties=properties)
        client.loop_start()
        if reachable and self._connack.event.wait(settings.connect_timeout_s):
            if self._connack.code in _AUTH_FAILURES:
                self._stop.set()
                client.loop_stop()
                client.disconnect()
                raise auth_error(settings, self._connack.reason)
        self._worker = threading.Thread(target=self._run, name="p1-mqtt", daemon=True)
        self._worker.start()

    def submit(self, record: Record) -> None:
        self._put(("record", record))

    def submit_health(self, snapshot: Mapping[str, object], lines: Sequence[str] = ()) -> None:
        self._put(("health", dict(snapshot)))

    def observe_raw(self, raw: bytes, valid: bool, received_at_s: float) -> None:
        """Raw telegrams are not published."""

    def _put(self, item: tuple[str, Any]) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            # Never block the writer: make room by dropping the oldest, counted.
            try:
                self._queue.get_nowait()
                self._count_drop("the MQTT queue is full (the worker cannot keep up)")
            except queue.Empty:
                pass
            try:
                self._queue.put_nowait(item)
            except queue.Full:
                self._count_drop("the MQTT queue is full (the worker cannot keep up)")

    def close(self, budget_s: float | None) -> None:
        """Publish what is queued, then wait for the broker's acknowledgements: up to ``budget_s``, or, with
        None (a file is done), for as long as the broker keeps acknowledging."""
        deadline = None if budget_s is None else time.monotonic() + budget_s
        self._stop.set()
        if self._worker is not None:
            self._worker.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        client = self._client
        if client is None:
            return
        progress_at, acked = time.monotonic(), self.acked
        while self.queued - self.acked > 0 and self.connected:
            now = time.monotonic()
            if self.acked != acked:
                progress_at, acked = now, self.acked
            if (deadline is not None and now >= deadline) or now - progress_at > _STALL_S:
                break
            time.sleep(0.02)
        unconfirmed = self.queued - self.acked
        if unconfirmed > 0:
            self.dropped += unconfirmed
            logger.warning("%d MQTT messages were not confirmed by the broker before exit", unconfirmed)
        client.disconnect()
        client.loop_stop()

    def backlog(self) -> int:
        """Readings handed to the broker and not yet acknowledged."""
        with self._lock:
            return self._waiting_readings

    def health(self) -> Mapping[str, object]:
        """health.json's ``outputs.mqtt``. ``dropping`` (new messages are lost now: the backlog is full, or the
        worker died) is what makes ``p1logger health`` fail once the broker has been away too long."""
        backlog = self.backlog()
        failed = self.worker_error is not None
        return {
            "state": "failed" if failed else "up" if self.connected else "down",
            "broker": self.settings.describe(),
            "last_write_ok_at": self.last_ack_at,
            "last_write_error": self.last_error,
            "published": self.acked,
            "backlog": backlog,
            "backlog_max": self.settings.backlog_max_messages,
            "dropping": failed or backlog >= self.settings.backlog_max_messages,
            "dropped": self.dropped,
            "refused": self.refused,
        }

    # ------------------------------------------------------------------ paho callbacks (network thread)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        code, reason = _reason(reason_code)
        self._connack.code, self._connack.reason = code, reason
        if reason_code.is_failure:
            self.last_error = f"connection refused: {reason}"
            self._set_state(f"refused: {reason}", logging.ERROR)
            self._connack.event.set()
            return
        self.connected = True
        self._connected_at = time.monotonic()
        if self._short_connections < 2:
            self._set_state(f"connected to {self.settings.describe()}", logging.INFO)
        subscriptions = [(self.topics.birth, QOS)]
        if self.settings.discovery_prefix and not self._cleaned:
            # Only until the leftovers are cleaned up: a persistent session would otherwise collect every
            # discovery message of every device while p1logger is down.
            subscriptions.append((self.topics.config_filter(), QOS))
        _, mid = client.subscribe(subscriptions)
        self._subscribe_mid = -1 if mid is None else mid
        # Availability and discovery again: the broker may have lost them.
        self._resync.set()
        # Last: start() returns on this, and "online" must go out before the first reading.
        self._connack.event.set()

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any,
                      properties: Any) -> None:
        if mid == self._subscribe_mid:
            # The broker sends the retained configs right after this acknowledgement.
            self._subscribed_at = self._telegrams

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                       properties: Any) -> None:
        self.connected = False
        if self._stop.is_set():
            return
        self.last_error = f"disconnected: {reason_code}"
        lasted_s = time.monotonic() - self._connected_at
        self._short_connections = self._short_connections + 1 if lasted_s < _FLAP_S else 0
        if _reason(reason_code)[0] == _SESSION_TAKEN_OVER or self._short_connections >= 2:
            # Two loggers with one client id push each other off the broker every second or so (a broker
            # may say so, or just close): say why, once a minute, not every disconnect and reconnect.
            self._takeover_log.log(
                logging.WARNING, "MQTT broker %s keeps dropping this connection right after it is made (%s): is "
                "another client connected with the same client id %r? Give each logger its own "
                "P1_MQTT_CLIENT_ID", self.settings.describe(), reason_code, self.settings.client_id)
            self.taken_over += 1  # after the warning: whoever sees the count sees what was said
            return
        self._set_state(f"disconnected ({reason_code}); reconnecting", logging.WARNING)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        topic = message.topic
        if topic == self.topics.birth:
            if bytes(message.payload).strip() == b"online":
                logger.info("Home Assistant started: sending discovery again")
                self._birth.set()
                self._resync.set()
            return
        if message.retain and self.topics.owns(topic, bytes(message.payload)):
            with self._lock:
                if len(self._retained_seen) < _RETAINED_SEEN_MAX:
                    self._retained_seen.add(topic)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        with self._lock:
            reading = self._waiting.pop(mid, None)
            if reading is None:
                self._early_acks.add(mid)
            elif reading:
                self._waiting_readings -= 1
        self.acked += 1
        self.last_ack_at = time.time()
        if reason_code.is_failure:
            self.refused += 1
            self.last_error = f"publish refused: {reason_code}"
            self._refuse_log.log(logging.ERROR, "the MQTT broker refused a publish (%s): let user %s publish to "
                                 "%s/# and %s/# in the broker's ACL", reason_code, self.settings.username,
                                 self.settings.prefix, self.topics.discovery_prefix)

    def _set_state(self, text: str, level: int) -> None:
        # Once per change, however long an outage lasts.
        if text != self._state_log:
            self._state_log = text
            logger.log(level, "MQTT %s", text)

    # ------------------------------------------------------------------ worker thread

    def _run(self) -> None:
        try:
            while True:
                try:
                    kind, item = self._queue.get(timeout=0.2)
                except queue.Empty:
                    kind, item = "", None
                if self._resync.is_set():
                    self._resync.clear()
                    birth = self._birth.is_set()
                    self._birth.clear()
                    self._send_all(with_state=birth)
                if kind == "record":
                    self._handle_record(item)
                elif kind == "health":
                    self._handle_health(item)
                self._cleanup()
                if self._stop.is_set() and self._queue.empty():
                    break
            self._finish()
        except Exception as exc:  # noqa: BLE001 - MQTT must never take the logger down; InfluxDB goes on
            logger.exception("the MQTT output failed; it publishes nothing more until the logger restarts")
            self.last_error = f"the output failed: {type(exc).__name__}"
            self.worker_error = exc

    def _publish(self, topic: str, payload: bytes | str, retain: bool = False, *, reading: bool = False) -> None:
        """Hand one message to paho at QoS 1. A reading is dropped (counted) when the backlog is full."""
        assert self._client is not None
        if reading and self.backlog() >= self.settings.backlog_max_messages:
            self._count_drop(f"the MQTT backlog is full ({self.settings.backlog_max_messages} messages)")
            return
        # Not under self._lock: paho calls on_publish holding its own lock, which publish() takes too.
        info = self._client.publish(topic, payload, qos=QOS, retain=retain)
        if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            self._count_drop(f"paho's queue is full ({self.settings.backlog_max_messages + _CONTROL_ROOM} messages)")
            return
        self.queued += 1
        with self._lock:
            if info.mid in self._early_acks:
                self._early_acks.discard(info.mid)
            else:
                self._waiting[info.mid] = reading
                self._waiting_readings += reading

    def _count_drop(self, why: str) -> None:
        self.dropped += 1
        self._drop_log.log(logging.WARNING, "MQTT message dropped: %s; %d dropped so far", why, self.dropped)

    def _handle_record(self, record: Record) -> None:
        telegram = record.telegram
        meter = telegram.meter_id
        self._telegrams += 1
        current = state.build_state(telegram, record.time_s, record.figures)
        averager = self._averagers.get(meter)
        if averager is None:
            averager = self._averagers[meter] = state.Averager(self.settings.interval_s)
            self._models[meter] = _model(current)
        due = averager.add(current, record.time_s)
        if due is not None:
            self._publish_state(meter, due)

    def _publish_state(self, meter: str, due: state.State) -> None:
        self._announce(meter, due.keys())
        self._latest[meter] = due
        self._publish(self.topics.state(meter), state.encode(due), reading=True)
        self.states_published += 1
        if self.settings.per_field_topics:
            for key, value in sorted(due.items()):
                self._publish(self.topics.field(meter, key), state.field_payload(value), reading=True)

    def _announce(self, meter: str, keys: Any, *, again: bool = False) -> None:
        """Send the discovery configs this meter does not have yet (all of them when ``again``)."""
        if not self.settings.discovery_prefix:
            return
        announced = self._announced.setdefault(meter, {})
        known = self._known_keys.setdefault(meter, set())
        if not again and known.issuperset(keys):
            return
        # Keys are never forgotten within a run: a value missing from one telegram keeps its sensor.
        known.update(keys)
        for topic, config in discovery.configs(self.topics, meter, known, self._models.get(meter)).items():
            payload = discovery.encode(config)
            if again or announced.get(topic) != payload:
                announced[topic] = payload
                self._publish(topic, payload, retain=True)

    def _send_all(self, *, with_state: bool) -> None:
        """Availability and every discovery config; after Home Assistant's restart also the latest state,
        which it has not seen (after our own reconnect the backlog and the next telegram bring it)."""
        self._publish(self.topics.availability, discovery.AVAILABLE, retain=True)
        for meter, latest in list(self._latest.items()):
            self._announce(meter, latest.keys(), again=True)
            if with_state:
                self._publish(self.topics.state(meter), state.encode(latest))

    def _cleanup(self) -> None:
        """Empty retained configs for sensors and meters this run has not announced: Home Assistant removes them."""
        if not self.settings.discovery_prefix or self._cleaned or self._subscribed_at is None:
            return
        # Every retained config has arrived a couple of telegrams after the subscription.
        if self._telegrams < max(self.settings.cleanup_after_telegrams, self._subscribed_at + 2):
            return
        with self._lock:
            current = {topic for configs in self._announced.values() for topic in configs}
            stale = sorted(self._retained_seen - current)
            self._retained_seen.clear()
        for topic in stale:
            logger.info("removing the old Home Assistant config %s", topic)
            self._publish(topic, b"", retain=True)
        self._cleaned = True
        assert self._client is not None
        self._client.unsubscribe(self.topics.config_filter())

    def _handle_health(self, snapshot: Mapping[str, object]) -> None:
        values: dict[str, state.StateValue] = {}
        for key in discovery.HEALTH_KEYS:
            value = snapshot.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                values[key] = round(value, 3) if isinstance(value, float) else value
        values["mqtt_dropped"] = self.dropped
        self._publish(self.topics.health, state.encode(values), reading=True)

    def _finish(self) -> None:
        for meter, averager in self._averagers.items():
            pending = averager.take()
            if pending is not None:
                self._publish_state(meter, pending)
        # A graceful disconnect sends no last will: say "offline" ourselves.
        self._publish(self.topics.availability, discovery.NOT_AVAILABLE, retain=True)


def _model(first: state.State) -> str | None:
    version = first.get("dsmr_version") or first.get("emucs_version")
    if isinstance(version, str) and version:
        return f"DSMR {version}" if "dsmr_version" in first else f"e-MUCS {version}"
    return None


# ---------------------------------------------------------------------- doctor


def check(settings: MqttSettings, timeout_s: float = 10.0) -> list[tuple[bool, str]]:
    """Connection, credentials and publish permission, for ``p1logger doctor``; publishes nothing retained."""
    results: list[tuple[bool, str]] = []
    client = new_client(settings, f"{settings.client_id}-doctor", persistent=False)
    connack = _Connack(threading.Event())
    acks: dict[int, str] = {}
    acked = threading.Condition()

    def on_connect(client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        connack.code, connack.reason = _reason(reason_code)
        connack.event.set()

    def on_publish(client: mqtt.Client, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        with acked:
            acks[mid] = "" if not reason_code.is_failure else str(reason_code)
            acked.notify_all()

    client.on_connect = on_connect
    client.on_publish = on_publish
    where = settings.describe()
    try:
        client.connect(settings.host, settings.port, settings.keepalive_s, clean_start=True)
    except ssl.SSLError as exc:
        return [(False, f"MQTT: {tls_error(settings, exc)}")]
    except OSError as exc:
        return [(False, f"MQTT: cannot reach the broker {where} ({exc.strerror or exc}): is it running, and are "
                        "the host and port in P1_MQTT_URL right?")]
    client.loop_start()
    try:
        if not connack.event.wait(timeout_s):
            return [(False, f"MQTT: the broker {where} did not answer within {timeout_s:g} s")]
        if connack.code in _AUTH_FAILURES:
            return [(False, f"MQTT: {auth_error(settings, connack.reason)}")]
        if connack.code != 0:
            return [(False, f"MQTT: the broker {where} refused the connection ({connack.reason})")]
        results.append((True, f"MQTT: connected to {where}"))
        topics = [(f"{settings.prefix}/doctor", b"p1logger doctor")]
        if settings.discovery_prefix:
            # An empty config removes nothing that exists: the node is p1logger's own test node.
            topics.append((f"{settings.discovery_prefix}/sensor/p1logger_doctor/check/config", b""))
        for topic, payload in topics:
            info = client.publish(topic, payload, qos=QOS)
            with acked:
                acked.wait_for(lambda: info.mid in acks, timeout_s)
            refused = acks.get(info.mid)
            if refused is None:
                results.append((False, f"MQTT: no acknowledgement for a publish on {topic} within {timeout_s:g} s"))
            elif refused:
                results.append((False, f"MQTT: the broker refused a publish on {topic} ({refused}): let user "
                                       f"{settings.username} publish to {topic.split('/')[0]}/# in its ACL"))
            else:
                results.append((True, f"MQTT: may publish on {topic.split('/')[0]}/#"))
        return results
    finally:
        client.disconnect()
        client.loop_stop()
