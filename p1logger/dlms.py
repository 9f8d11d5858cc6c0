"""Encrypted P1 frames: DLMS general-glo-ciphering with AES-128-GCM (pipeline stage: decryption).

Luxembourg's Smarty and several Austrian Sagemcom T210-D meters send each
telegram inside one binary frame (DLMS Green Book, general-glo-ciphering APDU)::

    DB                      tag: general-glo-ciphering
    08 <8 bytes>            system title, length-prefixed (the meter's maker and serial)
    82 HH LL                length of the rest (BER: one byte below 0x80, or 0x81 x, 0x82 x x)
    30                      security control: 0x20 encrypted, 0x10 authenticated, low nibble the suite
    <4 bytes>               frame counter (big-endian, the GCM invocation counter)
    <ciphertext>            the telegram, "/" ... "!CRC" CRLF
    <12 bytes>              GCM tag, present when the authenticated bit is set

The GCM IV is the system title followed by the frame counter.  With an
authentication key the tag is checked with additional data = security
control byte + authentication key.  Without one, the ciphertext is decrypted
as the AES-CTR keystream GCM uses (counter block IV || 00000002) and the
telegram's own CRC protects the content: that is where Home Assistant,
dsmr_parser and ESPHome ended up, because the authentication key the
Luxembourg specification publishes fails on many real meters.

Pure: no I/O.  Keys are held as bytes and never shown by ``repr``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal, NamedTuple

from p1logger import cosem, hdlc, mbus
from p1logger.errors import ConfigError

GLO_CIPHERING_TAG = 0xDB
SYSTEM_TITLE_BYTES = 8
FRAME_COUNTER_BYTES = 4
GCM_TAG_BYTES = 12
KEY_BYTES = 16
SECURITY_AUTHENTICATED = 0x10
SECURITY_ENCRYPTED = 0x20
# Compression (0x80) and broadcast keys (0x40) are not used on a P1 port; suites
# 0 and 1 are AES-128-GCM (suite 2 would need a 256-bit key).
_SECURITY_UNSUPPORTED = 0xC0
_SUITES = (0, 1)
# The authentication key of the Luxembourg P1 specification: a meter built to it
# tags its frames with this key unless the grid operator gave another one.
SPECIFICATION_AUTHENTICATION_KEY = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
_HEX_KEY = re.compile(r"[0-9a-fA-F]{32}")
# tag + title length + title + the longest length form (0x82 HH LL)
_MAX_HEADER_BYTES = 2 + SYSTEM_TITLE_BYTES + 3
DECRYPTION_FAILED = "decryption failed: check P1_DECRYPTION_KEY"


@dataclass(frozen=True)
class Keys:
    """The user's keys.  ``repr`` shows only whether each is set, never the bytes."""

    decryption: bytes = field(repr=False)
    authentication: bytes | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return f"Keys(decryption=<set>, authentication={'<set>' if self.authentication else None})"


def parse_key(text: str, setting: str) -> bytes:
    """32 hex digits -> 16 bytes.  The error names the setting, never the value."""
    cleaned = text.strip()
    if cleaned[:2].lower() == "0x":
        cleaned = cleaned[2:]
    if not _HEX_KEY.fullmatch(cleaned):
        raise ConfigError(f"{setting} is not valid: expected a key of 32 hex digits (16 bytes, as the grid "
                          "operator gives it)")
    return bytes.fromhex(cleaned)


class CipherFrame(NamedTuple):
    raw: bytes  # the whole frame as received, tag byte through GCM tag
    system_title: bytes
    security_control: int
    frame_counter: int
    ciphertext: bytes
    tag: bytes  # b"" when the frame is not authenticated


def _header(buf: bytes | bytearray, start: int, max_frame_bytes: int) -> tuple[int, int] | None | Literal[True]:
    """At ``start``: (header bytes, frame bytes) of a plausible frame; True when more bytes are
    needed to tell; None when this is not a frame start."""
    available = len(buf) - start
    if available < 2:
        return True
    if buf[start + 1] != SYSTEM_TITLE_BYTES:
        return None
    at = start + 2 + SYSTEM_TITLE_BYTES
    if available < 2 + SYSTEM_TITLE_BYTES + 1:
        return True
    form = buf[at]
    if form < 0x80:
        size_bytes, length = 1, form
    elif form in (0x81, 0x82):
        size_bytes = 1 + form - 0x80
        if available < at - start + size_bytes:
            return True
        length = int.from_bytes(buf[at + 1 : at + size_bytes], "big")
    else:
        return None
    header_bytes = at - start + size_bytes
    if available < header_bytes + 1:
        return True
    security = buf[start + header_bytes]
    if not security & SECURITY_ENCRYPTED or security & _SECURITY_UNSUPPORTED or security & 0x0F not in _SUITES:
        return None
    tag_bytes = GCM_TAG_BYTES if security & SECURITY_AUTHENTICATED else 0
    # A telegram is at least "/X5\r\n\r\n!\r\n"; anything shorter is noise that looked like a header.
    if length < 1 + FRAME_COUNTER_BYTES + 8 + tag_bytes or header_bytes + length > max_frame_bytes:
        return None
    return header_bytes, header_bytes + length


@dataclass(slots=True)
class CipherFramerStats:
    frames: int = 0
    cut_short: int = 0  # frames that turned out to be cut short by the next frame
    unwrapped_not_frames: int = 0  # M-Bus segments or HDLC blocks that joined into no DLMS frame
    damaged_wrappers: int = 0  # M-Bus or HDLC frames whose checksum failed


class CipherFramer:
    """Finds encrypted frames in a byte stream; everything else is handed on in order as bytes.

    Plain telegrams contain no 0xDB byte, so a stream can mix both: the bytes
    between frames go to the plain-telegram framer.  A frame cut short (at
    start-up, or by a glitch) swallows the start of the next one; the caller
    says so with :meth:`cut_short` when the frame fails to open, and the framer
    resumes at the next frame header inside it.  At most ``max_frame_bytes`` of
    one candidate are held.  A frame sent in M-Bus segments or HDLC frames
    (Austrian customer interfaces, p1logger.mbus and p1logger.hdlc) is joined
    first and then read like any other.
    """

    def __init__(self, max_frame_bytes: int) -> None:
        self.max_frame_bytes = max_frame_bytes + _MAX_HEADER_BYTES + 1 + FRAME_COUNTER_BYTES + GCM_TAG_BYTES
        self.stats = CipherFramerStats()
        self.segments = mbus.SegmentJoiner(self.max_frame_bytes)
        self.messages = hdlc.MessageJoiner(self.max_frame_bytes)
        self._joined: CipherFrame | None = None  # the last frame joined from M-Bus segments
        self._wrapped = False  # M-Bus or HDLC frames came on this connection
        self._buf = bytearray()

    @property
    def buffered_bytes(self) -> int:
        return len(self._buf)

    def reset(self) -> None:
        self._buf.clear()
        self.segments.reset()
        self.messages.reset()
        self._wrapped = False

    def feed(self, data: bytes) -> Iterator[bytes | CipherFrame]:
        """Frames and the plain bytes between them, in stream order.

        A generator: :meth:`cut_short` may be called between two items.
        """
        self._buf += data
        while True:
            item = self._next()
            if item is None:
                return
            yield item

    def _next(self) -> bytes | CipherFrame | None:
        buf = self._buf
        while buf and buf[0] in _WRAPPER_STARTS:
            joined: bytes | None
            if buf[0] == mbus.START:
                segment = mbus.segment_at(buf, 0)
                if segment is True:
                    return None
                if segment is None:
                    del buf[:1]
                    return bytes((mbus.START,))
                del buf[: segment.frame_bytes]
                if isinstance(segment, mbus.Segment):
                    self._wrapped = True
                    joined = self.segments.add(segment)
                else:
                    joined = self._damaged()
            else:
                if buf[1:2] == bytes((hdlc.FLAG,)):
                    del buf[:1]  # the closing flag of a frame, followed by the next one's opening flag
                    continue
                frame = hdlc.frame_at(buf, 0)
                if frame is True:
                    return None
                if frame is None:
                    del buf[:1]
                    return bytes((hdlc.FLAG,))
                # The closing flag stays: a meter may send one flag between two frames.
                del buf[: frame.frame_bytes - 1]
                if isinstance(frame, hdlc.HdlcFrame):
                    self._wrapped = True
                    joined = self.messages.add(frame)
                else:
                    joined = self._damaged()
            if joined is not None:
                found = _header(joined, 0, self.max_frame_bytes) if joined[:1] == bytes((GLO_CIPHERING_TAG,)) else None
                if isinstance(found, tuple) and found[1] == len(joined):
                    self.stats.frames += 1
                    self._joined = _split(joined, found[0])
                    return self._joined
                self.stats.unwrapped_not_frames += 1
        if not buf:
            return None
        # Once M-Bus or HDLC frames came, DLMS frames come only inside them: a DB byte between them is
        # part of a damaged one, and read as a frame it would swallow the ones after it.
        start = _wrapper_start(buf) if self._wrapped else _frame_start(buf)
        if start != 0:
            end = len(buf) if start < 0 else start
            plain = bytes(buf[:end])
            del buf[:end]
            return plain
        found = _header(buf, 0, self.max_frame_bytes)
        if found is True:
            return None
        if found is None:
            del buf[:1]
            return b"\xdb"
        header_bytes, frame_bytes = found
        if len(buf) < frame_bytes:
            return None
        raw = bytes(buf[:frame_bytes])
        del buf[:frame_bytes]
        self.stats.frames += 1
        return _split(raw, header_bytes)

    def _damaged(self) -> bytes | None:
        """A wrapper frame failed its checksum: the message it belonged to is lost (nothing joined)."""
        self.stats.damaged_wrappers += 1
        self.segments.reset()
        self.messages.reset()
        return None

    def cut_short(self, frame: CipherFrame) -> bool:
        """The frame just handed out did not open: if the same meter's next frame starts inside
        it, the frame was cut short and reading resumes there.  True when one was found.

        The next frame is recognised by its tag, title length and the same system title
        (at least the first 4 of those 10 bytes, when it starts near the end), so the
        bytes of a frame that failed for a wrong key are not taken for one.
        """
        if frame is self._joined:
            return False  # its segments were whole and checked: it was not cut short
        raw = frame.raw
        expected = bytes((GLO_CIPHERING_TAG, SYSTEM_TITLE_BYTES)) + frame.system_title
        at = raw.find(expected[:4], 1)
        while at >= 0:
            if expected.startswith(raw[at : at + len(expected)]) and _header(raw, at, self.max_frame_bytes) is not None:
                self._buf[:0] = raw[at:]
                self.stats.cut_short += 1
                return True
            at = raw.find(expected[:4], at + 1)
        return False


_WRAPPER_STARTS = (mbus.START, hdlc.FLAG)


def _wrapper_start(buf: bytearray, end: int | None = None) -> int:
    """Where the next M-Bus or HDLC frame may start (before ``end``); -1 when neither byte is there."""
    end = len(buf) if end is None else end
    mbus_at = buf.find(mbus.START, 0, end)
    hdlc_at = buf.find(hdlc.FLAG, 0, mbus_at if mbus_at >= 0 else end)
    return hdlc_at if hdlc_at >= 0 else mbus_at


def _frame_start(buf: bytearray) -> int:
    """Where the next DLMS frame, M-Bus or HDLC frame may start; -1 when none of their bytes is there."""
    dlms_at = buf.find(GLO_CIPHERING_TAG)
    wrapper_at = _wrapper_start(buf, dlms_at if dlms_at >= 0 else None)
    return wrapper_at if wrapper_at >= 0 else dlms_at


def _split(raw: bytes, header_bytes: int) -> CipherFrame:
    security = raw[header_bytes]
    counter_at = header_bytes + 1
    body_at = counter_at + FRAME_COUNTER_BYTES
    tag_bytes = GCM_TAG_BYTES if security & SECURITY_AUTHENTICATED else 0
    body_end = len(raw) - tag_bytes
    return CipherFrame(
        raw,
        raw[2 : 2 + SYSTEM_TITLE_BYTES],
        security,
        int.from_bytes(raw[counter_at:body_at], "big"),
        raw[body_at:body_end],
        raw[body_end:],
    )


def parse_frame(raw: bytes) -> CipherFrame | None:
    """One complete frame, or None when ``raw`` is not exactly one."""
    found = _header(raw, 0, len(raw) + 1) if raw[:1] == bytes((GLO_CIPHERING_TAG,)) else None
    if not isinstance(found, tuple) or found[1] != len(raw):
        return None
    return _split(raw, found[0])


def looks_encrypted(data: bytes) -> bool:
    """Whether ``data`` holds the start of an encrypted frame (for hints when no key is set)."""
    at = data.find(GLO_CIPHERING_TAG)
    while at >= 0:
        if isinstance(_header(data, at, 1 << 16), tuple):
            return True
        at = data.find(GLO_CIPHERING_TAG, at + 1)
    return False


class DecryptionError(Exception):
    """The frame does not open with these keys (or was damaged)."""


COSEM_CONTENT = "the frame holds DLMS/COSEM data that p1logger cannot read: see docs/telegram-format.md, Austria"


class _Primitives(NamedTuple):
    Cipher: Any
    AES: Any
    GCM: Any
    CTR: Any
    InvalidTag: type[Exception]


@cache
def _primitives() -> _Primitives:
    """cryptography's parts, imported on first use: a logger of plain telegrams never loads it."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    return _Primitives(Cipher, algorithms.AES, modes.GCM, modes.CTR, InvalidTag)


def _iv(frame: CipherFrame) -> bytes:
    return frame.system_title + frame.frame_counter.to_bytes(FRAME_COUNTER_BYTES, "big")


def decrypt(frame: CipherFrame, keys: Keys) -> bytes:
    """The plaintext telegram.  DecryptionError when the tag does not verify (with an
    authentication key) or the result is not a telegram (without one)."""
    if keys.authentication is not None and frame.tag:
        crypto = _primitives()
        decryptor = crypto.Cipher(crypto.AES(keys.decryption),
                                  crypto.GCM(_iv(frame), frame.tag, min_tag_length=GCM_TAG_BYTES)).decryptor()
        decryptor.authenticate_additional_data(bytes((frame.security_control,)) + keys.authentication)
        plaintext = decryptor.update(frame.ciphertext)
        try:
            decryptor.finalize()
        except crypto.InvalidTag:
            raise DecryptionError(f"{DECRYPTION_FAILED} and P1_AUTHENTICATION_KEY (the GCM tag does not match)") from None
        return plaintext
    plaintext = decrypt_unverified(frame, keys.decryption)
    if not plaintext.startswith(b"/") and not cosem.is_notification(plaintext):
        raise DecryptionError(f"{DECRYPTION_FAILED} (the frame does not decrypt to a telegram)")
    return plaintext


def decrypt_unverified(frame: CipherFrame, key: bytes) -> bytes:
    """The ciphertext run through GCM's keystream without checking the tag (whatever it holds)."""
    crypto = _primitives()
    # GCM's keystream starts at counter block 2; block 1 only masks the tag.
    decryptor = crypto.Cipher(crypto.AES(key), crypto.CTR(_iv(frame) + b"\x00\x00\x00\x02")).decryptor()
    return decryptor.update(frame.ciphertext) + decryptor.finalize()


def encrypt(
    plaintext: bytes,
    keys: Keys,
    system_title: bytes,
    frame_counter: int,
    security_control: int = SECURITY_ENCRYPTED | SECURITY_AUTHENTICATED,
) -> bytes:
    """One frame as a meter sends it (the simulator's and the tests' counterpart of :func:`decrypt`).

    Without an authentication key the specification's published key tags the
    frame, as a meter left at its factory setting does.
    """
    if len(system_title) != SYSTEM_TITLE_BYTES:
        raise ValueError("a system title is 8 bytes")
    crypto = _primitives()
    iv = system_title + frame_counter.to_bytes(FRAME_COUNTER_BYTES, "big")
    encryptor = crypto.Cipher(crypto.AES(keys.decryption), crypto.GCM(iv)).encryptor()
    authentication = keys.authentication or SPECIFICATION_AUTHENTICATION_KEY
    encryptor.authenticate_additional_data(bytes((security_control,)) + authentication)
    ciphertext = encryptor.update(plaintext) + encryptor.finalize()
    tag = encryptor.tag[:GCM_TAG_BYTES] if security_control & SECURITY_AUTHENTICATED else b""
    body = bytes((security_control,)) + iv[SYSTEM_TITLE_BYTES:] + ciphertext + tag
    length = len(body)
    if length < 0x80:
        size = bytes((length,))
    elif length < 0x100:
        size = bytes((0x81, length))
    else:
        size = bytes((0x82,)) + length.to_bytes(2, "big")
    return bytes((GLO_CIPHERING_TAG, SYSTEM_TITLE_BYTES)) + system_title + size + body


