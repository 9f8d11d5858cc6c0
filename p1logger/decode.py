"""Decode a framed telegram into values (pipeline stage: decode).

Pure functions over bytes: no I/O.  Each OBIS line is looked up in the table in
``obis.py`` and parsed by the parser for its value kind.  A line the table does
not know is kept raw in ``Telegram.unknown``; a known line whose value cannot
be parsed is kept raw in ``Telegram.invalid``: nothing is dropped silently, and
one bad line never loses the rest of the telegram.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from itertools import filterfalse
from typing import Callable, NamedTuple, Union, cast

from p1logger.errors import DecodeError
from p1logger.obis import Kind, lookup
from p1logger.timestamps import PLACEHOLDER_PREFIXES, TimestampParser

TIMESTAMP_OBIS = "0-0:1.0.0"
# Where a meter's own identity can be found, best first.
METER_ID_OBIS = ("0-0:96.1.1", "0-0:96.1.0", "0-0:42.0.0", "1-0:0.0.0", "0-0:96.1.255")
# A history stamp on a placeholder date says nothing about the month.
_PLACEHOLDER_DATES = tuple(prefix[:6] for prefix in PLACEHOLDER_PREFIXES)


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One entry of a list-valued object (peak history, power failure log)."""

    time: datetime | None  # when it happened (peak occurrence, end of the failure)
    value: float | None
    unit: str | None
    month: str | None = None  # peak history: "YYYY-MM" the peak belongs to


Value = Union[float, int, str, datetime, tuple[HistoryEntry, ...], tuple["Reading", ...], None]


class Reading(NamedTuple):
    """One decoded object: its value, unit and, when it has one, its own capture time.

    Immutable, so one instance can serve every telegram that repeats the same line.
    """

    value: Value
    unit: str | None = None
    time: datetime | None = None


@dataclass(slots=True)
class Telegram:
    header: str
    timestamp: datetime | None
    crc_ok: bool | None
    fields: dict[str, Reading]
    unknown: dict[str, str] = field(default_factory=dict)  # OBIS -> raw value text
    invalid: dict[str, str] = field(default_factory=dict)  # OBIS -> why it failed
    raw: bytes = b""

    @property
    def meter_id(self) -> str:
        for obis in METER_ID_OBIS:
            reading = self.fields.get(obis)
            if reading is not None and isinstance(reading.value, str) and reading.value:
                return reading.value
        return self.header

    def mbus_devices(self) -> dict[str, tuple[int | None, str | None]]:
        """Channel -> (device type from 0-n:24.1.0, equipment id) for each M-Bus channel with a type, an id or a reading."""
        devices: dict[str, tuple[int | None, str | None]] = {}
        fields = self.fields
        for channel, keys in _MBUS_KEYS:
            kind = fields.get(keys[0])
            ident = fields.get(keys[1]) or fields.get(keys[2])
            if kind is None and ident is None and not any(key in fields for key in keys[3:]):
                continue
            devices[channel] = (
                kind.value if kind is not None and isinstance(kind.value, int) else None,
                ident.value if ident is not None and isinstance(ident.value, str) and ident.value else None,
            )
        return devices


# Per M-Bus channel: device type, the two id forms, then the readings.
_MBUS_KEYS = tuple(
    (channel, tuple(f"0-{channel}:{code}" for code in ("24.1.0", "96.1.0", "96.1.1", "24.2.1", "24.2.3", "24.3.0")))
    for channel in "1234"
)


def _split_number(group: str) -> tuple[float, str | None]:
    star = group.find("*")
    if star < 0:
        return float(group), None
    return float(group[:star]), group[star + 1 :]


def _hex_text(group: str) -> str:
    if not group or len(group) % 2:
        return group
    try:
        decoded = bytes.fromhex(group)
    except ValueError:
        return group
    if decoded.isascii() and all(32 <= b < 127 for b in decoded):
        return decoded.decode("ascii").strip()
    return group


def _previous_month(stamp: str) -> str | None:
    """The month a history entry belongs to, from its capture stamp.

    The meter stamps each month's peak at 00:00 local on the first of the next
    month, so the peak belongs to the month before the stamp.
    """
    if len(stamp) < 6 or not stamp[:6].isdigit() or stamp.startswith(_PLACEHOLDER_DATES):
        return None
    year, month = 2000 + int(stamp[0:2]), int(stamp[2:4])
    if not 1 <= month <= 12:
        return None
    if stamp[4:12] == "01000000":
        year, month = (year - 1, 12) if month == 1 else (year, month - 1)
    return f"{year:04d}-{month:02d}"


Parser = Callable[[list[str], TimestampParser], Reading]


def _parse_number(groups: list[str], ts: TimestampParser) -> Reading:
    if len(groups) == 1:
        if not groups[0]:
            return Reading(None)  # "()": the meter has no value for it
        value, unit = _split_number(groups[0])
        return Reading(value, unit)
    # A few meters send two values on one line (Luxembourg 1-1:31.4.0).
    readings = tuple(Reading(*_split_number(g)) for g in groups)
    return Reading(readings, readings[0].unit)


def _parse_int(groups: list[str], ts: TimestampParser) -> Reading:
    text = groups[0]
    if not text:
        return Reading(None)
    star = text.find("*")
    if star >= 0:
        return Reading(int(text[:star]), text[star + 1 :])
    return Reading(int(text))


def _parse_text(groups: list[str], ts: TimestampParser) -> Reading:
    return Reading(")(".join(groups))


def _parse_hex_text(groups: list[str], ts: TimestampParser) -> Reading:
    return Reading(_hex_text(groups[0]))


def _parse_timestamp(groups: list[str], ts: TimestampParser) -> Reading:
    return Reading(ts.parse(groups[0]))


def _parse_timed_number(groups: list[str], ts: TimestampParser) -> Reading:
    if len(groups) == 1:
        value, unit = _split_number(groups[0])
        return Reading(value, unit)
    value, unit = _split_number(groups[1])
    return Reading(value, unit, ts.parse(groups[0]))


def _parse_mbus_legacy(groups: list[str], ts: TimestampParser) -> Reading:
    # (time)(00)(60)(1)(0-1:24.2.1)(m3) followed by (value) on the next line.
    if len(groups) < 7:
        raise DecodeError(f"expected 7 values, got {len(groups)}")
    return Reading(float(groups[6]), groups[5] or None, ts.parse(groups[0]))


def _parse_power_failures(groups: list[str], ts: TimestampParser) -> Reading:
    entries: list[HistoryEntry] = []
    count = int(groups[0]) if groups[0] else 0
    pairs = groups[2:]
    if len(pairs) < 2 * count:
        raise DecodeError(f"log announces {count} entries but holds {len(pairs) // 2}")
    for i in range(count):
        duration, unit = _split_number(pairs[2 * i + 1])
        entries.append(HistoryEntry(ts.parse(pairs[2 * i]), duration, unit))
    return Reading(tuple(entries), "s")


def _parse_peak_history(groups: list[str], ts: TimestampParser) -> Reading:
    first = groups[0]
    if len(first) >= 12:
        # Hungarian meters reuse 0-0:98.1.0 for billing values captured at one time.
        stamp = ts.parse(first)
        values = tuple(HistoryEntry(stamp, *_split_number(g), month=_previous_month(first)) for g in groups[1:] if g)
        return Reading(values, values[0].unit if values else None, stamp)
    count = int(first) if first else 0
    triples = groups[3:]
    if triples and triples[-1] == "":
        triples.pop()  # an empty history ends in "()"
    if len(triples) % 3:
        raise DecodeError(f"history entries come in threes, got {len(triples)} values")
    # Some meters announce a count but send no entries (Sagemcom XT211): decode what is there.
    entries: list[HistoryEntry] = []
    for i in range(min(count, len(triples) // 3)):
        month_stamp, occurred, value_text = triples[3 * i : 3 * i + 3]
        value, unit = _split_number(value_text)
        occurred_at = ts.parse(occurred)
        month = _previous_month(month_stamp)
        if month is None and occurred_at is not None:
            month = f"{2000 + int(occurred[0:2]):04d}-{occurred[2:4]}"
        entries.append(HistoryEntry(occurred_at, value, unit, month))
    return Reading(tuple(entries), "kW")


PARSERS: dict[Kind, Parser] = {
    Kind.NUMBER: _parse_number,
    Kind.INT: _parse_int,
    Kind.TEXT: _parse_text,
    Kind.HEX_TEXT: _parse_hex_text,
    Kind.TIMESTAMP: _parse_timestamp,
    Kind.TIMED_NUMBER: _parse_timed_number,
    Kind.MBUS_LEGACY: _parse_mbus_legacy,
    Kind.POWER_FAILURES: _parse_power_failures,
    Kind.PEAK_HISTORY: _parse_peak_history,
}
_UNKNOWN = object()
# Resolved once per OBIS code: the hot loop then does one dict lookup per line.
_RESOLVED: dict[str, tuple[Kind, Parser] | object] = {}


def _resolve(obis: str) -> tuple[Kind, Parser] | object:
    found = _RESOLVED.get(obis)
    if found is None:
        definition = lookup(obis)
        found = (definition.kind, PARSERS[definition.kind]) if definition is not None else _UNKNOWN
        if len(_RESOLVED) < 4096:  # bounded: garbage OBIS codes cannot grow it
            _RESOLVED[obis] = found
    return found


def _merge_continuations(lines: list[str]) -> list[str]:
    """DSMR 2.2/3 put the gas value on a line of its own, starting with "("."""
    merged: list[str] = []
    for line in lines:
        if line[:1] == "(" and merged:
            merged[-1] += line
        else:
            merged.append(line)
    return merged


# "1-0:1.8.1(000015.758*kWh)" or "0-0:96.14.0(0001)": line, OBIS, number, unit.
_PLAIN_NUMBER_LINE = re.compile(r"^((\d-\d{1,2}:\d{1,3}\.\d{1,3}\.\d{1,3})\((\d+(?:\.\d+)?)(?:\*([A-Za-z0-9]+))?\))$", re.M)


_NUMBER, _INT, _TIMESTAMP = Kind.NUMBER, Kind.INT, Kind.TIMESTAMP
# NamedTuple's generated __new__ is Python code; tuple.__new__ builds the same object in C.
_new_reading = tuple.__new__


class Decoder:
    """Decodes telegrams for one time zone.

    Most lines repeat from one telegram to the next (identifiers, thresholds,
    the peak history, a gas reading between reports), so decoded lines are
    remembered in a bounded cache and reused: this is what keeps a Raspberry
    Pi idle at one telegram a second and makes backfills fast.
    """

    def __init__(self, timestamps: TimestampParser, cache_lines: int = 16384) -> None:
        self.timestamps = timestamps
        self.cache_lines = cache_lines
        self._cache: dict[str, tuple[str, Reading]] = {}

    def decode(self, body: bytes | str, crc_ok: bool | None = None, raw: bytes = b"") -> Telegram:
        """Decode one telegram.  Raises DecodeError only when it is not a telegram at all."""
        text = body.decode("ascii", "replace") if isinstance(body, (bytes, bytearray)) else body
        if not text.startswith("/"):
            raise DecodeError("telegram does not start with '/'")
        lines = text.split("\r\n") if "\r\n" in text else text.split("\n")
        if "\n(" in text:
            lines = _merge_continuations(lines)
        header = lines[0].rstrip("\r")[1:]
        unknown: dict[str, str] = {}
        invalid: dict[str, str] = {}
        # A local dict when caching is off keeps one code path for both modes.
        cache = self._cache if self.cache_lines else {}
        body_lines = lines[1:]
        # Membership tests and the final assembly run in C; only lines not seen
        # before go through the Python loop below.
        misses = list(filterfalse(cache.__contains__, body_lines))
        if self.cache_lines and len(cache) + len(misses) > self.cache_lines:
            cache.clear()  # crude but bounded; it refills within a few telegrams
            misses = body_lines
            if len(misses) > self.cache_lines:
                cache = {}  # a telegram longer than the cache must not grow it past its bound
        if len(misses) > 2:
            # Most new lines are one plain number: one regex pass in C reads
            # them all, and only the rest take the general path below.
            for line, obis, number, unit in _PLAIN_NUMBER_LINE.findall("\n".join(misses)):
                resolved = _RESOLVED.get(obis) or _resolve(obis)
                if resolved is _UNKNOWN:
                    continue
                kind = resolved[0]  # type: ignore[index]
                if kind is _NUMBER:
                    cache[line] = (obis, _new_reading(Reading, (float(number), unit or None, None)))
                elif kind is _INT and "." not in number:
                    cache[line] = (obis, _new_reading(Reading, (int(number), unit or None, None)))
            misses = list(filterfalse(cache.__contains__, misses))
        for line in misses:
            paren = line.find("(")
            if paren <= 0:
                line = line.rstrip("\r")
                if line and line[0] != "!":
                    unknown[line] = ""
                continue
            obis = line[:paren]
            if "*" in obis:
                obis = obis[: obis.find("*")]  # IEC 62056-21 meters append "*255"
            resolved = _RESOLVED.get(obis) or _resolve(obis)
            if resolved is _UNKNOWN:
                unknown[obis] = line[paren:]
                continue
            value_text = line.rstrip("\r")[paren:]
            if value_text[-1] != ")":
                invalid[obis] = f"value {value_text[:40]!r} is not in parentheses"
                continue
            inner = value_text[1:-1]
            kind, parser = cast("tuple[Kind, Parser]", resolved)
            try:
                if kind is _TIMESTAMP:
                    # Every telegram's own time is new: skip the generic parser call.
                    reading = _new_reading(Reading, (self.timestamps.parse(inner), None, None))
                elif kind is Kind.NUMBER and ")(" not in inner:
                    # Fast path for the most common line: one number with an optional unit.
                    star = inner.find("*")
                    if star > 0:
                        reading = Reading(float(inner[:star]), inner[star + 1 :])
                    else:
                        reading = Reading(float(inner) if inner else None)
                else:
                    reading = parser(inner.split(")("), self.timestamps)
            except (ValueError, IndexError, DecodeError) as exc:
                invalid[obis] = f"cannot read {value_text[:60]!r}: {exc}"
                continue
            cache[line] = (obis, reading)
        fields: dict[str, Reading] = dict(filter(None, map(cache.get, body_lines)))
        stamp = fields.get(TIMESTAMP_OBIS)
        timestamp = stamp.value if stamp is not None and isinstance(stamp.value, datetime) else None
        return Telegram(header, timestamp, crc_ok, fields, unknown, invalid, raw)


def decode(body: bytes | str, timestamps: TimestampParser, crc_ok: bool | None = None, raw: bytes = b"") -> Telegram:
    """Decode one telegram without a line cache (for one-off use and tests)."""
    return Decoder(timestamps, cache_lines=0).decode(body, crc_ok, raw)
