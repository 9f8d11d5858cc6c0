"""``p1logger record``: keep the raw telegrams in an archive, without InfluxDB."""

from __future__ import annotations

import argparse
import logging
import signal
import stat
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from zoneinfo import ZoneInfo

from p1logger import config
from p1logger.outputs.archive import (
    ArchiveWriter,
    RecordFile,
    add_archive_bound_arguments,
    writer_from_args,
)
from p1logger.cli import setup_logging
from p1logger.commands.common import open_input
from p1logger.decode import Telegram
from p1logger.errors import ConfigError, SourceError
from p1logger.reader import TelegramReader
from p1logger.contracts import Source
from p1logger.inputs import GARBAGE_LIMIT_BYTES, no_valid_telegram_hint
from p1logger.timestamps import TimestampParser

logger = logging.getLogger(__name__)

RECONNECT_MAX_S = 60.0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "record",
        help="keep every telegram as received in a file or daily archive, for replay or bug reports",
        description="Read telegrams from a serial port, a pyserial URL or a file and keep each one exactly as "
        "received (rejected ones marked) in TARGET: a file, or a directory of daily files compressed once the day "
        "is over (the format of 'p1logger run --archive'). Nothing is written to InfluxDB; store a recording "
        "later with 'p1logger replay'. Ctrl-C stops cleanly.",
        epilog="examples:\n  p1logger record /dev/ttyUSB0 meter.txt\n  p1logger record socket://192.0.2.10:2001 "
        "archive/\n  P1_SOURCE=/dev/ttyUSB0 p1logger record meter.txt\n  p1logger dump --input meter.txt",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    config.add_source_arguments(parser, positional=True)
    parser.add_argument("target", metavar="TARGET",
                        help="a file to append to, or a directory (existing, or ending in /) for daily files")
    config.add_decode_arguments(parser)
    config.add_decryption_arguments(parser)
    add_archive_bound_arguments(parser.add_argument_group("daily files (TARGET is a directory)"))
    config.add_logging_arguments(parser)
    parser.set_defaults(func=main)


def _open_target(args: argparse.Namespace, zone: ZoneInfo) -> ArchiveWriter | RecordFile:
    target = Path(args.target)
    if args.target.endswith(("/", "\\")) or target.is_dir():
        writer = writer_from_args(args, target, zone)
        writer.open()
        return writer
    if target.exists() and not stat.S_ISREG(target.stat().st_mode):
        raise ConfigError(f"{target} is a device or special file, not a file to record into: "
                          "p1logger record DEVICE FILE (or set P1_SOURCE and give only FILE)")
    if target.name.endswith(".gz"):
        raise ConfigError(f"{target}: record into a plain file (compress it afterwards), or into a directory, "
                          "where finished days are compressed safely")
    recording = RecordFile(target)
    try:
        recording.open()
    except OSError as exc:
        raise ConfigError(f"cannot write {target}: {exc.strerror or exc}") from None
    return recording


def main(args: argparse.Namespace) -> int:
    setup_logging(config.check_log_level(args.log_level))
    timestamps = TimestampParser(args.timezone)
    keys = config.decryption_keys(args)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        logger.info("received %s; stopping", signal.Signals(signum).name)
        stop.set()

    source, live = open_input(args)  # a wrong device name is said at once, before any file is made
    try:
        target = _open_target(args, timestamps.zone)
    except BaseException:
        source.close()
        raise
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        reader = TelegramReader(timestamps, args.max_telegram_bytes, keys=keys)
        valid, rejected = record(args, source, reader, target, stop, live)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        target.close()
    print(f"p1logger record: {valid} valid and {rejected} rejected telegrams recorded in {args.target}"
          + (f"; {target.records_lost} could NOT be written" if target.records_lost else ""), file=sys.stderr)
    return 1 if target.records_lost else 0


def record(
    args: argparse.Namespace, first_source: Source, reader: TelegramReader, target: ArchiveWriter | RecordFile,
    stop: threading.Event, live: bool,
) -> tuple[int, int]:
    """Copy telegrams from the source to the target until the end of a file, or ``stop``.  (valid, rejected)

    A live source that is lost is reopened, with a growing delay, until ``stop``.
    """
    source: Source | None = first_source
    delay_s = 1.0
    valid = rejected = 0
    bytes_since_valid = 0
    garbage_warned = False
    try:
        while not stop.is_set():
            if source is None:
                try:
                    source, _ = open_input(args)
                except SourceError as exc:
                    logger.error("%s; trying again in %.0f s", exc, delay_s)
                    stop.wait(delay_s)
                    delay_s = min(delay_s * 2, RECONNECT_MAX_S)
                    continue
            try:
                data = source.read()
            except EOFError:
                break
            except SourceError as exc:
                if not live:
                    raise
                logger.warning("%s; reopening in %.0f s", exc, delay_s)
                source.close()
                source = None
                stop.wait(delay_s)
                delay_s = min(delay_s * 2, RECONNECT_MAX_S)
                continue
            received_at = time.time()
            bytes_since_valid += len(data)
            for item in reader.feed(data):
                ok = isinstance(item, Telegram)
                target.write(item.raw, ok, received_at)
                if ok:
                    valid += 1
                    bytes_since_valid = 0
                    garbage_warned = False
                    delay_s = 1.0
                else:
                    rejected += 1
            if live and not garbage_warned and bytes_since_valid > GARBAGE_LIMIT_BYTES:
                logger.warning("%s", no_valid_telegram_hint(reader.stats.rejected))
                garbage_warned = True
    finally:
        if source is not None:
            source.close()
    return valid, rejected
