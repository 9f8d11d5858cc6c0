"""Share the meter: re-broadcast every valid telegram to TCP clients (``run --serve-raw HOST:PORT``).

Home Assistant's DSMR integration (or a second logger) reads
``socket://pi:PORT`` while p1logger keeps the only P1 port. Clients get the
telegrams byte-exact, as the meter sent them, from the moment they connect.

A slow or dead client never holds up the logger or the other clients: the
reader thread only appends to each client's bounded queue (dropping that
client's oldest telegram, counted, when it is full) and wakes one server
thread, which sends with non-blocking sockets as each client can take it. A
client whose queue has overflowed without pause for ``stall_timeout_s`` is
disconnected; one that reconnects starts afresh.
"""

from __future__ import annotations

import argparse
import collections
import logging
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from p1logger import settings as settings_table
from p1logger.contracts import Check, Output, Record, RunContext
from p1logger.errors import ConfigError
from p1logger.outputs import OutputSpec

logger = logging.getLogger(__name__)

DEFAULT_MAX_CLIENTS = 16
# A minute of telegrams at one a second: a client that pauses this long misses nothing.
DEFAULT_QUEUE_MAX_TELEGRAMS = 60
DEFAULT_STALL_TIMEOUT_S = 60.0
# The kernel's own send buffer per client is bounded too (it would otherwise grow to
# megabytes for a client that stopped reading); past it the queue above takes over.
SOCKET_BUFFER_BYTES = 64 * 1024
_RECV_BYTES = 4096


def parse_listen_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::]:PORT`` for IPv6) -> (host, port). The host is required."""
    host, colon, port_text = text.strip().rpartition(":")
    host = host.strip("[]")
    if not colon or not host:
        raise ConfigError(f"--serve-raw {text!r} needs a host and a port: 127.0.0.1:2001 serves this machine only, "
                          "0.0.0.0:2001 the whole LAN")
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise ConfigError(f"--serve-raw {text!r}: {port_text!r} is not a TCP port (0 to 65535)")
    return host, port


@dataclass
class FanoutStats:
    telegrams_sent: int = 0  # valid telegrams handed to the clients' queues
    telegrams_dropped: int = 0  # dropped from a full client queue, all clients together
    clients_accepted: int = 0
    clients_refused: int = 0  # over max_clients
    clients_dropped_stalled: int = 0
    clients_disconnected: int = 0  # closed by the client, or a socket error


class _Client:
    __slots__ = ("sock", "peer", "queue", "sending", "dropped", "overflow_since", "writing")

    def __init__(self, sock: socket.socket, peer: str) -> None:
        self.sock = sock
        self.peer = peer
        self.queue: collections.deque[bytes] = collections.deque()
        self.sending: memoryview | None = None  # the telegram part-sent; never cut, or the client would get half
        self.dropped = 0
        self.overflow_since: float | None = None
        self.writing = False  # registered for EVENT_WRITE


class FanoutServer:
    """A TCP server that sends each published telegram to every connected client.

    Callable as a raw observer ``(raw, valid)``: only valid telegrams go out.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        max_clients: int = DEFAULT_MAX_CLIENTS,
        queue_max_telegrams: int = DEFAULT_QUEUE_MAX_TELEGRAMS,
        stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_clients < 1:
            raise ConfigError(f"the fan-out client limit must be at least 1, not {max_clients}")
        if queue_max_telegrams < 1:
            raise ConfigError(f"the fan-out queue must hold at least 1 telegram, not {queue_max_telegrams}")
        self.host = host
        self.port = port
        self.max_clients = max_clients
        self.queue_max_telegrams = queue_max_telegrams
        self.stall_timeout_s = stall_timeout_s
        self._clock = clock
        self.stats = FanoutStats()
        self._clients: dict[socket.socket, _Client] = {}
        self._lock = threading.Lock()  # guards the client queues, shared with the reader thread
        self._selector = selectors.DefaultSelector()
        self._listener: socket.socket | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self.address: tuple[str, int] = (host, port)

    # -- life cycle

    def start(self) -> None:
        try:
            infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            family, kind, proto, _, address = infos[0]
            listener = socket.socket(family, kind, proto)
        except (OSError, IndexError) as exc:
            raise ConfigError(f"cannot serve telegrams on {self.host}:{self.port}: {exc}") from None
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(address)
            listener.listen(self.max_clients)
        except OSError as exc:
            listener.close()
            raise ConfigError(f"cannot serve telegrams on {self.host}:{self.port} ({exc.strerror or exc}): "
                              "is the port in use, or the address not on this machine? Fix P1_SERVE_RAW") from None
        listener.setblocking(False)
        self._listener = listener
        self.address = listener.getsockname()[:2]
        self._selector.register(listener, selectors.EVENT_READ)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._thread = threading.Thread(target=self._serve, name="p1-fanout", daemon=True)
        self._thread.start()
        logger.info("serving raw telegrams on %s:%d", *self.address)

    def close(self) -> None:
        self._closing.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for client in list(self._clients.values()):
            self._forget(client)
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self._wake_r.close()
        self._wake_w.close()
        self._selector.close()

    @property
    def listening(self) -> bool:
        return self._listener is not None

    @property
    def client_count(self) -> int:
        with self._lock:
            return len(self._clients)

    # -- publishing (the reader thread: must never block)

    def __call__(self, raw: bytes, valid: bool) -> None:
        if valid:
            self.publish(raw)

    def publish(self, raw: bytes) -> None:
        now = self._clock()
        with self._lock:
            if not self._clients:
                return
            for client in self._clients.values():
                if len(client.queue) >= self.queue_max_telegrams:
                    client.queue.popleft()
                    client.dropped += 1
                    self.stats.telegrams_dropped += 1
                    if client.overflow_since is None:
                        client.overflow_since = now
                client.queue.append(raw)
            self.stats.telegrams_sent += 1
        self._wake()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # already woken (the pipe is full), or closing

    # -- the server thread

    def _serve(self) -> None:
        while not self._closing.is_set():
            for key, mask in self._selector.select(timeout=1.0):
                sock = key.fileobj
                if sock is self._listener:
                    self._accept()
                elif sock is self._wake_r:
                    self._drain_wake()
                else:
                    client = self._clients.get(sock)  # type: ignore[call-overload]
                    if client is None:
                        continue
                    if mask & selectors.EVENT_READ and not self._read(client):
                        continue
                    if mask & selectors.EVENT_WRITE:
                        self._flush(client)
            for client in list(self._clients.values()):
                if client.queue or client.sending is not None:
                    self._flush(client)
            self._drop_stalled()

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(_RECV_BYTES):
                pass
        except (BlockingIOError, OSError):
            pass

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            sock, address = self._listener.accept()
        except (BlockingIOError, OSError):
            return
        peer = f"{address[0]}:{address[1]}"
        with self._lock:
            full = len(self._clients) >= self.max_clients
        if full:
            self.stats.clients_refused += 1
            logger.warning("refused %s: already %d clients (the limit)", peer, self.max_clients)
            sock.close()
            return
        sock.setblocking(False)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER_BYTES)
        except OSError:
            pass
        client = _Client(sock, peer)
        with self._lock:
            self._clients[sock] = client
        self._selector.register(sock, selectors.EVENT_READ)
        self.stats.clients_accepted += 1
        logger.info("raw telegram client %s connected (%d now)", peer, len(self._clients))

    def _read(self, client: _Client) -> bool:
        """Discard what a client sends; notice when it hangs up.  False when it is gone."""
        try:
            data = client.sock.recv(_RECV_BYTES)
        except BlockingIOError:
            return True
        except OSError as exc:
            self._disconnect(client, f"error: {exc.strerror or exc}")
            return False
        if not data:
            self._disconnect(client, "closed the connection")
            return False
        return True

    def _flush(self, client: _Client) -> None:
        while True:
            if client.sending is None:
                with self._lock:
                    if not client.queue:
                        client.overflow_since = None  # caught up
                        break
                    client.sending = memoryview(client.queue.popleft())
            try:
                sent = client.sock.send(client.sending)
            except BlockingIOError:
                break
            except OSError as exc:
                self._disconnect(client, f"error: {exc.strerror or exc}")
                return
            client.sending = client.sending[sent:] if sent < len(client.sending) else None
        want_write = client.sending is not None
        if want_write != client.writing:
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if want_write else 0)
            self._selector.modify(client.sock, events)
            client.writing = want_write

    def _drop_stalled(self) -> None:
        now = self._clock()
        for client in list(self._clients.values()):
            since = client.overflow_since
            if since is not None and now - since > self.stall_timeout_s:
                self.stats.clients_dropped_stalled += 1
                logger.warning("disconnected raw telegram client %s: it has not kept up for %.0f s (%d telegrams "
                               "dropped)", client.peer, now - since, client.dropped)
                try:
                    # Reset rather than close, so the kernel drops what it still holds for a dead peer.
                    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except OSError:
                    pass
                self._forget(client)

    def _disconnect(self, client: _Client, why: str) -> None:
        self.stats.clients_disconnected += 1
        logger.info("raw telegram client %s %s (%d telegrams dropped for it)", client.peer, why, client.dropped)
        self._forget(client)

    def _forget(self, client: _Client) -> None:
        with self._lock:
            self._clients.pop(client.sock, None)
        try:
            self._selector.unregister(client.sock)
        except (KeyError, ValueError):
            pass
        client.sock.close()


# ------------------------------------------------------------------ the output


class FanoutOutput:
    """The `Output` contract: valid raw telegrams, from the reader thread, to every client."""

    name = "fanout"
    wants_figures = False

    def __init__(self, server: FanoutServer) -> None:
        self.server = server

    def start(self) -> None:
        if not self.server.listening:
            self.server.start()

    def submit(self, record: Record) -> None:
        pass

    def submit_health(self, snapshot: Mapping[str, object], lines: Sequence[str]) -> None:
        pass

    def observe_raw(self, raw: bytes, valid: bool, received_at_s: float) -> None:
        if valid:
            self.server.publish(raw)

    def close(self, budget_s: float | None = None) -> None:
        self.server.close()

    def health(self) -> Mapping[str, object]:
        return {"clients": self.server.client_count, **asdict(self.server.stats)}


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("sharing the meter")
    settings_table.add(group, "P1_SERVE_RAW", "P1_SERVE_RAW_MAX_CLIENTS")


def _create(settings: Any, context: RunContext) -> Output:
    host, port = parse_listen_address(settings.serve_raw)
    return FanoutOutput(FanoutServer(host, port, max_clients=settings.serve_raw_max_clients))


def _check(settings: Any) -> list[Check]:
    # The address only: doctor must not take the port from a logger that is running.
    try:
        host, port = parse_listen_address(settings.serve_raw)
    except ConfigError as exc:
        return [Check(False, f"fan-out: {exc}")]
    return [Check(True, f"fan-out: raw telegrams will be served on {host}:{port}")]


SPEC = OutputSpec("fanout", add_run_arguments, lambda settings: bool(getattr(settings, "serve_raw", None)),
                  _create, _check)
