"""The only module that talks HTTP to InfluxDB.

`InfluxSink.write` takes line protocol (second precision) and says what became
of every line: stored, rejected for good (saved to a dead-letter file), or kept
for the caller to spool and send again. What each HTTP status means follows
Telegraf's InfluxDB outputs:

- 2xx: stored.
- 400/422: the server refused some lines. They are isolated by bisecting the
  batch; rewriting the good lines is harmless because a point with the same
  series and timestamp overwrites itself, so nothing is duplicated.
- 413: the batch is too big; it is split in halves until it fits.
- 401/403/404: a configuration problem. Retrying cannot help, but the data is
  fine, so it is kept.
- 429, 5xx, refused connections and timeouts: retried with backoff; when the
  attempts run out the data is kept.

InfluxDB 2 is written through influxdb-client in synchronous mode; 1.x through
a plain HTTP POST to /write. Secrets never reach a log line or a message.
"""

from __future__ import annotations

import base64
import enum
import gzip
import http.client
import json
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import tenacity
import urllib3

if TYPE_CHECKING:
    from influxdb_client.client.influxdb_client import InfluxDBClient
    from influxdb_client.rest import ApiException


def _api_exception() -> type[ApiException]:
    # influxdb-client is imported only for the v2 API: it costs about 38 MB of
    # memory, too much for a Raspberry Pi that writes to InfluxDB 1.x.
    from influxdb_client.rest import ApiException

    return ApiException

from p1logger.errors import ConfigError, SinkError

logger = logging.getLogger(__name__)

_REASON_MAX_CHARS = 300


# ------------------------------------------------------------------ config


@dataclass(frozen=True, repr=False)
class InfluxTarget:
    """Where to write. For v1, `bucket` is the database, or `database/retention_policy`."""

    url: str
    api: Literal["v1", "v2"]
    org: str
    bucket: str
    token: str | None = None
    username: str | None = None
    password: str | None = None
    timeout_s: float = 10.0
    gzip: bool = True

    def __post_init__(self) -> None:
        if self.api not in ("v1", "v2"):
            raise ConfigError(f"InfluxDB API must be 'v1' or 'v2', not {self.api!r}")
        parts = urllib.parse.urlsplit(self.url)
        if parts.username is not None or parts.password is not None:
            # The URL is echoed in messages, so it must not carry credentials.
            raise ConfigError("the InfluxDB URL must not contain a user or password; set them separately")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"InfluxDB URL {self.url!r} must look like http://host:8086")
        if not self.bucket or self.bucket.startswith("/") or self.bucket.endswith("/"):
            what = "database (or database/retention_policy)" if self.api == "v1" else "bucket"
            raise ConfigError(f"InfluxDB {what} name {self.bucket!r} is empty or malformed")
        if self.api == "v2" and not self.org:
            raise ConfigError("InfluxDB 2 needs an organization name")
        if self.api == "v2" and not self.token:
            raise ConfigError("InfluxDB 2 needs an API token with write permission on the bucket")
        if (self.username is None) != (self.password is None):
            raise ConfigError("set both the InfluxDB username and password, or neither")
        if not self.timeout_s > 0:
            raise ConfigError(f"InfluxDB timeout must be positive, not {self.timeout_s!r} s")

    def __repr__(self) -> str:
        def secret(value: str | None) -> str:
            return "None" if value is None else "'***'"

        return (
            f"InfluxTarget(url={self.url!r}, api={self.api!r}, org={self.org!r}, bucket={self.bucket!r}, "
            f"token={secret(self.token)}, username={self.username!r}, password={secret(self.password)}, "
            f"timeout_s={self.timeout_s!r}, gzip={self.gzip!r})"
        )

    __str__ = __repr__

    @property
    def database(self) -> str:
        return self.bucket.split("/", 1)[0]

    @property
    def retention_policy(self) -> str | None:
        _, _, rp = self.bucket.partition("/")
        return rp or None

    def describe_destination(self) -> str:
        if self.api == "v2":
            return f"bucket '{self.bucket}' in organization '{self.org}'"
        rp = self.retention_policy
        return f"database '{self.database}'" + (f" (retention policy '{rp}')" if rp else "")


# ------------------------------------------------------------------ results


class WriteKind(enum.Enum):
    OK = "ok"  # every line stored
    REJECTED = "rejected"  # some lines refused for good (dead-lettered), the others stored
    TRANSIENT = "transient"  # unreachable, overloaded or timing out after every attempt: keep
    AUTH = "auth"  # 401/403, token or credentials wrong: keep
    NOT_FOUND = "not_found"  # 404, bucket/org/database missing: keep
    UNEXPECTED = "unexpected"  # a status InfluxDB is not known to send: keep


@dataclass(frozen=True)
class WriteResult:
    kind: WriteKind
    points_written: int
    points_rejected: int
    kept_lines: tuple[str, ...] = field(repr=False)
    message: str
    latency_ms: float

    @property
    def points_kept(self) -> int:
        """Points the caller must keep (spool) and send again later."""
        return len(self.kept_lines)

    @property
    def ok(self) -> bool:
        return self.kind is WriteKind.OK


# ------------------------------------------------------------------ transport


class _TransientError(SinkError):
    """A failure worth retrying: no answer, a timeout, 429 or 5xx."""

    def __init__(self, message: str, retry_after_s: float | None = None, detail: str = "") -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.detail = detail or message
        self.attempts = 1


@dataclass(frozen=True)
class _Reply:
    status: int
    reason: str
    retry_after_s: float | None = None


class _Transport(Protocol):
    def post(self, lines: Sequence[str]) -> _Reply: ...

    def close(self) -> None: ...


def _one_line(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _REASON_MAX_CHARS else flat[: _REASON_MAX_CHARS - 3] + "..."


def _reason_from_body(body: bytes | str | None) -> str:
    """InfluxDB's own error text: 1.x sends {"error": ..}, 2.x {"code": .., "message": ..}."""
    if not body:
        return ""
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    try:
        data = json.loads(text)
    except ValueError:
        return _one_line(text)
    if isinstance(data, dict):
        for key in ("message", "error"):
            if isinstance(data.get(key), str):
                return _one_line(data[key])
    return _one_line(text)


def _retry_after_s(value: str | None) -> float | None:
    # Only the delta-seconds form: InfluxDB never sends an HTTP date here.
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def _describe_io_error(exc: BaseException) -> str:
    """Why a connection failed, in words, without URLs or headers (they may hold secrets)."""
    chain: list[BaseException] = []
    cause: BaseException | None = exc
    # urllib3 wraps the socket error (in .reason or as the context); look through the wrapping.
    while cause is not None and cause not in chain and len(chain) < 8:
        chain.append(cause)
        reason = getattr(cause, "reason", None)
        cause = reason if isinstance(reason, BaseException) else (cause.__cause__ or cause.__context__)
    # urllib3's NewConnectionError is a kind of timeout error, so refusals must be looked for first.
    if any(isinstance(c, ConnectionRefusedError) for c in chain):
        return "connection refused"
    if any(isinstance(c, (TimeoutError, urllib3.exceptions.TimeoutError)) for c in chain):
        return "no answer within the timeout"
    for c in reversed(chain):
        if isinstance(c, OSError) and c.strerror:
            return c.strerror.lower()
    return type(chain[-1]).__name__


def _http_text(status: int, reason: str) -> str:
    return f"HTTP {status}" + (f": {reason}" if reason else "")


def _basic_auth(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


class _V1Transport:
    """POST /write of InfluxDB 1.x with http.client; one connection per request."""

    def __init__(self, target: InfluxTarget) -> None:
        parts = urllib.parse.urlsplit(target.url)
        self._target = target
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self._headers: dict[str, str] = {}
        if target.username is not None and target.password is not None:
            # A header, not u=/p= query parameters, so the password is never part of a URL.
            self._headers["Authorization"] = _basic_auth(target.username, target.password)
        elif target.token:
            self._headers["Authorization"] = f"Token {target.token}"

    def request(
        self,
        method: str,
        path: str,
        params: dict[str, str],
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes, http.client.HTTPMessage]:
        """One HTTP exchange; OSError and HTTPException become _TransientError."""
        conn_cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        conn = conn_cls(self._host, self._port, timeout=self._target.timeout_s)
        url = f"{self._prefix}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        try:
            conn.request(method, url, body=body, headers={**self._headers, **(headers or {})})
            resp = conn.getresponse()
            return resp.status, resp.read(), resp.headers
        except (OSError, http.client.HTTPException) as exc:
            why = _describe_io_error(exc)
            raise _TransientError(f"no answer from {self._target.url}: {why}", detail=why) from None
        finally:
            conn.close()

    def post(self, lines: Sequence[str]) -> _Reply:
        body = "\n".join(lines).encode("utf-8")
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if self._target.gzip:
            body = gzip.compress(body, compresslevel=6)
            headers["Content-Encoding"] = "gzip"
        params = {"db": self._target.database, "precision": "s"}
        if self._target.retention_policy:
            params["rp"] = self._target.retention_policy
        status, data, resp_headers = self.request("POST", "/write", params, body, headers)
        return _Reply(status, _reason_from_body(data), _retry_after_s(resp_headers.get("Retry-After")))

    def close(self) -> None:
        pass


class _V2Transport:
    """InfluxDB 2 through influxdb-client, synchronous, with the client's own retries off."""

    def __init__(self, target: InfluxTarget) -> None:
        from influxdb_client.client.influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS

        self._target = target
        self._api_exception = _api_exception()
        self.client = InfluxDBClient(
            url=target.url,
            token=target.token or "",
            org=target.org,
            timeout=int(target.timeout_s * 1000),
            enable_gzip=target.gzip,
            retries=False,  # our tenacity layer is the only one that retries
        )
        self._write_api = self.client.write_api(write_options=SYNCHRONOUS)

    def post(self, lines: Sequence[str]) -> _Reply:
        from influxdb_client.domain.write_precision import WritePrecision

        try:
            self._write_api.write(
                bucket=self._target.bucket,
                org=self._target.org,
                record=list(lines),
                # The client annotates the enum class, but its members are plain strings.
                write_precision=WritePrecision.S,  # type: ignore[arg-type]
            )
        except self._api_exception as exc:
            headers: Any = exc.headers or {}
            return _Reply(exc.status or 0, _reason_from_body(exc.body), _retry_after_s(headers.get("Retry-After")))
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise _TransientError(f"no answer from {self._target.url}: {_describe_io_error(exc)}") from None
        return _Reply(204, "")

    def close(self) -> None:
        self._write_api.close()
        self.client.close()


# ------------------------------------------------------------------ the sink


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class _Tally:
    """What one write() did to its lines, filled in as the batch is split."""

    written: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (line, reason)
    kept: list[str] = field(default_factory=list)
    keep_kind: WriteKind | None = None
    keep_message: str = ""
    first_rejection: str = ""

    def keep(self, lines: Sequence[str], kind: WriteKind, message: str) -> None:
        self.kept.extend(lines)
        if self.keep_kind is None:
            self.keep_kind, self.keep_message = kind, message


class InfluxSink:
    """Writes line protocol to one InfluxDB target. Use it from one thread.

    `sleep` waits between attempts; the default waits on `shutdown`, so a
    shutdown cuts a backoff short. Once `shutdown` is set no further attempt
    starts after the current one fails.
    """

    def __init__(
        self,
        target: InfluxTarget,
        *,
        dead_letter_path: Path | None,
        max_attempts: int = 5,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 60.0,
        backoff_jitter_s: float = 1.0,
        dead_letter_max_bytes: int = 16 * 1024 * 1024,
        shutdown: threading.Event | None = None,
        sleep: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = _utc_now,
        report_outages: bool = True,
    ) -> None:
        if max_attempts < 1:
            raise ConfigError(f"max_attempts must be at least 1, not {max_attempts}")
        self.target = target
        self.dead_letter_path = dead_letter_path
        self.dead_letter_max_bytes = dead_letter_max_bytes
        self._shutdown = shutdown if shutdown is not None else threading.Event()
        self._sleep = sleep if sleep is not None else self._interruptible_sleep
        self._clock = clock
        self._wall_clock = wall_clock
        self._max_attempts = max_attempts
        self._call_attempts = max_attempts
        self._backoff_max_s = backoff_max_s
        # backoff_initial_s * 2**(n-1) + uniform(0, jitter), capped in _wait: what
        # wait_exponential_jitter computes, but its `initial` is deprecated from tenacity
        # 9.2 on and its replacement `multiplier` is missing before, so it is composed
        # from parts that every tenacity >= 8.2 has.
        self._backoff = tenacity.wait_exponential(multiplier=backoff_initial_s) + tenacity.wait_random(
            0, backoff_jitter_s
        )
        self._transport: _Transport = _V2Transport(target) if target.api == "v2" else _V1Transport(target)
        self._last_kind = WriteKind.OK
        # False when the caller logs outages itself (run's pipeline): each failure is said once.
        self._report_outages = report_outages
        self._server_version: str | None = None

    def _interruptible_sleep(self, seconds: float) -> None:
        self._shutdown.wait(seconds)

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> InfluxSink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"InfluxSink({self.target!r})"

    # -- writing

    def write(self, lines: Sequence[str], max_attempts: int | None = None) -> WriteResult:
        """Write line protocol lines (second precision) and report what became of each.

        Server and network trouble never raises: it is in the result, with the
        lines the caller must keep.  ``max_attempts`` overrides the retry budget
        for this call (a single-attempt probe while the database is known down).
        """
        self._call_attempts = max_attempts or self._max_attempts
        started = self._clock()
        tally = _Tally()
        if lines:
            self._store(list(lines), tally)
        saved_note = self._dead_letter(tally.rejected) if tally.rejected else ""
        latency_ms = (self._clock() - started) * 1000.0
        result = self._result(len(lines), tally, saved_note, latency_ms)
        self._log(result, tally)
        return result

    def _wait(self, state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _TransientError) and exc.retry_after_s is not None:
            return min(exc.retry_after_s, self._backoff_max_s)
        return min(float(self._backoff(state)), self._backoff_max_s)

    def _before_sleep(self, state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait_s = state.next_action.sleep if state.next_action else 0.0
        logger.info(
            "InfluxDB write attempt %d of %d failed (%s); trying again in %.1f s",
            state.attempt_number,
            self._call_attempts,
            exc,
            wait_s,
        )

    def _post_once(self, lines: Sequence[str]) -> _Reply:
        reply = self._transport.post(lines)
        if reply.status == 429 or reply.status >= 500:
            raise _TransientError(_http_text(reply.status, reply.reason), reply.retry_after_s)
        return reply

    def _post(self, lines: Sequence[str]) -> _Reply:
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_TransientError),
            stop=tenacity.stop_after_attempt(self._call_attempts) | tenacity.stop_when_event_set(self._shutdown),
            wait=self._wait,
            sleep=self._sleep,
            before_sleep=self._before_sleep,
            reraise=True,
        )
        try:
            return retrying(self._post_once, lines)
        except _TransientError as exc:
            exc.attempts = retrying.statistics.get("attempt_number", 1)
            raise

    def _store(self, lines: list[str], tally: _Tally) -> None:
        if tally.keep_kind is not None:
            # The server already said it cannot take data now; asking again per half would only wait longer.
            tally.keep(lines, tally.keep_kind, tally.keep_message)
            return
        try:
            reply = self._post(lines)
        except _TransientError as exc:
            tries = "1 attempt" if exc.attempts == 1 else f"{exc.attempts} attempts"
            tally.keep(
                lines, WriteKind.TRANSIENT, f"InfluxDB did not take the write after {tries} ({exc}); the data is kept"
            )
            return
        status = reply.status
        if 200 <= status < 300:
            tally.written += len(lines)
        elif status in (400, 422):
            tally.first_rejection = tally.first_rejection or reply.reason or f"HTTP {status}"
            if len(lines) == 1:
                tally.rejected.append((lines[0], _http_text(status, reply.reason)))
            else:
                self._split(lines, tally)
        elif status == 413:
            if len(lines) == 1:
                tally.rejected.append((lines[0], "HTTP 413: this one line is larger than the server accepts"))
            else:
                self._split(lines, tally)
        elif status in (401, 403):
            tally.keep(lines, WriteKind.AUTH, self._auth_message(status))
        elif status == 404:
            tally.keep(lines, WriteKind.NOT_FOUND, self._not_found_message(reply.reason))
        else:
            tally.keep(
                lines,
                WriteKind.UNEXPECTED,
                f"InfluxDB answered HTTP {status} ({reply.reason or 'no reason given'}); the data is kept",
            )

    def _split(self, lines: list[str], tally: _Tally) -> None:
        middle = len(lines) // 2
        self._store(lines[:middle], tally)
        self._store(lines[middle:], tally)

    def _auth_message(self, status: int) -> str:
        if self.target.api == "v2":
            fix = (
                f"the API token is wrong or lacks write permission on {self.target.describe_destination()}; "
                "create a token with write access to that bucket and configure it"
            )
        else:
            fix = (
                "the InfluxDB username/password (or token) is wrong or the user may not write to "
                f"{self.target.describe_destination()}; fix the credentials or GRANT WRITE"
            )
        return f"InfluxDB refused the write (HTTP {status}): {fix}; the data is kept"

    def _not_found_message(self, reason: str) -> str:
        where = self.target.describe_destination()
        if self.target.api == "v2" and isinstance(self._transport, _V2Transport):
            if self._server_version is None:
                self._server_version = _ping_version(self._transport.client) or ""
            if is_influxdb_1(self._server_version):
                return f"{influxdb_1_hint(self._server_version)}; the data is kept"
        if self.target.api == "v2":
            fix = "create it in InfluxDB or fix the bucket/org names"
        else:
            fix = f'create it (CREATE DATABASE "{self.target.database}") or fix the name'
        said = f" (InfluxDB said: {reason})" if reason else ""
        return f"InfluxDB has no {where}{said}: {fix}; the data is kept"

    # -- dead letters

    def _dead_letter(self, rejected: list[tuple[str, str]]) -> str:
        """Append rejected lines to the dead-letter file; return a note for the message."""
        if self.dead_letter_path is None:
            return "not saved (no dead-letter file configured)"
        stamp = self._wall_clock().astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        text = "".join(f"# {stamp} rejected by InfluxDB: {_one_line(reason)}\n{line}\n" for line, reason in rejected)
        try:
            size = self.dead_letter_path.stat().st_size if self.dead_letter_path.exists() else 0
            if size + len(text.encode("utf-8")) > self.dead_letter_max_bytes:
                return (
                    f"NOT saved: dead-letter file {self.dead_letter_path} reached its limit of "
                    f"{self.dead_letter_max_bytes} bytes; move it away"
                )
            self.dead_letter_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.dead_letter_path, "a", encoding="utf-8") as out:
                out.write(text)
        except OSError as exc:
            return f"NOT saved: cannot write dead-letter file {self.dead_letter_path}: {exc.strerror or exc}"
        return f"saved to {self.dead_letter_path}"

    # -- reporting

    def _result(self, total: int, tally: _Tally, saved_note: str, latency_ms: float) -> WriteResult:
        rejected = len(tally.rejected)
        rejection = (
            f"InfluxDB rejected {rejected} of {total} points ({tally.first_rejection}); they are {saved_note}"
            if rejected
            else ""
        )
        if tally.keep_kind is not None:
            kind, message = tally.keep_kind, tally.keep_message
            if tally.written or rejected:
                message += f"; {len(tally.kept)} of {total} points kept, {tally.written} stored"
            if rejection:
                message += f"; {rejection}"
        elif rejected:
            kind, message = WriteKind.REJECTED, f"{rejection}; the other {tally.written} are stored"
        else:
            kind, message = WriteKind.OK, f"{tally.written} points stored"
        return WriteResult(kind, tally.written, rejected, tuple(tally.kept), message, latency_ms)

    def _log(self, result: WriteResult, tally: _Tally) -> None:
        if tally.rejected:
            # The reason is logged once per write, not once per bisection step.
            logger.warning(
                "InfluxDB rejected %d of %d points (%s); see %s",
                len(tally.rejected),
                result.points_written + result.points_rejected + result.points_kept,
                tally.first_rejection,
                self.dead_letter_path or "the counters",
            )
        if result.kind in (WriteKind.OK, WriteKind.REJECTED):
            if self._last_kind not in (WriteKind.OK, WriteKind.REJECTED) and self._report_outages:
                logger.info("InfluxDB takes writes again")
        elif result.kind is not self._last_kind and self._report_outages:
            # Said once when the trouble starts, not on every flush while it lasts.
            logger.error("%s", result.message)
        else:
            logger.debug("%s", result.message)
        self._last_kind = result.kind

    # -- doctor

    def check(self) -> list[tuple[bool, str]]:
        """Plain-words checks for `p1logger doctor`: (passed, what was found and what to fix)."""
        if self.target.api == "v2":
            assert isinstance(self._transport, _V2Transport)
            return _check_v2(self.target, self._transport.client)
        assert isinstance(self._transport, _V1Transport)
        return _check_v1(self.target, self._transport)


def _unreachable(target: InfluxTarget, why: str) -> tuple[bool, str]:
    return (
        False,
        f"InfluxDB does not answer at {target.url} ({why}): check the URL and that InfluxDB is running and reachable",
    )


def is_influxdb_1(version: str) -> bool:
    """What /ping's X-Influxdb-Version says: "1.6.7" or "1.8.10" for 1.x, "v2.7.4" or "2.7.4" for 2.x."""
    return version.strip().lstrip("v").startswith("1.")


def influxdb_1_hint(version: str) -> str:
    return (f"this is InfluxDB 1.x (version {version}): set INFLUX_API=v1, with the database in INFLUX_BUCKET "
            "(and INFLUX_USERNAME and INFLUX_PASSWORD if it has authentication)")


def _ping_version(client: InfluxDBClient) -> str | None:
    try:
        return str(client.version())
    except Exception:  # noqa: BLE001 - only a better message is at stake; the write's own error stands
        return None


def _check_v2(target: InfluxTarget, client: InfluxDBClient) -> list[tuple[bool, str]]:
    api_exception = _api_exception()
    try:
        version = client.version()
    except api_exception as exc:
        return [_unreachable(target, f"HTTP {exc.status} on /ping")]
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        return [_unreachable(target, _describe_io_error(exc))]
    checks: list[tuple[bool, str]] = [(True, f"InfluxDB {version} answers at {target.url}")]
    if is_influxdb_1(str(version)):
        checks.append((False, influxdb_1_hint(str(version))))
        return checks

    def ask(call: Callable[[], Any]) -> tuple[Any, int | None, str]:
        try:
            return call(), None, ""
        except api_exception as exc:
            return None, exc.status, _reason_from_body(exc.body)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            return None, 0, _describe_io_error(exc)

    orgs, status, reason = ask(lambda: client.organizations_api().find_organizations(org=target.org))
    if status in (401, 403):
        checks.append(
            (False, f"the API token was not accepted (HTTP {status}): create an API token in InfluxDB and configure it")
        )
        return checks
    if status == 404 or (status is None and not orgs):
        checks.append(
            (False, f"organization '{target.org}' does not exist or the token cannot see it: fix the org name")
        )
        return checks
    if status is not None:
        checks.append((False, f"cannot list organizations ({f'HTTP {status}' if status else 'no answer'}: {reason})"))
        return checks
    checks.append((True, f"the API token is accepted and organization '{target.org}' exists"))

    buckets, status, reason = ask(lambda: client.buckets_api().find_buckets(org=target.org, name=target.bucket))
    found = status is None and buckets is not None and any(b.name == target.bucket for b in buckets.buckets or [])
    if found:
        checks.append((True, f"bucket '{target.bucket}' exists in organization '{target.org}'"))
    elif status is None or status == 404:
        checks.append(
            (
                False,
                f"bucket '{target.bucket}' does not exist in organization '{target.org}' (or the token cannot "
                "read it): create the bucket or fix its name",
            )
        )
    else:
        checks.append((False, f"cannot list buckets ({f'HTTP {status}' if status else 'no answer'}: {reason})"))
    return checks


def _check_v1(target: InfluxTarget, transport: _V1Transport) -> list[tuple[bool, str]]:
    try:
        status, _, headers = transport.request("GET", "/ping", {})
    except _TransientError as exc:
        return [_unreachable(target, exc.detail)]
    if status != 204:
        return [_unreachable(target, f"HTTP {status} on /ping")]
    version = headers.get("X-Influxdb-Version", "(unknown version)")
    checks: list[tuple[bool, str]] = [(True, f"InfluxDB {version} answers at {target.url}")]

    def show(influxql: str) -> tuple[int, list[str], str]:
        try:
            status, body, _ = transport.request("GET", "/query", {"q": influxql})
        except _TransientError as exc:
            return 0, [], str(exc)
        try:
            answer = json.loads(body or b"{}")
        except ValueError:
            return status, [], _reason_from_body(body)
        result = (answer.get("results") or [{}])[0]
        error = answer.get("error") or result.get("error") or ""
        names = [row[0] for s in result.get("series", []) for row in s.get("values", [])]
        return status, names, error

    status, databases, error = show("SHOW DATABASES")
    if status in (401, 403):
        checks.append((False, f"InfluxDB refused the username/password or token (HTTP {status}): fix the credentials"))
        return checks
    if status != 200 or error:
        checks.append((False, f"cannot list databases (HTTP {status}: {_one_line(error)})"))
        return checks
    who = "the credentials are accepted" if target.username or target.token else "no credentials are needed"
    checks.append((True, who))
    if target.database not in databases:
        checks.append(
            (
                False,
                f"database '{target.database}' does not exist (or this user cannot see it): "
                f'run CREATE DATABASE "{target.database}" or fix the name',
            )
        )
        return checks
    checks.append((True, f"database '{target.database}' exists"))
    rp = target.retention_policy
    if rp:
        status, policies, error = show(f'SHOW RETENTION POLICIES ON "{target.database}"')
        if rp in policies:
            checks.append((True, f"retention policy '{rp}' exists on database '{target.database}'"))
        else:
            checks.append(
                (
                    False,
                    f"retention policy '{rp}' does not exist on database '{target.database}': "
                    "create it or fix the name",
                )
            )
    return checks
