"""Generated blocks in the documentation: the text between two marker lines, rewritten in place.

The README's settings table and data-model.md's field list are made from the code's tables; each
generator's ``python -m`` entry point uses this to refresh its block.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def replace_block(text: str, begin: str, end: str, body: str) -> str:
    """``text`` with everything between the ``begin`` and ``end`` markers replaced by ``body``."""
    start = text.index(begin) + len(begin)
    return text[:start] + body + text[text.index(end):]


def rewrite_files(names: Sequence[str], begin: str, end: str, body: str) -> int:
    """Refresh the block in each file (only files that change are written); with no file, print the block."""
    if not names:
        sys.stdout.write(body)
        return 0
    for name in names:
        with open(name, encoding="utf-8") as handle:
            before = handle.read()
        after = replace_block(before, begin, end, body)
        if after != before:
            with open(name, "w", encoding="utf-8") as handle:
                handle.write(after)
    return 0
