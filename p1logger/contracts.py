"""The types every room of p1logger shares: what an input, a builder and an output promise.

No I/O here, and nothing that imports an input or an output: this module is the
meeting point, so that ``inputs/``, ``outputs/``, the writer (``pipeline.py``)
and ``commands/`` depend on it and not on each other.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol, runtime_checkable
from zoneinfo import ZoneInfo

from p1logger.decode import Telegram

# A builder's derived state, by figure name (e.g. "rolling_mean_kw" -> 3.2).
Figure = float | int | bool | str | None
Figures = Mapping[str, Figure]


# ------------------------------------------------------------------ inputs


class Source(Protocol):
    """Where telegram bytes come from: a serial port, a socket, a file, the simulator."""

    description: str

    def read(self) -> bytes:
        """Some bytes; b"" when nothing arrived within the read timeout.  EOFError at the end of a file."""
        ...

    def close(self) -> None: ...


# ------------------------------------------------------------------ builders


class Builder(Protocol):
    """Turns a telegram into line protocol (the points, the capacity tracker, energy cost...).

    ``build`` is called once per telegram by the writer, in order; the lines it
    returns end with their timestamp in whole seconds. ``figures`` is its latest
    derived state (None before it has any) for outputs that publish state.
    """

    name: str

    def build(self, telegram: Telegram, received_at_s: float) -> list[str]: ...

    def figures(self) -> Figures | None: ...


@dataclass(frozen=True)
class Record:
    """One decoded telegram as every output sees it; built once by the writer."""

    telegram: Telegram
    received_at_s: float
    time_s: int  # the timestamp of its main points (meter clock, or receive time)
    lines: tuple[str, ...]  # line protocol from every builder, in builder order
    figures: Mapping[str, Figures] = field(default_factory=dict)  # builder name -> its figures


# ------------------------------------------------------------------ outputs


class WriteKind(enum.Enum):
    OK = "ok"  # every line stored
    REJECTED = "rejected"  # some lines refused for good (dead-lettered), the others stored
    TRANSIENT = "transient"  # unreachable, overloaded or timing out: keep
    AUTH = "auth"  # 401/403, token or credentials wrong: keep
    NOT_FOUND = "not_found"  # 404, bucket/org/database missing: keep
    UNEXPECTED = "unexpected"  # a status the server is not known to send: keep


@dataclass(frozen=True)
class WriteResult:
    kind: WriteKind
    points_written: int
    points_rejected: int
    kept_lines: tuple[str, ...] = field(repr=False)
    message: str
    latency_ms: float
    retry_after_s: float | None = None  # the destination asked to wait this long before the next try

    @property
    def points_kept(self) -> int:
        """Points the caller must keep (spool) and send again later."""
        return len(self.kept_lines)

    @property
    def ok(self) -> bool:
        return self.kind is WriteKind.OK

    @property
    def delivered(self) -> bool:
        """Nothing is left to send: stored, or refused for good."""
        return self.kind in (WriteKind.OK, WriteKind.REJECTED)


class LineWriter(Protocol):
    """Sends one batch of line protocol somewhere (InfluxDB, stdout); what `LineOutput` drives."""

    def write(self, lines: Sequence[str], max_attempts: int | None = None) -> WriteResult: ...

    def close(self) -> None: ...


@runtime_checkable
class SplitLineWriter(LineWriter, Protocol):
    """A `LineWriter` that can send a batch now and read its answer later (InfluxDB's HTTP).

    ``begin`` sends one attempt and returns at once; ``finish`` then reports it as
    ``write(lines, max_attempts=1)`` would. `LineOutput` uses it for a live second's
    batch, whose answer it reads at the next flush instead of waking to wait for it.
    """

    def begin(self, lines: Sequence[str]) -> None: ...

    def finish(self) -> WriteResult: ...


@runtime_checkable
class Output(Protocol):
    """Where records go. Each output runs on its own; a slow or dead one never delays another.

    ``submit`` is called by the writer thread for every record and must never
    block it (bounded memory, drops counted). ``observe_raw`` is called by the
    reader thread for every framed telegram, valid or not (archive, fan-out);
    most outputs ignore it. ``close`` writes or spools what the output holds
    within ``budget_s`` and joins its threads. ``health`` is its own counters.
    """

    name: str

    def start(self) -> None: ...

    def submit(self, record: Record) -> None: ...

    def submit_health(self, snapshot: Mapping[str, object], lines: Sequence[str]) -> None: ...

    def observe_raw(self, raw: bytes, valid: bool, received_at_s: float) -> None: ...

    def close(self, budget_s: float | None) -> None: ...

    def health(self) -> Mapping[str, object]: ...


class Check(NamedTuple):
    """One line of ``p1logger doctor``: did it pass, and what was found or what to fix."""

    ok: bool
    message: str


@dataclass
class RunContext:
    """What an output or builder gets when it is created for ``run``.

    ``settings`` is the parsed command line (every flag's argparse dest).
    ``spool_dir`` is the root; an output keeps its files in ``output_dir(name)``.
    ``shutdown`` is set when the logger stops (an output may set it too, e.g.
    when standard output goes away).
    """

    settings: Any
    zone: ZoneInfo
    spool_dir: Path
    shutdown: threading.Event
    live: bool = True  # the source is a meter (cannot wait); False for a file, which can
    flush_interval_s: float = 1.0
    batch_max_points: int = 5000
    spool_max_bytes: int = 1 << 30
    retry_initial_s: float = 1.0  # first wait after a failed write; doubles up to retry_max_s
    retry_max_s: float = 10.0  # also how often a destination that is down is tried again
    clock: Callable[[], float] | None = None  # monotonic; None: time.monotonic
    wall_clock: Callable[[], float] | None = None  # None: time.time
    sleep: Callable[[float], None] | None = None  # backoff waits; None: wait on shutdown

    def output_dir(self, name: str) -> Path:
        return self.spool_dir / name
