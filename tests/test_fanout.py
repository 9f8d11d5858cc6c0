"""TCP fan-out: every client gets every valid telegram in order; a stalled one holds up nobody.

The servers listen on 127.0.0.1 only. The stall timeout runs on an injected
clock; the only real waiting is for bytes to cross the loopback interface.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers.archive_telegrams import FakeClock, bad_crc, telegram

from p1logger.cli import build_parser
from p1logger.cli import main as cli_main
from p1logger.commands.run import build_pipeline
from p1logger.errors import ConfigError
from p1logger.outputs.fanout import FanoutOutput, FanoutServer, parse_listen_address
from p1logger.framing import Frame, Framer

WAIT_S = 10.0
all_telegrams = [telegram(n) for n in range(302)]


class Reader:
    """A healthy client (Home Assistant): reads everything in a thread."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.sock = socket.create_connection(address, timeout=WAIT_S)
        self.data = bytearray()
        self.closed = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                chunk = b""
            with self._changed:
                if not chunk:
                    self.closed = True
                    self._changed.notify_all()
                    return
                self.data += chunk
                self._changed.notify_all()

    def wait_for(self, size: int) -> bytes:
        with self._changed:
            self._changed.wait_for(lambda: len(self.data) >= size or self.closed, timeout=WAIT_S)
            return bytes(self.data)

    def wait_closed(self) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self.closed, timeout=WAIT_S)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # ends the thread's recv; close() alone would not
        except OSError:
            pass  # the server hung up already
        self._thread.join(WAIT_S)
        self.sock.close()


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.002)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1000.0)


@pytest.fixture
def server(clock: FakeClock) -> Iterator[FanoutServer]:
    fanout = FanoutServer("127.0.0.1", 0, queue_max_telegrams=8, stall_timeout_s=60.0, clock=clock)
    fanout.start()
    yield fanout
    fanout.close()


def test_a_stalled_client_never_blocks_the_logger_or_the_others(server: FanoutServer, clock: FakeClock) -> None:
    readers = [Reader(server.address), Reader(server.address)]
    stalled = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # it never reads: its buffers fill fast
    stalled.connect(server.address)
    wait_until(lambda: server.client_count == 3, "three clients")

    sent = bytearray()
    slowest_call_s = 0.0
    for n in range(400):
        raw = telegram(n)
        started = time.perf_counter()
        server(raw, True)
        server(bad_crc(n), False)  # rejected telegrams are not shared
        slowest_call_s = max(slowest_call_s, time.perf_counter() - started)
        sent += raw
        # A meter sends one telegram a second: the healthy clients have it long before the next.
        for reader in readers:
            assert len(reader.wait_for(len(sent))) == len(sent)
    for reader in readers:
        assert reader.wait_for(len(sent)) == bytes(sent)  # every telegram, byte-exact, in order
    # The reader thread only queued: far below the second between two telegrams.
    assert slowest_call_s < 0.05
    # The stalled client's kernel buffers and its queue of 8 filled; the rest was dropped and counted.
    assert server.stats.telegrams_dropped > 0
    assert server.stats.telegrams_sent == 400
    assert server.client_count == 3

    # Still overflowing a minute later (by the injected clock): disconnected. The others stay.
    clock.now_s += 61.0
    server(telegram(400), True)
    sent += telegram(400)
    wait_until(lambda: server.client_count == 2, "the stalled client to be dropped")
    assert server.stats.clients_dropped_stalled == 1
    for reader in readers:
        assert reader.wait_for(len(sent)) == bytes(sent)
        reader.close()
    stalled.close()


def test_a_client_that_catches_up_in_time_stays_and_loses_only_whole_telegrams(
    server: FanoutServer, clock: FakeClock
) -> None:
    slow = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(server.address)
    wait_until(lambda: server.client_count == 1, "the client")
    for n in range(300):
        server(telegram(n), True)
    wait_until(lambda: server.stats.telegrams_dropped > 0, "an overflow")
    clock.now_s += 30.0

    def drain() -> bytes:
        """Read until nothing more comes for 0.2 s: the server has nothing left for this client."""
        received = bytearray()
        slow.settimeout(0.2)
        while True:
            try:
                chunk = slow.recv(65536)
            except TimeoutError:
                return bytes(received)
            assert chunk, "the server hung up"
            received += chunk

    received = drain()
    server(telegram(300), True)  # sent at once: the queue is empty, the overflow is over
    clock.now_s += 40.0  # 70 s after the overflow began, but it did not last
    server(telegram(301), True)
    slow.settimeout(WAIT_S)
    expected_tail = telegram(300) + telegram(301)
    while not received.endswith(expected_tail):
        chunk = slow.recv(65536)
        assert chunk, "the server hung up"
        received += chunk
    assert server.client_count == 1 and server.stats.clients_dropped_stalled == 0
    # Only whole telegrams arrive, in order; the ones missing are exactly the ones counted as dropped.
    frames = [item.raw for item in Framer().feed(received) if isinstance(item, Frame)]
    assert b"".join(frames) == received
    numbers = [all_telegrams.index(frame) for frame in frames]
    assert numbers == sorted(numbers) and numbers[-2:] == [300, 301]
    assert 302 - len(frames) == server.stats.telegrams_dropped
    slow.close()


def test_clients_get_telegrams_from_when_they_connect_and_leaving_is_noticed(server: FanoutServer) -> None:
    server(telegram(0), True)  # nobody listens: nothing is kept
    first = Reader(server.address)
    wait_until(lambda: server.client_count == 1, "the first client")
    server(telegram(1), True)
    assert first.wait_for(len(telegram(1))) == telegram(1)
    second = Reader(server.address)
    wait_until(lambda: server.client_count == 2, "the second client")
    server(telegram(2), True)
    assert first.wait_for(len(telegram(1) + telegram(2))) == telegram(1) + telegram(2)
    assert second.wait_for(len(telegram(2))) == telegram(2)
    first.close()
    wait_until(lambda: server.client_count == 1, "the first client to be gone")
    assert server.stats.clients_disconnected == 1
    server(telegram(3), True)
    assert second.wait_for(len(telegram(2) + telegram(3))) == telegram(2) + telegram(3)
    second.close()


def test_clients_over_the_limit_are_refused(clock: FakeClock) -> None:
    server = FanoutServer("127.0.0.1", 0, max_clients=1, clock=clock)
    server.start()
    try:
        first = Reader(server.address)
        wait_until(lambda: server.client_count == 1, "the first client")
        extra = Reader(server.address)
        assert extra.wait_closed()
        assert server.stats.clients_refused == 1 and server.client_count == 1
        server(telegram(0), True)
        assert first.wait_for(len(telegram(0))) == telegram(0)
        first.close()
        extra.close()
    finally:
        server.close()


def test_listen_addresses_need_a_host() -> None:
    assert parse_listen_address("127.0.0.1:2001") == ("127.0.0.1", 2001)
    assert parse_listen_address("0.0.0.0:2001") == ("0.0.0.0", 2001)
    assert parse_listen_address("[::1]:2001") == ("::1", 2001)
    with pytest.raises(ConfigError, match="needs a host and a port: 127.0.0.1:2001 serves this machine only"):
        parse_listen_address(":2001")
    with pytest.raises(ConfigError, match="needs a host"):
        parse_listen_address("2001")
    with pytest.raises(ConfigError, match="'x' is not a TCP port"):
        parse_listen_address("127.0.0.1:x")
    with pytest.raises(ConfigError, match="'70000' is not a TCP port"):
        parse_listen_address("127.0.0.1:70000")


def test_a_port_in_use_is_a_clear_error(server: FanoutServer) -> None:
    with pytest.raises(ConfigError, match=r"cannot serve telegrams on 127\.0\.0\.1:\d+ .*Fix P1_SERVE_RAW"):
        FanoutServer("127.0.0.1", server.address[1]).start()


def test_run_serves_the_valid_telegrams_it_reads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`run --serve-raw` wired through the feature hook: a client gets the valid telegrams of the source."""
    capture = tmp_path / "capture.txt"
    capture.write_bytes(telegram(0) + bad_crc(1) + telegram(2))
    args = build_parser().parse_args(["run", "--source", f"file:{capture}", "--output", "-", "--serve-raw",
                                      "127.0.0.1:0", "--spool-dir", str(tmp_path / "spool"), "--instance", "t"])
    pipeline, _ = build_pipeline(args)
    (output,) = [o for o in pipeline.outputs if isinstance(o, FanoutOutput)]
    server = output.server
    output.start()  # listening before the pipeline starts, so the client sees every telegram
    client = Reader(server.address)
    wait_until(lambda: server.client_count == 1, "the client")
    pipeline.start()
    assert pipeline.wait(WAIT_S)
    pipeline.join(WAIT_S)
    expected = telegram(0) + telegram(2)
    assert client.wait_for(len(expected)) == expected
    client.close()
    assert not server.listening  # closed with the pipeline
    assert "power,meter=K8EG004046395507,phase=total import_w=200.0,export_w=0.0 1483381204000000000" in capsys.readouterr().out


def test_run_refuses_a_listen_address_without_host(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["run", "--source", "file:/dev/null", "--output", "-", "--serve-raw", ":2001",
                     "--spool-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err == ("p1logger run: --serve-raw ':2001' is not valid: expected HOST:PORT, e.g. "
                                       "127.0.0.1:2001 (this machine) or 0.0.0.0:2001 (the LAN)\n")
