"""The MQTT output's settings: every flag and environment variable it adds, in this one place.

``P1_MQTT_URL`` is ``mqtt://[user[:password]@]host[:port]`` or ``mqtts://`` for
TLS. The password is better kept out of the URL, in ``P1_MQTT_PASSWORD_FILE``
(Docker secrets) or ``P1_MQTT_PASSWORD``; it never appears in a log, an error
or ``repr``.
"""

from __future__ import annotations

import argparse
import math
import socket
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from p1logger import config
from p1logger import settings as settings_table
from p1logger.errors import ConfigError

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
URL_VARIABLE = "P1_MQTT_URL"
PASSWORD_VARIABLE = "P1_MQTT_PASSWORD"
PASSWORD_FILE_VARIABLE = "P1_MQTT_PASSWORD_FILE"


@dataclass(frozen=True)
class MqttSettings:
    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: Path | None = None
    client_id: str = "p1logger"
    prefix: str = "p1logger"
    discovery_prefix: str | None = "homeassistant"  # None: no Home Assistant discovery
    interval_s: float = 0.0
    per_field_topics: bool = False
    backlog_max_messages: int = 10000
    keepalive_s: int = 60
    connect_timeout_s: float = 10.0
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0
    # A sensor or meter not seen in this many telegrams after a start has its old config removed.
    cleanup_after_telegrams: int = 30

    def describe(self) -> str:
        """The broker as a person reads it, without the password."""
        scheme = "mqtts" if self.tls else "mqtt"
        user = f"{self.username}@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}"

    def __repr__(self) -> str:
        return f"MqttSettings({self.describe()}, prefix={self.prefix!r}, discovery={self.discovery_prefix!r})"


def parse_url(url: str) -> tuple[str, int, bool, str | None, str | None]:
    """(host, port, tls, user, password) from ``mqtt[s]://[user[:password]@]host[:port]``."""
    parts = urllib.parse.urlsplit(url.strip())
    scheme = parts.scheme.lower()
    # The error never repeats the URL: it may hold a password.
    if scheme not in DEFAULT_PORTS:
        raise ConfigError(f"the MQTT URL must start with mqtt:// or mqtts://, not {scheme or 'nothing'!r}: "
                          f"fix {URL_VARIABLE}")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"the MQTT URL has a port that is not a number from 1 to 65535: fix {URL_VARIABLE}") from None
    if not parts.hostname:
        raise ConfigError(f"the MQTT URL has no host (mqtt://host:1883): fix {URL_VARIABLE}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(f"the MQTT URL takes no path or query; set the topic prefix with --mqtt-prefix: "
                          f"fix {URL_VARIABLE}")
    user = urllib.parse.unquote(parts.username) if parts.username else None
    password = urllib.parse.unquote(parts.password) if parts.password is not None else None
    return parts.hostname, port or DEFAULT_PORTS[scheme], scheme == "mqtts", user, password


def _check_topic_prefix(value: str, what: str, variable: str) -> str:
    text = value.strip().strip("/")
    if not text or any(c in text for c in "+#\0"):
        raise ConfigError(f"the {what} {value!r} must be a topic without + or # (e.g. p1logger): fix {variable}")
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    settings_table.add(parser.add_argument_group("MQTT and Home Assistant"), URL_VARIABLE, PASSWORD_FILE_VARIABLE,
                       "P1_MQTT_CA_FILE", "P1_MQTT_CLIENT_ID", "P1_MQTT_PREFIX", "P1_MQTT_DISCOVERY_PREFIX",
                       "P1_MQTT_INTERVAL_S", "P1_MQTT_PER_FIELD_TOPICS", "P1_MQTT_BACKLOG")


def _number(text: str, name: str, variable: str, *, minimum: float, integer: bool = False) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or value < minimum or (integer and value != int(value)):
        kind = "a whole number" if integer else "a number"
        raise ConfigError(f"{name} {text!r} is not {kind} of at least {minimum:g}: fix {variable}")
    return value


def from_args(args: argparse.Namespace) -> MqttSettings | None:
    """The MQTT settings, or None when no broker is configured."""
    url = getattr(args, "mqtt_url", None)
    if not url:
        return None
    host, port, tls, user, password = parse_url(url)
    secret = config.read_secret(settings_table.value(PASSWORD_VARIABLE), args.mqtt_password_file, "MQTT password",
                                PASSWORD_FILE_VARIABLE)
    if secret is not None:
        password = secret
    if password is not None and not user:
        raise ConfigError(f"an MQTT password is set but no user: put it in the URL, mqtt://user@host: "
                          f"fix {URL_VARIABLE}")
    ca_file = Path(args.mqtt_ca_file) if args.mqtt_ca_file else None
    if ca_file is not None:
        if not tls:
            raise ConfigError("an MQTT CA file is set but the URL is mqtt://: use mqtts:// for TLS, or unset "
                              "P1_MQTT_CA_FILE")
        if not ca_file.is_file():
            raise ConfigError(f"the MQTT CA file {ca_file} does not exist: fix P1_MQTT_CA_FILE")
    discovery = args.mqtt_discovery_prefix
    discovery_prefix = None if str(discovery).strip().lower() in ("", "none", "off") else _check_topic_prefix(
        discovery, "discovery prefix", "P1_MQTT_DISCOVERY_PREFIX")
    client_id = args.mqtt_client_id or f"p1logger-{socket.gethostname()}"
    return MqttSettings(
        host=host,
        port=port,
        tls=tls,
        username=user,
        password=password,
        ca_file=ca_file,
        client_id=client_id,
        prefix=_check_topic_prefix(args.mqtt_prefix, "topic prefix", "P1_MQTT_PREFIX"),
        discovery_prefix=discovery_prefix,
        interval_s=_number(args.mqtt_interval_s, "the MQTT interval", "P1_MQTT_INTERVAL_S", minimum=0),
        per_field_topics=bool(args.mqtt_per_field_topics),
        backlog_max_messages=int(_number(args.mqtt_backlog, "the MQTT backlog", "P1_MQTT_BACKLOG", minimum=1,
                                         integer=True)),
    )
