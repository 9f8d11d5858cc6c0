"""Replay decodes and builds a few hundred records at a time, stage by stage: the same lines as ``run`` makes
telegram by telegram, a stop or a damaged file inside a chunk as before.

No database here: a sink that keeps what it is given. The replay into influxd is in test_replay.py.
"""

from __future__ import annotations

import gc
import gzip
import threading
import zlib
from collections.abc import Sequence
from pathlib import Path

from helpers.archive_telegrams import BRUSSELS, FakeClock, bad_crc, telegram

from p1logger.archive_format import MAGIC, encode_record
from p1logger.builders import create_builders
from p1logger.cli import build_parser
from p1logger.contracts import WriteKind, WriteResult
from p1logger.pipeline import RecordMaker
from p1logger.reader import TelegramReader
from p1logger.replay import GC_THRESHOLD_OBJECTS, STAGE_RECORDS, Replayer, ReplayState
from p1logger.timestamps import TimestampParser

RECEIVED_0 = 1_483_395_600.25  # 2017-01-02 23:20 in Brussels


class KeepingSink:
    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def write(self, lines: Sequence[str]) -> WriteResult:
        self.batches.append(list(lines))
        return WriteResult(WriteKind.OK, len(lines), 0, (), "", 0.0)

    def close(self) -> None:
        pass

    @property
    def lines(self) -> list[str]:
        return [line for batch in self.batches for line in batch]


def maker() -> RecordMaker:
    # replay's defaults: the points and the capacity tariff (this fixture meter sends no capacity data).
    return RecordMaker(create_builders(build_parser().parse_args(["replay", "x"]), BRUSSELS, False))


def records(count: int) -> list[tuple[bytes, bool, float]]:
    """``count`` telegrams a second apart, and a rejected one after every 100th."""
    out: list[tuple[bytes, bool, float]] = []
    for n in range(count):
        out.append((telegram(n, gas_every_s=7), True, RECEIVED_0 + n))
        if n % 100 == 99:
            out.append((bad_crc(n), False, RECEIVED_0 + n + 0.5))
    return out


def archive_bytes(items: list[tuple[bytes, bool, float]]) -> bytes:
    return b"".join(encode_record(raw, valid, at) for raw, valid, at in items)


def as_run(items: list[tuple[bytes, bool, float]]) -> list[str]:
    """What ``run`` makes of the same telegrams: every builder on each telegram in turn."""
    reader = TelegramReader(TimestampParser("Europe/Brussels"))
    make = maker()
    lines: list[str] = []
    for raw, valid, at in items:
        if valid:
            (decoded,) = reader.feed(raw)
            lines += make.make(decoded, at).lines
    return lines


def replayer(sink: KeepingSink, **options: object) -> Replayer:
    return Replayer(sink, maker(), TimestampParser("Europe/Brussels"), ReplayState(None, "test"),
                    batch_max_points=500, **options)  # type: ignore[arg-type]


def test_a_replay_over_several_chunks_makes_what_run_makes_in_the_same_order(tmp_path: Path) -> None:
    count = 2 * STAGE_RECORDS + 77
    items = records(count)
    path = tmp_path / "p1-2017-01-02.txt"
    path.write_bytes(archive_bytes(items))
    sink = KeepingSink()
    stats = replayer(sink).run([path])
    expected = as_run(items)
    assert (stats.telegrams, stats.rejected, stats.files_done) == (count, count // 100, 1)
    assert sink.lines == expected
    assert sum(line.startswith("energy,") for line in expected) == count
    # Gas captured every 7 s: one point per capture, never one per telegram.
    assert sum(line.startswith("gas,") for line in expected) == len(range(0, count, 7))


def test_a_stop_inside_a_chunk_writes_and_counts_only_what_was_read_before_it(tmp_path: Path) -> None:
    count = STAGE_RECORDS + 100
    items = [(telegram(n), True, RECEIVED_0 + n) for n in range(count)]
    path = tmp_path / "p1-2017-01-02.txt"
    path.write_bytes(archive_bytes(items))
    stop = threading.Event()
    stop_at = STAGE_RECORDS + 30  # inside the second chunk, whose every record the builders have already seen

    class StopAt:
        def update(self, done_bytes: int, read_bytes: int, telegrams: int) -> None:
            if telegrams == stop_at:
                stop.set()

        def finish(self, done_bytes: int, read_bytes: int, telegrams: int) -> None:
            pass

    state_path = tmp_path / "state.json"
    first = KeepingSink()
    run_1 = Replayer(first, maker(), TimestampParser("Europe/Brussels"), ReplayState(state_path, "t"),
                     batch_max_points=500, stop=stop, progress=StopAt()).run([path])
    assert (run_1.telegrams, run_1.files_done) == (stop_at, 0)
    expected = as_run(items)
    energy = [line for line in first.lines if line.startswith("energy,")]
    assert first.lines == expected[:len(first.lines)] and len(energy) == stop_at
    # The rest, resumed by fresh builders that are fed the stored part first, completes the run's lines.
    second = KeepingSink()
    run_2 = Replayer(second, maker(), TimestampParser("Europe/Brussels"), ReplayState(state_path, "t"),
                     batch_max_points=500).run([path])
    assert (run_2.telegrams, run_2.files_done) == (count - stop_at, 1)
    assert first.lines + second.lines == expected


def test_a_compressed_file_damaged_part_way_replays_every_record_before_the_damage(tmp_path: Path) -> None:
    items = [(telegram(n), True, RECEIVED_0 + n) for n in range(3 * STAGE_RECORDS)]
    whole = gzip.compress(archive_bytes(items))
    cut = whole[: len(whole) * 2 // 3]  # a disk that lost the end of a finished day's file
    path = tmp_path / "p1-2017-01-02.txt.gz"
    path.write_bytes(cut)
    # What survives, worked out with zlib alone: each record that the bytes it can still inflate show whole,
    # up to the start of the next record's header (a record is known to be whole when the next one begins).
    survived = zlib.decompressobj(wbits=31).decompress(cut)
    whole_records = offset = 0
    for raw, valid, at in items:
        offset += len(encode_record(raw, valid, at))
        if offset + len(MAGIC) > len(survived):
            break
        whole_records += 1
    assert STAGE_RECORDS < whole_records < len(items)
    sink = KeepingSink()
    stats = replayer(sink).run([path])
    assert (stats.files_failed, stats.files_done) == (1, 0)
    assert stats.telegrams == whole_records
    assert sink.lines == as_run(items[:whole_records])


def test_the_collector_runs_less_often_during_a_replay_and_as_before_after_it(tmp_path: Path) -> None:
    path = tmp_path / "p1-2017-01-02.txt"
    path.write_bytes(archive_bytes(records(10)))
    before = gc.get_threshold()

    class Watching(KeepingSink):
        def write(self, lines: Sequence[str]) -> WriteResult:
            self.seen = gc.get_threshold()
            return super().write(lines)

    sink = Watching()
    replayer(sink).run([path])
    assert sink.seen == (max(before[0], GC_THRESHOLD_OBJECTS), *before[1:])
    assert gc.get_threshold() == before
