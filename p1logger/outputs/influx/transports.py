"""HTTP to InfluxDB: one transport class per API version, behind one interface.

Everything that differs between InfluxDB 1.x and 2.x lives here: the write
path and its query, how credentials are sent, what the destination is called
in messages, what fixes a 401 or a 404, and how ``doctor`` checks it. The rest
of the output never looks at the API name.

Both speak plain ``http.client`` over one persistent connection, reopened
after any error; bodies of 16 KiB and more are gzipped (a backfill's or a
spool drain's batches).  A live second's write, 1 to 2 KiB, is sent as it is:
on a LAN its few hundred bytes saved cost more CPU on a Raspberry Pi than they
save anywhere. influxdb-client is used only by ``doctor``'s
v2 checks, imported there.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import socket
import struct
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from p1logger.errors import ConfigError, SinkError

if TYPE_CHECKING:
    from p1logger.contracts import Check
    from p1logger.outputs.influx.target import InfluxTarget

_REASON_MAX_CHARS = 300
GZIP_MIN_BYTES = 16384
# Level 1: a backfill sends megabytes a second, and level 6 costs 2.4 times the CPU for a body 1.4 times smaller.
GZIP_LEVEL = 1
# struct tcp_info (linux/tcp.h): eight one-byte fields, then 32-bit ones; tcpi_last_data_recv (ms) is the twelfth.
_TCP_INFO_LAST_DATA_RECV_OFFSET = 8 + 11 * 4
_TCP_INFO_BYTES = 104


class TransientError(SinkError):
    """A failure worth retrying: no answer, a timeout, 429 or 5xx."""

    def __init__(self, message: str, retry_after_s: float | None = None, detail: str = "") -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.detail = detail or message
        self.attempts = 1


@dataclass(frozen=True)
class Reply:
    status: int
    reason: str
    retry_after_s: float | None = None


def one_line(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _REASON_MAX_CHARS else flat[: _REASON_MAX_CHARS - 3] + "..."


def reason_from_body(body: bytes | str | None) -> str:
    """InfluxDB's own error text: 1.x sends {"error": ..}, 2.x {"code": .., "message": ..}."""
    if not body:
        return ""
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    try:
        data = json.loads(text)
    except ValueError:
        return one_line(text)
    if isinstance(data, dict):
        for key in ("message", "error"):
            if isinstance(data.get(key), str):
                return one_line(data[key])
    return one_line(text)


def retry_after_s(value: str | None) -> float | None:
    # Only the delta-seconds form: InfluxDB never sends an HTTP date here.
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def describe_io_error(exc: BaseException) -> str:
    """Why a connection failed, in words, without URLs or headers (they may hold secrets)."""
    chain: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and cause not in chain and len(chain) < 8:
        chain.append(cause)
        reason = getattr(cause, "reason", None)
        cause = reason if isinstance(reason, BaseException) else (cause.__cause__ or cause.__context__)
    if any(isinstance(c, ConnectionRefusedError) for c in chain):
        return "connection refused"
    if any(isinstance(c, TimeoutError) or type(c).__name__.endswith("TimeoutError") for c in chain):
        return "no answer within the timeout"
    for c in reversed(chain):
        if isinstance(c, OSError) and c.strerror:
            return c.strerror.lower()
    return type(chain[-1]).__name__


def reply_age_s(sock: socket.socket | None) -> float:
    """How long ago a connection's socket last received data (Linux's TCP_INFO), 0 where that cannot be told.

    A write whose answer is read a second after it came took the answer's time, not the second.
    """
    if sock is None or not hasattr(socket, "TCP_INFO"):
        return 0.0
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_BYTES)
        return float(struct.unpack_from("I", info, _TCP_INFO_LAST_DATA_RECV_OFFSET)[0]) / 1000.0
    except (OSError, struct.error):
        return 0.0


def _reply(status: int, data: bytes, headers: http.client.HTTPMessage) -> Reply:
    return Reply(status, reason_from_body(data), retry_after_s(headers.get("Retry-After")))


def _stale(exc: BaseException) -> bool:
    """A kept-alive connection the server closed while it was idle: not an outage."""
    return isinstance(exc, (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError))


def http_text(status: int, reason: str) -> str:
    return f"HTTP {status}" + (f": {reason}" if reason else "")


def _basic_auth(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


class HttpTransport:
    """One persistent HTTP connection to InfluxDB; the API versions differ only in their class attributes."""

    api: ClassVar[str]
    write_path: ClassVar[str]

    def __init__(self, target: InfluxTarget) -> None:
        parts = urllib.parse.urlsplit(target.url)
        self.target = target
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self._headers = self.auth_headers(target)
        self._conn: http.client.HTTPConnection | None = None
        self._begun: tuple[bytes, dict[str, str]] = (b"", {})
        self._begin_failure: TransientError | None = None
        self.last_reply_age_s = 0.0  # how long the answer finish_post read had waited for it
        self.connections_opened = 0
        self._write_url = self._url(self.write_path, self.write_params(target))

    # -- what each API version fills in

    @staticmethod
    def auth_headers(target: InfluxTarget) -> dict[str, str]:
        raise NotImplementedError

    @staticmethod
    def write_params(target: InfluxTarget) -> dict[str, str]:
        raise NotImplementedError

    @staticmethod
    def validate(target: InfluxTarget) -> str | None:
        """What is wrong with this target for this API, or None."""
        raise NotImplementedError

    @staticmethod
    def credentials(*, token: str | None, org: str, username: str | None,
                    password: str | None) -> tuple[str | None, str | None, str | None]:
        """(token, username, password) this API uses, from the settings; ConfigError naming the setting to fix."""
        raise NotImplementedError

    @staticmethod
    def describe_destination(target: InfluxTarget) -> str:
        raise NotImplementedError

    @staticmethod
    def auth_fix(target: InfluxTarget) -> str:
        raise NotImplementedError

    @staticmethod
    def not_found_fix(target: InfluxTarget) -> str:
        raise NotImplementedError

    def check(self) -> list[Check]:
        """``doctor``'s checks: reachable, credentials accepted, destination exists."""
        raise NotImplementedError

    # -- HTTP

    def _url(self, path: str, params: dict[str, str]) -> str:
        return f"{self._prefix}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            conn_cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._conn = conn_cls(self._host, self._port, timeout=self.target.timeout_s)
            self.connections_opened += 1
        return self._conn

    def request(
        self,
        method: str,
        path: str,
        params: dict[str, str],
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        *,
        url: str | None = None,
    ) -> tuple[int, bytes, http.client.HTTPMessage]:
        """One HTTP exchange on the kept-alive connection; OSError and HTTPException become TransientError."""
        all_headers = {**self._headers, **(headers or {})}
        target_url = url if url is not None else self._url(path, params)
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.request(method, target_url, body=body, headers=all_headers)
                return self._answer(conn)
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                # A kept-alive connection the server closed while idle fails at once on reuse:
                # that is not an outage, so it gets one fresh connection (never after a timeout).
                if attempt == 1 and _stale(exc):
                    continue
                raise self._no_answer(exc) from None
        raise AssertionError("unreachable")

    def _answer(self, conn: http.client.HTTPConnection, *, timed: bool = False
                ) -> tuple[int, bytes, http.client.HTTPMessage]:
        """The answer to what was sent on ``conn``; ``timed``: also how long it waited (``last_reply_age_s``)."""
        # Kept: a server that closes after answering makes getresponse() drop the connection's socket,
        # whose TCP_INFO tells when the answer came (the response still holds it open).
        sock = conn.sock
        resp = conn.getresponse()
        if timed:
            self.last_reply_age_s = reply_age_s(sock)
        data = resp.read()
        if resp.will_close:
            self.close()
        return resp.status, data, resp.headers

    def _no_answer(self, exc: BaseException) -> TransientError:
        why = describe_io_error(exc)
        return TransientError(f"no answer from {self.target.url}: {why}", detail=why)

    def _write_body(self, lines: Sequence[str]) -> tuple[bytes, dict[str, str]]:
        body = "\n".join(lines).encode("utf-8")
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if self.target.gzip and len(body) >= GZIP_MIN_BYTES:
            body = gzip.compress(body, compresslevel=GZIP_LEVEL)
            headers["Content-Encoding"] = "gzip"
        return body, headers

    def post(self, lines: Sequence[str]) -> Reply:
        return self._post_body(*self._write_body(lines))

    def _post_body(self, body: bytes, headers: dict[str, str]) -> Reply:
        return _reply(*self.request("POST", self.write_path, {}, body, headers, url=self._write_url))

    def begin_post(self, lines: Sequence[str]) -> None:
        """Send a write without waiting for the answer, which ``finish_post`` reads.

        A live second's write is answered in milliseconds; reading that answer only at the next flush,
        when it has long arrived, saves the output thread a wake-up a second (docs/performance.md).
        """
        body, headers = self._write_body(lines)
        self._begun = (body, headers)
        self._begin_failure = None
        conn = self._connection()
        try:
            conn.request("POST", self._write_url, body=body, headers={**self._headers, **headers})
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            if not _stale(exc):
                # Reported by finish_post as it is: sending again would wait out a timeout twice.
                self._begin_failure = self._no_answer(exc)
            # A kept-alive connection the server had closed: finish_post sends again on a fresh one.

    def finish_post(self) -> Reply:
        """The answer to the write ``begin_post`` sent (sent again at once if the kept-alive connection had gone)."""
        if self._begin_failure is not None:
            failure, self._begin_failure = self._begin_failure, None
            raise failure
        conn = self._conn
        if conn is not None:
            try:
                return _reply(*self._answer(conn, timed=True))
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if not _stale(exc):
                    raise self._no_answer(exc) from None
        self.last_reply_age_s = 0.0
        return self._post_body(*self._begun)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class V1Transport(HttpTransport):
    """InfluxDB 1.x: POST /write?db=&rp=&precision=s; basic auth (or a token, for 1.8+)."""

    api = "v1"
    write_path = "/write"

    @staticmethod
    def auth_headers(target: InfluxTarget) -> dict[str, str]:
        if target.username is not None and target.password is not None:
            # A header, not u=/p= query parameters, so the password is never part of a URL.
            return {"Authorization": _basic_auth(target.username, target.password)}
        if target.token:
            return {"Authorization": f"Token {target.token}"}
        return {}

    @staticmethod
    def write_params(target: InfluxTarget) -> dict[str, str]:
        params = {"db": target.database, "precision": "s"}
        if target.retention_policy:
            params["rp"] = target.retention_policy
        return params

    @staticmethod
    def validate(target: InfluxTarget) -> str | None:
        if not target.bucket or target.bucket.startswith("/") or target.bucket.endswith("/"):
            return f"InfluxDB database (or database/retention_policy) name {target.bucket!r} is empty or malformed"
        return None

    @staticmethod
    def credentials(*, token: str | None, org: str, username: str | None,
                    password: str | None) -> tuple[str | None, str | None, str | None]:
        if password and not username:
            raise ConfigError("INFLUX_PASSWORD is set but INFLUX_USERNAME is not: set both, or neither")
        if username and not password:
            raise ConfigError("INFLUX_USERNAME is set but no password: set INFLUX_PASSWORD or INFLUX_PASSWORD_FILE")
        return None, username, password

    @staticmethod
    def describe_destination(target: InfluxTarget) -> str:
        rp = target.retention_policy
        return f"database '{target.database}'" + (f" (retention policy '{rp}')" if rp else "")

    @staticmethod
    def auth_fix(target: InfluxTarget) -> str:
        return ("the InfluxDB username/password (or token) is wrong or the user may not write to "
                f"{V1Transport.describe_destination(target)}; fix the credentials or GRANT WRITE")

    @staticmethod
    def not_found_fix(target: InfluxTarget) -> str:
        return f'create it (CREATE DATABASE "{target.database}") or fix the name'

    def check(self) -> list[Check]:
        from p1logger.outputs.influx.checks import check_v1

        return check_v1(self.target, self)


class V2Transport(HttpTransport):
    """InfluxDB 2.x: POST /api/v2/write?org=&bucket=&precision=s with ``Authorization: Token``."""

    api = "v2"
    write_path = "/api/v2/write"

    @staticmethod
    def auth_headers(target: InfluxTarget) -> dict[str, str]:
        return {"Authorization": f"Token {target.token}"}

    @staticmethod
    def write_params(target: InfluxTarget) -> dict[str, str]:
        return {"org": target.org, "bucket": target.bucket, "precision": "s"}

    @staticmethod
    def validate(target: InfluxTarget) -> str | None:
        if not target.bucket or target.bucket.startswith("/") or target.bucket.endswith("/"):
            return f"InfluxDB bucket name {target.bucket!r} is empty or malformed"
        if not target.org:
            return "InfluxDB 2 needs an organization name"
        if not target.token:
            return "InfluxDB 2 needs an API token with write permission on the bucket"
        return None

    @staticmethod
    def credentials(*, token: str | None, org: str, username: str | None,
                    password: str | None) -> tuple[str | None, str | None, str | None]:
        if not token:
            raise ConfigError("no InfluxDB token: set INFLUX_TOKEN or INFLUX_TOKEN_FILE (or INFLUX_API=v1 for "
                              "InfluxDB 1.x)")
        if not org:
            raise ConfigError("no InfluxDB organization: set INFLUX_ORG")
        return token, None, None

    @staticmethod
    def describe_destination(target: InfluxTarget) -> str:
        return f"bucket '{target.bucket}' in organization '{target.org}'"

    @staticmethod
    def auth_fix(target: InfluxTarget) -> str:
        return (f"the API token is wrong or lacks write permission on {V2Transport.describe_destination(target)}; "
                "create a token with write access to that bucket and configure it")

    @staticmethod
    def not_found_fix(target: InfluxTarget) -> str:
        return "create it in InfluxDB or fix the bucket/org names"

    def check(self) -> list[Check]:
        from p1logger.outputs.influx.checks import check_v2

        return check_v2(self.target)


TRANSPORTS: dict[str, type[HttpTransport]] = {cls.api: cls for cls in (V1Transport, V2Transport)}
