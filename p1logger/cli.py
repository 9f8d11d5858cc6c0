"""The ``p1logger`` command line: one subcommand per job."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from p1logger import __version__
from p1logger.errors import ConfigError, SourceError

# The only wiring of subcommands: name -> (module, the one line shown by --help).  A module is imported only
# when its command runs (or its own --help is asked for): the Docker HEALTHCHECK runs `p1logger health` every
# 30 s, and importing the whole engine for it would cost more CPU than the logger spends in that time.
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("p1logger.commands.run", "read the meter and store every reading in InfluxDB (the main job)"),
    "dump": ("p1logger.commands.dump", "print each telegram the meter sends, decoded"),
    "doctor": ("p1logger.commands.doctor", "check the configuration, the serial port and InfluxDB, and say what to fix"),
    "health": ("p1logger.commands.health",
               "exit 0 when the running logger gets fresh telegrams and its writes succeed"),
    "simulate": ("p1logger.commands.simulate",
                 "act as a smart meter: realistic telegrams on stdout, a TCP port or a pseudo-terminal"),
    "capacity": ("p1logger.commands.capacity",
                 "show the Belgian capacity tariff: this quarter-hour, the month's peak, the 12-month mean, the cost"),
    "cost": ("p1logger.commands.cost",
             "what the energy in a recording (or a live meter so far) cost, per day and in total"),
    "prices": ("p1logger.commands.prices", "day-ahead prices for a dynamic contract"),
    "record": ("p1logger.commands.record",
               "keep every telegram as received in a file or daily archive, for replay or bug reports"),
    "replay": ("p1logger.commands.replay",
               "store archived or recorded telegrams in InfluxDB (backfill); safe to repeat"),
}

DESCRIPTION = """\
Read DSMR P1 telegrams from a smart meter, check them, decode them and store
them in InfluxDB, without ever losing a reading.

Every option can also be set with the environment variable shown in [env ...].
Start with 'p1logger dump /dev/ttyUSB0' to see what your meter sends, then
'p1logger doctor' to check the configuration, then 'p1logger run'.
"""


class _Subparsers:
    """What a command module's ``register`` sees: add_parser with the help line from COMMANDS."""

    def __init__(self, action: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
        self._action = action

    def add_parser(self, name: str, **kwargs: object) -> argparse.ArgumentParser:
        kwargs["help"] = COMMANDS[name][1]  # one source for the listing, whether or not the module is loaded
        return self._action.add_parser(name, **kwargs)  # type: ignore[no-any-return, arg-type]


def build_parser(load: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser with the commands in ``load`` fully defined (all of them by default).

    The others are listed by name and help line only, so that ``p1logger --help`` lists every command
    without importing any.
    """
    wanted = COMMANDS if load is None else load
    parser = argparse.ArgumentParser(
        prog="p1logger", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"p1logger {__version__}")
    action = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers = _Subparsers(action)
    for name, (module_name, help_line) in COMMANDS.items():
        if name in wanted:
            importlib.import_module(module_name).register(subparsers)
        else:
            action.add_parser(name, help=help_line)
    return parser


def command_in(argv: Sequence[str]) -> str | None:
    """The subcommand named on the command line: the first word that is not an option."""
    for word in argv:
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def setup_logging(level: str) -> None:
    import logging  # here, not at the top: health and --help never log

    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    command = command_in(words)
    parser = build_parser(load=() if command is None else (command,))
    try:
        # Settings are parsed here, lazily: only the chosen command's, so --help and --version never fail.
        args = parser.parse_args(words)
    except ConfigError as exc:
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
