"""What the MQTT output publishes for a telegram: one flat JSON state, in the units people read.

Pure: no I/O, no clock. Every key carries its unit (``power_import_l1_w``,
``energy_import_t1_kwh``, ``gas_volume_m3``), and every value is converted by
the tables in ``points.py``, so MQTT and InfluxDB can never disagree.

``Averager`` implements the interval option: at most one state per N seconds
of meter time, power figures averaged over the telegrams it covers, counters
and everything else taken from the latest telegram.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone

from p1logger.decode import Telegram
from p1logger.points import (
    INSTANT_MAP,
    TARIFF_OBIS,
    TOTAL_PHASE,
    UNITS_BY_SUFFIX,
    convert_reading,
    fill_totals,
    instant_obis,
    mbus_readings,
)

StateValue = float | int | str | bool | None
State = dict[str, StateValue]


def unit_suffix(key: str) -> str:
    return key.rsplit("_", 1)[-1]


def _state_key(measurement: str, field_name: str, phase: str | None) -> str:
    """``power``/``import_w``/``L1`` -> ``power_import_l1_w``: the measurement, the field, the phase, the unit."""
    base = field_name if field_name.startswith(measurement) else f"{measurement}_{field_name}"
    # The whole-meter figures carry phase "total" as a tag; a state key reads better without it.
    if phase is None or phase == TOTAL_PHASE:
        return base
    stem, unit = base.rsplit("_", 1)
    return f"{stem}_{phase.lower()}_{unit}"


# OBIS -> state key, for every object the points store as an instantaneous value.
INSTANT_KEYS: dict[str, str] = {obis: _state_key(m, f, phase) for obis, (m, f, phase, _) in INSTANT_MAP.items()}

# Objects only MQTT publishes: identifiers, thresholds and event counters (diagnostics in
# Home Assistant). A key with a unit suffix is converted by that unit; the others are sent as decoded.
DIAGNOSTIC_KEYS: dict[str, str] = {
    "1-3:0.2.8": "dsmr_version",
    "0-0:96.1.4": "emucs_version",
    "0-0:17.0.0": "limiter_threshold_kw",
    "1-0:31.4.0": "fuse_threshold_l1_a",
    "1-0:51.4.0": "fuse_threshold_l2_a",
    "1-0:71.4.0": "fuse_threshold_l3_a",
    "0-0:96.3.10": "breaker_state",
    "0-0:96.7.21": "power_failures",
    "0-0:96.7.9": "long_power_failures",
    "1-0:32.32.0": "voltage_sags_l1",
    "1-0:52.32.0": "voltage_sags_l2",
    "1-0:72.32.0": "voltage_sags_l3",
    "1-0:32.36.0": "voltage_swells_l1",
    "1-0:52.36.0": "voltage_swells_l2",
    "1-0:72.36.0": "voltage_swells_l3",
}


def iso_time(time_s: int) -> str:
    """ISO 8601 with its offset, as Home Assistant's timestamp sensors want it."""
    return datetime.fromtimestamp(time_s, timezone.utc).isoformat()


def telegram_state(telegram: Telegram) -> State:
    """The telegram's own values by state key, converted; objects a unit cannot be found for are left out."""
    values: State = {}
    energy: dict[str, float | int] = {}
    fields = telegram.fields
    for obis, reading in fields.items():
        instant = instant_obis(obis, fields)
        target = INSTANT_MAP[instant] if instant is not None else None
        if target is not None:
            value = convert_reading(reading, target[3])
            if value is None:
                continue
            if target[0] == "energy":
                energy[target[1]] = value
            else:
                values[INSTANT_KEYS[instant]] = value  # type: ignore[index]
            continue
        key = DIAGNOSTIC_KEYS.get(obis)
        if key is None:
            continue
        units = UNITS_BY_SUFFIX.get(unit_suffix(key))
        if units is not None:
            converted = convert_reading(reading, units)
            if converted is not None:
                values[key] = converted
        elif isinstance(reading.value, (int, str)) and not isinstance(reading.value, bool):
            values[key] = reading.value
    fill_totals(energy)
    for name, value in energy.items():
        values[f"energy_{name}"] = value
    tariff = telegram.fields.get(TARIFF_OBIS)
    if tariff is not None and isinstance(tariff.value, int):
        values["tariff"] = tariff.value
    seen: dict[str, int] = {}
    for mbus in mbus_readings(telegram):
        seen[mbus.measurement] = seen.get(mbus.measurement, 0) + 1
        # The first gas (water, heat) meter is plain "gas"; a second one on the same P1 port is told by its channel.
        kind = mbus.measurement if seen[mbus.measurement] == 1 else f"{mbus.measurement}_ch{mbus.channel}"
        values[f"{kind}_{mbus.field}"] = mbus.value
        values[f"{kind}_time"] = iso_time(int(mbus.time.timestamp()))
    return values


# Figures that say which meter and moment the others belong to: the state has its own.
_FIGURE_CONTEXT = frozenset({"meter", "time_s"})


def figure_state(figures: Mapping[str, Mapping[str, StateValue]]) -> State:
    """Derived figures (capacity, cost...) as ``<builder>_<figure>`` keys; None values left out."""
    values: State = {}
    for builder, named in figures.items():
        if not named:
            continue
        for name, value in named.items():
            if value is None or name in _FIGURE_CONTEXT:
                continue
            values[f"{builder}_{name}"] = value
    return values


def build_state(
    telegram: Telegram, time_s: int, figures: Mapping[str, Mapping[str, StateValue]] | None = None
) -> State:
    """The state message for one telegram: its meter, its time (the meter's clock) and every value."""
    state: State = {"meter": telegram.meter_id, "time": iso_time(time_s)}
    state.update(telegram_state(telegram))
    if figures:
        state.update(figure_state(figures))
    return state


def encode(state: Mapping[str, StateValue]) -> bytes:
    """Compact JSON, keys sorted; a value that is not a finite number is left out (JSON has no NaN)."""
    finite = {k: v for k, v in state.items() if not (isinstance(v, float) and not math.isfinite(v))}
    return json.dumps(finite, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")


def field_payload(value: StateValue) -> bytes:
    """The payload of a per-field topic: the bare value, as a tool reading one topic expects."""
    if isinstance(value, bool):
        return b"1" if value else b"0"
    if isinstance(value, str):
        return value.encode("utf-8")
    if value is None:
        return b""
    return json.dumps(value).encode("ascii")


def is_averaged(key: str) -> bool:
    """Power figures are averaged over an interval; counters, voltages and the rest are the latest value."""
    return key.startswith("power_") and key.endswith("_w")


@dataclass
class Averager:
    """Collects states and says when one is due: at most every ``interval_s`` seconds of meter time.

    The first state is due at once. After that a state is due when a telegram is
    at least ``interval_s`` after the last one published; it averages the power
    figures of every telegram since then (each telegram counts in exactly one
    published state) and takes everything else from the latest.
    """

    interval_s: float = 0.0
    _last_published_s: int | None = None
    _latest: State | None = None
    _sums: dict[str, float] = field(default_factory=dict)
    _counts: dict[str, int] = field(default_factory=dict)

    def add(self, state: State, time_s: int) -> State | None:
        """Take one telegram's state; return the state to publish now, or None."""
        if self.interval_s <= 0:
            return state
        self._latest = state
        for key, value in state.items():
            if is_averaged(key) and isinstance(value, (int, float)) and not isinstance(value, bool):
                self._sums[key] = self._sums.get(key, 0.0) + float(value)
                self._counts[key] = self._counts.get(key, 0) + 1
        if self._last_published_s is not None and time_s - self._last_published_s < self.interval_s:
            if time_s >= self._last_published_s:
                return None
            # The meter's clock went back (a DST bug, a reset): start over rather than wait for it.
        self._last_published_s = time_s
        return self.take()

    def take(self) -> State | None:
        """The averaged state of what was added since the last one (None if nothing was)."""
        latest, self._latest = self._latest, None
        if latest is None:
            return None
        averaged = dict(latest)
        for key, total in self._sums.items():
            averaged[key] = round(total / self._counts[key], 3)
        self._sums.clear()
        self._counts.clear()
        return averaged
