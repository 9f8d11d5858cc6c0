"""``p1logger dump``: show what the meter sends, telegram by telegram."""

from __future__ import annotations

import argparse
import sys

from p1logger import config, render
from p1logger.decode import Telegram
from p1logger.commands.common import ReadCounts, open_input, read_items, summary
from p1logger.reader import Rejected, TelegramReader
from p1logger.timestamps import TimestampParser


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "dump",
        help="print each telegram the meter sends, decoded",
        description="Read telegrams from a serial port, a pyserial URL or a recorded file, and print each valid "
        "one as a table (or JSON Lines). Rejected telegrams are summarised on stderr.",
        epilog="examples:\n  p1logger dump /dev/ttyUSB0 --once\n  p1logger dump socket://192.0.2.10:2001\n"
        "  p1logger dump --dsmr22 /dev/ttyUSB0\n  p1logger dump --input telegrams.txt --format json\n"
        "  p1logger simulate | p1logger dump --input -\n"
        "  P1_DECRYPTION_KEY=... p1logger dump --input frames.bin --format json   # an encrypted meter",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    config.add_source_arguments(parser, positional=True)
    config.add_decode_arguments(parser)
    config.add_decryption_arguments(parser)
    output = parser.add_argument_group("output")
    output.add_argument("--format", choices=("table", "json"), default="table",
                        help="table for people, json for JSON Lines, one object per telegram (default %(default)s)")
    output.add_argument("--all", action="store_true", help="also print rejected telegrams, marked as such")
    output.add_argument("--once", action="store_true", help="stop after the first valid telegram")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    timestamps = TimestampParser(args.timezone)
    labels = config.CountryLabels(config.check_country(args.country))
    shown_labels = ""
    keys = config.decryption_keys(args)
    source, live = open_input(args)
    reader = TelegramReader(timestamps, args.max_telegram_bytes, keys=keys)
    out = sys.stdout
    as_json = args.format == "json"
    counts = ReadCounts()
    try:
        for item in read_items(source, reader, live, counts):
            if isinstance(item, Telegram):
                labels.update(item.header, item.fields)
                if not as_json and labels.describe() != shown_labels:
                    shown_labels = labels.describe()
                    out.write(f"-- {shown_labels}\n\n")
                out.write((render.json_line(item) if as_json else render.table(item, labels.country, zone=timestamps.zone) + "\n") + "\n")
                if args.once:
                    break
            elif args.all:
                _show_rejected(item, reader, as_json, labels.country or config.DEFAULT_COUNTRY, timestamps)
    finally:
        out.flush()
        source.close()
    line = summary("dump", counts, reader.garbage_bytes)
    if line:
        print(line, file=sys.stderr)
    if counts.valid == 0 and counts.bytes_in:
        print(f"p1logger dump: no valid telegram in {counts.bytes_in} bytes; {counts.hint()}", file=sys.stderr)
    return 0 if counts.valid else 1


def _show_rejected(item: Rejected, reader: TelegramReader, as_json: bool, country: str,
                   timestamps: TimestampParser) -> None:
    telegram = None
    if item.reason == "crc":
        body = item.raw[: item.raw.rfind(b"!") + 1]
        telegram = reader.decoder.decode(body, False, item.raw)
    if telegram is None:
        # An encrypted frame that did not open is binary: shown as hex.
        text = item.raw.hex().upper() if not item.raw.isascii() else item.raw.decode("ascii")
        if as_json:
            import json

            sys.stdout.write(json.dumps({"rejected": item.reason, "detail": item.detail, "crc_ok": None,
                                         "raw": text}) + "\n")
        else:
            sys.stdout.write(f"== REJECTED ({item.reason}): {item.detail}\n{text}\n")
        return
    sys.stdout.write((render.json_line(telegram, item.reason) if as_json
                      else render.table(telegram, country, f"{item.reason}: {item.detail}", zone=timestamps.zone) + "\n") + "\n")
