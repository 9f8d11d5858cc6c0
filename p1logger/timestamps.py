"""DSMR timestamps (``YYMMDDhhmmssX``) to aware UTC datetimes.

X is ``S`` (summer time) or ``W`` (winter time); a few meters send it in lower
case.  The flag is what makes the autumn hour that occurs twice unambiguous, so
it decides the UTC offset whenever the zone allows it.

A stamp without a flag (DSMR 2.2/3, and the 2026 Walloon Iskra 1-0:1.6.0) is
read in the meter's time zone.  In the autumn hour that occurs twice it is
taken as the FIRST occurrence (summer time, the earlier instant): the decoder
reads each line on its own and cannot know which one the meter meant, and the
earlier reading is the one that never places a capture after the telegram that
reports it.  In the spring gap, the offset before the change applies.

Business (MCS) meters send the telegram time as a 12-byte DLMS date-time
octet-string written in hex (``07EA0B1E...``); ``read`` decodes it in the
meter's zone, its clock-status DST bit playing the part of the S/W flag.

Placeholders a meter sends for "no time" are None in every spelling seen:
``000101010000W``, ``000101000000W``, ``000101000001W`` (2000-01-01, a clock
never set), ``000000000000W``, ``700101010000W`` (the Unix epoch, an empty
M-Bus channel), ``632525252525W`` and ``35255255255255255S`` (DLMS "not
specified" fields written as 25/255), and a DLMS date-time with its year, month
or day not specified.  ``parse`` is lenient (None for anything that is not a
time); ``read`` is what the decoder uses: None for a placeholder or any
twelve digits that are no date, ValueError for text that does not have the
shape of a time at all, so that the line is reported invalid with its raw text
instead of silently losing its time.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from p1logger.errors import ConfigError

UTC = timezone.utc
# "00".."59" -> that many seconds: one lookup reads and checks the seconds of a stamp.
_SECOND_OF = {f"{s:02d}": timedelta(seconds=s) for s in range(60)}
_FLAG_CASE = {"S": "S", "s": "S", "W": "W", "w": "W"}
DEFAULT_TIMEZONE = "Europe/Brussels"
# Meters send these when their clock was never set or an entry is empty.
PLACEHOLDER_PREFIXES = ("000101010000", "632525252525", "700101010000")
# A date part (YYMMDD) that means "no time" whatever the time of day says.
PLACEHOLDER_DATES = frozenset({"000101", "000000", "700101"})
_FLAGS = frozenset("SWsw")
# DLMS date-time: "not specified" markers and the clock-status DST bit.
_DLMS_UNSPECIFIED_YEAR = 0xFFFF
_DLMS_DST_BIT = 0x80


def is_placeholder(text: str) -> bool:
    """True for the spellings meters use for "no time" (see the module docstring)."""
    digits = text[:-1] if text[-1:] in _FLAGS else text
    if not (digits.isascii() and digits.isdigit()):
        return False
    if len(digits) == 12:
        if digits[:6] in PLACEHOLDER_DATES:
            return True
        fields = [digits[i : i + 2] for i in range(2, 12, 2)]
        return fields.count("25") >= 2 and not _plausible(digits) or "99" in fields[:3]
    # Longer runs of digits with a flag are DLMS "not specified" bytes written out (255 = 0xFF).
    return 12 < len(digits) <= 20 and "255" in digits


def _plausible(digits: str) -> bool:
    month, day, hour, minute, second = (int(digits[i : i + 2]) for i in range(2, 12, 2))
    return 1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 60


def is_timestamp_shape(text: str) -> bool:
    """Twelve ASCII digits with an optional S/W flag, or a placeholder spelling."""
    n = len(text)
    if n == 12:
        return text.isascii() and text.isdigit()
    if n >= 13 and text[-1] in _FLAGS:
        digits = text[:-1]
        return digits.isascii() and digits.isdigit() and (n == 13 or is_placeholder(text))
    return False


def is_dlms_datetime(text: str) -> bool:
    """A 12-byte DLMS date-time octet-string written as 24 hex digits."""
    if len(text) != 24 or not text.isascii():
        return False
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True


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
        # The same, uncached, for a stamp that is new every time (a telegram's own time).
        self.parse_new = self._parse
        self.read = lru_cache(maxsize=2048)(self._read)
        self._offset = lru_cache(maxsize=512)(self._offset_uncached)
        # A telegram's own time is new every second but its minute repeats 60 times.
        self._minute = lru_cache(maxsize=256)(self._minute_uncached)

    def _parse(self, text: str) -> datetime | None:
        n = len(text)
        if n == 13:
            flag = _FLAG_CASE.get(text[12])
            if flag is None:
                return None
        elif n == 12:
            flag = ""
        else:
            return None
        digits = text[:12]
        # isdigit() alone also accepts digits int() cannot read ("²").
        if not (digits.isascii() and digits.isdigit()) or digits[:6] in PLACEHOLDER_DATES or digits in PLACEHOLDER_PREFIXES:
            return None
        second = _SECOND_OF.get(digits[10:12])
        base = self._minute(digits[:10], flag)
        if base is None or second is None:
            return None
        return base + second

    def _read(self, text: str) -> datetime | None:
        """Strict: None for a placeholder, ValueError for text that is no readable time."""
        value = self._parse(text)
        if value is not None:
            return value
        if is_timestamp_shape(text):
            # Twelve digits that are no date (month 25, 30 February, an anonymiser's
            # 123412341234) are one more spelling of "no time", as 632525252525 is.
            return None
        if is_dlms_datetime(text):
            return self._dlms(bytes.fromhex(text))
        raise ValueError(f"{text!r} is not a timestamp")

    def _dlms(self, raw: bytes) -> datetime | None:
        year = raw[0] << 8 | raw[1]
        month, day, _weekday, hour, minute, second, _hundredths = raw[2:9]
        status = raw[11]
        if year == _DLMS_UNSPECIFIED_YEAR or year == 0 or month in (0, 0xFF) or day in (0, 0xFF):
            return None
        if month > 12 or day > 31 or hour > 23 or minute > 59 or (second > 59 and second != 0xFF):
            raise ValueError(f"impossible DLMS date-time {raw.hex().upper()}")
        if hour == 0xFF or minute == 0xFF:
            return None
        # The deviation bytes (9-10) are left aside: meters write their sign both
        # ways, so the configured zone decides, as it does for every other stamp.
        flag = "" if status == 0xFF else ("S" if status & _DLMS_DST_BIT else "W")
        stamp = f"{year % 100:02d}{month:02d}{day:02d}{hour:02d}{minute:02d}{0 if second == 0xFF else second:02d}"
        if year < 2000 or year > 2099:
            raise ValueError(f"DLMS date-time year {year} is out of range")
        value = self._parse(stamp + flag)
        if value is None:
            raise ValueError(f"impossible DLMS date-time {raw.hex().upper()}")
        return value

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
