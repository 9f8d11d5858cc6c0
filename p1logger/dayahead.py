"""Day-ahead prices: ENTSO-E's price document (A44) to the tariff file's price CSV.

Pure: parsing the XML the Transparency Platform answers, merging new prices
into the rows a CSV already holds, and writing the CSV text.  The download
itself is an input (``p1logger.inputs.entsoe``).
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from collections.abc import Mapping
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from p1logger.errors import ConfigError

# Bidding zones by the name people know them by; an EIC code is taken as it is.
BIDDING_ZONES: dict[str, str] = {
    "BE": "10YBE----------2",
    "NL": "10YNL----------L",
    "DE-LU": "10Y1001A1001A82H",
    "LU": "10Y1001A1001A82H",  # Luxembourg prices are the German-Luxembourg zone's
    "FR": "10YFR-RTE------C",
    "AT": "10YAT-APG------L",
}
_RESOLUTIONS_S = {"PT15M": 900, "PT30M": 1800, "PT60M": 3600, "P1D": 86400}
_MWH_PER_KWH = 0.001
NO_MATCHING_DATA = "999"  # the acknowledgement's reason code when nothing is published (yet)


class PriceDocumentError(Exception):
    """The answer is not a price document: an acknowledgement with a reason, or no XML at all."""


def bidding_zone(name: str) -> str:
    code = BIDDING_ZONES.get(name.upper())
    if code is not None:
        return code
    if len(name) == 16 and name[:3] == "10Y":
        return name
    raise ConfigError(f"unknown bidding zone {name!r}: use {', '.join(BIDDING_ZONES)} or a 16-character EIC code")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(element: ElementTree.Element, name: str) -> ElementTree.Element | None:
    for child in element:
        if _local(child.tag) == name:
            return child
    return None


def _text(element: ElementTree.Element, name: str) -> str | None:
    child = _child(element, name)
    return child.text.strip() if child is not None and child.text else None


def _utc(text: str) -> int:
    moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp())


def parse_price_document(body: bytes) -> dict[int, tuple[int, float]]:
    """Start (epoch s) -> (length s, EUR per kWh) for every interval the document prices.

    curveType A03 leaves out a point that repeats the one before it: it holds until the
    next position.  Where series of different resolutions cover the same time (hourly and
    quarter-hourly, since the market moved to quarter-hours), the finest one wins.
    """
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError as exc:
        raise PriceDocumentError(f"the answer is not XML ({exc})") from None
    if _local(root.tag) == "Acknowledgement_MarketDocument":
        reason = _child(root, "Reason")
        if reason is not None and _text(reason, "code") == NO_MATCHING_DATA:
            return {}  # not published yet
        text = _text(reason, "text") if reason is not None else None
        raise PriceDocumentError(f"ENTSO-E answered: {text or 'no reason given'}")
    if _local(root.tag) != "Publication_MarketDocument":
        raise PriceDocumentError(f"the answer is a {_local(root.tag)}, not a price document")
    rows: list[tuple[int, int, float]] = []  # (start, length, EUR per kWh)
    for series in root:
        if _local(series.tag) != "TimeSeries":
            continue
        currency = _text(series, "currency_Unit.name")
        unit = _text(series, "price_Measure_Unit.name")
        if currency not in (None, "EUR") or unit not in (None, "MWH"):
            raise PriceDocumentError(f"prices in {currency} per {unit}, not EUR per MWh")
        for period in series:
            if _local(period.tag) == "Period":
                rows.extend(_period_rows(period))
    steps = {step for _, step, _ in rows}
    if len(steps) <= 1:
        return {start: (step, price) for start, step, price in sorted(rows)}
    # Series of different resolutions: quarter rows, each from the finest series that prices it.
    quarters: dict[int, tuple[int, float]] = {}
    for start, step, price in sorted(rows, key=lambda row: row[1]):
        for quarter in range(start, start + step, 900):
            quarters.setdefault(quarter, (step, price))
    return {quarter: (900, price) for quarter, (_, price) in sorted(quarters.items())}


def _period_rows(period: ElementTree.Element) -> list[tuple[int, int, float]]:
    interval = _child(period, "timeInterval")
    resolution = _text(period, "resolution") or ""
    step = _RESOLUTIONS_S.get(resolution)
    if interval is None or step is None:
        raise PriceDocumentError(f"a period without a time interval or with resolution {resolution!r}")
    start = _utc(_text(interval, "start") or "")
    end = _utc(_text(interval, "end") or "")
    points: dict[int, float] = {}
    for point in period:
        if _local(point.tag) == "Point":
            number, amount = _text(point, "position"), _text(point, "price.amount")
            if number is not None and amount is not None:
                points[int(number)] = float(amount)
    rows: list[tuple[int, int, float]] = []
    held: float | None = None
    for position in range(1, (end - start) // step + 1):
        held = points.get(position, held)  # curveType A03: a missing point repeats the one before
        if held is not None:
            rows.append((start + (position - 1) * step, step, round(held * _MWH_PER_KWH, 6)))
    return rows


def parse_csv_rows(text: str) -> dict[int, float]:
    """The rows of a price CSV p1logger wrote before (start epoch s -> EUR per kWh)."""
    rows: dict[int, float] = {}
    for raw in text.splitlines():
        cells = raw.strip().split(",")
        if len(cells) < 2 or not cells[0] or cells[0].startswith("#") or cells[0] == "start":
            continue
        rows[_utc(cells[0])] = float(cells[1])
    return rows


def merge(old: Mapping[int, float], new: Mapping[int, tuple[int, float]]) -> dict[int, float]:
    """The old rows outside the time the new rows cover, and the new rows; sorted."""
    covered = {quarter for start, (step, _) in new.items() for quarter in range(start, start + step, 900)}
    merged = {at: price for at, price in old.items() if at not in covered}
    merged.update({at: price for at, (_, price) in new.items()})
    return dict(sorted(merged.items()))


def csv_text(rows: Mapping[int, float], zone: ZoneInfo) -> str:
    lines = ["start,eur_per_kwh"]
    for at, price in rows.items():
        number = f"{price:.6f}".rstrip("0")
        lines.append(f"{datetime.fromtimestamp(at, zone).isoformat()},{number}{'0' if number.endswith('.') else ''}")
    return "\n".join(lines) + "\n"
