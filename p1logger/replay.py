"""Backfill: archived or recorded telegrams through the same builders as ``run``, exactly once, resumable.

Replaying is idempotent: InfluxDB keeps one point per series and timestamp, and
a replay makes the same points every time. Points are placed by the meter's
clock (or, for meters without one and with ``--timestamps receive``, by the
receive time the archive recorded), gas and peak values at their own capture
times, and no health points (``p1logger`` measurement) are written, since their
wall-clock times would differ on every run.

Progress is kept in a small state file: for each input file (path, size,
modification time) and destination, the byte offset up to which every point
is stored. A resumed replay first feeds the builders everything before that
point without writing it (the capacity tracker and the points builder carry
state from one telegram to the next: quarters, month peaks, the last gas
reading), so it writes the same values at the same timestamps as a replay that
was never interrupted.
"""

from __future__ import annotations

import collections
import concurrent.futures
import gc
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from p1logger import dlms
from p1logger.archive_format import ArchivedTelegram
from p1logger.batch import Batcher
from p1logger.contracts import LineWriter
from p1logger.decode import Telegram
from p1logger.errors import SinkError, SourceError
from p1logger.framing import DEFAULT_MAX_TELEGRAM_BYTES
from p1logger.inputs.archive import ArchiveReader
from p1logger.pipeline import RecordMaker
from p1logger.reader import TelegramReader
from p1logger.timestamps import TimestampParser

logger = logging.getLogger(__name__)

STATE_FILE = "replay-state.json"
STATE_VERSION = 1
# A crash loses at most this much progress (those points are simply written again).
STATE_SAVE_INTERVAL_S = 1.0
# Records decoded and built together (see Replayer._made): a few hundred keep the stages in the CPU's caches.
STAGE_RECORDS = 256
# A replay makes millions of short-lived objects and no reference cycles: at the collector's default pace (a
# pass every 700 new container objects) the passes take 5-8% of its CPU. Raised while it runs, then restored.
GC_THRESHOLD_OBJECTS = 20_000


class Progress(Protocol):
    def update(self, done_bytes: int, read_bytes: int, telegrams: int) -> None: ...

    def finish(self, done_bytes: int, read_bytes: int, telegrams: int) -> None: ...


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


class _Tally(NamedTuple):
    """What one record adds to the replay's counts."""

    telegrams: int
    rejected: int  # marked rejected when received, or failing the checks now
    untimed: int


def _until(records: Iterable[ArchivedTelegram], end_offset: int) -> Iterator[ArchivedTelegram]:
    for record in records:
        if record.end_offset > end_offset:
            return
        yield record


def _staged(records: Iterable[ArchivedTelegram]) -> Iterator[list[ArchivedTelegram]]:
    """Records in chunks of STAGE_RECORDS; a file damaged part-way still yields the records before the damage."""
    chunk: list[ArchivedTelegram] = []
    try:
        for record in records:
            chunk.append(record)
            if len(chunk) == STAGE_RECORDS:
                yield chunk
                chunk = []
    except SourceError:
        if chunk:
            yield chunk
        raise
    if chunk:
        yield chunk


class Replayer:
    """Reads files, checks and decodes every telegram, and writes what ``run``'s builders make of it, in batches."""

    def __init__(
        self,
        sink: LineWriter,
        maker: RecordMaker,
        timestamps: TimestampParser,
        state: ReplayState,
        *,
        batch_max_points: int = 5000,
        max_telegram_bytes: int = DEFAULT_MAX_TELEGRAM_BYTES,
        stop: threading.Event | None = None,
        progress: Progress | None = None,
        keys: dlms.Keys | None = None,
    ) -> None:
        self.sink = sink
        self.keys = keys
        self.maker = maker
        self.timestamps = timestamps
        self.state = state
        self.max_telegram_bytes = max_telegram_bytes
        self.batcher = Batcher(batch_max_points)
        self.stop = stop if stop is not None else threading.Event()
        self.progress = progress
        self.stats = ReplayStats()
        self._done_bytes = 0
        # One batch is written while the next is decoded: InfluxDB's work and ours overlap (two cores).
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._in_flight: tuple[concurrent.futures.Future[Any], int, _Commits, Path, FileIdentity] | None = None

    def run(self, paths: Sequence[Path]) -> ReplayStats:
        """Replay every file in order. SinkError when InfluxDB stops taking points (progress is saved)."""
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="p1-replay-write")
        thresholds = gc.get_threshold()
        gc.set_threshold(max(thresholds[0], GC_THRESHOLD_OBJECTS), *thresholds[1:])
        try:
            plan: list[tuple[Path, FileIdentity, int | None]] = []
            for path in paths:
                try:
                    identity = file_identity(path)
                except OSError as exc:  # deleted since (the archive prunes its oldest files)
                    logger.error("cannot read %s: %s", path, exc.strerror or exc)
                    self.stats.files_failed += 1
                    continue
                plan.append((path, identity, self.state.resume_offset(path, identity)))
            # Files (or parts) stored by an earlier run still go through the builders, unwritten, when
            # anything after them is to be written: the builders' state must be what it was then.
            last_to_write = max((n for n, (_, _, start) in enumerate(plan) if start is not None), default=-1)
            for n, (path, identity, start) in enumerate(plan):
                if self.stop.is_set():
                    break
                if start is None:
                    logger.info("%s was replayed completely before; skipping it (--restart replays it again)", path)
                    self.stats.files_skipped += 1
                    if n < last_to_write:
                        self._refeed(path, None)
                else:
                    if start:
                        self._refeed(path, start)
                        if self.stop.is_set():
                            break  # the builders are only part-way back to where the stored part left them
                    self._replay_file(path, identity, start)
                self._done_bytes += identity.size_bytes
        finally:
            gc.set_threshold(*thresholds)
            self._settle_in_flight()
            self._pool.shutdown()
            self._pool = None
            self.state.save()
            if self.progress is not None:
                self.progress.finish(self._done_bytes, self.stats.read_bytes, self.stats.telegrams)
        return self.stats

    def _refeed(self, path: Path, end_offset: int | None) -> None:
        """Feed the builders the records of ``path`` up to ``end_offset`` (None: all), writing nothing."""
        reader = TelegramReader(self.timestamps, self.max_telegram_bytes, keys=self.keys)
        try:
            with ArchiveReader(path, 0, self.max_telegram_bytes) as archive:
                records = archive if end_offset is None else _until(archive, end_offset)
                for chunk in _staged(records):
                    self._made(reader, chunk)
                    if self.stop.is_set():
                        return
        except SourceError as exc:
            logger.warning("%s; the values computed across it (capacity) may differ from the first replay", exc)

    def _replay_file(self, path: Path, identity: FileIdentity, start: int) -> None:
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
                for chunk in _staged(archive):
                    position = archive.position_bytes  # a system call: once a chunk, not once a record
                    done_bytes = self._done_bytes + position
                    read_bytes = self.stats.read_bytes + position - first_position
                    for record, (tally, lines) in zip(chunk, self._made(reader, chunk)):
                        self._count(tally)
                        commits.add(len(lines), record.end_offset)
                        for batch in self.batcher.add(lines):
                            self._write(batch, commits, path, identity)
                        if self.progress is not None:
                            self.progress.update(done_bytes, read_bytes, self.stats.telegrams)
                        if self.stop.is_set():
                            # The builders have seen the rest of the chunk; nothing of it is written or counted.
                            break
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
        self._collect()
        if finished:
            self.state.update(path, identity, commits.offset, complete=True)
            self.stats.files_done += 1

    def _made(self, reader: TelegramReader, chunk: list[ArchivedTelegram]) -> list[tuple[_Tally, list[str]]]:
        """What each record of ``chunk`` adds to the counts, and its lines.

        Stage by stage over the chunk (check and decode them all, then each builder over them all) rather
        than record by record: each stage's code and data stay in the CPU's caches, which takes about a
        fifth off a replay's CPU (docs/performance.md). Builders keep their own state, so each one seeing
        every telegram in order is all that matters.
        """
        per_record = [self._telegrams(reader, record) for record in chunk]
        built = iter(self.maker.lines_each([item for _, items in per_record for item in items]))
        made: list[tuple[_Tally, list[str]]] = []
        for tally, items in per_record:
            if len(items) == 1:
                made.append((tally, next(built)))
            else:
                lines: list[str] = []
                for _ in items:
                    lines += next(built)
                made.append((tally, lines))
        return made

    def _telegrams(self, reader: TelegramReader, record: ArchivedTelegram) -> tuple[_Tally, list[tuple[Telegram, float]]]:
        """The telegrams of one record that can be placed in time, with what it adds to the counts."""
        # An encrypted frame the logger could not open (a wrong key at the time) is tried
        # again when this replay has a key.
        if record.valid is False and not (self.keys is not None and dlms.parse_frame(record.raw) is not None):
            return _Tally(0, 1, 0), []
        rejected = untimed = 0
        telegrams: list[tuple[Telegram, float]] = []
        for item in reader.feed(record.raw):
            if not isinstance(item, Telegram):
                rejected += 1
                continue
            needs_receive_time = item.timestamp is None or self.maker.use_receive_time
            if needs_receive_time and record.received_at_s is None:
                untimed += 1  # a wall-clock time would differ on every replay
                continue
            telegrams.append((item, record.received_at_s or 0.0))
        return _Tally(len(telegrams), rejected, untimed), telegrams

    def _count(self, tally: _Tally) -> None:
        self.stats.telegrams += tally.telegrams
        self.stats.rejected += tally.rejected
        self.stats.untimed += tally.untimed

    def _write(self, lines: list[str], commits: _Commits, path: Path, identity: FileIdentity) -> None:
        """Start writing ``lines`` once the batch before them is stored (SinkError if it was not)."""
        self._collect()
        if not lines:
            offset = commits.wrote(0)
            if offset is not None:
                self.state.update(path, identity, offset)
            return
        assert self._pool is not None
        self._in_flight = (self._pool.submit(self.sink.write, lines), len(lines), commits, path, identity)

    def _collect(self) -> None:
        """Wait for the batch being written; count it and move the resume offset past it."""
        if self._in_flight is None:
            return
        future, line_count, commits, path, identity = self._in_flight
        self._in_flight = None
        result = future.result()
        self.stats.points_written += result.points_written
        self.stats.points_rejected += result.points_rejected
        if not result.delivered:
            self.state.save()
            raise SinkError(result.message)
        offset = commits.wrote(line_count)
        if offset is not None:
            self.state.update(path, identity, offset)

    def _settle_in_flight(self) -> None:
        """After a failure elsewhere: let the last write finish and count it, without raising over that failure."""
        try:
            self._collect()
        except Exception as exc:  # noqa: BLE001 - the error being raised already says what went wrong
            logger.debug("the last batch was not stored either: %s", exc)
