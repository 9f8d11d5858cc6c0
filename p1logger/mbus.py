"""M-Bus long frames around DLMS (pipeline stage: framing, for Austrian customer interfaces).

Austrian meters such as the Kaifa MA309 send each encrypted DLMS frame
(p1logger.dlms) in segments, each an M-Bus long frame (EN 13757-2)::

    68 L L 68               start, the length twice (C through the last data byte), start again
    C A CI                  control, address, control information: 0x00-0x1F carries DLMS segments,
                            bit 0x10 set on the last, the low nibble counting them from 0
    STSAP DTSAP             the DLMS transport's source and destination (01 67 on the MA309)
    <segment>               the next piece of the DLMS frame
    CS 16                   the sum of C through the segment, modulo 256; the stop byte

A segment is taken only with its checksum and stop byte right and in its
place in the count, so a damaged or missing one drops the frame it belongs to
(counted), never joins the wrong bytes.

Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

START = 0x68
STOP = 0x16
_HEADER_BYTES = 4  # 68 L L 68
_FIXED_BYTES = 5  # C A CI STSAP DTSAP
CI_DLMS_MAX = 0x1F
CI_LAST_SEGMENT = 0x10
CI_SEGMENT_COUNT = 0x0F
MAX_FRAME_BYTES = _HEADER_BYTES + 261 + 2  # a length of 256-261 sent as its low byte (below)


@dataclass(frozen=True, slots=True)
class Segment:
    frame_bytes: int  # the whole long frame, 68 through 16
    count: int  # its number in the DLMS frame, from 0
    last: bool
    data: bytes


@dataclass(frozen=True, slots=True)
class Damaged:
    """A frame whose envelope holds (start, lengths, end) but whose checksum fails: skipped whole, for a
    DLMS frame inside it, read bare, would swallow the frames after it."""

    frame_bytes: int


def segment_at(buf: bytes | bytearray, start: int) -> Segment | Damaged | None | Literal[True]:
    """The DLMS segment in the long frame at ``start``; Damaged when its checksum fails; True when more
    bytes are needed to tell; None when no such frame starts there."""
    available = len(buf) - start
    if available < _HEADER_BYTES:
        return True if buf[start : start + 1] == bytes((START,)) else None
    if buf[start] != START or buf[start + 3] != START or buf[start + 1] != buf[start + 2]:
        return None
    length = buf[start + 1]
    if length < _FIXED_BYTES + 1:
        # Too short to carry a segment: EVN's Sagemcom T210-D sends a 257-byte frame with only the low
        # byte of its length (01). Read so, it must still pass its checksum and stop byte.
        length += 256
    frame_bytes = _HEADER_BYTES + length + 2
    if available < frame_bytes:
        return True
    content = start + _HEADER_BYTES
    end = content + length
    if buf[end + 1] != STOP:
        return None
    if sum(buf[content:end]) & 0xFF != buf[end]:
        return Damaged(frame_bytes)
    ci = buf[content + 2]
    if ci > CI_DLMS_MAX:
        return None
    return Segment(frame_bytes, ci & CI_SEGMENT_COUNT, bool(ci & CI_LAST_SEGMENT),
                   bytes(buf[content + _FIXED_BYTES : end]))


@dataclass(slots=True)
class SegmentJoinerStats:
    segments: int = 0
    dropped: int = 0  # DLMS frames lost to a segment out of its place (one missing or damaged)


class Parts:
    """The pieces of one DLMS frame as they come, at most ``max_bytes`` in all (M-Bus segments, HDLC blocks)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._pieces: list[bytes] = []
        self._size = 0

    def __len__(self) -> int:
        return len(self._pieces)

    def add(self, piece: bytes) -> bool:
        """Keep ``piece``; False when the frame would grow past the bound (the caller drops it)."""
        self._pieces.append(piece)
        self._size += len(piece)
        return self._size <= self.max_bytes

    def join(self) -> bytes:
        """The frame, its pieces forgotten."""
        joined = b"".join(self._pieces)
        self.clear()
        return joined

    def clear(self) -> None:
        self._pieces.clear()
        self._size = 0


class SegmentJoiner:
    """Joins the segments of one DLMS frame; bounded by ``max_frame_bytes``."""

    def __init__(self, max_frame_bytes: int) -> None:
        self.stats = SegmentJoinerStats()
        self._parts = Parts(max_frame_bytes)

    def reset(self) -> None:
        self._parts.clear()

    def add(self, segment: Segment) -> bytes | None:
        """The whole DLMS frame once its last segment came, else None."""
        self.stats.segments += 1
        if segment.count != len(self._parts) & CI_SEGMENT_COUNT:
            if self._parts:
                self.stats.dropped += 1
            self.reset()
            if segment.count != 0:
                return None  # the middle of a frame whose start was missed (or damaged)
        if not self._parts.add(segment.data):
            self.stats.dropped += 1
            self.reset()
            return None
        return self._parts.join() if segment.last else None
