"""Decoded telegrams to InfluxDB line protocol (pipeline stage: points).

The mapping from OBIS objects to measurements and fields is a table, and so is
``SCHEMA``, the list of everything p1logger ever writes (checked against
``docs/data-model.md`` and the dashboards by the tests).  No I/O here.

``PointBuilder`` keeps a little state so that a gas, water, heat or peak value
is written only when its own capture time changes, not once per telegram.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Literal, Mapping
from zoneinfo import ZoneInfo

from p1logger.decode import _MBUS_KEYS, HistoryEntry, Reading, Telegram
from p1logger.guards import PLAUSIBLE, MeterClock
from p1logger.obis import MBUS_DEVICE_TYPES

FieldType = Literal["float", "int"]


@dataclass(frozen=True, slots=True)
class Measurement:
    fields: Mapping[str, FieldType]
    tags: frozenset[str]


def _floats(*names: str) -> dict[str, FieldType]:
    return {name: "float" for name in names}


_TARIFFS = ("t1", "t2", "t3", "t4", "t5")

# Written (as 1) only on the points of a telegram whose meter clock stood still or stepped back
# (guards.MeterClock), stored at the receive time instead of the meter's. A field, not a tag: InfluxDB 3
# fixes a measurement's tags at its first write.
CLOCK_FALLBACK: dict[str, FieldType] = {"clock_fallback": "int"}

SCHEMA: dict[str, Measurement] = {
    "power": Measurement({**_floats("import_w", "export_w"), **CLOCK_FALLBACK}, frozenset({"meter", "phase"})),
    "voltage": Measurement({**_floats("voltage_v"), **CLOCK_FALLBACK}, frozenset({"meter", "phase"})),
    "current": Measurement({**_floats("current_a"), **CLOCK_FALLBACK}, frozenset({"meter", "phase"})),
    "energy": Measurement(
        {
            **_floats(*(f"{d}_{t}_kwh" for d in ("import", "export") for t in _TARIFFS)),
            **_floats("import_total_kwh", "export_total_kwh"),
            "active_tariff": "int",
            **CLOCK_FALLBACK,
        },
        frozenset({"meter"}),
    ),
    "gas": Measurement(_floats("volume_m3"), frozenset({"meter", "channel", "device"})),
    "water": Measurement(_floats("volume_m3"), frozenset({"meter", "channel", "device"})),
    "heat": Measurement(_floats("energy_gj"), frozenset({"meter", "channel", "device"})),
    "cooling": Measurement(_floats("energy_gj"), frozenset({"meter", "channel", "device"})),
    "capacity": Measurement(
        {
            **_floats("demand_kw", "month_peak_kw"),
            **_floats("export_demand_kw", "export_month_peak_kw"),
            **_floats("quarter_avg_kw", "quarter_diff_kw", "projected_kw", "running_peak_kw"),
            **_floats("rolling_mean_kw", "yearly_cost_eur", "shed_kw"),
            "peak_warning": "int",
            **CLOCK_FALLBACK,
        },
        frozenset({"meter"}),
    ),
    # Its own measurement because only these points carry a month: InfluxDB 3
    # fixes a table's tags at its first write.
    "capacity_history": Measurement(_floats("history_peak_kw"), frozenset({"meter", "month"})),
    "cost": Measurement(
        _floats("import_kwh", "export_kwh", "gas_m3", "water_m3", "import_eur", "export_eur", "gas_eur", "water_eur",
                "fixed_eur", "total_eur", "import_price_eur_per_kwh", "export_price_eur_per_kwh"),
        frozenset({"meter"}),
    ),
    "p1logger": Measurement(
        {
            "telegrams_ok": "int",
            "telegrams_rejected": "int",
            "queue_depth": "int",
            "spool_points": "int",
            "points_dropped": "int",
            "telegrams_dropped": "int",
            "write_latency_ms": "float",
            "last_telegram_age_s": "float",
        },
        frozenset({"instance"}),
    ),
}

TOTAL_PHASE = "total"
# The device tag of an M-Bus device that sends no equipment id.
UNKNOWN_DEVICE = "unknown"

# Unit conversions into the unit a field's name carries: the one place units are converted.
# Nordic and Baltic meters send W, Wh, MWh, kV, kA and GJ as well as the DSMR units.
_TO_W = {"kW": 1000.0, "W": 1.0, "MW": 1_000_000.0}
_TO_KW = {"kW": 1.0, "W": 0.001, "MW": 1000.0}
_TO_KWH = {"kWh": 1.0, "Wh": 0.001, "MWh": 1000.0}
_SAME_V = {"V": 1.0, "kV": 1000.0}
_SAME_A = {"A": 1.0, "kA": 1000.0, "mA": 0.001}
_TO_M3 = {"m3": 1.0, "dm3": 0.001, "l": 0.001}
_TO_GJ = {"GJ": 1.0, "MJ": 0.001, "MWh": 3.6, "kWh": 0.0036}
UNITS_KW = _TO_KW
UNITS_W = _TO_W
UNITS_KWH = _TO_KWH

# OBIS -> (measurement, field, phase tag, unit conversion).  Objects that share a
# measurement and phase end up as fields of one line.  Every point of a
# measurement carries the same tags (InfluxDB 3 fixes a table's tags at its
# first write), so the totals are phase "total", not a missing phase.
INSTANT_MAP: dict[str, tuple[str, str, str | None, Mapping[str, float]]] = {
    "1-0:1.7.0": ("power", "import_w", TOTAL_PHASE, _TO_W),
    "1-0:2.7.0": ("power", "export_w", TOTAL_PHASE, _TO_W),
    "1-0:21.7.0": ("power", "import_w", "L1", _TO_W),
    "1-0:41.7.0": ("power", "import_w", "L2", _TO_W),
    "1-0:61.7.0": ("power", "import_w", "L3", _TO_W),
    "1-0:22.7.0": ("power", "export_w", "L1", _TO_W),
    "1-0:42.7.0": ("power", "export_w", "L2", _TO_W),
    "1-0:62.7.0": ("power", "export_w", "L3", _TO_W),
    "1-0:32.7.0": ("voltage", "voltage_v", "L1", _SAME_V),
    "1-0:52.7.0": ("voltage", "voltage_v", "L2", _SAME_V),
    "1-0:72.7.0": ("voltage", "voltage_v", "L3", _SAME_V),
    "1-0:31.7.0": ("current", "current_a", "L1", _SAME_A),
    "1-0:51.7.0": ("current", "current_a", "L2", _SAME_A),
    "1-0:71.7.0": ("current", "current_a", "L3", _SAME_A),
    "1-0:1.8.1": ("energy", "import_t1_kwh", None, _TO_KWH),
    "1-0:1.8.2": ("energy", "import_t2_kwh", None, _TO_KWH),
    "1-0:1.8.3": ("energy", "import_t3_kwh", None, _TO_KWH),
    "1-0:1.8.4": ("energy", "import_t4_kwh", None, _TO_KWH),
    "1-0:1.8.5": ("energy", "import_t5_kwh", None, _TO_KWH),
    "1-0:2.8.1": ("energy", "export_t1_kwh", None, _TO_KWH),
    "1-0:2.8.2": ("energy", "export_t2_kwh", None, _TO_KWH),
    "1-0:2.8.3": ("energy", "export_t3_kwh", None, _TO_KWH),
    "1-0:2.8.4": ("energy", "export_t4_kwh", None, _TO_KWH),
    "1-0:2.8.5": ("energy", "export_t5_kwh", None, _TO_KWH),
    "1-0:1.8.0": ("energy", "import_total_kwh", None, _TO_KWH),
    "1-0:2.8.0": ("energy", "export_total_kwh", None, _TO_KWH),
    "1-0:1.4.0": ("capacity", "demand_kw", None, _TO_KW),
    "1-0:2.4.0": ("capacity", "export_demand_kw", None, _TO_KW),
}
TARIFF_OBIS = "0-0:96.14.0"
MONTH_PEAK_OBIS = "1-0:1.6.0"
EXPORT_MONTH_PEAK_OBIS = "1-0:2.6.0"
PEAK_HISTORY_OBIS = "0-0:98.1.0"
# Totals, when the meter sends none: the sum of the tariffs it does send.
_TOTALS = {
    "import_total_kwh": tuple(f"import_{t}_kwh" for t in _TARIFFS),
    "export_total_kwh": tuple(f"export_{t}_kwh" for t in _TARIFFS),
}
# M-Bus readings, best first: the temperature-corrected value, then the others.
_MBUS_READING_SUFFIXES = (":24.2.1", ":24.2.3", ":24.3.0")
# Every field mbus_readings() looks at: each channel's device type, ids and readings.
_MBUS_ALL_KEYS = tuple(key for _, keys in _MBUS_KEYS for key in keys)
_MBUS_FIELDS: dict[str, tuple[str, Mapping[str, float]]] = {
    "gas": ("volume_m3", _TO_M3),
    "water": ("volume_m3", _TO_M3),
    "heat": ("energy_gj", _TO_GJ),
    "cooling": ("energy_gj", _TO_GJ),
}
_MBUS_BY_UNIT = {"m3": "gas", "GJ": "heat", "MJ": "heat"}  # older meters send no device type
# Meters whose series prefixes (about ten each) and field specs (about 40) are kept, so a replay of many
# meters' archives at once (or the benchmarks' 44 interleaved meters) does not redo them for every telegram.
_METERS_MAX = 256
# And per (OBIS code, unit, value): about 300 kB; 93% of a simulated meter's new readings are found here.
_VALUE_SPECS_MAX = 1024
_ENERGY = ("energy", None)


# What one reading becomes in its point: ((measurement, phase), field, value, "field=value" as format_field
# writes it, implausible). A plain tuple: one is made for every reading that changed.
_FieldSpec = tuple[tuple[str, "str | None"], str, "float | int", str, bool]
# INSTANT_MAP ready for use: OBIS -> ((measurement, phase), field, unit conversions, plausible (low, high)).
_INSTANT: dict[str, tuple[tuple[str, str | None], str, Mapping[str, float], tuple[float, float] | None]] = {
    obis: ((measurement, phase), field, units, PLAUSIBLE.get(field))
    for obis, (measurement, field, phase, units) in INSTANT_MAP.items()
}
# Some meters (Sagemcom XT211, Landis+Gyr E360 in a heat pump) count on electricity channel 1, not 0:
# 1-1:1.8.1 is their 1-0:1.8.1, unless the telegram also carries the 1-0 object, which then wins.
_SUBCHANNEL_TWIN = {"1-1:" + obis[4:]: obis for obis in INSTANT_MAP if obis.startswith("1-0:")}
_INSTANT.update({alias: _INSTANT[twin] for alias, twin in _SUBCHANNEL_TWIN.items() if alias not in _INSTANT})


def instant_obis(obis: str, fields: Mapping[str, object]) -> str | None:
    """The INSTANT_MAP key a reading is written under: its own, or a channel-1 object's channel-0 twin
    when the telegram carries no such twin; None when it is not written."""
    if obis in INSTANT_MAP:
        return obis
    twin = _SUBCHANNEL_TWIN.get(obis)
    return twin if twin is not None and twin not in fields else None


def _field_spec(obis: str, reading: Reading) -> _FieldSpec | None:
    """What an instantaneous reading becomes in its point, or None when it is not one we write."""
    target = _INSTANT.get(obis)
    if target is None:
        return None
    value = reading.value
    if value.__class__ is not float:
        if value.__class__ is not int:
            return None  # None, text or a list: nothing to write
        value = float(value)  # type: ignore[arg-type]
    unit = reading.unit
    factor = 1.0 if unit is None else target[2].get(unit)
    if factor is None:
        return None  # a unit we cannot convert is left out, never stored as something else
    if factor != 1.0:
        value = round(value * factor, 9)  # type: ignore[operator]
    limits = target[3]
    bad = limits is not None and not limits[0] <= value <= limits[1]  # type: ignore[operator]
    return (target[0], target[1], value, f"{target[1]}={format_field(value)}", bad)  # type: ignore[arg-type]


def _computed_spec(name: str, value: float | int) -> _FieldSpec:
    return (_ENERGY, name, value, f"{name}={format_field(value)}", False)


def escape_tag(value: str) -> str:
    """Line protocol escaping for a tag value.

    Backslashes stay as they are (InfluxDB reads them literally, and Belgian
    meter ids contain one), except at the end, where one would escape the
    separator that follows.
    """
    return value.rstrip("\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def format_field(value: float | int | bool) -> str:
    if value.__class__ is float:
        return repr(value)
    if isinstance(value, bool):
        return "1i" if value else "0i"
    if isinstance(value, int):
        return f"{value}i"
    # repr gives the shortest text that reads back as the same float; a float
    # field must always look like one, so "0" never turns a field into an integer.
    return repr(float(value))


def series(measurement: str, tags: Mapping[str, str]) -> str:
    """``measurement,tag=value,...``: tags sorted, empty ones left out."""
    return measurement + "".join(f",{key}={escape_tag(tags[key])}" for key in sorted(tags) if tags[key])


def line(measurement: str, tags: Mapping[str, str], fields: Mapping[str, float | int | bool], time_s: int) -> str:
    field_text = ",".join(f"{key}={format_field(value)}" for key, value in fields.items())
    return f"{series(measurement, tags)} {field_text} {time_s}"


def convert_reading(reading: Reading, units: Mapping[str, float]) -> float | None:
    value = reading.value
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    if reading.unit is None:
        return float(value)
    factor = units.get(reading.unit)
    if factor is None:
        return None  # a unit we cannot convert is left out, never stored as something else
    return round(value * factor, 9) if factor != 1.0 else float(value)


def _epoch_s(moment: datetime) -> int:
    return int(moment.timestamp())


def fill_totals(energy: dict[str, float | int]) -> None:
    """Add the import and export totals a meter does not send: the sum of the tariffs it does send."""
    for total, parts in _TOTALS.items():
        if total not in energy:
            present = [energy[p] for p in parts if p in energy]
            if present:
                energy[total] = round(sum(present), 6)


@dataclass(frozen=True, slots=True)
class MbusReading:
    """One M-Bus device's reading, converted to the unit its field name carries."""

    measurement: str  # gas, water or heat
    field: str
    channel: str
    device: str | None
    value: float
    time: datetime  # the capture time


def mbus_readings(telegram: Telegram) -> list[MbusReading]:
    """The readings of the M-Bus devices that carry a capture time (one without cannot be placed honestly)."""
    found: list[MbusReading] = []
    for channel, (device_type, device_id) in telegram.mbus_devices().items():
        reading = None
        for suffix in _MBUS_READING_SUFFIXES:
            reading = telegram.fields.get(f"0-{channel}{suffix}")
            if reading is not None:
                break
        if reading is None or reading.time is None:
            continue
        measurement = MBUS_DEVICE_TYPES.get(device_type) if device_type is not None else None
        if measurement is None:
            measurement = _MBUS_BY_UNIT.get(reading.unit or "")
        if measurement is None:
            continue
        field_name, units = _MBUS_FIELDS[measurement]
        value = convert_reading(reading, units)
        if value is None:
            continue
        found.append(MbusReading(measurement, field_name, channel, device_id, value, reading.time))
    return found


# Conversions by the unit suffix of a field name (``power_w`` -> "w"), for outputs
# that name their own fields (MQTT) but must convert exactly as the points do.
UNITS_BY_SUFFIX: dict[str, Mapping[str, float]] = {
    "w": _TO_W,
    "kw": _TO_KW,
    "kwh": _TO_KWH,
    "v": _SAME_V,
    "a": _SAME_A,
    "m3": _TO_M3,
    "gj": _TO_GJ,
}


class PointBuilder:
    """Turns telegrams into line protocol.  One instance per meter stream (a `contracts.Builder`)."""

    name = "points"

    def __init__(self, zone: ZoneInfo, use_receive_time: bool = False, *, reuse_readings: bool = True) -> None:
        self.zone = zone
        self.use_receive_time = use_receive_time
        # Bounded by construction: one entry per M-Bus channel (at most 4) and per peak kind.
        self._last_capture: dict[tuple[str, str], int] = {}
        self._last_peak: tuple[int, float] | None = None
        self._last_export_peak: tuple[int, float] | None = None
        self._last_history: tuple[HistoryEntry, ...] | None = None
        # meter -> ((measurement, phase) -> its series prefix, OBIS code -> (reading, what it became),
        # [the energy fields of its last telegram, the totals added to them])
        self._meters: dict[str, tuple[dict[tuple[str, str | None], str],
                                      dict[str, tuple[Reading, _FieldSpec | None]],
                                      list[list[_FieldSpec]]]] = {}
        self.clock = MeterClock()
        self.implausible_values = 0  # stored as sent, but counted (guards.PLAUSIBLE)
        # The decoder hands out the same Reading object while a line repeats, so what a field's reading
        # becomes (its group, value and formatted text) is kept per meter and OBIS code with the reading it
        # came from; a field that did not change is neither converted nor formatted again. Bounded by the
        # OBIS codes the decoder knows. reuse_readings=False works it all out every time (the plain path).
        self._reuse = reuse_readings
        self._value_specs: dict[tuple[str, str | None, object], _FieldSpec | None] = {}
        self._last_mbus: list[Reading | None] | None = None
        self._last_mbus_meter: str | None = None
        self._last_history_reading: Reading | None = None
        self._last_tariff: tuple[Reading, _FieldSpec] | None = None
        self._last_peak_reading: Reading | None = None
        self._last_export_peak_reading: Reading | None = None

    def figures(self) -> None:
        """The readings themselves are the record's telegram; nothing is derived here."""
        return None

    def build(self, telegram: Telegram, received_at_s: float) -> list[str]:
        meter = telegram.meter_id
        fallback = False
        if telegram.timestamp is not None and not self.use_receive_time:
            time_s, fallback = self.clock.place(meter, _epoch_s(telegram.timestamp), received_at_s)
        else:
            time_s = int(received_at_s)
        fields = telegram.fields
        # (measurement, phase) -> the specs of its fields, in the order they first appear.
        grouped: dict[tuple[str, str | None], list[_FieldSpec]] = {}
        known = self._meters.get(meter)
        if known is None:
            if len(self._meters) >= _METERS_MAX:
                self._meters.clear()
            known = self._meters[meter] = ({}, {}, [[], []])
        prefixes, specs, last_energy = known
        by_value = self._value_specs
        if not self._reuse:
            specs, by_value = {}, {}
        for obis, reading in fields.items():
            cached = specs.get(obis)
            if cached is None or cached[0] is not reading:
                value = reading.value
                cls = value.__class__
                if obis not in _INSTANT:
                    spec = None
                # A new reading of a value seen before: power and voltage take a few thousand values. Not
                # bool (True == 1), nor zero (-0.0 == 0.0, yet they are written differently).
                elif (cls is float or cls is int) and value:
                    value_key = (obis, reading.unit, value)
                    spec = by_value.get(value_key)
                    if spec is None:
                        if len(by_value) >= _VALUE_SPECS_MAX:
                            by_value.clear()
                        spec = by_value[value_key] = _field_spec(obis, reading)
                else:
                    spec = _field_spec(obis, reading)
                if spec is not None and obis in _SUBCHANNEL_TWIN and instant_obis(obis, fields) is None:
                    spec = None  # its channel-0 twin is in the telegram too, and is the one written
                specs[obis] = (reading, spec)  # bounded by the OBIS codes the decoder knows
            else:
                spec = cached[1]
            if spec is None:
                continue
            if spec[4]:
                self.implausible_values += 1
            group = grouped.get(spec[0])
            if group is None:
                grouped[spec[0]] = [spec]
            else:
                group.append(spec)
        energy = grouped.get(_ENERGY)
        if energy is not None:
            if self._reuse and energy == last_energy[0]:
                energy += last_energy[1]
            else:
                parts = energy[:]
                self._add_totals(energy)
                if self._reuse:
                    last_energy[:] = parts, energy[len(parts):]
        tariff = fields.get(TARIFF_OBIS)
        if tariff is not None and isinstance(tariff.value, int):
            last = self._last_tariff
            if last is None or last[0] is not tariff:
                last = (tariff, _computed_spec("active_tariff", tariff.value))
                if self._reuse:
                    self._last_tariff = last
            grouped.setdefault(_ENERGY, []).append(last[1])

        lines: list[str] = []
        suffix = f",clock_fallback=1i {time_s}" if fallback else f" {time_s}"
        for key, values in grouped.items():
            prefix = prefixes.get(key)
            if prefix is None:
                prefix = prefixes[key] = series(key[0], {"meter": meter, "phase": key[1]} if key[1] else
                                                {"meter": meter}) + " "
            if len(values) == 1:
                lines.append(prefix + values[0][3] + suffix)
            else:
                lines.append(prefix + ",".join([spec[3] for spec in values]) + suffix)
        self._mbus_lines(telegram, meter, lines)
        self._peak_lines(fields, meter, lines)
        return lines

    def _add_totals(self, energy: list[_FieldSpec]) -> None:
        """fill_totals, on specs: the totals a meter does not send, from the tariffs it does send."""
        names = {spec[1]: spec[2] for spec in energy}
        for total, parts in _TOTALS.items():
            if total not in names:
                present = [names[p] for p in parts if p in names]
                if present:
                    energy.append(_computed_spec(total, round(sum(present), 6)))

    def _mbus_lines(self, telegram: Telegram, meter: str, lines: list[str]) -> None:
        if self._reuse and meter == self._last_mbus_meter:
            # Made only of these readings: when they are the last telegram's, so are their capture times,
            # which were all noted then, so there is nothing to write. (Meters that take turns on one
            # stream share the capture times, hence "the last telegram's", and only the same meter's.)
            current = list(map(telegram.fields.get, _MBUS_ALL_KEYS))
            last = self._last_mbus
            if last is not None and all(map(operator.is_, current, last)):
                return
            self._last_mbus = current
        else:
            self._last_mbus_meter, self._last_mbus = meter, None
        for reading in mbus_readings(telegram):
            capture_s = _epoch_s(reading.time)
            key = (reading.measurement, reading.channel)
            if self._last_capture.get(key) == capture_s:
                continue
            self._last_capture[key] = capture_s
            tags = {"meter": meter, "channel": reading.channel, "device": reading.device or UNKNOWN_DEVICE}
            lines.append(line(reading.measurement, tags, {reading.field: reading.value}, capture_s))

    def _peak_lines(self, fields: Mapping[str, Reading], meter: str, lines: list[str]) -> None:
        peak = fields.get(MONTH_PEAK_OBIS)
        if self._reuse:
            # The same reading as last time gives the same (time, value), already written or skipped then.
            if peak is self._last_peak_reading:
                peak = None
            else:
                self._last_peak_reading = peak
        if peak is not None and peak.time is not None:
            value = convert_reading(peak, _TO_KW)
            if value is not None:
                current = (_epoch_s(peak.time), value)
                if current != self._last_peak:
                    self._last_peak = current
                    lines.append(line("capacity", {"meter": meter}, {"month_peak_kw": value}, current[0]))
        export_peak = fields.get(EXPORT_MONTH_PEAK_OBIS)
        if self._reuse:
            if export_peak is self._last_export_peak_reading:
                export_peak = None
            else:
                self._last_export_peak_reading = export_peak
        if export_peak is not None and export_peak.time is not None:
            value = convert_reading(export_peak, _TO_KW)
            if value is not None:
                current = (_epoch_s(export_peak.time), value)
                if current != self._last_export_peak:
                    self._last_export_peak = current
                    lines.append(line("capacity", {"meter": meter}, {"export_month_peak_kw": value}, current[0]))
        history = fields.get(PEAK_HISTORY_OBIS)
        if self._reuse:
            if history is self._last_history_reading:
                return  # compared with the last history (and noted, when it differed) then
            self._last_history_reading = history
        if history is None or not isinstance(history.value, tuple) or history.value == self._last_history:
            return
        self._last_history = history.value  # type: ignore[assignment]
        for entry in history.value:
            if not isinstance(entry, HistoryEntry) or entry.value is None or entry.month is None:
                continue
            factor = _TO_KW.get(entry.unit or "kW")
            if factor is None:
                continue
            when = entry.time if entry.time is not None else self.month_start(entry.month)
            tags = {"meter": meter, "month": entry.month}
            lines.append(line("capacity_history", tags, {"history_peak_kw": round(entry.value * factor, 9)}, _epoch_s(when)))

    def month_start(self, month: str) -> datetime:
        """00:00 local time on the first day of ``YYYY-MM``, in UTC."""
        year, number = int(month[:4]), int(month[5:7])
        return datetime(year, number, 1, tzinfo=self.zone).astimezone(timezone.utc)


def health_line(instance: str, time_s: int, **values: float | int) -> str:
    """One ``p1logger`` health point; unknown field names are a programming error."""
    schema = SCHEMA["p1logger"].fields
    unknown = set(values) - set(schema)
    if unknown:
        raise KeyError(f"not in the p1logger schema: {sorted(unknown)}")
    typed = {key: (int(value) if schema[key] == "int" else float(value)) for key, value in values.items()}
    return line("p1logger", {"instance": instance}, typed, time_s)


__all__ = ["SCHEMA", "PointBuilder", "health_line", "line", "escape_tag", "format_field"]
