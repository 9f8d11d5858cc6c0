"""The simulated meter: valid telegrams, plausible physics, consistent capacity values."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from p1logger.decode import Telegram
from p1logger.reader import TelegramReader
from p1logger.inputs.simulator import SimulatorSource
from p1logger.simulate import PROFILES, MeterModel, tariff
from p1logger.timestamps import TimestampParser

UTC = timezone.utc
BRUSSELS = ZoneInfo("Europe/Brussels")
AMSTERDAM = ZoneInfo("Europe/Amsterdam")


def decode_all(data: bytes, zone: str = "Europe/Brussels") -> list[Telegram]:
    reader = TelegramReader(TimestampParser(zone))
    items = reader.feed(data)
    assert reader.stats.rejected_total == 0, reader.stats.rejected
    assert reader.garbage_bytes == 0
    return [item for item in items if isinstance(item, Telegram)]


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_telegram_has_a_valid_crc_and_decodes_completely(profile: str) -> None:
    model = MeterModel(PROFILES[profile], datetime(2025, 6, 14, 11, 59, 30, tzinfo=UTC))
    data = b"".join(model.next_telegram() for _ in range(120))
    telegrams = decode_all(data, PROFILES[profile].zone)
    assert len(telegrams) == 120
    for telegram in telegrams:
        assert telegram.crc_ok is True
        assert telegram.unknown == {}
        assert telegram.invalid == {}
        assert telegram.meter_id == PROFILES[profile].meter_id
    first, last = telegrams[0], telegrams[-1]
    assert first.timestamp == datetime(2025, 6, 14, 11, 59, 31, tzinfo=UTC)
    assert last.timestamp == datetime(2025, 6, 14, 12, 1, 30, tzinfo=UTC)
    phases = 1 if profile == "be1" else 3
    assert sum(1 for obis in first.fields if obis.endswith(".7.0") and obis[4:6] in ("32", "52", "72")) == phases


def test_counters_never_decrease_and_midday_summer_exports() -> None:
    # Wednesday 18 June 2025: weekday, so export counts on the Belgian day tariff (1).
    model = MeterModel(PROFILES["be3"], datetime(2025, 6, 18, 10, 0, tzinfo=UTC))
    telegrams = decode_all(b"".join(model.next_telegram() for _ in range(600)))
    for obis in ("1-0:1.8.1", "1-0:1.8.2", "1-0:2.8.1", "1-0:2.8.2"):
        values = [t.fields[obis].value for t in telegrams]
        assert values == sorted(values), obis
    # Noon (12:00 local = 10:00 UTC) at midsummer: the panels out-produce the house.
    exported = [t.fields["1-0:2.7.0"].value for t in telegrams]
    assert min(exported) > 0.5  # type: ignore[type-var]
    assert telegrams[-1].fields["1-0:2.8.1"].value > telegrams[0].fields["1-0:2.8.1"].value  # type: ignore[operator]


def test_no_export_at_night() -> None:
    model = MeterModel(PROFILES["nl"], datetime(2025, 1, 15, 1, 0, tzinfo=UTC))
    telegrams = decode_all(b"".join(model.next_telegram() for _ in range(60)), "Europe/Amsterdam")
    assert {t.fields["1-0:2.7.0"].value for t in telegrams} == {0.0}
    assert all(t.fields["1-0:1.7.0"].value > 0 for t in telegrams)  # type: ignore[operator]


@pytest.mark.parametrize(
    ("country", "local", "expected"),
    [
        # Belgium: tariff 1 is day (weekdays 07:00-22:00), tariff 2 night and weekends.
        ("be3", datetime(2025, 3, 12, 6, 59, 59, tzinfo=BRUSSELS), 2),  # a Wednesday
        ("be3", datetime(2025, 3, 12, 7, 0, 0, tzinfo=BRUSSELS), 1),
        ("be3", datetime(2025, 3, 12, 21, 59, 59, tzinfo=BRUSSELS), 1),
        ("be3", datetime(2025, 3, 12, 22, 0, 0, tzinfo=BRUSSELS), 2),
        ("be3", datetime(2025, 3, 15, 12, 0, 0, tzinfo=BRUSSELS), 2),  # Saturday
        # The Netherlands: tariff 1 is low (23:00-07:00 and weekends), tariff 2 normal.
        ("nl", datetime(2025, 3, 12, 6, 59, 59, tzinfo=AMSTERDAM), 1),
        ("nl", datetime(2025, 3, 12, 7, 0, 0, tzinfo=AMSTERDAM), 2),
        ("nl", datetime(2025, 3, 12, 22, 59, 59, tzinfo=AMSTERDAM), 2),
        ("nl", datetime(2025, 3, 12, 23, 0, 0, tzinfo=AMSTERDAM), 1),
        ("nl", datetime(2025, 3, 16, 12, 0, 0, tzinfo=AMSTERDAM), 1),  # Sunday
    ],
)
def test_tariff_switches_at_the_countrys_hours(country: str, local: datetime, expected: int) -> None:
    assert tariff(PROFILES[country], local) == expected


def test_the_meter_reports_the_tariff_it_counts_on() -> None:
    # 06:59:50 to 07:00:10 on a Brussels weekday: the day tariff starts at 07:00:00.
    start = datetime(2025, 3, 12, 6, 59, 50, tzinfo=BRUSSELS)
    model = MeterModel(PROFILES["be3"], start)
    telegrams = decode_all(b"".join(model.next_telegram() for _ in range(20)))
    by_time = {t.timestamp.astimezone(BRUSSELS).strftime("%H:%M:%S"): t for t in telegrams}  # type: ignore[union-attr]
    assert by_time["06:59:59"].fields["0-0:96.14.0"].value == 2
    assert by_time["07:00:00"].fields["0-0:96.14.0"].value == 1
    night_before = by_time["07:00:01"].fields["1-0:1.8.2"].value
    assert by_time["07:00:10"].fields["1-0:1.8.2"].value == night_before  # night counter stops
    assert by_time["07:00:10"].fields["1-0:1.8.1"].value > by_time["07:00:01"].fields["1-0:1.8.1"].value  # type: ignore[operator]


@pytest.mark.parametrize(("profile", "interval_s"), [("be3", 300), ("nl", 3600)])
def test_gas_is_captured_on_its_own_interval(profile: str, interval_s: int) -> None:
    model = MeterModel(PROFILES[profile], datetime(2025, 1, 10, 9, 58, 0, tzinfo=UTC))
    telegrams = decode_all(b"".join(model.next_telegram() for _ in range(interval_s + 240)), PROFILES[profile].zone)
    gas_obis = "0-1:24.2.3" if profile == "be3" else "0-1:24.2.1"
    capture_times = sorted({t.fields[gas_obis].time for t in telegrams})  # type: ignore[type-var]
    steps = {int((b - a).total_seconds()) for a, b in zip(capture_times, capture_times[1:])}  # type: ignore[operator]
    assert steps == {interval_s}
    for telegram in telegrams:
        captured = telegram.fields[gas_obis].time
        assert captured is not None and captured.timestamp() % interval_s == 0
        assert captured <= telegram.timestamp  # type: ignore[operator]
    water_times = {t.fields["0-2:24.2.1"].time for t in telegrams}
    assert len(water_times) >= 2


def test_capacity_values_match_the_meters_own_quarter_hours() -> None:
    # From 17:45:00 UTC on a quarter boundary for 31 minutes: quarters close at 18:00 and 18:15.
    model = MeterModel(PROFILES["be3"], datetime(2025, 11, 20, 17, 45, 0, tzinfo=UTC), seed=5)
    data = model.telegram() + b"".join(model.next_telegram() for _ in range(31 * 60))
    telegrams = decode_all(data)
    by_stamp = {t.timestamp: t for t in telegrams}

    def at(hour: int, minute: int, second: int = 0) -> Telegram:
        return by_stamp[datetime(2025, 11, 20, hour, minute, second, tzinfo=UTC)]

    def imported(telegram: Telegram) -> float:
        return telegram.fields["1-0:1.8.1"].value + telegram.fields["1-0:1.8.2"].value  # type: ignore[operator]

    first_kw = (imported(at(18, 0)) - imported(at(17, 45))) * 4
    second_kw = (imported(at(18, 15)) - imported(at(18, 0))) * 4
    # 1-0:1.4.0 is the running quarter's average so far: energy since 17:45 over 899 s.
    running = at(17, 59, 59).fields["1-0:1.4.0"].value
    expected_running = (imported(at(17, 59, 59)) - imported(at(17, 45))) * 3600 / 899
    assert running == pytest.approx(expected_running, abs=0.005)
    # and it starts again with the next quarter
    assert at(18, 0, 1).fields["1-0:1.4.0"].value == pytest.approx(
        (imported(at(18, 0, 1)) - imported(at(18, 0))) * 3600, abs=4.0)
    # 1-0:1.6.0: the month's highest closed quarter, stamped at that quarter's end.
    seeded = telegrams[0].fields["1-0:1.6.0"]
    peak = at(18, 15, 5).fields["1-0:1.6.0"]
    candidates = {seeded.time: seeded.value, at(18, 0).timestamp: round(first_kw, 3),
                  at(18, 15).timestamp: round(second_kw, 3)}
    best_time = max(candidates, key=lambda moment: candidates[moment])  # type: ignore[arg-type,return-value]
    assert peak.time == best_time
    assert peak.value == pytest.approx(candidates[best_time], abs=0.002)
    history = telegrams[0].fields["0-0:98.1.0"].value
    assert len(history) == 13  # type: ignore[arg-type]
    assert [entry.month for entry in history][:2] == ["2025-10", "2025-09"]  # type: ignore[union-attr]


def test_month_rollover_moves_the_peak_into_the_history() -> None:
    # 23:50 local on 31 January (22:50 UTC) to 00:20 on 1 February.
    model = MeterModel(PROFILES["be3"], datetime(2025, 1, 31, 22, 50, 0, tzinfo=UTC), seed=3)
    before = decode_all(model.telegram())[0]
    january_peak = before.fields["1-0:1.6.0"]
    model.advance_to(datetime(2025, 1, 31, 23, 20, 0, tzinfo=UTC))
    after = decode_all(model.telegram())[0]
    history = after.fields["0-0:98.1.0"].value
    assert history[0].month == "2025-01"  # type: ignore[index,union-attr]
    assert history[0].value >= january_peak.value  # type: ignore[index,union-attr,operator]
    assert history[1].month == "2024-12"  # type: ignore[index,union-attr]
    assert len(history) == 13  # type: ignore[arg-type]
    february_peak = after.fields["1-0:1.6.0"]
    assert february_peak.time is not None
    assert february_peak.time >= datetime(2025, 1, 31, 23, 15, tzinfo=UTC)  # a February quarter (local time)


def test_dst_change_keeps_one_telegram_per_second() -> None:
    # Autumn change in Brussels: 03:00 CEST becomes 02:00 CET at 01:00 UTC.
    model = MeterModel(PROFILES["be3"], datetime(2025, 10, 26, 0, 59, 55, tzinfo=UTC))
    telegrams = decode_all(b"".join(model.next_telegram() for _ in range(10)))
    stamps = [t.timestamp for t in telegrams]
    assert stamps == [datetime(2025, 10, 26, 0, 59, 56, tzinfo=UTC) + timedelta(seconds=i) for i in range(10)]
    assert b"(251026025959S)" in telegrams[3].raw
    assert b"(251026020000W)" in telegrams[4].raw


def test_simulator_source_paces_with_the_injected_sleep() -> None:
    slept: list[float] = []
    source = SimulatorSource("be1", speed=4.0, start=datetime(2025, 5, 1, 12, 0, tzinfo=UTC), sleep=slept.append)
    telegrams = decode_all(b"".join(source.read() for _ in range(5)))
    assert slept == [0.25, 0.25, 0.25, 0.25]
    assert [t.timestamp for t in telegrams] == [datetime(2025, 5, 1, 12, 0, i, tzinfo=UTC) for i in range(5)]


def test_simulate_piped_into_dump_shows_valid_telegrams() -> None:
    simulate = subprocess.run(
        [sys.executable, "-m", "p1logger", "simulate", "--count", "3", "--speed", "1000",
         "--start", "2025-06-01T12:00:00+00:00"],
        capture_output=True, check=True, timeout=60,
    )
    dump = subprocess.run(
        [sys.executable, "-m", "p1logger", "dump", "--input", "-", "--format", "json"],
        input=simulate.stdout, capture_output=True, timeout=60,
    )
    assert dump.returncode == 0, dump.stderr
    lines = dump.stdout.decode().splitlines()
    assert len(lines) == 3
    assert all('"crc_ok":true' in line for line in lines)
    assert dump.stderr == b""


def test_run_with_the_simulator_fills_the_real_influxd(influxd, influx_db, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """P1_SOURCE=simulator with the v1 target: 30 telegrams, every point counted in influxd."""
    env = {
        "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
        "P1_SOURCE": "simulator", "P1_SIMULATOR_PROFILE": "be3", "P1_SIMULATOR_SPEED": "1000",
        "P1_SIMULATOR_COUNT": "30", "P1_SIMULATOR_START": "2025-11-20T17:44:50+00:00",
        "INFLUX_API": "v1", "INFLUX_URL": influxd.url, "INFLUX_BUCKET": influx_db,
        "P1_SPOOL_DIR": str(tmp_path / "spool"), "P1_INSTANCE": "test",
    }
    result = subprocess.run([sys.executable, "-m", "p1logger", "run"], env=env, capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr.decode()
    # 30 telegrams from 17:44:50 to 17:45:19 UTC; gas and water are captured every 5 minutes,
    # at 17:40:00 and 17:45:00, so each is written twice (once per capture time).
    expected = {"power": 30 * 4, "voltage": 30 * 3, "current": 30 * 3, "energy": 30, "gas": 2, "water": 2}
    for measurement, count in expected.items():
        assert influxd.count(influx_db, measurement) == count, measurement
    # capacity: 30 demand points and the month peak once; 13 history months once.
    assert influxd.count(influx_db, "capacity") == 30 + 1
    assert influxd.count(influx_db, "capacity_history") == 13
    assert influxd.count(influx_db, "p1logger") >= 1
