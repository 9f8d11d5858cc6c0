"""Reading archives (``run --archive``, ``record``) and plain captures back, ``.gz`` too, from any offset."""

from __future__ import annotations

import gzip
import io
import os
import zlib
from collections.abc import Iterator
from pathlib import Path

from p1logger.archive_format import FILE_NAME, MAGIC, ArchivedTelegram, ArchiveParser, CaptureParser
from p1logger.errors import SourceError
from p1logger.framing import DEFAULT_MAX_TELEGRAM_BYTES

READ_CHUNK_BYTES = 65536


class ArchiveReader:
    """The records of one archive file or plain capture (``.gz`` too), from an uncompressed offset."""

    def __init__(
        self,
        path: Path,
        start_offset: int = 0,
        max_telegram_bytes: int = DEFAULT_MAX_TELEGRAM_BYTES,
        chunk_bytes: int = READ_CHUNK_BYTES,
    ) -> None:
        self.path = path
        self._chunk_bytes = chunk_bytes
        try:
            self._raw: io.BufferedReader = open(path, "rb")  # noqa: SIM115 - closed by close()
        except OSError as exc:
            raise SourceError(f"cannot read {path}: {exc.strerror or exc}") from None
        self.size_bytes = os.fstat(self._raw.fileno()).st_size
        self._stream: io.BufferedReader | gzip.GzipFile = (
            gzip.GzipFile(fileobj=self._raw) if path.name.endswith(".gz") else self._raw)
        try:
            self.is_archive = self._stream.read(len(MAGIC)) == MAGIC
            self._stream.seek(start_offset)
        except (OSError, EOFError, zlib.error) as exc:
            self.close()
            raise SourceError(f"cannot read {path}: {exc}") from None
        self._parser: ArchiveParser | CaptureParser = (
            ArchiveParser(start_offset) if self.is_archive else CaptureParser(start_offset, max_telegram_bytes)
        )

    @property
    def position_bytes(self) -> int:
        """Bytes of the file on disk read so far (compressed bytes for a .gz)."""
        return self._raw.tell()

    @property
    def skipped_bytes(self) -> int:
        """Bytes that formed no record: damaged records, or noise in a plain capture."""
        return self._parser.skipped_bytes

    def __iter__(self) -> Iterator[ArchivedTelegram]:
        while True:
            try:
                # read1: what one read of the file gives; read() would drop the bytes it had gathered from a
                # .gz when the damage comes, and with them the records just before it.
                data = self._stream.read1(self._chunk_bytes)
            except (OSError, EOFError, zlib.error) as exc:
                # A truncated or damaged .gz: what came before it has been read.
                raise SourceError(f"{self.path} is damaged after {self.position_bytes} bytes: {exc}") from None
            if not data:
                yield from self._parser.feed(b"", eof=True)
                return
            yield from self._parser.feed(data)

    def close(self) -> None:
        if self._stream is not self._raw:
            self._stream.close()
        self._raw.close()

    def __enter__(self) -> ArchiveReader:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def archive_files(directory: Path) -> list[Path]:
    """The archive files in a directory, oldest day first (a day's plain file after its .gz)."""
    found = []
    for path in directory.iterdir():
        match = FILE_NAME.match(path.name)
        if match is not None and path.is_file():
            found.append((match.group(1), match.group(3) is None, int(match.group(2) or 0), path))
    return [entry[-1] for entry in sorted(found)]
