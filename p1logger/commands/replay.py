"""``p1logger replay``: store archived or recorded telegrams in InfluxDB (backfill).

Reads archive files (``run --archive``, ``record``; ``.gz`` too) and plain
captures, checks every telegram again, and writes the same points ``run``
would have written, in the same batches and through the same sink.

Replaying is idempotent: InfluxDB keeps one point per series and timestamp, and
a replay makes the same points every time. Points are placed by the meter's
clock (or, for meters without one and with ``--timestamps receive``, by the
receive time the archive recorded), gas and peak values at their own capture
times, and no health points (``p1logger`` measurement) are written, since their
wall-clock times would differ on every run.

Progress is kept in a small state file (``--state``, by default in the spool
directory): for each input file (path, size, modification time) and
destination, the byte offset up to which every point is stored. Ctrl-C, or a
database that stops answering, leaves it behind; running the same command
again resumes there, and files already done are skipped (``--restart`` ignores
the state).
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, NamedTuple, TextIO

from p1logger import config, dlms
from p1logger.archive import ArchiveReader, Record, archive_files
from p1logger.batch import Batcher
from p1logger.cli import setup_logging
from p1logger.commands.run import (
    DEAD_LETTER_FILE,
    add_batch_argument,
    add_influx_arguments,
    add_spool_dir_argument,
    add_timestamps_argument,
    influx_target,
)
from p1logger.decode import Telegram
from p1logger.errors import ConfigError, SinkError, SourceError
from p1logger.framing import DEFAULT_MAX_TELEGRAM_BYTES
from p1logger.pipeline import Sink
from p1logger.points import PointBuilder
from p1logger.reader import TelegramReader
from p1logger.sink import InfluxSink, WriteKind
from p1logger.timestamps import TimestampParser

logger = logging.getLogger(__name__)

STATE_FILE = "replay-state.json"
STATE_VERSION = 1
# A crash loses at most this much progress (those points are simply written again).
STATE_SAVE_INTERVAL_S = 1.0
BAR_INTERVAL_S = 0.2
LINES_INTERVAL_S = 10.0
_BAR_WIDTH = 30


class FileIdentity(NamedTuple):
    size_bytes: int
    mtime_ns: int


def file_identity(path: Path) -> FileIdentity:
    info = path.stat()
    return FileIdentity(info.st_size, info.st_mtime_ns)


# ------------------------------------------------------------------ progress file


class ReplayState:
    """Which part of each input file is stored in one destination; survives Ctrl-C and crashes."""

    def __init__(self, path: Path | None, destination: str, *, restart: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.destination = destination
        self._clock = clock
        self._saved_at = clock()
        self._dirty = False
        self._data: dict[str, Any] = {"version": STATE_VERSION, "destinations": {}}
        if path is not None and path.exists():
            try:
                loaded = json.loads(path.read_text(encoding="utf-8"))
                if loaded.get("version") != STATE_VERSION or not isinstance(loaded.get("destinations"), dict):
                    raise ValueError("unknown layout")
                self._data = loaded
            except (OSError, ValueError, AttributeError) as exc:
                # Starting over is safe: replaying again stores nothing twice.
                logger.warning("ignoring the replay state %s (%s); files are replayed from the start", path, exc)
        files = self._data["destinations"].setdefault(destination, {})
        if restart:
            files.clear()
        self._files: dict[str, dict[str, Any]] = files

    def resume_offset(self, file: Path, identity: FileIdentity) -> int | None:
        """Where to start reading ``file``: 0, a saved offset, or None when it is already fully stored."""
        entry = self._files.get(str(file.resolve()))
        if entry is None or (entry.get("size"), entry.get("mtime_ns")) != tuple(identity):
            return 0  # new, or changed since (today's archive file grows): from the start
        if entry.get("complete"):
            return None
        offset = entry.get("offset")
        return offset if isinstance(offset, int) and offset >= 0 else 0

    def update(self, file: Path, identity: FileIdentity, offset: int, complete: bool = False) -> None:
        self._files[str(file.resolve())] = {
            "size": identity.size_bytes, "mtime_ns": identity.mtime_ns, "offset": offset, "complete": complete,
        }
        self._dirty = True
        if complete or self._clock() - self._saved_at >= STATE_SAVE_INTERVAL_S:
            self.save()

    def save(self) -> None:
        if self.path is None or not self._dirty:
            return
        self._saved_at = self._clock()
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(temporary, "w", encoding="utf-8") as out:
                json.dump(self._data, out, indent=1, sort_keys=True)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)
        except OSError as exc:
            logger.warning("cannot save the replay progress in %s (%s): a rerun starts over", self.path,
                           exc.strerror or exc)
            return
        self._dirty = False


# ------------------------------------------------------------------ progress display


class ProgressReport:
    """A bar with an ETA on a terminal; otherwise a plain line every ``LINES_INTERVAL_S``."""

    def __init__(self, total_bytes: int, stream: TextIO, *, bar: bool,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total_bytes = total_bytes
        self._stream = stream
        self._bar = bar
        self._clock = clock
        self._started = clock()
        self._interval_s = BAR_INTERVAL_S if bar else LINES_INTERVAL_S
        self._next_at = self._started + self._interval_s
        self._shown = False

    def update(self, done_bytes: int, read_bytes: int, telegrams: int) -> None:
        """``done_bytes`` counts skipped files too; ``read_bytes`` only what this run read (for the rate)."""
        now = self._clock()
        if now < self._next_at:
            return
        self._next_at = now + self._interval_s
        self._show(now, done_bytes, read_bytes, telegrams)

    def finish(self, done_bytes: int, read_bytes: int, telegrams: int) -> None:
        if self._bar and self._shown:
            self._show(self._clock(), done_bytes, read_bytes, telegrams)
            self._stream.write("\n")
            self._stream.flush()

    def _show(self, now: float, done_bytes: int, read_bytes: int, telegrams: int) -> None:
        elapsed_s = max(now - self._started, 1e-9)
        fraction = min(done_bytes / self.total_bytes, 1.0) if self.total_bytes else 1.0
        bytes_per_s = read_bytes / elapsed_s
        eta = _duration((self.total_bytes - done_bytes) / bytes_per_s) if bytes_per_s > 0 else "?"
        rate = f"{telegrams / elapsed_s:,.0f} telegrams/s"
        sizes = f"{done_bytes / 1e6:,.1f}/{self.total_bytes / 1e6:,.1f} MB"
        if self._bar:
            filled = int(fraction * _BAR_WIDTH)
            bar = "#" * filled + "-" * (_BAR_WIDTH - filled)
            self._stream.write(f"\r[{bar}] {fraction * 100:5.1f}% {sizes} {rate} ETA {eta}\x1b[K")
        else:
            self._stream.write(f"p1logger replay: {fraction * 100:.1f}% ({sizes}), {telegrams} telegrams, "
                               f"{rate}, ETA {eta}\n")
        self._stream.flush()
        self._shown = True


def _duration(seconds: float) -> str:
    whole = int(seconds + 0.5)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


# ------------------------------------------------------------------ the replay


@dataclass
class ReplayStats:
    files_done: int = 0
    files_skipped: int = 0  # fully stored by an earlier run
    files_failed: int = 0
    telegrams: int = 0
    rejected: int = 0  # marked rejected when received, or failing the checks now
    untimed: int = 0  # no meter clock and no receive time recorded: cannot be placed in time
    points_written: int = 0
    points_rejected: int = 0  # refused by InfluxDB, saved in the dead-letter file
    damaged_bytes: int = 0  # archive bytes that formed no record (a record cut short by a crash)
    read_bytes: int = 0


class _Commits:
    """Which offset of the current file is safe to resume from, as batches get stored."""

    def __init__(self, offset: int) -> None:
        self.offset = offset  # everything before it is stored
        self.added = 0
        self.written = 0
        # (lines added up to and including a record, the offset after it); bounded by the batch
        # size, since records that add no line merge into the entry before them.
        self._pending: collections.deque[tuple[int, int]] = collections.deque()

    def add(self, line_count: int, end_offset: int) -> None:
        self.added += line_count
        if self._pending and self._pending[-1][0] == self.added:
            self._pending[-1] = (self.added, end_offset)
        else:
            self._pending.append((self.added, end_offset))

    def wrote(self, line_count: int) -> int | None:
        """Lines stored; returns the new safe offset, if it moved."""
        self.written += line_count
        moved = False
        while self._pending and self._pending[0][0] <= self.written:
            self.offset = self._pending.popleft()[1]
            moved = True
        return self.offset if moved else None


class Replayer:
    """Reads files, checks and decodes every telegram, writes the points in batches."""

    def __init__(
        self,
        sink: Sink,
        builder: PointBuilder,
        timestamps: TimestampParser,
        state: ReplayState,
        *,
        batch_max_points: int = 5000,
        max_telegram_bytes: int = DEFAULT_MAX_TELEGRAM_BYTES,
        stop: threading.Event | None = None,
        progress: ProgressReport | None = None,
        keys: dlms.Keys | None = None,
    ) -> None:
        self.sink = sink
        self.keys = keys
        self.builder = builder
        self.timestamps = timestamps
        self.state = state
        self.max_telegram_bytes = max_telegram_bytes
        self.batcher = Batcher(batch_max_points)
        self.stop = stop if stop is not None else threading.Event()
        self.progress = progress
        self.stats = ReplayStats()
        self._done_bytes = 0

    def run(self, paths: Sequence[Path]) -> ReplayStats:
        """Replay every file in order. SinkError when InfluxDB stops taking points (progress is saved)."""
        try:
            for path in paths:
                if self.stop.is_set():
                    break
                try:
                    identity = file_identity(path)
                except OSError as exc:  # deleted since (the archive prunes its oldest files)
                    logger.error("cannot read %s: %s", path, exc.strerror or exc)
                    self.stats.files_failed += 1
                    continue
                self._replay_file(path, identity)
                self._done_bytes += identity.size_bytes
        finally:
            self.state.save()
            if self.progress is not None:
                self.progress.finish(self._done_bytes, self.stats.read_bytes, self.stats.telegrams)
        return self.stats

    def _replay_file(self, path: Path, identity: FileIdentity) -> None:
        start = self.state.resume_offset(path, identity)
        if start is None:
            logger.info("%s was replayed completely before; skipping it (--restart replays it again)", path)
            self.stats.files_skipped += 1
            return
        if start:
            logger.info("%s: resuming at byte %d", path, start)
        reader = TelegramReader(self.timestamps, self.max_telegram_bytes, keys=self.keys)
        commits = _Commits(start)
        finished = False
        try:
            archive = ArchiveReader(path, start, self.max_telegram_bytes)
        except SourceError as exc:
            logger.error("%s", exc)
            self.stats.files_failed += 1
            return
        with archive:
            # A resumed .gz is decompressed up to the offset first: that is not progress of this run.
            first_position = archive.position_bytes
            try:
                for record in archive:
                    lines = self._lines(reader, record)
                    commits.add(len(lines), record.end_offset)
                    for batch in self.batcher.add(lines):
                        self._write(batch, commits, path, identity)
                    if self.progress is not None:
                        self.progress.update(self._done_bytes + archive.position_bytes,
                                             self.stats.read_bytes + archive.position_bytes - first_position,
                                             self.stats.telegrams)
                    if self.stop.is_set():
                        break
                else:
                    finished = True
            except SourceError as exc:
                logger.error("%s; the rest of this file is not replayed", exc)
                self.stats.files_failed += 1
            finally:
                self.stats.read_bytes += archive.position_bytes - first_position
                if archive.is_archive:
                    self.stats.damaged_bytes += archive.skipped_bytes
        # What has been read is written even when stopping (one attempt: the sink
        # sees the stop too), so that a rerun has less to do.
        self._write(self.batcher.take(), commits, path, identity)
        if finished:
            self.state.update(path, identity, commits.offset, complete=True)
            self.stats.files_done += 1

    def _lines(self, reader: TelegramReader, record: Record) -> list[str]:
        # An encrypted frame the logger could not open (a wrong key at the time) is tried
        # again when this replay has a key.
        retry = self.keys is not None and dlms.parse_frame(record.raw) is not None
        if record.valid is False and not retry:
            self.stats.rejected += 1
            return []
        lines: list[str] = []
        for item in reader.feed(record.raw):
            if not isinstance(item, Telegram):
                self.stats.rejected += 1
                continue
            needs_receive_time = item.timestamp is None or self.builder.use_receive_time
            if needs_receive_time and record.received_at_s is None:
                self.stats.untimed += 1  # a wall-clock time would differ on every replay
                continue
            self.stats.telegrams += 1
            lines.extend(self.builder.build(item, record.received_at_s or 0.0))
        return lines

    def _write(self, lines: list[str], commits: _Commits, path: Path, identity: FileIdentity) -> None:
        if lines:
            result = self.sink.write(lines)
            self.stats.points_written += result.points_written
            self.stats.points_rejected += result.points_rejected
            if result.kind not in (WriteKind.OK, WriteKind.REJECTED):
                self.state.save()
                raise SinkError(result.message)
        offset = commits.wrote(len(lines))
        if offset is not None:
            self.state.update(path, identity, offset)


# ------------------------------------------------------------------ the command


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "replay",
        help="store archived or recorded telegrams in InfluxDB (backfill); safe to repeat",
        description="Read archive files ('run --archive', 'record'; .gz too) or plain captures, check and decode "
        "every telegram, and write its points to InfluxDB as 'run' would. Replaying a file twice stores nothing "
        "twice. Ctrl-C stops cleanly; the same command resumes where it stopped.",
        epilog="examples:\n  INFLUX_TOKEN=... INFLUX_ORG=home p1logger replay /var/lib/p1logger/archive\n"
        "  INFLUX_API=v1 p1logger replay meter.txt p1-2024-05-11.txt.gz",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("files", nargs="+", metavar="FILE",
                        help="archive files, plain captures or archive directories (all their daily files)")
    parser.add_argument("--state", metavar="FILE", default=config.env("P1_REPLAY_STATE"),
                        help=f"progress file for resuming (default: {STATE_FILE} in the spool directory) "
                        "[env P1_REPLAY_STATE]")
    parser.add_argument("--restart", action="store_true", help="ignore saved progress: replay every file in full")
    add_spool_dir_argument(parser, "the progress and dead-letter files")
    add_timestamps_argument(parser, "the receive time the archive recorded")
    add_batch_argument(parser)
    parser.add_argument("--max-telegram-bytes", type=int, default=DEFAULT_MAX_TELEGRAM_BYTES,
                        help="longest telegram accepted in a plain capture (default %(default)s)")
    config.add_decode_arguments(parser)
    config.add_decryption_arguments(parser)
    add_influx_arguments(parser)
    config.add_logging_arguments(parser)
    parser.set_defaults(func=main)


def expand_inputs(names: Sequence[str]) -> list[Path]:
    paths: list[Path] = []
    for name in names:
        path = Path(name)
        if path.is_dir():
            found = archive_files(path)
            if not found:
                raise ConfigError(f"{path} holds no archive files (p1-YYYY-MM-DD.txt or .txt.gz)")
            paths.extend(found)
        elif path.is_file():
            paths.append(path)
        else:
            raise ConfigError(f"{path}: no such file or directory")
    return paths


def main(args: argparse.Namespace) -> int:
    setup_logging(config.check_log_level(args.log_level))
    timestamps = TimestampParser(args.timezone)
    if args.batch_max_points < 1:
        raise ConfigError(f"the batch size must be positive, not {args.batch_max_points}: fix P1_BATCH_MAX_POINTS")
    keys = config.decryption_keys(args)
    paths = expand_inputs(args.files)
    target = influx_target(args)
    spool_dir = Path(args.spool_dir)
    state_path = Path(args.state) if args.state else spool_dir / STATE_FILE
    stop = threading.Event()
    state = ReplayState(state_path, f"{target.url} {target.describe_destination()}", restart=args.restart)
    sink = InfluxSink(target, dead_letter_path=spool_dir / DEAD_LETTER_FILE, shutdown=stop)
    progress = ProgressReport(sum(p.stat().st_size for p in paths), sys.stderr, bar=sys.stderr.isatty())
    replayer = Replayer(
        sink,
        PointBuilder(timestamps.zone, use_receive_time=args.timestamps == "receive"),
        timestamps,
        state,
        batch_max_points=args.batch_max_points,
        max_telegram_bytes=args.max_telegram_bytes,
        stop=stop,
        progress=progress,
        keys=keys,
    )

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        logger.info("received %s; writing what has been read, then stopping", signal.Signals(signum).name)
        stop.set()
        signal.signal(signum, signal.SIG_DFL)  # a second Ctrl-C ends at once

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    failure = ""
    try:
        stats = replayer.run(paths)
    except SinkError as exc:
        stats, failure = replayer.stats, str(exc)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sink.close()
    print(_summary(stats), file=sys.stderr)
    if stop.is_set():  # also when the stop cut a retry short
        print(f"p1logger replay: interrupted; the progress is saved in {state_path}: run the same command again "
              "to resume", file=sys.stderr)
        return 130
    if failure:
        print(f"p1logger replay: stopped: {failure}. The progress is saved in {state_path}: run the same command "
              "again to resume", file=sys.stderr)
        return 1
    return 1 if stats.files_failed else 0


def _summary(stats: ReplayStats) -> str:
    text = (f"p1logger replay: {stats.telegrams} telegrams, {stats.points_written} points stored; "
            f"{stats.files_done} files done, {stats.files_skipped} already done before")
    extras = [
        (stats.rejected, "telegrams rejected (as when received)"),
        (stats.untimed, "telegrams without a meter clock or a recorded receive time, skipped"),
        (stats.points_rejected, "points refused by InfluxDB (see the dead-letter file)"),
        (stats.damaged_bytes, "bytes of damaged records skipped"),
        (stats.files_failed, "files could not be read to the end"),
    ]
    return text + "".join(f"; {count} {what}" for count, what in extras if count)
