"""Bytes in, validated telegrams out: decryption, framing, CRC and decoding chained, with counters.

Pure: no I/O.  The reader thread feeds it whatever the source delivers; the
dump, record and replay commands feed it files.  With keys, encrypted frames
(p1logger.dlms) are opened here, so every input gets the same stage, and the
telegram inside goes on exactly like one sent in the clear: its ``raw`` is the
plain telegram, which is what archives keep.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from p1logger import cosem, crc, dlms
from p1logger.decode import Decoder, Telegram
from p1logger.errors import DecodeError
from p1logger.framing import DEFAULT_MAX_TELEGRAM_BYTES, Frame, Framer, Reject
from p1logger.timestamps import TimestampParser

logger = logging.getLogger(__name__)

# Unknown OBIS codes are reported by name; a noisy line must not grow this forever.
_MAX_TRACKED_UNKNOWN = 256
# Frame counters are kept per system title; only a bus of meters has more than one.
_MAX_TRACKED_METERS = 16
# A wrong key fails every frame: one log line at once, then one per interval.
DECRYPTION_LOG_INTERVAL_S = 600.0


_MAX_TRACKED_HEADERS = 16


def _header(body: bytes) -> bytes:
    return body[: body.find(b"\n")].rstrip(b"\r")


@dataclass(frozen=True, slots=True)
class Rejected:
    """A telegram (or what was left of one) that did not pass."""

    # "crc", "crc_missing" (no CRC digits from a meter that must send them), "decode", a framing reason
    # ("incomplete", "oversize", "bad_end"), or for an encrypted frame "decrypt" (wrong key or damaged),
    # "replay" (frame counter went back) and "unsupported" (it holds binary COSEM data, not a telegram)
    reason: str
    raw: bytes
    detail: str = ""


@dataclass(slots=True)
class ReaderStats:
    ok: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    unknown_obis: Counter[str] = field(default_factory=Counter)
    invalid_values: int = 0
    decrypted: int = 0

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


class TelegramReader:
    def __init__(
        self,
        timestamps: TimestampParser,
        max_telegram_bytes: int = DEFAULT_MAX_TELEGRAM_BYTES,
        on_unknown: Callable[[str, str], None] | None = None,
        keys: dlms.Keys | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.timestamps = timestamps
        self.decoder = Decoder(timestamps)
        self.framer = Framer(max_telegram_bytes)
        self.stats = ReaderStats()
        self._on_unknown = on_unknown
        # Identification lines of the meters that sent a CRC on this connection: such a meter sends one
        # on every telegram.  Bounded: a header is only a few bytes, and a line has one or two meters.
        self._crc_headers: set[bytes] = set()
        self.keys = keys
        self.cipher_framer = dlms.CipherFramer(max_telegram_bytes) if keys is not None else None
        self._counters: dict[bytes, int] = {}
        self._clock = clock
        self._decrypt_logged_at: float | None = None
        self._decrypt_unlogged = 0

    def reset(self) -> None:
        """Forget a partial telegram: after a reconnect its rest will never come, and joined
        to the next connection's first telegram it would cost that one too.

        The frame counters are forgotten too: a meter whose counter really went back
        (a firmware update) is then accepted again after the watchdog reopens the source.
        """
        self.framer = Framer(self.framer.max_telegram_bytes, stats=self.framer.stats)
        self._crc_headers.clear()
        if self.cipher_framer is not None:
            self.cipher_framer.reset()
        self._counters.clear()

    @property
    def garbage_bytes(self) -> int:
        return self.framer.stats.garbage_bytes

    def feed(self, data: bytes) -> list[Telegram | Rejected]:
        if self.cipher_framer is None:
            return self._feed_plain(data)
        results: list[Telegram | Rejected] = []
        for piece in self.cipher_framer.feed(data):
            if isinstance(piece, bytes):
                results.extend(self._feed_plain(piece))
            else:
                results.append(self._open(piece))
        return results

    def _feed_plain(self, data: bytes) -> list[Telegram | Rejected]:
        results: list[Telegram | Rejected] = []
        for item in self.framer.feed(data):
            if isinstance(item, Reject):
                self.stats.rejected[item.reason] += 1
                results.append(Rejected(item.reason, item.raw, item.detail))
            else:
                results.append(self._check(item))
        return results

    def _open(self, cipher: dlms.CipherFrame) -> Telegram | Rejected:
        """Decrypt one frame and check the telegram inside; a frame that fails is looked into
        for the start of the next one (it was then cut short, not wrongly keyed)."""
        assert self.keys is not None and self.cipher_framer is not None
        try:
            plaintext = dlms.decrypt(cipher, self.keys)
        except dlms.DecryptionError as exc:
            failure = Rejected("decrypt", cipher.raw, str(exc))
        else:
            opened = self._cosem_frame(cipher, plaintext) if cosem.is_notification(plaintext) else \
                self._telegram_frame(cipher, plaintext)
            if not isinstance(opened, Rejected):
                return self._accept(cipher, *opened)
            failure = opened
        # Without a tag, a frame cut short still opens to a telegram's or a notification's first bytes.
        if self.cipher_framer.cut_short(cipher):
            self.stats.rejected["incomplete"] += 1
            return Rejected("incomplete", cipher.raw, "an encrypted frame was cut short")
        self.stats.rejected[failure.reason] += 1
        if failure.reason in ("decrypt", "unsupported"):
            self._log_decryption_failure(failure.detail)
        return failure

    def _telegram_frame(self, cipher: dlms.CipherFrame, plaintext: bytes) -> tuple[Frame, bool | None] | Rejected:
        """The DSMR telegram a frame decrypted to, with its CRC's verdict; or why not (``_open`` counts it)."""
        items = Framer(self.framer.max_telegram_bytes).feed(plaintext)
        if not items and not plaintext.endswith(b"\n"):
            # A meter that ends the telegram at the CRC, without a line end.
            items = Framer(self.framer.max_telegram_bytes).feed(plaintext + b"\r\n")
        frame = items[0] if len(items) == 1 else None
        if not isinstance(frame, Frame):
            return Rejected("decrypt", cipher.raw, f"{dlms.DECRYPTION_FAILED} (no whole telegram inside)")
        if (crc_ok := crc.check(frame.body, frame.crc_text)) is False:
            return Rejected("crc", frame.raw, f"CRC {frame.crc_text} does not match {crc.crc16(frame.body):04X} "
                            "in a decrypted frame")
        return frame, crc_ok

    def _cosem_frame(self, cipher: dlms.CipherFrame, plaintext: bytes) -> tuple[Frame, bool | None] | Rejected:
        """A DLMS data-notification (Austrian meters) as telegram text, which is what the decoder reads and
        what the archive keeps; or why not (``_open`` counts it). No CRC (None): the M-Bus or HDLC checksums
        and any GCM tag vouch for it."""
        try:
            body = cosem.to_telegram(plaintext, cipher.system_title)
        except cosem.CosemError as exc:
            return Rejected("unsupported", cipher.raw, f"{dlms.COSEM_CONTENT} ({exc})")
        return Frame(body + b"\r\n", body, ""), None

    def _accept(self, cipher: dlms.CipherFrame, frame: Frame, crc_ok: bool | None) -> Telegram | Rejected:
        title = cipher.system_title
        last = self._counters.get(title)
        if last is not None and cipher.frame_counter <= last:
            self.stats.rejected["replay"] += 1
            return Rejected("replay", frame.raw, f"frame counter {cipher.frame_counter} of meter {title.hex().upper()} "
                            f"is not above the last one ({last}): a replayed frame")
        if last is None and len(self._counters) >= _MAX_TRACKED_METERS:
            self._counters.pop(next(iter(self._counters)))
        self._counters[title] = cipher.frame_counter
        self.stats.decrypted += 1
        return self._decode(frame, crc_ok)

    def _log_decryption_failure(self, detail: str) -> None:
        now = self._clock()
        if self._decrypt_logged_at is not None and now - self._decrypt_logged_at < DECRYPTION_LOG_INTERVAL_S:
            self._decrypt_unlogged += 1
            return
        more = f" ({self._decrypt_unlogged} more since the last report)" if self._decrypt_unlogged else ""
        logger.warning("encrypted frame rejected: %s%s", detail, more)
        self._decrypt_logged_at = now
        self._decrypt_unlogged = 0

    def _check(self, frame: Frame) -> Telegram | Rejected:
        crc_ok = crc.check(frame.body, frame.crc_text)
        if crc_ok is None:
            # "!" and a line end with no digits: a DSMR 2.2/3 telegram, or a DSMR 4/5 one whose end line
            # was cut, and then nothing vouches for the digits of its readings.
            required = crc.requires_crc(frame.body)
            if required or (required is None and _header(frame.body) in self._crc_headers):
                self.stats.rejected["crc_missing"] += 1
                why = "its version line says DSMR 4+" if required else "this meter sent CRCs before"
                return Rejected("crc_missing", frame.raw, f"no CRC after '!', and {why}")
        elif crc_ok and len(self._crc_headers) < _MAX_TRACKED_HEADERS:
            self._crc_headers.add(_header(frame.body))
        if crc_ok is False:
            self.stats.rejected["crc"] += 1
            return Rejected("crc", frame.raw, f"CRC {frame.crc_text} does not match {crc.crc16(frame.body):04X}")
        return self._decode(frame, crc_ok)

    def _decode(self, frame: Frame, crc_ok: bool | None) -> Telegram | Rejected:
        try:
            telegram = self.decoder.decode(frame.body, crc_ok, frame.raw)
        except DecodeError as exc:
            self.stats.rejected["decode"] += 1
            return Rejected("decode", frame.raw, str(exc))
        self.stats.ok += 1
        if telegram.invalid:
            self.stats.invalid_values += len(telegram.invalid)
        for obis, payload in telegram.unknown.items():
            first = obis not in self.stats.unknown_obis
            if first and len(self.stats.unknown_obis) >= _MAX_TRACKED_UNKNOWN:
                continue
            self.stats.unknown_obis[obis] += 1
            if first:
                logger.info("meter sends OBIS %s%s, which p1logger does not know; it is kept raw", obis, payload[:40])
                if self._on_unknown is not None:
                    self._on_unknown(obis, payload)
        return telegram


class RejectSummary:
    """Logs rejects as one summary line per interval, never one line per telegram.

    A bad cable can corrupt every telegram; a line per telegram would bury
    everything else in the log and wear out an SD card.
    """

    def __init__(self, interval_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._pending: Counter[str] = Counter()
        self._last_detail = ""
        self._window_start = clock()

    def add(self, rejected: Rejected) -> None:
        self._pending[rejected.reason] += 1
        self._last_detail = rejected.detail

    def maybe_log(self) -> str | None:
        """Log the window's rejects once the interval is over."""
        now = self._clock()
        if now - self._window_start < self.interval_s:
            return None
        self._window_start = now
        return self.flush()

    def flush(self) -> str | None:
        """Log what is pending now (at the end of a file or at a stop), so no reject goes unreported."""
        if not self._pending:
            return None
        parts = ", ".join(f"{count} {reason}" for reason, count in sorted(self._pending.items()))
        total = sum(self._pending.values())
        message = f"rejected {total} telegram(s) in the last {self.interval_s:.0f} s ({parts}); last: {self._last_detail}"
        self._pending.clear()
        logger.warning(message)
        return message
