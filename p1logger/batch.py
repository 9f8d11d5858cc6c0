"""Group line-protocol lines into write batches, by size and by age.

The writer thread feeds every line it makes into a :class:`Batcher` and writes
whatever comes out. A batch is released either when it is full
(``max_points`` lines) or when its oldest line has waited
``flush_interval_s``, so a busy meter gets large efficient writes and a quiet
one still reaches the database within about a second.

Pure logic: no I/O, no threads, no sleeping. Time comes from an injected
``clock`` so tests can drive it exactly.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from p1logger.errors import ConfigError

# InfluxDB's own guidance is batches of about 5,000 lines; larger requests
# only add latency and memory on a small board.
DEFAULT_MAX_POINTS = 5000
DEFAULT_FLUSH_INTERVAL_S = 1.0


class Batcher:
    """Collects lines and hands them back in batches of at most ``max_points``.

    At most ``max_points - 1`` lines are ever held between calls: as soon as a
    batch is full it is returned by :meth:`add`, so the batcher's memory is
    bounded by construction. Line order is preserved across batches.
    """

    def __init__(
        self,
        max_points: int = DEFAULT_MAX_POINTS,
        flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 1:
            raise ConfigError(f"batch size must be a whole number of points >= 1, got {max_points!r}")
        if not flush_interval_s >= 0:  # also rejects NaN
            raise ConfigError(f"flush interval must be >= 0 seconds, got {flush_interval_s!r}")
        self.max_points = max_points
        self.flush_interval_s = float(flush_interval_s)
        self._clock = clock
        self._pending: list[str] = []
        # Clock reading when the oldest pending line arrived; None when empty.
        self._oldest_at: float | None = None

    @property
    def pending_points(self) -> int:
        """Lines held that have not been returned in a batch yet."""
        return len(self._pending)

    def add(self, lines: Sequence[str]) -> list[list[str]]:
        """Take ``lines``; return the batches that became full, oldest first.

        Usually returns ``[]``. An ``add`` larger than ``max_points`` is split
        into several full batches; whatever does not fill a batch stays
        pending until more lines arrive or it becomes :meth:`due`.
        """
        if isinstance(lines, str):
            # A bare string is a Sequence[str] of characters: almost certainly
            # a caller that forgot to wrap one line in a list.
            raise TypeError("Batcher.add() takes a sequence of lines, not a single str")
        if not lines:
            return []
        if not self._pending:
            self._oldest_at = self._clock()
        self._pending.extend(lines)
        if len(self._pending) < self.max_points:
            return []

        full: list[list[str]] = []
        start = 0
        while len(self._pending) - start >= self.max_points:
            full.append(self._pending[start : start + self.max_points])
            start += self.max_points
        self._pending = self._pending[start:]
        # Every old line went into the first full batch, so the lines still
        # pending all arrived in this call: their wait starts now.
        self._oldest_at = self._clock() if self._pending else None
        return full

    def due(self) -> bool:
        """True when the oldest pending line has waited ``flush_interval_s``."""
        wait_s = self.seconds_until_due()
        return wait_s is not None and wait_s <= 0.0

    def seconds_until_due(self) -> float | None:
        """Seconds until :meth:`due` becomes true (0.0 when it already is).

        ``None`` when nothing is pending, so the writer can block on its queue
        with no timeout.
        """
        if self._oldest_at is None:
            return None
        return max(0.0, self._oldest_at + self.flush_interval_s - self._clock())

    def take(self) -> list[str]:
        """Return every pending line (possibly none) and restart the timer."""
        taken = self._pending
        self._pending = []
        self._oldest_at = None
        return taken
