"""``p1logger cost``: what a recording (or a live meter so far) cost, per local day and in total.

The same CostTracker as ``p1logger run`` prices every quarter-hour; this
command only reads, adds up (CostSummary) and prints.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from p1logger import config
from p1logger.cli import setup_logging
from p1logger.commands.common import ReadCounts, open_input, read_items, summary
from p1logger.cost import CostSummary, CostTracker, add_tariff_argument, open_tariff
from p1logger.decode import Telegram
from p1logger.reader import TelegramReader
from p1logger.timestamps import TimestampParser


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "cost",
        help="what the energy in a recording (or a live meter so far) cost, per day and in total",
        description="Price every quarter-hour of a recorded file (or of a live meter, until Ctrl-C) with the "
        "contracts in a tariff file, and print the cost per local day and in total: import, export credit, "
        "gas, water and the fixed part. See docs/cost.md for the tariff file.",
        epilog="examples:\n  p1logger cost --input telegrams.txt --tariff tariff.toml\n"
        "  p1logger cost --input telegrams.txt --tariff tariff.toml --format json\n"
        "  p1logger cost /dev/ttyUSB0 --tariff tariff.toml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    config.add_source_arguments(parser, positional=True)
    config.add_decode_arguments(parser)
    add_tariff_argument(parser, required=True)
    output = parser.add_argument_group("output")
    output.add_argument("--format", choices=("table", "json"), default="table",
                        help="table for people, json for programs (default %(default)s)")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    setup_logging("WARNING")  # prices that run out, counters that went back
    timestamps = TimestampParser(args.timezone)
    tariff = open_tariff(args.tariff, timestamps.zone)
    source, live = open_input(args)
    reader = TelegramReader(timestamps, args.max_telegram_bytes)
    totals = CostSummary(timestamps.zone)
    tracker = CostTracker(tariff, timestamps.zone, on_quarter=totals.add, strict=True)
    counts = ReadCounts()
    try:
        for item in read_items(source, reader, live, counts):
            if isinstance(item, Telegram):
                received_at = time.time()
                tracker.build(item, received_at)
                totals.seen(int(item.timestamp.timestamp()) if item.timestamp is not None else int(received_at))
    except KeyboardInterrupt:
        if not live:
            raise
    finally:
        source.close()
        line = summary("cost", counts, reader.garbage_bytes)
        if line:
            print(line, file=sys.stderr)
    tracker.finish()
    if totals.first_s is None:
        print(f"p1logger cost: no telegram in {args.input or args.device}", file=sys.stderr)
        return 1
    if args.format == "json":
        sys.stdout.write(json.dumps(totals.json(), ensure_ascii=False) + "\n")
    else:
        sys.stdout.write(totals.table() + "\n")
    return 0
