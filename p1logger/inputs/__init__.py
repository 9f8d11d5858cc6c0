"""Where telegrams come from: the one place that turns P1_SOURCE into a source.

| P1_SOURCE                               | input                       | module        |
|-----------------------------------------|-----------------------------|---------------|
| ``/dev/ttyUSB0``, ``COM3``              | a serial port (P1 cable)    | ``serial``    |
| ``socket://h:p``, ``rfc2217://h:p``...  | a pyserial URL (ser2net...) | ``serial``    |
| ``file:PATH`` (``.gz`` too), ``-``      | a recording, stdin          | ``file``      |
| ``simulator``                           | the simulated meter         | ``simulator`` |

Archives (``run --archive``, ``record``) are read back by ``inputs.archive``
for ``replay``. To add an input: a module here, and one entry in ``SCHEMES``.
``inputs.entsoe`` is the one input that brings no telegrams: day-ahead prices
for ``p1logger prices fetch`` (``docs/cost.md``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from p1logger.config import SerialSettings
from p1logger.contracts import Source
from p1logger.errors import SourceError

# This much input without one valid telegram means the line settings are wrong.
GARBAGE_LIMIT_BYTES = 16384
GARBAGE_HINT = (
    "only garbage is arriving: wrong baud rate or cable? DSMR 4/5 and Belgian meters use 115200 8N1, "
    "DSMR 2.2/3 use 9600 7E1 (--dsmr22); the P1 cable must invert the signal"
)
CRC_HINT = ("telegrams arrive but fail their checksum: noisy cable or two readers on one port? "
            "Try a shorter or shielded cable, and check that no other program (ModemManager, Home Assistant, "
            "a second logger) reads the same port")
CRC_MISSING_HINT = ("telegrams arrive without their CRC line although the meter is DSMR 4 or newer: a gateway or "
                    "dongle that strips it? Read the meter's own P1 output, or set the gateway to pass telegrams unchanged")
NO_SOURCE = "no source: set P1_SOURCE (e.g. /dev/ttyUSB0, socket://host:2001, file:PATH or simulator)"


@dataclass(frozen=True)
class OpenOptions:
    serial: SerialSettings
    realtime: bool = False
    read_timeout_s: float = 1.0
    sleep: Callable[[float], object] = time.sleep


def _file(spec: str, options: OpenOptions) -> Source:
    from p1logger.inputs.file import FileSource

    path = spec[len("file:"):] if spec.startswith("file:") else spec
    return FileSource(path, realtime=options.realtime, sleep=options.sleep)


def _simulator(spec: str, options: OpenOptions) -> Source:
    from p1logger.inputs.simulator import simulator_from_env

    return simulator_from_env(sleep=options.sleep)


def _serial(spec: str, options: OpenOptions) -> Source:
    from p1logger.inputs.serial import SerialSource

    return SerialSource(spec, options.serial, options.read_timeout_s, sleep=options.sleep)


# (does this spec name the input?, opener, is it live?) in the order they are tried; serial takes the rest.
SCHEMES: tuple[tuple[Callable[[str], bool], Callable[[str, OpenOptions], Source], bool], ...] = (
    (lambda spec: spec.startswith("file:") or spec == "-", _file, False),
    (lambda spec: spec == "simulator", _simulator, True),
    (os.path.isfile, _file, False),  # "dump telegrams.txt": a recording named like a device
    (lambda spec: True, _serial, True),
)


def no_valid_telegram_hint(rejected: Mapping[str, int]) -> str:
    """Why no valid telegram arrived, judging by what was rejected: whole telegrams failing only their
    checksum mean the line settings are right and the signal is damaged; anything else, the settings."""
    missing = rejected.get("crc_missing", 0)
    checksum = rejected.get("crc", 0) + missing
    if checksum and checksum >= sum(rejected.values()) - checksum:
        # A line that drops telegram ends never drops only the CRC, every time.
        return CRC_MISSING_HINT if missing == checksum else CRC_HINT
    return GARBAGE_HINT


def parse_file_spec(spec: str) -> str | None:
    """``file:PATH`` -> PATH, else None."""
    return spec[5:] if spec.startswith("file:") else None


def is_live(spec: str) -> bool:
    """A meter (or the simulator), whose telegrams cannot wait; not a file that can."""
    for matches, _, live in SCHEMES:
        if matches(spec):
            return live
    return True


def open_source(
    spec: str,
    settings: SerialSettings,
    *,
    realtime: bool = False,
    read_timeout_s: float = 1.0,
    sleep: Callable[[float], object] = time.sleep,
) -> Source:
    """Open what P1_SOURCE names. SourceError (a message saying what to fix) when it cannot be opened."""
    if not spec:
        raise SourceError(NO_SOURCE)
    options = OpenOptions(settings, realtime, read_timeout_s, sleep)
    for matches, opener, _ in SCHEMES:
        if matches(spec):
            return opener(spec, options)
    raise SourceError(NO_SOURCE)  # unreachable: serial takes every other spec
