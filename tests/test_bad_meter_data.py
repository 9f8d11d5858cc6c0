"""Bad data from the meter: a DSMR 4/5 telegram without its CRC digits, a meter clock that stands still or
steps back, and physically impossible values. None is stored as if it were fine; nothing is dropped silently."""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from p1logger import crc
from p1logger.decode import Telegram
from p1logger.guards import MeterClock, implausible
from p1logger.points import PointBuilder
from p1logger.reader import Rejected, TelegramReader
from p1logger.timestamps import TimestampParser

FIXTURES = Path(__file__).parent / "fixtures"
BRUSSELS = ZoneInfo("Europe/Brussels")
DSMR5 = (FIXTURES / "ndokter_dsmr_parser__v5.txt").read_bytes()  # 1-3:0.2.8(50), !6EEE
DSMR22 = (FIXTURES / "ndokter_dsmr_parser__v2_2.txt").read_bytes()
FLUVIUS = (FIXTURES / "dsmrreader__fluvius_single_phase.txt").read_bytes()


def with_crc(body: bytes) -> bytes:
    return body + f"{crc.crc16(body):04X}\r\n".encode()


def body_of(raw: bytes) -> bytes:
    return raw[: raw.rindex(b"!") + 1]


def corrupted_without_crc(raw: bytes) -> bytes:
    """The 930.3 V reading of the issue: a digit hit on the voltage line and the CRC digits lost."""
    body = re.sub(rb"1-0:32\.7\.0\(\d+\.\d\*V\)", b"1-0:32.7.0(0930.3*V)", body_of(raw))
    assert b"0930.3" in body
    return body + b"\r\n"


def reader() -> TelegramReader:
    return TelegramReader(TimestampParser("Europe/Brussels"))


# ------------------------------------------------------------------ CRC digits missing


def test_a_dsmr5_telegram_without_crc_digits_is_rejected_and_counted() -> None:
    telegram_reader = reader()
    results = telegram_reader.feed(DSMR5 + corrupted_without_crc(DSMR5) + DSMR5)
    assert [type(r) for r in results] == [Telegram, Rejected, Telegram]
    rejected = results[1]
    assert isinstance(rejected, Rejected)
    assert (rejected.reason, rejected.detail) == ("crc_missing", "no CRC after '!', and its version line says DSMR 4+")
    assert dict(telegram_reader.stats.rejected) == {"crc_missing": 1}
    assert telegram_reader.stats.ok == 2


def test_even_the_first_telegram_is_rejected_when_its_version_line_requires_a_crc() -> None:
    telegram_reader = reader()
    (result,) = telegram_reader.feed(corrupted_without_crc(DSMR5))
    assert isinstance(result, Rejected) and result.reason == "crc_missing"
    (belgian,) = telegram_reader.feed(body_of(FLUVIUS) + b"\r\n")  # e-MUCS: 0-0:96.1.4
    assert isinstance(belgian, Rejected) and belgian.reason == "crc_missing"


def test_a_meter_without_a_version_line_is_held_to_the_crcs_it_sent_on_this_connection() -> None:
    no_version = re.sub(rb"1-3:0\.2\.8\(50\)\r\n", b"", body_of(DSMR5))
    telegram_reader = reader()
    (first,) = telegram_reader.feed(no_version + b"\r\n")  # never sent a CRC: a DSMR 2.2/3 meter
    assert isinstance(first, Telegram) and first.crc_ok is None
    (signed,) = telegram_reader.feed(with_crc(no_version))
    assert isinstance(signed, Telegram) and signed.crc_ok is True
    (unsigned,) = telegram_reader.feed(no_version + b"\r\n")
    assert isinstance(unsigned, Rejected)
    assert unsigned.detail == "no CRC after '!', and this meter sent CRCs before"
    telegram_reader.reset()  # a new connection
    (after_reconnect,) = telegram_reader.feed(no_version + b"\r\n")
    assert isinstance(after_reconnect, Telegram)


def test_dsmr22_telegrams_without_crc_stay_accepted() -> None:
    telegram_reader = reader()
    results = telegram_reader.feed(DSMR22 * 3)
    assert [type(r) for r in results] == [Telegram] * 3
    assert crc.requires_crc(body_of(DSMR22)) is None
    assert crc.requires_crc(b"/X\r\n\r\n1-3:0.2.8(30)\r\n!") is False
    assert crc.requires_crc(b"/X\r\n\r\n1-3:0.2.8(42)\r\n!") is True


# ------------------------------------------------------------------ the meter clock


def telegram_at(moment: datetime, voltage: float = 230.0) -> Telegram:
    body = re.sub(rb"0-0:1\.0\.0\(\d{12}[SW]\)", moment.astimezone(BRUSSELS).strftime("0-0:1.0.0(%y%m%d%H%M%SW)")
                  .encode(), body_of(DSMR5))
    body = re.sub(rb"1-0:32\.7\.0\(\d+\.\d\*V\)", f"1-0:32.7.0({voltage:06.1f}*V)".encode(), body)
    (result,) = reader().feed(with_crc(body))
    assert isinstance(result, Telegram), result
    return result


def stored(lines: list[str]) -> dict[tuple[str, int], str]:
    """What InfluxDB keeps: one point per series and time, the last one written wins."""
    kept: dict[tuple[str, int], str] = {}
    for line in lines:
        key, fields, time_s = line.rsplit(" ", 2)
        kept[(key, int(time_s))] = fields
    return kept


T0 = datetime(2017, 1, 2, 18, 20, 2, tzinfo=timezone.utc)


def test_a_stuck_meter_clock_overwrites_nothing_and_is_marked(caplog: pytest.LogCaptureFixture) -> None:
    builder = PointBuilder(BRUSSELS)
    received = T0.timestamp() + 3
    lines = []
    with caplog.at_level(logging.WARNING):
        for n in range(20):  # twenty telegrams, one a second, all carrying the same meter time
            lines += [line for line in builder.build(telegram_at(T0), received + n) if line.startswith("voltage")]
    voltage_l1 = [line for line in lines if "phase=L1" in line]
    assert len(stored(voltage_l1)) == 20
    assert [int(line.rsplit(" ", 1)[1]) for line in voltage_l1] == [int(T0.timestamp())] + [
        int(received) + n for n in range(1, 20)]
    assert sum("clock_fallback=1i" in line for line in voltage_l1) == 19
    assert (builder.clock.stats.repeated, builder.clock.stats.backward, builder.clock.stats.episodes) == (19, 0, 1)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "repeated its time" in warnings[0]


def test_a_backward_step_overwrites_nothing() -> None:
    builder = PointBuilder(BRUSSELS)
    # The meter's clock ran 5 s fast, then was set right: 15 telegrams a second apart, and after the 5th
    # the meter's time steps back 5 s and keeps going.
    base = T0.timestamp()
    sent = [(T0 + timedelta(seconds=n), base + n - 5 + 0.5) for n in range(5)]
    sent += [(T0 + timedelta(seconds=n), base + n + 0.5) for n in range(10)]
    lines = []
    for moment, received in sent:
        lines += [line for line in builder.build(telegram_at(moment), received) if "phase=L1" in line
                  and line.startswith("voltage")]
    assert len(stored(lines)) == 15
    times = [int(line.rsplit(" ", 1)[1]) for line in lines]
    t0 = int(base)
    # The five fast readings keep their times; the rest follow them a second apart, marked.
    assert times == [t0 + n for n in range(15)]
    assert [("clock_fallback=1i" in line) for line in lines] == [False] * 5 + [True] * 10
    assert (builder.clock.stats.repeated, builder.clock.stats.episodes) == (0, 1)
    # A few telegrams lost (as on any line) and the meter's clock is ahead of the last stored time again.
    gap = builder.build(telegram_at(T0 + timedelta(seconds=20)), base + 20.5)
    assert gap[0].endswith(f" {t0 + 20}") and not any("clock_fallback" in line for line in gap)


def test_the_clock_guard_warns_once_per_episode(caplog: pytest.LogCaptureFixture) -> None:
    clock = MeterClock()
    with caplog.at_level(logging.INFO):
        placed = [clock.place("m", t, r) for t, r in [(100, 100), (100, 101), (100, 102), (103, 103), (99, 104),
                                                      (98, 105), (106, 106)]]
    assert placed == [(100, False), (101, True), (102, True), (103, False), (104, True), (105, True), (106, False)]
    assert clock.place("m", 106, 106.2) == (107, True)  # the receive time is taken: a second after the last
    assert clock.place("m", 106, 1_700_000_000.0) == (108, True)  # a replay's receive time is far off: ignored
    assert (clock.stats.repeated, clock.stats.backward, clock.stats.episodes) == (4, 2, 3)
    assert sum(r.levelno == logging.WARNING for r in caplog.records) == 3


def test_receive_time_mode_is_not_guarded() -> None:
    builder = PointBuilder(BRUSSELS, use_receive_time=True)
    first = builder.build(telegram_at(T0), 1_700_000_000.0)
    second = builder.build(telegram_at(T0), 1_700_000_001.0)
    assert not any("clock_fallback" in line for line in first + second)
    assert builder.clock.stats.repeated == 0


# ------------------------------------------------------------------ impossible values


def test_an_impossible_voltage_is_stored_as_sent_and_counted() -> None:
    builder = PointBuilder(BRUSSELS)
    lines = builder.build(telegram_at(T0, voltage=930.3), T0.timestamp())
    assert f"voltage,meter=K8EG004046395507,phase=L1 voltage_v=930.3 {int(T0.timestamp())}" in lines
    assert builder.implausible_values == 1
    builder.build(telegram_at(T0 + timedelta(seconds=1)), T0.timestamp() + 1)
    assert builder.implausible_values == 1


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("voltage_v", 930.3, True), ("voltage_v", 253.0, False), ("voltage_v", 0.0, False), ("current_a", -1.0, True),
    ("import_w", 12_000.0, False), ("import_w", 999_999.0, True), ("volume_m3", 1e9, False),
])
def test_plausibility_limits(field: str, value: float, expected: bool) -> None:
    assert implausible(field, value) is expected


def test_run_counts_the_doubtful_readings_in_its_health_state(tmp_path: Path) -> None:
    import json
    import os
    import subprocess
    import sys

    stuck = [telegram_at(T0).raw for _ in range(4)]  # one reading and three repeats of its meter time
    capture = tmp_path / "meter.txt"
    capture.write_bytes(b"".join(stuck) + telegram_at(T0 + timedelta(seconds=9), voltage=930.3).raw)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("P1_", "INFLUX_"))}
    result = subprocess.run([sys.executable, "-m", "p1logger", "run", "--source", f"file:{capture}", "--output", "-",
                             "--spool-dir", str(tmp_path / "spool")], env=env, capture_output=True, text=True,
                            timeout=60, check=False, cwd=Path(__file__).resolve().parent.parent)
    assert result.returncode == 0, result.stderr
    voltage_l1 = [line for line in result.stdout.splitlines() if line.startswith("voltage,") and "phase=L1" in line]
    assert len(stored(voltage_l1)) == 5
    assert sum("clock_fallback=1i" in line for line in voltage_l1) == 3
    state = json.loads((tmp_path / "spool" / "health.json").read_text(encoding="utf-8"))
    assert (state["meter_clock_repeats"], state["meter_clock_backsteps"], state["implausible_values"]) == (3, 0, 1)
    assert state["stopped_at"] is not None
    assert result.stderr.count("its clock repeated its time") == 1
