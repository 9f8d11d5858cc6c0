"""``p1logger run``, ``doctor`` and ``health`` as a user starts them: separate processes, configured
through the environment, against a real influxd.

What needs a real process is here: exit codes, SIGTERM, what reaches stderr,
and the optional features wired in as they ship. Everything that can run
in-process with injected clocks is in test_pipeline.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from helpers.fake_meter import (
    BELGIAN_3PH,
    DUTCH_DSMR5,
    DUTCH_DSMR22,
    SocketMeter,
    count_by_measurement,
    fixture,
    paced,
    restamped_series,
    spool_lines,
    wait_for,
)
from helpers.processes import StderrLines
from helpers.influx_servers import InfluxServer, V2Proxy, free_port, http_request

from p1logger.health import Health

REPO = Path(__file__).resolve().parent.parent
TOKEN = "tok-CLI-7e1d0c55-DO-NOT-LEAK"
DUTCH_T0 = 1541509469


def cli_env(**settings: str | Path) -> dict[str, str]:
    """The machine's environment without any P1_* or INFLUX_* setting, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("P1_", "INFLUX_"))}
    env.update({k: str(v) for k, v in settings.items()})
    return env


def p1logger(*args: str, env: dict[str, str], timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "p1logger", *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=timeout_s, check=False)


def stored_counts(server: InfluxServer, db: str) -> dict[str, int]:
    series = server.query("SHOW MEASUREMENTS", db)["results"][0].get("series", [])
    return {row[0]: server.count(db, row[0]) for s in series for row in s["values"]}


def log_messages(stderr: str) -> list[str]:
    """The messages of the log lines ("<date> <time> LEVEL logger: message")."""
    return [m.group(1) for m in re.finditer(r"^\S+ \S+ [A-Z]+ [\w.]+: (.*)$", stderr, re.MULTILINE)]


# ------------------------------------------------------------------ a file through the whole CLI


def test_run_from_the_environment_stores_a_file_and_exits_0(
    influxd: InfluxServer, influx_db: str, tmp_path: Path
) -> None:
    source = tmp_path / "dutch.txt"
    source.write_bytes(fixture(DUTCH_DSMR5) + fixture(DUTCH_DSMR22))
    env = cli_env(P1_SOURCE=f"file:{source}", INFLUX_API="v1", INFLUX_URL=influxd.url, INFLUX_BUCKET=influx_db,
                  P1_SPOOL_DIR=tmp_path / "spool", P1_INSTANCE="cli")
    started_s = int(time.time())
    result = p1logger("run", env=env)
    ended_s = int(time.time())

    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    # DSMR 5: 11 points and the gas reading; DSMR 2.2: energy, power, gas; two health lines.
    assert "done: 2 telegrams, 0 rejected, 17 points written, 0 spooled, 0 in the spool, 0 dropped" in log_messages(result.stderr)
    counts = stored_counts(influxd, influx_db)
    health_points = counts.pop("p1logger")
    assert counts == {"current": 3, "energy": 2, "gas": 2, "power": 5, "voltage": 3}
    energy = influxd.rows(influx_db, "energy")
    assert [row["meter"] for row in energy] == ["E0034006810516416", "ZBEV005106844912"]
    assert energy[0]["time"] == DUTCH_T0
    assert started_s <= energy[1]["time"] <= ended_s  # DSMR 2.2 sends no time: the receive time
    assert energy[1]["import_t1_kwh"] == 16719.94
    # Two health lines, one per second they fell in; the last one counts everything.
    assert health_points in (1, 2)
    last = influxd.rows(influx_db, "p1logger")[-1]
    assert (last["instance"], last["telegrams_ok"], last["telegrams_rejected"], last["points_dropped"]) == ("cli", 2, 0, 0)


def test_run_with_the_optional_features_keeps_every_core_point(
    influxd: InfluxServer, influx_db: str, tmp_path: Path
) -> None:
    """The Belgian meter wakes the capacity feature; the core points must all still be there, exactly."""
    source = tmp_path / "belgian.txt"
    source.write_bytes(b"".join(restamped_series(fixture(BELGIAN_3PH), 3)))
    env = cli_env(P1_SOURCE=f"file:{source}", INFLUX_API="v1", INFLUX_URL=influxd.url, INFLUX_BUCKET=influx_db,
                  P1_SPOOL_DIR=tmp_path / "spool", P1_INSTANCE="cli")
    result = p1logger("run", env=env)

    assert result.returncode == 0, result.stderr
    counts = stored_counts(influxd, influx_db)
    assert {name: counts[name] for name in ("energy", "power", "voltage", "current", "gas", "water")} == {
        "energy": 3, "power": 12, "voltage": 9, "current": 9, "gas": 1, "water": 1,
    }
    capacity = {row["time"]: row for row in influxd.rows(influx_db, "capacity")}
    t0 = 1698923748
    for second in range(3):
        assert capacity[t0 + second]["demand_kw"] == 0.052
    assert capacity[1698921900]["month_peak_kw"] == 3.064
    assert {row["month"]: row["history_peak_kw"] for row in influxd.rows(influx_db, "capacity_history")} == {
        "2023-07": 0.0, "2023-08": 1.862, "2023-09": 4.229, "2023-10": 4.927,
    }


# ------------------------------------------------------------------ (e) SIGTERM


@pytest.mark.slow
@pytest.mark.parametrize("database", ["up", "down"])
def test_sigterm_exits_0_within_10_s_with_everything_read_stored_or_spooled(
    database: str, influxd: InfluxServer, influx_db: str, tmp_path: Path
) -> None:
    meter = SocketMeter()
    spool_dir = tmp_path / "spool"
    # Up: nothing is written before SIGTERM (30 s flush), so the flush on SIGTERM does it all.
    # Down: the first write (2 s flush, after every telegram was read) fails and the output
    # waits before its next attempt; SIGTERM comes in that wait: one last try, then the spool.
    url = influxd.url if database == "up" else f"http://127.0.0.1:{free_port()}"
    env = cli_env(P1_SOURCE=meter.url, INFLUX_API="v1", INFLUX_URL=url, INFLUX_BUCKET=influx_db,
                  P1_SPOOL_DIR=spool_dir, P1_INSTANCE="sigterm",
                  P1_FLUSH_INTERVAL_S="30" if database == "up" else "2")
    process = subprocess.Popen([sys.executable, "-m", "p1logger", "run"], env=env, cwd=REPO, text=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = StderrLines(process)
    try:
        meter.accept()
        paced(restamped_series(fixture(DUTCH_DSMR5), 10), meter.send, 20)
        meter.hang_up()
        # The logger sees the hang-up only after it has read everything before it.
        wait_for(lambda: any("source lost" in line for line in stderr.lines), "the logger to notice the hang-up")
        if database == "down":
            wait_for(lambda: any("output influx unavailable" in line for line in stderr.lines),
                     "the first write to fail and wait")
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        returncode = process.wait(timeout=10)
        stopped_in_s = time.monotonic() - started
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        meter.close()

    text = stderr.text()
    assert returncode == 0, text
    assert stopped_in_s < 10
    messages = log_messages(text)
    assert "received SIGTERM; writing or spooling what is in memory" in messages
    stored = stored_counts(influxd, influx_db) if database == "up" else {}
    spooled = count_by_measurement(spool_lines(spool_dir / "influx" / "spool.db"))
    everything = Counter(stored) + spooled
    health_lines = everything.pop("p1logger")
    assert everything == {"energy": 10, "power": 40, "voltage": 30, "current": 30, "gas": 1}
    if database == "up":
        assert spooled == Counter()
        assert health_lines in (1, 2)  # two lines, one point per second they fell in
        assert "done: 10 telegrams, 0 rejected, 113 points written, 0 spooled, 0 in the spool, 0 dropped" in messages
    else:
        assert health_lines == 2  # at start and at the end
        # Every batch was in the spool from the moment it was cut; the failing output said so
        # once, SIGTERM ended its wait, and what it had not sent stays in the spool.
        refused = f"(no answer from {url}: connection refused)"
        assert [m for m in messages if m.startswith(("InfluxDB", "received SIGTERM", "output influx"))] == [
            # Said once: the sink leaves reporting the outage to the output, which knows about the spool.
            (f"output influx unavailable (InfluxDB did not take the write after 1 attempt {refused}; the data is "
             "kept); keeping data in its spool"),
            "received SIGTERM; writing or spooling what is in memory",
            "output influx: 113 points stay in its spool; the next run sends them",
        ]
        assert "done: 10 telegrams, 0 rejected, 0 points written, 113 spooled, 113 in the spool, 0 dropped" in messages


# ------------------------------------------------------------------ (f) configuration errors and secrets


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"INFLUX_API": "v2", "INFLUX_ORG": "home"},
         "p1logger run: no InfluxDB token: set INFLUX_TOKEN or INFLUX_TOKEN_FILE (or INFLUX_API=v1 for InfluxDB 1.x)"),
        ({"INFLUX_API": "v2", "INFLUX_ORG": "home", "INFLUX_TOKEN": TOKEN, "P1_TIMEZONE": "Mars/Olympus_Mons"},
         ("p1logger run: P1_TIMEZONE 'Mars/Olympus_Mons' is not valid: expected an IANA time zone name such as "
          "Europe/Brussels or Europe/Amsterdam")),
        ({"INFLUX_API": "v3", "INFLUX_TOKEN": TOKEN},
         "p1logger run: INFLUX_API 'v3' is not valid: expected one of v2, v1"),
        ({"INFLUX_API": "v2", "INFLUX_TOKEN": TOKEN},
         "p1logger run: no InfluxDB organization: set INFLUX_ORG"),
    ],
    ids=["missing-token", "bad-timezone", "bad-influx-api", "missing-org"],
)
def test_a_configuration_error_is_one_line_saying_what_to_fix(
    settings: dict[str, str], expected: str, tmp_path: Path
) -> None:
    source = tmp_path / "one.txt"
    source.write_bytes(fixture(DUTCH_DSMR5))
    result = p1logger("run", env=cli_env(P1_SOURCE=f"file:{source}", P1_SPOOL_DIR=tmp_path / "spool", **settings))

    assert (result.returncode, result.stdout, result.stderr) == (2, "", expected + "\n")
    assert not (tmp_path / "spool").exists()  # nothing was started


def test_token_appears_in_no_output_or_file(
    v2_proxy: V2Proxy, influxd: InfluxServer, influx_db: str, tmp_path: Path
) -> None:
    """A token the server refuses, debug logging everywhere, run and doctor: the token is never printed."""
    source = tmp_path / "dutch.txt"
    source.write_bytes(b"".join(restamped_series(fixture(DUTCH_DSMR5), 3)))
    spool_dir = tmp_path / "spool"
    env = cli_env(P1_SOURCE=f"file:{source}", INFLUX_API="v2", INFLUX_URL=v2_proxy.url, INFLUX_ORG=v2_proxy.org,
                  INFLUX_BUCKET=influx_db, INFLUX_TOKEN=TOKEN, P1_SPOOL_DIR=spool_dir, P1_LOG_LEVEL="DEBUG")

    run = p1logger("run", env=env)
    doctor = p1logger("doctor", "--wait-s", "5", env=env)

    assert run.returncode == 0, run.stderr
    assert "done: 3 telegrams, 0 rejected, 0 points written, 36 spooled, 36 in the spool, 0 dropped" in log_messages(run.stderr)
    assert v2_proxy.write_statuses() and set(v2_proxy.write_statuses()) == {401}  # tried, never taken
    assert doctor.returncode == 1
    assert ("FIX the API token was not accepted (HTTP 401): create an API token in InfluxDB and configure it"
            in doctor.stdout.splitlines())
    outputs = [run.stdout, run.stderr, doctor.stdout, doctor.stderr]
    outputs += [path.read_text(errors="replace") for path in spool_dir.rglob("*")
                if path.is_file() and not path.name.startswith("spool.db")]
    outputs += spool_lines(spool_dir / "influx" / "spool.db")
    assert len(run.stderr.splitlines()) > 5
    assert [text for text in outputs if TOKEN in text] == []


# ------------------------------------------------------------------ (g) doctor and health


def test_doctor_reports_ok_against_a_real_influxd_and_a_fix_for_a_wrong_database(
    influxd: InfluxServer, influx_db: str, tmp_path: Path
) -> None:
    source = tmp_path / "one.txt"
    source.write_bytes(fixture(DUTCH_DSMR5))
    version = http_request(influxd.http_port, "GET", "/ping").headers["x-influxdb-version"]
    spool_dir = tmp_path / "spool"

    def doctor(database: str) -> subprocess.CompletedProcess[str]:
        return p1logger("doctor", env=cli_env(P1_SOURCE=f"file:{source}", INFLUX_API="v1", INFLUX_URL=influxd.url,
                                             INFLUX_BUCKET=database, P1_SPOOL_DIR=spool_dir))

    good, wrong = doctor(influx_db), doctor("no_such_db")

    def common(database: str) -> list[str]:
        return [
            f"ok  configuration: source file:{source}, outputs influx",
            f"ok  source: {source} sends valid telegrams (meter E0034006810516416)",
            f"ok  InfluxDB: {influxd.url} (v1), database '{database}'",
            f"ok  InfluxDB {version} answers at {influxd.url}",
            "ok  no credentials are needed",
        ]

    # Nothing is created: doctor looks, it does not set anything up.
    spool_note = f"ok  spool: {spool_dir} will be created (in {tmp_path}, which is writable)"
    assert (good.returncode, good.stderr) == (0, "")
    assert good.stdout.splitlines() == [
        *common(influx_db), f"ok  database '{influx_db}' exists", spool_note, "all good: p1logger run is ready",
    ]
    assert (wrong.returncode, wrong.stderr) == (1, "")
    assert wrong.stdout.splitlines() == [
        *common("no_such_db"),
        ("FIX database 'no_such_db' does not exist (or this user cannot see it): "
         'run CREATE DATABASE "no_such_db" or fix the name'),
        spool_note, "1 thing(s) to fix, see FIX lines above",
    ]
    assert not spool_dir.exists()


@pytest.mark.slow
def test_health_exit_codes_follow_the_state_file(influxd: InfluxServer, influx_db: str, tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    env = cli_env(P1_SPOOL_DIR=spool_dir)

    missing = p1logger("health", env=env)
    assert (missing.returncode, missing.stdout) == (
        1, f"no health state at {spool_dir / 'health.json'}: is p1logger run running with this P1_SPOOL_DIR?\n")

    # Fresh: the state a real run just left. (The child reads its own clock: ages are
    # checked to the second they may have moved while it started.)
    source = tmp_path / "one.txt"
    source.write_bytes(fixture(DUTCH_DSMR5))
    run_env = cli_env(P1_SOURCE=f"file:{source}", INFLUX_API="v1", INFLUX_URL=influxd.url, INFLUX_BUCKET=influx_db,
                      P1_SPOOL_DIR=spool_dir)
    assert p1logger("run", env=run_env).returncode == 0
    # The run ended (its file was done): a clean stop is not "ok", whatever the last telegram's age.
    stopped = p1logger("health", env=env)
    assert stopped.returncode == 1
    assert seconds_in(stopped.stdout, r"the logger is stopped \(it stopped (\d+) s ago\): start p1logger run\n") <= 5
    state = json.loads((spool_dir / "health.json").read_text(encoding="utf-8"))
    now = time.time()
    running = Health(clock=lambda: now, started_at=now - 60, last_telegram_at=state["last_telegram_at"],
                     outputs=state["outputs"])
    running.write_state(spool_dir)
    fresh = p1logger("health", env=env)
    assert fresh.returncode == 0
    assert seconds_in(fresh.stdout, r"ok: last telegram (\d+) s ago, database up\n") <= 5
    running.implausible_values, running.meter_clock_repeats = 2, 19
    running.write_state(spool_dir)
    doubtful = p1logger("health", env=env)
    assert doubtful.returncode == 0
    assert doubtful.stdout.endswith(
        "database up; 2 physically impossible readings stored (a faulty meter?); 19 telegrams with a stuck or "
        "backward meter clock, stored at the receive time\n")

    # Stale: a logger that stopped updating its state an hour ago.
    hour_ago = time.time() - 3600
    Health(clock=lambda: hour_ago).write_state(spool_dir)
    stale = p1logger("health", env=env)
    assert stale.returncode == 1
    assert 3600 <= seconds_in(stale.stdout, r"the logger has not updated its state for (\d+) s: it is stuck or stopped\n") <= 3605

    # Fresh telegrams, but the database has refused writes for 5 minutes.
    now = time.time()
    down = Health(clock=lambda: now, started_at=now - 600, last_telegram_at=now, outputs={
        "influx": {"state": "down", "last_write_ok_at": now - 300, "last_write_error": "connection refused",
                   "spool_points": 4321},
        "stdout": {"state": "up", "last_write_ok_at": now},
    })
    down.write_state(spool_dir)
    failing = p1logger("health", env=env)
    assert failing.returncode == 1
    assert 300 <= seconds_in(failing.stdout, r"output influx: writes failing for (\d+) s \(connection refused\); "
                                             r"4321 points safe in the spool\n") <= 305
    assert p1logger("health", "--max-age-s", "400", env=env).returncode == 0


def seconds_in(text: str, pattern: str) -> int:
    """The whole line must match; returns the number of seconds it names."""
    match = re.fullmatch(pattern, text)
    assert match is not None, text
    return int(match.group(1))
