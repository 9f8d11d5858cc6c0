"""Where telegram bytes come from (pipeline stage: source).

A serial device, a pyserial URL (``socket://``, ``rfc2217://``), a recorded file
(``file:PATH``, ``-`` for stdin) or the built-in simulated meter.  This is the
only input I/O in the pipeline.  Failures become SourceError with a message
that says what to do, never a traceback.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import stat
import sys
import time
from pathlib import Path
from typing import BinaryIO, Callable, Mapping, Protocol

import serial

from p1logger.config import SerialSettings
from p1logger.errors import SourceError

logger = logging.getLogger(__name__)

READ_BYTES = 4096
TELEGRAM_SETTLE_S = 0.05
URL_SCHEMES = ("socket://", "rfc2217://", "loop://", "spy://", "alt://", "hwgrep://")

# This much input without one valid telegram means the line settings are wrong.
GARBAGE_LIMIT_BYTES = 16384
GARBAGE_HINT = (
    "only garbage is arriving: wrong baud rate or cable? DSMR 4/5 and Belgian meters use 115200 8N1, "
    "DSMR 2.2/3 use 9600 7E1 (--dsmr22); the P1 cable must invert the signal"
)


CRC_HINT = ("telegrams arrive but fail their checksum: noisy cable or two readers on one port? "
            "Try a shorter or shielded cable, and check that no other program (ModemManager, Home Assistant, "
            "a second logger) reads the same port")


def no_valid_telegram_hint(rejected: Mapping[str, int]) -> str:
    """Why no valid telegram arrived, judging by what was rejected: whole telegrams failing only their
    checksum mean the line settings are right and the signal is damaged; anything else, the settings."""
    checksum = rejected.get("crc", 0) + rejected.get("crc_missing", 0)
    if checksum and checksum >= sum(rejected.values()) - checksum:
        return CRC_HINT
    return GARBAGE_HINT


class Source(Protocol):
    description: str

    def read(self) -> bytes:
        """Some bytes; b"" when nothing arrived within the read timeout.  EOFError at the end of a file."""
        ...

    def close(self) -> None: ...


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
        # pyserial's socket:// port reports in_waiting as 0 or 1 (readable or
        # not), which would take the rest of a telegram two bytes per read; its
        # timeout can be changed freely (rfc2217's cannot: that talks to the server).
        self._nonblocking_rest = target.startswith("socket://")

    def read(self) -> bytes:
        try:
            first = self._port.read(1)  # blocks up to the read timeout
            if not first:
                return b""
            # Let the rest of the telegram arrive (about 80 ms at 115200 baud) so a
            # Raspberry Pi wakes a few times per telegram, not once per byte.
            time.sleep(TELEGRAM_SETTLE_S)
            return bytes(first) + self._read_waiting()
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


class FileSource:
    """A recorded stream.  As fast as possible, or paced like a meter with ``realtime``."""

    def __init__(
        self,
        path: str,
        realtime: bool = False,
        interval_s: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
        stdin_wait_s: float = 1.0,
    ) -> None:
        self.description = "stdin" if path == "-" else path
        self._stdin_wait_s = stdin_wait_s
        self._realtime = realtime
        self._interval_s = interval_s
        self._sleep = sleep
        self._pending = b""
        try:
            self._file: BinaryIO = sys.stdin.buffer if path == "-" else open(Path(path), "rb")
        except OSError as exc:
            raise SourceError(f"cannot read {path}: {exc.strerror}") from None
        self._opener = _open_compressed if path.endswith(".gz") else None
        if self._opener is not None:
            self._file = self._opener(self._file)

    def read(self) -> bytes:
        if not self._realtime:
            data = self._read_chunk()
            if data is None:
                return b""  # a quiet pipe: nothing yet
            if not data:
                raise EOFError
            return data
        # Paced: hand out one telegram per interval, as a meter would.
        while True:
            cut = self._pending.find(b"\n/", 1)
            if cut >= 0:
                chunk, self._pending = self._pending[: cut + 1], self._pending[cut + 1 :]
                self._sleep(self._interval_s)
                return chunk
            data = self._read_chunk()
            if data is None:
                return b""
            if not data:
                if self._pending:
                    chunk, self._pending = self._pending, b""
                    return chunk
                raise EOFError
            self._pending += data

    def _read_chunk(self) -> bytes | None:
        """Up to 64 KiB; b"" at the end; None when a pipe had nothing within the wait."""
        if self._file is not sys.stdin.buffer:
            return self._file.read(65536)
        # A pipe (socat /dev/ttyUSB0 - | p1logger run --source -) may stay open and
        # quiet: hand over what has arrived at once, and return now and then so the
        # caller can notice a stop.  The raw descriptor is read, bypassing Python's
        # buffer, which select() cannot see.
        try:
            descriptor = self._file.fileno()
            ready, _, _ = select.select([descriptor], [], [], self._stdin_wait_s)
        except (OSError, ValueError):
            # No select() on this kind of input (Windows, or a stand-in stream): read what is there.
            read_available: Callable[[int], bytes] = getattr(self._file, "read1", self._file.read)
            return read_available(65536)
        return os.read(descriptor, 65536) if ready else None

    def close(self) -> None:
        if self._file is not sys.stdin.buffer:
            self._file.close()


def _open_compressed(raw: BinaryIO) -> BinaryIO:
    import gzip

    return gzip.GzipFile(fileobj=raw)  # type: ignore[return-value]


def parse_file_spec(spec: str) -> str | None:
    """``file:PATH`` -> PATH, else None."""
    return spec[5:] if spec.startswith("file:") else None


def open_source(
    spec: str,
    settings: SerialSettings,
    *,
    realtime: bool = False,
    read_timeout_s: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> Source:
    """Open what P1_SOURCE names."""
    if not spec:
        raise SourceError("no source given: set P1_SOURCE (e.g. /dev/ttyUSB0, socket://host:2001, file:PATH or simulator)")
    path = parse_file_spec(spec)
    if path is not None:
        return FileSource(path, realtime=realtime, sleep=sleep)
    if spec == "-":
        return FileSource("-", realtime=realtime, sleep=sleep)
    if spec == "simulator":
        from p1logger.simulate import simulator_from_env

        return simulator_from_env(sleep=sleep)
    if os.path.isfile(spec):  # "dump telegrams.txt": a recording named like a device
        return FileSource(spec, realtime=realtime, sleep=sleep)
    return SerialSource(spec, settings, read_timeout_s)
