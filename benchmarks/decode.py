"""Framing + CRC + decode rate: p1logger against dsmr_parser, same telegrams, same process.

    pip install -e '.[bench]'
    python benchmarks/decode.py [--telegrams 20000] [--repeat 3]

Both parsers read the same realistic stream (see stream.py) from one byte
buffer, with CRC checking on, and discard each result as a logger would.  The
best of ``--repeat`` runs is reported for each.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stream import realistic_stream  # noqa: E402

from p1logger.reader import TelegramReader  # noqa: E402
from p1logger.timestamps import TimestampParser  # noqa: E402

CHUNK_BYTES = 4096  # about what a serial or socket read returns


def p1logger_rate(blob: bytes, expected: int) -> float:
    reader = TelegramReader(TimestampParser("Europe/Brussels"))
    start = time.perf_counter()
    for offset in range(0, len(blob), CHUNK_BYTES):
        reader.feed(blob[offset : offset + CHUNK_BYTES])
    elapsed = time.perf_counter() - start
    if reader.stats.ok != expected:
        raise SystemExit(f"p1logger decoded {reader.stats.ok} of {expected} telegrams")
    return expected / elapsed


def _dsmr_spec_for(header: bytes):  # type: ignore[no-untyped-def]
    from dsmr_parser import telegram_specifications as specs

    # The specification a user of dsmr_parser would pick for each meter.  Its
    # Luxembourg and Austrian (T210-D-r) specifications expect the encrypted
    # form, so those plain telegrams use V5 like other DSMR 5 meters.
    by_prefix = [
        (b"/FLU", specs.BELGIUM_FLUVIUS),
        (b"/KAM", specs.SWEDEN),
        (b"/SAG5", specs.EON_HUNGARY),
        (b"/ISk5\\2MIE", specs.ISKRA_IE),
    ]
    for prefix, spec in by_prefix:
        if header.startswith(prefix):
            return spec
    return specs.V5


def dsmr_parser_rate(telegrams: list[bytes], expected: int) -> float:
    from dsmr_parser.clients.telegram_buffer import TelegramBuffer
    from dsmr_parser.parsers import TelegramParser

    parsers: dict[int, TelegramParser] = {}
    headers = [t[: t.index(b"\r\n")] for t in telegrams]
    specs = [_dsmr_spec_for(h) for h in headers]
    for spec in specs:
        parsers.setdefault(id(spec), TelegramParser(spec, apply_checksum_validation=True))
    blob = b"".join(telegrams).decode("ascii")
    buffer = TelegramBuffer()
    parsed = 0
    index = 0
    start = time.perf_counter()
    for offset in range(0, len(blob), CHUNK_BYTES):
        buffer.append(blob[offset : offset + CHUNK_BYTES])
        for text in buffer.get_all():
            parsers[id(specs[index])].parse(text)
            index += 1
            parsed += 1
    elapsed = time.perf_counter() - start
    if parsed != expected:
        raise SystemExit(f"dsmr_parser decoded {parsed} of {expected} telegrams")
    return expected / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--telegrams", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    telegrams = realistic_stream(args.telegrams)
    blob = b"".join(telegrams)
    gc.collect()
    ours = max(p1logger_rate(blob, len(telegrams)) for _ in range(args.repeat))
    theirs = max(dsmr_parser_rate(telegrams, len(telegrams)) for _ in range(args.repeat))
    import dsmr_parser  # noqa: F401  (version for the record)
    from importlib.metadata import version

    print(f"stream: {len(telegrams)} telegrams, {len(blob)} bytes, CRC checked")
    print(f"p1logger     {ours:10,.0f} telegrams/s")
    print(f"dsmr_parser  {theirs:10,.0f} telegrams/s  (dsmr-parser {version('dsmr-parser')})")
    print(f"ratio        {ours / theirs:10.1f}x")


if __name__ == "__main__":
    main()
