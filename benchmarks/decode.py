"""Framing + CRC + decode rate: p1logger against dsmr_parser, same telegrams, same process.

    pip install -e '.[bench]'
    python benchmarks/decode.py [--telegrams 20000] [--repeat 3]

Two streams, each read by both parsers from one byte buffer with CRC checking
on, every result discarded as a logger would:

- corpus: the real fixtures with a valid CRC (41 meters of many makes and
  countries), interleaved and evolving over time (see stream.py).  The
  interleaving is the hard case for p1logger's line cache.
- belgian: one simulated Belgian three-phase meter (p1logger.simulate) over
  the same number of seconds: what a Belgian home actually receives, with the
  13-month peak history in every telegram.

The best of ``--repeat`` runs is reported for each, in CPU time (the
process's, so that time spent waiting for a core on a busy machine does not
count), the two parsers' runs interleaved so that both see the same load; the
range of the runs' own ratios (each run of p1logger against the dsmr_parser
run next to it) follows, so that a bad run is not hidden by the best one.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# This checkout's p1logger, not whichever one pip installed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stream import realistic_stream  # noqa: E402

from p1logger.reader import TelegramReader  # noqa: E402
from p1logger.timestamps import TimestampParser  # noqa: E402

CHUNK_BYTES = 4096  # about what a serial or socket read returns


def p1logger_rate(blob: bytes, expected: int) -> float:
    reader = TelegramReader(TimestampParser("Europe/Brussels"))
    start = time.process_time()
    for offset in range(0, len(blob), CHUNK_BYTES):
        reader.feed(blob[offset : offset + CHUNK_BYTES])
    elapsed = time.process_time() - start
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
    start = time.process_time()
    for offset in range(0, len(blob), CHUNK_BYTES):
        buffer.append(blob[offset : offset + CHUNK_BYTES])
        for text in buffer.get_all():
            parsers[id(specs[index])].parse(text)
            index += 1
            parsed += 1
    elapsed = time.process_time() - start
    if parsed != expected:
        raise SystemExit(f"dsmr_parser decoded {parsed} of {expected} telegrams")
    return expected / elapsed


def belgian_stream(count: int) -> list[bytes]:
    from datetime import datetime, timezone

    from p1logger.simulate import PROFILES, MeterModel

    meter = MeterModel(PROFILES["be3"], datetime(2025, 6, 18, 6, 0, tzinfo=timezone.utc))
    return [meter.next_telegram() for _ in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--telegrams", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    from importlib.metadata import version

    print(f"dsmr-parser {version('dsmr-parser')}, {args.telegrams} telegrams per stream, CRC checked, "
          f"best of {args.repeat} in CPU time")
    for name, telegrams in (("corpus", realistic_stream(args.telegrams)), ("belgian", belgian_stream(args.telegrams))):
        blob = b"".join(telegrams)
        gc.collect()
        ours_runs: list[float] = []
        theirs_runs: list[float] = []
        for _ in range(args.repeat):
            ours_runs.append(p1logger_rate(blob, len(telegrams)))
            theirs_runs.append(dsmr_parser_rate(telegrams, len(telegrams)))
        ours, theirs = max(ours_runs), max(theirs_runs)
        # Each run's own ratio too (the two parsers' runs side by side), so that a bad run shows.
        each = sorted(o / t for o, t in zip(ours_runs, theirs_runs))
        print(f"{name:8} ({len(blob) // len(telegrams)} bytes/telegram)  p1logger {ours:8,.0f}/s  "
              f"dsmr_parser {theirs:7,.0f}/s  ratio {ours / theirs:5.1f}x  (runs {each[0]:.1f}-{each[-1]:.1f}x)")


if __name__ == "__main__":
    main()
