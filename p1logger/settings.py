"""Every setting of every command, in one table.

The table drives the flags, the environment variables, ``--help``, the README's
settings table and the checks of ``.env.example`` and
``deploy/p1logger.env.example`` (tests/test_settings.py fails when they
disagree).

Values are parsed lazily: building the parser only reads the environment, and a
value is parsed when the command that uses it is parsed, the same way whether
it came from a flag or from the environment.  ``--help`` and ``--version`` never
parse, and a command fails only on the settings it uses.  A bad value raises
ConfigError with one line: the variable (or flag), the value (never a secret's)
and what is expected.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from p1logger.errors import ConfigError

COUNTRIES = ("BE", "NL", "LU", "AT")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_PARITIES = {"N": "N", "E": "E", "O": "O", "NONE": "N", "EVEN": "E", "ODD": "O"}
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
# A timeout or interval longer than this is a typo, and a huge one overflows the socket layer.
MAX_SECONDS = 7 * 24 * 3600.0


class Invalid(ValueError):
    """A parser's complaint: what is expected, without the name or the value (added by the caller)."""


class EnvValue(str):
    """A default that came from the environment, so an error names the variable rather than the flag."""


# ------------------------------------------------------------------ parsers
# Each takes the text as written and returns the value, or raises Invalid(expected).


def _whole(text: str, what: str) -> int:
    cleaned = text.strip().replace("_", "")
    if not re.fullmatch(r"[+-]?[0-9]+", cleaned):
        raise Invalid(what)
    return int(cleaned)


def positive_int(what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = _whole(text, what)
        if value <= 0:
            raise Invalid(what)
        return value
    return parse


def non_negative_int(what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = _whole(text, what)
        if value < 0:
            raise Invalid(what)
        return value
    return parse


def one_of(*choices: str, fold: Callable[[str], str] = str.lower) -> Callable[[str], str]:
    expected = "one of " + ", ".join(choices)

    def parse(text: str) -> str:
        value = fold(text.strip())
        for choice in choices:
            if fold(choice) == value:
                return choice
        raise Invalid(expected)
    return parse


def int_choice(*choices: int) -> Callable[[str], int]:
    expected = " or ".join(str(choice) for choice in choices)

    def parse(text: str) -> int:
        if text.strip() not in {str(choice) for choice in choices}:
            raise Invalid(expected)
        return int(text.strip())
    return parse


def boolean(text: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise Invalid("1 or 0 (also true/false, yes/no, on/off)")


_SECONDS_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def seconds(minimum: float = 0.0, allow_zero: bool = False, maximum: float = MAX_SECONDS) -> Callable[[str], float]:
    """Seconds as a number, or with a unit: 500ms, 30s, 5m, 2h, 1d."""
    lower = "at least 0" if allow_zero else "more than 0"
    expected = f"seconds ({lower}, at most {maximum:g}), a number or with a unit: 30, 1.5, 500ms, 30s, 5m, 1h"

    def parse(text: str) -> float:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|min|m|h|d)?\s*", text.lower())
        if not match:
            raise Invalid(expected)
        value = float(match.group(1)) * _SECONDS_UNITS[match.group(2) or "s"]
        if not math.isfinite(value) or value > maximum or value < minimum or (value == 0 and not allow_zero):
            raise Invalid(expected)
        return value
    return parse


_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20, "g": 1 << 30,
               "gib": 1 << 30, "t": 1 << 40, "tib": 1 << 40, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}


def byte_size(allow_zero: bool) -> Callable[[str], int]:
    """Bytes as a whole number, or with a unit: 512M and 1GiB are powers of 1024, 500MB of 1000."""
    expected = (f"a size in bytes ({'0 for no limit, ' if allow_zero else ''}or with a unit: 512M, 512MiB, 1G, "
                "1GiB, 500MB)")

    def parse(text: str) -> int:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-z]*)\s*", text.lower())
        if not match or match.group(2) not in _SIZE_UNITS:
            raise Invalid(expected)
        value = float(match.group(1)) * _SIZE_UNITS[match.group(2)]
        if not math.isfinite(value) or value >= 1 << 60 or value != int(value):
            raise Invalid(expected)
        if value == 0 and not allow_zero:
            raise Invalid(expected)
        return int(value)
    return parse


def number(what: str, minimum: float | None = None) -> Callable[[str], float]:
    def parse(text: str) -> float:
        if not re.fullmatch(r"\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)\s*", text):
            raise Invalid(what)
        value = float(text)
        if minimum is not None and value < minimum:
            raise Invalid(what)
        return value
    return parse


def text(what: str, allow_empty: bool = False) -> Callable[[str], str]:
    """Free text without control characters (they would break a log line, a header or line protocol)."""
    def parse(value: str) -> str:
        if any(ord(char) < 32 or ord(char) == 127 for char in value) or (not allow_empty and not value.strip()):
            raise Invalid(what)
        return value
    return parse


def influx_url(value: str) -> str:
    """http(s) URLs with a host and a valid port, and no credentials in them; several separated by commas."""
    urls = [part.strip() for part in value.split(",")]
    if not any(urls):
        raise Invalid("an http:// or https:// URL with a host, e.g. http://localhost:8086")
    return ",".join(_one_influx_url(url) for url in urls if url)


def _one_influx_url(value: str) -> str:
    expected = "an http:// or https:// URL with a host (and a port from 1 to 65535), e.g. http://localhost:8086"
    if any(ord(char) < 33 for char in value):
        raise Invalid(expected)
    try:
        parts = urlsplit(value)
        port = parts.port  # raises ValueError for :abc and :99999
        host = parts.hostname
    except ValueError:
        raise Invalid(expected) from None
    if parts.scheme not in ("http", "https") or not host:
        raise Invalid(expected)
    if parts.username is not None or parts.password is not None or parts.query or parts.fragment:
        raise Invalid("a URL without user, password, token or query (put credentials in INFLUX_TOKEN, or "
                      "INFLUX_USERNAME and INFLUX_PASSWORD)")
    if port == 0:
        raise Invalid(expected)
    return value.rstrip("/")


def redact_url(value: str) -> str:
    """What may be shown of a URL (or of several, separated by commas): scheme, host, port and path; never a
    user, password or query."""
    if "," in value:
        return ",".join(redact_url(part) for part in value.split(","))
    try:
        parts = urlsplit(value)
        netloc = parts.netloc.rpartition("@")[2]
        shown = f"{parts.scheme}://{netloc}{parts.path}" if parts.scheme else netloc + parts.path
    except ValueError:
        shown = value.split("?", 1)[0].rpartition("@")[2]
    hidden = "@" in value or "?" in value or "#" in value
    return shown + ("?..." if "?" in value else "") if hidden else value


def web_url(value: str) -> str:
    try:
        return _one_influx_url(value.strip())
    except Invalid:
        raise Invalid("an http:// or https:// URL with a host and no credentials") from None


def prices_zone(value: str) -> str:
    from p1logger.dayahead import BIDDING_ZONES, bidding_zone

    try:
        bidding_zone(value.strip())
    except ConfigError:
        raise Invalid(f"a bidding zone ({', '.join(BIDDING_ZONES)}) or a 16-character EIC code") from None
    return value.strip()


def mqtt_url(value: str) -> str:
    from p1logger.outputs.mqtt.settings import parse_url

    try:
        parse_url(value)
    except ConfigError:
        raise Invalid("mqtt://[user@]host[:port] or mqtts:// for TLS, without a path or query") from None
    return value.strip()


def topic_prefix(value: str) -> str:
    text("a topic")(value)
    if not value.strip().strip("/") or any(char in value for char in "+#"):
        raise Invalid("an MQTT topic without + or #, e.g. p1logger")
    return value


def hex_key(value: str) -> str:
    cleaned = value.strip()
    cleaned = cleaned[2:] if cleaned[:2].lower() == "0x" else cleaned
    if not re.fullmatch(r"[0-9A-Fa-f]{32}", cleaned):
        raise Invalid("a key of 32 hex digits (16 bytes, as the grid operator gives it)")
    return cleaned


def timezone_name(value: str) -> str:
    expected = "an IANA time zone name such as Europe/Brussels or Europe/Amsterdam"
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(value.strip())
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a directory such as "Europe"
        raise Invalid(expected) from None
    return value.strip()


def country(value: str) -> str:
    """BE, NL, LU or AT; "auto" (or empty) detects the country from the telegrams."""
    cleaned = value.strip().upper()
    if cleaned in ("", "AUTO"):
        return ""
    if cleaned not in COUNTRIES:
        raise Invalid(f"{', '.join(COUNTRIES)}, or empty to detect it from the telegrams")
    return cleaned


def parity(value: str) -> str:
    found = _PARITIES.get(value.strip().upper())
    if found is None:
        raise Invalid("N, E or O (E for DSMR 2.2/3, N otherwise)")
    return found


def listen_address(value: str) -> str:
    expected = "HOST:PORT, e.g. 127.0.0.1:2001 (this machine) or 0.0.0.0:2001 (the LAN)"
    host, colon, port_text = value.strip().rpartition(":")
    if not colon or not host.strip("[]") or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise Invalid(expected)
    return value.strip()


def source(value: str) -> str:
    text("a serial device, socket://host:port, rfc2217://host:port, file:PATH or simulator")(value)
    if "://" in value:
        try:
            parts = urlsplit(value.strip())
            port = parts.port
        except ValueError:
            port = None
            parts = None
        if parts is None or not parts.hostname or port is None or port == 0:
            raise Invalid("a URL with a host and a port (1 to 65535), e.g. socket://192.0.2.10:2001")
    return value.strip()


OUTPUTS = ("influx", "-", "stdout", "mqtt")  # outputs.SELECTABLE


def output(value: str) -> str:
    parts = [part.strip() for part in value.split(",")]
    if not parts or any(part not in OUTPUTS for part in parts):
        raise Invalid("'-' (line protocol on standard output), 'mqtt' for MQTT only, a list such as 'influx,-', "
                      "or unset to write to InfluxDB")
    return value.strip()


def iso_time(value: str) -> str:
    from datetime import datetime

    try:
        datetime.fromisoformat(value.strip())
    except ValueError:
        raise Invalid("an ISO 8601 time such as 2024-05-11T12:00:00+02:00") from None
    return value.strip()


def simulator_profile(value: str) -> str:
    from p1logger.simulate import PROFILES

    if value.strip() not in PROFILES:
        raise Invalid("one of " + ", ".join(sorted(PROFILES)))
    return value.strip()


def _host_name() -> str:
    import socket  # here: health and --help read this table, and never need it

    return socket.gethostname()


def default_spool_dir() -> str:
    state_home = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(state_home, "p1logger")


# ------------------------------------------------------------------ the table


@dataclass(frozen=True)
class Setting:
    env: str
    flag: str | None  # None: only the environment (secrets: a flag would show in ps)
    parse: Callable[[str], Any]
    help: str
    commands: tuple[str, ...]
    group: str
    bad: str  # a malformed value, for the tests
    default: str | Callable[[], str] | None = None  # text, parsed like any value; None: unset
    default_doc: str | None = None  # how README and --help show a computed default
    secret: bool = False
    metavar: str | None = None
    kind: str = "value"  # "value", or "switch" for a flag without an argument
    aliases: tuple[str, ...] = ()  # more option strings for the flag, e.g. "-o"

    @property
    def dest(self) -> str | None:
        return self.flag.lstrip("-").replace("-", "_") if self.flag else None

    def shown_default(self) -> str:
        if self.default_doc is not None:
            return self.default_doc
        if self.default is None or callable(self.default) or self.secret:
            return ""
        return self.default

    def default_text(self) -> str | None:
        return self.default() if callable(self.default) else self.default

    def error(self, value: str, expected: str, from_flag: bool) -> ConfigError:
        name = self.flag if from_flag and self.flag else self.env
        shown = "" if self.secret else f" {redact_url(value)!r}" if self.env == "INFLUX_URL" else f" {value!r}"
        return ConfigError(f"{name}{shown} is not valid: expected {expected}")

    def convert(self, value: str, from_flag: bool) -> Any:
        try:
            return self.parse(value)
        except Invalid as exc:
            raise self.error(value, str(exc), from_flag) from None
        except (ValueError, OSError, TypeError):  # a parser's blind spot is still a bad value, not a crash
            raise self.error(value, f"a valid value ({self.help})", from_flag) from None


_SOURCE_COMMANDS = ("run", "doctor", "dump", "record", "capacity", "cost")
_DECODE_COMMANDS = ("run", "doctor", "dump", "record", "capacity", "cost", "replay")
_INFLUX_COMMANDS = ("run", "doctor", "replay")
_KEY_COMMANDS = ("run", "doctor", "dump", "record", "capacity", "replay")
_RUN = ("run", "doctor")

SETTINGS: tuple[Setting, ...] = (
    # --- the meter
    Setting("P1_SOURCE", "--source", source,
            "a serial device (/dev/ttyUSB0, COM3), a pyserial URL (socket://host:port, rfc2217://host:port), "
            "file:PATH to replay a recording as fast as possible, or simulator",
            _SOURCE_COMMANDS, "source", bad="socket://host:99999", metavar="SOURCE"),
    Setting("P1_REALTIME", "--realtime", boolean, "pace a file: source at one telegram per second",
            _RUN, "source", bad="sometimes", default="0", kind="switch"),
    Setting("P1_BAUD", "--baud", positive_int("a baud rate, 115200 (DSMR 4/5, Belgium) or 9600 (DSMR 2.2/3)"),
            "baud rate: 115200 for DSMR 4/5 and Belgian meters, 9600 for DSMR 2.2/3",
            _SOURCE_COMMANDS, "source", bad="fast", default="115200"),
    Setting("P1_BYTESIZE", "--bytesize", int_choice(7, 8), "data bits: 8, or 7 for DSMR 2.2/3",
            _SOURCE_COMMANDS, "source", bad="9", default="8"),
    Setting("P1_PARITY", "--parity", parity, "parity N, E or O: E for DSMR 2.2/3",
            _SOURCE_COMMANDS, "source", bad="X", default="N"),
    Setting("P1_STOPBITS", "--stopbits", int_choice(1, 2), "stop bits", _SOURCE_COMMANDS, "source",
            bad="3", default="1"),
    Setting("P1_XONXOFF", "--xonxoff", boolean, "software flow control (rarely needed)", _SOURCE_COMMANDS,
            "source", bad="maybe", default="0", kind="switch"),
    Setting("P1_MAX_TELEGRAM_BYTES", "--max-telegram-bytes", positive_int("a positive number of bytes"),
            "longest telegram accepted; longer input is dropped and counted",
            (*_SOURCE_COMMANDS, "replay"), "source", bad="8k", default="8192"),
    Setting("P1_TIMEZONE", "--timezone", timezone_name, "the meter's time zone, an IANA name",
            (*_DECODE_COMMANDS, "prices"), "decoding", bad="Europe/Brusels", default="Europe/Brussels"),
    Setting("P1_COUNTRY", "--country", country,
            "country for tariff labels: BE (tariff 1 = day), NL (tariff 1 = night), LU or AT (T1, T2); unset "
            "detects it from the telegrams (a Belgian meter sends 0-0:96.1.4, an Austrian DLMS meter COSEM data)",
            _DECODE_COMMANDS, "decoding", bad="XX", default_doc="detected"),
    Setting("P1_TIMESTAMPS", "--timestamps", one_of("meter", "receive"),
            "stamp points with the meter's clock, or with the receive time (meters whose clock is wrong; "
            "replay: the receive time the archive recorded)",
            ("run", "doctor", "replay"), "decoding", bad="recieve", default="meter"),
    # --- InfluxDB
    Setting("INFLUX_URL", "--influx-url", influx_url,
            "InfluxDB's URL, without credentials; several, separated by commas, write the same data to each, "
            "every one with its own spool",
            _INFLUX_COMMANDS, "InfluxDB", bad="http://[::1", default="http://localhost:8086"),
    Setting("INFLUX_API", "--influx-api", one_of("v2", "v1"),
            "v2 for InfluxDB 2.x; v1 for InfluxDB 1.x (e.g. 1.8 on a 32-bit Raspberry Pi), /write with user "
            "and password", _INFLUX_COMMANDS, "InfluxDB", bad="v3", default="v2"),
    Setting("INFLUX_ORG", "--influx-org", text("an organization name", allow_empty=True), "organization (v2)",
            _INFLUX_COMMANDS, "InfluxDB", bad="home\nx", default=""),
    Setting("INFLUX_BUCKET", "--influx-bucket", text("a bucket name"),
            "bucket (v2), or database or database/retention_policy (v1)",
            _INFLUX_COMMANDS, "InfluxDB", bad="p1\r", default="p1"),
    Setting("INFLUX_TOKEN", None, text("a token on one line"),
            "API token with write access (v2); never a flag, so it stays out of ps",
            _INFLUX_COMMANDS, "InfluxDB", bad="tok\nen", secret=True),
    Setting("INFLUX_TOKEN_FILE", "--influx-token-file", text("a file name"),
            "file holding the API token (v2), e.g. a Docker secret", _INFLUX_COMMANDS, "InfluxDB", bad="\n",
            metavar="FILE"),
    Setting("INFLUX_USERNAME", "--influx-username", text("a user name"), "user name (v1; both, or neither)",
            _INFLUX_COMMANDS, "InfluxDB", bad="ad\nmin"),
    Setting("INFLUX_PASSWORD", None, text("a password on one line"), "password (v1)",
            _INFLUX_COMMANDS, "InfluxDB", bad="pass\nword", secret=True),
    Setting("INFLUX_PASSWORD_FILE", None, text("a file name"), "file holding the password (v1)",
            _INFLUX_COMMANDS, "InfluxDB", bad="\n"),
    Setting("INFLUX_TIMEOUT_S", "--influx-timeout-s", seconds(maximum=300.0), "seconds to wait for one write",
            _INFLUX_COMMANDS, "InfluxDB", bad="inf", default="5"),
    # --- batching, spool, health
    Setting("P1_SPOOL_DIR", "--spool-dir", text("a directory"),
            "the health state, the replay progress, and one directory per output with its spool (and InfluxDB's "
            "dead-letter file)",
            ("run", "doctor", "replay", "health"), "batching and spool", bad="\t", default=default_spool_dir,
            default_doc="~/.local/state/p1logger", metavar="DIR"),
    Setting("P1_SPOOL_MAX_BYTES", "--spool-max-bytes", byte_size(allow_zero=False),
            "past this size the oldest spooled data is dropped, with a warning, and counted",
            _RUN, "batching and spool", bad="1 gigabyte", default="1GiB"),
    Setting("P1_BATCH_MAX_POINTS", "--batch-max-points", positive_int("a positive whole number of points"),
            "points per write", ("run", "doctor", "replay"), "batching and spool", bad="1e3", default="5000"),
    Setting("P1_FLUSH_INTERVAL_S", "--flush-interval-s", seconds(maximum=3600.0),
            "longest wait before a write; also the most a kill -9 can lose, during an outage too "
            "(docs/operations.md)",
            _RUN, "batching and spool", bad="abc", default="1"),
    Setting("P1_WATCHDOG_S", "--watchdog-s", seconds(), "reopen the source after this long without a valid "
            "telegram", _RUN, "batching and spool", bad="-5", default="30"),
    Setting("P1_INSTANCE", "--instance", text("a name on one line"),
            "the instance tag of the logger's own health points", _RUN, "batching and spool", bad="a\nb",
            default=_host_name, default_doc="host name"),
    Setting("P1_HEALTH_MAX_AGE_S", "--max-age-s", seconds(), "how old the last telegram may be",
            ("health",), "health", bad="1e12", default="60"),
    Setting("P1_LOG_LEVEL", "--log-level", one_of(*LOG_LEVELS, fold=str.upper), "DEBUG, INFO, WARNING or ERROR",
            ("run", "doctor", "record", "replay"), "logging", bad="LOUD", default="INFO"),
    # --- optional parts of run
    Setting("P1_CAPACITY_PRICE", "--capacity-price", number("a price of at least 0 in EUR per kW per year", 0.0),
            "capacity tariff in EUR per kW per year, VAT included (default: an estimate of the 2025 Fluvius rate: "
            "set your own grid operator's)", ("run", "doctor", "capacity", "replay"),
            "capacity tariff (Belgium)",
            bad="-3", default="53.0", metavar="EUR"),
    Setting("P1_CAPACITY_MARGIN_KW", "--capacity-margin-kw", number("a number of kW"),
            "warn when the running quarter is heading this much above the month's peak; negative warns earlier",
            ("run", "doctor", "capacity", "replay"), "capacity tariff (Belgium)", bad="1kW", default="0.0", metavar="KW"),
    Setting("P1_ARCHIVE_DIR", "--archive", text("a directory"),
            "also keep every telegram as received (rejected ones marked) in daily files in DIR, compressed once "
            "the day is over; replay them with 'p1logger replay'", _RUN, "raw archive", bad="\n", metavar="DIR"),
    Setting("P1_ARCHIVE_KEEP_DAYS", "--archive-keep-days", non_negative_int("a whole number of days, 0 keeps all"),
            "delete archive files of days more than this many days ago; 0 keeps them",
            ("run", "doctor", "record"), "raw archive", bad="-1", default="0"),
    Setting("P1_ARCHIVE_MAX_BYTES", "--archive-max-bytes", byte_size(allow_zero=True),
            "delete the oldest archive files while the archive is larger; 0 for no limit",
            ("run", "doctor", "record"), "raw archive", bad="lots", default="2GiB"),
    Setting("P1_SERVE_RAW", "--serve-raw", listen_address,
            "re-send every valid telegram, byte-exact, to TCP clients (Home Assistant's DSMR integration: "
            "socket://HOST:PORT). 127.0.0.1:2001 serves this machine only, 0.0.0.0:2001 the LAN (there is no "
            "authentication)", _RUN, "sharing the meter", bad=":abc", metavar="HOST:PORT"),
    Setting("P1_SERVE_RAW_MAX_CLIENTS", "--serve-raw-max-clients", positive_int("a positive number of clients"),
            "clients served at once; more are refused", _RUN, "sharing the meter", bad="many", default="16"),
    Setting("P1_OUTPUT", "--output", output,
            "'-' writes line protocol (nanosecond timestamps) to standard output instead of InfluxDB, for "
            "Telegraf's execd input or 'influx write'; the InfluxDB settings are then not needed. 'mqtt' writes "
            "to MQTT only; a list such as 'influx,-' writes to each",
            _RUN, "output", bad="out.lp", metavar="-"),
    Setting("P1_REPLAY_STATE", "--state", text("a file name"),
            "progress file for resuming (default: replay-state.json in the spool directory)",
            ("replay",), "replay", bad="\n", metavar="FILE"),
    # --- encrypted meters (docs/telegram-format.md): no flag default from the environment, so a parsed
    # namespace printed in a bug report never holds a key; config.decryption_keys reads the variables.
    Setting("P1_DECRYPTION_KEY", "--decryption-key", hex_key,
            "encrypted meters (Luxembourg Smarty, Austrian meters on P1, M-Bus or HDLC): the 32-hex-digit key "
            "from the grid operator; the variable is safer than the flag, which other users can see in ps", _KEY_COMMANDS,
            "encrypted meters", bad="not-a-key", secret=True, metavar="HEX"),
    Setting("P1_DECRYPTION_KEY_FILE", "--decryption-key-file", text("a file name"),
            "file holding the decryption key (Docker secrets)", _KEY_COMMANDS, "encrypted meters", bad="\n",
            metavar="FILE"),
    Setting("P1_AUTHENTICATION_KEY", "--authentication-key", hex_key,
            "optional: with it each encrypted frame's GCM tag is checked; without it the telegram's CRC (on "
            "M-Bus and HDLC meters, their frames' checksums) guards the content", _KEY_COMMANDS, "encrypted meters", bad="0x12", secret=True, metavar="HEX"),
    Setting("P1_AUTHENTICATION_KEY_FILE", "--authentication-key-file", text("a file name"),
            "file holding the authentication key", _KEY_COMMANDS, "encrypted meters", bad="\n", metavar="FILE"),
    Setting("P1_SIMULATOR_ENCRYPTION_KEY", "--encryption-key", hex_key,
            "the simulated meter sends every telegram encrypted with this key, as a Luxembourg Smarty does "
            "(also for P1_SOURCE=simulator)", ("simulate",), "simulator", bad="xyz", secret=True, metavar="HEX"),
    Setting("P1_SIMULATOR_AUTHENTICATION_KEY", "--authentication-key", hex_key,
            "the key the simulated frames' GCM tag is made with (default: the Luxembourg specification's "
            "published key)", ("simulate",), "simulator", bad="xyz", secret=True, metavar="HEX"),
    # --- energy cost (docs/cost.md)
    Setting("P1_TARIFF_FILE", "--tariff", text("a file name"),
            "the tariff file (TOML) with your contracts' prices (docs/cost.md); for run, doctor and replay, "
            "without one no cost is computed", ("run", "doctor", "replay", "cost"), "energy cost", bad="\n",
            metavar="FILE"),
    Setting("P1_PRICES_ZONE", "--zone", prices_zone, "the bidding zone of 'prices fetch'", ("prices",),
            "day-ahead prices", bad="XX", default="BE"),
    Setting("P1_PRICES_FILE", "--output", text("a file name"), "the price CSV that 'prices fetch' creates or "
            "updates", ("prices",), "day-ahead prices", bad="\n", metavar="FILE", aliases=("-o",)),
    Setting("ENTSOE_TOKEN", None, text("a token on one line"), "ENTSO-E's security token for 'prices fetch'",
            ("prices",), "day-ahead prices", bad="tok\nen", secret=True),
    Setting("ENTSOE_TOKEN_FILE", "--token-file", text("a file name"), "a file holding ENTSO-E's security token",
            ("prices",), "day-ahead prices", bad="\n", metavar="FILE"),
    Setting("P1_ENTSOE_URL", "--url", web_url, "the Transparency Platform's API", ("prices",), "day-ahead prices",
            bad="ftp://x", default="https://web-api.tp.entsoe.eu/api"),
    # --- MQTT and Home Assistant (docs/mqtt.md)
    Setting("P1_MQTT_URL", "--mqtt-url", mqtt_url,
            "publish every reading to this MQTT broker: mqtt://[user@]host[:port], or mqtts:// for TLS; the "
            "password is best kept in P1_MQTT_PASSWORD_FILE", _RUN, "MQTT and Home Assistant", bad="http://broker",
            secret=True, metavar="URL"),
    Setting("P1_MQTT_PASSWORD", None, text("a password on one line"), "the broker password", _RUN,
            "MQTT and Home Assistant", bad="pass\nword", secret=True),
    Setting("P1_MQTT_PASSWORD_FILE", "--mqtt-password-file", text("a file name"), "file holding the broker "
            "password (or the password itself in P1_MQTT_PASSWORD)", _RUN, "MQTT and Home Assistant", bad="\n",
            metavar="FILE"),
    Setting("P1_MQTT_CA_FILE", "--mqtt-ca-file", text("a file name"), "CA certificate(s) to check an mqtts:// "
            "broker with (default: the system's)", _RUN, "MQTT and Home Assistant", bad="\n", metavar="FILE"),
    Setting("P1_MQTT_CLIENT_ID", "--mqtt-client-id", text("a client id on one line"),
            "MQTT client id; it names the broker's persistent session, so keep it fixed", _RUN,
            "MQTT and Home Assistant", bad="a\nb", default_doc="p1logger-<host name>"),
    Setting("P1_MQTT_PREFIX", "--mqtt-prefix", topic_prefix, "topic prefix: state on <prefix>/<meter>/state",
            _RUN, "MQTT and Home Assistant", bad="p1/#", default="p1logger"),
    Setting("P1_MQTT_DISCOVERY_PREFIX", "--mqtt-discovery-prefix", topic_prefix,
            "Home Assistant's discovery prefix; 'none' turns discovery off", _RUN, "MQTT and Home Assistant",
            bad="home+assistant", default="homeassistant"),
    Setting("P1_MQTT_INTERVAL_S", "--mqtt-interval-s", seconds(allow_zero=True),
            "publish at most every N seconds, power averaged over them; 0 publishes every telegram", _RUN,
            "MQTT and Home Assistant", bad="often", default="0"),
    Setting("P1_MQTT_PER_FIELD_TOPICS", "--mqtt-per-field-topics", boolean,
            "also publish each value on its own topic, <prefix>/<meter>/<key>", _RUN, "MQTT and Home Assistant",
            bad="maybe", default="0", kind="switch"),
    Setting("P1_MQTT_BACKLOG", "--mqtt-backlog", positive_int("a positive whole number of messages"),
            "messages kept while the broker is away; past it new ones are dropped and counted", _RUN,
            "MQTT and Home Assistant", bad="1e4", default="10000"),
    # --- the simulator (simulate, and P1_SOURCE=simulator)
    Setting("P1_SIMULATOR_PROFILE", "--profile", simulator_profile,
            "the simulated meter (the variables P1_SIMULATOR_* also tune P1_SOURCE=simulator)",
            ("simulate",), "simulator", bad="fr", default="be3"),
    Setting("P1_SIMULATOR_SPEED", "--speed", number("a speed factor above 0", 1e-9),
            "telegrams per second of wall time; the meter clock still advances 1 s per telegram", ("simulate",), "simulator",
            bad="fast", default="1"),
    Setting("P1_SIMULATOR_COUNT", "--count", non_negative_int("a whole number of telegrams, 0 for no end"),
            "stop after this many telegrams; 0 never stops", ("simulate",), "simulator",
            bad="ten", default="0"),
    Setting("P1_SIMULATOR_START", "--start", iso_time, "the meter clock's start, ISO 8601 (default: now)",
            ("simulate",), "simulator", bad="yesterday"),
)

BY_ENV: dict[str, Setting] = {setting.env: setting for setting in SETTINGS}


# ------------------------------------------------------------------ argparse


class _Convert:
    """argparse ``type``: parses a flag's text, or the environment text given as the default."""

    def __init__(self, setting: Setting) -> None:
        self.setting = setting
        self.__name__ = setting.env  # argparse names the type in some messages

    def __call__(self, value: str) -> Any:
        return self.setting.convert(value, from_flag=not isinstance(value, EnvValue))


class _Switch(argparse.Action):
    """A flag without an argument whose default comes from a boolean variable."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        setattr(namespace, self.dest, True)


def raw(name: str) -> str | None:
    """A variable as written; empty counts as unset."""
    value = os.environ.get(name)
    return value if value not in (None, "") else None


def add(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *names: str,
        positional: str | None = None, help_suffix: str = "", env_default: bool = True) -> None:
    """Declare the flags of the named settings; ``positional`` makes the (one) setting a positional argument.

    ``env_default=False``: the flag's default is not taken from the environment (keys: the caller reads the
    variable with ``value`` when it needs it, so the parsed namespace never holds it)."""
    for name in names:
        setting = BY_ENV[name]
        found = raw(setting.env) if env_default else None
        default: Any
        if found is not None:
            default = EnvValue(found)
        else:
            text_default = setting.default_text()
            default = None if text_default is None else text_default
        shown = setting.shown_default()
        help_text = setting.help + help_suffix
        if shown and setting.kind != "switch":
            help_text += f" (default {shown})"
        help_text += f" [env {setting.env}{'=1' if setting.kind == 'switch' else ''}]"
        help_text = help_text.replace("%", "%%")
        if positional is not None:
            parser.add_argument(positional, nargs="?", default=default, type=_Convert(setting), help=help_text,
                                metavar=setting.metavar or positional.upper())
        elif setting.kind == "switch":
            assert setting.flag is not None
            parser.add_argument(setting.flag, dest=setting.dest, action=_Switch, default=default,
                                type=_Convert(setting), help=help_text)
        else:
            assert setting.flag is not None
            parser.add_argument(setting.flag, *setting.aliases, dest=setting.dest, default=default,
                                type=_Convert(setting), help=help_text, metavar=setting.metavar)


def value(name: str) -> Any:
    """A setting that has no flag (a secret), from the environment, parsed; None when unset."""
    setting = BY_ENV[name]
    found = raw(name)
    if found is None:
        text_default = setting.default_text()
        return None if text_default is None else setting.convert(text_default, from_flag=False)
    return setting.convert(found, from_flag=False)


# ------------------------------------------------------------------ documentation


def markdown_table(settings: Iterable[Setting] = SETTINGS) -> str:
    lines = ["| variable | flag | default | commands | meaning |", "|---|---|---|---|---|"]
    for setting in settings:
        flag = f"`{setting.flag}`" if setting.flag else ""
        shown = setting.shown_default()
        default = f"`{shown}`" if shown else ""
        meaning = setting.help.replace("|", "\\|")
        lines.append(f"| `{setting.env}` | {flag} | {default} | {', '.join(setting.commands)} | {meaning} |")
    return "\n".join(lines) + "\n"


README_BEGIN = "<!-- settings table: generated by python -m p1logger.settings README.md -->\n"
README_END = "<!-- end of settings table -->\n"


def replace_readme_table(readme: str) -> str:
    from p1logger.docblock import replace_block  # only the doc generator needs it: health imports this module

    return replace_block(readme, README_BEGIN, README_END, markdown_table())


def _main(argv: list[str]) -> int:
    from p1logger.docblock import rewrite_files

    return rewrite_files(argv, README_BEGIN, README_END, markdown_table())


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))


