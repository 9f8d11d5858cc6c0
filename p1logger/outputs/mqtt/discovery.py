"""Home Assistant MQTT discovery: one retained config per sensor, one device per meter.

Pure: no I/O. Which device class, state class and unit a sensor gets is one
table (``_RULES``), matched on the state key, whose unit suffix already says
what it is. Home Assistant's Energy dashboard takes a sensor only with

- grid import/export: device class ``energy``, state class ``total`` or
  ``total_increasing``, an energy unit (kWh);
- gas: device class ``gas``, unit m³ (or ft³, CCF);
- water: device class ``water``, unit m³ (or L, gal, ft³, CCF);
- power for "now": device class ``power``, state class ``measurement``, W or kW;

(homeassistant/components/sensor/const.py: DEVICE_CLASS_UNITS and
DEVICE_CLASS_STATE_CLASSES). Note that Home Assistant writes cubic metres as
"m³", not "m3": the state keys keep ``m3``, the discovery unit may not.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from p1logger import __version__

ORIGIN = {"name": "p1logger", "sw_version": __version__}
AVAILABLE = "online"
NOT_AVAILABLE = "offline"
DIAGNOSTIC = "diagnostic"

# The logger's own health, published on <prefix>/health and shown as diagnostics of every meter.
HEALTH_KEYS = (
    "telegrams_ok",
    "telegrams_rejected",
    "telegrams_dropped",
    "points_dropped",
    "spool_points",
    "last_telegram_age_s",
    "mqtt_dropped",
)


@dataclass(frozen=True)
class SensorSpec:
    component: str  # "sensor" or "binary_sensor"
    device_class: str | None = None
    state_class: str | None = None
    unit: str | None = None
    entity_category: str | None = None
    precision: int | None = None


_TOTAL_INCREASING = "total_increasing"
_MEASUREMENT = "measurement"

# (key pattern, spec), first match wins. Patterns are matched against the whole state key.
_RULES: tuple[tuple[re.Pattern[str], SensorSpec], ...] = tuple(
    (re.compile(pattern), spec)
    for pattern, spec in (
        (r"meter|dsmr_version|emucs_version|breaker_state", SensorSpec("sensor", entity_category=DIAGNOSTIC)),
        (r"time|(gas|water|heat)(_ch\d)?_time", SensorSpec("sensor", "timestamp", entity_category=DIAGNOSTIC)),
        (r"energy_(import|export)_(t\d|total)_kwh", SensorSpec("sensor", "energy", _TOTAL_INCREASING, "kWh", precision=3)),
        (r"power_(import|export)(_l\d)?_w", SensorSpec("sensor", "power", _MEASUREMENT, "W", precision=0)),
        (r"voltage_l\d_v", SensorSpec("sensor", "voltage", _MEASUREMENT, "V", precision=1)),
        (r"current_l\d_a", SensorSpec("sensor", "current", _MEASUREMENT, "A", precision=2)),
        (r"gas(_ch\d)?_volume_m3", SensorSpec("sensor", "gas", _TOTAL_INCREASING, "m³", precision=3)),
        (r"water(_ch\d)?_volume_m3", SensorSpec("sensor", "water", _TOTAL_INCREASING, "m³", precision=3)),
        (r"heat(_ch\d)?_energy_gj", SensorSpec("sensor", "energy", _TOTAL_INCREASING, "GJ", precision=3)),
        (r"tariff", SensorSpec("sensor")),
        (r"capacity_peak_warning", SensorSpec("binary_sensor", "problem")),
        (r"cost_prices_missing", SensorSpec("binary_sensor", "problem", entity_category=DIAGNOSTIC)),
        (r"cost_quarter_start", SensorSpec("sensor", "timestamp", entity_category=DIAGNOSTIC)),
        (r"limiter_threshold_kw", SensorSpec("sensor", "power", None, "kW", DIAGNOSTIC)),
        (r"fuse_threshold_l\d_a", SensorSpec("sensor", "current", None, "A", DIAGNOSTIC)),
        (r"(long_)?power_failures|voltage_(sags|swells)_l\d",
         SensorSpec("sensor", None, _TOTAL_INCREASING, None, DIAGNOSTIC)),
        # Derived figures (capacity tariff, energy cost) by the unit their name carries; a price before an energy.
        (r".*_kw", SensorSpec("sensor", "power", _MEASUREMENT, "kW", precision=3)),
        (r".*_eur_per_kwh", SensorSpec("sensor", None, _MEASUREMENT, "EUR/kWh", precision=4)),
        # A quarter's energy, starting again from 0: no state class, so that the Energy dashboard offers
        # only the meter's own counters as sources.
        (r".*_kwh", SensorSpec("sensor", "energy", None, "kWh", precision=3)),
        (r".*_eur", SensorSpec("sensor", "monetary", None, "EUR", precision=2)),
    )
)

_HEALTH_RULES: dict[str, SensorSpec] = {
    "last_telegram_age_s": SensorSpec("sensor", "duration", _MEASUREMENT, "s", DIAGNOSTIC, precision=0),
}
_HEALTH_COUNTER = SensorSpec("sensor", None, _MEASUREMENT, None, DIAGNOSTIC)


def sensor_spec(key: str) -> SensorSpec:
    for pattern, spec in _RULES:
        if pattern.fullmatch(key):
            return spec
    return SensorSpec("sensor")


_WORDS = {"kwh": "", "w": "", "kw": "", "v": "", "a": "", "m3": "", "gj": "", "eur": "", "s": "", "ch": "channel"}


def sensor_name(key: str) -> str:
    """``energy_import_t1_kwh`` -> ``Energy import tariff 1``: the key in words, without its unit."""
    words: list[str] = []
    for part in key.split("_"):
        if re.fullmatch(r"l\d", part):
            words.append(part.upper())
        elif re.fullmatch(r"t\d", part):
            words.append(f"tariff {part[1]}")
        elif re.fullmatch(r"ch\d", part):
            words.append(f"channel {part[2]}")
        elif part in _WORDS:
            if _WORDS[part]:
                words.append(_WORDS[part])
        else:
            words.append(part)
    text = " ".join(words) or key
    return text[0].upper() + text[1:]


def node_id(meter: str) -> str:
    """The meter as a discovery node id and topic level: letters, digits, - and _ only."""
    return "p1logger_" + re.sub(r"[^A-Za-z0-9_-]", "_", meter)


@dataclass(frozen=True)
class Topics:
    """Where everything goes, from the two prefixes."""

    prefix: str = "p1logger"
    discovery_prefix: str = "homeassistant"

    @property
    def availability(self) -> str:
        return f"{self.prefix}/status"

    @property
    def health(self) -> str:
        return f"{self.prefix}/health"

    @property
    def birth(self) -> str:
        """Home Assistant's own status: "online" after every start."""
        return f"{self.discovery_prefix}/status"

    def meter_level(self, meter: str) -> str:
        return node_id(meter)[len("p1logger_"):]

    def state(self, meter: str) -> str:
        return f"{self.prefix}/{self.meter_level(meter)}/state"

    def field(self, meter: str, key: str) -> str:
        return f"{self.prefix}/{self.meter_level(meter)}/{key}"

    def config(self, component: str, meter: str, key: str) -> str:
        return f"{self.discovery_prefix}/{component}/{node_id(meter)}/{key}/config"

    def config_filter(self) -> str:
        """Every config of any node: the retained ones of p1logger's nodes are checked for leftovers."""
        return f"{self.discovery_prefix}/+/+/+/config"

    def owns(self, topic: str, payload: bytes) -> bool:
        """Is this retained config one of p1logger's, for this prefix?"""
        parts = topic.split("/")
        if len(parts) < 4 or not parts[-3].startswith("p1logger_"):
            return False
        try:
            config = json.loads(payload)
        except ValueError:
            return False
        state_topic = config.get("state_topic") if isinstance(config, dict) else None
        return isinstance(state_topic, str) and state_topic.startswith(f"{self.prefix}/")


def device(meter: str, model: str | None) -> dict[str, object]:
    info: dict[str, object] = {
        "identifiers": [node_id(meter)],
        "name": f"P1 meter {meter}",
        "serial_number": meter,
    }
    if model:
        info["model"] = model
    return info


def _config(
    topics: Topics, meter: str, key: str, spec: SensorSpec, state_topic: str, unique_id: str, name: str,
    model: str | None,
) -> dict[str, object]:
    config: dict[str, object] = {
        "name": name,
        "unique_id": unique_id,
        "state_topic": state_topic,
        "availability_topic": topics.availability,
        "payload_available": AVAILABLE,
        "payload_not_available": NOT_AVAILABLE,
        "device": device(meter, model),
        "origin": ORIGIN,
        "qos": 1,
    }
    if spec.component == "binary_sensor":
        config["value_template"] = f"{{{{ 'ON' if value_json.{key} else 'OFF' }}}}"
    else:
        config["value_template"] = f"{{{{ value_json.{key} }}}}"
    for name_, value in (
        ("device_class", spec.device_class),
        ("state_class", spec.state_class),
        ("unit_of_measurement", spec.unit),
        ("entity_category", spec.entity_category),
        ("suggested_display_precision", spec.precision),
    ):
        if value is not None:
            config[name_] = value
    return config


def sensor_config(topics: Topics, meter: str, key: str, model: str | None = None) -> tuple[str, dict[str, object]]:
    """(config topic, config) for one key of a meter's state."""
    spec = sensor_spec(key)
    unique_id = f"{node_id(meter)}_{key}"
    config = _config(topics, meter, key, spec, topics.state(meter), unique_id, sensor_name(key), model)
    return topics.config(spec.component, meter, key), config


def health_config(topics: Topics, meter: str, key: str, model: str | None = None) -> tuple[str, dict[str, object]]:
    """(config topic, config) for one of the logger's health figures, shown on a meter's device."""
    spec = _HEALTH_RULES.get(key, _HEALTH_COUNTER)
    object_key = f"health_{key}"
    unique_id = f"{node_id(meter)}_{object_key}"
    name = "Logger " + sensor_name(key).lower()
    config = _config(topics, meter, key, spec, topics.health, unique_id, name, model)
    return topics.config(spec.component, meter, object_key), config


def configs(
    topics: Topics, meter: str, keys: Iterable[str], model: str | None = None, *, health: bool = True
) -> dict[str, dict[str, object]]:
    """Every config topic -> config for a meter whose state has ``keys``, in a stable order."""
    found: dict[str, dict[str, object]] = {}
    for key in sorted(keys):
        topic, config = sensor_config(topics, meter, key, model)
        found[topic] = config
    if health:
        for key in HEALTH_KEYS:
            topic, config = health_config(topics, meter, key, model)
            found[topic] = config
    return found


def encode(config: Mapping[str, object]) -> bytes:
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode("utf-8")
