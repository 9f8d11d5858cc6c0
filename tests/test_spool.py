"""Spool: exact round trips, oldest-first draining, the byte bound, restarts."""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p1logger.errors import ConfigError
from p1logger.spool import SMALL_PAYLOAD_BYTES, Spool, SpoolBatch, compress


class FakeClock:
    def __init__(self, now_s: float = 1_700_000_000.0) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


def lines(start: int, count: int, meter: str = "E0043007017512345") -> list[str]:
    # Varying values so that batches of different lengths compress to
    # clearly different sizes.
    return [
        f"power,meter={meter} import_w={(i * 7919) % 9973}.0,export_w={(i * 104729) % 313}.0 {1589284449 + i}"
        for i in range(start, start + count)
    ]


def stored_size(batch: list[str]) -> int:
    return len(compress("\n".join(batch).encode("utf-8")))


def spool_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "p1logger.spool" and r.levelno == logging.WARNING]


def test_round_trip_is_exact(tmp_path: Path) -> None:
    batch = [
        r"power,meter=E\ 1\,x import_w=234.0,export_w=0.0 1589284449",
        'p1logger,instance=pi note="quote \\" and backslash \\\\",queue_depth=0i 1589284450',
        "gas,channel=1,device=G0028 volume_m3=1234.567 1589284000",
        "energy,meter=ü€ active_tariff=2i 1589284451",
        "",
    ]
    with Spool(tmp_path / "spool.db") as spool:
        spool.put(batch)

        assert spool.backlog_batches == 1
        assert spool.backlog_points == 5
        assert spool.backlog_bytes == stored_size(batch)
        got = spool.oldest()
        assert got is not None
        assert got.lines == batch


@settings(max_examples=50, deadline=None)
# Surrogates are excluded: they cannot be UTF-8 encoded, and put() refuses
# them (tested in test_bad_input_is_refused_and_nothing_stored).
@given(
    st.lists(
        st.text(alphabet=st.characters(exclude_characters="\n", exclude_categories=("Cs",))),
        min_size=1,
        max_size=20,
    )
)
def test_any_lines_without_newlines_round_trip(tmp_path_factory: pytest.TempPathFactory, batch: list[str]) -> None:
    with Spool(tmp_path_factory.mktemp("spool") / "spool.db") as spool:
        spool.put(batch)
        got = spool.oldest()
        assert got is not None
        assert got.lines == batch
        assert spool.backlog_points == len(batch)


def test_drains_oldest_first_and_ack_removes(tmp_path: Path) -> None:
    batches = [lines(0, 3), lines(3, 1), lines(4, 5)]
    with Spool(tmp_path / "spool.db") as spool:
        for batch in batches:
            spool.put(batch)
        assert spool.backlog_batches == 3
        assert spool.backlog_points == 9
        assert spool.backlog_bytes == sum(stored_size(b) for b in batches)

        first = spool.oldest()
        assert first is not None
        assert first.lines == batches[0]
        assert spool.oldest() == first  # not removed without an ack

        assert spool.ack(first.id) is True
        assert spool.backlog_points == 6
        second = spool.oldest()
        assert second is not None
        assert second.lines == batches[1]
        assert second.id > first.id

        assert spool.ack(second.id) is True
        third = spool.oldest()
        assert third is not None
        assert third.lines == batches[2]
        assert spool.ack(third.id) is True

        assert spool.oldest() is None
        assert (spool.backlog_batches, spool.backlog_points, spool.backlog_bytes) == (0, 0, 0)
        assert spool.dropped_points == 0


def test_ack_of_a_batch_already_gone_is_false(tmp_path: Path) -> None:
    with Spool(tmp_path / "spool.db") as spool:
        spool.put(lines(0, 2))
        batch = spool.oldest()
        assert batch is not None

        assert spool.ack(batch.id) is True
        assert spool.ack(batch.id) is False
        assert spool.ack(12345) is False
        assert spool.backlog_points == 0


def test_empty_put_stores_nothing(tmp_path: Path) -> None:
    with Spool(tmp_path / "spool.db") as spool:
        spool.put([])

        assert spool.backlog_batches == 0
        assert spool.oldest() is None


def test_bad_input_is_refused_and_nothing_stored(tmp_path: Path) -> None:
    with Spool(tmp_path / "spool.db") as spool:
        with pytest.raises(ValueError, match="contains a newline"):
            spool.put(["power import_w=1.0 1\npower import_w=2.0 2"])
        with pytest.raises(TypeError, match="not a single str"):
            spool.put("power import_w=1.0 1")
        with pytest.raises(ValueError, match="surrogates not allowed"):
            spool.put(["power,meter=\ud800 import_w=1.0 1"])

        assert spool.backlog_batches == 0
        assert spool.oldest() is None


def test_full_spool_drops_exactly_the_oldest_batches(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    batches = [lines(0, 10), lines(10, 20), lines(30, 30), lines(60, 200)]
    s1, s2, s3, s4 = (stored_size(b) for b in batches)
    # Room for the first three; the fourth needs s1 + 1 more bytes, so the
    # two oldest go (s1 alone is not enough) and the third stays.
    max_bytes = s2 + s3 + s4 - 1
    assert s1 + s2 + s3 <= max_bytes
    assert s1 < s1 + s2 + s3 + s4 - max_bytes <= s1 + s2

    caplog.set_level(logging.WARNING, logger="p1logger.spool")
    with Spool(tmp_path / "spool.db", max_bytes=max_bytes, clock=FakeClock()) as spool:
        for batch in batches[:3]:
            spool.put(batch)
        assert spool.dropped_points == 0
        assert spool_warnings(caplog) == []

        spool.put(batches[3])

        assert spool.dropped_points == 30
        assert spool.dropped_points_total == 30
        assert spool.backlog_batches == 2
        assert spool.backlog_points == 230
        assert spool.backlog_bytes == s3 + s4
        assert spool.backlog_bytes <= max_bytes
        drained = []
        while (batch := spool.oldest()) is not None:
            drained.append(batch.lines)
            spool.ack(batch.id)
        assert drained == [batches[2], batches[3]]

    assert spool_warnings(caplog) == [
        f"spool dropped 30 points (30 since start): spool full ({max_bytes} bytes), the oldest batches "
        "were dropped; raise P1_SPOOL_MAX_BYTES or fix the database"
    ]


def test_batch_larger_than_the_spool_is_dropped_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    small, huge = lines(0, 2), lines(2, 100)
    max_bytes = stored_size(small) + 10
    assert stored_size(huge) > max_bytes

    caplog.set_level(logging.WARNING, logger="p1logger.spool")
    with Spool(tmp_path / "spool.db", max_bytes=max_bytes) as spool:
        spool.put(small)
        spool.put(huge)

        assert spool.dropped_points == 100
        assert spool.dropped_points_total == 100
        assert spool.backlog_points == 2  # the older batch is kept
        batch = spool.oldest()
        assert batch is not None
        assert batch.lines == small

    assert spool_warnings(caplog) == [
        f"spool dropped 100 points (100 since start): one batch of {stored_size(huge)} bytes is larger "
        f"than the whole spool ({max_bytes} bytes); raise P1_SPOOL_MAX_BYTES"
    ]


def test_drop_warnings_are_paced_and_flushed_on_close(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    batch = lines(0, 5)
    clock = FakeClock(1000.0)
    caplog.set_level(logging.WARNING, logger="p1logger.spool")
    # Room for exactly one batch: every put after the first evicts one.
    spool = Spool(tmp_path / "spool.db", max_bytes=stored_size(batch), clock=clock, warn_interval_s=60.0)
    spool.put(batch)
    spool.put(batch)  # drop 1 -> warned at once
    clock.now_s = 1030.0
    spool.put(batch)  # drop 2 -> within the interval, held back
    clock.now_s = 1059.0
    spool.put(batch)  # drop 3 -> held back
    assert len(spool_warnings(caplog)) == 1
    clock.now_s = 1060.0
    spool.put(batch)  # drop 4 -> reports 2, 3 and 4
    clock.now_s = 1070.0
    spool.put(batch)  # drop 5 -> held back until close
    spool.close()

    assert spool.dropped_points == 25
    assert [w.split(":")[0] for w in spool_warnings(caplog)] == [
        "spool dropped 5 points (5 since start)",
        "spool dropped 15 points (20 since start)",
        "spool dropped 5 points (25 since start)",
    ]


def test_backlog_and_drop_count_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    batches = [lines(0, 4), lines(4, 6), lines(10, 8)]
    max_bytes = stored_size(batches[1]) + stored_size(batches[2])
    spool = Spool(path, max_bytes=max_bytes)
    for batch in batches:
        spool.put(batch)  # the third evicts the first
    assert spool.dropped_points == 4
    spool.close()

    reopened = Spool(path, max_bytes=max_bytes)
    try:
        assert reopened.backlog_batches == 2
        assert reopened.backlog_points == 14
        assert reopened.backlog_bytes == max_bytes
        assert reopened.dropped_points == 0  # this process dropped nothing
        assert reopened.dropped_points_total == 4
        batch = reopened.oldest()
        assert batch is not None
        assert batch.lines == batches[1]
    finally:
        reopened.close()


def test_unacked_batch_is_delivered_again_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    with Spool(path) as spool:
        spool.put(lines(0, 3))
        spool.put(lines(3, 3))
        before_crash = spool.oldest()  # written, but the process dies before ack

    with Spool(path) as spool:
        again = spool.oldest()
        assert again == before_crash
        assert isinstance(again, SpoolBatch)
        assert again.lines == lines(0, 3)
        assert spool.backlog_points == 6


def test_backlog_survives_a_process_killed_without_close(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    # os._exit skips close() and every cleanup, like kill -9: the batches
    # are still only in the write-ahead log.
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from p1logger.spool import Spool\n"
        "spool = Spool(Path(sys.argv[1]))\n"
        "spool.put(sys.argv[2].split('|'))\n"
        "spool.put(sys.argv[3].split('|'))\n"
        "os._exit(0)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    subprocess.run(
        [sys.executable, "-c", script, str(path), "|".join(lines(0, 3)), "|".join(lines(3, 2))],
        check=True,
        env=env,
        timeout=30,
    )
    assert Path(f"{path}-wal").exists()

    with Spool(path) as spool:
        assert spool.backlog_points == 5
        first = spool.oldest()
        assert first is not None
        assert first.lines == lines(0, 3)
        spool.ack(first.id)
        second = spool.oldest()
        assert second is not None
        assert second.lines == lines(3, 2)


def test_uses_wal_with_synchronous_normal(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    with Spool(path) as spool:
        spool.put(lines(0, 1))
        other = sqlite3.connect(path)
        try:
            assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        finally:
            other.close()
        # synchronous is a per-connection setting: read it on the spool's own.
        assert spool._conn is not None
        assert spool._conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL


def damaged_copies(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.name}.damaged-*"))


def test_garbage_file_is_moved_aside_with_one_error_line_and_a_fresh_spool_starts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="p1logger.spool")
    path = tmp_path / "spool.db"
    garbage = b"this is not a database, it is a text file\n" * 100
    path.write_bytes(garbage)

    with Spool(path, clock=lambda: 1700000000.0) as spool:
        kept = path.with_name("spool.db.damaged-20231114T221320Z")
        assert spool.moved_aside_to == kept
        assert damaged_copies(path) == [kept]
        assert kept.read_bytes() == garbage  # kept exactly as it was
        assert spool.put(lines(0, 3)) is not None
        batch = spool.oldest()
        assert batch is not None and batch.lines == lines(0, 3)
    errors = [(r.levelname, r.getMessage()) for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [("ERROR", f"spool file {path} is damaged (file is not a database): kept it as {kept} and "
                                "started a fresh spool; the points in it are not sent")]


def test_truncated_spool_is_moved_aside_and_the_new_one_works(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    with Spool(path) as spool:
        for start in range(0, 4000, 200):
            spool.put(lines(start, 200))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])

    with Spool(path) as spool:
        assert spool.moved_aside_to is not None
        assert spool.moved_aside_to.read_bytes() == data[: len(data) // 2]
        assert spool.backlog_points == 0
        spool.put(lines(0, 5))
        assert spool.backlog_points == 5
    with Spool(path) as spool:  # the fresh file is a good spool
        assert spool.moved_aside_to is None
        assert spool.backlog_points == 5


def test_database_of_another_program_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    other = sqlite3.connect(path)
    other.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, name TEXT)")
    other.commit()
    other.close()

    with pytest.raises(ConfigError) as raised:
        Spool(path)

    assert str(raised.value) == (
        f"spool file {path} is not a valid spool (it belongs to another program); move it away or set P1_SPOOL_DIR"
    )
    other = sqlite3.connect(path)
    try:  # refused without being touched: still in its own journal mode
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert other.execute("SELECT name FROM sqlite_master").fetchall() == [("photos",)]
    finally:
        other.close()


def test_spool_path_that_is_a_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        Spool(tmp_path)

    assert str(raised.value) == f"spool file {tmp_path} is a directory; move it away or set P1_SPOOL_DIR"


def test_unwritable_directory_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")

    with pytest.raises(ConfigError) as raised:
        Spool(blocker / "spool.db")

    assert str(raised.value).startswith(f"cannot create spool directory {blocker} (")
    assert str(raised.value).endswith("); make it writable or set P1_SPOOL_DIR")
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("max_bytes", [0, -1, 1.5, True])
def test_bad_size_limit_is_a_config_error(tmp_path: Path, max_bytes: object) -> None:
    with pytest.raises(ConfigError, match="spool size limit"):
        Spool(tmp_path / "spool.db", max_bytes=max_bytes)  # type: ignore[arg-type]
    assert not (tmp_path / "spool.db").exists()


def test_creates_missing_spool_directory(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "spool.db"
    with Spool(path) as spool:
        spool.put(lines(0, 1))

    assert path.is_file()


def test_unreadable_batch_is_removed_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "spool.db"
    caplog.set_level(logging.WARNING, logger="p1logger.spool")
    with Spool(path) as spool:
        spool.put(lines(0, 3))
        spool.put(lines(3, 4))
        first = spool.oldest()
        assert first is not None
        # Damage the stored text of the oldest batch, as a bad sector would.
        other = sqlite3.connect(path)
        other.execute("UPDATE batches SET payload = ? WHERE id = ?", (b"\x00garbage", first.id))
        other.commit()
        other.close()

        batch = spool.oldest()

        assert batch is not None
        assert batch.lines == lines(3, 4)
        assert spool.dropped_points == 3
        assert spool.dropped_points_total == 3
        assert spool.backlog_points == 4
        assert spool.backlog_batches == 1
    [warning] = spool_warnings(caplog)
    assert warning.startswith(f"spool dropped 3 points (3 since start): a spooled batch in {path} was unreadable (")
    assert warning.endswith(") and was removed")


def test_disk_full_drops_and_counts_and_the_spool_keeps_working(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="p1logger.spool")
    with Spool(tmp_path / "spool.db") as spool:
        spool.put(lines(0, 2))
        assert spool._conn is not None
        # Cap the file at its current size: the next insert hits SQLITE_FULL,
        # exactly as on a full disk.
        pages = spool._conn.execute("PRAGMA page_count").fetchone()[0]
        spool._conn.execute(f"PRAGMA max_page_count={pages}")

        spool.put(lines(2, 3000))

        assert spool.dropped_points == 3000
        assert spool.backlog_points == 2
        batch = spool.oldest()
        assert batch is not None
        assert batch.lines == lines(0, 2)
        assert spool.ack(batch.id) is True
        assert spool.backlog_batches == 0
    [warning] = spool_warnings(caplog)
    assert warning == (
        f"spool dropped 3000 points (3000 since start): cannot write to spool file {tmp_path / 'spool.db'} "
        "(database or disk is full); free disk space or set P1_SPOOL_DIR"
    )


def test_drained_spool_gives_its_space_back(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    spool = Spool(path)
    for start in range(0, 60_000, 3000):
        spool.put([f"{line} {'x' * (i % 50)}" for i, line in enumerate(lines(start, 3000))])
    spool.close()
    full_size = path.stat().st_size

    spool = Spool(path)
    while (batch := spool.oldest()) is not None:
        spool.ack(batch.id)
    spool.close()

    assert full_size > 500_000
    # What is left is the schema: a handful of 4 KiB pages.
    assert path.stat().st_size <= 8 * 4096


def test_closed_spool_refuses_use_and_close_is_idempotent(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db")
    spool.close()
    spool.close()

    with pytest.raises(RuntimeError, match="is closed"):
        spool.put(lines(0, 1))
    with pytest.raises(RuntimeError, match="is closed"):
        spool.oldest()


def test_may_be_closed_from_another_thread(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db")
    spool.put(lines(0, 2))
    seen: list[list[str] | None] = []

    def drain() -> None:
        batch = spool.oldest()
        seen.append(batch.lines if batch else None)

    worker = threading.Thread(target=drain)
    worker.start()
    worker.join(timeout=5)
    spool.close()

    assert seen == [lines(0, 2)]


def test_a_sent_batch_whose_removal_failed_is_not_evicted_as_backlog(tmp_path: Path) -> None:
    # A full disk refused the removal of a sent batch; later the spool reaches its size bound and evicts
    # its oldest rows. The sent row goes too, but it is neither backlog nor a drop: the bound needs a
    # real batch evicted, and the counters must stay those of the file.
    path = tmp_path / "spool.db"
    with Spool(path) as spool:
        ids = [spool.put(lines(50 * n, 50)) for n in range(3)]
        assert None not in ids

        def full(*args: object, **kwargs: object) -> None:
            raise sqlite3.OperationalError("database or disk is full")

        spool._transaction = full  # type: ignore[method-assign]
        assert spool.ack(ids[0]) is True  # sent: its removal is remembered and retried later
        del spool._transaction
        fourth = lines(150, 50)
        spool.max_bytes = spool.backlog_bytes + len(compress("\n".join(fourth).encode())) - 1
        assert spool.put(fourth) is not None
        counted = (spool.backlog_batches, spool.backlog_points, spool.backlog_bytes)
        assert (counted[:2], spool.dropped_points, spool.dropped_points_total) == ((2, 100), 50, 50)
        oldest = spool.oldest()
        assert oldest is not None and oldest.lines == lines(100, 50)
    with Spool(path) as reopened:
        assert (reopened.backlog_batches, reopened.backlog_points, reopened.backlog_bytes) == counted
        assert reopened.dropped_points_total == 50


def test_small_and_large_batches_compress_to_what_zlib_reads_back() -> None:

    live = "\n".join(f"power,meter=M,phase=l{n % 3 + 1} import_w={n}.0 {1_700_000_000 + n}" for n in range(12)).encode()
    backlog = "\n".join(f"power,meter=M import_w={n}.0 {1_700_000_000 + n}" for n in range(2000)).encode()
    assert len(live) < SMALL_PAYLOAD_BYTES <= len(backlog)
    for data in (live, backlog):
        stored = compress(data)
        assert zlib.decompress(stored) == data
        assert len(stored) < len(data) / 3
    # The small state loses little on a live batch against zlib's default.
    assert len(compress(live)) <= len(zlib.compress(live)) * 1.1
