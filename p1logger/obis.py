"""The OBIS table: every object p1logger knows, as data.

Each row says how to read an object's value; ``decode.py`` holds one small
parser per value kind and never branches on an OBIS code.  M-Bus objects are
written with channel ``n`` (``0-n:24.2.1``) and match channels 1 to 4.
Electricity objects on a sub-channel (``1-1:1.8.1`` on some Baltic meters)
fall back to their ``1-0`` row.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Kind(str, Enum):
    NUMBER = "number"  # (123.456*kWh) -> float with its unit
    INT = "int"  # (0001) -> int
    TEXT = "text"  # (50217) -> str as sent
    HEX_TEXT = "hex_text"  # (4B464D...) -> decoded text when it is printable hex
    TIMESTAMP = "timestamp"  # (200512135409S) -> UTC datetime
    TIMED_NUMBER = "timed_number"  # (capture time)(value*unit) -> float at its own time
    MBUS_LEGACY = "mbus_legacy"  # DSMR 2.2/3 gas: (time)(00)(60)(1)(obis)(unit) then (value) on the next line
    POWER_FAILURES = "power_failures"  # (count)(0-0:96.7.19)(end time)(duration*s)...
    PEAK_HISTORY = "peak_history"  # (count)(1-0:1.6.0)(1-0:1.6.0)(month)(occurred)(value*kW)...
    CAPTURE = "capture"  # (count)(column OBIS)...(capture time)(cell)...: a DLMS profile generic, any width


@dataclass(frozen=True, slots=True)
class ObisDef:
    obis: str
    name: str  # stable machine name, used by the points table and the docs
    description: str
    kind: Kind
    unit: str | None = None  # the unit the specification gives, for the docs


def _d(obis: str, name: str, description: str, kind: Kind, unit: str | None = None) -> ObisDef:
    return ObisDef(obis, name, description, kind, unit)


N, I, T, H, TS, TN = Kind.NUMBER, Kind.INT, Kind.TEXT, Kind.HEX_TEXT, Kind.TIMESTAMP, Kind.TIMED_NUMBER
CAP = Kind.CAPTURE

OBIS_TABLE: tuple[ObisDef, ...] = (
    # Identification and clock
    _d("1-3:0.2.8", "dsmr_version", "DSMR version", T),
    _d("0-0:96.1.4", "emucs_version", "e-MUCS (Belgian) version", T),
    _d("0-0:1.0.0", "timestamp", "Telegram time", TS),
    _d("0-0:96.1.1", "equipment_id", "Equipment identifier", H),
    _d("0-0:96.1.0", "equipment_id_alt", "Equipment identifier (DSMR 2.2/3, other countries)", H),
    _d("0-0:42.0.0", "logical_device_name", "Logical device name", H),
    _d("0-0:96.1.2", "equipment_id_extra", "Additional equipment identifier", H),
    _d("0-0:0.0.0", "device_address", "Device address", T),
    _d("1-0:0.0.0", "meter_serial", "Meter serial number", T),
    _d("0-0:96.1.255", "manufacturer_id", "Manufacturer identification", T),
    _d("1-0:96.5.5", "meter_status", "Meter status word", T),
    # Energy counters
    _d("1-0:1.8.0", "energy_import_total", "Energy imported, total", N, "kWh"),
    _d("1-0:1.8.1", "energy_import_t1", "Energy imported, tariff 1", N, "kWh"),
    _d("1-0:1.8.2", "energy_import_t2", "Energy imported, tariff 2", N, "kWh"),
    _d("1-0:1.8.3", "energy_import_t3", "Energy imported, tariff 3", N, "kWh"),
    _d("1-0:1.8.4", "energy_import_t4", "Energy imported, tariff 4", N, "kWh"),
    _d("1-0:1.8.5", "energy_import_t5", "Energy imported, tariff 5", N, "kWh"),
    _d("1-0:2.8.0", "energy_export_total", "Energy exported, total", N, "kWh"),
    _d("1-0:2.8.1", "energy_export_t1", "Energy exported, tariff 1", N, "kWh"),
    _d("1-0:2.8.2", "energy_export_t2", "Energy exported, tariff 2", N, "kWh"),
    _d("1-0:2.8.3", "energy_export_t3", "Energy exported, tariff 3", N, "kWh"),
    _d("1-0:2.8.4", "energy_export_t4", "Energy exported, tariff 4", N, "kWh"),
    _d("1-0:2.8.5", "energy_export_t5", "Energy exported, tariff 5", N, "kWh"),
    _d("1-0:15.8.0", "energy_absolute_total", "Energy, absolute sum of import and export", N, "kWh"),
    _d("1-0:3.8.0", "reactive_import_total", "Reactive energy imported (Q+), total", N, "kvarh"),
    _d("1-0:3.8.1", "reactive_import_t1", "Reactive energy imported (Q+), tariff 1", N, "kvarh"),
    _d("1-0:3.8.2", "reactive_import_t2", "Reactive energy imported (Q+), tariff 2", N, "kvarh"),
    _d("1-0:3.8.3", "reactive_import_t3", "Reactive energy imported (Q+), tariff 3", N, "kvarh"),
    _d("1-0:3.8.4", "reactive_import_t4", "Reactive energy imported (Q+), tariff 4", N, "kvarh"),
    _d("1-0:4.8.0", "reactive_export_total", "Reactive energy exported (Q-), total", N, "kvarh"),
    _d("1-0:4.8.1", "reactive_export_t1", "Reactive energy exported (Q-), tariff 1", N, "kvarh"),
    _d("1-0:4.8.2", "reactive_export_t2", "Reactive energy exported (Q-), tariff 2", N, "kvarh"),
    _d("1-0:4.8.3", "reactive_export_t3", "Reactive energy exported (Q-), tariff 3", N, "kvarh"),
    _d("1-0:4.8.4", "reactive_export_t4", "Reactive energy exported (Q-), tariff 4", N, "kvarh"),
    _d("1-0:9.8.0", "apparent_import_total", "Apparent energy imported, total", N, "kVAh"),
    _d("1-0:10.8.0", "apparent_export_total", "Apparent energy exported, total", N, "kVAh"),
    _d("1-0:5.8.0", "reactive_q1_total", "Reactive energy, quadrant I", N, "kvarh"),
    _d("1-0:6.8.0", "reactive_q2_total", "Reactive energy, quadrant II", N, "kvarh"),
    _d("1-0:7.8.0", "reactive_q3_total", "Reactive energy, quadrant III", N, "kvarh"),
    _d("1-0:8.8.0", "reactive_q4_total", "Reactive energy, quadrant IV", N, "kvarh"),
    _d("0-0:96.14.0", "tariff", "Active tariff", I),
    _d("0-0:96.14.1", "tariff_2", "Active tariff (second tariff register, Israel)", T),
    # Power
    _d("1-0:1.7.0", "power_import", "Power imported", N, "kW"),
    _d("1-0:2.7.0", "power_export", "Power exported", N, "kW"),
    _d("1-0:21.7.0", "power_import_l1", "Power imported, L1", N, "kW"),
    _d("1-0:41.7.0", "power_import_l2", "Power imported, L2", N, "kW"),
    _d("1-0:61.7.0", "power_import_l3", "Power imported, L3", N, "kW"),
    _d("1-0:22.7.0", "power_export_l1", "Power exported, L1", N, "kW"),
    _d("1-0:42.7.0", "power_export_l2", "Power exported, L2", N, "kW"),
    _d("1-0:62.7.0", "power_export_l3", "Power exported, L3", N, "kW"),
    _d("1-0:3.7.0", "reactive_power_import", "Reactive power imported (Q+)", N, "kvar"),
    _d("1-0:4.7.0", "reactive_power_export", "Reactive power exported (Q-)", N, "kvar"),
    _d("1-0:5.7.0", "reactive_power_q1", "Reactive power, quadrant I", N, "kvar"),
    _d("1-0:6.7.0", "reactive_power_q2", "Reactive power, quadrant II", N, "kvar"),
    _d("1-0:7.7.0", "reactive_power_q3", "Reactive power, quadrant III", N, "kvar"),
    _d("1-0:8.7.0", "reactive_power_q4", "Reactive power, quadrant IV", N, "kvar"),
    _d("1-0:23.7.0", "reactive_power_import_l1", "Reactive power imported, L1", N, "kvar"),
    _d("1-0:43.7.0", "reactive_power_import_l2", "Reactive power imported, L2", N, "kvar"),
    _d("1-0:63.7.0", "reactive_power_import_l3", "Reactive power imported, L3", N, "kvar"),
    _d("1-0:24.7.0", "reactive_power_export_l1", "Reactive power exported, L1", N, "kvar"),
    _d("1-0:44.7.0", "reactive_power_export_l2", "Reactive power exported, L2", N, "kvar"),
    _d("1-0:64.7.0", "reactive_power_export_l3", "Reactive power exported, L3", N, "kvar"),
    _d("1-0:9.7.0", "apparent_power_import", "Apparent power imported", N, "kVA"),
    _d("1-0:10.7.0", "apparent_power_export", "Apparent power exported", N, "kVA"),
    _d("1-0:29.7.0", "apparent_power_import_l1", "Apparent power imported, L1", N, "kVA"),
    _d("1-0:49.7.0", "apparent_power_import_l2", "Apparent power imported, L2", N, "kVA"),
    _d("1-0:69.7.0", "apparent_power_import_l3", "Apparent power imported, L3", N, "kVA"),
    _d("1-0:30.7.0", "apparent_power_export_l1", "Apparent power exported, L1", N, "kVA"),
    _d("1-0:50.7.0", "apparent_power_export_l2", "Apparent power exported, L2", N, "kVA"),
    _d("1-0:70.7.0", "apparent_power_export_l3", "Apparent power exported, L3", N, "kVA"),
    _d("1-0:15.7.0", "power_absolute", "Power, absolute sum of import and export", N, "kW"),
    _d("1-0:16.7.0", "power_net", "Power, import minus export", N, "kW"),
    _d("1-0:1.24.0", "demand_import_avg3", "Average import demand, period 3 (Lithuania)", N, "kW"),
    _d("1-0:15.24.0", "demand_absolute_avg3", "Average absolute demand, period 3 (Lithuania)", N, "kW"),
    _d("1-0:16.24.0", "demand_net_avg3", "Average net demand, period 3 (Lithuania)", N, "kW"),
    _d("1-0:0.8.2", "period_3_s", "Averaging period 3 for instantaneous values", I, "s"),
    _d("1-0:13.3.0", "power_factor_min", "Power factor, minimum", N),
    _d("1-0:13.7.0", "power_factor", "Power factor", N),
    _d("1-0:33.7.0", "power_factor_l1", "Power factor, L1", N),
    _d("1-0:53.7.0", "power_factor_l2", "Power factor, L2", N),
    _d("1-0:73.7.0", "power_factor_l3", "Power factor, L3", N),
    _d("1-0:14.7.0", "frequency", "Frequency", N, "Hz"),
    _d("1-0:12.7.0", "voltage", "Voltage (single-phase meters, Lithuania)", N, "V"),
    _d("1-0:11.7.0", "current", "Current (single-phase meters, Lithuania)", N, "A"),
    _d("1-0:91.7.0", "current_neutral", "Current, neutral", N, "A"),
    _d("1-0:90.7.0", "current_sum", "Current, sum of the phases", N, "A"),
    _d("1-0:32.24.0", "voltage_avg_l1", "Average voltage, L1", N, "V"),
    _d("1-0:52.24.0", "voltage_avg_l2", "Average voltage, L2", N, "V"),
    _d("1-0:72.24.0", "voltage_avg_l3", "Average voltage, L3", N, "V"),
    # Voltage and current
    _d("1-0:32.7.0", "voltage_l1", "Voltage, L1", N, "V"),
    _d("1-0:52.7.0", "voltage_l2", "Voltage, L2", N, "V"),
    _d("1-0:72.7.0", "voltage_l3", "Voltage, L3", N, "V"),
    _d("1-0:31.7.0", "current_l1", "Current, L1", N, "A"),
    _d("1-0:51.7.0", "current_l2", "Current, L2", N, "A"),
    _d("1-0:71.7.0", "current_l3", "Current, L3", N, "A"),
    _d("1-0:32.32.0", "voltage_sags_l1", "Voltage sags, L1", I),
    _d("1-0:52.32.0", "voltage_sags_l2", "Voltage sags, L2", I),
    _d("1-0:72.32.0", "voltage_sags_l3", "Voltage sags, L3", I),
    _d("1-0:32.36.0", "voltage_swells_l1", "Voltage swells, L1", I),
    _d("1-0:52.36.0", "voltage_swells_l2", "Voltage swells, L2", I),
    _d("1-0:72.36.0", "voltage_swells_l3", "Voltage swells, L3", I),
    _d("1-0:32.33.0", "voltage_sag_time_l1", "Duration of the last voltage sag, L1", N, "s"),
    _d("1-0:52.33.0", "voltage_sag_time_l2", "Duration of the last voltage sag, L2", N, "s"),
    _d("1-0:72.33.0", "voltage_sag_time_l3", "Duration of the last voltage sag, L3", N, "s"),
    _d("1-0:32.34.0", "voltage_sag_l1", "Magnitude of the last voltage sag, L1", N, "V"),
    _d("1-0:52.34.0", "voltage_sag_l2", "Magnitude of the last voltage sag, L2", N, "V"),
    _d("1-0:72.34.0", "voltage_sag_l3", "Magnitude of the last voltage sag, L3", N, "V"),
    _d("1-0:32.37.0", "voltage_swell_time_l1", "Duration of the last voltage swell, L1", N, "s"),
    _d("1-0:52.37.0", "voltage_swell_time_l2", "Duration of the last voltage swell, L2", N, "s"),
    _d("1-0:72.37.0", "voltage_swell_time_l3", "Duration of the last voltage swell, L3", N, "s"),
    _d("1-0:32.38.0", "voltage_swell_l1", "Magnitude of the last voltage swell, L1", N, "V"),
    _d("1-0:52.38.0", "voltage_swell_l2", "Magnitude of the last voltage swell, L2", N, "V"),
    _d("1-0:72.38.0", "voltage_swell_l3", "Magnitude of the last voltage swell, L3", N, "V"),
    # Power quality events
    _d("0-0:96.7.21", "power_failures", "Power failures, any phase", I),
    _d("0-0:96.7.9", "long_power_failures", "Long power failures, any phase", I),
    _d("1-0:99.97.0", "power_failure_log", "Long power failure log", Kind.POWER_FAILURES, "s"),
    # Belgian capacity tariff
    _d("1-0:1.4.0", "demand_current_avg", "Current average demand (quarter hour)", N, "kW"),
    _d("1-0:1.6.0", "demand_month_peak", "Peak demand this month", TN, "kW"),
    _d("1-0:2.4.0", "demand_export_current_avg", "Current average export demand (quarter hour)", N, "kW"),
    _d("1-0:2.6.0", "demand_export_month_peak", "Peak export demand this month", TN, "kW"),
    _d("1-0:1.5.0", "demand_last_quarter", "Average import demand of the last completed quarter", N, "kW"),
    _d("1-0:2.5.0", "demand_export_last_quarter", "Average export demand of the last completed quarter", N, "kW"),
    _d("0-0:98.1.0", "demand_peak_history", "Monthly peak demand history (Hungary: last month's billing values)",
       Kind.PEAK_HISTORY, "kW"),
    _d("0-0:98.1.1", "capture_history_2", "Second monthly capture object (e-MUCS H: any columns, kept whole)", CAP),
    _d("0-0:98.2.0", "capture_daily", "Daily capture object (any columns, kept whole)", CAP),
    _d("1-0:99.1.0", "load_profile", "Load profile (any columns, kept whole)", CAP),
    # Breaker, limiter, messages
    _d("0-0:96.3.10", "breaker_state", "Breaker state (0 off, 1 on, 2 ready)", I),
    _d("0-0:17.0.0", "limiter_threshold", "Limiter threshold", N, "kW"),
    _d("1-0:31.4.0", "fuse_threshold_l1", "Fuse supervision threshold, L1", N, "A"),
    _d("1-0:51.4.0", "fuse_threshold_l2", "Fuse supervision threshold, L2", N, "A"),
    _d("1-0:71.4.0", "fuse_threshold_l3", "Fuse supervision threshold, L3", N, "A"),
    _d("1-0:94.32.1", "voltage_supervision", "Voltage supervision setting", T),
    _d("1-0:0.2.0", "firmware_core", "Firmware version, core (module on 1-1)", T),
    _d("1-0:0.2.8", "firmware_core_checksum", "Firmware checksum, core (module on 1-1)", T),
    _d("0-0:96.13.0", "message_text", "Text message", H),
    _d("0-0:96.13.1", "message_code", "Numeric message", H),
    _d("0-0:96.13.2", "message_2", "Text message 2", H),
    _d("0-0:96.13.3", "message_3", "Text message 3", H),
    _d("0-0:96.13.4", "message_4", "Text message 4", H),
    _d("0-0:96.13.5", "message_5", "Text message 5", H),
    # M-Bus devices (gas, water, heat) on channels 1..4
    _d("0-n:24.1.0", "mbus_device_type", "M-Bus device type (3 gas, 4 heat, 7 water)", I),
    _d("0-n:96.1.0", "mbus_equipment_id", "M-Bus equipment identifier", H),
    _d("0-n:96.1.1", "mbus_equipment_id_be", "M-Bus equipment identifier (e-MUCS)", H),
    _d("0-n:96.1.2", "mbus_equipment_id_extra", "M-Bus additional identifier", H),
    _d("0-n:24.2.1", "mbus_reading", "M-Bus reading, at its capture time", TN),
    _d("0-n:24.2.3", "mbus_reading_nc", "M-Bus reading, not temperature corrected, at its capture time", TN),
    _d("0-n:24.2.2", "mbus_reading_2", "M-Bus second reading (heat meters: e.g. cooling), at its capture time", TN),
    _d("0-n:24.3.0", "mbus_reading_legacy", "M-Bus reading (DSMR 2.2/3), at its capture time", Kind.MBUS_LEGACY),
    _d("0-n:24.4.0", "mbus_valve_state", "M-Bus valve state", I),
    _d("0-n:96.3.10", "mbus_breaker_state", "Switch state n (Luxembourg: relay n; else an M-Bus device's breaker)", I),
)

OBIS_BY_CODE: dict[str, ObisDef] = {d.obis: d for d in OBIS_TABLE}

# M-Bus device types (EN 13757-3) that p1logger stores, by 0-n:24.1.0 value.
MBUS_DEVICE_TYPES: dict[int, str] = {
    3: "gas",
    4: "heat",
    6: "water",  # warm water
    7: "water",
    10: "cooling",  # cooling load meter, outlet
    11: "cooling",  # cooling load meter, inlet
    12: "heat",  # heat, inlet
    13: "heat",  # heat/cooling
    21: "water",  # hot water
    22: "water",  # cold water
}

MBUS_CHANNELS = frozenset("1234")


def lookup(obis: str) -> ObisDef | None:
    """The table row for an OBIS reference as it appears in a telegram."""
    found = OBIS_BY_CODE.get(obis)
    if found is not None:
        return found
    if len(obis) > 4 and obis[1] == "-":
        if obis[0] == "0" and obis[2] in MBUS_CHANNELS and obis[3] == ":":
            return OBIS_BY_CODE.get("0-n" + obis[3:])
        if obis[0] == "1" and obis[2] != "0":
            return OBIS_BY_CODE.get("1-0" + obis[3:])
    return None
