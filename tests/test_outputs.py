"""Several outputs in one run, against real influxd servers: each on its own, none delaying another.

Two InfluxDB 1.x servers (INFLUX_URL with a comma) get the same telegrams from a
live socket meter; one of them is down for part of the run. The other stores
every reading as it comes; the one that was down gets everything from its own
spool once it is back; health reports each apart.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from helpers.fake_meter import (
    DUTCH_DSMR5,
    SocketMeter,
    clean_environment,
    fixture,
    inject_run,
    restamped_series,
    run_argv,
    running,
    spool_lines,
    wait_for,
)
from helpers.influx_servers import InfluxServer

from p1logger import cli
from p1logger.outputs import OutputSpec, output_specs
from p1logger.outputs.lines import LineOutput

RECEIVED_AT_S = 1700000000.25
DUTCH_T0 = 1541509469


@pytest.fixture(autouse=True)
def _hermetic(monkeypatch: pytest.MonkeyPatch) -> None:
    clean_environment(monkeypatch)


def energy_times(server: InfluxServer, db: str) -> list[int]:
    return [row["time"] for row in server.rows(db, "energy")]


@pytest.mark.slow
def test_a_dead_output_never_delays_the_other_and_gets_everything_once_back(
    influxd: InfluxServer, influxd_auth: InfluxServer, influx_auth_db: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    db = influx_auth_db
    influxd.create_database(db)  # the same database name on both
    user, password = influxd_auth.admin or ("", "")
    monkeypatch.setenv("INFLUX_PASSWORD", password)
    inject_run(monkeypatch, wall_clock=lambda: RECEIVED_AT_S)
    meter = SocketMeter()
    telegrams = restamped_series(fixture(DUTCH_DSMR5), 20)
    spool_dir = tmp_path / "spool"
    argv = run_argv(meter.url, f"{influxd.url},{influxd_auth.url}", db, spool_dir, "--influx-username", user,
                    "--flush-interval-s", "0.1", "--watchdog-s", "1000")
    influxd_auth.stop()
    try:
        with running(argv) as pipeline:
            assert [output.name for output in pipeline.outputs] == ["influx", "influx-2"]
            meter.accept()
            for n, telegram in enumerate(telegrams[:10]):
                meter.send(telegram)
                # Each reading reaches the live server while the other is dead: nothing waits for it.
                wait_for(lambda: len(energy_times(influxd, db)) == n + 1, f"telegram {n} in the live server")
            second = pipeline.outputs[1]
            assert isinstance(second, LineOutput)
            wait_for(lambda: second.counters.state == "down", "the dead output to say so")
            assert second.health()["spool_points"] > 0
            influxd_auth.start()
            for telegram in telegrams[10:]:
                meter.send(telegram)
            wait_for(lambda: len(energy_times(influxd_auth, db)) == 20, "everything in the server that came back",
                     timeout_s=30)
            wait_for(lambda: len(energy_times(influxd, db)) == 20, "everything in the live server")
    finally:
        meter.close()
        if not influxd_auth.running:
            influxd_auth.start()

    assert pipeline.failure is None
    expected = [DUTCH_T0 + i for i in range(20)]
    assert energy_times(influxd, db) == expected
    assert energy_times(influxd_auth, db) == expected
    for server in (influxd, influxd_auth):
        assert {m: server.count(db, m) for m in ("energy", "power", "voltage", "current", "gas")} == {
            "energy": 20, "power": 80, "voltage": 60, "current": 60, "gas": 1}
    outputs = pipeline.health.outputs
    assert outputs["influx"]["state"] == "up" and outputs["influx"]["points_spooled"] == 0
    assert outputs["influx-2"]["state"] == "up" and outputs["influx-2"]["points_spooled"] > 0
    assert [m for m in caplog.messages if m.startswith("output influx-2 unavailable")]
    assert not [m for m in caplog.messages if m.startswith("output influx unavailable")]
    assert spool_lines(spool_dir / "influx" / "spool.db") == []
    assert spool_lines(spool_dir / "influx-2" / "spool.db") == []


def test_the_same_influxdb_twice_is_a_configuration_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = run_argv("file:/dev/null", "http://127.0.0.1:1,http://127.0.0.1:1/", "p1", tmp_path / "spool")
    assert cli.main(["run", *argv]) == 2
    assert capsys.readouterr().err == "p1logger run: INFLUX_URL names the same InfluxDB twice: list each one once\n"
    assert not (tmp_path / "spool").exists()


def test_only_stdout_makes_no_spool_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capture = tmp_path / "capture.txt"
    capture.write_bytes(b"".join(restamped_series(fixture(DUTCH_DSMR5), 3)))
    assert cli.main(["run", "--source", f"file:{capture}", "--output", "-", "--spool-dir", str(tmp_path / "spool"),
                     "--instance", "t"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert sum(1 for line in out if line.startswith("energy,")) == 3
    assert sorted(p.name for p in (tmp_path / "spool").rglob("*")) == ["health.json"]


def test_every_output_is_registered_once_with_its_doctor_check() -> None:
    specs = output_specs()
    assert [spec.name for spec in specs] == ["influx", "stdout", "fanout", "archive", "mqtt"]
    assert all(isinstance(spec, OutputSpec) and callable(spec.check) for spec in specs)


def test_replay_writes_into_every_influxdb_of_the_list(
    influxd: InfluxServer, influxd_auth: InfluxServer, influx_auth_db: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    db = influx_auth_db
    influxd.create_database(db)
    user, password = influxd_auth.admin or ("", "")
    monkeypatch.setenv("INFLUX_PASSWORD", password)
    capture = tmp_path / "dutch.txt"
    capture.write_bytes(b"".join(restamped_series(fixture(DUTCH_DSMR5), 5)))
    argv = ["replay", str(capture), "--influx-api", "v1", "--influx-url", f"{influxd.url},{influxd_auth.url}",
            "--influx-bucket", db, "--influx-username", user, "--spool-dir", str(tmp_path / "spool")]
    assert cli.main(argv) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == [f"p1logger replay into {url}: 5 telegrams, 56 points stored; 1 files done, 0 already done before"
                   for url in (influxd.url, influxd_auth.url)]
    for server in (influxd, influxd_auth):
        assert energy_times(server, db) == [DUTCH_T0 + n for n in range(5)]
