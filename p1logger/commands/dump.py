"""``p1logger dump``: show what the meter sends, telegram by telegram."""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from p1logger import config, render
from p1logger.decode import Telegram
from p1logger.errors import ConfigError, SourceError
from p1logger.reader import Rejected, TelegramReader
from p1logger.source import GARBAGE_HINT, FileSource, Source, open_source
from p1logger.timestamps import TimestampParser

# Live sources: this much input without one valid telegram means a wrong line setting.
GARBAGE_LIMIT_BYTES = 16384


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "dump",
        help="print each telegram the meter sends, decoded",
        description="Read telegrams from a serial port, a pyserial URL or a recorded file, and print each valid "
        "one as a table (or JSON Lines). Rejected telegrams are summarised on stderr.",
        epilog="examples:\n  p1logger dump /dev/ttyUSB0 --once\n  p1logger dump socket://192.0.2.10:2001\n"
        "  p1logger dump --dsmr22 /dev/ttyUSB0\n  p1logger dump --input telegrams.txt --format json\n"
        "  p1logger simulate | p1logger dump --input -",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    config.add_source_arguments(parser, positional=True)
    config.add_decode_arguments(parser)
    output = parser.add_argument_group("output")
    output.add_argument("--format", choices=("table", "json"), default="table",
                        help="table for people, json for JSON Lines, one object per telegram (default %(default)s)")
    output.add_argument("--all", action="store_true", help="also print rejected telegrams, marked as such")
    output.add_argument("--once", action="store_true", help="stop after the first valid telegram")
    parser.set_defaults(func=main)


def _open(args: argparse.Namespace) -> tuple[Source, bool]:
    if args.input:
        return FileSource(args.input), False
    if not args.device:
        raise ConfigError("say where to read: a serial device (p1logger dump /dev/ttyUSB0), "
                          "a URL (socket://host:port) or a file (--input FILE)")
    return open_source(args.device, config.serial_settings(args)), not args.device.startswith("file:")


def main(args: argparse.Namespace) -> int:
    timestamps = TimestampParser(args.timezone)
    country = config.check_country(args.country)
    source, live = _open(args)
    reader = TelegramReader(timestamps, args.max_telegram_bytes)
    out = sys.stdout
    as_json = args.format == "json"
    valid = 0
    rejected: Counter[str] = Counter()
    bytes_in = 0
    try:
        while True:
            try:
                data = source.read()
            except EOFError:
                break
            bytes_in += len(data)
            for item in reader.feed(data):
                if isinstance(item, Telegram):
                    valid += 1
                    out.write((render.json_line(item) if as_json else render.table(item, country) + "\n") + "\n")
                    if args.once:
                        break
                else:
                    rejected[item.reason] += 1
                    if args.all:
                        _show_rejected(item, reader, as_json, country)
            if args.once and valid:
                break
            if live and valid == 0 and bytes_in > GARBAGE_LIMIT_BYTES:
                raise SourceError(GARBAGE_HINT)
    finally:
        out.flush()
        source.close()
    _summary(valid, rejected, reader)
    if valid == 0 and bytes_in and reader.garbage_bytes + sum(rejected.values()) > 0:
        print(f"p1logger dump: no valid telegram in {bytes_in} bytes; {GARBAGE_HINT}", file=sys.stderr)
    return 0 if valid else 1


def _show_rejected(item: Rejected, reader: TelegramReader, as_json: bool, country: str) -> None:
    telegram = None
    if item.reason == "crc":
        body = item.raw[: item.raw.rfind(b"!") + 1]
        telegram = reader.decoder.decode(body, False, item.raw)
    if telegram is None:
        if as_json:
            import json

            sys.stdout.write(json.dumps({"rejected": item.reason, "detail": item.detail, "crc_ok": None,
                                         "raw": item.raw.decode("ascii", "replace")}) + "\n")
        else:
            sys.stdout.write(f"== REJECTED ({item.reason}): {item.detail}\n{item.raw.decode('ascii', 'replace')}\n")
        return
    sys.stdout.write((render.json_line(telegram, item.reason) if as_json
                      else render.table(telegram, country, f"{item.reason}: {item.detail}") + "\n") + "\n")


def _summary(valid: int, rejected: Counter[str], reader: TelegramReader) -> None:
    if rejected or reader.garbage_bytes:
        parts = ", ".join(f"{count} {reason}" for reason, count in sorted(rejected.items()))
        garbage = f"; {reader.garbage_bytes} bytes of noise skipped" if reader.garbage_bytes else ""
        print(f"p1logger dump: {valid} valid, {sum(rejected.values())} rejected"
              f"{' (' + parts + ')' if parts else ''}{garbage}", file=sys.stderr)
