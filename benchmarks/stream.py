"""A realistic telegram stream for benchmarks, built from the real fixtures.

Repeating the same telegrams would flatter any parser that remembers lines, so
each fixture with a valid CRC is replayed as a meter would send it over time:
the clock advances one second per telegram, instantaneous values (power,
voltage, current, demand) change every telegram, energy counters creep up, and
the CRC is recomputed.  Deterministic (seeded), so runs compare.
"""

from __future__ import annotations

import random
import re
from datetime import datetime, timedelta
from pathlib import Path

from p1logger.crc import crc16

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
_TIME = re.compile(rb"^(0-0:1\.0\.0\()(\d{12})([SW])\)", re.M)
# Objects whose value changes every second on a live meter.
_LIVE = re.compile(rb"^(1-0:(?:(?:1|2|21|41|61|22|42|62|32|52|72|31|51|71)\.7\.0|1\.4\.0)\()(\d+)\.(\d+)(\*[A-Za-z]+\))", re.M)
_COUNTER = re.compile(rb"^(1-0:1\.8\.[12]\()(\d+)\.(\d+)(\*kWh\))", re.M)


def valid_fixtures() -> list[bytes]:
    out = []
    for path in sorted(FIXTURES.glob("*.txt")):
        data = path.read_bytes()
        end = data.index(b"\r\n!") + 3
        crc_text = data[end:].strip()
        if crc_text and crc16(data[:end]) == int(crc_text, 16):
            out.append(data)
    return out


def _bump(match: re.Match[bytes], rng: random.Random, factor: float, step: float) -> bytes:
    whole, frac = match.group(2), match.group(3)
    value = float(whole + b"." + frac) * factor + rng.random() * step
    text = f"{value:0{len(whole) + len(frac) + 1}.{len(frac)}f}".encode()
    return match.group(1) + text[-(len(whole) + len(frac) + 1):] + match.group(4)


def evolve(template: bytes, seconds: int, rng: random.Random) -> bytes:
    body = template[: template.index(b"\r\n!") + 3]
    match = _TIME.search(body)
    if match is not None:
        try:
            start = datetime.strptime(match.group(2).decode(), "%y%m%d%H%M%S")
        except ValueError:
            start = None  # the meter's clock is unset; leave it so
        if start is not None:
            stamp = (start + timedelta(seconds=seconds)).strftime("%y%m%d%H%M%S").encode()
            body = body[: match.start(2)] + stamp + body[match.end(2):]
    body = _LIVE.sub(lambda m: _bump(m, rng, rng.uniform(0.8, 1.2), 1.0), body)
    # Counters move every few seconds at household loads.
    if seconds % 4 == 0:
        body = _COUNTER.sub(lambda m: _bump(m, rng, 1.0, 0.002 * seconds), body)
    crc_text = b"" if template.rstrip().endswith(b"!") else f"{crc16(body):04X}".encode()
    return body + crc_text + b"\r\n"


def realistic_stream(count: int, seed: int = 1) -> list[bytes]:
    """``count`` telegrams: the valid fixtures in turn, each evolving over time."""
    rng = random.Random(seed)
    templates = valid_fixtures()
    return [evolve(templates[i % len(templates)], i // len(templates), rng) for i in range(count)]
