"""A meter for the tests and benchmarks (real telegrams into a pseudo-terminal or a TCP socket),
and the few helpers that drive ``p1logger run`` in-process with injected clocks and sleeps.

`restamp` moves a fixture's 0-0:1.0.0 time and recomputes its CRC, leaving every
value as it was, so each telegram of a run is distinct while its points can
still be worked out by hand. `PtyMeter` plays a P1 cable: the logger opens a
symlink (like /dev/serial/by-id/...) that points at a pseudo-terminal, and the
meter can be unplugged and plugged in again under the same name. `SocketMeter`
plays ser2net or a P1 WiFi dongle (``socket://127.0.0.1:PORT``).

`inject_run` swaps the clocks and sleeps of ``p1logger run`` through
monkeypatch, so a test drives the real `build_pipeline` and `main` without
waiting on real time; `running` runs such a pipeline on a live source.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import threading
import time
import tty
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from p1logger import cli
from p1logger.commands import run as run_command
from p1logger.crc import crc16
from p1logger.pipeline import Pipeline
from p1logger.spool import Spool

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

# Belgian e-MUCS 1.7.1, three phases, gas on channel 1, water on channel 2, peak and 13-month history.
BELGIAN_3PH = "ndokter_dsmr_parser__fluvius_v171_alt.txt"
# Dutch DSMR 5.0 (Iskra AM550), three phases, gas on channel 1.
DUTCH_DSMR5 = "athombv_node_dsmr_parser__iskra_am550_dsmr50.txt"
# Dutch DSMR 2.2 (Iskra MT382): no telegram time, no CRC, gas in the old two-line form.
DUTCH_DSMR22 = "nielsbasjes_dsmr_tools__iskra_mt382_dsmr22_a.txt"

_TIME = re.compile(rb"^0-0:1\.0\.0\((\d{12})([SW])\)", re.MULTILINE)
_END = b"\r\n!"
# A UART at 115200 baud moves about 11.5 bytes per millisecond; a USB adapter hands them on in small packets.
UART_CHUNK_BYTES = 64


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def restamp(template: bytes, seconds: int) -> bytes:
    """``template`` with its telegram time ``seconds`` later and a new CRC; nothing else changes.

    The S/W flag is kept, so the result must not cross a DST change.
    """
    body = template[: template.index(_END) + len(_END)]
    match = _TIME.search(body)
    if match is None:
        raise ValueError("the template has no 0-0:1.0.0 time to move")
    moved = datetime.strptime(match.group(1).decode(), "%y%m%d%H%M%S") + timedelta(seconds=seconds)
    body = body[: match.start(1)] + moved.strftime("%y%m%d%H%M%S").encode() + body[match.end(1) :]
    return body + f"{crc16(body):04X}".encode() + b"\r\n"


def corrupt(telegram: bytes) -> bytes:
    """The same telegram with one digit of the first voltage changed, so its CRC no longer matches."""
    marker = b"1-0:32.7.0("
    at = telegram.index(marker) + len(marker)
    digit = telegram[at : at + 1]
    return telegram[:at] + (b"1" if digit != b"1" else b"2") + telegram[at + 1 :]


def restamped_series(template: bytes, count: int, first_offset_s: int = 0) -> list[bytes]:
    return [restamp(template, first_offset_s + i) for i in range(count)]


class PtyMeter:
    """A pseudo-terminal behind a stable symlink, written in UART-sized chunks.

    `plug()` makes a new pty and points the link at it; `unplug()` closes it and
    removes the link, as udev does when a USB adapter is pulled out.
    """

    def __init__(self, link: Path, chunk_bytes: int = UART_CHUNK_BYTES, chunk_gap_s: float = 0.001) -> None:
        self.link = link
        self.chunk_bytes = chunk_bytes
        self.chunk_gap_s = chunk_gap_s
        self.device: str | None = None
        self.plugs = 0
        self._master: int | None = None
        self._slave: int | None = None
        # A test may plug from the logger's thread (in a reconnect wait) while its own thread is
        # still unplugging: the two must not interleave.
        self._plugging = threading.Lock()

    def plug(self) -> str:
        with self._plugging:
            return self._plug()

    def _plug(self) -> str:
        if self._master is not None:
            raise RuntimeError("already plugged in")
        master, slave = os.openpty()
        # Raw before the logger opens it: no echo back into the master, no CR/LF rewriting.
        tty.setraw(slave)
        self._master, self._slave = master, slave
        self.device = os.ttyname(slave)
        temporary = self.link.with_name(self.link.name + ".new")
        temporary.unlink(missing_ok=True)
        temporary.symlink_to(self.device)
        os.replace(temporary, self.link)
        self.plugs += 1
        return self.device

    def unplug(self) -> None:
        with self._plugging:
            self.link.unlink(missing_ok=True)
            for fd in (self._master, self._slave):
                if fd is not None:
                    os.close(fd)
            self._master = self._slave = None
            self.device = None

    def send(self, telegram: bytes) -> None:
        """One telegram, dribbled in chunks as a UART delivers it."""
        if self._master is None:
            raise RuntimeError("not plugged in")
        began = time.monotonic()
        for n, start in enumerate(range(0, len(telegram), self.chunk_bytes), 1):
            os.write(self._master, telegram[start : start + self.chunk_bytes])
            if self.chunk_gap_s:
                # Against the telegram's own start, as a UART keeps the line rate: a sleep that overruns on a
                # busy machine must not stretch the telegram by the overrun of every chunk after it.
                delay_s = began + n * self.chunk_gap_s - time.monotonic()
                if delay_s > 0:
                    time.sleep(delay_s)

    def close(self) -> None:
        self.unplug()


@contextmanager
def flooded_pty(chunk: bytes, gap_s: float) -> Iterator[str]:
    """A pseudo-terminal fed ``chunk`` every ``gap_s`` until the block ends; yields the device path.

    The feeder never blocks: a reader that stops early leaves the pty's buffer full, and a blocking write
    into it would never return, so the feeder could never be joined (this hung CI once).
    """
    controller, device = os.openpty()
    tty.setraw(device)
    os.set_blocking(controller, False)
    stop = threading.Event()

    def feed() -> None:
        pending = b""
        while not stop.is_set():
            # The rest of a chunk that did not fit goes first, so the line never carries a cut telegram.
            pending = pending or chunk
            try:
                pending = pending[os.write(controller, pending):]
            except BlockingIOError:
                pass  # full: the reader is behind, or done
            except OSError:
                return
            stop.wait(gap_s)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        yield os.ttyname(device)
    finally:
        stop.set()
        feeder.join(timeout=10)
        os.close(controller)
        os.close(device)
    assert not feeder.is_alive(), "the pty feeder did not stop"


class SocketMeter:
    """A TCP server on 127.0.0.1 that sends telegrams to the one client that connects (ser2net-like)."""

    def __init__(self) -> None:
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(4)
        self.port: int = self._server.getsockname()[1]
        self.url = f"socket://127.0.0.1:{self.port}"
        self._client: socket.socket | None = None

    def accept(self, timeout_s: float = 10.0) -> None:
        self._server.settimeout(timeout_s)
        client, _ = self._server.accept()
        # pyserial empties its input right after connecting; what arrives before that is lost,
        # as on a real line. Give the logger that moment before the first byte.
        time.sleep(0.1)
        self._client = client

    def send(self, telegram: bytes) -> None:
        if self._client is None:
            raise RuntimeError("no client connected")
        self._client.sendall(telegram)

    def hang_up(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def close(self) -> None:
        self.hang_up()
        self._server.close()


def paced(telegrams: Iterable[bytes], send: Callable[[bytes], None], per_second: float,
          clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> int:
    """Send at a fixed rate (the schedule does not drift with slow sends); returns how many were sent."""
    start = clock()
    sent = 0
    for telegram in telegrams:
        delay_s = start + sent / per_second - clock()
        if delay_s > 0:
            sleep(delay_s)
        send(telegram)
        sent += 1
    return sent


# ---------------------------------------------------------------- driving p1logger run in-process


class Sleeps(list[float]):
    """An injected sleep: records each wait and returns at once; `hook(n)` runs on the n-th call."""

    def __init__(self, hook: Callable[[int], None] | None = None) -> None:
        super().__init__()
        self.hook = hook

    def __call__(self, seconds: float) -> None:
        self.append(seconds)
        if self.hook is not None:
            self.hook(len(self))


class ManualClock:
    """A monotonic clock that moves only when the test says so."""

    def __init__(self, start_s: float = 1000.0) -> None:
        self.now_s = start_s

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


def wait_for(predicate: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    """Poll for something another thread or process makes true; fail saying `what` did not happen."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.01)


def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove every P1_* and INFLUX_* setting of the machine, so only what a test sets counts."""
    for name in list(os.environ):
        if name.startswith(("P1_", "INFLUX_")) and not name.startswith(("P1_TEST_", "P1_INFLUXD")):
            monkeypatch.delenv(name)


def run_argv(source: str, influx_url: str, bucket: str, spool_dir: Path, *extra: str) -> list[str]:
    """`p1logger run` flags for a v1 target (InfluxDB 1.x needs no token)."""
    return [
        "--source", source, "--influx-api", "v1", "--influx-url", influx_url, "--influx-bucket", bucket,
        "--spool-dir", str(spool_dir), "--instance", "test", *extra,
    ]


def parse_run(argv: Sequence[str]) -> argparse.Namespace:
    return cli.build_parser().parse_args(["run", *argv])


# Retry waits of the outputs in these runs: short, so an outage test takes a fraction of a second.
TEST_RETRY_INITIAL_S = 0.01
TEST_RETRY_MAX_S = 0.05
_BUILD_PIPELINE = run_command.build_pipeline


def inject_run(
    monkeypatch: pytest.MonkeyPatch,
    *,
    builders: Sequence[str] = ("points",),
    extra_builders: Sequence[Any] = (),
    context: dict[str, Any] | None = None,
    **pipeline_kwargs: Any,
) -> None:
    """Make ``p1logger run`` use these clocks and sleeps (`Pipeline` keyword arguments) and short retry waits.

    Only the points builder runs by default: these tests check the core data
    model exactly, and each other builder's points are tested with it.
    ``extra_builders`` are added after the registered ones.
    """
    overrides = {"retry_initial_s": TEST_RETRY_INITIAL_S, "retry_max_s": TEST_RETRY_MAX_S, **(context or {})}

    def build(args: argparse.Namespace, shutdown: Any = None) -> tuple[Pipeline, Any]:
        pipeline, run_context = _BUILD_PIPELINE(args, shutdown, builder_names=builders, context_overrides=overrides,
                                                pipeline_overrides=pipeline_kwargs)
        pipeline.maker.builders.extend(extra_builders)
        return pipeline, run_context

    monkeypatch.setattr(run_command, "build_pipeline", build)


@contextmanager
def running(argv: Sequence[str]) -> Iterator[Pipeline]:
    """`build_pipeline` on parsed `run` flags, started; on exit stopped, flushed and closed like `main` does."""
    pipeline, _ = run_command.build_pipeline(parse_run(argv))
    pipeline.start()
    try:
        yield pipeline
    finally:
        pipeline.stop()
        pipeline.wait(15.0)
        pipeline.join(15.0)


def spool_lines(path: Path) -> list[str]:
    """Every line waiting in a spool file, oldest first (the spool is emptied)."""
    lines: list[str] = []
    with Spool(path) as spool:
        while (batch := spool.oldest()) is not None:
            lines.extend(batch.lines)
            spool.ack(batch.id)
    return lines


def count_by_measurement(lines: Iterable[str]) -> Counter[str]:
    return Counter(line.split(",", 1)[0].split(" ", 1)[0] for line in lines)
