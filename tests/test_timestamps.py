"""Meter time stamps (YYMMDDhhmmssX) to UTC, around every daylight-saving edge."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from p1logger.errors import ConfigError
from p1logger.render import iso_utc as format_utc
from p1logger.timestamps import TimestampParser

BENELUX = ["Europe/Brussels", "Europe/Amsterdam"]


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


@pytest.mark.parametrize("zone", BENELUX)
@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        # An ordinary winter and summer day.
        ("250115120000W", "2025-01-15T11:00:00"),
        ("250715120000S", "2025-07-15T10:00:00"),
        # Autumn 2025: 02:00-03:00 happens twice; the flag says which.
        ("251026015959S", "2025-10-25T23:59:59"),
        ("251026020000S", "2025-10-26T00:00:00"),
        ("251026023000S", "2025-10-26T00:30:00"),
        ("251026025959S", "2025-10-26T00:59:59"),
        ("251026020000W", "2025-10-26T01:00:00"),
        ("251026023000W", "2025-10-26T01:30:00"),
        ("251026030000W", "2025-10-26T02:00:00"),
        # Spring 2025: 01:59:59 winter time is followed by 03:00:00 summer time.
        ("250330015959W", "2025-03-30T00:59:59"),
        ("250330030000S", "2025-03-30T01:00:00"),
        # A time inside the gap does not exist; it is read with the offset its flag names.
        ("250330023000W", "2025-03-30T01:30:00"),
        ("250330023000S", "2025-03-30T00:30:00"),
        # Lower-case flags (a Landis+Gyr E350 gas line) mean the same.
        ("251026023000s", "2025-10-26T00:30:00"),
        ("251026023000w", "2025-10-26T01:30:00"),
    ],
)
def test_dst_edges(zone: str, stamp: str, expected: str) -> None:
    assert TimestampParser(zone).parse(stamp) == utc(expected)


@pytest.mark.parametrize("zone", BENELUX)
def test_a_flag_that_contradicts_the_zone_outside_a_transition_is_ignored(zone: str) -> None:
    parser = TimestampParser(zone)
    # A spec example sends S on 5 March; the clock is right, the flag is not.
    assert parser.parse("200305122139S") == utc("2020-03-05T11:21:39")
    assert parser.parse("200705122139W") == utc("2020-07-05T10:21:39")


@pytest.mark.parametrize("zone", BENELUX)
@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("161107190000", "2016-11-07T18:00:00"),  # DSMR 2.2 gas hour, winter
        ("160410130000", "2016-04-10T11:00:00"),  # summer
        ("251026023000", "2025-10-26T00:30:00"),  # no flag in the repeated hour: the first one
        ("250330023000", "2025-03-30T01:30:00"),  # no flag in the gap: the offset before it
    ],
)
def test_dsmr22_stamps_without_flag(zone: str, stamp: str, expected: str) -> None:
    assert TimestampParser(zone).parse(stamp) == utc(expected)


def test_irish_winter_time_is_not_mistaken_for_summer_time() -> None:
    # The tz database gives Europe/Dublin a negative DST in winter; the flags
    # must still pick summer time = the larger offset.
    parser = TimestampParser("Europe/Dublin")
    assert parser.parse("231029013000S") == utc("2023-10-29T00:30:00")
    assert parser.parse("231029013000W") == utc("2023-10-29T01:30:00")
    assert parser.parse("230202132747S") == utc("2023-02-02T13:27:47")
    assert parser.parse("230702132747S") == utc("2023-07-02T12:27:47")


@pytest.mark.parametrize("zone", ["UTC", "Asia/Tokyo"])
def test_a_zone_without_dst_ignores_the_flag(zone: str) -> None:
    parser = TimestampParser(zone)
    offset_h = 9 if zone == "Asia/Tokyo" else 0
    for stamp in ("251026023000S", "251026023000W", "251026023000", "250330023000S"):
        local = datetime.strptime(stamp[:12], "%y%m%d%H%M%S")
        expected = (local.replace(tzinfo=ZoneInfo(zone))).astimezone(timezone.utc)
        assert parser.parse(stamp) == expected
        assert expected.hour == (local.hour - offset_h) % 24


@pytest.mark.parametrize("zone", ["Europe/Brussels", "Europe/Amsterdam", "UTC"])
@pytest.mark.parametrize(
    "stamp",
    [
        "000101010000W",  # clock never set
        "000101010000S",
        "632525252525W",  # empty entry
        "632525252525S",
        "700101010000W",  # Unix epoch on an unconnected M-Bus channel
        "000101010000",
    ],
)
def test_placeholders_are_no_time(zone: str, stamp: str) -> None:
    assert TimestampParser(zone).parse(stamp) is None


@pytest.mark.parametrize(
    "stamp",
    [
        "250230120000W",  # 30 February
        "251301120000W",  # month 13
        "250001120000W",  # month 0
        "250100120000W",  # day 0
        "250115240000W",  # hour 24
        "250115126000W",  # minute 60
        "250115120060W",  # second 60
        "000000000000W",  # zeroed by an anonymiser
        "123412341234W",
        "250115120000X",  # unknown flag
        "250115120000WW",
        "25011512000W",
        "2501151200",
        "",
        "25O115120000W",  # letter O, not zero
        "+50115120000W",
        "２５０１１５１２００００W",  # full-width digits
        "²50115120000W",  # a digit to isdigit() but not to int()
    ],
)
def test_impossible_stamps_are_no_time(stamp: str) -> None:
    assert TimestampParser("Europe/Brussels").parse(stamp) is None


def test_results_are_aware_utc_and_format_with_z() -> None:
    value = TimestampParser("Europe/Brussels").parse("231102121548W")
    assert value is not None and value.tzinfo is timezone.utc
    assert format_utc(value) == "2023-11-02T11:15:48Z"
    assert format_utc(None) is None


def test_a_zoneinfo_object_is_accepted() -> None:
    assert TimestampParser(ZoneInfo("Europe/Amsterdam")).parse("251026023000W") == utc("2025-10-26T01:30:00")


@pytest.mark.parametrize("name", ["Mars/Olympus_Mons", "Europe/Bruxelles", "", "../../etc/passwd", "Europe/Brussels "])
def test_an_unknown_zone_is_a_one_line_config_error_naming_the_setting(name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        TimestampParser(name)
    message = str(caught.value)
    assert "\n" not in message
    assert "P1_TIMEZONE" in message
    assert repr(name) in message


def test_the_parse_cache_is_bounded() -> None:
    parser = TimestampParser("Europe/Brussels")
    for second in range(5000):
        parser.parse(f"2501151{second // 3600 % 10}{second // 60 % 60:02d}{second % 60:02d}W")
    info = parser.parse.cache_info()  # type: ignore[attr-defined]
    assert info.maxsize == 2048
    assert info.currsize <= 2048


@pytest.mark.parametrize(
    "stamp",
    ["231102121548W", "231102121548w", "250330023000s", "251026023000S", "251026023000W", "251026023000", "250115120059W",
     "250115120060W", "2501151200AAW", "000101010000W", "632525252525S", "700101010000W", "250230120000W", "²50115120000W",
     "250115120000X", "250115120000ß", "25011512000W", ""],
)
def test_the_uncached_parse_for_a_telegram_clock_reads_every_stamp_as_the_cached_one(stamp: str) -> None:
    parser = TimestampParser("Europe/Brussels")
    assert parser.parse_new(stamp) == parser.parse(stamp) == TimestampParser("Europe/Brussels").parse(stamp)
