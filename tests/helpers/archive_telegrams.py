"""Telegrams for the archive, replay, fan-out and output tests: one fixture moved in time, CRC recomputed."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from p1logger.crc import crc16

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
BRUSSELS = ZoneInfo("Europe/Brussels")
# The fixture's own clock: 0-0:1.0.0(170102192002W), 18:20:02 UTC.
BASE = datetime(2017, 1, 2, 19, 20, 2, tzinfo=BRUSSELS)
T0 = int(BASE.timestamp())
TEMPLATE = (FIXTURES / "ndokter_dsmr_parser__v5.txt").read_bytes()
NO_CLOCK_TELEGRAM = (FIXTURES / "ndokter_dsmr_parser__v2_2.txt").read_bytes()  # DSMR 2.2: no timestamp, no CRC


def telegram(n: int, *, gas_every_s: int = 10) -> bytes:
    """The fixture as its meter would send it ``n`` seconds later: clock, power and gas moved, CRC recomputed.

    The gas meter reports every ``gas_every_s`` seconds, at the start of each period.
    """
    moment = BASE + timedelta(seconds=n)
    gas_at = BASE + timedelta(seconds=n - n % gas_every_s)
    body = TEMPLATE[: TEMPLATE.index(b"!") + 1]
    body = body.replace(b"0-0:1.0.0(170102192002W)", b"0-0:1.0.0(%sW)" % moment.strftime("%y%m%d%H%M%S").encode())
    body = body.replace(b"1-0:1.7.0(00.244*kW)", b"1-0:1.7.0(%06.3f*kW)" % (n % 50 / 10))
    body = body.replace(b"0-1:24.2.1(170102161005W)(00000.107*m3)",
                        b"0-1:24.2.1(%sW)(%09.3f*m3)" % (gas_at.strftime("%y%m%d%H%M%S").encode(), n / 1000))
    assert body.count(b"%") == 0 and moment.dst() == timedelta(0)
    return body + b"%04X\r\n" % crc16(body)


def bad_crc(n: int) -> bytes:
    good = telegram(n)
    return good[:-6] + (b"0000" if not good.endswith(b"0000\r\n") else b"FFFF") + b"\r\n"


class FakeClock:
    def __init__(self, now_s: float) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s
