"""DLMS/COSEM data-notifications, as Austrian M-Bus meters send them (pipeline stage: decode).

Meters such as the Kaifa MA309 on the Austrian customer interface send no DSMR
text: once decrypted (p1logger.dlms), each frame holds a DLMS
*data-notification* whose body is A-XDR data, OBIS codes each followed by their
value and, for numbers, a (scaler, unit) pair. Operators lay it out in three ways,
all read here by shape: a structure per object (``02 03 09 06 <OBIS> <value>
02 02 0F <scaler> 16 <unit>``), one flat structure of OBIS, value and
scaler-unit in turn, or OBIS and value alone (Landis+Gyr), where an energy or
power register is in its base unit (Wh, W, varh, var).

The objects are written out as the telegram lines a DSMR meter would send
(``1-0:1.8.0(9108*Wh)``, ``0-0:1.0.0(210719154635S)``), and that text goes
through the one decoder every telegram goes through: the OBIS table, units and
points are not written twice. Octet strings are written as hex, as DSMR meters
write identifiers; a date-time too (``0-0:1.0.0(07E50713010F2E2300FF8880)``),
which the timestamp parser reads as it reads any DLMS date-time (its clock
status decides summer or winter time). There is no CRC: integrity rests on the
M-Bus checksums of each segment (p1logger.mbus) and, where the meter sends one,
the GCM tag.

Pure: no I/O.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from decimal import Decimal

DATA_NOTIFICATION = 0x0F
DATE_TIME_BYTES = 12
OBIS_BYTES = 6
CLOCK_OBIS = "0-0:1.0.0"
HEADER_MARK = "\\COSEM-"  # in every header written here: how a notification's telegram is told (config.py)
METER_NUMBER_OBIS = "0-0:96.1.0"  # the equipment identifier DSMR 2.2/3 and other countries use
DEVICE_NAME_OBIS = "0-0:42.0.0"  # COSEM logical device name: the maker's three letters and a serial
CURRENT_VALUE = 0xFF  # OBIS group F: the current value, not a billing period's
_MAX_DEPTH = 8  # nested structures; a notification uses two or three
_MAX_ITEMS = 1024  # elements in one structure or array

# A-XDR types (DLMS Blue Book, the Data choice): fixed-size numbers by tag, as struct formats.
_FIXED: dict[int, str] = {
    0x03: ">?",  # boolean
    0x05: ">i",  # double-long
    0x06: ">I",  # double-long-unsigned
    0x0F: ">b",  # integer
    0x10: ">h",  # long
    0x11: ">B",  # unsigned
    0x12: ">H",  # long-unsigned
    0x14: ">q",  # long64
    0x15: ">Q",  # long64-unsigned
    0x16: ">B",  # enum
    0x17: ">f",  # float32
    0x18: ">d",  # float64
}
_ARRAY, _STRUCTURE, _OCTET_STRING, _VISIBLE_STRING, _UTF8_STRING = 0x01, 0x02, 0x09, 0x0A, 0x0C
_NULL, _DATE_TIME, _DATE, _TIME = 0x00, 0x19, 0x1A, 0x1B
_FIXED_STRINGS = {_DATE_TIME: 12, _DATE: 5, _TIME: 4}
_ENUM, _INTEGER = 0x16, 0x0F

# COSEM unit codes (Blue Book, physical units) -> the unit text DSMR-style meters write.
UNITS: dict[int, str] = {
    8: "deg", 9: "C", 13: "m3", 14: "m3", 27: "W", 28: "VA", 29: "var", 30: "Wh", 31: "VAh", 32: "varh",
    33: "A", 35: "V", 44: "Hz", 56: "%",
}
UNIT_NONE = 255
_DOUBLE_LONG_UNSIGNED = 0x06
# Wiener Netze's customer interface sends eight values without OBIS codes, in this order (its
# specification's; Iskra AM550, Siemens IM350, Landis+Gyr E450 alike), in base units.
WIENER_NETZE_VALUES = (
    ("1-0:1.8.0", "Wh"), ("1-0:2.8.0", "Wh"), ("1-0:3.8.0", "varh"), ("1-0:4.8.0", "varh"),
    ("1-0:1.7.0", "W"), ("1-0:2.7.0", "W"), ("1-0:3.7.0", "var"), ("1-0:4.7.0", "var"),
)
# OBIS group D: time integrals (energy: 8, 9, 10, 29) and the values in power (instantaneous 7, demand
# and its minima, maxima and averages 1-6, 11-16, 21-28).
ENERGY_D = frozenset((8, 9, 10, 29))
POWER_D = frozenset((*range(1, 8), *range(11, 17), *range(21, 29))) - ENERGY_D
# OBIS group C (per phase: 21-40, 41-60, 61-80 repeat 1-20) -> the base unit of its power.
_BASE_UNITS = {1: "W", 2: "W", 15: "W", 16: "W", 3: "var", 4: "var", 5: "var", 6: "var", 7: "var", 8: "var",
               9: "VA", 10: "VA"}


class CosemError(ValueError):
    """The plaintext is not a data-notification this module can read."""


@dataclass(frozen=True, slots=True)
class ScalerUnit:
    scaler: int
    unit: int


@dataclass(frozen=True, slots=True)
class Tagged:
    """An A-XDR value with its type tag (numbers and strings must be told apart to be written)."""

    tag: int
    value: object


def is_notification(plaintext: bytes) -> bool:
    # Tag 0F, a 4-byte long-invoke-id-and-priority, then its date-time: absent (00) or 12 bytes (0C).
    return len(plaintext) > 6 and plaintext[0] == DATA_NOTIFICATION and plaintext[5] in (0x00, DATE_TIME_BYTES)


def _length(data: bytes, at: int) -> tuple[int, int]:
    """A BER-style length at ``at``: (length, where the content starts)."""
    if at >= len(data):
        raise CosemError("cut short")
    first = data[at]
    if first < 0x80:
        return first, at + 1
    size = first - 0x80
    if not 1 <= size <= 2 or at + 1 + size > len(data):
        raise CosemError(f"bad length form {first:#04x}")
    return int.from_bytes(data[at + 1 : at + 1 + size], "big"), at + 1 + size


def _value(data: bytes, at: int, depth: int) -> tuple[object, int]:
    """One A-XDR value at ``at``: (value, where the next starts). Structures are lists of values; a
    structure of an integer and an enum is a ScalerUnit."""
    if at >= len(data):
        raise CosemError("cut short")
    tag = data[at]
    at += 1
    fmt = _FIXED.get(tag)
    if fmt is not None:
        size = struct.calcsize(fmt)
        if at + size > len(data):
            raise CosemError("cut short")
        return Tagged(tag, struct.unpack_from(fmt, data, at)[0]), at + size
    if tag in (_STRUCTURE, _ARRAY):
        if depth >= _MAX_DEPTH:
            raise CosemError("structures nested too deep")
        count, at = _length(data, at)
        if count > _MAX_ITEMS:
            raise CosemError(f"a structure of {count} elements")
        items = []
        for _ in range(count):
            item, at = _value(data, at, depth + 1)
            items.append(item)
        if (len(items) == 2 and isinstance(items[0], Tagged) and items[0].tag == _INTEGER
                and isinstance(items[1], Tagged) and items[1].tag == _ENUM):
            return ScalerUnit(int(items[0].value), int(items[1].value)), at  # type: ignore[call-overload]
        return items, at
    if tag in (_OCTET_STRING, _VISIBLE_STRING, _UTF8_STRING):
        size, at = _length(data, at)
    elif tag in _FIXED_STRINGS:
        size = _FIXED_STRINGS[tag]
    elif tag == _NULL:
        return Tagged(tag, None), at
    else:
        raise CosemError(f"A-XDR type {tag:#04x} is not read")
    if at + size > len(data):
        raise CosemError("cut short")
    return Tagged(_OCTET_STRING, bytes(data[at : at + size])), at + size


def _leaves(value: object) -> list[object]:
    """The values of a tree in order, structures opened (a ScalerUnit stays whole)."""
    if isinstance(value, list):
        return [leaf for item in value for leaf in _leaves(item)]
    return [value]


def obis_text(code: bytes) -> str:
    a, b, c, d, e, _f = code
    return f"{a}-{b}:{c}.{d}.{e}"


def base_unit(code: bytes) -> str:
    """The unit of an electricity energy or power register sent without its scaler and unit (Landis+Gyr's
    push lists): its base unit, which Austrian operators document (Wh, W, varh, var); "" for others."""
    a, _b, c, d, _e, _f = code
    if a != 1 or not (d in ENERGY_D or d in POWER_D) or not 1 <= c <= 80:
        return ""
    quantity = _BASE_UNITS.get(c if c <= 20 else (c - 1) % 20 + 1, "")
    return quantity + "h" if quantity and d in ENERGY_D else quantity


def _number_text(value: object, scale: ScalerUnit | None, code: bytes) -> str:
    if isinstance(value, float):
        number = repr(value * 10.0 ** scale.scaler) if scale is not None else repr(value)
    else:
        number = format(Decimal(int(value)).scaleb(scale.scaler if scale is not None else 0), "f")  # type: ignore[call-overload]
    unit = UNITS.get(scale.unit, "") if scale is not None else base_unit(code)
    return f"{number}*{unit}" if unit else number


def _line(code: bytes, value: Tagged, scale: ScalerUnit | None) -> str:
    obis = obis_text(code)
    if value.tag == _NULL:
        return f"{obis}()"
    if isinstance(value.value, bytes):
        return f"{obis}({value.value.hex().upper()})"
    if isinstance(value.value, bool):
        return f"{obis}({int(value.value)})"
    return f"{obis}({_number_text(value.value, scale, code)})"


def _values_alone(body: object) -> list[str]:
    """The lines of a notification of values without OBIS codes, in the one order read: Wiener Netze's
    (an optional meter name, the time, then eight double-long-unsigned values, WIENER_NETZE_VALUES); none
    for any other shape."""
    if not isinstance(body, list):
        return []
    named = len(body) == 2 + len(WIENER_NETZE_VALUES) and _is_string(body[0])
    items = body[1:] if named else body
    if len(items) != 1 + len(WIENER_NETZE_VALUES) or not _is_date_time(items[0]):
        return []
    values = items[1:]
    if not all(isinstance(item, Tagged) and item.tag == _DOUBLE_LONG_UNSIGNED for item in values):
        return []
    lines = [f"{CLOCK_OBIS}({items[0].value.hex().upper()})"]
    if named:
        lines.append(f"{DEVICE_NAME_OBIS}({body[0].value.hex().upper()})")  # type: ignore[union-attr]
    lines += [f"{obis}({item.value}*{unit})" for (obis, unit), item in zip(WIENER_NETZE_VALUES, values)]  # type: ignore[union-attr]
    return lines


def _is_string(item: object) -> bool:
    return isinstance(item, Tagged) and isinstance(item.value, bytes)


def _is_meter_number(item: object) -> bool:
    return (isinstance(item, Tagged) and isinstance(item.value, bytes) and 6 <= len(item.value) <= 20
            and item.value.isascii() and item.value.isalnum())


def _is_date_time(item: object) -> bool:
    """A COSEM date-time by its shape: 12 bytes, month, day and hour in range (or "not specified")."""
    if not (isinstance(item, Tagged) and isinstance(item.value, bytes) and len(item.value) == DATE_TIME_BYTES):
        return False
    month, day, _weekday, hour = item.value[2:6]
    return (1 <= month <= 12 or month >= 0xFD) and (1 <= day <= 31 or day >= 0xFD) and (hour < 24 or hour == 0xFF)


def to_telegram(plaintext: bytes, system_title: bytes) -> bytes:
    """The notification as telegram text, "/" header line through "!" (what the decoder reads).

    CosemError when it is not a notification or holds no OBIS-coded value.
    """
    if not is_notification(plaintext):
        raise CosemError("not a DLMS data-notification")
    at = 5
    sent_at: str | None = None
    if plaintext[at] == DATE_TIME_BYTES:
        if at + 1 + DATE_TIME_BYTES > len(plaintext):
            raise CosemError("cut short")
        sent_at = plaintext[at + 1 : at + 1 + DATE_TIME_BYTES].hex().upper()
        at += 1 + DATE_TIME_BYTES
    else:
        at += 1
    body, end = _value(plaintext, at, 0)
    if end != len(plaintext):
        raise CosemError(f"{len(plaintext) - end} bytes after the notification's body")
    leaves = _leaves(body)
    lines: list[str] = []
    index = 0
    after_last_object = 0  # where the leaves after the last OBIS-coded value start
    while index < len(leaves):
        leaf = leaves[index]
        index += 1
        if not (isinstance(leaf, Tagged) and isinstance(leaf.value, bytes) and len(leaf.value) == OBIS_BYTES):
            continue
        if index >= len(leaves) or not isinstance(leaves[index], Tagged):
            continue
        value = leaves[index]
        index += 1
        scale = None
        if index < len(leaves) and isinstance(leaves[index], ScalerUnit):
            scale = leaves[index]
            index += 1
        after_last_object = index
        if leaf.value[5] != CURRENT_VALUE:
            # Another billing period's value (F = 0-99, 101...): written out, its OBIS would read as the
            # current one (the decoder drops what follows "*"), so it is left out.
            continue
        lines.append(_line(leaf.value, value, scale))  # type: ignore[arg-type]
    trailing = leaves[after_last_object:]
    number = trailing[0] if len(trailing) == 1 else None
    if lines and isinstance(number, Tagged) and _is_meter_number(number) and not any(
            line.startswith(METER_NUMBER_OBIS + "(") for line in lines):
        # EVN's layout ends with the meter number, printed on the meter, with no OBIS code of its own.
        lines.append(f"{METER_NUMBER_OBIS}({bytes(number.value).hex().upper()})")  # type: ignore[call-overload]
    if not lines:
        lines = _values_alone(body)
    if not lines:
        raise CosemError("the notification holds no OBIS-coded values (a meter that sends values alone, "
                         "in an order of its own, is not read)")
    if sent_at is not None and not any(line.startswith(CLOCK_OBIS + "(") for line in lines):
        lines.insert(0, f"{CLOCK_OBIS}({sent_at})")
    maker = system_title[:3].decode("ascii", "replace") if system_title[:3].isalpha() else "XXX"
    # The header names the maker and the rest of the system title (the meter's serial): the meter's name
    # wherever it sends no identifier of its own (EVN's layout), so no space, which a tag would escape.
    header = f"/{maker}5{HEADER_MARK}{system_title[3:].hex().upper()}"
    return ("\r\n".join([header, "", *lines, "!"])).encode("ascii")
