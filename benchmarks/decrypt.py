"""What decryption costs: the reader over encrypted frames, against the same telegrams sent in the clear.

    python benchmarks/decrypt.py [--telegrams 5000] [--repeat 3]

The telegrams are the simulator's Belgian three-phase meter (profile be3,
about 1 KB each, CRC computed); the frames are the same telegrams encrypted
as a Luxembourg Smarty sends them (p1logger.dlms.encrypt: security 0x30,
12-byte GCM tag). Each case feeds a fresh TelegramReader the whole stream in
the 64 KiB reads of a ``file:`` source: framing, decryption, CRC and decoding,
no database.

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
    cases = [
        ("plain telegrams (baseline)", b"".join(plain), None),
        ("encrypted, no authentication key (CTR + CRC)", b"".join(
            dlms.encrypt(t, without_auth, TITLE, i + 1) for i, t in enumerate(plain)), without_auth),
        ("encrypted, authentication key (GCM tag checked)", b"".join(
            dlms.encrypt(t, with_auth, TITLE, i + 1) for i, t in enumerate(plain)), with_auth),
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
