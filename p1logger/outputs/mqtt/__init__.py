"""MQTT output with Home Assistant discovery (docs/home-assistant.md).

On when ``P1_MQTT_URL`` is set: beside InfluxDB by default, alone with
``P1_OUTPUT=mqtt``. Its settings are declared in ``settings.py``.
"""

from __future__ import annotations

from typing import Any

from p1logger.contracts import Check, Output, RunContext
from p1logger.errors import ConfigError
from p1logger.outputs import OutputSpec, selected
from p1logger.outputs.mqtt.settings import MqttSettings, add_arguments, from_args


def _enabled(settings: Any) -> bool:
    return bool(getattr(settings, "mqtt_url", None)) or "mqtt" in selected(settings)


def _settings(settings: Any) -> MqttSettings:
    mqtt = from_args(settings)
    if mqtt is None:
        raise ConfigError("--output mqtt needs a broker: set P1_MQTT_URL (mqtt://user@host:1883)")
    return mqtt


def _create(settings: Any, context: RunContext) -> Output:
    from p1logger.outputs.mqtt.output import MqttOutput

    return MqttOutput(_settings(settings))


def _check(settings: Any) -> list[Check]:
    from p1logger.outputs.mqtt.output import check

    try:
        mqtt = _settings(settings)
    except ConfigError as exc:
        return [Check(False, f"MQTT: {exc}")]
    return [Check(ok, message) for ok, message in check(mqtt)]


SPEC = OutputSpec(name="mqtt", add_arguments=add_arguments, enabled=_enabled, create=_create, check=_check)
