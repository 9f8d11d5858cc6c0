"""`replay` stores what `run` stores, against the real influxd: same series, same fields, same values.

A simulated Belgian meter (capacity data included) for 40 minutes, one
telegram every 2 s, crossing several quarter-hours: `run` on the file into one
database, `replay` of the same file into another, and a replay stopped half-way
and resumed into a third. Every point of every measurement but the logger's own
health must be identical in all three.
"""

from __future__ import annotations

import io
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from helpers.fake_meter import clean_environment
from helpers.influx_servers import InfluxServer

from p1logger import cli
from p1logger.builders import create_builders
from p1logger.commands.replay import ProgressReport
from p1logger.outputs.influx import influx_target
from p1logger.outputs.influx.sink import InfluxSink
from p1logger.pipeline import RecordMaker
from p1logger.replay import Replayer, ReplayState
from p1logger.simulate import PROFILES, MeterModel
from p1logger.timestamps import TimestampParser

START = datetime(2025, 5, 2, 16, 0, tzinfo=timezone.utc)
TELEGRAMS = 1200
STEP_S = 2
CAPACITY_FIELDS = {"demand_kw", "month_peak_kw", "quarter_avg_kw", "rolling_mean_kw", "running_peak_kw",
                   "projected_kw", "shed_kw", "peak_warning", "yearly_cost_eur", "history_peak_kw"}


@pytest.fixture(autouse=True)
def _hermetic(monkeypatch: pytest.MonkeyPatch) -> None:
    clean_environment(monkeypatch)


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = MeterModel(PROFILES["be3"], START, seed=7)
    path = tmp_path_factory.mktemp("capture") / "belgian.txt"
    with path.open("wb") as out:
        out.write(model.telegram())
        for _ in range(TELEGRAMS - 1):
            model.advance_to(model.now + timedelta(seconds=STEP_S))
            out.write(model.telegram())
    return path


def everything(server: InfluxServer, db: str) -> dict[str, list[dict[str, Any]]]:
    series = server.query("SHOW MEASUREMENTS", db)["results"][0].get("series", [])
    names = sorted(row[0] for s in series for row in s["values"] if row[0] != "p1logger")
    return {name: server.rows(db, name) for name in names}


def fields_of(rows: list[dict[str, Any]]) -> set[str]:
    return {key for row in rows for key, value in row.items() if value is not None}


def replay_args(db: str, server: InfluxServer, capture: Path, spool: Path) -> Any:
    return cli.build_parser().parse_args(["replay", str(capture), "--influx-api", "v1", "--influx-url", server.url,
                                          "--influx-bucket", db, "--spool-dir", str(spool)])


@pytest.mark.slow
def test_replay_and_a_resumed_replay_store_exactly_what_run_stores(
    capture: Path, influxd: InfluxServer, tmp_path: Path
) -> None:
    run_db, replay_db, resumed_db = "as_run", "as_replay", "as_resumed"
    for db in (run_db, replay_db, resumed_db):
        influxd.query(f'DROP DATABASE "{db}"')
        influxd.create_database(db)

    assert cli.main(["run", "--source", f"file:{capture}", "--influx-api", "v1", "--influx-url", influxd.url,
                     "--influx-bucket", run_db, "--spool-dir", str(tmp_path / "run"), "--instance", "t"]) == 0
    assert cli.main(["replay", str(capture), "--influx-api", "v1", "--influx-url", influxd.url,
                     "--influx-bucket", replay_db, "--spool-dir", str(tmp_path / "replay")]) == 0

    # Stopped after 500 telegrams (a quarter-hour is open), then resumed by a new replayer: fresh builders.
    stop = threading.Event()

    class StopAt(ProgressReport):
        def update(self, done_bytes: int, read_bytes: int, telegrams: int) -> None:
            if telegrams >= 500:
                stop.set()

    state_path = tmp_path / "resumed" / "state.json"
    for attempt in range(2):
        args = replay_args(resumed_db, influxd, capture, tmp_path / "resumed")
        timestamps = TimestampParser(args.timezone)
        maker = RecordMaker(create_builders(args, timestamps.zone, False))
        sink = InfluxSink(influx_target(args), dead_letter_path=None)
        replayer = Replayer(sink, maker, timestamps, ReplayState(state_path, "d"), batch_max_points=200,
                            stop=stop if attempt == 0 else None,
                            progress=StopAt(1, io.StringIO(), bar=False) if attempt == 0 else None)
        stats = replayer.run([capture])
        sink.close()
        if attempt == 0:
            assert stats.telegrams == 500 and stats.files_done == 0
        else:
            assert stats.telegrams == TELEGRAMS - 500 and stats.files_done == 1

    as_run = everything(influxd, run_db)
    assert set(as_run) == {"capacity", "capacity_history", "current", "energy", "gas", "power", "voltage", "water"}
    assert fields_of(as_run["capacity"]) >= CAPACITY_FIELDS - {"history_peak_kw"} | {"quarter_avg_kw"}
    assert len(as_run["energy"]) == TELEGRAMS
    assert everything(influxd, replay_db) == as_run
    assert everything(influxd, resumed_db) == as_run
