"""Real database servers for the tests: a private influxd 1.x and a v2 API proxy in front of it.

`InfluxServer` runs Debian's influxd (v1 HTTP API) from a temp dir, bound to
127.0.0.1 only. `V2Proxy` speaks enough of the InfluxDB 2 HTTP API for
influxdb-client (write, ping, health, orgs, buckets) and stores what it is
given in that influxd, so a v2 write can be counted in a real database. Its
fault queue makes it misbehave on purpose for the next writes.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import http.server
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers.processes import log_tail, start_server, stop_process

REQUIRE_SERVERS_ENV = "P1_TEST_REQUIRE_SERVERS"
INFLUXD_ENV = "P1_INFLUXD"
# What the `v2_proxy` fixture accepts.
V2_TOKEN = "proxy-token-for-tests"
V2_ORG = "p1org"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def find_influxd() -> tuple[str | None, str]:
    """Path of a 1.x influxd binary, or None with the reason it is unusable."""
    binary = os.environ.get(INFLUXD_ENV) or shutil.which("influxd") or "/usr/bin/influxd"
    if not os.access(binary, os.X_OK):
        return None, f"influxd not found (apt-get install influxdb, or set {INFLUXD_ENV})"
    try:
        out = subprocess.run([binary, "version"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{binary} version failed: {exc}"
    # The config file written below is the 1.x format; 2.x takes flags instead.
    if not out.startswith("InfluxDB v1."):
        return None, f"{binary} is not InfluxDB 1.x: {out.strip()!r}"
    return binary, out.strip()


class ServerError(RuntimeError):
    """A test server did not start or answered a helper query with an error."""


def _basic_auth(username: str, password: str) -> str:
    raw = f"{username}:{password}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


@dataclass
class HttpReply:
    status: int
    body: bytes
    headers: dict[str, str]


def http_request(
    port: int,
    method: str,
    path: str,
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout_s: float = 10.0,
) -> HttpReply:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return HttpReply(resp.status, resp.read(), {k.lower(): v for k, v in resp.getheaders()})
    finally:
        conn.close()


def quote_ident(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


class InfluxServer:
    """One influxd 1.x process with its own config and data dir, on 127.0.0.1 only.

    stop() and start() may be called mid-test: the data dir and ports stay,
    so a restarted server has the same data at the same URL.
    """

    def __init__(
        self,
        binary: str,
        root: Path,
        *,
        admin: tuple[str, str] | None = None,
        ready_timeout_s: float = 30.0,
    ) -> None:
        self.binary = binary
        self.root = root
        self.admin = admin
        self.ready_timeout_s = ready_timeout_s
        self.http_port = free_port()
        self.rpc_port = free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.config_path = root / "influxdb.conf"
        self.log_path = root / "influxd.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._admin_created = False
        self._write_config()

    def _write_config(self) -> None:
        auth = "true" if self.admin else "false"
        self.config_path.write_text(
            f"""reporting-disabled = true
bind-address = "127.0.0.1:{self.rpc_port}"

[meta]
  dir = "{self.root / 'meta'}"

[data]
  dir = "{self.root / 'data'}"
  wal-dir = "{self.root / 'wal'}"
  wal-fsync-delay = "0s"
  index-version = "inmem"
  query-log-enabled = false

[monitor]
  store-enabled = false

[subscriber]
  enabled = false

[continuous_queries]
  enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:{self.http_port}"
  auth-enabled = {auth}
  log-enabled = false
  pprof-enabled = false
  unix-socket-enabled = false

[ifql]
  enabled = false

[logging]
  level = "warn"
  suppress-logo = true
""",
            encoding="utf-8",
        )

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        if self.running:
            return
        self._proc = start_server([self.binary, "-config", str(self.config_path)], self.log_path)
        self._wait_ready()
        if self.admin and not self._admin_created:
            # With auth on and no user yet, 1.x lets exactly this query through.
            user, password = self.admin
            self.query(f"CREATE USER {quote_ident(user)} WITH PASSWORD '{password}' WITH ALL PRIVILEGES")
            self._admin_created = True

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise ServerError(f"influxd exited with {self._proc.returncode}: {self._log_tail()}")
            try:
                if http_request(self.http_port, "GET", "/ping", timeout_s=1.0).status == 204:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise ServerError(f"influxd did not answer /ping within {self.ready_timeout_s} s: {self._log_tail()}")

    def _log_tail(self) -> str:
        return log_tail(self.log_path)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        stop_process(proc)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": _basic_auth(*self.admin)} if self.admin else {}

    def query(self, influxql: str, db: str | None = None) -> dict[str, Any]:
        """Run InfluxQL (epoch seconds) and return the JSON answer; raise on any error."""
        params = {"q": influxql, "epoch": "s"}
        if db is not None:
            params["db"] = db
        reply = http_request(
            self.http_port,
            "POST",
            "/query",
            body=urllib.parse.urlencode(params).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded", **self._headers()},
        )
        answer: dict[str, Any] = json.loads(reply.body or b"{}")
        errors = [answer.get("error")] + [r.get("error") for r in answer.get("results", [])]
        if reply.status != 200 or any(errors):
            raise ServerError(f"{influxql!r}: HTTP {reply.status} {reply.body[:300]!r}")
        return answer

    def create_database(self, name: str) -> None:
        self.query(f"CREATE DATABASE {quote_ident(name)}")

    def databases(self) -> list[str]:
        series = self.query("SHOW DATABASES")["results"][0].get("series", [])
        return [row[0] for s in series for row in s.get("values", [])]

    def rows(self, db: str, measurement: str, rp: str | None = None) -> list[dict[str, Any]]:
        """Every point of a measurement as {column: value}, tags included, oldest first."""
        source = quote_ident(measurement)
        if rp is not None:
            source = f"{quote_ident(db)}.{quote_ident(rp)}.{source}"
        result = self.query(f"SELECT * FROM {source}", db)["results"][0]
        out: list[dict[str, Any]] = []
        for series in result.get("series", []):
            out.extend(dict(zip(series["columns"], values)) for values in series["values"])
        return out

    def count(self, db: str, measurement: str, rp: str | None = None) -> int:
        """Number of points (series x timestamp), not of field values."""
        return len(self.rows(db, measurement, rp))

    def field_types(self, db: str, measurement: str) -> dict[str, str]:
        result = self.query(f"SHOW FIELD KEYS FROM {quote_ident(measurement)}", db)["results"][0]
        return {k: t for s in result.get("series", []) for k, t in s["values"]}


# ---------------------------------------------------------------- v2 proxy


@dataclass
class Fault:
    """Misbehaviour for the next `times` write requests it matches (None: until cleared)."""

    kind: str  # "status", "partial_write", "hang"
    times: int | None = 1
    status: int = 0
    retry_after_s: float | None = None
    over_bytes: int | None = None  # only requests with a larger (uncompressed) body match
    marker: str | None = None  # partial_write: lines holding it are rejected
    hang_s: float = 0.0

    def matches(self, body: bytes) -> bool:
        if self.over_bytes is not None and len(body) <= self.over_bytes:
            return False
        if self.marker is not None and self.marker.encode() not in body:
            return False
        return True


@dataclass
class RequestRecord:
    method: str
    path: str
    status: int | None  # None: the proxy hung up without answering
    lines: int
    body_bytes: int
    content_encoding: str | None
    query: dict[str, str] = field(default_factory=dict)
    at_s: float = field(default_factory=time.monotonic)  # when it arrived


_Answer = tuple[int | None, bytes, dict[str, str]]


def _v2_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> _Answer:
    return status, json.dumps({"code": code, "message": message}).encode(), headers or {}


class V2Proxy:
    """InfluxDB 2 HTTP API in front of a real influxd 1.x; the bucket is the database."""

    ORG_ID = "0a1b2c3d4e5f6071"

    def __init__(self, influxd: InfluxServer, *, token: str, org: str, keep_alive: bool = False) -> None:
        self.influxd = influxd
        self.token = token
        self.org = org
        # Tests keep one request per connection, so that refuse() cuts every client off; a benchmark keeps
        # connections open, as InfluxDB 2 itself does.
        self.keep_alive = keep_alive
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests: list[RequestRecord] = []
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- fault queue
    def push(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def fail_with(
        self,
        status: int,
        *,
        times: int | None = 1,
        retry_after_s: float | None = None,
        over_bytes: int | None = None,
    ) -> None:
        self.push(Fault("status", times, status=status, retry_after_s=retry_after_s, over_bytes=over_bytes))

    def partial_write(self, marker: str, *, times: int | None = None) -> None:
        self.push(Fault("partial_write", times, marker=marker))

    def hang(self, seconds: float, *, times: int | None = 1) -> None:
        self.push(Fault("hang", times, hang_s=seconds))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take_fault(self, body: bytes) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(body):
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times <= 0:
                            self._faults.remove(fault)
                    return fault
        return None

    # -- records
    def writes(self) -> list[RequestRecord]:
        with self._lock:
            return [r for r in self.requests if r.path == "/api/v2/write"]

    def write_statuses(self) -> list[int | None]:
        return [r.status for r in self.writes()]

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self.requests.append(record)

    # -- lifecycle
    def start(self) -> None:
        if self._server is not None:
            return
        self._closing.clear()
        handler = type("Handler", (_ProxyHandler,),
                       {"proxy": self, "protocol_version": "HTTP/1.1" if self.keep_alive else "HTTP/1.0"})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def refuse(self) -> None:
        """Close the listening socket: connections are refused until reopen()."""
        server, self._server = self._server, None
        if server is None:
            return
        self._closing.set()  # ends a hang in progress
        server.shutdown()
        server.server_close()
        assert self._thread is not None
        self._thread.join(timeout=5)

    def reopen(self) -> None:
        self.start()

    def stop(self) -> None:
        self.refuse()

    # -- behaviour, called from handler threads
    def handle(self, method: str, raw_path: str, headers: Any, body: bytes) -> _Answer:
        parsed = urllib.parse.urlsplit(raw_path)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(parsed.query).items()}
        encoding = headers.get("Content-Encoding")
        if encoding == "gzip":
            body = gzip.decompress(body)
        lines = [ln for ln in body.decode("utf-8", errors="replace").split("\n") if ln.strip()]
        record = RequestRecord(method, parsed.path, None, len(lines), len(body), encoding, query)
        self._record(record)  # now, so a hung request shows while it hangs
        try:
            status, payload, extra = self._route(method, parsed.path, query, headers, body, lines)
        except Exception as exc:  # a proxy bug must show as a 500, not as a hung test
            status, payload, extra = 500, json.dumps({"code": "internal error", "message": repr(exc)}).encode(), {}
        with self._lock:
            record.status = status
        return status, payload, extra

    def _route(
        self, method: str, path: str, query: dict[str, str], headers: Any, body: bytes, lines: list[str]
    ) -> _Answer:
        if path == "/ping":
            return 204, b"", {"X-Influxdb-Version": "v2-proxy", "X-Influxdb-Build": "OSS"}
        if path == "/health":
            return (
                200,
                json.dumps({"name": "influxdb", "status": "pass", "message": "ready for queries and writes"}).encode(),
                {},
            )
        if headers.get("Authorization") != f"Token {self.token}":
            return _v2_error(401, "unauthorized", "unauthorized access")
        if path == "/api/v2/write" and method == "POST":
            return self._write(query, body, lines)
        if path == "/api/v2/orgs" and method == "GET":
            if query.get("org", self.org) != self.org:
                return _v2_error(404, "not found", f'organization name "{query["org"]}" not found')
            return 200, json.dumps({"orgs": [{"id": self.ORG_ID, "name": self.org}]}).encode(), {}
        if path == "/api/v2/buckets" and method == "GET":
            if query.get("org", self.org) != self.org:
                return _v2_error(404, "not found", f'organization name "{query["org"]}" not found')
            names = [n for n in self.influxd.databases() if query.get("name", n) == n]
            buckets = [
                {"id": f"b{i:015d}", "orgID": self.ORG_ID, "name": n, "retentionRules": []} for i, n in enumerate(names)
            ]
            return 200, json.dumps({"buckets": buckets}).encode(), {}
        return _v2_error(404, "not found", "path not found")

    def _write(self, query: dict[str, str], body: bytes, lines: list[str]) -> _Answer:
        fault = self._take_fault(body)
        if fault is not None and fault.kind == "hang":
            self._closing.wait(fault.hang_s)
            return None, b"", {}
        if fault is not None and fault.kind == "status":
            extra = {} if fault.retry_after_s is None else {"Retry-After": f"{fault.retry_after_s:g}"}
            return _v2_error(fault.status, "injected", f"injected HTTP {fault.status}", extra)
        if query.get("org") != self.org:
            return _v2_error(404, "not found", f'organization name "{query.get("org")}" not found')
        bucket = query.get("bucket", "")
        marker = fault.marker if fault is not None and fault.kind == "partial_write" else None
        rejected = [ln for ln in lines if marker is not None and marker in ln]
        lines = [ln for ln in lines if marker is None or marker not in ln]
        precision = {"s": "s", "ms": "ms", "us": "u", "ns": "n"}.get(query.get("precision", "ns"), "n")
        if lines:
            status, message = self._forward(bucket, precision, lines)
            if status == 404:
                return _v2_error(404, "not found", f'bucket "{bucket}" not found')
            if status >= 300:
                code = "invalid" if status == 400 else "internal error"
                return _v2_error(status if status in (400, 413) else 500, code, message)
        if rejected:
            return _v2_error(400, "invalid", f"partial write: line holds marker {marker!r} dropped={len(rejected)}")
        return 204, b"", {}

    def _forward(self, bucket: str, precision: str, lines: list[str]) -> tuple[int, str]:
        path = "/write?" + urllib.parse.urlencode({"db": bucket, "precision": precision})
        try:
            reply = http_request(
                self.influxd.http_port, "POST", path, body="\n".join(lines).encode(), headers=self.influxd._headers()
            )
        except OSError as exc:
            return 503, f"storage unavailable: {exc}"
        try:
            message = str(json.loads(reply.body).get("error", "")) if reply.body else ""
        except ValueError:
            message = reply.body.decode(errors="replace")
        return reply.status, message


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    proxy: V2Proxy
    # HTTP/1.0: one request per connection, so refuse() really cuts every client off.
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        status, payload, extra = self.proxy.handle(self.command, self.path, self.headers, body)
        if status is None:
            self.close_connection = True
            return
        self.send_response(status)
        for key, value in extra.items():
            self.send_header(key, value)
        if payload:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = _serve
    do_POST = _serve
    do_HEAD = _serve


def require_server(what: str, why: str) -> None:
    """Skip the test, or fail it when CI demands every server."""
    message = f"{what} is not available: {why}"
    if os.environ.get(REQUIRE_SERVERS_ENV) == "1":
        pytest.fail(f"{message} ({REQUIRE_SERVERS_ENV}=1)")
    pytest.skip(message)
