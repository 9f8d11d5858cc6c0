"""The logger's own health: counters shared by the threads, and a state file.

The state file (``health.json`` in the spool directory) lets ``p1logger health``
(the Docker HEALTHCHECK) and people see from outside whether telegrams are
arriving and whether each output's writes succeed (``outputs``: one entry per
output, with its own counters; the top-level write figures sum them up).
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

STATE_FILE = "health.json"


@dataclass
class Health:
    """Counters the reader and writer threads update; plain ints are atomic enough under the GIL."""

    clock: Callable[[], float] = field(default=time.time, repr=False)
    started_at: float = 0.0
    telegrams_ok: int = 0
    telegrams_rejected: int = 0
    telegrams_dropped: int = 0  # live queue full
    queue_depth: int = 0
    last_telegram_at: float | None = None
    source_state: str = "starting"
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> that output's health()
    # Readings that passed their CRC but look wrong: kept, and counted here (guards.py).
    meter_clock_repeats: int = 0
    meter_clock_backsteps: int = 0
    implausible_values: int = 0
    stopped_at: float | None = None  # set by a clean stop: the logger is not running
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if not self.started_at:
            self.started_at = self.clock()

    def _sum(self, key: str) -> Any:
        return sum(output.get(key) or 0 for output in self.outputs.values())

    @property
    def points_written(self) -> int:
        return int(self._sum("points_written"))

    @property
    def points_spooled(self) -> int:
        return int(self._sum("points_spooled"))

    @property
    def points_dropped(self) -> int:
        """Lost for good: rejected by a destination, or dropped by a full queue or spool."""
        return int(self._sum("points_dropped") + self._sum("points_rejected"))

    @property
    def spool_points(self) -> int:
        return int(self._sum("spool_points") + self._sum("memory_points"))

    @property
    def write_latency_ms(self) -> float:
        return float(max((output.get("write_latency_ms") or 0.0 for output in self.outputs.values()), default=0.0))

    def line_outputs(self) -> dict[str, dict[str, Any]]:
        """The outputs that write (they have a state: up or down)."""
        return {name: output for name, output in self.outputs.items() if "state" in output}

    def database_outputs(self) -> dict[str, dict[str, Any]]:
        """The outputs that store the readings (they keep a spool): InfluxDB, not a live feed such as MQTT."""
        return {name: output for name, output in self.line_outputs().items() if "spool_points" in output}

    @property
    def database_state(self) -> str:
        states = {output.get("state") for output in self.database_outputs().values()}
        return "down" if "down" in states else "up" if "up" in states else "unknown"

    def last_telegram_age_s(self) -> float:
        reference = self.last_telegram_at if self.last_telegram_at is not None else self.started_at
        return max(0.0, self.clock() - reference)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            data = {f.name: getattr(self, f.name) for f in fields(self) if f.repr}
        data["outputs"] = {name: dict(output) for name, output in self.outputs.items()}
        data["updated_at"] = self.clock()
        data["last_telegram_age_s"] = self.last_telegram_age_s()
        for name in ("points_written", "points_spooled", "points_dropped", "spool_points", "write_latency_ms",
                     "database_state"):
            data[name] = getattr(self, name)
        return data

    def write_state(self, directory: Path) -> None:
        """Atomically replace the state file, so a reader never sees half of it."""
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / STATE_FILE
        temporary = directory / f".{STATE_FILE}.{os.getpid()}"
        temporary.write_text(json.dumps(self.snapshot(), indent=1), encoding="utf-8")
        os.replace(temporary, target)


def check_state(directory: Path, max_age_s: float, now: float | None = None) -> tuple[bool, str]:
    """Is the logger healthy, judging by its state file?  (ok, one line for people)."""
    path = directory / STATE_FILE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return False, f"no health state at {path}: is p1logger run running with this P1_SPOOL_DIR?"
    except (OSError, ValueError) as exc:
        return False, f"cannot read {path}: {exc}"
    now = time.time() if now is None else now
    stopped_at = state.get("stopped_at")
    if stopped_at is not None:
        return False, (f"the logger is stopped (it stopped {max(0.0, now - float(stopped_at)):.0f} s ago): "
                       "start p1logger run")
    updated_age_s = now - float(state.get("updated_at", 0))
    if updated_age_s > max_age_s:
        return False, f"the logger has not updated its state for {updated_age_s:.0f} s: it is stuck or stopped"
    telegram_at = state.get("last_telegram_at")
    if telegram_at is None:
        started_age_s = now - float(state.get("started_at", now))
        if started_age_s > max_age_s:
            return False, f"no valid telegram since start {started_age_s:.0f} s ago (source: {state.get('source_state')})"
        return True, "starting: waiting for the first telegram"
    telegram_age_s = now - float(telegram_at)
    if telegram_age_s > max_age_s:
        return False, f"last valid telegram {telegram_age_s:.0f} s ago (source: {state.get('source_state')})"
    outputs = state.get("outputs")
    if not isinstance(outputs, dict):  # a state file from before outputs had their own entries
        outputs = {"database": state}
    notes = []
    for name, output in sorted(outputs.items()):
        if not isinstance(output, dict) or output.get("state", output.get("database_state")) not in ("down", "failed"):
            continue
        last_ok = output.get("last_write_ok_at") or state.get("started_at", now)
        down_s = now - float(last_ok)
        if "dropping" in output:
            # A live feed (MQTT) keeps what it misses in a bounded backlog, and the database has it all anyway:
            # while that backlog has room nothing is lost, and restarting the logger would not bring the broker
            # back. Only once messages are being dropped is it the user's problem.
            if output["dropping"] and down_s > max_age_s:
                stored = "; the database still gets every reading" if state.get("database_state") == "up" else ""
                return False, (f"output {name}: {output.get('state')} for {down_s:.0f} s "
                               f"({output.get('last_write_error')}) and its backlog is full: new messages are "
                               f"dropped ({output.get('dropped', 0)} so far){stored}")
            notes.append(f"; output {name} {output.get('state')} for {down_s:.0f} s "
                         f"({output.get('backlog', 0)} messages wait for it)")
            continue
        # The database: its readings are safe in the spool, but a database that takes nothing for this long
        # means dashboards stand still, which is what a health check is watched for.
        if down_s > max_age_s:
            return False, (f"output {name}: writes failing for {down_s:.0f} s ({output.get('last_write_error')}); "
                           f"{output.get('spool_points', 0)} points safe in the spool")
    return True, (f"ok: last telegram {telegram_age_s:.0f} s ago, database {state.get('database_state')}"
                  + "".join(notes) + _doubts(state))


def _doubts(state: dict[str, Any]) -> str:
    """Data the meter sent that is stored but suspect: worth a look, not a failure."""
    notes = []
    if state.get("implausible_values"):
        notes.append(f"{state['implausible_values']} physically impossible readings stored (a faulty meter?)")
    clock = int(state.get("meter_clock_repeats") or 0) + int(state.get("meter_clock_backsteps") or 0)
    if clock:
        notes.append(f"{clock} telegrams with a stuck or backward meter clock, stored at the receive time")
    return "".join(f"; {note}" for note in notes)
