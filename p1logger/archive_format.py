"""The raw archive's file format: one header line, then the telegram exactly as received.

Pure: no I/O. ``outputs/archive.py`` writes archives, ``inputs/archive.py``
reads them back; both keep to this format, which the writer's module
documents in full (records, crash safety, daily files).

    #P1 1715504049.123 ok 874
    <874 bytes: "/" ... "!3AD7" CRLF>
"""

from __future__ import annotations

import math
import re
from typing import NamedTuple

from p1logger.dlms import CipherFramer
from p1logger.framing import DEFAULT_MAX_TELEGRAM_BYTES, Frame, Framer

MAGIC = b"#P1 "
# A header is "#P1 " + time + status + length: far shorter than this.
HEADER_MAX_BYTES = 80
# No telegram comes near this; a larger length can only be a damaged header.
MAX_RECORD_BYTES = 16 << 20
# p1-YYYY-MM-DD[.N].txt[.gz]: the daily files.
FILE_NAME = re.compile(r"^p1-(\d{4}-\d{2}-\d{2})(?:\.(\d+))?\.txt(\.gz)?$")


def encode_record(raw: bytes, valid: bool, received_at_s: float) -> bytes:
    """One archive record: the header line, then the telegram exactly as received."""
    return b"#P1 %.3f %s %d\n" % (received_at_s, b"ok" if valid else b"rejected", len(raw)) + raw


def _parse_header(line: bytes) -> tuple[float, bool, int] | None:
    parts = line.split(b" ")
    if len(parts) != 4 or parts[0] != MAGIC[:-1] or parts[2] not in (b"ok", b"rejected"):
        return None
    try:
        received_at_s = float(parts[1])
        length = int(parts[3])
    except ValueError:
        return None
    if not 0 < length <= MAX_RECORD_BYTES or not math.isfinite(received_at_s):
        return None
    return received_at_s, parts[2] == b"ok", length


class ArchivedTelegram(NamedTuple):
    """One telegram read back from an archive or a plain capture (a tuple: one per telegram, made cheaply)."""

    raw: bytes
    valid: bool | None  # None: a plain capture, checked by nobody yet
    received_at_s: float | None  # None: a plain capture does not say
    end_offset: int  # where reading may resume once this record is stored (uncompressed bytes)


class ArchiveParser:
    """Splits archive bytes into records, in any split; skips (and counts) damaged records."""

    def __init__(self, offset: int = 0) -> None:
        self._buf = bytearray()
        self._base = offset  # stream offset of _buf[0]
        self.skipped_bytes = 0

    def feed(self, data: bytes, eof: bool = False) -> list[ArchivedTelegram]:
        buf = self._buf
        buf += data
        out: list[ArchivedTelegram] = []
        magic_len = len(MAGIC)
        while buf:
            if not buf.startswith(MAGIC):
                if not eof and len(buf) < magic_len and MAGIC.startswith(buf):
                    break  # a header split across reads
                if not self._skip_to_magic(0, eof):
                    break
                continue
            line_end = buf.find(b"\n", 0, HEADER_MAX_BYTES)
            if line_end < 0:
                if not eof and len(buf) < HEADER_MAX_BYTES:
                    break
                if not self._skip_to_magic(1, eof):
                    break
                continue
            header = _parse_header(bytes(buf[:line_end]))
            if header is None:
                if not self._skip_to_magic(1, eof):
                    break
                continue
            received_at_s, valid, length = header
            end = line_end + 1 + length
            if len(buf) < end + magic_len and not eof:
                break
            follow = bytes(buf[end : end + magic_len])
            # A complete record is followed by the next header or by the end of
            # the file; anything else means this one was cut short by a crash and
            # its length runs into whatever was appended after the restart.
            complete = len(buf) >= end and (follow == MAGIC or (eof and MAGIC.startswith(follow)))
            if not complete:
                if not self._skip_to_magic(1, eof):
                    break
                continue
            out.append(ArchivedTelegram(bytes(buf[line_end + 1 : end]), valid, received_at_s, self._base + end))
            del buf[:end]
            self._base += end
        return out

    def _skip_to_magic(self, start: int, eof: bool) -> bool:
        """Drop bytes up to the next header at or after ``start``; False when more data is needed."""
        buf = self._buf
        found = buf.find(MAGIC, start)
        if found >= 0:
            cut = found
        elif eof:
            cut = len(buf)
        else:
            # Keep what may be the start of a header split across reads.
            cut = max(start, len(buf) - len(MAGIC) + 1)
        self.skipped_bytes += cut
        del buf[:cut]
        self._base += cut
        return found >= 0


class CaptureParser:
    """A plain capture (no headers): telegrams as the framer finds them.

    Encrypted frames (p1logger.dlms) are kept whole, for the reader to open with the
    key; the bytes between them are framed as plain telegrams.
    """

    def __init__(self, offset: int = 0, max_telegram_bytes: int = DEFAULT_MAX_TELEGRAM_BYTES) -> None:
        self._framer = Framer(max_telegram_bytes)
        self._cipher_framer = CipherFramer(max_telegram_bytes)
        self._fed = offset
        self.skipped_bytes = 0

    def feed(self, data: bytes, eof: bool = False) -> list[ArchivedTelegram]:
        # Fed up to the end of each "!CRC" line, so that every telegram gets the offset just after
        # it: a replay stopped after any telegram resumes exactly at the next one.
        out: list[ArchivedTelegram] = []
        start = 0
        while (bang := data.find(b"!", start)) >= 0 and (line_end := data.find(b"\n", bang)) >= 0:
            out.extend(self._feed_piece(data[start : line_end + 1]))
            start = line_end + 1
        out.extend(self._feed_piece(data[start:]))
        if eof:
            self.skipped_bytes = (self._framer.stats.garbage_bytes + self._framer.buffered_bytes
                                  + self._cipher_framer.buffered_bytes)
        return out

    def _feed_piece(self, data: bytes) -> list[ArchivedTelegram]:
        if not data:
            return []
        items: list[tuple[bytes, bool | None]] = []
        for piece in self._cipher_framer.feed(data):
            if isinstance(piece, bytes):
                items += [(item.raw, None if isinstance(item, Frame) else False) for item in self._framer.feed(piece)]
            else:
                items.append((piece.raw, None))
        self._fed += len(data)
        # The framers do not say where each telegram ended; where the unfinished
        # candidates start is a safe place to resume after everything they gave out.
        resume_at = self._fed - self._framer.buffered_bytes - self._cipher_framer.buffered_bytes
        return [ArchivedTelegram(raw, valid, None, resume_at) for raw, valid in items]
