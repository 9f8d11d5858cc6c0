"""``p1logger dump --format json`` over a 20,000-telegram file, against dsmr_parser doing the same job.

    pip install -e '.[bench]'
    python benchmarks/dump_json.py [--telegrams 20000]

Both are whole programs started the same way, reading the same file and writing
one JSON object per telegram to /dev/null: p1logger's CLI, and a minimal
dsmr_parser program (its TelegramBuffer, TelegramParser with CRC checking and
Telegram.to_json()).  CPU time (user + system) includes interpreter start-up for both; each
pair of runs is interleaved so that load from other processes hits both alike.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
ROOT = Path(__file__).resolve().parent.parent  # run this checkout's p1logger, whatever is installed

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


def cost(command: list[str]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one whole program, start-up included."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with open("/dev/null", "wb") as sink:
        subprocess.run(command, stdout=sink, stderr=subprocess.PIPE, check=True, cwd=ROOT)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--telegrams", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=3, help="runs of each program, interleaved (default %(default)s)")
    args = parser.parse_args()
    ours: list[tuple[float, float]] = []
    theirs: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "telegrams.txt"
        path.write_bytes(b"".join(realistic_stream(args.telegrams)))
        benchmarks = str(Path(__file__).resolve().parent)
        for _ in range(args.runs):
            ours.append(cost([sys.executable, "-m", "p1logger", "dump", "--input", str(path), "--format", "json"]))
            theirs.append(cost([sys.executable, "-c", DSMR_PARSER_PROGRAM, str(path), benchmarks]))
    print(f"file: {args.telegrams} telegrams, {path.name}; {args.runs} runs of each, interleaved; CPU = user + system")
    for name, runs in (("p1logger dump --format json", ours), ("dsmr_parser to_json", theirs)):
        cpu = sorted(c for c, _ in runs)
        wall = min(w for _, w in runs)
        print(f"{name:28} CPU {cpu[0]:7.2f} s (max {cpu[-1]:.2f})  wall {wall:7.2f} s  "
              f"({args.telegrams / cpu[0]:,.0f} telegrams per CPU second)")
    ratios = sorted(t[0] / o[0] for o, t in zip(ours, theirs))
    print(f"ratio: p1logger is {ratios[len(ratios) // 2]:.1f}x dsmr_parser in CPU (median; runs "
          f"{', '.join(f'{r:.1f}x' for r in ratios)}; target >= 15x)")


if __name__ == "__main__":
    main()
