"""The day-ahead price input: ENTSO-E's Transparency Platform over HTTPS, into a price CSV.

The user's own security token goes in the query string, as the platform asks;
it is never logged and never part of an error (no error here repeats the URL).
"""

from __future__ import annotations

import http.client
import logging
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

from p1logger.dayahead import PriceDocumentError, csv_text, merge, parse_csv_rows, parse_price_document
from p1logger.errors import ConfigError, SourceError

logger = logging.getLogger(__name__)

DEFAULT_URL = "https://web-api.tp.entsoe.eu/api"
DEFAULT_TIMEOUT_S = 30.0
# A year of quarter-hour prices is about 7 MB of XML; anything much larger is not an answer.
MAX_ANSWER_BYTES = 32 << 20


def _period(time_s: int) -> str:
    return datetime.fromtimestamp(time_s, timezone.utc).strftime("%Y%m%d%H%M")


def fetch_price_document(url: str, token: str, zone_eic: str, start_s: int, end_s: int,
                         timeout_s: float = DEFAULT_TIMEOUT_S) -> dict[int, tuple[int, float]]:
    """Day-ahead prices (start -> (length s, EUR/kWh)) for [start_s, end_s) in one bidding zone."""
    query = urllib.parse.urlencode({
        "securityToken": token, "documentType": "A44", "in_Domain": zone_eic, "out_Domain": zone_eic,
        "periodStart": _period(start_s), "periodEnd": _period(end_s),
    })
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc or url
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() or ord(c) < 32 for c in url):
        # urllib's own errors repeat the whole URL, token included: refuse a bad one before it is built.
        raise ConfigError(f"the ENTSO-E URL {url!r} must look like {DEFAULT_URL}: fix --url or P1_ENTSOE_URL")
    request = urllib.request.Request(f"{url}?{query}", headers={"Accept": "application/xml"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:  # noqa: S310 - http(s) URL from settings
            body = answer.read(MAX_ANSWER_BYTES + 1)
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise ConfigError(f"{host} refused the security token (HTTP {exc.code}): check ENTSOE_TOKEN or "
                              "ENTSOE_TOKEN_FILE") from None
        detail = ""
        try:
            parse_price_document(exc.read(MAX_ANSWER_BYTES))
        except PriceDocumentError as reason:
            detail = f": {reason}"
        raise SourceError(f"{host} answered HTTP {exc.code}{detail}") from None
    except urllib.error.URLError as exc:
        raise SourceError(f"cannot reach {host} ({exc.reason})") from None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        # Not str(exc): some of these quote the request's URL, and so the token.
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise SourceError(f"cannot reach {host} ({why})") from None
    if len(body) > MAX_ANSWER_BYTES:
        raise SourceError(f"{host} answered more than {MAX_ANSWER_BYTES >> 20} MB: not a price document")
    try:
        return parse_price_document(body)
    except PriceDocumentError as exc:
        raise SourceError(f"{host}: {exc}") from None


def update_price_csv(path: Path, prices: dict[int, tuple[int, float]], zone: ZoneInfo) -> int:
    """Merge ``prices`` into the CSV at ``path`` (created if missing), atomically; the number of rows."""
    old: dict[int, float] = {}
    try:
        old = parse_csv_rows(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the price file {path} ({exc}): fix it or write to a new file") from None
    rows = merge(old, prices)
    folder = path.parent if str(path.parent) else Path(".")
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=folder)
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(csv_text(rows, zone))
        # A running logger re-reads the file when it changes: it must never see half of it.
        os.replace(temporary, path)
    except OSError as exc:
        raise ConfigError(f"cannot write the price file {path} ({exc.strerror})") from None
    return len(rows)
