"""What every line-protocol output shares: batching, a durable spool, retry, its own thread and counters.

    writer thread:  submit(record) -> batcher --(cut: full, or each flush tick)--> spool (durable) --+
    output thread:  oldest spooled batch -> LineWriter.write (one attempt) -> ack | back off <--------+

A durable output (InfluxDB) puts every batch in its spool file the moment it is
cut, and removes it only once the destination has taken it: a ``kill -9`` can
only lose the lines not yet cut, at most one flush interval. The thread sends
the spool oldest-first, one attempt at a time, and backs off while the
destination is down; nothing waits in memory through retries, and a batch that
was acknowledged is never sent again.

When the spool cannot store a batch (a full disk) the batch waits in a bounded
memory queue instead, after the spooled ones, and moves to the spool as soon
as the spool takes writes again: live data keeps flowing, and a drop only
happens when that queue is full (counted, logged at a bounded rate).

A non-durable output (stdout) keeps batches in the memory queue only; its
spool file is created only if something is left over when it closes.

Each output owns one thread that sleeps until the next flush tick or the next
retry; at one telegram a second that is one wake-up a second.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from p1logger.batch import Batcher
from p1logger.contracts import LineWriter, Record, SplitLineWriter, WriteResult
from p1logger.spool import Spool, SpoolUnavailable

logger = logging.getLogger(__name__)

SPOOL_FILE = "spool.db"
# What waits in memory when the spool cannot take it (a full disk) or there is none (stdout): about
# 80 minutes of a three-phase meter's points, some 10 MB.
DEFAULT_MEMORY_MAX_POINTS = 60_000
DEFAULT_RETRY_INITIAL_S = 1.0
DEFAULT_RETRY_MAX_S = 10.0  # also how often a dead destination is asked again
_RECENT_MAX_BATCHES = 8
_EMPTY_TICKS_BEFORE_REST = 3
TICK_CLEARANCE = 0.2  # of the flush interval: how close to a tick lines may arrive before it moves
SPOOL_REOPEN_INTERVAL_S = 60.0  # just-spooled batches kept in memory too, so a healthy drain reads nothing back
DROP_LOG_INTERVAL_S = 60.0
RETRY_AFTER_MAX_S = 60.0  # a server's Retry-After is honoured up to this
CLOSE_ATTEMPTS_AT_END = 3  # tries left for a destination that fails when a file is done


class _Finish:
    """From _wait_for_batch_locked: read the answer to the batch sent with begin() first."""


_FINISH = _Finish()


@dataclass
class OutputCounters:
    """One output's own figures, for health.json and the final summary."""

    points_written: int = 0
    points_rejected: int = 0  # refused for good (dead-lettered)
    points_spooled: int = 0  # waited in the spool: not taken at the first attempt
    points_dropped: int = 0  # lost: memory queue full, spool full, unreadable
    spool_points: int = 0
    memory_points: int = 0
    write_latency_ms: float = 0.0
    state: str = "unknown"  # up, down
    last_write_ok_at: float | None = None
    last_write_error: str = ""
    spool_errors: int = 0


@dataclass
class _Batch:
    lines: list[str]
    spool_id: int | None = None  # None: only in memory
    attempts: int = 0


@dataclass
class LineOutputSettings:
    flush_interval_s: float = 1.0
    batch_max_points: int = 5000
    spool_max_bytes: int = 1 << 30
    memory_max_points: int = DEFAULT_MEMORY_MAX_POINTS
    retry_initial_s: float = DEFAULT_RETRY_INITIAL_S
    retry_max_s: float = DEFAULT_RETRY_MAX_S
    durable: bool = True
    # A file source can wait: submit() then waits while this many batches are queued and the
    # destination answers, instead of reading the whole file into the spool.
    backpressure_batches: int | None = None
    spool_dir: Path | None = None  # None: no spool at all (tests)
    # After a stop's budget, how long close() still waits for a write under way before it keeps the rest.
    close_grace_s: float = 30.0
    on_delivered: Callable[[int], None] | None = field(default=None, repr=False)


class LineOutput:
    """The `Output` contract for anything that takes line protocol through a `LineWriter`."""

    wants_figures = False

    def __init__(
        self,
        name: str,
        writer: LineWriter,
        settings: LineOutputSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.writer = writer
        self.settings = settings
        self.counters = OutputCounters()
        self._clock = clock
        self._wall_clock = wall_clock
        self._cond = threading.Condition()
        self._batcher = Batcher(settings.batch_max_points, settings.flush_interval_s, clock=clock)
        self._memory: collections.deque[_Batch] = collections.deque()
        self._recent: collections.OrderedDict[int, list[str]] = collections.OrderedDict()
        self._spool: Spool | None = None
        self._thread: threading.Thread | None = None
        self._closing = False
        self._close_deadline: float | None = None
        self._close_failures_left = 0
        self._next_tick_at: float | None = None
        self._empty_ticks = 0
        self._waiting = False
        self._retry_at = 0.0
        self._retry_after_until = 0.0
        self._retry_s = settings.retry_initial_s
        # Batches that were not taken at their first attempt (by spool id) -> their points.
        self._waited: dict[int, int] = {}
        self._unlogged_drops = 0
        self._drops_logged_at: float | None = None
        self.failure: BaseException | None = None
        self._reopen_at: float | None = None
        self._in_flight: _Batch | None = None  # the batch the output thread is sending (lock released)
        self._split_writer = writer if isinstance(writer, SplitLineWriter) else None
        self._answered: _Batch | None = None  # sent with begin(); its answer not read yet (still in flight)
        self._answer_due_at = 0.0
        self._flushing = 0  # flush() calls waiting: they want answers now, not at the next tick
        if settings.spool_dir is not None and (settings.durable or (settings.spool_dir / SPOOL_FILE).exists()):
            # A non-durable output opens its spool only to send what an earlier run left in it.
            try:
                self._spool = self._open_spool()
            except SpoolUnavailable as exc:
                # A full disk must not keep the logger from starting: live data goes on from memory.
                logger.error("output %s runs without its spool for now: %s; trying again every %.0f s", name, exc,
                             SPOOL_REOPEN_INTERVAL_S)
                self._reopen_at = clock() + SPOOL_REOPEN_INTERVAL_S

    # ------------------------------------------------------------------ life cycle

    @property
    def spool(self) -> Spool | None:
        return self._spool

    def _open_spool(self) -> Spool:
        assert self.settings.spool_dir is not None
        spool = Spool(self.settings.spool_dir / SPOOL_FILE, max_bytes=self.settings.spool_max_bytes,
                      clock=self._wall_clock)
        self.counters.spool_points = spool.backlog_points
        return spool

    def start(self) -> None:
        self._thread = threading.Thread(target=self._guard, name=f"p1-output-{self.name}", daemon=True)
        self._thread.start()

    def close(self, budget_s: float | None = 10.0) -> None:
        """Cut what is pending, send what is queued while the destination takes it, then stop.

        One more attempt is made whatever the retry timer says; the first
        failure, an empty queue or ``budget_s`` (None: no limit) ends it. What
        is not sent stays in the spool for the next run.
        """
        with self._cond:
            self._cut_locked()
            self._closing = True
            self._close_deadline = None if budget_s is None else self._clock() + budget_s
            # A stop request: one try. The end of a file: a few, with the usual waits between them.
            self._close_failures_left = CLOSE_ATTEMPTS_AT_END if budget_s is None else 1
            self._retry_at = self._retry_after_until  # a server's Retry-After still counts
            self._retry_s = self.settings.retry_initial_s
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(None if budget_s is None else budget_s + self.settings.close_grace_s)
            if self._thread.is_alive():
                # A write that hangs (a stuck pipe, a server that never answers): what waits behind it
                # in memory is kept too. Its spool stays open: the process is about to exit.
                with self._cond:
                    self._keep_leftovers()
                logger.warning("output %s is still busy; what it has not sent stays in its spool", self.name)
                return
        self._in_flight = None  # a thread that died in a write holds nothing any more
        self._keep_leftovers()
        self.writer.close()
        self._log_drops(force=True)
        if self._spool is not None:
            self.counters.spool_points = self._spool.backlog_points
            self.counters.spool_errors = self._spool.storage_errors
            # What waits for the next run waited too, tried or not.
            self.counters.points_spooled += max(0, self._spool.backlog_points - sum(self._waited.values()))
            if self._spool.backlog_points:
                logger.warning("output %s: %d points stay in its spool; the next run sends them", self.name,
                               self._spool.backlog_points)
            self._spool.close()

    def flush(self, budget_s: float | None = None) -> None:
        """Cut what is pending and wait until everything queued is sent, the destination fails, or ``budget_s``."""
        deadline = None if budget_s is None else self._clock() + budget_s
        with self._cond:
            self._cut_locked()
            self._flushing += 1
            self._cond.notify_all()
            try:
                while (self._has_work_locked() and self.counters.state != "down" and not self._closing
                       and self._thread is not None and self._thread.is_alive()):
                    remaining = None if deadline is None else deadline - self._clock()
                    if remaining is not None and remaining <= 0:
                        return
                    self._cond.wait(1.0 if remaining is None else min(remaining, 1.0))
            finally:
                self._flushing -= 1

    # ------------------------------------------------------------------ the writer thread's side

    def submit(self, record: Record) -> None:
        self.submit_lines(record.lines)

    def submit_health(self, snapshot: Mapping[str, object], lines: Sequence[str]) -> None:
        self.submit_lines(lines)

    def observe_raw(self, raw: bytes, valid: bool, received_at_s: float) -> None:
        pass

    def submit_lines(self, lines: Sequence[str]) -> None:
        if not lines:
            return
        with self._cond:
            limit = self.settings.backpressure_batches
            if limit is not None:
                while (not self._closing and self.counters.state != "down" and self._queued_batches_locked() >= limit
                       and self._thread is not None and self._thread.is_alive()):
                    self._cond.wait(1.0)
            if self._closing:
                return
            full = self._batcher.add(lines)
            for batch in full:
                self._enqueue_locked(batch)
            if self._batcher.due() and not self._waiting:
                # The output thread is busy (a slow write): cut here, so nothing waits in memory past its interval.
                # (A waiting thread cuts on its own tick, due about now.)
                self._enqueue_locked(self._batcher.take())
                full = full or [[]]
            tick_at = self._next_tick_at
            moved = False
            if tick_at is not None and abs(tick_at - self._clock()) < TICK_CLEARANCE * self.settings.flush_interval_s:
                # A tick due just as lines arrive would take the lock (and the spool) while the writer
                # hands them over, and one of the two threads would wake twice: move it half a beat
                # earlier (never later, so no line waits longer than the flush interval).
                self._next_tick_at = tick_at - self.settings.flush_interval_s / 2
                moved = True
            if full or moved or self._next_tick_at is None:
                # Only a full batch, or the first lines after a quiet spell, wake the thread: while
                # lines keep coming it wakes by itself once per flush interval.
                self._cond.notify()

    # ------------------------------------------------------------------ cutting and queueing (lock held)

    def _cut_locked(self) -> None:
        lines = self._batcher.take()
        if lines:
            self._enqueue_locked(lines)

    def _enqueue_locked(self, lines: list[str]) -> None:
        if self._spool is not None and self.settings.durable and self._spool_memory_locked():
            # Spooled the moment it is cut: from here until it is acknowledged, a kill loses nothing.
            batch_id = self._spool.put(lines, drop_on_failure=False)
            self.counters.points_dropped += self._take_spool_drops()
            if batch_id is not None:
                self._remember_locked(batch_id, lines)
                return
        while self._memory and self.counters.memory_points + len(lines) > self.settings.memory_max_points:
            dropped = self._memory.popleft()
            self.counters.memory_points -= len(dropped.lines)
            self._drop(len(dropped.lines))
        self._memory.append(_Batch(lines))
        self.counters.memory_points += len(lines)

    def _remember_locked(self, batch_id: int, lines: list[str]) -> None:
        assert self._spool is not None
        self._recent[batch_id] = lines
        while len(self._recent) > _RECENT_MAX_BATCHES:
            self._recent.popitem(last=False)
        self.counters.spool_points = self._spool.backlog_points

    def _spool_memory_locked(self) -> bool:
        """Move what waited in memory for a full disk into the spool, oldest first; True once none is left.

        Otherwise, through a long outage, it would stay where a kill loses it and a full queue drops it,
        however much room the spool has again. The batch being sent stays (it would be sent twice); the next
        cut tries again, so the order holds.
        """
        assert self._spool is not None
        while self._memory:
            batch = self._memory[0]
            if batch is self._in_flight:
                return False
            batch_id = self._spool.put(batch.lines, drop_on_failure=False)
            self.counters.points_dropped += self._take_spool_drops()
            if batch_id is None:
                return False
            self._memory.popleft()
            self.counters.memory_points -= len(batch.lines)
            waited = self._waited.pop(self._key(batch), None)
            if waited is not None:
                self._waited[batch_id] = waited
            self._remember_locked(batch_id, batch.lines)
        return True

    def _take_spool_drops(self) -> int:
        assert self._spool is not None
        dropped = self._spool.dropped_points - getattr(self, "_spool_dropped_seen", 0)
        self._spool_dropped_seen = self._spool.dropped_points
        if dropped and self._waited:
            # Batches a full spool dropped wait no more: forget them, or a long outage grows this without bound.
            evicted = self._spool.evicted_up_to
            for key in [key for key in self._waited if 0 < key <= evicted]:
                del self._waited[key]
        return dropped

    def _drop(self, points: int) -> None:
        self.counters.points_dropped += points
        self._unlogged_drops += points
        self._log_drops()

    def _log_drops(self, force: bool = False) -> None:
        if not self._unlogged_drops:
            return
        now = self._clock()
        if force or self._drops_logged_at is None or now - self._drops_logged_at >= DROP_LOG_INTERVAL_S:
            logger.warning("output %s dropped %d points: its queue is full (%d dropped since start)",
                           self.name, self._unlogged_drops, self.counters.points_dropped)
            self._unlogged_drops = 0
            self._drops_logged_at = now

    # ------------------------------------------------------------------ the output thread

    def _guard(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # noqa: BLE001 - logged loudly; the pipeline stops the process
            logger.critical("output %s failed", self.name, exc_info=True)
            self.failure = exc

    def _loop(self) -> None:
        while True:
            answered: _Batch | None = None
            split = False
            with self._cond:
                batch = self._wait_for_batch_locked()
                if isinstance(batch, _Finish):
                    answered = self._answered
                    self._answered = None
                else:
                    self._in_flight = batch
                    # A live second's batch, nothing behind it: its answer is read at the next flush.
                    split = (self._split_writer is not None and batch is not None and not self._closing
                             and not self._flushing and self._queued_batches_locked() <= 1
                             and self.counters.state == "up")
            if isinstance(batch, _Finish):
                assert answered is not None and self._split_writer is not None
                self._settle(answered, self._split_writer.finish())
                continue
            if batch is None:
                return
            if split:
                self._begin(batch)
            else:
                self._send(batch)

    def _begin(self, batch: _Batch) -> None:
        assert self._split_writer is not None
        self._split_writer.begin(batch.lines)
        with self._cond:
            self._answered = batch
            self._answer_due_at = self._clock() + self.settings.flush_interval_s

    def _wait_for_batch_locked(self) -> _Batch | _Finish | None:
        """The next batch to send, once it is time; _FINISH to read a sent batch's answer; None to stop."""
        while True:
            now = self._clock()
            if self._reopen_at is not None and now >= self._reopen_at:
                self._reopen_spool_locked(now)
            self._tick_locked(now)
            if self._answered is not None:
                due_at = min(self._answer_due_at, self._next_tick_at or self._answer_due_at)
                if (self._closing or self._flushing or now >= due_at
                        or self._queued_batches_locked() > 1):
                    return _FINISH
                self._waiting = True
                try:
                    self._cond.wait(due_at - now)
                finally:
                    self._waiting = False
                continue
            has_work = self._has_work_locked()
            if self._closing:
                deadline = self._close_deadline
                if self._close_failures_left <= 0 or not has_work or (deadline is not None and now >= deadline):
                    return None
                if now >= self._retry_at:
                    return self._next_batch_locked()
            elif has_work and now >= self._retry_at:
                batch = self._next_batch_locked()
                if batch is not None:
                    return batch
                continue
            wake_at = [t for t in (self._next_tick_at, self._retry_at if has_work else None,
                                   self._close_deadline if self._closing else None, self._reopen_at)
                       if t is not None]
            self._waiting = True
            try:
                self._cond.wait(max(0.0, min(wake_at) - now) if wake_at else None)
            finally:
                self._waiting = False

    def _reopen_spool_locked(self, now: float) -> None:
        try:
            self._spool = self._open_spool()
        except SpoolUnavailable:
            self._reopen_at = now + SPOOL_REOPEN_INTERVAL_S
            return
        self._reopen_at = None
        logger.info("output %s has its spool again", self.name)

    def _tick_locked(self, now: float) -> None:
        """Cut the pending lines once per flush interval while lines keep coming.

        The ticks go on through a few empty intervals, so a meter that sends as
        often as the flush interval (and a little off its phase) costs one
        wake-up per interval, not a tick plus a wake-up for each new telegram.
        """
        if self._next_tick_at is not None and now >= self._next_tick_at:
            if self._batcher.pending_points:
                self._cut_locked()
                self._empty_ticks = 0
            else:
                self._empty_ticks += 1
            if self._empty_ticks < _EMPTY_TICKS_BEFORE_REST:
                # On a fixed beat, not from the (late) moment this tick ran, so that it stays clear of
                # the meter's telegrams, which submit_lines keeps it away from.
                interval_s = self.settings.flush_interval_s
                self._next_tick_at += interval_s
                if self._next_tick_at <= now:
                    self._next_tick_at = now + interval_s
            else:
                self._next_tick_at = None
        if self._next_tick_at is None:
            until_due = self._batcher.seconds_until_due()
            if until_due is not None:
                # Half an interval early: a meter that sends once per interval then never arrives
                # just as a tick fires (both would wake to take the same lock), and no line waits longer.
                self._next_tick_at = now + until_due / 2
                self._empty_ticks = 0

    def _queued_batches_locked(self) -> int:
        return len(self._memory) + (self._spool.backlog_batches if self._spool is not None else 0)

    def _has_work_locked(self) -> bool:
        return bool(self._memory) or (self._spool is not None and self._spool.backlog_batches > 0)

    def _next_batch_locked(self) -> _Batch | None:
        spool = self._spool
        if spool is not None and spool.backlog_batches:
            # Batches evicted by a full spool are its oldest: forget them here too.
            while len(self._recent) > spool.backlog_batches:
                self._recent.popitem(last=False)
            if self._recent and len(self._recent) == spool.backlog_batches:
                batch_id, lines = next(iter(self._recent.items()))
                return _Batch(lines, batch_id)
            before = spool.dropped_points
            stored = spool.oldest()
            self.counters.points_dropped += spool.dropped_points - before
            self._spool_dropped_seen = spool.dropped_points
            if stored is not None:
                return _Batch(stored.lines, stored.id)
            if spool.backlog_batches:
                # Unreadable for now (a storage error): try again after a pause.
                self._retry_at = self._clock() + self.settings.retry_max_s
                return None
        if self._memory:
            return self._memory[0]
        return None

    def _send(self, batch: _Batch) -> None:
        self._settle(batch, self.writer.write(batch.lines, max_attempts=1))

    def _settle(self, batch: _Batch, result: WriteResult) -> None:
        with self._cond:
            self._in_flight = None
            self._account(result, batch)
            if result.delivered or result.kept_lines != tuple(batch.lines):
                self._done(batch)
                if result.kept_lines and not result.delivered:
                    # Part of a split batch was stored; the rest waits as a batch of its own.
                    self._enqueue_locked(list(result.kept_lines))
            self._cond.notify_all()  # a submit() held back by backpressure may go on
            if not result.delivered:
                if self._closing:
                    self._close_failures_left -= 1
                wait_s = self._retry_s
                if result.retry_after_s is not None:
                    wait_s = min(result.retry_after_s, RETRY_AFTER_MAX_S)
                    self._retry_after_until = self._clock() + wait_s
                self._retry_at = self._clock() + wait_s
                self._retry_s = min(self._retry_s * 2, self.settings.retry_max_s)
            else:
                self._retry_s = self.settings.retry_initial_s
                self._retry_at = 0.0

    @staticmethod
    def _key(batch: _Batch) -> int:
        return batch.spool_id if batch.spool_id is not None else -id(batch)

    def _done(self, batch: _Batch) -> None:
        self._waited.pop(self._key(batch), None)
        if batch.spool_id is not None:
            assert self._spool is not None
            self._recent.pop(batch.spool_id, None)
            self._spool.ack(batch.spool_id)
            self.counters.spool_points = self._spool.backlog_points
            self.counters.spool_errors = self._spool.storage_errors
        elif self._memory and self._memory[0] is batch:
            self._memory.popleft()
            self.counters.memory_points -= len(batch.lines)

    def _account(self, result: WriteResult, batch: _Batch) -> None:
        counters = self.counters
        counters.points_written += result.points_written
        counters.points_rejected += result.points_rejected
        if result.delivered:
            counters.write_latency_ms = result.latency_ms
            counters.last_write_ok_at = self._wall_clock()
            if counters.state == "down":
                logger.info("output %s takes writes again; sending its %d waiting points oldest first", self.name,
                            self.backlog_points)
            counters.state = "up"
            if self.settings.on_delivered is not None:
                self.settings.on_delivered(result.points_written + result.points_rejected)
        else:
            key = self._key(batch)
            if key not in self._waited:
                self._waited[key] = len(batch.lines)
                counters.points_spooled += len(batch.lines)
            if counters.state != "down":
                where = "in its spool" if self._spool is not None else "in memory"
                logger.warning("output %s unavailable (%s); keeping data %s", self.name, result.message, where)
            counters.state = "down"
            counters.last_write_error = result.message
        batch.attempts += 1

    def _keep_leftovers(self) -> None:
        """What is left in memory at the end goes to the spool (created now if there was none).

        The batch a hung write holds stays with it: kept as well, it would be sent twice.
        """
        in_flight = next((batch for batch in self._memory if batch is self._in_flight), None)
        leftovers = [batch for batch in self._memory if batch is not in_flight]
        if not leftovers:
            return
        points = sum(len(batch.lines) for batch in leftovers)
        if self._spool is None and self.settings.spool_dir is not None:
            try:
                self._spool = self._open_spool()
            except Exception as exc:  # noqa: BLE001 - reported, and the points counted as dropped
                logger.error("output %s cannot keep %d points for the next run: %s", self.name, points, exc)
        if self._spool is None:
            self._drop(points)
        else:
            before = self._spool.dropped_points
            for batch in leftovers:
                self._spool.put(batch.lines)
            self.counters.points_dropped += self._spool.dropped_points - before
            self.counters.spool_points = self._spool.backlog_points
            logger.info("output %s: %d unsent points wait in %s for the next run", self.name, points,
                        self._spool.path)
        self._memory.clear()
        if in_flight is not None:
            self._memory.append(in_flight)
        self.counters.memory_points = 0 if in_flight is None else len(in_flight.lines)

    # ------------------------------------------------------------------ health

    def health(self) -> dict[str, object]:
        counters = self.counters
        if self._spool is not None:
            counters.spool_points = self._spool.backlog_points
            counters.spool_errors = self._spool.storage_errors
        return {key: getattr(counters, key) for key in counters.__dataclass_fields__}

    @property
    def backlog_points(self) -> int:
        return self.counters.spool_points + self.counters.memory_points

