"""Home Assistant's rules for MQTT discovery sensors, as data, to check p1logger's configs against.

Taken from home-assistant/core, homeassistant/components/sensor/const.py
(DEVICE_CLASS_UNITS, DEVICE_CLASS_STATE_CLASSES) for the device classes
p1logger uses, and from the Energy dashboard's checks
(homeassistant/components/energy/validate.py): a grid, gas or water source must
have a state class of total or total_increasing, and a unit its device class
allows. Cubic metres are "m³" in Home Assistant.
"""

from __future__ import annotations

from typing import Any

DEVICE_CLASS_UNITS: dict[str, set[str | None]] = {
    "energy": {"J", "kJ", "MJ", "GJ", "mWh", "Wh", "kWh", "MWh", "GWh", "TWh", "cal", "kcal", "Mcal", "Gcal"},
    "power": {"mW", "W", "kW", "MW", "GW", "TW", "BTU/h"},
    "voltage": {"V", "mV", "µV", "kV", "MV"},
    "current": {"A", "mA"},
    "gas": {"m³", "ft³", "CCF", "MCF", "L"},
    "water": {"m³", "ft³", "CCF", "MCF", "gal", "L"},
    "monetary": {None, "EUR", "USD"},  # any ISO 4217 currency
    "duration": {"d", "h", "min", "s", "ms"},
    "timestamp": {None},
}
DEVICE_CLASS_STATE_CLASSES: dict[str, set[str | None]] = {
    "energy": {"total", "total_increasing", None},
    "power": {"measurement", None},
    "voltage": {"measurement", None},
    "current": {"measurement", None},
    "gas": {"total", "total_increasing", None},
    "water": {"total", "total_increasing", None},
    "monetary": {"total", None},
    "duration": {"measurement", "total", "total_increasing", None},
    "timestamp": {None},  # a timestamp sensor may not have a state class
}
BINARY_SENSOR_DEVICE_CLASSES = {"problem", "power", "running", "connectivity"}
ENTITY_CATEGORIES = {None, "diagnostic", "config"}
# Energy dashboard sources: (device class, units it accepts).
ENERGY_SOURCES = {
    "grid": ("energy", {"Wh", "kWh", "MWh", "GJ", "MJ"}),
    "gas": ("gas", {"m³", "ft³", "CCF"}),
    "water": ("water", {"m³", "ft³", "CCF", "gal", "L"}),
}
REQUIRED = {"name", "unique_id", "state_topic", "availability_topic", "device", "origin"}


def problems(component: str, config: dict[str, Any]) -> list[str]:
    """What Home Assistant would refuse or warn about in one sensor's discovery config."""
    found = [f"missing {key}" for key in sorted(REQUIRED - set(config))]
    device_class = config.get("device_class")
    state_class = config.get("state_class")
    unit = config.get("unit_of_measurement")
    if config.get("entity_category") not in ENTITY_CATEGORIES:
        found.append(f"entity_category {config.get('entity_category')!r}")
    if not config.get("device", {}).get("identifiers"):
        found.append("device without identifiers")
    if not config.get("origin", {}).get("name"):
        found.append("origin without name")
    if component == "binary_sensor":
        if device_class is not None and device_class not in BINARY_SENSOR_DEVICE_CLASSES:
            found.append(f"binary device class {device_class!r}")
        return found
    if device_class is None:
        if state_class not in (None, "measurement", "total", "total_increasing"):
            found.append(f"state class {state_class!r}")
        return found
    if device_class not in DEVICE_CLASS_UNITS:
        return found + [f"device class {device_class!r} is not in this table"]
    if unit not in DEVICE_CLASS_UNITS[device_class]:
        found.append(f"unit {unit!r} not allowed for {device_class}")
    if state_class not in DEVICE_CLASS_STATE_CLASSES[device_class]:
        found.append(f"state class {state_class!r} not allowed for {device_class}")
    return found


def energy_source(config: dict[str, Any]) -> str | None:
    """Which Energy dashboard source this sensor can be, if any."""
    if config.get("state_class") not in ("total", "total_increasing"):
        return None
    for source, (device_class, units) in ENERGY_SOURCES.items():
        if config.get("device_class") == device_class and config.get("unit_of_measurement") in units:
            return source
    return None


# The Energy dashboard's "use an entity with the current price" (validate.py, _async_validate_price_entity and
# ENERGY_PRICE_UNITS): a numeric state and a unit ending in "/" and an energy unit, e.g. "EUR/kWh". It asks for
# no device class; "monetary" would be wrong, as its unit must be a currency alone.
ENERGY_PRICE_UNITS = tuple(f"/{unit}" for unit in sorted(DEVICE_CLASS_UNITS["energy"]))


def price_entity_problems(config: dict[str, Any], state_value: Any) -> list[str]:
    """What the Energy dashboard would say about this sensor as a grid source's current price."""
    found: list[str] = []
    try:
        float(state_value)
    except (TypeError, ValueError):
        found.append(f"state {state_value!r} is not numeric")
    unit = config.get("unit_of_measurement")
    if not isinstance(unit, str) or not unit.endswith(ENERGY_PRICE_UNITS):
        found.append(f"unit {unit!r} is not a price per energy unit")
    if config.get("device_class") == "monetary":
        found.append("device class monetary takes a currency unit, not a price per kWh")
    return found
