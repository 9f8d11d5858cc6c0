"""Line protocol on standard output instead of InfluxDB (``run --output -``).

For Telegraf's ``execd`` input (``data_format = "influx"``, see
``docs/telegraf.md``) and for piping into ``influx write``. Each batch is
written and flushed as one block of lines. Timestamps are printed in
nanoseconds, line protocol's default precision, so neither Telegraf nor
``influx write`` needs a precision setting; the values are still whole seconds.

When the reader of standard output goes away, the logger stops: the batch in
hand and those queued are kept (spooled) for the next run, which prints them
first. No spool file is made unless that happens.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from p1logger.contracts import Check, Output, RunContext, WriteKind, WriteResult
from p1logger.outputs import OutputSpec, selected
from p1logger.outputs.lines import LineOutput, LineOutputSettings

logger = logging.getLogger(__name__)

_SECONDS_TO_NS = "000000000"


class StdoutSink:
    """The pipeline's Sink protocol, writing line protocol to a text stream."""

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        on_closed: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream if stream is not None else sys.stdout
        self._on_closed = on_closed
        self._clock = clock
        self.closed = False

    def write(self, lines: Sequence[str], max_attempts: int | None = None) -> WriteResult:
        started = self._clock()
        if not self.closed:
            # Every line p1logger makes ends with its timestamp in seconds.
            text = "".join(f"{line}{_SECONDS_TO_NS}\n" for line in lines)
            try:
                self._stream.write(text)
                self._stream.flush()
            except (BrokenPipeError, OSError, ValueError) as exc:  # ValueError: the stream was closed
                self._stream_closed(exc)
        latency_ms = (self._clock() - started) * 1000.0
        if self.closed:
            return WriteResult(WriteKind.TRANSIENT, 0, 0, tuple(lines),
                               "standard output is closed; the points are kept for the next run", latency_ms)
        return WriteResult(WriteKind.OK, len(lines), 0, (), f"{len(lines)} points written to standard output",
                           latency_ms)

    def _stream_closed(self, exc: BaseException) -> None:
        self.closed = True
        logger.error("standard output was closed (%s): stopping; unwritten points stay in the spool",
                     getattr(exc, "strerror", None) or exc)
        if self._stream is sys.stdout:
            # Python would complain again at exit, flushing into the same closed pipe.
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                os.close(devnull)
            except (OSError, ValueError):
                pass
        if self._on_closed is not None:
            self._on_closed()

    def close(self) -> None:
        if self.closed:
            return
        try:
            self._stream.flush()
        except (OSError, ValueError):
            pass


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    pass  # chosen with --output -, which the registry defines


def _create(settings: Any, context: RunContext) -> Output:
    return LineOutput(
        "stdout",
        StdoutSink(sys.stdout, on_closed=context.shutdown.set),
        LineOutputSettings(
            flush_interval_s=context.flush_interval_s,
            batch_max_points=context.batch_max_points,
            spool_max_bytes=context.spool_max_bytes,
            durable=False,
            spool_dir=context.output_dir("stdout"),
            backpressure_batches=None if context.live else 16,
            retry_initial_s=context.retry_initial_s,
            retry_max_s=context.retry_max_s,
        ),
        clock=context.clock or time.monotonic,
        wall_clock=context.wall_clock or time.time,
    )


def _check(settings: Any) -> list[Check]:
    return [Check(True, "output stdout: line protocol on standard output")]


SPEC = OutputSpec("stdout", _add_arguments, lambda settings: "stdout" in selected(settings), _create, _check)
