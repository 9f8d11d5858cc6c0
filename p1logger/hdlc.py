"""HDLC frames around DLMS (pipeline stage: framing, for Landis+Gyr and Wiener Netze customer interfaces).

Landis+Gyr E450 meters (Salzburg, Burgenland, Steiermark) and the infrared
interface of Wiener Netze's meters send each encrypted DLMS frame
(p1logger.dlms) in HDLC frames (IEC 62056-46, frame format type 3)::

    7E                      flag
    Ax LL                   type 3; x & 8: more segments follow; the length (11 bits, flag to flag, flags excluded)
    <dest> <src>            addresses, one to four bytes each, the last byte of each with its low bit set
    <control>
    <HCS>                   CRC-16/X.25 of the header, low byte first
    E6 E7 00                LLC, on the first frame of a message
    <information>           the DLMS frame, or a General Block Transfer block: E0 <control: 80 on the last>
                            <block number, 2> <acknowledged, 2> <length> <data>
    <FCS>                   CRC-16/X.25 of everything from the format field, low byte first
    7E                      flag (the next frame's opening flag too, where a meter sends one between frames)

Both checksums are checked, and blocks only join in their numbered order, so a
damaged or missing frame loses its message only (counted), never joins the
wrong bytes. HDLC here is delimited by its length, not by byte stuffing: a 7E
inside a frame is data.

Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import crcmod.predefined

from p1logger.mbus import Damaged, Parts

FLAG = 0x7E
_FORMAT_TYPE_3 = 0xA0
_FORMAT_MASK = 0xF0
_SEGMENTED = 0x08
_MAX_ADDRESS_BYTES = 4
LLC_HEADERS = (b"\xe6\xe7\x00", b"\xe6\xe6\x00")
GBT_TAG = 0xE0
_GBT_LAST_BLOCK = 0x80
MAX_FRAME_BYTES = 2 + 0x7FF

_x25 = crcmod.predefined.mkCrcFun("x-25")


@dataclass(frozen=True, slots=True)
class HdlcFrame:
    frame_bytes: int  # flag to flag
    more: bool  # the segmentation bit: the message goes on in the next frame
    information: bytes


def _address_end(buf: bytes | bytearray, at: int, end: int) -> int | None:
    for used in range(_MAX_ADDRESS_BYTES):
        if at + used >= end:
            return None
        if buf[at + used] & 0x01:
            return at + used + 1
    return None


def frame_at(buf: bytes | bytearray, start: int) -> HdlcFrame | Damaged | None | Literal[True]:
    """The HDLC frame at ``start``; Damaged when its header checks but its FCS fails; True when more
    bytes are needed to tell; None when no frame starts there."""
    available = len(buf) - start
    if available < 3:
        return True if buf[start : start + 1] == bytes((FLAG,)) and (
            available < 2 or buf[start + 1] & _FORMAT_MASK == _FORMAT_TYPE_3) else None
    if buf[start] != FLAG or buf[start + 1] & _FORMAT_MASK != _FORMAT_TYPE_3:
        return None
    length = (buf[start + 1] & 0x07) << 8 | buf[start + 2]
    if length < 7:
        return None
    end = start + 1 + length  # the closing flag
    # The header's own checksum comes first: until it checks, nothing vouches for the length, and a
    # length read from noise must not hold the bytes after it.
    header_end = min(end, len(buf))
    source_at = _address_end(buf, start + 3, header_end)
    control_at = _address_end(buf, source_at, header_end) if source_at is not None else None
    if control_at is None:
        return True if header_end == len(buf) < end and len(buf) - start < 3 + 2 * _MAX_ADDRESS_BYTES else None
    hcs_at = control_at + 1
    info_at = hcs_at + 2
    if info_at > end - 2:
        return None
    if info_at > len(buf):
        return True
    if _x25(bytes(buf[start + 1 : hcs_at])) != int.from_bytes(buf[hcs_at:info_at], "little"):
        return None
    if available < length + 2:
        return True
    if buf[end] != FLAG:
        return None
    if _x25(bytes(buf[start + 1 : end - 2])) != int.from_bytes(buf[end - 2 : end], "little"):
        return Damaged(length + 2)
    return HdlcFrame(length + 2, bool(buf[start + 1] & _SEGMENTED), bytes(buf[info_at : end - 2]))


@dataclass(slots=True)
class MessageJoinerStats:
    frames: int = 0
    dropped: int = 0  # messages lost to a block or segment out of its place


class MessageJoiner:
    """Joins HDLC segments and General Block Transfer blocks into one DLMS frame; bounded."""

    def __init__(self, max_message_bytes: int) -> None:
        self.stats = MessageJoinerStats()
        self._parts = Parts(max_message_bytes)
        self._segment_open = False  # an HDLC-segmented message is under way
        self._next_block: int | None = None  # the GBT block number expected next

    def reset(self) -> None:
        self._parts.clear()
        self._segment_open = False
        self._next_block = None

    def _drop(self) -> None:
        if self._parts or self._segment_open or self._next_block is not None:
            self.stats.dropped += 1
        self.reset()

    def add(self, frame: HdlcFrame) -> bytes | None:
        """The whole DLMS frame once its last part came, else None."""
        self.stats.frames += 1
        info = frame.information
        if self._segment_open and info[:3] in LLC_HEADERS:
            self._drop()  # a new message: the open one lost its last segment
        if self._segment_open:
            return self._append(info, done=not frame.more)
        if info[:3] in LLC_HEADERS:
            info = info[3:]
            if self._next_block is not None:
                self._drop()  # a new message while a block transfer was under way
        elif self._next_block is None:
            self._drop()
            return None  # the middle of a message whose start was missed
        if info[:1] == bytes((GBT_TAG,)) and not frame.more:
            return self._add_block(info)
        if self._next_block is not None:
            self._drop()
            return None
        return self._append(info, done=not frame.more)

    def _append(self, data: bytes, done: bool) -> bytes | None:
        if not self._parts.add(data):
            self._drop()
            return None
        if not done:
            self._segment_open = self._next_block is None
            return None
        joined = self._parts.join()
        self.reset()
        return joined

    def _add_block(self, info: bytes) -> bytes | None:
        if len(info) < 7:
            self._drop()
            return None
        control = info[1]
        number = int.from_bytes(info[2:4], "big")
        length, data_at = info[6], 7
        if length == 0x81 and len(info) > 7:
            length, data_at = info[7], 8
        elif length == 0x82 and len(info) > 8:
            length, data_at = int.from_bytes(info[7:9], "big"), 9
        if length != len(info) - data_at or number != (self._next_block or 1):
            self._drop()  # damaged, or a block out of its place (or a transfer whose start was missed)
            return None
        self._next_block = number + 1
        return self._append(info[data_at:], done=bool(control & _GBT_LAST_BLOCK))
