"""Keep every telegram as received, byte-exact, in daily files (``run --archive DIR``, ``record``).

File format: plain text, one file per local day (``p1-YYYY-MM-DD.txt``), one
record per telegram. A record is a header line and then exactly ``length``
bytes, the telegram as it came off the wire (CRLFs and CRC line included)::

    #P1 1715504049.123 ok 874
    <874 bytes: "/" ... "!3AD7" CRLF>
    #P1 1715504050.120 rejected 861
    <861 bytes: a telegram that failed its CRC, framing or decoding>

The header holds the receive time (Unix seconds), whether the telegram passed
its checks, and the length. It contains no "/", so a DSMR framer skips it as
noise: ``p1logger dump --input FILE``, ``run --source file:FILE`` and other P1
tools read an archive like any capture, and rejected telegrams fail there again.
``p1logger replay`` reads the headers: the receive time places telegrams whose
meter sends no clock, and rejected records are skipped without being decoded.

Crash safety: the current day's file is only ever appended to, one whole
record per write(); a record cut short by a power loss is recognised on
reading (its length does not lead to the next header) and skipped, and the
records after it still count. A finished day is compressed to a temporary
name, synced, and renamed to ``.gz`` before the plain file is removed, so a
crash at any moment leaves either the plain file or a complete ``.gz`` (or
both, which the next start sorts out). Compression and pruning run in a
background thread, never in the reader thread that calls the writer.
"""

from __future__ import annotations

import argparse
import gzip
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from p1logger import settings as settings_table
from p1logger.archive_format import FILE_NAME, encode_record
from p1logger.contracts import Check, Output, Record, RunContext
from p1logger.errors import ConfigError
from p1logger.inputs.archive import archive_files
from p1logger.outputs import OutputSpec

logger = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 2 << 30
DEFAULT_FSYNC_INTERVAL_S = 60.0
_COPY_CHUNK_BYTES = 1 << 20
LOCK_FILE = ".p1logger-archive.lock"
_TEMP_SUFFIX = ".tmp"


# ------------------------------------------------------------------ writing


def _fsync_directory(directory: Path) -> None:
    # A rename or an unlink is durable only once the directory itself is synced.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # not possible on every platform; the data itself is synced
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class RecordFile:
    """One append-only archive file. Callable as a raw observer: ``(raw, valid)``.

    Each record reaches the operating system with one write() as it arrives, so
    a killed process loses nothing; fsync runs every ``fsync_interval_s`` (and
    on close) to bound what a power cut can take, without wearing out an SD
    card with one sync per second.
    """

    def __init__(
        self,
        path: Path,
        *,
        clock: Callable[[], float] = time.time,
        fsync_interval_s: float = DEFAULT_FSYNC_INTERVAL_S,
    ) -> None:
        self.path = path
        self._clock = clock
        self._fsync_interval_s = fsync_interval_s
        self._fd: int | None = None
        self._synced_at = 0.0
        self.records_written = 0
        self.records_lost = 0
        self._failing = False

    def open(self) -> None:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self._synced_at = self._clock()

    def __call__(self, raw: bytes, valid: bool) -> None:
        self.write(raw, valid, self._clock())

    def write(self, raw: bytes, valid: bool, received_at_s: float) -> bool:
        """Append one record; a disk problem is logged once and counted, never raised.  True when written."""
        try:
            self.append(encode_record(raw, valid, received_at_s))
        except OSError as exc:
            self.records_lost += 1
            self._close_quietly()  # reopen on the next record: the disk may come back
            if not self._failing:
                logger.error("cannot write the archive %s (%s); telegrams are not archived until it works again",
                             self.path, exc.strerror or exc)
                self._failing = True
            return False
        self.records_written += 1
        if self._failing:
            logger.info("archive %s is written again; %d telegrams were not archived", self.path, self.records_lost)
            self._failing = False
        return True

    def append(self, record: bytes) -> None:
        self.open()
        assert self._fd is not None
        view = memoryview(record)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        now = self._clock()
        if now - self._synced_at >= self._fsync_interval_s:
            os.fsync(self._fd)
            self._synced_at = now

    def close(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _close_quietly(self) -> None:
        try:
            self.close()
        except OSError:
            pass


class _Stopped(Exception):
    """The archive is closing: leave unfinished compression for the next start."""


@dataclass
class ArchiveStats:
    files_compressed: int = 0
    files_pruned: int = 0
    bytes_pruned: int = 0
    errors: list[str] = field(default_factory=list)


class ArchiveWriter:
    """Daily archive files in ``directory``: rotate at local midnight, compress finished days, prune.

    Callable as a raw observer. ``keep_days`` (0: no age limit) deletes the
    files of days more than that many days before today; ``max_bytes`` (0: no
    limit) deletes the oldest files while the archive is larger. Both are
    applied at start and at each change of day; today's file is never deleted.
    """

    def __init__(
        self,
        directory: Path,
        zone: ZoneInfo,
        *,
        keep_days: int = 0,
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Callable[[], float] = time.time,
        fsync_interval_s: float = DEFAULT_FSYNC_INTERVAL_S,
        background: bool = True,
    ) -> None:
        if keep_days < 0:
            raise ConfigError(f"the archive age limit must be 0 (none) or a number of days, not {keep_days}")
        if max_bytes < 0:
            raise ConfigError(f"the archive size limit must be 0 (none) or a number of bytes, not {max_bytes}")
        self.directory = directory
        self.zone = zone
        self.keep_days = keep_days
        self.max_bytes = max_bytes
        self._clock = clock
        self._fsync_interval_s = fsync_interval_s
        self._background = background
        self._lock = threading.Lock()
        self._file: RecordFile | None = None
        self._day_start_s = 0.0
        self._day_end_s = 0.0
        self._lock_fd: int | None = None
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._worker: threading.Thread | None = None
        self.stats = ArchiveStats()
        self.records_written = 0
        self.records_lost = 0
        self._pruned_warning = False

    # -- life cycle

    def open(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._take_lock()
            for stale in self.directory.glob(f"p1-*.txt.gz{_TEMP_SUFFIX}"):
                stale.unlink()  # a compression a crash interrupted; its plain file is still there
        except OSError as exc:
            raise ConfigError(f"cannot use the archive directory {self.directory} ({exc.strerror or exc}): "
                              "fix P1_ARCHIVE_DIR") from None
        if self._background:
            self._worker = threading.Thread(target=self._work, name="p1-archive", daemon=True)
            self._worker.start()
        self._schedule_maintenance()

    def _take_lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # not on Windows; there a second writer is not detected
            return
        fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise ConfigError(f"another p1logger is already archiving into {self.directory}: "
                              "give each logger its own archive directory") from None
        self._lock_fd = fd

    def close(self) -> None:
        self._closing.set()
        self._wake.set()
        if self._worker is not None:
            self._worker.join(timeout=10)
        with self._lock:
            if self._file is not None:
                try:
                    self._file.close()
                except OSError as exc:
                    logger.warning("cannot close the archive file %s: %s", self._file.path, exc.strerror or exc)
                self._file = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- writing (the reader thread)

    def __call__(self, raw: bytes, valid: bool) -> None:
        self.write(raw, valid, self._clock())

    def write(self, raw: bytes, valid: bool, received_at_s: float) -> None:
        rotated = False
        with self._lock:
            if self._file is None or not self._day_start_s <= received_at_s < self._day_end_s:
                self._rotate(received_at_s)
                rotated = True
            assert self._file is not None
            if self._file.write(raw, valid, received_at_s):
                self.records_written += 1
            else:
                self.records_lost += 1
        if rotated:
            self._schedule_maintenance()

    @property
    def current_path(self) -> Path | None:
        with self._lock:
            return None if self._file is None else self._file.path

    def _rotate(self, now_s: float) -> None:
        day = datetime.fromtimestamp(now_s, self.zone).date()
        if self._file is not None:
            try:
                self._file.close()
            except OSError as exc:
                logger.warning("cannot close the archive file %s: %s", self._file.path, exc.strerror or exc)
        self._file = RecordFile(self.day_path(day), clock=self._clock, fsync_interval_s=self._fsync_interval_s)
        self._day_start_s = self._midnight_s(day)
        self._day_end_s = self._midnight_s(day + timedelta(days=1))

    def day_path(self, day: date) -> Path:
        return self.directory / f"p1-{day.isoformat()}.txt"

    def _midnight_s(self, day: date) -> float:
        return datetime(day.year, day.month, day.day, tzinfo=self.zone).timestamp()

    # -- compression and pruning (a background thread)

    def _schedule_maintenance(self) -> None:
        if self._background:
            self._wake.set()
        else:
            self.maintain()

    def _work(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._closing.is_set():
                return
            try:
                self.maintain()
            except _Stopped:
                return
            except Exception:  # noqa: BLE001 - the archive must not stop the logger
                logger.exception("archive maintenance failed in %s", self.directory)

    def maintain(self) -> None:
        """Compress every finished day, then prune to the bounds."""
        # Today's file may not be open yet (right after a restart), but it is still being written.
        today = self.day_path(datetime.fromtimestamp(self._clock(), self.zone).date())
        in_use = {self.current_path, today}
        for path in archive_files(self.directory):
            if path.suffix == ".txt" and path not in in_use:
                try:
                    self._compress(path)
                except OSError as exc:
                    self._note_error(f"cannot compress {path}: {exc.strerror or exc}")
        self._prune(in_use)

    def _compress(self, path: Path) -> None:
        target = path.with_name(path.name + ".gz")
        size = path.stat().st_size
        number = 0
        while target.exists():
            if _gzip_isize(target) == size % (1 << 32):
                # A crash came between the rename and the unlink: the .gz is this file, complete.
                path.unlink()
                _fsync_directory(self.directory)
                return
            # The clock went back to a day already compressed: keep both.
            number += 1
            target = path.with_name(f"{path.stem}.{number}.txt.gz")
        temporary = target.with_name(target.name + _TEMP_SUFFIX)
        try:
            with open(path, "rb") as source, open(temporary, "wb") as raw:
                with gzip.GzipFile(filename=path.name, mode="wb", fileobj=raw, compresslevel=6) as packed:
                    while chunk := source.read(_COPY_CHUNK_BYTES):
                        if self._closing.is_set():
                            raise _Stopped
                        packed.write(chunk)
                raw.flush()
                os.fsync(raw.fileno())
            os.replace(temporary, target)
            _fsync_directory(self.directory)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        path.unlink()
        _fsync_directory(self.directory)
        self.stats.files_compressed += 1
        logger.info("archive: compressed %s to %s", path.name, target.name)

    def _prune(self, in_use: set[Path | None]) -> None:
        files = [(path, path.stat().st_size) for path in archive_files(self.directory)]
        total = sum(size for _, size in files)
        if self.keep_days:
            today = datetime.fromtimestamp(self._clock(), self.zone).date()
            oldest_kept = (today - timedelta(days=self.keep_days)).isoformat()
            for path, size in list(files):
                match = FILE_NAME.match(path.name)
                if path not in in_use and match is not None and match.group(1) < oldest_kept:
                    if self._delete(path, size, f"older than {self.keep_days} days"):
                        files.remove((path, size))
                        total -= size
        if self.max_bytes:
            for path, size in list(files):
                if total <= self.max_bytes:
                    break
                if path in in_use:
                    continue
                if self._delete(path, size, f"the archive is over {self.max_bytes} bytes"):
                    total -= size
            if total > self.max_bytes and not self._pruned_warning:
                self._pruned_warning = True
                logger.warning("archive %s: today's file alone is over the %d-byte limit", self.directory,
                               self.max_bytes)

    def _delete(self, path: Path, size: int, why: str) -> bool:
        try:
            path.unlink()
        except OSError as exc:
            self._note_error(f"cannot delete {path}: {exc.strerror or exc}")
            return False
        self.stats.files_pruned += 1
        self.stats.bytes_pruned += size
        logger.info("archive: deleted %s (%d bytes): %s", path.name, size, why)
        return True

    def _note_error(self, message: str) -> None:
        logger.error("archive: %s", message)
        if len(self.stats.errors) < 100:
            self.stats.errors.append(message)


def _gzip_isize(path: Path) -> int | None:
    """The uncompressed size (mod 2**32) a complete gzip file records in its last 4 bytes."""
    try:
        with open(path, "rb") as packed:
            packed.seek(-4, os.SEEK_END)
            return int.from_bytes(packed.read(4), "little")
    except OSError:
        return None


# ------------------------------------------------------------------ the output


class ArchiveOutput:
    """The `Output` contract: every framed telegram, valid or not, from the reader thread, into the archive."""

    name = "archive"
    wants_figures = False

    def __init__(self, writer: ArchiveWriter) -> None:
        self.writer = writer

    def start(self) -> None:
        self.writer.open()
        logger.info("archiving every telegram in %s", self.writer.directory)

    def submit(self, record: Record) -> None:
        pass

    def submit_health(self, snapshot: Mapping[str, object], lines: Sequence[str]) -> None:
        pass

    def observe_raw(self, raw: bytes, valid: bool, received_at_s: float) -> None:
        self.writer.write(raw, valid, received_at_s)

    def close(self, budget_s: float | None = None) -> None:
        self.writer.close()

    def health(self) -> Mapping[str, object]:
        return {"records_written": self.writer.records_written, "records_lost": self.writer.records_lost,
                "files_compressed": self.writer.stats.files_compressed, "files_pruned": self.writer.stats.files_pruned}


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("raw archive")
    settings_table.add(group, "P1_ARCHIVE_DIR")
    add_archive_bound_arguments(group)


def add_archive_bound_arguments(group: argparse._ArgumentGroup) -> None:  # the record command shares them
    settings_table.add(group, "P1_ARCHIVE_KEEP_DAYS", "P1_ARCHIVE_MAX_BYTES")


def writer_from_args(args: Any, directory: Path, zone: ZoneInfo) -> ArchiveWriter:
    """An archive writer with the --archive-* bounds; not opened yet."""
    return ArchiveWriter(directory, zone, keep_days=args.archive_keep_days, max_bytes=args.archive_max_bytes)


def _create(settings: Any, context: RunContext) -> Output:
    return ArchiveOutput(writer_from_args(settings, Path(settings.archive), context.zone))


def _check(settings: Any) -> list[Check]:
    # Looks without touching: no lock taken, nothing created, so a running logger is not disturbed.
    directory = Path(settings.archive)
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return [Check(False, f"archive: {existing} is not a directory: fix P1_ARCHIVE_DIR")]
    if not os.access(existing, os.W_OK | os.X_OK):
        return [Check(False, f"archive: {existing} is not writable: fix its permissions or P1_ARCHIVE_DIR")]
    state = "exists" if existing == directory else "will be created"
    return [Check(True, f"archive: {directory} {state} and is writable")]


SPEC = OutputSpec("archive", add_run_arguments, lambda settings: bool(getattr(settings, "archive", None)),
                  _create, _check)
