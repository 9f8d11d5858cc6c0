"""The raw archive: byte-exact records, rotation by local date, compression, pruning, crash safety, record.

Clocks are injected; the only real waiting is on a child process that is
killed while it writes (bounded by a deadline, typically well under a second).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import redirect_stdout
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from p1logger.archive_format import MAGIC, ArchiveParser, CaptureParser, encode_record
from p1logger.inputs.archive import ArchiveReader, archive_files
from p1logger.outputs.archive import ArchiveWriter, RecordFile
from p1logger.cli import main as cli_main
from p1logger.crc import crc16
from helpers.archive_telegrams import BRUSSELS, NO_CLOCK_TELEGRAM, T0, FakeClock, bad_crc, telegram
from p1logger.errors import ConfigError
from p1logger.framing import Frame, Framer
from p1logger.inputs.file import FileSource

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
def read_all(path: Path) -> tuple[list[tuple[bytes, bool | None, float | None]], int]:
    with ArchiveReader(path) as reader:
        records = [(r.raw, r.valid, r.received_at_s) for r in reader]
        return records, reader.skipped_bytes


# ------------------------------------------------------------------ format


def test_record_encoding_is_a_header_then_the_exact_bytes() -> None:
    raw = telegram(0)
    assert encode_record(raw, True, 1715504049.1234) == b"#P1 1715504049.123 ok %d\n" % len(raw) + raw
    assert encode_record(b"/X\r\n!", False, 5.0) == b"#P1 5.000 rejected 5\n/X\r\n!"


def test_parser_gives_the_same_records_in_any_split() -> None:
    records = [(telegram(0), True, T0 + 0.25), (bad_crc(1), False, T0 + 1.5), (b"/cut short\r\n", False, T0 + 2.0),
               (NO_CLOCK_TELEGRAM, True, T0 + 3.0)]
    stream = b"".join(encode_record(raw, valid, t) for raw, valid, t in records)
    expected_ends = []
    position = 0
    for raw, valid, t in records:
        position += len(encode_record(raw, valid, t))
        expected_ends.append(position)
    for chunk in (1, 2, 3, 7, 64, 1000, len(stream)):
        parser = ArchiveParser()
        out = []
        for start in range(0, len(stream), chunk):
            out.extend(parser.feed(stream[start : start + chunk]))
        out.extend(parser.feed(b"", eof=True))
        assert [(r.raw, r.valid, r.received_at_s) for r in out] == records, chunk
        assert [r.end_offset for r in out] == expected_ends
        assert parser.skipped_bytes == 0


def test_a_torn_record_is_skipped_and_the_records_after_it_count() -> None:
    first, torn, after = encode_record(telegram(0), True, 1.0), encode_record(telegram(1), True, 2.0), \
        encode_record(telegram(2), True, 3.0)
    # A power cut kept 300 bytes of the second record; after the restart the writer appended the third.
    stream = first + torn[:300] + after
    parser = ArchiveParser()
    out = parser.feed(stream) + parser.feed(b"", eof=True)
    assert [(r.raw, r.received_at_s) for r in out] == [(telegram(0), 1.0), (telegram(2), 3.0)]
    assert parser.skipped_bytes == 300
    assert out[-1].end_offset == len(stream)
    # Torn at the very end of the file (no restart yet): the complete records still count.
    parser = ArchiveParser()
    out = parser.feed(first + torn[:300]) + parser.feed(b"", eof=True)
    assert [r.raw for r in out] == [telegram(0)]
    assert parser.skipped_bytes == 300
    # Torn inside the header line.
    parser = ArchiveParser()
    out = parser.feed(first + torn[:9] + after) + parser.feed(b"", eof=True)
    assert [r.raw for r in out] == [telegram(0), telegram(2)]
    assert parser.skipped_bytes == 9


def test_damaged_headers_are_skipped_not_trusted() -> None:
    good = encode_record(telegram(0), True, 1.0)
    for damaged in (b"#P1 x ok 5\n12345", b"#P1 1.0 maybe 5\n12345", b"#P1 1.0 ok 999999999999\n",
                    b"#P1 nan ok 5\n12345", b"#P1 " + b"9" * 100 + b"\n"):
        parser = ArchiveParser()
        out = parser.feed(damaged + good) + parser.feed(b"", eof=True)
        assert [r.raw for r in out] == [telegram(0)], damaged
        assert parser.skipped_bytes == len(damaged)


def test_a_plain_capture_is_framed_and_resumes_before_an_unfinished_telegram() -> None:
    capture = b"noise" + telegram(0) + telegram(1)[:100]
    parser = CaptureParser()
    out = parser.feed(capture)
    assert [(r.raw, r.valid, r.received_at_s) for r in out] == [(telegram(0), None, None)]
    assert out[0].end_offset == len(b"noise" + telegram(0))


def test_dump_and_the_file_source_read_an_archive_like_a_capture(tmp_path: Path) -> None:
    path = tmp_path / "p1-2017-01-02.txt"
    recording = RecordFile(path, clock=FakeClock(T0))
    recording.open()
    for n in range(3):
        recording(telegram(n), True)
        recording(bad_crc(100 + n), False)
    recording(NO_CLOCK_TELEGRAM, True)
    recording.close()
    out = io.StringIO()
    with redirect_stdout(out):
        assert cli_main(["dump", "--input", str(path), "--format", "json"]) == 0
    decoded = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [d["header"] for d in decoded] == ["ISk5\\2MT382-1000"] * 3 + ["ISk5\\2MT382-1004"]
    # Gzipped, through the pipeline's file source: the same telegrams, byte-exact.
    packed = tmp_path / "p1-2017-01-02.txt.gz"
    packed.write_bytes(gzip.compress(path.read_bytes()))
    source = FileSource(str(packed))
    framer = Framer()
    frames: list[bytes] = []
    try:
        while True:
            frames.extend(item.raw for item in framer.feed(source.read()) if isinstance(item, Frame))
    except EOFError:
        source.close()
    assert frames == [telegram(0), bad_crc(100), telegram(1), bad_crc(101), telegram(2), bad_crc(102),
                      NO_CLOCK_TELEGRAM]
    assert read_all(packed) == read_all(path)


# ------------------------------------------------------------------ rotation, compression, pruning


def test_files_rotate_at_local_midnight_and_finished_days_are_compressed(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2024, 3, 30, 23, 59, 59, tzinfo=BRUSSELS).timestamp())
    writer = ArchiveWriter(tmp_path, BRUSSELS, clock=clock, background=False)
    writer.open()
    writer(telegram(0), True)
    clock.now_s += 1  # 00:00:00 local on the 31st (22:00 UTC): a new day here, not in UTC
    writer(telegram(1), True)
    writer(bad_crc(2), False)
    # 31 March 2024 is the spring DST change: that local day is 23 hours long.
    clock.now_s = datetime(2024, 3, 31, 23, 59, 59, tzinfo=BRUSSELS).timestamp()
    writer(telegram(3), True)
    clock.now_s += 1
    writer(telegram(4), True)
    assert writer.current_path == tmp_path / "p1-2024-04-01.txt"
    writer.close()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "p1-2024-03-30.txt.gz", "p1-2024-03-31.txt.gz", "p1-2024-04-01.txt"]
    day1, day2, day3 = (read_all(p)[0] for p in archive_files(tmp_path))
    t = datetime(2024, 3, 30, 23, 59, 59, tzinfo=BRUSSELS).timestamp()
    assert day1 == [(telegram(0), True, t)]
    assert day2 == [(telegram(1), True, t + 1), (bad_crc(2), False, t + 1),
                    (telegram(3), True, t + 1 + 23 * 3600 - 1)]
    assert day3 == [(telegram(4), True, t + 1 + 23 * 3600)]
    assert writer.stats.files_compressed == 2
    assert writer.records_written == 5 and writer.records_lost == 0


def test_background_compression_runs_off_the_writing_thread(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2024, 5, 1, 12, 0, tzinfo=BRUSSELS).timestamp())
    writer = ArchiveWriter(tmp_path, BRUSSELS, clock=clock)
    writer.open()
    writer(telegram(0), True)
    clock.now_s += 86400
    writer(telegram(1), True)
    deadline = time.monotonic() + 10
    while writer.stats.files_compressed < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    writer.close()
    assert [p.name for p in archive_files(tmp_path)] == ["p1-2024-05-01.txt.gz", "p1-2024-05-02.txt"]
    assert gzip.decompress((tmp_path / "p1-2024-05-01.txt.gz").read_bytes()) == encode_record(
        telegram(0), True, datetime(2024, 5, 1, 12, 0, tzinfo=BRUSSELS).timestamp())


def fill_days(directory: Path, days: list[str], size_bytes: int) -> None:
    for day in days:
        (directory / f"p1-{day}.txt.gz").write_bytes(b"x" * size_bytes)


def test_pruning_by_age_keeps_today_and_the_last_days(tmp_path: Path) -> None:
    fill_days(tmp_path, ["2024-04-28", "2024-04-29", "2024-04-30", "2024-05-01"], 100)
    (tmp_path / "notes.txt").write_text("not ours")
    clock = FakeClock(datetime(2024, 5, 3, 8, 0, tzinfo=BRUSSELS).timestamp())
    writer = ArchiveWriter(tmp_path, BRUSSELS, keep_days=3, max_bytes=0, clock=clock, background=False)
    writer.open()
    writer(telegram(0), True)
    writer.close()
    # Today is 3 May: days more than 3 days before it (before 30 April) go.
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "notes.txt", "p1-2024-04-30.txt.gz", "p1-2024-05-01.txt.gz", "p1-2024-05-03.txt"]
    assert writer.stats.files_pruned == 2 and writer.stats.bytes_pruned == 200


def test_pruning_by_size_deletes_the_oldest_first_never_today(tmp_path: Path) -> None:
    fill_days(tmp_path, ["2024-04-28", "2024-04-29", "2024-04-30", "2024-05-01"], 1000)
    clock = FakeClock(datetime(2024, 5, 2, 8, 0, tzinfo=BRUSSELS).timestamp())
    assert 500 < len(encode_record(telegram(0), True, clock.now_s)) < 1500
    writer = ArchiveWriter(tmp_path, BRUSSELS, max_bytes=2500, clock=clock, background=False)
    writer.open()  # at start: 4000 bytes: the two oldest go
    assert [p.name for p in archive_files(tmp_path)] == ["p1-2024-04-30.txt.gz", "p1-2024-05-01.txt.gz"]
    writer(telegram(0), True)  # a new day: checked again, 2000 + one record is too much
    assert [p.name for p in archive_files(tmp_path)] == ["p1-2024-05-01.txt.gz", "p1-2024-05-02.txt"]
    assert writer.stats.files_pruned == 3 and writer.stats.bytes_pruned == 3000
    writer.close()
    small = ArchiveWriter(tmp_path, BRUSSELS, max_bytes=10, clock=clock, background=False)
    small.open()
    small(telegram(1), True)
    small.close()
    assert [p.name for p in archive_files(tmp_path)] == ["p1-2024-05-02.txt"]  # today's file is never deleted
    assert read_all(tmp_path / "p1-2024-05-02.txt")[0] == [(telegram(0), True, clock.now_s),
                                                           (telegram(1), True, clock.now_s)]


def test_a_second_writer_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    first = ArchiveWriter(tmp_path, BRUSSELS, background=False)
    first.open()
    with pytest.raises(ConfigError, match="another p1logger is already archiving"):
        ArchiveWriter(tmp_path, BRUSSELS, background=False).open()
    first.close()
    again = ArchiveWriter(tmp_path, BRUSSELS, background=False)
    again.open()
    again.close()


def test_an_unwritable_archive_is_counted_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocked = tmp_path / "p1-2024-05-01.txt"
    blocked.mkdir()  # the day's file cannot be opened
    clock = FakeClock(datetime(2024, 5, 1, 12, 0, tzinfo=BRUSSELS).timestamp())
    writer = ArchiveWriter(tmp_path, BRUSSELS, clock=clock, background=False)
    writer.open()
    for n in range(3):
        writer(telegram(n), True)
    blocked.rmdir()
    writer(telegram(3), True)
    writer.close()
    assert (writer.records_written, writer.records_lost) == (1, 3)
    errors = [r.getMessage() for r in caplog.records if r.name == "p1logger.outputs.archive" and r.levelname == "ERROR"]
    assert len(errors) == 1 and "cannot write the archive" in errors[0]
    assert read_all(blocked)[0] == [(telegram(3), True, clock.now_s)]


# ------------------------------------------------------------------ crash safety


def test_recovery_finishes_what_a_crash_interrupted(tmp_path: Path) -> None:
    day1 = b"".join(encode_record(telegram(n), True, T0 + n) for n in range(5))
    # Crash mid-compression: the plain file and a partial temporary file.
    (tmp_path / "p1-2017-01-01.txt").write_bytes(day1)
    (tmp_path / "p1-2017-01-01.txt.gz.tmp").write_bytes(gzip.compress(day1)[:40])
    # Crash between the rename and the unlink: a complete .gz and its plain file.
    day2 = b"".join(encode_record(telegram(n), True, T0 + 86400 + n) for n in range(5))
    (tmp_path / "p1-2017-01-02.txt").write_bytes(day2)
    (tmp_path / "p1-2017-01-02.txt.gz").write_bytes(gzip.compress(day2))
    # Power cut mid-record in the day that goes on.
    day3 = encode_record(telegram(7), True, T0 + 2 * 86400)
    (tmp_path / "p1-2017-01-03.txt").write_bytes(day3 + encode_record(telegram(8), True, T0 + 2 * 86400 + 1)[:200])
    clock = FakeClock(datetime(2017, 1, 3, 12, 0, tzinfo=BRUSSELS).timestamp())
    writer = ArchiveWriter(tmp_path, BRUSSELS, clock=clock, background=False)
    writer.open()
    writer(telegram(9), True)
    writer.close()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "p1-2017-01-01.txt.gz", "p1-2017-01-02.txt.gz", "p1-2017-01-03.txt"]
    assert gzip.decompress((tmp_path / "p1-2017-01-01.txt.gz").read_bytes()) == day1
    assert gzip.decompress((tmp_path / "p1-2017-01-02.txt.gz").read_bytes()) == day2
    records, skipped = read_all(tmp_path / "p1-2017-01-03.txt")
    assert records == [(telegram(7), True, T0 + 2 * 86400), (telegram(9), True, clock.now_s)]
    assert skipped == 200


CHILD = """
import sys
sys.path[:0] = [{root!r}, {tests!r}]
from pathlib import Path
from zoneinfo import ZoneInfo
from p1logger.outputs.archive import ArchiveWriter
from helpers.archive_telegrams import T0, bad_crc, telegram

now = [float(T0)]
writer = ArchiveWriter(Path({directory!r}), ZoneInfo("Europe/Brussels"), clock=lambda: now[0], fsync_interval_s=1e9)
writer.open()
pool = [telegram(n) for n in range(50)] + [bad_crc(50)]
n = 0
while True:
    # One telegram every 24 s of fake time: 3600 (about 3.6 MB) per day, a day every few tens of ms.
    n += 1
    now[0] = T0 + 24 * n
    raw = pool[n % len(pool)]
    writer.write(raw, raw is not pool[-1], now[0])
"""


def check_archive(directory: Path) -> tuple[list[float], Path | None]:
    """Every earlier file complete, every complete record of the current one framed; receive times in order."""
    times: list[float] = []
    seen_days: dict[str, list[float]] = {}
    plain = [p for p in archive_files(directory) if p.suffix == ".txt"]
    current = plain[-1] if plain else None
    for path in archive_files(directory):
        if path.suffix == ".gz":
            data = gzip.decompress(path.read_bytes())  # raises if damaged
        else:
            data = path.read_bytes()
        parser = ArchiveParser()
        records = parser.feed(data) + parser.feed(b"", eof=True)
        if path != current:
            assert parser.skipped_bytes == 0, path
        else:
            assert parser.skipped_bytes < len(encode_record(telegram(0), True, T0)), path  # at most a torn tail
        framer = Framer()
        frames = [item.raw for item in framer.feed(data) if isinstance(item, Frame)]
        assert frames == [r.raw for r in records], path  # the rejected one fails its CRC, not its framing
        day = path.name[3:13]
        file_times = [r.received_at_s for r in records if r.received_at_s is not None]
        if day in seen_days:
            # Killed between the rename and the unlink: the same day twice, identical.
            assert seen_days[day] == file_times, path
            continue
        seen_days[day] = file_times
        times.extend(file_times)
    return times, current


def test_killing_the_writer_mid_write_never_damages_earlier_files(tmp_path: Path) -> None:
    # First killed while it compresses a finished day, then anywhere once a few days are done.
    for round_number, mid_compression in enumerate((True, False)):
        directory = tmp_path / f"round{round_number}"
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD.format(root=str(ROOT), tests=str(ROOT / "tests"), directory=str(directory))],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and child.poll() is None:
                if directory.exists():
                    if mid_compression and list(directory.glob("*.gz.tmp")):
                        break
                    if not mid_compression and len(list(directory.glob("*.gz"))) >= 3:
                        break
                time.sleep(0.002)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
            stderr = child.stderr.read().decode() if child.stderr else ""
        assert child.returncode == -signal.SIGKILL, stderr
        if mid_compression:
            assert list(directory.glob("*.gz.tmp")), "not killed mid-compression"
        times, current = check_archive(directory)
        assert times == [T0 + 24 * n for n in range(1, len(times) + 1)]  # nothing lost, nothing twice
        midnight = datetime(2017, 1, 3, tzinfo=BRUSSELS).timestamp()
        assert len(times) > sum(1 for n in range(1, 5000) if T0 + 24 * n < midnight)  # into the second day
        # A restart finishes the interrupted compression and goes on appending.
        last = times[-1]
        writer = ArchiveWriter(directory, BRUSSELS, clock=FakeClock(last + 24), background=False)
        writer.open()
        writer(telegram(0), True)
        writer.close()
        assert not list(directory.glob("*.tmp"))
        # Every finished day is compressed; the only plain file is the restart's day (usually the one
        # it was killed in, but a kill between a day change and that day's first record leaves the old one).
        restart_day = writer.day_path(datetime.fromtimestamp(last + 24, BRUSSELS).date())
        assert [p for p in archive_files(directory) if p.suffix == ".txt"] == [restart_day]
        assert current in (restart_day, writer.day_path(datetime.fromtimestamp(last, BRUSSELS).date()))
        times_after, _ = check_archive(directory)
        assert times_after == times + [last + 24]


# ------------------------------------------------------------------ the record command


def write_stream(path: Path, parts: list[bytes]) -> None:
    path.write_bytes(b"".join(parts))


def test_record_into_a_file_keeps_every_telegram_byte_exact(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capture = tmp_path / "capture.txt"
    cut = telegram(2)[: telegram(2).index(b"1-0:1.8.1")]  # the meter stopped mid-telegram, at a line end
    write_stream(capture, [b"\x00noise", telegram(0), bad_crc(1), cut, telegram(3), NO_CLOCK_TELEGRAM])
    target = tmp_path / "meter.txt"
    before = time.time()
    assert cli_main(["record", "--input", str(capture), str(target)]) == 0
    after = time.time()
    records, skipped = read_all(target)
    # The telegram cut short by the next one is kept as received, marked rejected.
    assert [(raw, valid) for raw, valid, _ in records] == [
        (telegram(0), True), (bad_crc(1), False), (cut, False), (telegram(3), True),
        (NO_CLOCK_TELEGRAM, True)]
    assert all(before - 0.001 <= t <= after + 0.001 for _, _, t in records if t is not None)
    assert skipped == 0
    assert "3 valid and 2 rejected telegrams recorded" in capsys.readouterr().err
    # Appending: a second recording adds to the same file.
    assert cli_main(["record", "--input", str(capture), str(target)]) == 0
    assert len(read_all(target)[0]) == 10


def test_record_into_a_directory_makes_daily_files(tmp_path: Path) -> None:
    capture = tmp_path / "capture.txt"
    write_stream(capture, [telegram(0), telegram(1)])
    target = tmp_path / "archive"
    assert cli_main(["record", "--input", str(capture), str(target) + "/"]) == 0
    files = archive_files(target)
    assert len(files) in (1, 2)  # two only when the test runs across midnight
    assert [raw for f in files for raw, _, _ in read_all(f)[0]] == [telegram(0), telegram(1)]


def test_record_refuses_a_device_or_gz_target(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capture = tmp_path / "capture.txt"
    write_stream(capture, [telegram(0)])
    assert cli_main(["record", "--input", str(capture), "/dev/null"]) == 2
    assert "is a device or special file" in capsys.readouterr().err
    assert cli_main(["record", "--input", str(capture), str(tmp_path / "x.txt.gz")]) == 2
    assert "record into a plain file" in capsys.readouterr().err
    assert not (tmp_path / "x.txt.gz").exists()


def test_record_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    """A live socket source: Ctrl-C ends the recording with everything received in the file."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    target = tmp_path / "live.txt"
    done = threading.Event()

    def meter() -> None:
        conn, _ = listener.accept()
        with conn:
            n = 0
            # pyserial empties the input buffer right after connecting, so a telegram sent at
            # once may be discarded; a meter just goes on sending.
            while not done.wait(0.02):
                try:
                    conn.sendall(telegram(n))
                except OSError:
                    return
                n += 1

    thread = threading.Thread(target=meter, daemon=True)
    thread.start()
    child = subprocess.Popen(
        [sys.executable, "-m", "p1logger", "record", f"socket://127.0.0.1:{port}", str(target)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and child.poll() is None:
            if target.exists() and len(read_all(target)[0]) >= 2:
                break
            time.sleep(0.01)
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=20)
    finally:
        done.set()
        if child.poll() is None:
            child.kill()
        listener.close()
    assert child.returncode == 0, err
    records = read_all(target)[0]
    first = [telegram(n) for n in range(1000)].index(records[0][0])
    assert [(raw, valid) for raw, valid, _ in records] == [(telegram(first + k), True) for k in range(len(records))]
    assert f"{len(records)} valid and 0 rejected telegrams recorded".encode() in err


def test_run_archives_every_telegram_and_writes_to_stdout(tmp_path: Path) -> None:
    """`run --archive` wired through the feature hook, with `--output -` so no database is needed."""
    capture = tmp_path / "capture.txt"
    write_stream(capture, [telegram(0), bad_crc(1), telegram(2)])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INFLUX_", "P1_"))}
    result = subprocess.run(
        [sys.executable, "-m", "p1logger", "run", "--source", f"file:{capture}", "--output", "-",
         "--archive", str(tmp_path / "archive"), "--spool-dir", str(tmp_path / "spool"), "--instance", "t"],
        cwd=ROOT, env=env, capture_output=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    files = archive_files(tmp_path / "archive")
    records = [(raw, valid) for f in files for raw, valid, _ in read_all(f)[0]]
    assert records == [(telegram(0), True), (bad_crc(1), False), (telegram(2), True)]
    power_lines = [ln for ln in result.stdout.decode().splitlines() if ln.startswith("power,") and "phase=total" in ln]
    assert power_lines == [
        f"power,meter=K8EG004046395507,phase=total import_w=0.0,export_w=0.0 {T0}000000000",
        f"power,meter=K8EG004046395507,phase=total import_w=200.0,export_w=0.0 {T0 + 2}000000000",
    ]


def test_headers_hold_no_slash_so_framers_skip_them() -> None:
    assert b"/" not in MAGIC
    header = encode_record(b"/x", False, 1715504049.5)[:-2]
    assert header == b"#P1 1715504049.500 rejected 2\n"


def test_bad_bounds_are_clear_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("P1_ARCHIVE_MAX_BYTES", "2 gigs")
    assert cli_main(["record", "--input", "x", str(tmp_path / "out.txt")]) == 2
    assert capsys.readouterr().err == ("p1logger record: P1_ARCHIVE_MAX_BYTES '2 gigs' is not valid: expected a size "
                                       "in bytes (0 for no limit, or with a unit: 512M, 512MiB, 1G, 1GiB, 500MB)\n")
    with pytest.raises(ConfigError, match="a number of days, not -1"):
        ArchiveWriter(tmp_path, BRUSSELS, keep_days=-1)
