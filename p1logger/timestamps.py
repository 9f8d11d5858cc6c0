"""DSMR timestamps (``YYMMDDhhmmssX``) to aware UTC datetimes.

X is ``S`` (summer time) or ``W`` (winter time); a few meters send it in lower
case.  The flag is what makes the autumn hour that occurs twice unambiguous, so
it decides the UTC offset whenever the zone allows it.  DSMR 2.2/3 timestamps
have no flag; they take the zone's first occurrence.  Placeholders a meter sends
for "no time" (``000101010000W``, ``632525252525W``, and ``700101010000W``, the
Unix epoch, on an empty M-Bus channel) and impossible dates become None.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from p1logger.errors import ConfigError

UTC = timezone.utc
_SECONDS = tuple(timedelta(seconds=s) for s in range(60))
DEFAULT_TIMEZONE = "Europe/Brussels"
# Meters send these when their clock was never set or an entry is empty.
PLACEHOLDER_PREFIXES = ("000101010000", "632525252525", "700101010000")


def load_zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"unknown time zone {name!r}: set P1_TIMEZONE to an IANA name such as Europe/Brussels or Europe/Amsterdam"
        ) from None


class TimestampParser:
    """Parses meter timestamps for one time zone, caching the per-hour UTC offsets."""

    def __init__(self, zone: str | ZoneInfo = DEFAULT_TIMEZONE) -> None:
        self.zone = load_zone(zone) if isinstance(zone, str) else zone
        # Bounded caches: a telegram's own timestamp is new every second, but the
        # offset only changes per hour, and gas/peak/history times repeat a lot.
        self.parse = lru_cache(maxsize=2048)(self._parse)
        self._offset = lru_cache(maxsize=512)(self._offset_uncached)
        # A telegram's own time is new every second but its minute repeats 60 times.
        self._minute = lru_cache(maxsize=256)(self._minute_uncached)

    def _parse(self, text: str) -> datetime | None:
        n = len(text)
        if n == 13:
            flag = text[12].upper()
            if flag not in ("S", "W"):
                return None
        elif n == 12:
            flag = ""
        else:
            return None
        digits = text[:12]
        # isdigit() alone also accepts digits int() cannot read ("²").
        if not (digits.isascii() and digits.isdigit()) or digits in PLACEHOLDER_PREFIXES:
            return None
        seconds = int(digits[10:12])
        base = self._minute(digits[:10], flag)
        if base is None or seconds > 59:
            return None
        return base + _SECONDS[seconds]

    def _minute_uncached(self, yymmddhhmm: str, flag: str) -> datetime | None:
        try:
            naive = datetime(
                2000 + int(yymmddhhmm[0:2]), int(yymmddhhmm[2:4]), int(yymmddhhmm[4:6]),
                int(yymmddhhmm[6:8]), int(yymmddhhmm[8:10]),
            )
        except ValueError:
            return None
        return (naive - self._offset(yymmddhhmm[:8], flag)).replace(tzinfo=UTC)

    def _offset_uncached(self, yymmddhh: str, flag: str) -> timedelta:
        naive = datetime(2000 + int(yymmddhh[0:2]), int(yymmddhh[2:4]), int(yymmddhh[4:6]), int(yymmddhh[6:8]))
        first = naive.replace(tzinfo=self.zone).utcoffset()
        second = naive.replace(tzinfo=self.zone, fold=1).utcoffset()
        assert first is not None and second is not None
        # Only in the hour that occurs twice (autumn) or not at all (spring) do
        # the two readings differ; there summer time is the larger offset.
        # Comparing offsets rather than dst() also holds for zones whose winter
        # time is "negative DST" in the tz database (Europe/Dublin).  Without a
        # flag, or outside a transition, the zone decides.
        if flag == "S":
            return max(first, second)
        if flag == "W":
            return min(first, second)
        return first
