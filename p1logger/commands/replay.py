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
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import TextIO

from p1logger import config, dlms, settings
from p1logger.builders import add_builder_arguments, create_builders
from p1logger.cli import setup_logging
from p1logger.commands.run import add_batch_argument, add_spool_dir_argument, add_timestamps_argument
from p1logger.errors import ConfigError, SinkError
from p1logger.framing import DEFAULT_MAX_TELEGRAM_BYTES
from p1logger.inputs.archive import archive_files
from p1logger.outputs.influx import DEAD_LETTER_FILE, add_influx_arguments, influx_target, influx_urls, output_name
from p1logger.outputs.influx.target import InfluxTarget
from p1logger.outputs.influx.sink import InfluxSink
from p1logger.pipeline import RecordMaker
from p1logger.replay import STATE_FILE, Replayer, ReplayState, ReplayStats
from p1logger.timestamps import TimestampParser

logger = logging.getLogger(__name__)

BAR_INTERVAL_S = 0.2
LINES_INTERVAL_S = 10.0
_BAR_WIDTH = 30


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
    settings.add(parser, "P1_REPLAY_STATE")
    parser.add_argument("--restart", action="store_true", help="ignore saved progress: replay every file in full")
    add_spool_dir_argument(parser)
    add_timestamps_argument(parser)
    add_batch_argument(parser)
    settings.add(parser, "P1_MAX_TELEGRAM_BYTES")
    config.add_decode_arguments(parser)
    config.add_decryption_arguments(parser)
    add_builder_arguments(parser)
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
    urls = influx_urls(args)
    targets = [influx_target(args, url) for url in urls]
    spool_dir = Path(args.spool_dir)
    state_path = Path(args.state) if args.state else spool_dir / STATE_FILE
    stop = threading.Event()
    use_receive_time = args.timestamps == "receive"

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        logger.info("received %s; writing what has been read, then stopping", signal.Signals(signum).name)
        stop.set()
        signal.signal(signum, signal.SIG_DFL)  # a second Ctrl-C ends at once

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    status = 0
    try:
        # Every InfluxDB of INFLUX_URL in turn, each with fresh builders and its own progress.
        for index, target in enumerate(targets):
            if stop.is_set():
                break
            status = max(status, _replay_into(args, index, target, paths, timestamps, use_receive_time,
                                              spool_dir, state_path, stop, several=len(targets) > 1, keys=keys))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if stop.is_set():  # also when the stop cut a retry short
        print(f"p1logger replay: interrupted; the progress is saved in {state_path}: run the same command again "
              "to resume", file=sys.stderr)
        return 130
    return status


def _replay_into(args: argparse.Namespace, index: int, target: InfluxTarget, paths: Sequence[Path],
                 timestamps: TimestampParser, use_receive_time: bool, spool_dir: Path, state_path: Path,
                 stop: threading.Event, *, several: bool, keys: dlms.Keys | None) -> int:
    maker = RecordMaker(create_builders(args, timestamps.zone, use_receive_time), use_receive_time=use_receive_time)
    state = ReplayState(state_path, f"{target.url} {target.describe_destination()}", restart=args.restart)
    sink = InfluxSink(target, dead_letter_path=spool_dir / output_name(index) / DEAD_LETTER_FILE, shutdown=stop)
    progress = ProgressReport(sum(p.stat().st_size for p in paths), sys.stderr, bar=sys.stderr.isatty())
    replayer = Replayer(sink, maker, timestamps, state, batch_max_points=args.batch_max_points,
                        max_telegram_bytes=args.max_telegram_bytes, stop=stop, progress=progress, keys=keys)
    failure = ""
    try:
        stats = replayer.run(paths)
    except SinkError as exc:
        stats, failure = replayer.stats, str(exc)
    finally:
        sink.close()
    where = f" into {target.url}" if several else ""
    print(_summary(stats).replace("p1logger replay:", f"p1logger replay{where}:", 1), file=sys.stderr)
    if failure:
        print(f"p1logger replay{where}: stopped: {failure}. The progress is saved in {state_path}: run the same "
              "command again to resume", file=sys.stderr)
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
