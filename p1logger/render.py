"""How a telegram looks to a person (table) or to a program (JSON Lines)."""

from __future__ import annotations

from datetime import datetime, timezone, tzinfo
from functools import lru_cache
from itertools import compress, count
from operator import is_not
from typing import Any

import orjson

from p1logger.config import tariff_label
from p1logger.decode import HistoryEntry, Reading, Telegram
from p1logger.obis import MBUS_DEVICE_TYPES, lookup

_TARIFF_OBIS_PREFIXES = ("1-0:1.8.", "1-0:2.8.")


# orjson writes a UTC datetime as ISO 8601 five times faster than strftime.
_ORJSON_UTC = orjson.OPT_UTC_Z | orjson.OPT_OMIT_MICROSECONDS | orjson.OPT_NAIVE_UTC


def _json_time(moment: datetime) -> bytes:
    """A time in UTC as a JSON string, "2024-05-01T12:00:00Z"; a naive time is taken to be UTC already."""
    if moment.tzinfo is not None and moment.tzinfo is not timezone.utc:
        moment = moment.astimezone(timezone.utc)
    if moment.year >= 1000:
        return orjson.dumps(moment, option=_ORJSON_UTC)
    return f'"{moment:%Y-%m-%dT%H:%M:%SZ}"'.encode()


@lru_cache(maxsize=1024)
def iso_utc(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return _json_time(moment)[1:-1].decode()


def _json_value(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_json_item(item) for item in value]
    if isinstance(value, datetime):
        return iso_utc(value)
    return value


def _json_item(item: Any) -> dict[str, Any]:
    if isinstance(item, HistoryEntry):
        entry: dict[str, Any] = {"time": iso_utc(item.time), "value": item.value, "unit": item.unit}
        if item.month is not None:
            entry["month"] = item.month
        if item.columns:
            entry["columns"] = [_json_cell(obis, cell) for obis, cell in item.columns]
        return entry
    if isinstance(item, Reading):
        return {"value": _json_value(item.value), "unit": item.unit}
    return {"value": item, "unit": None}


def _json_cell(obis: str, reading: Reading) -> dict[str, Any]:
    return {"obis": obis, **_field_json(reading)}


def _field_json(reading: Reading) -> dict[str, Any]:
    entry: dict[str, Any] = {"value": _json_value(reading.value), "unit": reading.unit}
    if reading.time is not None:
        entry["time"] = iso_utc(reading.time)
    return entry


def telegram_json(telegram: Telegram, rejected: str | None = None) -> dict[str, Any]:
    fields: dict[str, Any] = {obis: _field_json(reading) for obis, reading in telegram.fields.items()}
    for obis, raw in telegram.unknown.items():
        guessed = telegram.unknown_values.get(obis)
        if guessed is None:
            fields[obis] = {"value": raw, "unit": None, "raw": True}
            continue
        # Read by its shape alone: the number, unit and time, with the raw text beside them.
        entry = {"value": _json_value(guessed.value), "unit": guessed.unit, "unknown": True, "raw_text": raw}
        if guessed.time is not None:
            entry["time"] = iso_utc(guessed.time)
        fields[obis] = entry
    out: dict[str, Any] = {
        "crc_ok": telegram.crc_ok,
        "header": telegram.header,
        "meter": telegram.meter_id,
        "timestamp": iso_utc(telegram.timestamp),
        "fields": fields,
    }
    if telegram.unknown:
        out["unknown"] = sorted(telegram.unknown)
    if telegram.invalid:
        out["invalid"] = telegram.invalid
    if rejected is not None:
        out["rejected"] = rejected
    return out


def json_line(telegram: Telegram, rejected: str | None = None) -> str:
    """One telegram as a line of JSON (without the newline): the reference form that JsonLines reproduces."""
    import json  # only for the rare telegram JsonLines does not take its fast path with

    return json.dumps(telegram_json(telegram, rejected), separators=(",", ":"), ensure_ascii=False)


def _orjson_agrees(reading: Reading) -> bool:
    """Does orjson write this reading exactly as ``json.dumps`` does?

    It differs only on floats outside [1e-4, 1e16) (``0.00001`` against ``1e-05``), NaN and infinities
    (``null`` against ``NaN``); integers beyond 64 bits make it raise.
    """
    value = reading.value
    if type(value) is float:
        return value == 0.0 or 1e-4 <= abs(value) < 1e16
    if type(value) is tuple:
        return all(type(item.value) is not float or item.value == 0.0 or 1e-4 <= abs(item.value) < 1e16
                   for item in value)
    return True


_JSON_BOOL = {True: b"true", False: b"false", None: b"null"}


class JsonLines:
    """Telegrams as JSON Lines in bytes, byte for byte what ``json_line`` writes, at a fraction of its cost.

    A meter repeats most lines from one telegram to the next, and the decoder then hands out the very same
    Reading objects.  So the JSON of each meter's last telegram is kept field by field, and only the fields
    whose reading is another object, about 6 of 30, are written again: a number or a time into the JSON
    kept around it for its OBIS code and unit, anything else once per reading object (kept by identity; the
    kept reading cannot be freed, so its id is not reused).  Bounded: each cache is emptied when full.
    """

    def __init__(self, cache_fields: int = 16384, meters: int = 64) -> None:
        self.cache_fields = cache_fields
        self.meters = meters
        self._last: dict[tuple[bool | None, str, str], tuple[list[str], list[Reading], list[bytes]]] = {}
        self._fields: dict[int, tuple[str, Reading, bytes]] = {}  # by id(reading)
        self._frames: dict[str, tuple[str | None, bytes, bytes]] = {}  # by OBIS: unit, JSON before and after
        self._head_key: tuple[bool | None, str, str] | None = None
        self._head = b""

    def line(self, telegram: Telegram, rejected: str | None = None) -> bytes:
        """One telegram as a line of JSON, newline included."""
        if telegram.unknown or telegram.invalid or rejected is not None:
            return json_line(telegram, rejected).encode() + b"\n"
        fields = telegram.fields
        names = list(fields)
        readings = list(fields.values())
        part = self._part
        key = (telegram.crc_ok, telegram.header, telegram.meter_id)
        last = self._last.get(key)
        if last is not None and last[0] == names:
            parts = last[2].copy()
            # Only the readings that are not the same objects as last time; the loop over the rest runs in C.
            for index in compress(count(), map(is_not, readings, last[1])):
                parts[index] = part(names[index], readings[index])
        else:
            parts = list(map(part, names, readings))
            if len(self._last) >= self.meters:
                self._last.clear()
        self._last[key] = (names, readings, parts)
        if key != self._head_key:
            self._head_key, self._head = key, (
                b'{"crc_ok":' + _JSON_BOOL[key[0]] + b',"header":' + orjson.dumps(key[1])
                + b',"meter":' + orjson.dumps(key[2]) + b',"timestamp":')
        stamp = telegram.timestamp
        return b"".join((self._head, b"null" if stamp is None else _json_time(stamp),
                         b',"fields":{', b",".join(parts), b"}}\n"))

    def _part(self, obis: str, reading: Reading) -> bytes:
        """One field, ``"OBIS":{...}``."""
        value: Any
        value, unit, moment = reading
        simple = type(value)  # exact types: orjson and json.dumps may differ on subclasses
        if moment is None and (simple is float and (value == 0.0 or 1e-4 <= abs(value) < 1e16)
                               or simple is datetime):
            frame = self._frames.get(obis)
            if frame is None or frame[0] != unit:
                if len(self._frames) >= self.cache_fields:
                    self._frames.clear()
                frame = self._frames[obis] = (
                    unit, orjson.dumps(obis) + b':{"value":', b',"unit":' + orjson.dumps(unit) + b"}")
            return frame[1] + (orjson.dumps(value) if simple is float else _json_time(value)) + frame[2]
        known = self._fields.get(id(reading))
        if known is not None and known[0] == obis:
            return known[2]
        entry = {obis: _field_json(reading)}
        if _orjson_agrees(reading):
            try:
                encoded = orjson.dumps(entry)[1:-1]
            except orjson.JSONEncodeError:
                encoded = self._slow(entry)
        else:
            encoded = self._slow(entry)
        if len(self._fields) >= self.cache_fields:
            self._fields.clear()
        self._fields[id(reading)] = (obis, reading, encoded)
        return encoded

    @staticmethod
    def _slow(entry: dict[str, Any]) -> bytes:
        import json

        return json.dumps(entry, separators=(",", ":"), ensure_ascii=False).encode()[1:-1]


def _describe(obis: str, telegram: Telegram, country: str) -> str:
    definition = lookup(obis)
    text = definition.description if definition is not None else "(not in the OBIS table; kept raw)"
    if obis.startswith(_TARIFF_OBIS_PREFIXES) and obis[-1] in "1234":
        text += f" [{tariff_label(country, int(obis[-1]))}]"
    if obis[:2] == "0-" and obis[2] in "1234" and obis[3] == ":":
        device_type, _ = telegram.mbus_devices().get(obis[2], (None, None))
        kind = MBUS_DEVICE_TYPES.get(device_type) if device_type is not None else None
        text += f" (channel {obis[2]}{', ' + kind if kind else ''})"
    return text


def local_time(moment: datetime, zone: tzinfo | None) -> str:
    """As the meter's display shows it, with the offset that makes it unambiguous: 2024-03-31 03:00:00+02:00."""
    if zone is None:
        return f"{moment:%Y-%m-%d %H:%M:%S} UTC"
    return moment.astimezone(zone).isoformat(sep=" ")


def _plain(value: Any, zone: tzinfo | None = None) -> str:
    if isinstance(value, float):
        return repr(value)  # exactly what the meter sent, without padding zeros
    if isinstance(value, datetime):
        return local_time(value, zone)
    if value is None:
        return "-"
    if value == "":
        return '""'
    return str(value)


def _cell_text(obis: str, cell: Reading, zone: tzinfo | None) -> str:
    if cell.time is not None or (cell.value is None and cell.unit is None):
        return f"{obis}={_plain(cell.time, zone) if cell.time else 'no time'}"
    return f"{obis}={_plain(cell.value, zone)}{' ' + cell.unit if cell.unit else ''}"


def table(telegram: Telegram, country: str, rejected: str | None = None, zone: tzinfo | None = None) -> str:
    """The telegram for a person; times in ``zone`` (the meter's) with their offset, else in UTC."""
    crc = {True: "CRC ok", False: "CRC FAILED", None: "no CRC"}[telegram.crc_ok]
    stamp = _plain(telegram.timestamp, zone) if telegram.timestamp else "no meter time"
    title = f"== {stamp}  {telegram.header}  meter {telegram.meter_id}  {crc}"
    if rejected:
        title += f"  REJECTED ({rejected})"
    rows: list[tuple[str, str, str]] = []
    for obis, reading in telegram.fields.items():
        description = _describe(obis, telegram, country)
        if isinstance(reading.value, tuple):
            rows.append((obis, description, f"{len(reading.value)} entries"))
            for item in reading.value:
                if isinstance(item, HistoryEntry):
                    when = _plain(item.time, zone) if item.time else "time unknown"
                    month = f"{item.month}  " if item.month else ""
                    rows.append(("", "", f"{month}{_plain(item.value)} {item.unit or ''}  at {when}"))
                    if item.columns:
                        rows.append(("", "", "    " + "  ".join(_cell_text(o, c, zone) for o, c in item.columns)))
                else:
                    rows.append(("", "", f"{_plain(item.value)} {item.unit or ''}"))
            continue
        value = _plain(reading.value, zone)
        if obis == "0-0:96.14.0" and isinstance(reading.value, int):
            value += f" ({tariff_label(country, reading.value)})"
        if reading.unit:
            value += f" {reading.unit}"
        if reading.time is not None:
            value += f"  at {_plain(reading.time, zone)}"
        rows.append((obis, description, value))
    for obis, raw in telegram.unknown.items():
        guessed = telegram.unknown_values.get(obis)
        if guessed is None:
            rows.append((obis, "(unknown, kept raw)", raw))
            continue
        value = _plain(guessed.value) if guessed.value is not None or guessed.time is None else ""
        if isinstance(guessed.value, tuple):
            value = ", ".join(_plain(getattr(r, "value", r)) for r in guessed.value)
        if guessed.unit:
            value += f" {guessed.unit}"
        if guessed.time is not None:
            value += f"  at {_plain(guessed.time, zone)}"
        rows.append((obis, "(unknown, read by shape)", f"{value.strip()}   raw {raw}"))
    for obis, why in telegram.invalid.items():
        rows.append((obis, "(could not be read)", why))
    width = max((len(r[1]) for r in rows), default=10)
    body = "\n".join(f"  {o:<12} {d:<{width}}  {v}" for o, d, v in rows)
    return f"{title}\n{body}"
