"""How a telegram looks to a person (table) or to a program (JSON Lines)."""

from __future__ import annotations

import json
from datetime import datetime, tzinfo
from functools import lru_cache
from typing import Any

from p1logger.config import tariff_label
from p1logger.decode import HistoryEntry, Reading, Telegram
from p1logger.obis import MBUS_DEVICE_TYPES, lookup

_TARIFF_OBIS_PREFIXES = ("1-0:1.8.", "1-0:2.8.")


@lru_cache(maxsize=1024)
def iso_utc(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return f"{moment:%Y-%m-%dT%H:%M:%SZ}"


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
        return entry
    if isinstance(item, Reading):
        return {"value": _json_value(item.value), "unit": item.unit}
    return {"value": item, "unit": None}


def telegram_json(telegram: Telegram, rejected: str | None = None) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for obis, reading in telegram.fields.items():
        entry: dict[str, Any] = {"value": _json_value(reading.value), "unit": reading.unit}
        if reading.time is not None:
            entry["time"] = iso_utc(reading.time)
        fields[obis] = entry
    for obis, raw in telegram.unknown.items():
        fields[obis] = {"value": raw, "unit": None, "raw": True}
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
    return json.dumps(telegram_json(telegram, rejected), separators=(",", ":"), ensure_ascii=False)


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
        rows.append((obis, "(unknown, kept raw)", raw))
    for obis, why in telegram.invalid.items():
        rows.append((obis, "(could not be read)", why))
    width = max((len(r[1]) for r in rows), default=10)
    body = "\n".join(f"  {o:<12} {d:<{width}}  {v}" for o, d, v in rows)
    return f"{title}\n{body}"
