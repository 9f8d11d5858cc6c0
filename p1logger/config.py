"""Configuration: every setting is an environment variable with a matching flag.

Flags win over the environment; the environment wins over the defaults.  A
bad value stops start-up with a ConfigError whose one-line message says what
to fix.  Secrets are read here and never echoed: not in ``--help``, not in
errors, not in ``repr``.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from p1logger.errors import ConfigError
from p1logger.timestamps import DEFAULT_TIMEZONE

if TYPE_CHECKING:
    from p1logger.dlms import Keys

# Tariff 1 is day in Belgium but night (low) in the Netherlands: the decoded data
# keeps the numbers, and only what a person reads gets these labels.
TARIFF_LABELS: dict[str, dict[int, str]] = {
    "BE": {1: "day (peak)", 2: "night (off-peak)"},
    "NL": {1: "low (night)", 2: "normal (day)"},
    "LU": {1: "day", 2: "night"},
}
DEFAULT_COUNTRY = "BE"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
PARITIES = {"N": "N", "E": "E", "O": "O", "NONE": "N", "EVEN": "E", "ODD": "O"}


def env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def tariff_label(country: str, tariff: int) -> str:
    return TARIFF_LABELS.get(country, {}).get(tariff, f"tariff {tariff}")


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
        group.add_argument(
            "device",
            nargs="?",
            default=env("P1_SOURCE"),
            help="serial device (/dev/ttyUSB0, COM3), pyserial URL (socket://host:port, rfc2217://host:port) "
            "[env P1_SOURCE]",
        )
        group.add_argument("--input", "-i", metavar="FILE", help="read a recorded file instead (- for stdin)")
    group.add_argument("--baud", type=int, default=int(env("P1_BAUD", "115200") or 115200),
                       help="baud rate: 115200 for DSMR 4/5 and Belgian meters, 9600 for DSMR 2.2/3 "
                       "(default %(default)s) [env P1_BAUD]")
    group.add_argument("--bytesize", type=int, choices=(7, 8), default=int(env("P1_BYTESIZE", "8") or 8),
                       help="data bits: 8, or 7 for DSMR 2.2/3 (default %(default)s) [env P1_BYTESIZE]")
    group.add_argument("--parity", default=env("P1_PARITY", "N"),
                       help="parity N, E or O: E for DSMR 2.2/3 (default %(default)s) [env P1_PARITY]")
    group.add_argument("--stopbits", type=int, choices=(1, 2), default=1, help="stop bits (default %(default)s)")
    group.add_argument("--xonxoff", action="store_true", default=env("P1_XONXOFF") == "1",
                       help="software flow control (rarely needed) [env P1_XONXOFF=1]")
    group.add_argument("--dsmr22", action="store_true",
                       help="shortcut for the DSMR 2.2/3 line settings: 9600 baud, 7 data bits, even parity")
    group.add_argument("--max-telegram-bytes", type=int, default=8192,
                       help="longest telegram accepted; longer input is dropped and counted (default %(default)s)")


def add_decode_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("decoding")
    group.add_argument("--timezone", default=env("P1_TIMEZONE", DEFAULT_TIMEZONE),
                       help="the meter's time zone, an IANA name (default %(default)s) [env P1_TIMEZONE]")
    group.add_argument("--country", default=env("P1_COUNTRY", DEFAULT_COUNTRY),
                       help="country for tariff labels: BE (tariff 1 = day) or NL (tariff 1 = night) "
                       "(default %(default)s) [env P1_COUNTRY]")


def add_logging_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-level", default=env("P1_LOG_LEVEL", "INFO"),
                        help="DEBUG, INFO, WARNING or ERROR (default %(default)s) [env P1_LOG_LEVEL]")


def serial_settings(args: argparse.Namespace) -> SerialSettings:
    if getattr(args, "dsmr22", False):
        return SerialSettings.dsmr22()
    parity = PARITIES.get(str(args.parity).upper())
    if parity is None:
        raise ConfigError(f"parity {args.parity!r} is not N, E or O: use --parity E for DSMR 2.2/3, N otherwise")
    if args.baud <= 0:
        raise ConfigError(f"baud rate {args.baud} is not valid: use --baud 115200 (DSMR 4/5) or 9600 (DSMR 2.2/3)")
    return SerialSettings(args.baud, args.bytesize, parity, args.stopbits, bool(args.xonxoff))


def check_country(country: str) -> str:
    value = country.strip().upper()
    if len(value) != 2 or not value.isalpha():
        raise ConfigError(f"country {country!r} is not a two-letter code: set P1_COUNTRY to BE or NL")
    return value


def check_log_level(level: str) -> str:
    value = level.strip().upper()
    if value not in LOG_LEVELS:
        raise ConfigError(f"log level {level!r} is not one of {', '.join(LOG_LEVELS)}: fix P1_LOG_LEVEL")
    return value


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
    group = parser.add_argument_group("encrypted meters (Luxembourg Smarty, Austrian Sagemcom)")
    group.add_argument("--decryption-key", metavar="HEX",
                       help="the 32-hex-digit key from the grid operator that decrypts the meter's frames "
                       "[env P1_DECRYPTION_KEY, or a file named by P1_DECRYPTION_KEY_FILE; the variable is safer "
                       "than a flag, which other users can see in ps]")
    group.add_argument("--decryption-key-file", metavar="FILE",
                       help="file holding the decryption key (Docker secrets) [env P1_DECRYPTION_KEY_FILE]")
    group.add_argument("--authentication-key", metavar="HEX",
                       help="optional authentication key: with it the frames' GCM tag is checked; without it the "
                       "telegram's CRC guards the content [env P1_AUTHENTICATION_KEY, or P1_AUTHENTICATION_KEY_FILE]")
    group.add_argument("--authentication-key-file", metavar="FILE",
                       help="file holding the authentication key [env P1_AUTHENTICATION_KEY_FILE]")


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
            file_name = env(variable + "_FILE")
            text, setting = env(variable), (variable + "_FILE" if file_name else variable)
        text = read_secret(text, file_name, what, setting)
        found.append(parse_key(text, setting) if text else None)
    decryption, authentication = found
    if decryption is None:
        if authentication is not None:
            raise ConfigError("an authentication key is set but no decryption key: set P1_DECRYPTION_KEY too")
        return None
    return Keys(decryption, authentication)
