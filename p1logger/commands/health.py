"""``p1logger health``: is the running logger healthy?  Exit 0 if so (Docker HEALTHCHECK)."""

from __future__ import annotations

import argparse
from pathlib import Path

from p1logger import settings
from p1logger.health import check_state


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "health",
        help="exit 0 when the running logger gets fresh telegrams and its writes succeed",
        description="Reads the health state that 'p1logger run' keeps in its spool directory. Exit 0 when a valid "
        "telegram arrived recently and writes succeed (or the database has been down for less than --max-age-s); "
        "exit 1 otherwise, with the reason on one line.",
    )
    settings.add(parser, "P1_SPOOL_DIR", "P1_HEALTH_MAX_AGE_S")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    ok, message = check_state(Path(args.spool_dir), args.max_age_s)
    print(message)
    return 0 if ok else 1
