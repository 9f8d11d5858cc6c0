"""A real MQTT broker for the tests: Debian's mosquitto with a private config on 127.0.0.1.

`MosquittoServer` writes its own config, password file (mosquitto_passwd),
ACL and, when asked, a TLS listener whose CA and server certificate are made
here with `cryptography`. Anonymous access is off. The broker keeps its
persistence file in its directory, so stop() and start() mid-test is a broker
restart that keeps sessions and queued QoS 1 messages, like a real one.

`Subscriber` is a paho client that records every message it receives, for
asserting exact payloads.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import pwd
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers.processes import log_tail, start_server, stop_process

MOSQUITTO_ENV = "P1_MOSQUITTO"

# Users of the test broker: (name, password).
LOGGER_USER = ("p1logger", "logger-pw-for-tests")
HA_USER = ("homeassistant", "ha-pw-for-tests")
# May read everything but publish nowhere: the refused-publish case.
READONLY_USER = ("reader", "reader-pw-for-tests")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def find_mosquitto() -> tuple[str | None, str]:
    """Paths of mosquitto and mosquitto_passwd as 'broker|passwd', or None with the reason."""
    binary = os.environ.get(MOSQUITTO_ENV) or shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not os.access(binary, os.X_OK):
        return None, f"mosquitto not found (apt-get install mosquitto, or set {MOSQUITTO_ENV})"
    passwd = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    if not os.access(passwd, os.X_OK):
        return None, "mosquitto_passwd not found (apt-get install mosquitto)"
    return binary, passwd


class BrokerError(RuntimeError):
    """The broker did not start."""


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    other_ca_cert: Path  # a CA that did not sign the server: the TLS failure case


def make_tls_files(directory: Path) -> TlsFiles:
    """A CA, a server certificate for 127.0.0.1/localhost signed by it, and an unrelated CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def ca(common: str) -> tuple[Any, Any]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(common))
            .issuer_name(name(common))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return key, cert

    ca_key, ca_cert = ca("p1logger test CA")
    _, other_cert = ca("some other CA")
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    files = TlsFiles(directory / "ca.crt", directory / "server.crt", directory / "server.key", directory / "other-ca.crt")
    files.ca_cert.write_bytes(ca_cert.public_bytes(pem))
    files.other_ca_cert.write_bytes(other_cert.public_bytes(pem))
    files.server_cert.write_bytes(server_cert.public_bytes(pem))
    files.server_key.write_bytes(
        server_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    files.server_key.chmod(0o600)
    return files


class MosquittoServer:
    """One mosquitto with a plain and (optionally) a TLS listener, password auth and an ACL."""

    def __init__(self, binary: str, passwd: str, root: Path, *, tls: bool = False, ready_timeout_s: float = 15.0):
        self.binary = binary
        self.passwd = passwd
        self.root = root
        self.ready_timeout_s = ready_timeout_s
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.tls_port = free_port() if tls else None
        self.tls = make_tls_files(root) if tls else None
        self.config_path = root / "mosquitto.conf"
        self.log_path = root / "mosquitto.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._write_files()

    def url(self, user: tuple[str, str] | None = LOGGER_USER, *, tls: bool = False) -> str:
        port = self.tls_port if tls else self.port
        scheme = "mqtts" if tls else "mqtt"
        auth = f"{user[0]}:{user[1]}@" if user else ""
        host = "localhost" if tls else "127.0.0.1"
        return f"{scheme}://{auth}{host}:{port}"

    def _write_files(self) -> None:
        password_file = self.root / "passwords"
        password_file.write_text("", encoding="utf-8")
        for user, password in (LOGGER_USER, HA_USER, READONLY_USER):
            subprocess.run([self.passwd, "-b", str(password_file), user, password], check=True,
                           capture_output=True, timeout=30)
        password_file.chmod(0o600)
        acl = self.root / "acl"
        acl.write_text(
            f"user {LOGGER_USER[0]}\ntopic readwrite #\n\n"
            f"user {HA_USER[0]}\ntopic readwrite #\n\n"
            f"user {READONLY_USER[0]}\ntopic read #\n",
            encoding="utf-8",
        )
        acl.chmod(0o600)
        (self.root / "data").mkdir(exist_ok=True)
        lines = [
            # Run as root (CI), mosquitto would switch to its own user, who cannot read these files.
            f"user {pwd.getpwuid(os.getuid()).pw_name}",
            "per_listener_settings false",
            "allow_anonymous false",
            f"password_file {password_file}",
            f"acl_file {acl}",
            "persistence true",
            f"persistence_location {self.root / 'data'}/",
            "autosave_interval 1",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "max_queued_messages 100000",
            "",
            f"listener {self.port} 127.0.0.1",
        ]
        if self.tls is not None:
            lines += [
                f"listener {self.tls_port} 127.0.0.1",
                f"cafile {self.tls.ca_cert}",
                f"certfile {self.tls.server_cert}",
                f"keyfile {self.tls.server_key}",
            ]
        self.config_path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        if self.running:
            return
        self._proc = start_server([self.binary, "-c", str(self.config_path)], self.log_path)
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        ports = [self.port] + ([self.tls_port] if self.tls_port else [])
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise BrokerError(f"mosquitto exited with {self._proc.returncode}: {self.log_tail()}")
            if all(_accepts(port) for port in ports):
                return
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"mosquitto did not listen within {self.ready_timeout_s} s: {self.log_tail()}")

    def log_tail(self) -> str:
        return log_tail(self.log_path)

    def stop(self) -> None:
        """SIGTERM: mosquitto saves its persistence file (sessions, queued and retained messages) and exits."""
        proc, self._proc = self._proc, None
        stop_process(proc)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    qos: int

    def json(self) -> Any:
        return json.loads(self.payload)


class Subscriber:
    """A paho client (MQTT 5, persistent session) that keeps every message it receives."""

    def __init__(
        self,
        broker: MosquittoServer,
        topics: list[str],
        *,
        user: tuple[str, str] = HA_USER,
        client_id: str = "test-subscriber",
        persistent: bool = False,
    ) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        self.broker = broker
        self.topics = topics
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self._client.username_pw_set(*user)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.on_subscribe = lambda *args: self._subscribed.set()
        self._client.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]
        self._properties = Properties(PacketTypes.CONNECT)
        if persistent:
            self._properties.SessionExpiryInterval = 3600
        self._clean_start = not persistent

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if not reason_code.is_failure:
            client.subscribe([(topic, 1) for topic in self.topics])

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        with self._lock:
            self.messages.append(Received(message.topic, bytes(message.payload), bool(message.retain), message.qos))

    def start(self, timeout_s: float = 10.0) -> "Subscriber":
        self._client.connect("127.0.0.1", self.broker.port, clean_start=self._clean_start,
                             properties=self._properties)
        self._client.loop_start()
        if not self._subscribed.wait(timeout_s):
            raise BrokerError("the test subscriber did not get its SUBACK")
        return self

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def publish(self, topic: str, payload: str | bytes, *, retain: bool = False) -> None:
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(10)

    def received(self, topic_prefix: str = "") -> list[Received]:
        with self._lock:
            return [m for m in self.messages if m.topic.startswith(topic_prefix)]

    def clear(self) -> None:
        with self._lock:
            self.messages.clear()

    def wait_for(self, predicate: Any, timeout_s: float = 15.0) -> list[Received]:
        """Wait until predicate(messages) is true; return the messages (raise on timeout)."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                snapshot = list(self.messages)
            if predicate(snapshot):
                return snapshot
            if time.monotonic() > deadline:
                topics = sorted({m.topic for m in snapshot})
                raise AssertionError(f"timed out after {timeout_s} s with {len(snapshot)} messages on {topics[:20]}")
            time.sleep(0.02)

