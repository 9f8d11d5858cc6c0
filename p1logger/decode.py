"""Decode a framed telegram into values (pipeline stage: decode).

Pure functions over bytes: no I/O.  Each OBIS line is looked up in the table in
``obis.py`` and parsed by the parser for its value kind.  Within a line, each
value group is recognised by its shape, not its position: ``(260102010000)``
or ``(251026023000W)`` is a time, ``(08.796*kW)`` or ``(123.4kWh)`` a number
with its unit, ``(1-0:1.6.0)`` a column header.  So ``1-0:1.6.0`` reads the same
whether the meter sends its time before or after its value.

Nothing changes silently: a line the table does not know is kept raw in
``Telegram.unknown`` and, when its shape is clear, also read into
``Telegram.unknown_values`` (number, unit, time); a known line whose value
cannot be read is reported in ``Telegram.invalid`` with its whole raw text.
One bad line never loses the rest of the telegram.
"""

from __future__ import annotations

import math
import re
from math import isfinite
from dataclasses import dataclass, field
from datetime import datetime
from itertools import compress, filterfalse, repeat
from operator import itemgetter, ne
from typing import Callable, NamedTuple, Union, cast

from p1logger.errors import DecodeError
from p1logger.obis import Kind, lookup
from p1logger.timestamps import PLACEHOLDER_DATES, TimestampParser, is_placeholder, is_timestamp_shape

TIMESTAMP_OBIS = "0-0:1.0.0"
# Where a meter's own identity can be found, best first.
METER_ID_OBIS = ("0-0:96.1.1", "0-0:96.1.0", "0-0:42.0.0", "1-0:0.0.0", "0-0:96.1.255")
# The clock column of a capture object (profile generic) whose header lists only the captured values.
CAPTURE_CLOCK_OBIS = "0-0:1.0.0"


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One entry of a list-valued object (peak history, power failure log)."""

    time: datetime | None  # when it happened (peak occurrence, end of the failure, capture time)
    value: float | None
    unit: str | None
    month: str | None = None  # peak history: "YYYY-MM" the peak belongs to
    # Capture objects: every column of the row, (column OBIS, reading), in the meter's order.
    # A time cell is Reading(None, None, time); a number cell Reading(value, unit).
    columns: tuple[tuple[str, "Reading"], ...] = ()


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
    invalid: dict[str, str] = field(default_factory=dict)  # OBIS -> why it failed, with the whole raw text
    raw: bytes = b""
    # Unknown lines whose shape is clear: OBIS -> number, unit and time read by shape.
    unknown_values: dict[str, Reading] = field(default_factory=dict)

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


# A number with an optional unit, with or without the "*" (some Nordic meters write "123.4kWh").
_NUMBER_UNIT = re.compile(r"([-+]?\d+(?:\.\d*)?|[-+]?\.\d+)\*?([A-Za-z][A-Za-z0-9/%]*)?\Z")
# A column header inside a capture object: "1-0:1.6.0".
_OBIS_GROUP = re.compile(r"\d{1,3}-\d{1,3}:\d{1,3}\.\d{1,3}\.\d{1,3}\Z")


def _finite(value: float, group: str) -> float:
    if not math.isfinite(value):
        raise ValueError(f"{group!r} is not a meter value")
    return value


def _split_number(group: str) -> tuple[float, str | None]:
    star = group.find("*")
    if star >= 0:
        unit = group[star + 1 :]
        if not unit:
            raise ValueError(f"{group!r} has an empty unit")
        return _finite(float(group[:star]), group), unit
    match = _NUMBER_UNIT.match(group)
    if match is None:
        raise ValueError(f"{group!r} is not a number with a unit")
    return float(match.group(1)), match.group(2)


def _is_number(group: str) -> bool:
    return _NUMBER_UNIT.match(group) is not None


_NOT_TEXT = "\ufffd"  # what a byte that is not ASCII reads as
IMPORT_PEAK_OBIS = "1-0:1.6.0"


def _is_time(group: str) -> bool:
    return is_timestamp_shape(group)


def _hex_text(group: str) -> str:
    # Hungarian meters pad an empty message with raw 0xFF bytes, which are not text (and decode to U+FFFD).
    group = group.strip(_NOT_TEXT)
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
    if len(stamp) < 6 or not stamp[:6].isdigit() or stamp[:6] in PLACEHOLDER_DATES or is_placeholder(stamp):
        return None
    year, month = 2000 + int(stamp[0:2]), int(stamp[2:4])
    if not 1 <= month <= 12:
        return None
    if stamp[4:12] == "01000000":
        year, month = (year - 1, 12) if month == 1 else (year, month - 1)
    return f"{year:04d}-{month:02d}"


def _time_and_value(groups: list[str], ts: TimestampParser) -> Reading:
    """One time group and one number group, in either order: (time)(value*unit) or (value*unit)(time)."""
    first, second = groups
    first_time, second_time = _is_time(first), _is_time(second)
    if first_time and second_time:
        # Both could be times only when a bare 12-digit number stands beside one: the flagged or the
        # non-numeric-looking group is the time, and a value with a unit or a point is never a time.
        if "." in first or "*" in first:
            first_time = False
        else:
            second_time = "." in second or "*" in second
            first_time = not second_time
    if first_time and not second_time:
        stamp, number = first, second
    elif second_time and not first_time:
        stamp, number = second, first
    else:
        raise DecodeError(f"expected a time and a value, got ({first})({second})")
    value, unit = _split_number(number)
    return Reading(value, unit, ts.read(stamp))


Parser = Callable[[list[str], TimestampParser], Reading]


def _parse_number(groups: list[str], ts: TimestampParser) -> Reading:
    if len(groups) == 1:
        if not groups[0]:
            return Reading(None)  # "()": the meter has no value for it
        value, unit = _split_number(groups[0])
        return Reading(value, unit)
    if len(groups) == 2 and (_is_time(groups[0]) or _is_time(groups[1])):
        return _time_and_value(groups, ts)
    # A few meters send two values on one line (Luxembourg 1-1:31.4.0).
    readings = tuple(Reading(*_split_number(g)) for g in groups)
    return Reading(readings, readings[0].unit)


def _parse_int(groups: list[str], ts: TimestampParser) -> Reading:
    if len(groups) != 1:
        raise DecodeError(f"expected one value, got {len(groups)}")
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
    return Reading(_hex_text(")(".join(groups)))


def _parse_timestamp(groups: list[str], ts: TimestampParser) -> Reading:
    if len(groups) != 1:
        raise DecodeError(f"expected one time, got {len(groups)} values")
    return Reading(ts.read(groups[0]))


def _parse_timed_number(groups: list[str], ts: TimestampParser) -> Reading:
    if len(groups) == 1:
        if not groups[0]:
            return Reading(None)
        value, unit = _split_number(groups[0])
        return Reading(value, unit)
    if len(groups) != 2:
        raise DecodeError(f"expected a time and a value, got {len(groups)} values")
    return _time_and_value(groups, ts)


def _parse_mbus_legacy(groups: list[str], ts: TimestampParser) -> Reading:
    # (time)(00)(60)(1)(0-1:24.2.1)(m3) followed by (value) on the next line.
    if len(groups) != 7:
        raise DecodeError(f"expected 7 values, got {len(groups)}")
    stamp = groups[0]
    if not _is_time(stamp):
        raise DecodeError(f"{stamp!r} is not a capture time")
    return Reading(_finite(float(groups[6]), groups[6]), groups[5] or None, ts.read(stamp))


def _parse_power_failures(groups: list[str], ts: TimestampParser) -> Reading:
    entries: list[HistoryEntry] = []
    count = int(groups[0]) if groups[0] else 0
    if len(groups) > 1 and not _OBIS_GROUP.match(groups[1]):
        raise DecodeError(f"{groups[1]!r} is not the OBIS code of the logged object")
    pairs = groups[2:]
    if pairs and pairs[-1] == "" and len(pairs) % 2:
        pairs.pop()
    if len(pairs) < 2 * count:
        raise DecodeError(f"log announces {count} entries but holds {len(pairs) // 2}")
    if len(pairs) > 2 * count:
        raise DecodeError(f"log announces {count} entries but holds {len(pairs) / 2:g}")
    for i in range(count):
        # (end time)(duration*s), in either order.
        reading = _time_and_value(pairs[2 * i : 2 * i + 2], ts)
        entries.append(HistoryEntry(reading.time, reading.value, reading.unit))  # type: ignore[arg-type]
    return Reading(tuple(entries), "s")


def _cell(obis: str, group: str, ts: TimestampParser) -> tuple[str, Reading]:
    if _is_time(group):
        return obis, Reading(None, None, ts.read(group))
    if not group:
        return obis, Reading(None)
    if _is_number(group):
        return obis, Reading(*_split_number(group))
    return obis, Reading(_hex_text(group))


def _capture_rows(groups: list[str], ts: TimestampParser) -> tuple[tuple[str, ...], list[list[str]]]:
    """A capture object (DLMS profile generic): (count)(column OBIS)...(cells of each row)...

    A row holds the capture time and then one cell per listed column (the
    e-MUCS peak history lists ``1-0:1.6.0`` twice: its time and its value),
    or just the listed columns.  Returns the column names and the rows' cells.
    """
    first = groups[0]
    if first and not first.isdigit():
        raise DecodeError(f"{first!r} is not a count of entries")
    count = int(first) if first else 0
    columns: list[str] = []
    index = 1
    while index < len(groups) and _OBIS_GROUP.match(groups[index]):
        columns.append(groups[index])
        index += 1
    cells = groups[index:]
    if cells and cells[-1] == "":
        cells.pop()  # an empty history ends in "()"
    if not columns:
        if cells:
            raise DecodeError("no column headers before the entries")
        return (), []
    with_clock = len(columns) + 1
    if count and len(cells) == count * len(columns):
        width, names = len(columns), tuple(columns)  # the header lists the clock column itself
    else:
        width, names = with_clock, (CAPTURE_CLOCK_OBIS, *columns)
        if len(cells) % width:
            word = "threes" if width == 3 else f"groups of {width}"
            raise DecodeError(f"history entries come in {word} (capture time and {len(columns)} columns), "
                              f"got {len(cells)} values")
    if len(cells) // width > count:
        raise DecodeError(f"announces {count} entries but holds {len(cells) // width}")
    # Some meters announce a count but send no entries (Sagemcom XT211): decode what is there.
    rows = [cells[i : i + width] for i in range(0, min(count, len(cells) // width) * width, width)]
    return names, rows


def _parse_capture(groups: list[str], ts: TimestampParser) -> Reading:
    names, rows = _capture_rows(groups, ts)
    entries: list[HistoryEntry] = []
    for cells in rows:
        row = tuple(_cell(name, group, ts) for name, group in zip(names, cells))
        times = [reading.time for _, reading in row if reading.value is None and reading.unit is None]
        numbers = [reading for _, reading in row if isinstance(reading.value, float)]
        time_cells = [group for group in cells if _is_time(group)]
        month = _previous_month(time_cells[0]) if time_cells else None
        first = numbers[0] if numbers else Reading(None)
        entries.append(HistoryEntry(times[0] if times else None, first.value, first.unit, month, row))  # type: ignore[arg-type]
    unit = entries[0].unit if entries else None
    return Reading(tuple(entries), unit)


def _parse_peak_history(groups: list[str], ts: TimestampParser) -> Reading:
    first = groups[0]
    if _is_time(first):
        # Hungarian meters reuse 0-0:98.1.0 for last month's billing registers, captured at one time: energy
        # totals, then the import and export maximum demands. None is a Belgian monthly peak, so no entry
        # names a month (points writes peaks only for entries that do).
        stamp = ts.read(first)
        values = tuple(HistoryEntry(stamp, *_split_number(g)) for g in groups[1:] if g)
        return Reading(values, values[0].unit if values else None, stamp)
    names, rows = _capture_rows(groups, ts)
    entries: list[HistoryEntry] = []
    for cells in rows:
        # Each row by shape: the first time is the capture stamp (00:00 on the 1st after the month),
        # the next one when the peak happened, the first number the import peak itself.
        time_cells = [group for group in cells if _is_time(group)]
        # Where the header names the import peak's columns (e-MUCS H adds a billing period counter and the
        # export peak: (0-0:0.1.0)(1-0:1.6.0)(1-0:1.6.0)(1-0:2.6.0)(1-0:2.6.0)), the peak is read there.
        peak = [group for name, group in zip(names, cells) if name == IMPORT_PEAK_OBIS]
        in_peak = peak if any(group and not _is_time(group) and _is_number(group) for group in peak) else cells
        number_cells = [group for group in in_peak if group and not _is_time(group) and _is_number(group)]
        if not time_cells or not number_cells:
            raise DecodeError(f"history entry ({')('.join(cells)}) has no capture time or no value")
        value, unit = _split_number(number_cells[0])
        peak_times = [group for group in in_peak if _is_time(group)] if in_peak is peak else time_cells[1:]
        occurred_text = peak_times[0] if peak_times else None
        occurred_at = ts.read(occurred_text) if occurred_text is not None else None
        month = _previous_month(time_cells[0])
        if month is None and occurred_at is not None and occurred_text is not None:
            month = f"{2000 + int(occurred_text[0:2]):04d}-{occurred_text[2:4]}"
        columns = tuple(_cell(name, group, ts) for name, group in zip(names, cells)) if len(cells) > 3 else ()
        entries.append(HistoryEntry(occurred_at, value, unit, month, columns))
    return Reading(tuple(entries), "kW")


def guess(groups: list[str], ts: TimestampParser) -> Reading | None:
    """An unknown line read by its shape alone, or None when its shape is not clear.

    ``(number*unit)``, ``(time)``, ``(time)(number*unit)`` in either order, a
    few numbers, or a capture object with column headers.
    """
    try:
        if len(groups) > 1 and _OBIS_GROUP.match(groups[1]):
            return _parse_capture(groups, ts)
        if len(groups) == 1:
            group = groups[0]
            if _is_time(group):
                return Reading(None, None, ts.read(group))
            if _is_number(group):
                value, unit = _split_number(group)
                if unit is None and "." not in group and group.lstrip("+-").isdigit() and len(group) < 12:
                    return Reading(int(group), None)
                return Reading(value, unit)
            return None
        if len(groups) == 2 and (_is_time(groups[0]) or _is_time(groups[1])):
            return _time_and_value(groups, ts)
        if all(g and _is_number(g) and not _is_time(g) for g in groups):
            readings = tuple(Reading(*_split_number(g)) for g in groups)
            return Reading(readings, readings[0].unit)
    except (ValueError, DecodeError):
        return None
    return None


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
    Kind.CAPTURE: _parse_capture,
}
_UNKNOWN = object()
# Bounds: garbage OBIS codes cannot grow the resolutions, nor a stream of new meters the telegrams kept.
_MAX_RESOLVED = 4096
_MAX_METERS = 128  # a reader sees one or two; a replay of a mixed corpus, the ~100 meters of tests/fixtures
_MAX_LAYOUTS = 4  # templates per meter key: meters that share it, or one meter's values at another width
# Where a telegram says which meter sent it: this tells apart meters that share an identification line.
_METER_ID_MARKERS = ("\n0-0:96.1.1(", "\n0-0:96.1.0(")
_MAX_METER_ID_CHARS = 96


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


def _read_value(kind: Kind, parser: Parser, inner: str, timestamps: TimestampParser) -> Reading:
    """The reading of a known line from the text inside its outer parentheses; raises when it cannot be read."""
    if kind is _TIMESTAMP:
        # Every telegram's own time is new: skip the generic parser call. The lenient
        # parse reads every real stamp; only what it refuses is judged strictly.
        moment = timestamps.parse_new(inner)
        if moment is None:
            moment = timestamps.read(inner)
        return _new_reading(Reading, (moment, None, None))
    if kind is _NUMBER and ")(" not in inner:
        # The most common line: one number with an optional unit.
        star = inner.find("*")
        if star > 0 and star < len(inner) - 1:
            value = float(inner[:star])
            if value - value != 0.0:  # nan or inf: float() reads them, meters never send them
                raise ValueError(f"{inner!r} is not a meter value")
            return _new_reading(Reading, (value, inner[star + 1 :], None))
        return Reading(*_split_number(inner)) if inner else Reading(None)
    return parser(inner.split(")("), timestamps)


_NOTHING = slice(0, 0)


class _Template:
    """The last telegram of one meter, with where the values that were seen to change sit in its text.

    Meters write their values at a fixed width, so a telegram of the same meter
    is this text with those values rewritten in place.  When the rest of the
    text is the same to the character (its length and every piece between the
    values), only those values need reading, and everything else is what it was.
    """

    __slots__ = ("separator", "lines", "size", "volatile", "length", "literal_slices", "literals", "value_slices", "literal_getter", "value_getter",
                 "header", "fields", "unknown", "invalid", "unknown_values", "float_mask", "float_keys", "float_units",
                 "int_mask", "int_keys", "int_units", "others", "other_texts")

    def __init__(self, separator: str, lines: list[str], header: str, fields: dict[str, Reading],
                 unknown: dict[str, str], invalid: dict[str, str], unknown_values: dict[str, Reading]) -> None:
        self.separator = separator
        self.lines = lines  # the whole telegram: identification line, data lines, "!"
        self.size = len(separator) * (len(lines) - 1) + sum(map(len, lines))
        self.volatile: frozenset[int] = frozenset()  # indexes (in lines) of the lines seen to change
        self.length = 0  # 0 until there is something to match: then the length of the text
        self.literal_slices: list[slice] = []  # the text between the values ...
        self.literals: tuple[str, ...] = ()  # ... and what it holds
        self.value_slices: list[slice] = []
        self.literal_getter = self.value_getter = itemgetter(_NOTHING, _NOTHING)
        self.header = header
        self.fields = fields
        self.unknown = unknown
        self.invalid = invalid
        self.unknown_values = unknown_values
        # Per way of reading a value: which of the values, the field each one sets, and its unit.
        self.float_mask: list[bool] = []
        self.float_keys: list[str] = []
        self.float_units: list[str | None] = []
        self.int_mask: list[bool] = []
        self.int_keys: list[str] = []
        self.int_units: list[str | None] = []
        # Values read one by one: (index in the values, OBIS, kind, parser).
        self.others: list[tuple[int, str, Kind, Parser]] = []
        # The text each of those was last read from: an M-Bus reading with its capture time changes once an
        # hour or every five minutes, and read again unchanged it would be a new Reading every telegram.
        self.other_texts: list[str | None] = []

    def build(self, volatile: frozenset[int], slots: list[tuple[str, Kind, Parser] | None]) -> None:
        """Find the values in the text: ``slots`` gives, per line, its OBIS code, kind and parser (None when no field)."""
        self.volatile = volatile
        offset = literal_start = 0
        values: list[tuple[str, str, Kind, Parser, str | None]] = []  # per value: how to read it
        for index, line in enumerate(self.lines):
            slot = slots[index]
            if index in volatile and slot is not None:
                obis, kind, parser = slot
                paren = line.find("(")
                inner = line.rstrip("\r")[paren + 1 : -1]
                star = inner.find("*")
                unit = inner[star + 1 :] if star >= 0 else None
                plain = "(" not in inner and ")" not in inner
                width = len(inner)
                if kind is _NUMBER and plain and star > 0 and unit and "*" not in unit:
                    how, width = "float", star  # the number before "*unit": the unit is part of the text
                elif kind is _INT and plain and (unit is None or "*" not in unit):
                    how, width = "int", star if star >= 0 else width
                else:
                    how, unit = "other", None
                start = offset + paren + 1
                self.literal_slices.append(slice(literal_start, start))
                self.value_slices.append(slice(start, start + width))
                literal_start = start + width
                values.append((how, obis, kind, parser, unit))
            offset += len(line) + len(self.separator)
        self.length = offset - len(self.separator)
        self.literal_slices.append(slice(literal_start, self.length))
        text = self.separator.join(self.lines)
        # itemgetter slices the whole text in one call; with two pieces or more it returns a tuple.
        self.literal_getter = itemgetter(*[*self.literal_slices, _NOTHING])
        self.literals = self.literal_getter(text)
        self.value_getter = itemgetter(*[*self.value_slices, _NOTHING, _NOTHING])
        self.float_mask = [how == "float" for how, *_ in values]
        self.float_keys = [obis for how, obis, *_ in values if how == "float"]
        self.float_units = [unit for how, _, _, _, unit in values if how == "float"]
        self.int_mask = [how == "int" for how, *_ in values]
        self.int_keys = [obis for how, obis, *_ in values if how == "int"]
        self.int_units = [unit for how, _, _, _, unit in values if how == "int"]
        self.others = [(i, obis, kind, parser) for i, (how, obis, kind, parser, _) in enumerate(values) if how == "other"]
        self.other_texts = [None] * len(self.others)


class Decoder:
    """Decodes telegrams for one time zone.

    A meter sends the same lines in the same order every time, and most of them
    unchanged (identifiers, thresholds, the peak history, a gas reading between
    reports).  So the decoder keeps each meter's last telegram (``_Template``)
    with the places of the values seen to change (power, voltage, current, the
    clock, a counter).  A telegram that is that text with only those values
    rewritten is read from them alone, sliced and converted in C; any other goes
    line by line through a bounded cache of decoded lines, and becomes the
    meter's new template.  Both paths give exactly what decoding every line
    afresh gives (tests/test_decode_template.py).  This is what keeps a
    Raspberry Pi idle at one telegram a second and makes backfills fast.
    """

    def __init__(self, timestamps: TimestampParser, cache_lines: int = 16384) -> None:
        self.timestamps = timestamps
        self.cache_lines = cache_lines
        self._cache: dict[str, tuple[str, Reading]] = {}
        # Unknown lines, read by shape once: line -> (OBIS or the line itself, raw value text, reading or None).
        self._unknown_cache: dict[str, tuple[str, str, Reading | None]] = {}
        # OBIS code -> (kind, parser), or _UNKNOWN for a code the table does not know.
        self._resolved: dict[str, tuple[Kind, Parser] | object] = {}
        # Meter (identification line and equipment id) -> its last telegrams; unused when caching is off.
        self._templates: dict[str, list[_Template]] = {}
        # The same templates by the length of their text, those with values to read in place.
        self._by_length: dict[int, list[_Template]] = {}

    def _resolve(self, obis: str) -> tuple[Kind, Parser] | object:
        found = self._resolved.get(obis)
        if found is None:
            definition = lookup(obis)
            found = (definition.kind, PARSERS[definition.kind]) if definition is not None else _UNKNOWN
            if len(self._resolved) < _MAX_RESOLVED:
                self._resolved[obis] = found
        return found

    def decode(self, body: bytes | str, crc_ok: bool | None = None, raw: bytes = b"") -> Telegram:
        """Decode one telegram.  Raises DecodeError only when it is not a telegram at all."""
        text = body.decode("ascii", "replace") if isinstance(body, (bytes, bytearray)) else body
        if not self.cache_lines:
            return self._decode_lines(text, crc_ok, raw, None)
        # Meters write their values at a fixed width: a telegram's length alone picks the templates to try.
        for template in self._by_length.get(len(text), ()):
            telegram = self._decode_by_template(template, text, crc_ok, raw)
            if telegram is not None:
                return telegram
        key = text[: text.find("\n")]
        for marker in _METER_ID_MARKERS:
            start = text.find(marker)
            if start >= 0:
                end = text.find(")", start, start + _MAX_METER_ID_CHARS)
                if end > 0:
                    key += text[start:end]
                break
        return self._decode_lines(text, crc_ok, raw, key)

    def _decode_by_template(self, template: _Template, text: str, crc_ok: bool | None, raw: bytes) -> Telegram | None:
        """The telegram read from its changing values alone, or None when it is not the template's text
        outside them or a value cannot be read that way (then every line is read)."""
        if template.literal_getter(text) != template.literals:
            return None
        values = template.value_getter(text)
        joined = "".join(values)
        if "\n" in joined or "\r" in joined:
            return None  # a value must not reach into another line
        fields = template.fields.copy()
        try:
            if template.float_keys:
                numbers = list(map(float, compress(values, template.float_mask)))
                if not isfinite(sum(numbers)):
                    return None  # nan or inf somewhere: the line-by-line path says which line is invalid
                fields.update(zip(template.float_keys,
                                  map(_new_reading, repeat(Reading), zip(numbers, template.float_units, repeat(None)))))
            if template.int_keys:
                integers = map(int, compress(values, template.int_mask))
                fields.update(zip(template.int_keys,
                                  map(_new_reading, repeat(Reading), zip(integers, template.int_units, repeat(None)))))
            timestamps = self.timestamps
            texts = template.other_texts
            read: list[tuple[int, str]] = []
            for slot, (index, obis, kind, parser) in enumerate(template.others):
                value = values[index]
                if value != texts[slot]:
                    # Unchanged text keeps its Reading, as the line cache of the other path does.
                    fields[obis] = _read_value(kind, parser, value, timestamps)
                    read.append((slot, value))
        except (ValueError, IndexError, DecodeError):
            return None
        for slot, value in read:
            texts[slot] = value
        template.fields = fields
        stamp = fields.get(TIMESTAMP_OBIS)
        timestamp = stamp.value if stamp is not None and isinstance(stamp.value, datetime) else None
        # The caller gets its own dicts: what it does with them cannot reach the next telegram.
        return Telegram(template.header, timestamp, crc_ok, fields.copy(), template.unknown.copy(),
                        template.invalid.copy(), raw, template.unknown_values.copy())

    def _decode_lines(self, text: str, crc_ok: bool | None, raw: bytes, key: str | None) -> Telegram:
        """Every line through the line cache; the telegram is remembered under ``key`` unless it is None."""
        if not text.startswith("/"):
            raise DecodeError("telegram does not start with '/'")
        separator = "\r\n" if "\r\n" in text else "\n"
        lines = text.split(separator)
        continued = "\n(" in text
        if continued:
            lines = _merge_continuations(lines)
        header = lines[0].rstrip("\r")[1:]
        body_lines = lines[1:]
        unknown: dict[str, str] = {}
        invalid: dict[str, str] = {}
        unknown_values: dict[str, Reading] = {}
        # A local dict when caching is off keeps one code path for both modes.
        cache = self._cache if self.cache_lines else {}
        ucache = self._unknown_cache if self.cache_lines else {}
        if len(ucache) > 1024:
            ucache.clear()  # bounded: a stream of new unknown lines cannot grow it
        # Membership tests and the final assembly run in C; only lines not seen
        # before go through the Python loop below.
        misses = list(filterfalse(cache.__contains__, body_lines))
        if ucache and misses:
            misses = list(filterfalse(ucache.__contains__, misses))
        if self.cache_lines and len(cache) + len(misses) > self.cache_lines:
            cache.clear()  # crude but bounded; it refills within a few telegrams
            ucache.clear()
            misses = body_lines
            if len(misses) > self.cache_lines:
                cache = {}  # a telegram longer than the cache must not grow it past its bound
                ucache = {}
        resolved_get, resolve = self._resolved.get, self._resolve
        if len(misses) > 2:
            # Most new lines are one plain number: one regex pass in C reads
            # them all, and only the rest take the general path below.
            for line, obis, number, unit in _PLAIN_NUMBER_LINE.findall("\n".join(misses)):
                resolved = resolved_get(obis) or resolve(obis)
                if resolved is _UNKNOWN:
                    continue
                kind = resolved[0]  # type: ignore[index]
                if kind is _NUMBER:
                    cache[line] = (obis, _new_reading(Reading, (float(number), unit or None, None)))
                elif kind is _INT and "." not in number:
                    cache[line] = (obis, _new_reading(Reading, (int(number), unit or None, None)))
            misses = list(filterfalse(cache.__contains__, misses))
        timestamps = self.timestamps
        for line in misses:
            paren = line.find("(")
            if paren <= 0:
                line = line.rstrip("\r")
                if line and line[0] != "!":
                    ucache[line] = (line, "", None)
                continue
            obis = line[:paren]
            if "*" in obis:
                obis = obis[: obis.find("*")]  # IEC 62056-21 meters append "*255"
            resolved = resolved_get(obis) or resolve(obis)
            value_text = line.rstrip("\r")[paren:]
            if resolved is _UNKNOWN:
                guessed = None
                if value_text[-1] == ")":
                    guessed = guess(value_text[1:-1].split(")("), timestamps)
                ucache[line] = (obis, value_text, guessed)
                continue
            if value_text[-1] != ")":
                invalid[obis] = f"value {value_text!r} is not in parentheses"
                continue
            kind, parser = cast("tuple[Kind, Parser]", resolved)
            try:
                reading = _read_value(kind, parser, value_text[1:-1], timestamps)
            except (ValueError, IndexError, DecodeError) as exc:
                invalid[obis] = f"cannot read {value_text!r}: {exc}"
                continue
            cache[line] = (obis, reading)
        entries = list(map(cache.get, body_lines))
        fields: dict[str, Reading] = dict(filter(None, entries))
        if ucache:
            for line in filter(ucache.__contains__, body_lines):
                code, raw_text, guessed = ucache[line]
                unknown[code] = raw_text
                if guessed is not None:
                    unknown_values[code] = guessed
        if key is not None and not continued:  # DSMR 2.2/3 meters, rare now, are always read line by line
            self._remember(key, separator, lines, header, entries, fields, unknown, invalid, unknown_values)
        stamp = fields.get(TIMESTAMP_OBIS)
        timestamp = stamp.value if stamp is not None and isinstance(stamp.value, datetime) else None
        return Telegram(header, timestamp, crc_ok, fields, unknown, invalid, raw, unknown_values)

    def _remember(self, key: str, separator: str, lines: list[str], header: str,
                  entries: list[tuple[str, Reading] | None], fields: dict[str, Reading], unknown: dict[str, str],
                  invalid: dict[str, str], unknown_values: dict[str, Reading]) -> None:
        """Keep this telegram as its meter's template, its values in place of the lines that changed so far."""
        slots: list[tuple[str, Kind, Parser] | None] = [None]  # the identification line is never a value
        for entry in entries:
            if entry is None:
                slots.append(None)
            else:
                kind, parser = cast("tuple[Kind, Parser]", self._resolved.get(entry[0]) or self._resolve(entry[0]))
                slots.append((entry[0], kind, parser))
        if len(fields) != len(slots) - slots.count(None) or not invalid.keys().isdisjoint(fields):
            return  # an object sent twice: which line wins is for the line-by-line path to say
        templates = self._templates.pop(key, [])
        template = _Template(separator, lines, header, fields.copy(), unknown.copy(), invalid.copy(),
                             unknown_values.copy())
        # Compared with the most alike telegram of the same layout: the meter's own last one, unless
        # meters share an identification line and id (anonymised, or one model on a bus).
        previous, changed, changed_lines = None, len(lines), []
        for candidate in templates:
            if candidate.separator == separator and len(candidate.lines) == len(lines):
                differing = list(compress(range(len(lines)), map(ne, lines, candidate.lines)))
                if len(differing) < changed:
                    previous, changed_lines, changed = candidate, differing, len(differing)
        volatile = previous.volatile.union(changed_lines) if previous is not None else frozenset()
        # Only values of fields are read in place: when anything else changed, start afresh.
        if all(slots[index] is not None for index in volatile):
            template.build(volatile, slots)
        if previous is not None and previous.size == template.size:
            templates.remove(previous)
            self._forget(previous)
        # else: a value changed its width, or another meter has this key: keep both texts.
        templates.insert(0, template)
        if template.length:
            self._by_length.setdefault(template.length, []).insert(0, template)
        for dropped in templates[_MAX_LAYOUTS:]:
            self._forget(dropped)
        del templates[_MAX_LAYOUTS:]
        if len(self._templates) >= _MAX_METERS:
            for dropped in self._templates.pop(next(iter(self._templates))):
                self._forget(dropped)
        self._templates[key] = templates

    def _forget(self, template: _Template) -> None:
        same_length = self._by_length.get(template.length)
        if same_length is not None and template in same_length:
            same_length.remove(template)
            if not same_length:
                del self._by_length[template.length]


def decode(body: bytes | str, timestamps: TimestampParser, crc_ok: bool | None = None, raw: bytes = b"") -> Telegram:
    """Decode one telegram without a line cache (for one-off use and tests)."""
    return Decoder(timestamps, cache_lines=0).decode(body, crc_ok, raw)
