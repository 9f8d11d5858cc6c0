"""A recorded stream: ``file:PATH`` (``.gz`` too), or ``-`` for standard input (a pipe)."""

from __future__ import annotations

import os
import select
import sys
import time
from pathlib import Path
from typing import BinaryIO, Callable

from p1logger.errors import SourceError


class FileSource:
    """A recorded stream.  As fast as possible, or paced like a meter with ``realtime``."""

    live = False  # the pipeline may wait for the writer: a file loses nothing by waiting

    def __init__(
        self,
        path: str,
        realtime: bool = False,
        interval_s: float = 1.0,
        sleep: Callable[[float], object] = time.sleep,
        stdin_wait_s: float = 1.0,
    ) -> None:
        self.description = "stdin" if path == "-" else path
        self._stdin_wait_s = stdin_wait_s
        self._realtime = realtime
        self._interval_s = interval_s
        self._sleep = sleep
        self._pending = b""
        try:
            self._file: BinaryIO = sys.stdin.buffer if path == "-" else open(Path(path), "rb")
        except OSError as exc:
            raise SourceError(f"cannot read {path}: {exc.strerror}") from None
        self._opener = _open_compressed if path.endswith(".gz") else None
        if self._opener is not None:
            self._file = self._opener(self._file)

    def read(self) -> bytes:
        if not self._realtime:
            data = self._read_chunk()
            if data is None:
                return b""  # a quiet pipe: nothing yet
            if not data:
                raise EOFError
            return data
        # Paced: hand out one telegram per interval, as a meter would.
        while True:
            cut = self._pending.find(b"\n/", 1)
            if cut >= 0:
                chunk, self._pending = self._pending[: cut + 1], self._pending[cut + 1 :]
                self._sleep(self._interval_s)
                return chunk
            data = self._read_chunk()
            if data is None:
                return b""
            if not data:
                if self._pending:
                    chunk, self._pending = self._pending, b""
                    return chunk
                raise EOFError
            self._pending += data

    def _read_chunk(self) -> bytes | None:
        """Up to 64 KiB; b"" at the end; None when a pipe had nothing within the wait."""
        if self._file is not sys.stdin.buffer:
            return self._file.read(65536)
        # A pipe (socat /dev/ttyUSB0 - | p1logger run --source -) may stay open and
        # quiet: hand over what has arrived at once, and return now and then so the
        # caller can notice a stop.  The raw descriptor is read, bypassing Python's
        # buffer, which select() cannot see.
        try:
            descriptor = self._file.fileno()
            ready, _, _ = select.select([descriptor], [], [], self._stdin_wait_s)
        except (OSError, ValueError):
            # No select() on this kind of input (Windows, or a stand-in stream): read what is there.
            read_available: Callable[[int], bytes] = getattr(self._file, "read1", self._file.read)
            return read_available(65536)
        return os.read(descriptor, 65536) if ready else None

    def close(self) -> None:
        if self._file is not sys.stdin.buffer:
            self._file.close()


def _open_compressed(raw: BinaryIO) -> BinaryIO:
    import gzip

    return gzip.GzipFile(fileobj=raw)  # type: ignore[return-value]
