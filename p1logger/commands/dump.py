"""``p1logger dump``: show what the meter sends, telegram by telegram."""

from __future__ import annotations

import argparse
import sys
from typing import BinaryIO, TextIO

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
    json_show: _JsonShow | None = None
    if args.format == "json":
        # Bytes straight to the binary stream: no text layer to encode each line again.
        # A stdout replaced by a text-only stream (redirect_stdout to a StringIO) gets the same bytes as text.
        json_show = _JsonShow(getattr(out, "buffer", None) or _TextAsBinary(out), render.JsonLines())
    flush = json_show.flush if json_show is not None else out.flush
    counts = ReadCounts()
    try:
        shown = counts.valid
        for item in read_items(source, reader, live, counts):
            if isinstance(item, Telegram):
                if json_show is not None:
                    json_show(item, None)
                else:
                    labels.update(item.header, item.fields)
                    if labels.describe() != shown_labels:
                        shown_labels = labels.describe()
                        out.write(f"-- {shown_labels}\n\n")
                    out.write(render.table(item, labels.country, zone=timestamps.zone) + "\n\n")
                if args.once:
                    break
            elif args.all:
                _show_rejected(item, reader, json_show, labels.country or config.DEFAULT_COUNTRY, timestamps)
            if live and counts.valid != shown:
                shown = counts.valid
                flush()  # a person or a pipe is waiting for each telegram
    finally:
        flush()
        source.close()
    line = summary("dump", counts, reader.garbage_bytes)
    if line:
        print(line, file=sys.stderr)
    if counts.valid == 0 and counts.bytes_in:
        print(f"p1logger dump: no valid telegram in {counts.bytes_in} bytes; {counts.hint()}", file=sys.stderr)
    return 0 if counts.valid else 1


class _TextAsBinary:
    def __init__(self, text: TextIO) -> None:
        self.text = text

    def write(self, data: bytes) -> int:
        return self.text.write(data.decode())

    def flush(self) -> None:
        self.text.flush()


class _JsonShow:
    """Writes JSON Lines in blocks of about 64 KiB: one system call per telegram would cost more than encoding it."""

    def __init__(self, out: BinaryIO | _TextAsBinary, lines: render.JsonLines) -> None:
        self.out, self.lines = out, lines
        self._pending: list[bytes] = []
        self._pending_bytes = 0

    def __call__(self, telegram: Telegram, rejected: str | None) -> None:
        self.add(self.lines.line(telegram, rejected))

    def add(self, data: bytes) -> None:
        self._pending.append(data)
        self._pending_bytes += len(data)
        if self._pending_bytes >= 65536:
            self.out.write(b"".join(self._pending))
            self._pending.clear()
            self._pending_bytes = 0

    def flush(self) -> None:
        if self._pending:
            self.out.write(b"".join(self._pending))
            self._pending.clear()
            self._pending_bytes = 0
        self.out.flush()


def _show_rejected(item: Rejected, reader: TelegramReader, json_show: _JsonShow | None, country: str,
                   timestamps: TimestampParser) -> None:
    telegram = None
    if item.reason == "crc":
        body = item.raw[: item.raw.rfind(b"!") + 1]
        telegram = reader.decoder.decode(body, False, item.raw)
    if telegram is None:
        # An encrypted frame that did not open is binary: shown as hex.
        text = item.raw.hex().upper() if not item.raw.isascii() else item.raw.decode("ascii")
        if json_show is not None:
            import json

            json_show.add(json.dumps({"rejected": item.reason, "detail": item.detail, "crc_ok": None,
                                      "raw": text}).encode() + b"\n")
        else:
            sys.stdout.write(f"== REJECTED ({item.reason}): {item.detail}\n{text}\n")
        return
    if json_show is not None:
        json_show(telegram, item.reason)
    else:
        sys.stdout.write(render.table(telegram, country, f"{item.reason}: {item.detail}", zone=timestamps.zone) + "\n\n")
