"""What decryption costs: the reader over encrypted frames, against the same telegrams sent in the clear.

    python benchmarks/decrypt.py [--telegrams 5000] [--repeat 3]

The telegrams are the simulator's Belgian three-phase meter (profile be3,
about 1 KB each, CRC computed); the frames are the same telegrams encrypted
as a Luxembourg Smarty sends them (p1logger.dlms.encrypt: security 0x30,
12-byte GCM tag). Each case feeds a fresh TelegramReader the whole stream in
the 64 KiB reads of a ``file:`` source: framing, decryption, CRC and decoding,
no database.

A fourth case is an Austrian M-Bus meter (EVN's layout, as p1logger.cosem
reads it): the same readings as a COSEM data-notification of eleven OBIS-coded
values, encrypted without a tag (security 0x20) and split into M-Bus long
frames of 245 bytes; each is joined, decrypted, written out as telegram text
and decoded.

Baseline: the same reader over the plain telegrams, measured in the same run.
A meter sends one telegram every 1 to 10 s, so any rate in the thousands per
second is far beyond need; the ratio says what the stage adds.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from p1logger import dlms  # noqa: E402
from p1logger.decode import Decoder  # noqa: E402
from p1logger.decode import Telegram  # noqa: E402
from p1logger.reader import TelegramReader  # noqa: E402
from p1logger.simulate import PROFILES, MeterModel  # noqa: E402
from p1logger.timestamps import TimestampParser  # noqa: E402

READ_BYTES = 65536
KEY = bytes(range(16))
AUTH = bytes(range(16, 32))
TITLE = b"SAG" + bytes(5)


def telegrams(count: int) -> list[bytes]:
    model = MeterModel(PROFILES["be3"], datetime(2025, 6, 17, 22, 0, tzinfo=timezone.utc))
    return [model.next_telegram() for _ in range(count)]


# EVN's flat layout: OBIS code, value (double-long-unsigned or long-unsigned), scaler and unit, in turn.
EVN_OBJECTS = (  # OBIS, the DSMR reading it comes from, scaler, COSEM unit, value type
    ("1-0:1.8.0", "1-0:1.8.1", 0, 30, 0x06), ("1-0:2.8.0", "1-0:2.8.1", 0, 30, 0x06),
    ("1-0:1.7.0", "1-0:1.7.0", 0, 27, 0x06), ("1-0:2.7.0", "1-0:2.7.0", 0, 27, 0x06),
    ("1-0:32.7.0", "1-0:32.7.0", -1, 35, 0x12), ("1-0:52.7.0", "1-0:52.7.0", -1, 35, 0x12),
    ("1-0:72.7.0", "1-0:72.7.0", -1, 35, 0x12), ("1-0:31.7.0", "1-0:31.7.0", -2, 33, 0x12),
    ("1-0:51.7.0", "1-0:51.7.0", -2, 33, 0x12), ("1-0:71.7.0", "1-0:71.7.0", -2, 33, 0x12),
)


def evn_notification(telegram: bytes, decoder: Decoder, invoke_id: int) -> bytes:
    """The telegram's readings as EVN's Kaifa sends them (Wh and W, scaled integers)."""
    fields = decoder.decode(telegram[: telegram.rindex(b"!") + 1]).fields
    body = b""
    for obis, source, scaler, unit, kind in EVN_OBJECTS:
        reading = fields[source]
        assert isinstance(reading.value, float)
        value = round(reading.value * (1000 if reading.unit in ("kWh", "kW") else 1) / 10 ** scaler)
        a, rest = obis.split("-")
        b, rest = rest.split(":")
        code = bytes(int(x) for x in (a, b, *rest.split("."))) + b"\xff"
        size = 4 if kind == 0x06 else 2
        body += b"\x09\x06" + code + bytes((kind,)) + value.to_bytes(size, "big")
        body += bytes((0x02, 0x02, 0x0F, scaler & 0xFF, 0x16, unit))
    clock = bytes.fromhex("07E9061102160000") + bytes.fromhex("00FF8880")  # 2025-06-17 22:00:00, summer
    return (b"\x0f" + invoke_id.to_bytes(4, "big") + b"\x0c" + clock
            + bytes((0x02, 2 * len(EVN_OBJECTS) + len(EVN_OBJECTS))) + body)


def mbus_segments(frame: bytes, size: int = 245) -> bytes:
    pieces = [frame[at : at + size] for at in range(0, len(frame), size)]
    out = b""
    for count, piece in enumerate(pieces):
        content = bytes((0x53, 0xFF, count | (0x10 if count == len(pieces) - 1 else 0), 0x01, 0x67)) + piece
        out += bytes((0x68, len(content), len(content), 0x68)) + content + bytes((sum(content) & 0xFF, 0x16))
    return out


def rate(stream: bytes, keys: dlms.Keys | None, expected: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        reader = TelegramReader(TimestampParser("Europe/Brussels"), keys=keys)
        started = time.perf_counter()
        valid = 0
        for at in range(0, len(stream), READ_BYTES):
            valid += sum(isinstance(item, Telegram) for item in reader.feed(stream[at : at + READ_BYTES]))
        best = min(best, time.perf_counter() - started)
        if valid != expected:
            raise SystemExit(f"expected {expected} telegrams, got {valid}")
    return expected / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--telegrams", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    args = parser.parse_args()
    plain = telegrams(args.telegrams)
    without_auth = dlms.Keys(KEY)
    with_auth = dlms.Keys(KEY, AUTH)
    decoder = Decoder(TimestampParser("Europe/Brussels"))
    cases = [
        ("plain telegrams (baseline)", b"".join(plain), None),
        ("encrypted, no authentication key (CTR + CRC)", b"".join(
            dlms.encrypt(t, without_auth, TITLE, i + 1) for i, t in enumerate(plain)), without_auth),
        ("encrypted, authentication key (GCM tag checked)", b"".join(
            dlms.encrypt(t, with_auth, TITLE, i + 1) for i, t in enumerate(plain)), with_auth),
        ("Austrian M-Bus: segments, COSEM (EVN layout)", b"".join(
            mbus_segments(dlms.encrypt(evn_notification(t, decoder, i), without_auth, b"KFM" + bytes(5), i + 1,
                                       dlms.SECURITY_ENCRYPTED))
            for i, t in enumerate(plain)), without_auth),
    ]
    print(f"python {platform.python_version()} on {platform.machine()}; {args.telegrams} telegrams of "
          f"{len(cases[0][1]) // args.telegrams} bytes, best of {args.repeat}")
    baseline = 0.0
    for name, stream, keys in cases:
        per_s = rate(stream, keys, args.telegrams, args.repeat)
        baseline = baseline or per_s
        print(f"{name:<50} {per_s:10,.0f} telegrams/s  {1e6 / per_s:7.1f} us each  "
              f"ratio {per_s / baseline:4.2f}x baseline")


if __name__ == "__main__":
    main()
