"""A serial device or a pyserial URL (``socket://``, ``rfc2217://``): a P1 cable, ser2net, a WiFi dongle.

Failures become SourceError with a message that says what to do, never a traceback.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import time

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


class SerialSource:
    """A serial port or a pyserial URL (ser2net, ESP dongles)."""

    def __init__(self, target: str, settings: SerialSettings, read_timeout_s: float = 1.0) -> None:
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
        # Start, data, parity and stop bits of one character on the line.
        self._s_per_byte = (2 + settings.bytesize + (settings.parity != "N") + settings.stopbits - 1) / settings.baudrate
        self._settle_s = TELEGRAM_SETTLE_S
        # pyserial's socket:// port reports in_waiting as 0 or 1 (readable or
        # not), which would take the rest of a telegram two bytes per read; its
        # timeout can be changed freely (rfc2217's cannot: that talks to the server).
        self._nonblocking_rest = target.startswith("socket://")

    def read(self) -> bytes:
        try:
            first = self._port.read(1)  # blocks up to the read timeout
            if not first:
                return b""
            # Let the rest of the telegram arrive before reading it, so that a Raspberry Pi wakes twice per
            # telegram (its first byte, then all the rest), not once per byte or once per part of it: the wait
            # is as long as the last whole telegram took on the line (126 ms for 1455 bytes at 115200 baud).
            time.sleep(self._settle_s)
            data = bytes(first) + self._read_waiting()
            end = data.rfind(b"!")
            start = data.rfind(b"/", 0, end)
            if start >= 0:
                self._settle_s = min(TELEGRAM_SETTLE_MAX_S,
                                     max(TELEGRAM_SETTLE_S, (len(data) - start) * self._s_per_byte * 1.1 + 0.02))
            return data
        except (serial.SerialException, OSError, TypeError) as exc:
            # pyserial raises TypeError from a port whose USB adapter was just unplugged.
            raise SourceError(f"lost {self.description}: {exc}") from None

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
