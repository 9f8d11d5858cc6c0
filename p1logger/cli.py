"""The ``p1logger`` command line: one subcommand per job."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from p1logger import __version__
from p1logger.errors import ConfigError, SourceError

# Each module registers its own subcommand; this list is the only wiring.
COMMANDS = ("run", "dump", "doctor", "health", "simulate", "capacity", "cost", "prices", "record", "replay")

DESCRIPTION = """\
Read DSMR P1 telegrams from a smart meter, check them, decode them and store
them in InfluxDB, without ever losing a reading.

Every option can also be set with the environment variable shown in [env ...].
Start with 'p1logger dump /dev/ttyUSB0' to see what your meter sends, then
'p1logger doctor' to check the configuration, then 'p1logger run'.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="p1logger", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"p1logger {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"p1logger.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"p1logger.commands.{name}":
                raise
            continue  # a command not built yet
        module.register(subparsers)
    return parser


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        # Settings are parsed here, lazily: only the chosen command's, so --help and --version never fail.
        args = parser.parse_args(argv)
    except ConfigError as exc:
        command = next((word for word in (sys.argv[1:] if argv is None else argv) if word in COMMANDS), None)
        print(f"p1logger {command}: {exc}" if command else f"p1logger: {exc}", file=sys.stderr)
        return 2
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except (ConfigError, SourceError) as exc:
        # One line that says what to fix: no traceback for a user's mistake.
        print(f"p1logger {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0  # "p1logger dump | head" is fine


if __name__ == "__main__":
    sys.exit(main())
