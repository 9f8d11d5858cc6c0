"""The running logger: a reader thread and a writer thread joined by a bounded queue.

reader thread:  source -> framing -> crc -> decode -> queue
writer thread:  queue -> points -> batches -> sink (InfluxDB), or the spool when
                the database cannot take them; the spool drains oldest-first
                whenever the database answers again.

Neither thread may die silently: an unexpected error is logged with its
traceback and stops the process with a non-zero status, so systemd or Docker
restart it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence

from p1logger.batch import Batcher
from p1logger.decode import Telegram
from p1logger.errors import SourceError
from p1logger.health import Health
from p1logger.points import PointBuilder, health_line
from p1logger.reader import RejectSummary, TelegramReader
from p1logger.sink import WriteKind, WriteResult
from p1logger.source import GARBAGE_HINT, GARBAGE_LIMIT_BYTES, FileSource, Source
from p1logger.spool import Spool

logger = logging.getLogger(__name__)

_END = None  # queue marker: the source is exhausted


class Sink(Protocol):
    def write(self, lines: Sequence[str], max_attempts: int | None = None) -> WriteResult: ...

    def close(self) -> None: ...


class LineBuilder(Protocol):
    """Anything that adds points for a telegram (the capacity tracker, for one)."""

    def build(self, telegram: Telegram, received_at_s: float) -> list[str]: ...


RawObserver = Callable[[bytes, bool], None]  # (raw telegram bytes, valid?)


@dataclass
class PipelineSettings:
    queue_max_telegrams: int = 3600
    max_points: int = 5000
    flush_interval_s: float = 1.0
    watchdog_s: float = 30.0
    health_interval_s: float = 10.0
    reject_summary_interval_s: float = 60.0
    reconnect_initial_s: float = 1.0
    reconnect_max_s: float = 60.0
    # How often to try the database again while it is down (new data goes to the spool meanwhile).
    probe_interval_s: float = 10.0
    shutdown_budget_s: float = 10.0
    instance: str = "p1logger"
    state_dir: Path | None = None


@dataclass
class Pipeline:
    """Wires the stages together and runs them in two threads."""

    open_source: Callable[[], Source]
    reader: TelegramReader
    builder: PointBuilder
    sink: Sink
    spool: Spool
    settings: PipelineSettings = field(default_factory=PipelineSettings)
    extra_builders: list[LineBuilder] = field(default_factory=list)
    raw_observers: list[RawObserver] = field(default_factory=list)
    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] | None = None
    stop_event: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.health = Health(clock=self.wall_clock)
        self.queue: queue.Queue[tuple[Telegram, float] | None] = queue.Queue(self.settings.queue_max_telegrams)
        self.batcher = Batcher(self.settings.max_points, self.settings.flush_interval_s, clock=self.clock)
        self.failure: BaseException | None = None
        self._writer_done = threading.Event()
        self._database_down = False
        self._next_probe_at = 0.0
        self._next_health_at = 0.0
        self._reject_summary = RejectSummary(self.settings.reject_summary_interval_s, clock=self.clock)
        if self.sleep is None:
            self.sleep = self._sleep_until_stopped

    # ------------------------------------------------------------------ control

    def _sleep_until_stopped(self, seconds: float) -> None:
        """A backoff that ends at once on shutdown."""
        self.stop_event.wait(seconds)

    def start(self) -> None:
        self._reader_thread = threading.Thread(target=self._guard, args=(self._read_loop,), name="p1-reader", daemon=True)
        self._writer_thread = threading.Thread(target=self._guard, args=(self._write_loop,), name="p1-writer", daemon=True)
        self._reader_thread.start()
        self._writer_thread.start()

    def stop(self) -> None:
        """Ask both threads to finish; the writer flushes or spools what it holds."""
        self.stop_event.set()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait until the writer is done (file fully written, or stopped). True when done."""
        return self._writer_done.wait(timeout_s)

    def join(self, timeout_s: float | None = None) -> None:
        for thread in (getattr(self, "_reader_thread", None), getattr(self, "_writer_thread", None)):
            if thread is not None:
                thread.join(timeout_s)

    def _guard(self, loop: Callable[[], None]) -> None:
        try:
            loop()
        except BaseException as exc:  # noqa: BLE001 - a dying thread must stop the process loudly
            logger.critical("%s thread failed; stopping so that a supervisor restarts p1logger",
                            threading.current_thread().name, exc_info=True)
            self.failure = exc
            self.stop_event.set()
        finally:
            # Only the writer says it is done, after any failure is recorded: when the
            # reader dies, its end marker still reaches the writer, which then writes or
            # spools what it holds before the process exits.
            if loop == self._write_loop:
                self._writer_done.set()

    # ------------------------------------------------------------------ reader

    def _read_loop(self) -> None:
        source: Source | None = None
        delay_s = self.settings.reconnect_initial_s
        last_valid_at = self.clock()
        bytes_since_valid = 0
        garbage_warned = False
        assert self.sleep is not None
        try:
            while not self.stop_event.is_set():
                if source is None:
                    try:
                        source = self.open_source()
                    except SourceError as exc:
                        self._source_state(f"unavailable: {exc}", logging.ERROR)
                        self.sleep(delay_s)
                        delay_s = min(delay_s * 2, self.settings.reconnect_max_s)
                        continue
                    self._source_state(f"reading {source.description}", logging.INFO)
                    last_valid_at = self.clock()
                try:
                    data = source.read()
                except EOFError:
                    logger.info("end of %s", source.description)
                    break
                except SourceError as exc:
                    self._source_state(f"lost: {exc}", logging.WARNING)
                    source.close()
                    source = None
                    self.reader.reset()
                    # Back off as after a failed open: a port that opens and then fails at
                    # once (a busy ser2net, a flapping USB adapter) must not spin the CPU.
                    self.sleep(delay_s)
                    delay_s = min(delay_s * 2, self.settings.reconnect_max_s)
                    continue
                received_at = self.wall_clock()
                bytes_since_valid += len(data)
                for item in self.reader.feed(data):
                    if isinstance(item, Telegram):
                        last_valid_at = self.clock()
                        # Only a working source earns a quick reconnect next time, not a mere open.
                        delay_s = self.settings.reconnect_initial_s
                        bytes_since_valid = 0
                        garbage_warned = False
                        self.health.telegrams_ok += 1
                        self.health.last_telegram_at = received_at
                        self._notify(item.raw, True)
                        self._enqueue(item, received_at, blocking=isinstance(source, FileSource))
                    else:
                        self.health.telegrams_rejected += 1
                        self._reject_summary.add(item)
                        self._notify(item.raw, False)
                self._reject_summary.maybe_log()
                if not garbage_warned and bytes_since_valid > GARBAGE_LIMIT_BYTES:
                    # With a wrong key the reader has said so; a baud-rate hint would mislead.
                    if not self.reader.stats.rejected["decrypt"]:
                        logger.warning("%s: %s", source.description, GARBAGE_HINT)
                    garbage_warned = True
                if self.clock() - last_valid_at > self.settings.watchdog_s and not isinstance(source, FileSource):
                    self._source_state(
                        f"no valid telegram for {self.settings.watchdog_s:.0f} s on {source.description}; reopening",
                        logging.WARNING,
                    )
                    source.close()
                    source = None
                    self.reader.reset()
        finally:
            if source is not None:
                source.close()
            self._reject_summary.flush()
            # The writer flushes and finishes after this marker; never block on a dead writer.
            while not self._writer_done.is_set():
                try:
                    self.queue.put(_END, timeout=0.5)
                    break
                except queue.Full:
                    continue

    def _enqueue(self, telegram: Telegram, received_at: float, blocking: bool) -> None:
        if blocking:
            # A file can wait for the writer; nothing is lost by waiting.
            while not self.stop_event.is_set():
                try:
                    self.queue.put((telegram, received_at), timeout=0.5)
                    return
                except queue.Full:
                    continue
            return
        try:
            self.queue.put_nowait((telegram, received_at))
        except queue.Full:
            # A live meter cannot be paused: make room by dropping the oldest telegram, counted.
            try:
                self.queue.get_nowait()
                self.health.telegrams_dropped += 1
            except queue.Empty:
                pass
            self.queue.put_nowait((telegram, received_at))

    def _notify(self, raw: bytes, valid: bool) -> None:
        for observer in self.raw_observers:
            try:
                observer(raw, valid)
            except Exception:  # noqa: BLE001 - an archive or client problem must not stop reading
                logger.exception("raw telegram observer failed")

    def _source_state(self, state: str, level: int) -> None:
        # Logged once per change of state, however long an outage lasts.
        if state != self.health.source_state:
            logger.log(level, "source %s", state)
            self.health.source_state = state

    # ------------------------------------------------------------------ writer

    def _write_loop(self) -> None:
        while True:
            timeout = self._next_wakeup()
            try:
                item = self.queue.get(timeout=timeout)
            except queue.Empty:
                item = ()  # type: ignore[assignment]
            if item is _END:
                break
            if item:
                telegram, received_at = item  # type: ignore[misc]
                self._add_lines(self.builder.build(telegram, received_at))
                for extra in self.extra_builders:
                    self._add_lines(extra.build(telegram, received_at))
            self.health.queue_depth = self.queue.qsize()
            if self.batcher.due():
                self._write(self.batcher.take())
            self._health_tick()
            if self.queue.empty():
                self._drain_one()
        self._finish()

    def _next_wakeup(self) -> float:
        due = self.batcher.seconds_until_due()
        until_health = max(0.0, self._next_health_at - self.clock())
        candidates = [until_health, 1.0]
        if due is not None:
            candidates.append(due)
        if self.spool.backlog_batches and not self._database_down:
            candidates.append(0.0)
        return max(0.0, min(candidates))

    def _add_lines(self, lines: list[str]) -> None:
        for batch in self.batcher.add(lines):
            self._write(batch)

    def _write(self, lines: list[str]) -> None:
        if not lines:
            return
        if self._database_down and self.clock() < self._next_probe_at:
            # While the database is down new data goes straight to the spool, so
            # the queue never backs up behind retries.
            self._to_spool(lines)
            return
        result = self.sink.write(lines, max_attempts=self._attempts())
        self._account(result)
        if result.kept_lines:
            self._to_spool(list(result.kept_lines))

    def _attempts(self) -> int | None:
        """One attempt per probe while the database is down: a batch must not sit in
        memory through a whole retry sequence, where a kill -9 would lose it."""
        return 1 if self._database_down else None

    def _account(self, result: WriteResult) -> None:
        self.health.points_written += result.points_written
        self.health.points_dropped += result.points_rejected
        if result.kind in (WriteKind.OK, WriteKind.REJECTED):
            self.health.write_latency_ms = result.latency_ms
            self.health.last_write_ok_at = self.wall_clock()
            if self._database_down:
                logger.info("database answers again; draining %d spooled points", self.spool.backlog_points)
            self._database_down = False
            self.health.database_state = "up"
        else:
            if not self._database_down:
                logger.warning("database unavailable (%s); keeping data in the spool", result.message)
            self._database_down = True
            self._next_probe_at = self.clock() + self.settings.probe_interval_s
            self.health.database_state = "down"
            self.health.last_write_error = result.message

    def _to_spool(self, lines: list[str]) -> None:
        dropped_before = self.spool.dropped_points
        self.spool.put(lines)
        self.health.points_spooled += len(lines)
        self.health.points_dropped += self.spool.dropped_points - dropped_before
        self.health.spool_points = self.spool.backlog_points

    def _drain_one(self) -> bool:
        """Send the oldest spooled batch if the database is (probably) up.  True when one was sent."""
        if not self.spool.backlog_batches:
            return False
        if self._database_down and self.clock() < self._next_probe_at:
            return False
        dropped_before = self.spool.dropped_points
        batch = self.spool.oldest()
        # A batch the spool could not read back is dropped (and counted) by oldest().
        self.health.points_dropped += self.spool.dropped_points - dropped_before
        if batch is None:
            return False
        result = self.sink.write(batch.lines, max_attempts=self._attempts())
        self._account(result)
        if result.kind in (WriteKind.OK, WriteKind.REJECTED):
            self.spool.ack(batch.id)
            self.health.spool_points = self.spool.backlog_points
            return True
        return False

    def _health_tick(self, force: bool = False) -> None:
        now = self.clock()
        if not force and now < self._next_health_at:
            return
        self._next_health_at = now + self.settings.health_interval_s
        self.health.spool_points = self.spool.backlog_points
        self._add_lines([
            health_line(
                self.settings.instance,
                int(self.wall_clock()),
                telegrams_ok=self.health.telegrams_ok,
                telegrams_rejected=self.health.telegrams_rejected,
                queue_depth=self.queue.qsize(),
                spool_points=self.spool.backlog_points,
                points_dropped=self.health.points_dropped,
                telegrams_dropped=self.health.telegrams_dropped,
                write_latency_ms=self.health.write_latency_ms,
                last_telegram_age_s=round(self.health.last_telegram_age_s(), 3),
            )
        ])
        if self.settings.state_dir is not None:
            try:
                self.health.write_state(self.settings.state_dir)
            except OSError as exc:
                logger.warning("cannot write the health state in %s: %s", self.settings.state_dir, exc)

    def _finish(self) -> None:
        """Write or spool everything still in memory, then drain the spool if the database is up."""
        self._health_tick(force=True)
        pending = self.batcher.take()
        if pending:
            if self.stop_event.is_set() and self._database_down:
                self._to_spool(pending)
            else:
                self._write(pending)
        if not self.stop_event.is_set():
            # A file source is done: try the database once more, whatever the
            # probe timer says, and empty the spool while it answers.
            self._next_probe_at = 0.0
            while self.spool.backlog_batches and not self.stop_event.is_set():
                if not self._drain_one():
                    break
            if self.spool.backlog_points:
                logger.warning("%d points stay in the spool; the next run sends them", self.spool.backlog_points)
        self.health.spool_points = self.spool.backlog_points
        if self.settings.state_dir is not None:
            try:
                self.health.write_state(self.settings.state_dir)
            except OSError:
                pass
