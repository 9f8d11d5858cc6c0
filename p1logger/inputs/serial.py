"""A serial device or a pyserial URL (``socket://``, ``rfc2217://``): a P1 cable, ser2net, a WiFi dongle.

Failures become SourceError with a message that says what to do, never a traceback.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from collections.abc import Callable

import serial

from p1logger.config import SerialSettings
from p1logger.errors import SourceError

logger = logging.getLogger(__name__)

READ_BYTES = 4096
TELEGRAM_SETTLE_S = 0.05  # the least wait after a telegram's first byte
TELEGRAM_SETTLE_MAX_S = 1.0
URL_SCHEMES = ("socket://", "rfc2217://", "loop://", "spy://", "alt://", "hwgrep://")


def _is_character_device(path: str) -> bool:
    try:
        return stat.S_ISCHR(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def describe_os_error(target: str, exc: BaseException) -> str:
    """Plain words and a fix for the ways opening a serial port or socket fails."""
    code = getattr(exc, "errno", None)
    text = str(exc)
    if code == errno.ENOENT or "No such file" in text or "could not find" in text.lower():
        return (f"serial device {target} does not exist: is the P1 cable plugged in? "
                "List devices with: ls -l /dev/serial/by-id/")
    if code in (errno.EACCES, errno.EPERM) or "Permission denied" in text:
        if not _is_character_device(target):
            return (f"permission denied on {target}, which is not a serial device: give the user read access to "
                    "it (a recording is read with --input FILE, or P1_SOURCE=file:PATH)")
        return (f"permission denied on {target}: add the user to the dialout group "
                "(sudo usermod -aG dialout $USER, then log in again)")
    if code == errno.ENOTTY or "Inappropriate ioctl" in text:
        return (f"{target} is not a serial port: a recording is read with --input FILE (dump, record, capacity) "
                "or P1_SOURCE=file:PATH (run)")
    if code == errno.EBUSY or "busy" in text.lower():
        return f"{target} is busy: another program (ModemManager, Home Assistant?) has it open"
    if code == errno.ECONNREFUSED or "refused" in text.lower():
        return f"connection to {target} refused: is ser2net or the P1 dongle running and listening on that port?"
    if "timed out" in text.lower() or code == errno.ETIMEDOUT:
        return f"connection to {target} timed out: check the host name, port and network"
    reason = getattr(exc, "strerror", None) or text
    return f"cannot open {target}: {reason}"


TAIL_EMPTY, TAIL_PARTIAL, TAIL_COMPLETE = "empty", "partial", "complete"
PACED_PERIOD_RANGE_S = (0.5, 30.0)  # a meter sends every 1 s (DSMR 5) to 10 s (DSMR 4); others stay blocking
PACED_PERIOD_CHANGE = 0.1  # a measured period this far off the estimate starts a new estimate
PROBE_S = 0.002  # how much earlier each paced read comes than the last
FIRST_BEAT_AGREE_S = 0.04  # a first beat is trusted when its last beat is this close to the run's mean,
FIRST_BEAT_TRUSTED_AFTER = 5  # or once measured over this many telegrams (a late start is then a fifth of it)
# After this many paced reads in a row found whole telegrams, each comes earlier than the last by twice as
# much as the one before: a beat measured too long is caught up with in a few telegrams, where a steady
# probe would let the reads fall ever later, up to a whole beat.
PROBE_GROWS_AFTER = 12  # past where a steady 2 ms probe lands a read inside a telegram (about 16 reads)
LINE_SLACK = 1.1  # a meter may leave gaps between characters: a telegram takes up to a tenth longer
EARLY_RUN_S = 0.06  # and this much more, over n: a beat measured over n beats errs by up to 2 jitters (30 ms) / n


def tail_state(data: bytes) -> str:
    """Whether bytes read end with a whole telegram (its ``!`` line and CRC), part of one, or nothing."""
    if not data:
        return TAIL_EMPTY
    end = data.rfind(b"!")
    if end < 0 or not data.endswith(b"\n") or data[end + 1:].strip(b"0123456789ABCDEFabcdef\r\n"):
        return TAIL_PARTIAL
    return TAIL_COMPLETE


def telegram_ends(data: bytes) -> int:
    return data.count(b"\n!") + data.startswith(b"!")


class LinePacer:
    """When to read a line that carries one telegram per period, so that each telegram costs one wake-up.

    A meter sends on a steady beat (1 s, or 10 s on DSMR 4). Once the beat is measured, the reader sleeps
    until just after the next telegram should have ended and takes it whole in one read. The beat is
    measured from telegram starts over a growing run of telegrams, so its error shrinks as the run grows;
    a first beat is trusted once two beats or more agree, so one start read late does not set it. Each
    paced read comes a little earlier than the last, by more while the run is short, and by ever more
    after a few reads in a row found whole telegrams, so that a beat measured too long never lets the
    reads fall behind. When a read lands inside a telegram, it waits for the rest and measures the beat
    again, over the longer run. A paced read that finds nothing starts the
    run afresh; that, or two telegrams at once, goes back to blocking reads. Pure: the caller reads and
    sleeps.
    """

    def __init__(self, s_per_byte: float) -> None:
        self.s_per_byte = s_per_byte
        self.settle_s = TELEGRAM_SETTLE_S  # how long a telegram takes on the line after its first byte
        self.period_s: float | None = None
        self.next_read_at: float | None = None
        self._run_start_at: float | None = None  # when the first telegram of the current run started
        self._run_telegrams = 0  # telegrams ended since that one
        self._measured_over = 1  # beats in the span that measured period_s
        self._probe_s = PROBE_S
        self._whole_in_a_row = 0  # paced reads since the last that waited on the line
        self._last_start_at: float | None = None  # the start of the last telegram a read waited for

    @staticmethod
    def _arrived(partial: bytes) -> int | None:
        """How many bytes of the telegram under way ``partial`` holds; None when its start is not in it."""
        start = partial.rfind(b"/")
        return None if start < 0 else len(partial) - start

    def rest_s(self, partial: bytes) -> float:
        """How long the rest of a telegram, of which ``partial`` has arrived, still takes."""
        have = self._arrived(partial) or 0
        return max(TELEGRAM_SETTLE_S, self.settle_s - have * self.s_per_byte * LINE_SLACK)

    def started_at(self, partial: bytes, now: float) -> float | None:
        """When the telegram of which ``partial`` has arrived by ``now`` started, if it can be told."""
        have = self._arrived(partial)
        return None if have is None else now - have * self.s_per_byte

    def anchored(self, data: bytes, start_at: float | None) -> None:
        """A read waited on the line and returned ``data``, whose last telegram started at ``start_at``."""
        ends = telegram_ends(data)
        self._run_telegrams += ends
        self.next_read_at = None
        self._probe_s = PROBE_S
        self._whole_in_a_row = 0
        if tail_state(data) != TAIL_COMPLETE:
            return
        end = data.rfind(b"!")
        start = data.rfind(b"/", 0, end)
        if start >= 0:
            self.settle_s = min(TELEGRAM_SETTLE_MAX_S,
                                max(TELEGRAM_SETTLE_S, (len(data) - start) * self.s_per_byte * LINE_SLACK + 0.02))
        if start_at is None or ends != 1:
            return
        last_start_at, self._last_start_at = self._last_start_at, start_at
        if self._run_start_at is None or self._run_telegrams < 2 or last_start_at is None:
            self._restart_run(start_at)
            return
        measured = (start_at - self._run_start_at) / (self._run_telegrams - 1)
        low, high = PACED_PERIOD_RANGE_S
        if not low <= measured <= high or (
                self.period_s is not None and abs(measured - self.period_s) > PACED_PERIOD_CHANGE * self.period_s):
            # A pause, a new meter, a dongle that batches: measure afresh from this telegram.
            self.period_s = None
            self._restart_run(start_at)
            return
        if self.period_s is None and (self._run_telegrams < 3 or (
                self._run_telegrams < FIRST_BEAT_TRUSTED_AFTER
                and abs((start_at - last_start_at) - measured) > FIRST_BEAT_AGREE_S)):
            # A first beat is trusted only over two beats or more, the last of them like the rest: a reader
            # woken late for one first byte (a busy start-up) would make it that much off.
            return
        self.period_s = measured
        self._measured_over = self._run_telegrams - 1
        self.next_read_at = start_at + measured + self.settle_s

    def _restart_run(self, start_at: float) -> None:
        self._run_start_at = self._last_start_at = start_at
        self._run_telegrams = 1

    def paced(self, data: bytes) -> None:
        """A paced read found whole telegrams (``data``): plan the next one, a little earlier on the beat."""
        ends = telegram_ends(data)
        self._run_telegrams += ends
        if ends != 1 or self.period_s is None or self.next_read_at is None:
            # Two at once: the reader fell behind; read blocking and find the beat again.
            self.next_read_at = None
            return
        # A beat measured over a short span may be a jitter's worth too long: come earlier by more then, so
        # that the next read inside a telegram soon measures it over a longer span.
        self._whole_in_a_row += 1
        if self._whole_in_a_row > PROBE_GROWS_AFTER:
            # At most half a telegram's time on the line: a read that overshoots its end lands inside it.
            self._probe_s = min(2 * self._probe_s, self.settle_s / 2)
        self.next_read_at += self.period_s - EARLY_RUN_S / self._measured_over - self._probe_s

    def lost(self) -> None:
        """A blocking read found nothing: read blocking until the beat is found again."""
        self.next_read_at = None

    def missed(self) -> None:
        """A paced read found nothing: the meter skipped a telegram, paused or moved its phase.

        The beat is measured afresh: a run of telegrams across the gap would count beats that passed
        without a telegram as none, measure the beat too long, and the reads would fall ever later.
        """
        self.next_read_at = None
        self._run_start_at = None


class SerialSource:
    """A serial port or a pyserial URL (ser2net, ESP dongles)."""

    def __init__(self, target: str, settings: SerialSettings, read_timeout_s: float = 1.0, *,
                 sleep: Callable[[float], object] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.description = target
        try:
            if target.startswith(URL_SCHEMES):
                port = serial.serial_for_url(target, do_not_open=True)
            else:
                port = serial.Serial()
                port.port = target
            port.baudrate = settings.baudrate
            port.bytesize = settings.bytesize
            port.parity = settings.parity
            port.stopbits = settings.stopbits
            port.xonxoff = settings.xonxoff
            port.timeout = read_timeout_s
            port.open()
        except (serial.SerialException, OSError, ValueError) as exc:
            raise SourceError(describe_os_error(target, exc)) from None
        self._port = port
        self._read_timeout_s = read_timeout_s
        # The pipeline's sleep ends at once on shutdown, so a paced wait of a DSMR 4 meter's 10 s never delays a stop.
        self._sleep = sleep
        self._clock = clock
        # Start, data, parity and stop bits of one character on the line.
        self.pacer = LinePacer((2 + settings.bytesize + (settings.parity != "N") + settings.stopbits - 1)
                               / settings.baudrate)
        # pyserial's socket:// port reports in_waiting as 0 or 1 (readable or
        # not), which would take the rest of a telegram two bytes per read; its
        # timeout can be changed freely (rfc2217's cannot: that talks to the server).
        self._nonblocking_rest = target.startswith("socket://")

    def next_data_in_s(self) -> float | None:
        """How long until the next paced read (a telegram due then), or None while reads block."""
        next_read_at = self.pacer.next_read_at
        return None if next_read_at is None else max(0.0, next_read_at - self._clock())

    def read(self) -> bytes:
        try:
            return self._read()
        except (serial.SerialException, OSError, TypeError) as exc:
            # pyserial raises TypeError from a port whose USB adapter was just unplugged.
            raise SourceError(f"lost {self.description}: {exc}") from None

    def _read(self) -> bytes:
        pacer = self.pacer
        if pacer.next_read_at is not None:
            # One wake-up per telegram: sleep past its expected end and take it whole.
            self._sleep(max(0.0, pacer.next_read_at - self._clock()))
            data = self._read_waiting()
            state = tail_state(data)
            if state == TAIL_COMPLETE:
                pacer.paced(data)
                return data
            if state == TAIL_PARTIAL:
                start_at = pacer.started_at(data, self._clock())
                self._sleep(pacer.rest_s(data))
                data += self._read_waiting()
                pacer.anchored(data, start_at)
                return data
            pacer.missed()
        first = self._port.read(1)  # blocks up to the read timeout
        if not first:
            pacer.lost()
            return b""
        start_at = self._clock() if first == b"/" else None
        # Let the rest of the telegram arrive before reading it, so that even an unpaced read wakes twice per
        # telegram (its first byte, then all the rest), not once per byte or once per part of it: the wait
        # is as long as the last whole telegram took on the line (126 ms for 1455 bytes at 115200 baud).
        self._sleep(pacer.settle_s)
        data = bytes(first) + self._read_waiting()
        waited_s = pacer.settle_s
        while start_at is not None and tail_state(data) == TAIL_PARTIAL and waited_s < TELEGRAM_SETTLE_MAX_S:
            # Longer than the last telegram (or the first one): wait for its end once, then the wait is known.
            rest_s = pacer.rest_s(data)
            self._sleep(rest_s)
            waited_s += rest_s
            more = self._read_waiting()
            if not more:
                break
            data += more
        pacer.anchored(data, start_at)
        return data

    def _read_waiting(self) -> bytes:
        """Whatever has arrived, up to READ_BYTES, without waiting for more."""
        if not self._nonblocking_rest:
            return bytes(self._port.read(min(self._port.in_waiting, READ_BYTES)))
        self._port.timeout = 0
        try:
            return bytes(self._port.read(READ_BYTES))
        finally:
            self._port.timeout = self._read_timeout_s

    def close(self) -> None:
        try:
            self._port.close()
        except (serial.SerialException, OSError):
            pass
