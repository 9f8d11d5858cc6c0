"""The running logger: a reader thread and a writer thread joined by a bounded queue, feeding the outputs.

    reader thread:  source -> framing -> crc -> decode --(bounded queue)--> ...
                    (every framed telegram, valid or not, also to outputs' observe_raw: archive, fan-out)
    writer thread:  ... -> RecordMaker (every builder, once) -> Record -> each output's submit()
    each output:    its own thread, batching, retry and spool (outputs/lines.py), so none delays another

``RecordMaker`` is the one place a telegram becomes line protocol; ``replay``
uses it too, so both store the same series and fields.

Neither thread may die silently: an unexpected error is logged with its
traceback and stops the process with a non-zero status, so systemd or Docker
restart it.
"""

from __future__ import annotations

import argparse
import logging
import queue
import select
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p1logger import config
from p1logger.builders import create_builders
from p1logger.contracts import Builder, Figures, Output, Record, RunContext, Source
from p1logger.decode import Telegram
from p1logger.errors import ConfigError, SourceError
from p1logger.health import Health
from p1logger.inputs import GARBAGE_LIMIT_BYTES, NO_SOURCE, is_live, no_valid_telegram_hint, open_source
from p1logger.outputs import create_outputs
from p1logger.points import PointBuilder, health_line
from p1logger.reader import RejectSummary, TelegramReader
from p1logger.timestamps import TimestampParser

logger = logging.getLogger(__name__)

_END = None  # queue marker: the source is exhausted
HEALTH_SLACK_S = 2.0  # longer than a DSMR 5 meter's beat, far shorter than the health interval
# A paced source says when its next read comes; the writer wakes this long after it, by when the reader has
# handed the telegram over and gone back to sleep (it takes a few ms).
HANDOFF_SLACK_S = 0.03
# The reader rings anyway when it hands over later than this before the writer wakes by itself.
HANDOFF_MARGIN_S = 0.01
NOISE_LOG_INTERVAL_S = 60.0


class RecordMaker:
    """Runs every builder once per telegram and packs the result as a `Record` for the outputs."""

    def __init__(self, builders: Sequence[Builder], *, use_receive_time: bool = False,
                 want_figures: bool = False) -> None:
        self.builders = list(builders)
        self.use_receive_time = use_receive_time
        self.want_figures = want_figures

    def lines_each(self, telegrams: Sequence[tuple[Telegram, float]]) -> list[list[str]]:
        """Every builder's lines for each (telegram, receive time), in builder order per telegram: what ``make``
        packs into a Record. Each builder goes over all of them in turn (replay passes a few hundred)."""
        made: list[list[str]] = [[] for _ in telegrams]
        for builder in self.builders:
            build = builder.build
            for lines, (telegram, received_at_s) in zip(made, telegrams):
                lines += build(telegram, received_at_s)
        return made

    def make(self, telegram: Telegram, received_at_s: float) -> Record:
        (lines,) = self.lines_each(((telegram, received_at_s),))
        figures: dict[str, Figures] = {}
        if self.want_figures:
            for builder in self.builders:
                value = builder.figures()
                if value is not None:
                    figures[builder.name] = value
        if telegram.timestamp is not None and not self.use_receive_time:
            time_s = int(telegram.timestamp.timestamp())
        else:
            time_s = int(received_at_s)
        return Record(telegram, received_at_s, time_s, tuple(lines), figures)


@dataclass
class PipelineSettings:
    queue_max_telegrams: int = 3600
    watchdog_s: float = 30.0
    health_interval_s: float = 10.0
    reject_summary_interval_s: float = 60.0
    reconnect_initial_s: float = 1.0
    reconnect_max_s: float = 60.0
    shutdown_budget_s: float = 5.0  # outputs' last sends after a stop request; docker stop waits 10 s
    instance: str = "p1logger"
    state_dir: Path | None = None
    use_receive_time: bool = False


class _Throttle:
    """At most one log line per interval; what happened in between is counted in the next one."""

    def __init__(self, interval_s: float, clock: Callable[[], float]) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._last_at: float | None = None
        self.unlogged = 0

    def ready(self) -> bool:
        now = self._clock()
        if self._last_at is None or now - self._last_at >= self.interval_s:
            self._last_at = now
            return True
        return False


class Doorbell:
    """Wakes the writer from the reader, ringing only once the reader has let go of the interpreter.

    A queue's own wait wakes the writer while the reader still runs Python to get back to sleep; the
    writer then finds the interpreter lock held and sleeps a second time for it, two wake-ups per
    telegram instead of one. A byte on a socket pair is sent with the lock released, so the writer
    wakes to a free lock (docs/performance.md, wake-ups).
    """

    def __init__(self) -> None:
        self._receiver, self._sender = socket.socketpair()
        self._sender.setblocking(False)
        self._receiver.setblocking(False)

    def ring(self) -> None:
        try:
            self._sender.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # full: it is ringing already; closed: the writer is gone

    def wait(self, timeout_s: float) -> None:
        """Until rung or ``timeout_s`` passed; every ring so far is then answered."""
        try:
            if select.select([self._receiver], [], [], timeout_s)[0]:
                self._receiver.recv(4096)
        except (BlockingIOError, OSError, ValueError):
            pass

    def close(self) -> None:
        self._sender.close()
        self._receiver.close()


class Handoff:
    """Whether the reader rings the writer's doorbell for a telegram, or the writer wakes by itself to take it.

    With a paced source (a meter's beat measured, inputs/serial.py) the reader knows when its next telegram
    comes. The writer, going to sleep, then sets itself to wake a little after that, by when the reader has
    handed the telegram over and gone back to sleep, and says so here; the reader rings only when it hands
    over later than that. A ring wakes the writer while the reader still needs the interpreter lock to get
    back to sleep, and one of the two then wakes a second time for the lock (docs/performance.md, wake-ups).
    Pure: the caller passes the time (its clock), the threads only read and write two floats. The reader
    says when its next read comes only after handing over what it read, and the writer's own wake-up time
    is set only while it sleeps; so a telegram is either found by the writer waking by itself, or rung for.
    """

    def __init__(self) -> None:
        self._expected_at: float | None = None  # when the next telegram should reach the writer
        self._writer_wakes_at: float | None = None  # when the sleeping writer looks by itself; None: only if rung

    def expect(self, now: float, next_read_in_s: float | None) -> None:
        """The reader read; its source's next read is due in ``next_read_in_s`` (None: unknown)."""
        self._expected_at = None if next_read_in_s is None else now + next_read_in_s + HANDOFF_SLACK_S

    def should_ring(self, now: float) -> bool:
        """The reader has queued a telegram: ring, unless the writer wakes by itself well after ``now``."""
        wakes_at = self._writer_wakes_at
        return wakes_at is None or now >= wakes_at - HANDOFF_MARGIN_S

    def writer_sleeps(self, now: float, timeout_s: float) -> float:
        """The writer found nothing queued and sleeps at most ``timeout_s``: how long it sleeps.

        Set before the sleep begins, so a telegram queued before the writer wakes by itself is either
        found then or rung for.
        """
        expected_at = self._expected_at
        if expected_at is not None and now < expected_at < now + timeout_s:
            self._writer_wakes_at = expected_at
            return expected_at - now
        self._writer_wakes_at = None
        return timeout_s

    def writer_woke(self) -> None:
        """The writer is awake (by its own time, a ring, or a ring left over): until it sleeps again, ring."""
        self._writer_wakes_at = None


@dataclass
class Pipeline:
    """Wires the stages together and runs them in two threads (plus one per output)."""

    open_source: Callable[[], Source]
    reader: TelegramReader
    builders: list[Builder]
    outputs: list[Output]
    settings: PipelineSettings = field(default_factory=PipelineSettings)
    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] | None = None
    stop_event: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.health = Health(clock=self.wall_clock)
        self.queue: queue.Queue[tuple[Telegram, float] | None] = queue.Queue(self.settings.queue_max_telegrams)
        self._doorbell = Doorbell()
        self._handoff = Handoff()
        self.maker = RecordMaker(self.builders, use_receive_time=self.settings.use_receive_time,
                                 want_figures=any(getattr(o, "wants_figures", False) for o in self.outputs))
        self.failure: BaseException | None = None
        self._writer_done = threading.Event()
        self._next_health_at = 0.0
        self._reject_summary = RejectSummary(self.settings.reject_summary_interval_s, clock=self.clock)
        self._queue_drops = _Throttle(NOISE_LOG_INTERVAL_S, self.clock)
        self._state_errors = _Throttle(NOISE_LOG_INTERVAL_S, self.clock)
        if self.sleep is None:
            self.sleep = self._sleep_until_stopped

    # ------------------------------------------------------------------ control

    def _sleep_until_stopped(self, seconds: float) -> None:
        """A backoff that ends at once on shutdown."""
        self.stop_event.wait(seconds)

    def start(self) -> None:
        for output in self.outputs:
            output.start()
        self._reader_thread = threading.Thread(target=self._guard, args=(self._read_loop,), name="p1-reader", daemon=True)
        self._writer_thread = threading.Thread(target=self._guard, args=(self._write_loop,), name="p1-writer", daemon=True)
        self._reader_thread.start()
        self._writer_thread.start()

    def stop(self) -> None:
        """Ask both threads to finish; the outputs cut, send or spool what they hold."""
        self.stop_event.set()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait until the writer is done (file fully written, or stopped) and the outputs closed."""
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
            if loop == self._write_loop:
                # What the outputs hold is still written or spooled.
                self._close_outputs()
        finally:
            # Only the writer says it is done, after any failure is recorded: when the
            # reader dies, its end marker still reaches the writer, which then closes
            # the outputs before the process exits.
            if loop == self._write_loop:
                self._writer_done.set()
                self._doorbell.close()

    # ------------------------------------------------------------------ reader

    def _read_loop(self) -> None:
        source: Source | None = None
        delay_s = self.settings.reconnect_initial_s
        last_valid_at = self.clock()
        bytes_since_valid = 0
        garbage_warned = False
        live = True
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
                    live = getattr(source, "live", True)
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
                valid: list[Telegram] = []
                for item in self.reader.feed(data):
                    if isinstance(item, Telegram):
                        last_valid_at = self.clock()
                        # Only a working source earns a quick reconnect next time, not a mere open.
                        delay_s = self.settings.reconnect_initial_s
                        bytes_since_valid = 0
                        garbage_warned = False
                        self.health.telegrams_ok += 1
                        self.health.last_telegram_at = received_at
                        self._notify(item.raw, True, received_at)
                        valid.append(item)
                    else:
                        self.health.telegrams_rejected += 1
                        self._reject_summary.add(item)
                        self._notify(item.raw, False, received_at)
                self._reject_summary.maybe_log()
                if not garbage_warned and bytes_since_valid > GARBAGE_LIMIT_BYTES:
                    # With a wrong key the reader has said so; a baud-rate hint would mislead.
                    if not self.reader.stats.rejected["decrypt"]:
                        logger.warning("%s: %s", source.description, no_valid_telegram_hint(self.reader.stats.rejected))
                    garbage_warned = True
                if live and self.clock() - last_valid_at > self.settings.watchdog_s:
                    self._source_state(
                        f"no valid telegram for {self.settings.watchdog_s:.0f} s on {source.description}; reopening",
                        logging.WARNING,
                    )
                    source.close()
                    source = None
                    self.reader.reset()
                # Last, just before the next read sleeps: the writer then wakes to a free interpreter lock
                # instead of waking a second time for it (docs/performance.md, wake-ups).
                for telegram in valid:
                    self._enqueue(telegram, received_at, blocking=not live)
                # Only after the hand-off: a writer going to sleep before it must wake for these telegrams,
                # not for the next read's.
                paced = getattr(source, "next_data_in_s", None)
                self._handoff.expect(self.clock(), paced() if paced is not None else None)
        finally:
            if source is not None:
                source.close()
            self._reject_summary.flush()
            self._log_queue_drops(force=True)
            # The writer flushes and finishes after this marker; never block on a dead writer.
            while not self._writer_done.is_set():
                try:
                    self.queue.put(_END, timeout=0.5)
                    break
                except queue.Full:
                    continue
                finally:
                    self._doorbell.ring()

    def _enqueue(self, telegram: Telegram, received_at: float, blocking: bool) -> None:
        self._put(telegram, received_at, blocking)
        if self._handoff.should_ring(self.clock()):
            self._doorbell.ring()

    def _put(self, telegram: Telegram, received_at: float, blocking: bool) -> None:
        if blocking:
            # A file can wait for the writer; nothing is lost by waiting.
            while not self.stop_event.is_set():
                try:
                    self.queue.put((telegram, received_at), timeout=0.5)
                    return
                except queue.Full:
                    self._doorbell.ring()
                    continue
            return
        try:
            self.queue.put_nowait((telegram, received_at))
        except queue.Full:
            # A live meter cannot be paused: make room by dropping the oldest telegram, counted.
            try:
                self.queue.get_nowait()
                self.health.telegrams_dropped += 1
                self._queue_drops.unlogged += 1
                self._log_queue_drops()
            except queue.Empty:
                pass
            self.queue.put_nowait((telegram, received_at))

    def _log_queue_drops(self, force: bool = False) -> None:
        throttle = self._queue_drops
        if throttle.unlogged and (throttle.ready() or force):
            logger.warning("the writer is behind: dropped the oldest %d telegrams from its full queue of %d "
                           "(%d since start)", throttle.unlogged, self.settings.queue_max_telegrams,
                           self.health.telegrams_dropped)
            throttle.unlogged = 0

    def _notify(self, raw: bytes, valid: bool, received_at: float) -> None:
        for output in self.outputs:
            try:
                output.observe_raw(raw, valid, received_at)
            except Exception:  # noqa: BLE001 - an archive or client problem must not stop reading
                logger.exception("output %s failed to take a raw telegram", output.name)

    def _source_state(self, state: str, level: int) -> None:
        # Logged once per change of state, however long an outage lasts.
        if state != self.health.source_state:
            logger.log(level, "source %s", state)
            self.health.source_state = state

    # ------------------------------------------------------------------ writer

    def _write_loop(self) -> None:
        while True:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                # While telegrams come, the health tick rides on them; the timeout fires only when none does.
                now = self.clock()
                self._doorbell.wait(self._handoff.writer_sleeps(now, max(0.0, self._next_health_at - now)
                                                                + HEALTH_SLACK_S))
                self._handoff.writer_woke()
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    item = ()  # type: ignore[assignment]
            if item is _END:
                break
            if item:
                telegram, received_at = item  # type: ignore[misc]
                record = self.maker.make(telegram, received_at)
                for output in self.outputs:
                    output.submit(record)
            self._health_tick()
        self._finish()

    def _health_tick(self, force: bool = False) -> None:
        now = self.clock()
        if not force and now < self._next_health_at:
            return
        for output in self.outputs:
            failure = getattr(output, "failure", None)
            if failure is not None and self.failure is None:
                # An output's thread died (a bug, logged there): stop, so that a supervisor restarts p1logger.
                self.failure = failure
                self.stop_event.set()
        self._next_health_at = now + self.settings.health_interval_s
        self.health.queue_depth = self.queue.qsize()
        self.health.outputs = {output.name: dict(output.health()) for output in self.outputs}
        self._copy_guard_counts()
        lines = [
            health_line(
                self.settings.instance,
                int(self.wall_clock()),
                telegrams_ok=self.health.telegrams_ok,
                telegrams_rejected=self.health.telegrams_rejected,
                queue_depth=self.health.queue_depth,
                spool_points=self.health.spool_points,
                points_dropped=self.health.points_dropped,
                telegrams_dropped=self.health.telegrams_dropped,
                write_latency_ms=self.health.write_latency_ms,
                last_telegram_age_s=round(self.health.last_telegram_age_s(), 3),
            )
        ]
        snapshot = self.health.snapshot()
        for output in self.outputs:
            output.submit_health(snapshot, lines)
        self._write_state()

    def _write_state(self) -> None:
        if self.settings.state_dir is None:
            return
        try:
            self.health.write_state(self.settings.state_dir)
        except OSError as exc:
            self._state_errors.unlogged += 1
            if self._state_errors.ready():
                logger.warning("cannot write the health state in %s: %s (%d times since the last message)",
                               self.settings.state_dir, exc.strerror or exc, self._state_errors.unlogged)
                self._state_errors.unlogged = 0

    def _finish(self) -> None:
        """Hand the outputs the last health point, then close them: each cuts, sends or spools what it holds."""
        if not self.stop_event.is_set():
            # A file is done: let what is queued reach the destinations first, so the last
            # health point counts it (each output waits only while its destination answers).
            for output in self.outputs:
                flush = getattr(output, "flush", None)
                if flush is not None:
                    flush()
        self._health_tick(force=True)
        self._close_outputs()
        self.health.outputs = {output.name: dict(output.health()) for output in self.outputs}
        self.health.queue_depth = self.queue.qsize()
        self._copy_guard_counts()
        self.health.stopped_at = self.wall_clock()  # health must not call a stopped logger "ok"
        self._write_state()

    def _copy_guard_counts(self) -> None:
        for builder in self.builders:
            if isinstance(builder, PointBuilder):
                self.health.meter_clock_repeats = builder.clock.stats.repeated
                self.health.meter_clock_backsteps = builder.clock.stats.backward
                self.health.implausible_values = builder.implausible_values

    def _close_outputs(self) -> None:
        # A file source is done: send everything while the destinations take it. A stop
        # request: a short budget; what is not sent stays in each output's spool.
        budget_s = self.settings.shutdown_budget_s if self.stop_event.is_set() else None
        closers = [threading.Thread(target=self._close_one, args=(output, budget_s), name=f"p1-close-{output.name}",
                                    daemon=True) for output in self.outputs]
        for closer in closers:
            closer.start()
        for closer in closers:
            closer.join()

    def _close_one(self, output: Output, budget_s: float | None) -> None:
        try:
            output.close(budget_s)
        except Exception:  # noqa: BLE001 - one output's trouble must not keep the others from closing
            logger.exception("output %s failed to close", output.name)

    def output_health(self) -> Mapping[str, Mapping[str, object]]:
        return {output.name: output.health() for output in self.outputs}


def build_pipeline(
    args: argparse.Namespace,
    shutdown: threading.Event | None = None,
    *,
    builder_names: Sequence[str] | None = None,
    context_overrides: Mapping[str, Any] | None = None,
    pipeline_overrides: Mapping[str, Any] | None = None,
) -> tuple[Pipeline, RunContext]:
    """The pipeline ``run`` runs, from its parsed flags (the overrides are for tests: clocks, retry waits)."""
    if not args.source:
        raise ConfigError(NO_SOURCE)
    config.check_source(args.source)
    timestamps = TimestampParser(args.timezone)
    country = config.check_country(args.country)
    settings = config.serial_settings(args)
    keys = config.decryption_keys(args)
    spool_dir = Path(args.spool_dir)
    shutdown = shutdown or threading.Event()
    use_receive_time = args.timestamps == "receive"
    context = RunContext(
        settings=args, zone=timestamps.zone, spool_dir=spool_dir, shutdown=shutdown, live=is_live(args.source),
        flush_interval_s=args.flush_interval_s, batch_max_points=args.batch_max_points,
        spool_max_bytes=args.spool_max_bytes, **(context_overrides or {}),
    )
    builders = create_builders(args, timestamps.zone, use_receive_time)
    if builder_names is not None:
        builders = [builder for builder in builders if builder.name in builder_names]
    builders.append(config.TariffLog(country))  # writes nothing: says once which tariff names apply
    outputs = create_outputs(args, context)  # a configuration error is raised before anything is written
    try:
        spool_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        for output in outputs:
            output.close(0.0)
        raise ConfigError(f"cannot create the spool directory {spool_dir} ({exc.strerror}): fix P1_SPOOL_DIR") from None
    pipeline = Pipeline(
        open_source=lambda: open_source(args.source, settings, realtime=args.realtime, sleep=shutdown.wait),
        reader=TelegramReader(timestamps, args.max_telegram_bytes, keys=keys),
        builders=builders,
        outputs=outputs,
        settings=PipelineSettings(
            watchdog_s=args.watchdog_s,
            instance=args.instance,
            state_dir=spool_dir,
            use_receive_time=use_receive_time,
        ),
        stop_event=shutdown,
        **(pipeline_overrides or {}),
    )
    return pipeline, context
