"""The serial source waits, after a telegram's first byte, as long as the last whole telegram took on the
line: the rest then arrives in one read, and a Raspberry Pi wakes twice per telegram instead of four to
seven times (see docs/performance.md).  pyserial's loop:// port stands in for the cable; sleeps are recorded."""

from __future__ import annotations

import pytest
from helpers.fake_meter import BELGIAN_3PH, fixture

from p1logger.config import SerialSettings
from p1logger.inputs.serial import TELEGRAM_SETTLE_MAX_S, TELEGRAM_SETTLE_S, SerialSource


@pytest.fixture
def sleeps() -> list[float]:
    return []


def test_the_wait_is_as_long_as_the_last_telegram_took_on_the_line(sleeps: list[float]) -> None:
    telegram = fixture(BELGIAN_3PH)
    source = SerialSource("loop://", SerialSettings(), read_timeout_s=0.1, sleep=sleeps.append)
    try:
        for _ in range(2):
            source._port.write(telegram)
            assert source.read() == telegram
    finally:
        source.close()
    # 10 bits a byte at 115200 baud, a tenth more and 20 ms for a busy system.
    assert sleeps == [TELEGRAM_SETTLE_S, pytest.approx(len(telegram) * 10 / 115200 * 1.1 + 0.02)]


def test_a_slow_line_waits_longer_within_bounds(sleeps: list[float]) -> None:
    telegram = fixture(BELGIAN_3PH)
    source = SerialSource("loop://", SerialSettings.dsmr22(), read_timeout_s=0.1, sleep=sleeps.append)  # 9600 baud, 7E1: 10 bits a byte
    try:
        for _ in range(2):
            source._port.write(telegram)
            assert source.read() == telegram
        source._port.write(b"no telegram end here")
        source.read()
    finally:
        source.close()
    expected = min(TELEGRAM_SETTLE_MAX_S, len(telegram) * 10 / 9600 * 1.1 + 0.02)
    # Bytes that hold no whole telegram leave the estimate as it was.
    assert sleeps == [TELEGRAM_SETTLE_S, pytest.approx(expected), pytest.approx(expected)]
    assert expected == TELEGRAM_SETTLE_MAX_S  # 1455 bytes take 1.5 s at 9600 baud: capped
