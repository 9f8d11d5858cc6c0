#!/usr/bin/env python3
"""Write the OBIS table of docs/telegram-format.md from p1logger.obis.OBIS_TABLE.

    python tools/gen_obis_doc.py          # rewrite the table in place
    python tools/gen_obis_doc.py --check  # exit 1 when the document is out of date

Only the lines between the ``obis-table:start`` and ``obis-table:end`` markers
are replaced; the prose around them is written by hand.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from p1logger.obis import OBIS_TABLE

DOC = Path(__file__).resolve().parent.parent / "docs" / "telegram-format.md"
START = "<!-- obis-table:start -->"
END = "<!-- obis-table:end -->"


def table() -> str:
    lines = ["| OBIS | name | description | unit |", "|---|---|---|---|"]
    for row in OBIS_TABLE:
        description = row.description.replace("|", "\\|")
        lines.append(f"| `{row.obis}` | `{row.name}` | {description} | {row.unit or ''} |")
    return "\n".join(lines)


def render(document: str) -> str:
    try:
        head, rest = document.split(START, 1)
        _, tail = rest.split(END, 1)
    except ValueError:
        raise SystemExit(f"{DOC}: the markers {START} and {END} are missing") from None
    return f"{head}{START}\n{table()}\n{END}{tail}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report whether the document is up to date")
    args = parser.parse_args()
    current = DOC.read_text(encoding="utf-8")
    updated = render(current)
    if args.check:
        if updated != current:
            print(f"{DOC} is out of date: run python tools/gen_obis_doc.py", file=sys.stderr)
            return 1
        return 0
    if updated != current:
        DOC.write_text(updated, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
