"""Turn an arbitrary byte stream into complete telegrams (pipeline stage: framing).

A telegram starts with ``/`` and ends with a line ``!`` + 0..4 hex digits.  The
framer never trusts the stream: it resynchronises after garbage, after a partial
telegram (at start-up or after a glitch) and after noise between telegrams, and
it never holds more than ``max_telegram_bytes`` of one candidate, so endless
garbage cannot grow memory.  No I/O happens here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

DEFAULT_MAX_TELEGRAM_BYTES = 8192
_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")
# "!" + 4 hex digits + CR LF, with slack for a stray CR: anything longer is not an end line.
_MAX_END_LINE_BYTES = 8


class Frame(NamedTuple):
    """One complete telegram as received (a tuple: cheap to make once per telegram)."""

    raw: bytes  # byte-exact, from "/" through the end line's LF
    body: bytes  # "/" through "!": what the CRC covers
    crc_text: str  # the hex digits after "!" (may be empty)


# NamedTuple's generated __new__ is Python code; tuple.__new__ builds the same object in C.
_new_frame = tuple.__new__


@dataclass(frozen=True, slots=True)
class Reject:
    """Bytes that were thrown away, and why."""

    reason: str  # "garbage", "incomplete", "oversize", "bad_end"
    raw: bytes
    detail: str = ""


@dataclass(slots=True)
class FramerStats:
    frames: int = 0
    garbage_bytes: int = 0
    incomplete: int = 0
    oversize: int = 0
    bad_end: int = 0


class Framer:
    """Incremental framer: ``feed()`` bytes in any split, get frames and rejects out.

    Only garbage outside a telegram is reported as a count (not as a Reject per
    chunk), so line noise cannot flood the caller.
    """

    def __init__(self, max_telegram_bytes: int = DEFAULT_MAX_TELEGRAM_BYTES, stats: FramerStats | None = None) -> None:
        if max_telegram_bytes < 64:
            raise ValueError("max_telegram_bytes must be at least 64")
        self.max_telegram_bytes = max_telegram_bytes
        self.stats = stats if stats is not None else FramerStats()
        self._buf = bytearray()  # holds the current candidate, starting at "/"
        self._in_frame = False
        self._scan = 0  # where to resume searching inside _buf
        self._header_checked = False

    @property
    def buffered_bytes(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame | Reject]:
        out: list[Frame | Reject] = []
        if not self._in_frame:
            start = data.find(b"/")
            if start < 0:
                self.stats.garbage_bytes += len(data)
                return out
            self.stats.garbage_bytes += start
            data = data[start:]
            self._begin()
        self._buf += data
        self._consume(out)
        return out

    def _begin(self) -> None:
        self._in_frame = True
        self._scan = 0
        self._header_checked = False

    def _hunt_in_buffer(self) -> None:
        """After a telegram ended or was dropped: skip to the next "/" already buffered."""
        buf = self._buf
        start = buf.find(b"/")
        if start < 0:
            self.stats.garbage_bytes += len(buf)
            buf.clear()
            self._in_frame = False
            return
        self.stats.garbage_bytes += start
        del buf[:start]
        self._begin()

    def _reject(self, out: list[Frame | Reject], reason: str, raw: bytes, detail: str = "") -> None:
        setattr(self.stats, reason, getattr(self.stats, reason) + 1)
        out.append(Reject(reason, raw, detail))

    def _consume(self, out: list[Frame | Reject]) -> None:
        buf = self._buf
        while self._in_frame:
            if not self._header_checked:
                nl = buf.find(b"\n")
                if nl < 0:
                    if len(buf) > self.max_telegram_bytes:
                        self._drop_oversize(out)
                        continue
                    return
                # The identification line may not contain "/" (IEC 62056-21), so a
                # later "/" on it means what came before was noise, not a header.
                last = buf.rfind(b"/", 0, nl)
                if last > 0:
                    self.stats.garbage_bytes += last
                    del buf[:last]
                    nl -= last
                self._header_checked = True
                self._scan = nl
            # The "\n!" and "\n/" that end or cut a telegram, found by their rarer second byte: a
            # single byte is found with memchr, a pair by a slower scan.
            bang = buf.find(b"!", self._scan + 1)
            while bang > 0 and buf[bang - 1] != 0x0A:
                bang = buf.find(b"!", bang + 1)
            end = bang - 1 if bang > 0 else -1
            stop = end if end >= 0 else len(buf)
            restart = buf.find(b"\n/", self._scan, stop) if buf.find(b"/", self._scan + 1, stop + 1) > 0 else -1
            if restart >= 0:
                # A new telegram began before this one ended: the meter or the
                # cable cut this one short.
                self._reject(out, "incomplete", bytes(buf[: restart + 1]))
                del buf[: restart + 1]
                self._header_checked = False
                self._scan = 0
                continue
            if end < 0:
                if len(buf) > self.max_telegram_bytes:
                    self._drop_oversize(out)
                    continue
                # Keep the last byte: it may be the "\n" of a "\n!" split across reads.
                self._scan = max(len(buf) - 1, 0)
                return
            excl = end + 1
            line_end = buf.find(b"\n", excl + 1, excl + 1 + _MAX_END_LINE_BYTES)
            if line_end < 0:
                if len(buf) - excl < _MAX_END_LINE_BYTES:
                    self._scan = end
                    if excl + 1 > self.max_telegram_bytes:
                        self._drop_oversize(out)
                        continue
                    return
                self._finish(out, excl, None)
            else:
                self._finish(out, excl, line_end)
            self._hunt_in_buffer()

    def _finish(self, out: list[Frame | Reject], excl: int, line_end: int | None) -> None:
        buf = self._buf
        if line_end is None:
            raw = bytes(buf[: excl + _MAX_END_LINE_BYTES])
            self._reject(out, "bad_end", raw, "no line end after '!'")
            del buf[: excl + _MAX_END_LINE_BYTES]
        else:
            crc_bytes = bytes(buf[excl + 1 : line_end]).rstrip(b"\r")
            raw = bytes(buf[: line_end + 1])
            del buf[: line_end + 1]
            if excl + 1 > self.max_telegram_bytes:
                self._reject(out, "oversize", raw, f"longer than {self.max_telegram_bytes} bytes")
            elif len(crc_bytes) > 4 or not _HEX_DIGITS.issuperset(crc_bytes):
                self._reject(out, "bad_end", raw, f"'!' followed by {crc_bytes[:8]!r}, not a CRC")
            else:
                self.stats.frames += 1
                out.append(_new_frame(Frame, (raw, raw[: excl + 1], crc_bytes.decode("ascii"))))

    def _drop_oversize(self, out: list[Frame | Reject]) -> None:
        buf = self._buf
        # Keep only what may still hold the start of the next telegram: the text
        # after the last line break.
        cut = buf.rfind(b"\n")
        cut = len(buf) if cut < 0 else cut + 1
        self._reject(out, "oversize", bytes(buf[:cut]), f"no end within {self.max_telegram_bytes} bytes")
        del buf[:cut]
        self._hunt_in_buffer()
