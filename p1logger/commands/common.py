"""What the commands that read telegrams (dump, capacity, record) share."""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from p1logger import config, dlms
from p1logger.decode import Telegram
from p1logger.errors import ConfigError, SourceError
from p1logger.reader import Rejected, TelegramReader
from p1logger.archive_format import MAGIC, ArchiveParser
from p1logger.contracts import Source
from p1logger.inputs import GARBAGE_LIMIT_BYTES, is_live, no_valid_telegram_hint, open_source
from p1logger.inputs.file import FileSource


def open_input(args: argparse.Namespace) -> tuple[Source, bool]:
    """The source named by ``--input`` or the positional device; and whether it is live."""
    if args.input:
        return FileSource(args.input), False
    if not args.device:
        raise ConfigError("say where to read: a serial device (/dev/ttyUSB0), "
                          "a URL (socket://host:port) or a file (--input FILE)")
    return open_source(args.device, config.serial_settings(args)), is_live(args.device)


@dataclass
class ReadCounts:
    valid: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    bytes_in: int = 0
    damaged_record_bytes: int = 0  # an archive ('record', 'run --archive'): records cut short by a crash
    encrypted_seen: bool = False  # encrypted frames arrived while no key was set

    def hint(self) -> str:
        """Why nothing valid arrived, in words."""
        if self.rejected["unsupported"]:
            return dlms.COSEM_CONTENT
        if self.rejected["decrypt"]:
            return dlms.DECRYPTION_FAILED
        if self.encrypted_seen:
            return ENCRYPTED_HINT
        return no_valid_telegram_hint(self.rejected)


ENCRYPTED_HINT = ("the meter sends encrypted frames (Luxembourg Smarty, Austrian Sagemcom): set P1_DECRYPTION_KEY "
                  "(or --decryption-key) to the key from your grid operator")


def read_items(source: Source, reader: TelegramReader, live: bool, counts: ReadCounts) -> Iterator[Telegram | Rejected]:
    """Every telegram and reject until the end of a file; counted as they pass.

    A live source that delivers only noise stops with a hint at the likely cause.  A file made by
    ``record`` (or ``run --archive``) is read record by record, so its header lines are not noise.
    """
    archive: ArchiveParser | None = None
    first = True
    while True:
        try:
            data = source.read()
        except EOFError:
            if archive is not None:
                yield from _feed(reader, [record.raw for record in archive.feed(b"", eof=True)], counts)
                counts.damaged_record_bytes = archive.skipped_bytes
            return
        counts.bytes_in += len(data)
        if first and data:
            first = False
            if data.startswith(MAGIC):
                archive = ArchiveParser()
        if reader.keys is None and not counts.valid and not counts.encrypted_seen:
            counts.encrypted_seen = dlms.looks_encrypted(data)
        chunks = [data] if archive is None else [record.raw for record in archive.feed(data)]
        yield from _feed(reader, chunks, counts)
        if live and counts.valid == 0 and counts.bytes_in > GARBAGE_LIMIT_BYTES:
            raise SourceError(counts.hint())


def _feed(reader: TelegramReader, chunks: list[bytes], counts: ReadCounts) -> Iterator[Telegram | Rejected]:
    for chunk in chunks:
        for item in reader.feed(chunk):
            if isinstance(item, Telegram):
                counts.valid += 1
            else:
                counts.rejected[item.reason] += 1
            yield item


def summary(command: str, counts: ReadCounts, garbage_bytes: int) -> str | None:
    """One stderr line about rejects and noise, or None when there were none."""
    garbage_bytes += counts.damaged_record_bytes
    if not counts.rejected and not garbage_bytes:
        return None
    parts = ", ".join(f"{count} {reason}" for reason, count in sorted(counts.rejected.items()))
    garbage = f"; {garbage_bytes} bytes of noise skipped" if garbage_bytes else ""
    return (f"p1logger {command}: {counts.valid} valid, {sum(counts.rejected.values())} rejected"
            f"{' (' + parts + ')' if parts else ''}{garbage}")
