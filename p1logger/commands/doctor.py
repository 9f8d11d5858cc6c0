"""``p1logger doctor``: check the configuration, the source and the database, in plain words."""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

from p1logger import config, dlms
from p1logger.commands.run import register as register_run
from p1logger.cost import tariff_checks
from p1logger.decode import Telegram
from p1logger.errors import ConfigError, SourceError
from p1logger.inputs import NO_SOURCE, no_valid_telegram_hint, open_source
from p1logger.outputs import enabled_specs
from p1logger.reader import TelegramReader
from p1logger.timestamps import TimestampParser

OK, BAD = "ok  ", "FIX "


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    # Same flags and variables as run, so what doctor checks is what run would use.
    scratch = argparse.ArgumentParser(add_help=False)
    scratch_sub = scratch.add_subparsers()
    register_run(scratch_sub)
    run_parser = scratch_sub.choices["run"]
    parser = subparsers.add_parser(
        "doctor",
        parents=[run_parser],
        conflict_handler="resolve",
        help="check the configuration, the serial port and InfluxDB, and say what to fix",
        description="Checks, in order: the configuration, the source (opens it and waits for a valid telegram), "
        "each configured output (InfluxDB: URL, token, organization and bucket, or database and credentials for "
        "v1; the archive directory; the fan-out address) and the spool directory. Starts nothing: no port is "
        "opened and no lock taken, so it may run beside a running logger. Uses the same flags and environment "
        "variables as 'run'.",
    )
    parser.add_argument("--wait-s", type=float, default=25.0,
                        help="how long to wait for a valid telegram (default %(default)s; DSMR 4 sends every 10 s)")
    parser.set_defaults(func=main)


def _print(ok: bool, message: str) -> None:
    print(f"{OK if ok else BAD}{message}")


def main(args: argparse.Namespace) -> int:
    problems = 0
    try:
        timestamps = TimestampParser(args.timezone)
        config.check_country(args.country)
        config.check_log_level(args.log_level)
        settings = config.serial_settings(args)
        keys = config.decryption_keys(args)
        specs = enabled_specs(args)
        _print(True, f"configuration: source {args.source or '(none)'}, outputs "
               f"{', '.join(spec.name for spec in specs)}")
    except ConfigError as exc:
        _print(False, f"configuration: {exc}")
        return 1
    for ok, message in tariff_checks(getattr(args, "tariff", None), timestamps.zone, int(time.time())):
        _print(ok, message)
        problems += not ok
    problems += not _check_source(args, settings, timestamps, keys)
    for spec in specs:
        for ok, message in spec.check(args):
            _print(ok, message)
            problems += not ok
    ok, message = _check_spool_dir(Path(args.spool_dir))
    _print(ok, message)
    problems += not ok
    print("all good: p1logger run is ready" if not problems else f"{problems} thing(s) to fix, see FIX lines above")
    return 0 if not problems else 1


def _check_spool_dir(directory: Path) -> tuple[bool, str]:
    """Writable, or can be created; looked at without creating or opening anything."""
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return False, f"spool: {existing} is not a directory: fix P1_SPOOL_DIR"
    if not os.access(existing, os.W_OK | os.X_OK):
        return False, f"spool: {existing} is not writable: fix its permissions or P1_SPOOL_DIR"
    return True, f"spool: {directory} is writable" if existing == directory else \
        f"spool: {directory} will be created (in {existing}, which is writable)"


def _check_source(args: argparse.Namespace, settings: config.SerialSettings, timestamps: TimestampParser,
                  keys: dlms.Keys | None) -> bool:
    if not args.source:
        _print(False, f"source: {NO_SOURCE}")
        return False
    try:
        source = open_source(args.source, settings)
    except SourceError as exc:
        _print(False, f"source: {exc}")
        return False
    reader = TelegramReader(timestamps, keys=keys)
    # Doctor says what is wrong in its own words, on stdout; the reader's log line would repeat it.
    reader_log = logging.getLogger("p1logger.reader")
    reader_log_level = reader_log.level
    reader_log.setLevel(logging.ERROR)
    encrypted = False
    deadline = time.monotonic() + args.wait_s
    received = 0
    try:
        while time.monotonic() < deadline:
            try:
                data = source.read()
            except EOFError:
                break
            received += len(data)
            encrypted = encrypted or (keys is None and dlms.looks_encrypted(data))
            for item in reader.feed(data):
                if isinstance(item, Telegram):
                    _print(True, f"source: {source.description} sends valid telegrams (meter {item.meter_id})")
                    return True
            if reader.stats.rejected["decrypt"] + reader.stats.rejected["unsupported"] >= 2:
                break  # a wrong key fails every frame: no need to wait for more
    except SourceError as exc:
        _print(False, f"source: {exc}")
        return False
    finally:
        source.close()
        reader_log.setLevel(reader_log_level)
    if reader.stats.rejected["unsupported"]:
        _print(False, f"source: {dlms.COSEM_CONTENT}")
    elif reader.stats.rejected["decrypt"]:
        _print(False, f"source: {dlms.DECRYPTION_FAILED} (the meter's encrypted frames do not open with it; "
               "the key comes from your grid operator)")
    elif encrypted:
        _print(False, "source: the meter sends encrypted frames (Luxembourg Smarty, Austrian Sagemcom): set "
               "P1_DECRYPTION_KEY to the key from your grid operator")
    elif received == 0:
        _print(False, f"source: nothing arrived from {source.description} in {args.wait_s:.0f} s: is the P1 port "
               "enabled at your grid operator and the cable plugged in?")
    else:
        _print(False, f"source: {received} bytes but no valid telegram: {no_valid_telegram_hint(reader.stats.rejected)}")
    return False
