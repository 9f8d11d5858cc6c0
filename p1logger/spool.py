"""A durable, bounded on-disk spool for batches InfluxDB could not take.

When a write fails (database down, auth error, 404) the writer puts the batch
here and drains the spool, oldest batch first, once InfluxDB answers again::

    spool.put(lines)                     # the write failed
    ...
    while (batch := spool.oldest()) is not None:
        sink.write(batch.lines)          # raises while InfluxDB is still down
        spool.ack(batch.id)

Delivery is at-least-once. A batch is removed only by :meth:`Spool.ack`, after
InfluxDB has accepted it, so a crash between the write and the ack makes the
next run write the same batch again. That creates no duplicates: InfluxDB
identifies a point by its measurement, tag set and timestamp, and a second
write of the same point only overwrites its fields with the same values. This
relies on every spooled line carrying its own timestamp (p1logger always
writes one), because a line without one would be stamped with the server's
time on each replay.

One sqlite3 file holds the batches, each as zlib-compressed text with its
point count and stored size, so the backlog can be counted and bounded
without decompressing anything. The bound (``max_bytes``) applies to those
compressed bytes; the file itself is a little larger (sqlite pages and the
write-ahead log) and gives its free pages back to the file system whenever
the spool has been drained empty.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from p1logger.errors import ConfigError

logger = logging.getLogger(__name__)

SMALL_PAYLOAD_BYTES = 16384


def compress(data: bytes) -> bytes:
    """zlib, readable by ``zlib.decompress``; small payloads with zlib's smallest state.

    zlib's default state (about 256 KiB, set up on every call) costs ten times what compressing a live
    second's batch (1 to 2 KiB) does; the smallest state compresses such a batch as well, in 9 us, not 78.
    """
    if len(data) < SMALL_PAYLOAD_BYTES:
        small = zlib.compressobj(6, zlib.DEFLATED, 15, 1)
        return small.compress(data) + small.flush()
    return zlib.compress(data)


class SpoolUnavailable(ConfigError):
    """The spool file cannot be opened for now (a full disk, an I/O error), though nothing is misconfigured."""

DEFAULT_MAX_BYTES = 1 << 30
# Marks a file as ours in the sqlite header, so a database that belongs to
# another program is refused instead of being written into.
APPLICATION_ID = 0x50314C47  # "P1LG"
SCHEMA_VERSION = 1
# A full spool drops points on every put; one warning per kind of drop per
# interval (with the total since the last one) keeps a long outage from
# flooding the log and wearing out an SD card.
DEFAULT_WARN_INTERVAL_S = 60.0
# After a checkpoint the write-ahead log is cut back to this size, so one
# large burst does not leave a big -wal file behind for good.
_WAL_SIZE_LIMIT_BYTES = 4 << 20
_BUSY_TIMEOUT_S = 5.0
_PAGE_SIZE_BYTES = 1024
_FIX = "move it away or set P1_SPOOL_DIR"

_SCHEMA = """
CREATE TABLE batches (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_s REAL NOT NULL,
    points INTEGER NOT NULL,
    stored_bytes INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE TABLE counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT INTO counters (name, value) VALUES ('dropped_points', 0);
"""
_ADD_DROPPED_SQL = "UPDATE counters SET value = value + ? WHERE name = 'dropped_points'"


@dataclass(frozen=True)
class SpoolBatch:
    """One spooled batch: pass ``id`` to :meth:`Spool.ack` once written."""

    id: int
    lines: list[str]


class Spool:
    """Batches waiting for InfluxDB, in one sqlite file, oldest first.

    Every method may be called from any thread (a lock serialises them), but
    the design has one user: the writer thread, which puts and drains. The
    backlog counters are plain attributes, cheap to read for health reports.

    ``clock`` (wall time, seconds) stamps each batch and paces the warnings.
    """

    def __init__(
        self,
        path: Path,
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Callable[[], float] = time.time,
        warn_interval_s: float = DEFAULT_WARN_INTERVAL_S,
    ) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
            raise ConfigError(f"spool size limit must be a whole number of bytes >= 1, got {max_bytes!r}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._clock = clock
        self._warn_interval_s = warn_interval_s
        self._lock = threading.Lock()
        self.backlog_batches = 0
        self.backlog_points = 0
        self.backlog_bytes = 0
        self.dropped_points = 0
        """Points this spool object dropped since it was opened."""
        self.dropped_points_total = 0
        """Points dropped over the file's whole life, across restarts."""
        # kind of drop -> (points not yet reported, latest reason text)
        self._unreported: dict[str, tuple[int, str]] = {}
        self._last_warning_s: dict[str, float] = {}
        self.moved_aside_to: Path | None = None
        """Where a damaged spool file was kept, when one was found at start."""
        # Batches sent and acknowledged whose removal failed (a full disk): skipped, removed later.
        self._acked: set[int] = set()
        self.evicted_up_to = 0  # the newest batch id a full spool has dropped, with every older one
        self.storage_errors = 0
        """Reads, removals or writes the storage refused (counted; logged at a bounded rate)."""
        self._conn: sqlite3.Connection | None = self._open()

    # -- opening -----------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        if self.path.is_dir():
            raise ConfigError(f"spool file {self.path} is a directory; {_FIX}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot create spool directory {self.path.parent} ({exc.strerror}); "
                "make it writable or set P1_SPOOL_DIR"
            ) from None
        try:
            return self._connect()
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError):
                error = self._storage_error(exc)
                reason = str(exc).lower()
                writable = os.access(self.path.parent, os.W_OK | os.X_OK)
                if writable and ("full" in reason or "i/o" in reason):
                    raise SpoolUnavailable(str(error)) from None
                raise error from None
            # A file damaged by a power cut must not keep the logger from starting:
            # keep it for a person to look at, and start a fresh spool.
            self._move_aside(exc)
        try:
            return self._connect()
        except sqlite3.Error as exc:
            raise self._storage_error(exc) from None

    def _connect(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = None
        try:
            # Autocommit mode: transactions are opened explicitly below.
            # check_same_thread=False because self._lock serialises access.
            conn = sqlite3.connect(
                str(self.path),
                timeout=_BUSY_TIMEOUT_S,
                isolation_level=None,
                check_same_thread=False,
            )
            self._prepare(conn)
            self._load_counters(conn)
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        return conn

    def _move_aside(self, exc: BaseException) -> None:
        """Rename a damaged spool (and its -wal/-shm) with a timestamp, so a fresh one can start."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self._clock()))
        kept = self.path.with_name(f"{self.path.name}.damaged-{stamp}")
        number = 1
        while kept.exists():
            number += 1
            kept = self.path.with_name(f"{self.path.name}.damaged-{stamp}-{number}")
        reason = " ".join(str(exc).split()) or type(exc).__name__
        try:
            for suffix in ("-wal", "-shm"):
                companion = self.path.with_name(self.path.name + suffix)
                if companion.exists():
                    os.replace(companion, kept.with_name(kept.name + suffix))
            os.replace(self.path, kept)
        except OSError as move_error:
            raise ConfigError(f"spool file {self.path} is damaged ({reason}) and cannot be moved aside "
                              f"({move_error.strerror or move_error}); {_FIX}") from None
        self.moved_aside_to = kept
        logger.error("spool file %s is damaged (%s): kept it as %s and started a fresh spool; the points in it "
                     "are not sent", self.path, reason, kept)

    def _prepare(self, conn: sqlite3.Connection) -> None:
        # Identify the file before changing anything in it: another program's
        # database must be left exactly as it was.
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        fresh = app_id == 0 and tables == 0
        if fresh:
            # Every batch is spooled when it is cut and removed once sent: a few pages written per
            # second. Small pages make that a few KB instead of 12 (SD cards wear by the byte).
            conn.execute(f"PRAGMA page_size={_PAGE_SIZE_BYTES}")
            # Lets a drained spool hand its pages back to the file system.
            # Only takes effect before the journal mode and the first table.
            conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        elif app_id != APPLICATION_ID:
            raise ConfigError(f"spool file {self.path} is not a valid spool (it belongs to another program); {_FIX}")
        else:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version != SCHEMA_VERSION:
                raise ConfigError(
                    f"spool file {self.path} is not a valid spool (format version {version}, "
                    f"this p1logger reads {SCHEMA_VERSION}); {_FIX}"
                )
        # No PRAGMA quick_check: it reads the whole file, up to a minute for a
        # full spool on an SD card while the meter goes unread. A truncated
        # file already fails the counting query in _load_counters, and a
        # damaged batch is caught when oldest() reads it.

        # WAL with synchronous=NORMAL: a commit is appended to the log without
        # an fsync, and the log is synced at each checkpoint. A process crash
        # (kill -9, OOM killer, container stop) loses nothing that was
        # committed; only an OS crash or power cut can roll back the most
        # recent commits, and it cannot corrupt the file. synchronous=FULL
        # would fsync once per batch, wearing an SD card to guard against the
        # rarer failure.
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() == "wal":
            conn.execute("PRAGMA synchronous=NORMAL")
        else:
            # Some network file systems cannot do WAL. The rollback journal
            # needs FULL to stay uncorrupted across a power cut.
            logger.warning(
                "spool file %s cannot use WAL mode (got %s); using the slower rollback journal",
                self.path,
                mode,
            )
            conn.execute("PRAGMA synchronous=FULL")
        conn.execute(f"PRAGMA journal_size_limit={_WAL_SIZE_LIMIT_BYTES}")
        if fresh:
            # One transaction, header fields included: a crash part-way leaves
            # an empty file that is simply created again on the next start.
            conn.executescript(
                "BEGIN IMMEDIATE;"
                + _SCHEMA
                + f"PRAGMA user_version={SCHEMA_VERSION};PRAGMA application_id={APPLICATION_ID};COMMIT;"
            )

    def _load_counters(self, conn: sqlite3.Connection) -> None:
        batches, points, stored = conn.execute(
            "SELECT count(*), coalesce(sum(points), 0), coalesce(sum(stored_bytes), 0) FROM batches"
        ).fetchone()
        self.backlog_batches, self.backlog_points, self.backlog_bytes = batches, points, stored
        self.dropped_points_total = conn.execute(
            "SELECT value FROM counters WHERE name = 'dropped_points'"
        ).fetchone()[0]
        if batches:
            logger.info("spool %s holds %d points in %d batches from an earlier run", self.path, points, batches)

    def _storage_error(self, exc: sqlite3.Error) -> ConfigError:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        if isinstance(exc, sqlite3.OperationalError):
            # Permissions, a full disk, a lock held by another process: the
            # file may be fine, its surroundings are not.
            return ConfigError(
                f"cannot use spool file {self.path} ({reason}); check that its directory is writable, "
                "has free space and is not used by another p1logger, or set P1_SPOOL_DIR"
            )
        return ConfigError(f"spool file {self.path} is not a valid spool ({reason}); {_FIX}")

    # -- the writer's interface --------------------------------------------

    def put(self, lines: Sequence[str], *, drop_on_failure: bool = True) -> int | None:
        """Store one batch and return its id. Drops (and counts) the oldest batches if full.

        Never raises for a storage problem: a batch that cannot be stored
        (larger than the whole spool, or the disk is full) is dropped, counted
        and logged, and None is returned; with ``drop_on_failure=False`` a
        full disk is only counted in ``storage_errors`` and the caller keeps
        the batch elsewhere.
        Raises ValueError, storing nothing, for a line that contains a newline
        or cannot be encoded as UTF-8 (InfluxDB could not take it either).
        """
        if isinstance(lines, str):
            raise TypeError("Spool.put() takes a sequence of lines, not a single str")
        if not lines:
            return None
        text = "\n".join(lines)
        if text.count("\n") != len(lines) - 1:
            # Line protocol separates points by newlines; such a line could
            # not be written to InfluxDB either, so it is a bug upstream.
            raise ValueError("a line-protocol line contains a newline; escape it before spooling")
        payload = compress(text.encode("utf-8"))
        points, stored_bytes = len(lines), len(payload)
        with self._lock:
            conn = self._connection()
            if stored_bytes > self.max_bytes:
                self._persist_drop(conn, points)
                self._record_drop(
                    "too_big",
                    points,
                    f"one batch of {stored_bytes} bytes is larger than the whole spool "
                    f"({self.max_bytes} bytes); raise P1_SPOOL_MAX_BYTES",
                )
                return None
            evicted_batches = evicted_points = evicted_bytes = 0
            evicted_up_to = 0
            try:
                with self._transaction(conn):
                    excess = self.backlog_bytes + stored_bytes - self.max_bytes
                    if excess > 0:
                        evicted_batches, evicted_points, evicted_bytes, evicted_up_to = self._evict_oldest(
                            conn, excess)
                    cursor = conn.execute(
                        "INSERT INTO batches (created_s, points, stored_bytes, payload) VALUES (?, ?, ?, ?)",
                        (self._clock(), points, stored_bytes, payload),
                    )
                    batch_id = cursor.lastrowid
            except sqlite3.Error as exc:
                reason = " ".join(str(exc).split())
                what = f"cannot write to spool file {self.path} ({reason}); free disk space or set P1_SPOOL_DIR"
                if drop_on_failure:
                    self._record_drop("write_failed", points, what)
                else:
                    self._storage_trouble("write", what)
                return None
            self._acked = {batch_id for batch_id in self._acked if batch_id > evicted_up_to}
            self.evicted_up_to = max(self.evicted_up_to, evicted_up_to)
            self.backlog_batches += 1 - evicted_batches
            self.backlog_points += points - evicted_points
            self.backlog_bytes += stored_bytes - evicted_bytes
            if evicted_points:
                self.dropped_points_total += evicted_points
                self._record_drop(
                    "full",
                    evicted_points,
                    f"spool full ({self.max_bytes} bytes), the oldest batches were dropped; "
                    "raise P1_SPOOL_MAX_BYTES or fix the database",
                )
            return batch_id

    def _evict_oldest(self, conn: sqlite3.Connection, excess_bytes: int) -> tuple[int, int, int, int]:
        """Delete the fewest oldest rows that free ``excess_bytes`` of backlog; return what went, and up to
        which id."""
        batches = points = freed = 0
        last_id = 0
        cursor = conn.execute("SELECT id, points, stored_bytes FROM batches ORDER BY id")
        for row_id, row_points, row_bytes in cursor:
            last_id = row_id
            if row_id in self._acked:
                # Sent already (its removal had failed): it goes too, but it is not backlog, and not a drop.
                continue
            batches, points, freed = batches + 1, points + row_points, freed + row_bytes
            if freed >= excess_bytes:
                break
        cursor.close()
        if last_id:
            conn.execute("DELETE FROM batches WHERE id <= ?", (last_id,))
            conn.execute(_ADD_DROPPED_SQL, (points,))
        return batches, points, freed, last_id

    def oldest(self, after_id: int = 0) -> SpoolBatch | None:
        """The oldest batch (with an id above ``after_id``), left in place until :meth:`ack`; None when none.

        A batch whose stored text cannot be read back is removed, counted as
        dropped and logged, so one bad row cannot block the drain forever. A
        storage error is counted and logged at a bounded rate, and reads as
        None (try again later); a file found damaged is moved aside.
        """
        with self._lock:
            conn = self._connection()
            try:
                try:
                    self._retry_removals(conn)
                except sqlite3.OperationalError:
                    pass  # still no room: the sent batches stay skipped, and the drain goes on
                while True:
                    row = conn.execute(
                        "SELECT id, points, payload FROM batches WHERE id > ? ORDER BY id LIMIT 1", (after_id,)
                    ).fetchone()
                    if row is None:
                        return None
                    row_id, points, payload = row
                    if row_id in self._acked:
                        after_id = row_id
                        continue
                    try:
                        lines = zlib.decompress(payload).decode("utf-8").split("\n")
                        if len(lines) != points:
                            raise ValueError(f"{len(lines)} lines where {points} were stored")
                    except (zlib.error, UnicodeDecodeError, ValueError, TypeError) as exc:
                        self._remove(conn, row_id, count_as_dropped=True)
                        self._record_drop(
                            "unreadable",
                            points,
                            f"a spooled batch in {self.path} was unreadable ({exc}) and was removed",
                        )
                        continue
                    return SpoolBatch(id=row_id, lines=lines)
            except sqlite3.DatabaseError as exc:
                self._storage_failed(exc, "read")
                return None

    def ack(self, batch_id: int) -> bool:
        """Remove a batch the destination has accepted; False if it was already gone.

        Never raises for a storage problem: a removal the disk refuses is
        remembered, the batch is never handed out again by :meth:`oldest`,
        and the removal is tried again later.
        """
        with self._lock:
            conn = self._connection()
            try:
                try:
                    self._retry_removals(conn)
                except sqlite3.OperationalError:
                    pass  # tried again at the next removal
                return self._remove(conn, batch_id, count_as_dropped=False)
            except sqlite3.DatabaseError as exc:
                if batch_id in self._acked:
                    return False
                try:
                    row = conn.execute("SELECT points, stored_bytes FROM batches WHERE id = ?",
                                       (batch_id,)).fetchone()
                except sqlite3.DatabaseError:
                    row = None
                self._storage_failed(exc, "remove a sent batch from")
                if row is None:
                    return False
                self._acked.add(batch_id)
                self.backlog_batches -= 1
                self.backlog_points -= row[0]
                self.backlog_bytes -= row[1]
                return True

    def _retry_removals(self, conn: sqlite3.Connection) -> None:
        if not self._acked:
            return
        ids = sorted(self._acked)
        with self._transaction(conn):
            conn.executemany("DELETE FROM batches WHERE id = ?", [(i,) for i in ids])
        self._acked.clear()
        logger.info("spool %s: removed %d sent batches whose removal had failed", self.path, len(ids))

    def _storage_failed(self, exc: sqlite3.DatabaseError, doing: str) -> None:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        if not isinstance(exc, sqlite3.OperationalError):
            self._restart_damaged(exc)
            return
        self._storage_trouble(doing, f"cannot {doing} spool file {self.path} ({reason}); free disk space "
                                     "or set P1_SPOOL_DIR")

    def _storage_trouble(self, kind: str, message: str) -> None:
        """Count a storage error; log it at most once per interval per kind."""
        self.storage_errors += 1
        now = self._clock()
        last = self._last_warning_s.get(f"storage:{kind}")
        if last is None or now - last >= self._warn_interval_s:
            self._last_warning_s[f"storage:{kind}"] = now
            logger.warning("%s (%d storage errors since start)", message, self.storage_errors)

    def _restart_damaged(self, exc: BaseException) -> None:
        """The file turned out damaged while running: keep it aside and go on with a fresh one."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        lost = self.backlog_points
        self._move_aside(exc)
        self.backlog_batches = self.backlog_points = self.backlog_bytes = 0
        self._acked.clear()
        if lost:
            self._record_drop("damaged", lost, f"spool file {self.path} was damaged; it was kept aside")
        self._conn = self._connect()

    def _remove(self, conn: sqlite3.Connection, batch_id: int, *, count_as_dropped: bool) -> bool:
        with self._transaction(conn):
            row = conn.execute("SELECT points, stored_bytes FROM batches WHERE id = ?", (batch_id,)).fetchone()
            if row is None:
                return False
            points, stored_bytes = row
            conn.execute("DELETE FROM batches WHERE id = ?", (batch_id,))
            if count_as_dropped:
                conn.execute(_ADD_DROPPED_SQL, (points,))
        self.backlog_batches -= 1
        self.backlog_points -= points
        self.backlog_bytes -= stored_bytes
        if count_as_dropped:
            self.dropped_points_total += points
        if self.backlog_batches == 0 and not self._acked:
            # Drained: give the pages back, so an outage does not leave a
            # large file behind. A no-op on an already compact file.
            # executescript, because execute() steps this pragma only once,
            # which frees a single page.
            try:
                conn.executescript("PRAGMA incremental_vacuum;")
            except sqlite3.OperationalError:
                pass  # a full disk: the space comes back at the next drain
        return True

    def close(self) -> None:
        """Report any drops not yet logged and close the file. Idempotent."""
        with self._lock:
            self._flush_warnings()
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> Spool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- helpers -----------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError(f"spool {self.path} is closed")
        return self._conn

    @staticmethod
    @contextmanager
    def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            conn.execute("COMMIT")
        except BaseException:
            # Also after a failed COMMIT (disk full), which leaves the
            # transaction open and would block every later BEGIN.
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # the original error is the one worth raising
            raise

    def _persist_drop(self, conn: sqlite3.Connection, points: int) -> None:
        """Add a drop to the file's lifetime counter; best effort."""
        try:
            conn.execute(_ADD_DROPPED_SQL, (points,))
        except sqlite3.Error:
            return
        self.dropped_points_total += points

    def _record_drop(self, kind: str, points: int, reason: str) -> None:
        """Count dropped points and warn, at most once per kind per interval."""
        self.dropped_points += points
        unreported_points = self._unreported.get(kind, (0, reason))[0]
        self._unreported[kind] = (unreported_points + points, reason)
        now = self._clock()
        last = self._last_warning_s.get(kind)
        if last is None or now - last >= self._warn_interval_s:
            self._warn(kind, now)

    def _warn(self, kind: str, now: float) -> None:
        points, reason = self._unreported.pop(kind)
        self._last_warning_s[kind] = now
        logger.warning("spool dropped %d points (%d since start): %s", points, self.dropped_points, reason)

    def _flush_warnings(self) -> None:
        now = self._clock()
        for kind in list(self._unreported):
            self._warn(kind, now)
