"""Configuration shared by the commands: the argument groups, serial settings, tariff labels.

Every setting is declared in p1logger/settings.py (one table): flags win over
the environment, the environment over the defaults, and a bad value stops the
command that uses it with one ConfigError line.  Secrets are never echoed: not
in ``--help``, not in errors, not in ``repr``.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any
from pathlib import Path
from typing import TYPE_CHECKING

from p1logger import cosem, settings
from p1logger.errors import ConfigError

if TYPE_CHECKING:
    from p1logger.dlms import Keys

# Tariff 1 is day in Belgium but night (low) in the Netherlands: the decoded data
# keeps the numbers, and only what a person reads gets these labels.
TARIFF_LABELS: dict[str, dict[int, str]] = {
    "BE": {1: "day (peak)", 2: "night (off-peak)"},
    "NL": {1: "low (night)", 2: "normal (day)"},
    "LU": {1: "day", 2: "night"},
    "AT": {1: "T1", 2: "T2"},  # what each tariff means is the supplier's: Austria has no national rule
}
DEFAULT_COUNTRY = "BE"
EMUCS_VERSION_OBIS = "0-0:96.1.4"
DSMR_VERSION_OBIS = "1-3:0.2.8"

logger = logging.getLogger(__name__)


def env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def tariff_label(country: str, tariff: int) -> str:
    return TARIFF_LABELS.get(country, {}).get(tariff, f"tariff {tariff}")


def detect_country(header: str, obis_codes: Collection[str]) -> tuple[str, str]:
    """(country, why) from what a telegram says about itself; "" when it cannot tell."""
    if EMUCS_VERSION_OBIS in obis_codes:
        return "BE", f"the meter sends {EMUCS_VERSION_OBIS}, the Belgian e-MUCS version"
    if header.startswith("Lux"):
        return "LU", "the meter identifies itself as a Luxembourg Smarty meter (Lux)"
    if cosem.HEADER_MARK in header:
        return "AT", "the meter sends DLMS/COSEM data, as Austrian meters do"
    if DSMR_VERSION_OBIS in obis_codes or not header:
        return "NL", (f"a DSMR meter without {EMUCS_VERSION_OBIS} (which every Belgian meter sends): "
                      "Dutch tariff numbering; set P1_COUNTRY if the meter is elsewhere")
    return "NL", (f"no {EMUCS_VERSION_OBIS} (which every Belgian meter sends): Dutch tariff numbering; "
                  "set P1_COUNTRY if the meter is elsewhere")


def labels_text(country: str) -> str:
    labels = TARIFF_LABELS.get(country, {})
    return ", ".join(f"tariff {number} = {label}" for number, label in sorted(labels.items()))


class CountryLabels:
    """The country whose tariff labels apply, configured or detected, and why."""

    def __init__(self, configured: str) -> None:
        self.configured = configured
        self.country = configured
        self.reason = f"P1_COUNTRY={configured}" if configured else ""

    def update(self, header: str, obis_codes: Collection[str]) -> bool:
        """Detect from one telegram (unless configured); True when the labels changed."""
        if self.configured:
            return False
        country, reason = detect_country(header, obis_codes)
        if (country, reason) == (self.country, self.reason):
            return False
        self.country, self.reason = country, reason
        return True

    def describe(self) -> str:
        how = self.reason if self.configured else f"detected: {self.reason}"
        return f"tariff labels for {self.country} ({labels_text(self.country)}); {how}"


class TariffLog:
    """For ``run``: logs the tariff names once, when the first telegram shows them; adds no points."""

    name = "tariff-labels"

    def __init__(self, configured: str) -> None:
        self.labels = CountryLabels(configured)
        self._logged = False

    def build(self, telegram: Any, received_at_s: float) -> list[str]:
        if self.labels.update(telegram.header, telegram.fields) or not self._logged:
            self._logged = True
            logger.info("%s", self.labels.describe())
        return []

    def figures(self) -> None:
        return None


@dataclass(frozen=True)
class SerialSettings:
    baudrate: int = 115200
    bytesize: int = 8
    parity: str = "N"
    stopbits: int = 1
    xonxoff: bool = False

    @classmethod
    def dsmr22(cls) -> "SerialSettings":
        return cls(9600, 7, "E", 1, False)


def add_source_arguments(parser: argparse.ArgumentParser, *, positional: bool) -> None:
    """The flags that say where telegrams come from and how to read the serial line."""
    group = parser.add_argument_group("source")
    if positional:
        settings.add(group, "P1_SOURCE", positional="device")
        group.add_argument("--input", "-i", metavar="FILE", help="read a recorded file instead (- for stdin)")
    settings.add(group, "P1_BAUD", "P1_BYTESIZE", "P1_PARITY", "P1_STOPBITS", "P1_XONXOFF")
    group.add_argument("--dsmr22", action="store_true",
                       help="shortcut for the DSMR 2.2/3 line settings: 9600 baud, 7 data bits, even parity")
    settings.add(group, "P1_MAX_TELEGRAM_BYTES")


def add_decode_arguments(parser: argparse.ArgumentParser) -> None:
    settings.add(parser.add_argument_group("decoding"), "P1_TIMEZONE", "P1_COUNTRY")


def add_logging_arguments(parser: argparse.ArgumentParser) -> None:
    settings.add(parser, "P1_LOG_LEVEL")


def serial_settings(args: argparse.Namespace) -> SerialSettings:
    if getattr(args, "dsmr22", False):
        return SerialSettings.dsmr22()
    return SerialSettings(args.baud, args.bytesize, args.parity, args.stopbits, bool(args.xonxoff))


def check_source(spec: str) -> None:
    """What can be known about P1_SOURCE before opening it: a missing file will not appear by retrying."""
    path = spec[5:] if spec.startswith("file:") else None
    if path is not None and path != "-":
        if not os.path.exists(path):
            raise ConfigError(f"P1_SOURCE {spec!r}: there is no file {path}")
        if os.path.isdir(path) or not os.access(path, os.R_OK):
            raise ConfigError(f"P1_SOURCE {spec!r}: {path} is not a readable file")
    if spec == "simulator":
        for name in ("P1_SIMULATOR_PROFILE", "P1_SIMULATOR_SPEED", "P1_SIMULATOR_COUNT", "P1_SIMULATOR_START"):
            settings.value(name)


def check_country(country: str | None) -> str:
    """A parsed country (BE, NL, LU, AT), or "" when it is to be detected from the telegrams."""
    return settings.country(country or "")


def check_log_level(level: str) -> str:
    return str(settings.BY_ENV["P1_LOG_LEVEL"].convert(level, from_flag=False))


def read_secret(value: str | None, file_name: str | None, what: str, file_variable: str) -> str | None:
    """A secret from its variable or from a file (Docker secrets); never echoed."""
    if file_name:
        try:
            text = Path(file_name).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the {what} file {file_name} ({exc.strerror}): fix {file_variable}") from None
        if not text:
            raise ConfigError(f"the {what} file {file_name} is empty: fix {file_variable}")
        return text
    return value


# ------------------------------------------------------------------ encrypted meters
# The settings of encrypted meters (Luxembourg Smarty, Austrian Sagemcom), in one place.
# The keys are read from the environment or a file and never given argparse defaults,
# so neither --help nor a parsed namespace printed in a bug report shows them.

DECRYPTION_SETTINGS = (
    # (flag, variable, what)
    ("--decryption-key", "P1_DECRYPTION_KEY", "decryption key"),
    ("--authentication-key", "P1_AUTHENTICATION_KEY", "authentication key"),
)


def add_decryption_arguments(parser: argparse.ArgumentParser) -> None:
    settings.add(parser.add_argument_group("encrypted meters (Luxembourg Smarty, Austrian Sagemcom)"),
                 "P1_DECRYPTION_KEY", "P1_DECRYPTION_KEY_FILE", "P1_AUTHENTICATION_KEY", "P1_AUTHENTICATION_KEY_FILE",
                 env_default=False)


def decryption_keys(args: argparse.Namespace) -> Keys | None:
    """The keys set by flag, variable or file (a flag wins), checked; None when no decryption key is set."""
    # Imported here: cryptography is loaded only by the commands that read telegrams.
    from p1logger.dlms import Keys, parse_key

    found: list[bytes | None] = []
    for flag, variable, what in DECRYPTION_SETTINGS:
        attribute = flag[2:].replace("-", "_")
        text, setting = getattr(args, attribute, None), flag
        file_name = getattr(args, attribute + "_file", None)
        if file_name:
            setting = flag + "-file"
        elif not text:
            file_name = settings.value(variable + "_FILE")
            text, setting = settings.value(variable), (variable + "_FILE" if file_name else variable)
        text = read_secret(text, file_name, what, setting)
        found.append(parse_key(text, setting) if text else None)
    decryption, authentication = found
    if decryption is None:
        if authentication is not None:
            raise ConfigError("an authentication key is set but no decryption key: set P1_DECRYPTION_KEY too")
        return None
    return Keys(decryption, authentication)
