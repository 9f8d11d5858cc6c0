"""Encrypted meters through the command line: dump, run, record, replay and doctor as a user starts them,
against a real influxd; and the keys never shown anywhere."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from helpers.influx_servers import InfluxServer
from test_run_cli import cli_env, log_messages, p1logger, stored_counts

KEY = "8A0B1C2D3E4F50617283940A1B2C3D4E"
AUTH = "00112233445566778899AABBCCDDEEFF"
WRONG = "FFEEDDCCBBAA99887766554433221100"
START = "2025-03-04T05:06:00+00:00"
COUNT = 20
SECRETS = (KEY, KEY.lower(), WRONG, WRONG.lower())


def simulated(tmp_path: Path, name: str, *extra: str) -> Path:
    """The simulator's output, as bytes (encrypted frames are binary)."""
    path = tmp_path / name
    with open(path, "wb") as out:
        result = subprocess.run([sys.executable, "-m", "p1logger", "simulate", "--count", str(COUNT), "--speed", "10000",
                                 "--start", START, *extra], env=cli_env(), stdout=out, stderr=subprocess.PIPE,
                                cwd=Path(__file__).resolve().parent.parent, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return path


def without_secrets(*texts: str) -> list[str]:
    return [secret for secret in SECRETS for text in texts if secret in text]


def test_dump_of_encrypted_frames_prints_the_decoded_telegrams(tmp_path: Path) -> None:
    plain = simulated(tmp_path, "plain.txt")
    frames = simulated(tmp_path, "frames.bin", "--encryption-key", KEY)
    assert frames.read_bytes()[:2] == b"\xdb\x08" and b"1-0:1.8.1" not in frames.read_bytes()

    expected = p1logger("dump", "--input", str(plain), "--format", "json", env=cli_env())
    decrypted = p1logger("dump", "--decryption-key", KEY, "--input", str(frames), "--format", "json", env=cli_env())
    from_env = p1logger("dump", "--input", str(frames), "--format", "json", env=cli_env(P1_DECRYPTION_KEY=KEY))

    assert (decrypted.returncode, decrypted.stderr) == (0, "")
    lines = decrypted.stdout.splitlines()
    assert len(lines) == COUNT
    assert [json.loads(line)["fields"]["1-0:1.8.1"] for line in lines][0] == json.loads(
        expected.stdout.splitlines()[0])["fields"]["1-0:1.8.1"]
    assert decrypted.stdout == expected.stdout == from_env.stdout


def test_dump_with_an_authentication_key_checks_the_tag(tmp_path: Path) -> None:
    frames = simulated(tmp_path, "frames.bin", "--encryption-key", KEY, "--authentication-key", AUTH)
    good = p1logger("dump", "--input", str(frames), "--format", "json", env=cli_env(P1_DECRYPTION_KEY=KEY,
                                                                                   P1_AUTHENTICATION_KEY=AUTH))
    bad = p1logger("dump", "--input", str(frames), env=cli_env(P1_DECRYPTION_KEY=KEY, P1_AUTHENTICATION_KEY=WRONG))
    assert (good.returncode, len(good.stdout.splitlines())) == (0, COUNT)
    assert bad.returncode == 1
    assert bad.stderr.splitlines() == [
        "encrypted frame rejected: decryption failed: check P1_DECRYPTION_KEY and P1_AUTHENTICATION_KEY "
        "(the GCM tag does not match)",
        f"p1logger dump: 0 valid, {COUNT} rejected ({COUNT} decrypt)",
        f"p1logger dump: no valid telegram in {frames.stat().st_size} bytes; decryption failed: check P1_DECRYPTION_KEY",
    ]
    assert without_secrets(bad.stdout, bad.stderr) == []


def test_dump_without_a_key_says_the_frames_are_encrypted(tmp_path: Path) -> None:
    frames = simulated(tmp_path, "frames.bin", "--encryption-key", KEY)
    result = p1logger("dump", "--input", str(frames), env=cli_env())
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        f"p1logger dump: no valid telegram in {frames.stat().st_size} bytes; the meter sends encrypted frames "
        "(Luxembourg Smarty, Austrian Sagemcom): set P1_DECRYPTION_KEY (or --decryption-key) to the key from your "
        "grid operator")


@pytest.mark.parametrize("command", ["run", "dump", "record", "replay", "doctor", "capacity"])
@pytest.mark.parametrize("how", ["flag", "env", "file"])
def test_a_malformed_key_stops_at_start_up_with_one_line(command: str, how: str, tmp_path: Path) -> None:
    bad = KEY[:-1] + "Z"
    key_file = tmp_path / "key"
    key_file.write_text(bad + "\n")
    source = tmp_path / "in.txt"
    source.write_bytes(b"")
    args = {"run": ["run", "--source", f"file:{source}"], "dump": ["dump", "--input", str(source)],
            "record": ["record", "--input", str(source), str(tmp_path / "out.txt")],
            "replay": ["replay", str(source)], "doctor": ["doctor", "--source", f"file:{source}"],
            "capacity": ["capacity", "--input", str(source)]}[command]
    settings: dict[str, str | Path] = {"INFLUX_API": "v1", "P1_SPOOL_DIR": tmp_path / "spool"}
    if how == "flag":
        args += ["--decryption-key", bad]
        setting = "--decryption-key"
    elif how == "env":
        settings["P1_DECRYPTION_KEY"] = bad
        setting = "P1_DECRYPTION_KEY"
    else:
        settings["P1_DECRYPTION_KEY_FILE"] = key_file
        setting = "P1_DECRYPTION_KEY_FILE"
    result = p1logger(*args, env=cli_env(**settings))
    message = f"{setting} is not valid: expected a key of 32 hex digits (16 bytes, as the grid operator gives it)"
    if command == "doctor" and how != "flag":  # doctor reports, in its own format, and goes on to nothing else
        assert (result.returncode, result.stdout) == (1, f"FIX configuration: {message}\n")
    else:
        assert (result.returncode, result.stdout, result.stderr) == (2, "", f"p1logger {command}: {message}\n")
    assert bad not in result.stdout + result.stderr
    assert not (tmp_path / "out.txt").exists()


@pytest.mark.parametrize("command", ["run", "dump", "record", "replay", "doctor", "capacity", "simulate"])
def test_help_never_shows_a_key(command: str) -> None:
    result = p1logger(command, "--help", env=cli_env(P1_DECRYPTION_KEY=KEY, P1_AUTHENTICATION_KEY=WRONG,
                                                     P1_SIMULATOR_ENCRYPTION_KEY=KEY))
    assert result.returncode == 0
    assert "--decryption-key" in result.stdout or "--encryption-key" in result.stdout
    assert without_secrets(result.stdout, result.stderr) == []


@pytest.mark.parametrize("profile", ["lu", "be3"])
def test_run_with_the_encrypted_simulator_stores_the_same_readings_as_the_plain_one(
    profile: str, influxd: InfluxServer, influx_db: str, tmp_path: Path
) -> None:
    encrypted_db = f"t_{uuid.uuid4().hex[:12]}"
    influxd.create_database(encrypted_db)

    def run(db: str, spool: str, **settings: str) -> subprocess.CompletedProcess[str]:
        env = cli_env(P1_SOURCE="simulator", P1_SIMULATOR_PROFILE=profile, P1_SIMULATOR_COUNT=str(COUNT),
                      P1_SIMULATOR_SPEED="10000", P1_SIMULATOR_START=START, INFLUX_API="v1", INFLUX_URL=influxd.url,
                      INFLUX_BUCKET=db, P1_SPOOL_DIR=tmp_path / spool, P1_INSTANCE="crypto", P1_LOG_LEVEL="DEBUG",
                      P1_TIMEZONE="Europe/Luxembourg" if profile == "lu" else "Europe/Brussels", **settings)
        return p1logger("run", env=env)

    plain = run(influx_db, "plain")
    encrypted = run(encrypted_db, "encrypted", P1_SIMULATOR_ENCRYPTION_KEY=KEY, P1_DECRYPTION_KEY=KEY)

    for result in (plain, encrypted):
        assert result.returncode == 0, result.stderr
    done = [m for m in log_messages(encrypted.stderr) if m.startswith("done:")]
    assert done == [f"done: {COUNT} telegrams, 0 rejected, {done[0].split(', ')[2]}, 0 spooled, 0 in the spool, 0 dropped"]
    plain_counts, encrypted_counts = stored_counts(influxd, influx_db), stored_counts(influxd, encrypted_db)
    plain_counts.pop("p1logger"), encrypted_counts.pop("p1logger")
    assert plain_counts == encrypted_counts
    assert plain_counts["energy"] == COUNT
    for measurement in plain_counts:
        assert influxd.rows(encrypted_db, measurement) == influxd.rows(influx_db, measurement), measurement
    health = (tmp_path / "encrypted" / "health.json").read_text()
    assert json.loads(health)["telegrams_ok"] == COUNT
    assert without_secrets(encrypted.stdout, encrypted.stderr, health) == []


def test_run_with_a_wrong_key_counts_the_frames_and_logs_one_line(
    influxd: InfluxServer, influx_db: str, tmp_path: Path
) -> None:
    env = cli_env(P1_SOURCE="simulator", P1_SIMULATOR_COUNT=str(COUNT), P1_SIMULATOR_SPEED="10000",
                  P1_SIMULATOR_START=START, P1_SIMULATOR_ENCRYPTION_KEY=KEY, P1_DECRYPTION_KEY=WRONG,
                  INFLUX_API="v1", INFLUX_URL=influxd.url, INFLUX_BUCKET=influx_db, P1_SPOOL_DIR=tmp_path / "spool",
                  P1_LOG_LEVEL="DEBUG")
    result = p1logger("run", env=env)
    assert result.returncode == 0, result.stderr
    messages = log_messages(result.stderr)
    # One line at once; the rest is counted in the pipeline's summary of rejects (one per minute).
    assert [m for m in messages if "decryption failed" in m] == [
        "encrypted frame rejected: decryption failed: check P1_DECRYPTION_KEY (the frame does not decrypt to a telegram)",
        f"rejected {COUNT} telegram(s) in the last 60 s ({COUNT} decrypt); last: decryption failed: check "
        "P1_DECRYPTION_KEY (the frame does not decrypt to a telegram)"]
    assert [m.split(", ")[:2] for m in messages if m.startswith("done:")] == [["done: 0 telegrams", f"{COUNT} rejected"]]
    health = json.loads((tmp_path / "spool" / "health.json").read_text())
    assert health["telegrams_rejected"] == COUNT
    assert without_secrets(result.stdout, result.stderr, json.dumps(health)) == []


def test_doctor_says_to_check_the_key(influxd: InfluxServer, influx_db: str, tmp_path: Path) -> None:
    frames = simulated(tmp_path, "frames.bin", "--encryption-key", KEY)
    env = cli_env(P1_SOURCE=f"file:{frames}", INFLUX_API="v1", INFLUX_URL=influxd.url, INFLUX_BUCKET=influx_db,
                  P1_SPOOL_DIR=tmp_path / "spool")
    wrong = p1logger("doctor", env=env | {"P1_DECRYPTION_KEY": WRONG})
    missing = p1logger("doctor", env=env)
    right = p1logger("doctor", env=env | {"P1_DECRYPTION_KEY": KEY})

    assert wrong.returncode == 1
    assert ("FIX source: decryption failed: check P1_DECRYPTION_KEY (the meter's encrypted frames do not open "
            "with it; the key comes from your grid operator)") in wrong.stdout.splitlines()
    assert wrong.stderr == missing.stderr == right.stderr == ""
    assert ("FIX source: the meter sends encrypted frames (Luxembourg Smarty, Austrian Sagemcom): set "
            "P1_DECRYPTION_KEY to the key from your grid operator") in missing.stdout.splitlines()
    assert right.returncode == 0, right.stdout
    assert f"ok  source: {frames} sends valid telegrams (meter 1SAG1100000001)" in right.stdout.splitlines()
    assert without_secrets(wrong.stdout, wrong.stderr, right.stdout, right.stderr) == []


def test_record_keeps_plain_telegrams_and_replay_needs_no_key(
    influxd: InfluxServer, influx_db: str, tmp_path: Path
) -> None:
    plain = simulated(tmp_path, "plain.txt")
    frames = simulated(tmp_path, "frames.bin", "--encryption-key", KEY)
    archive = tmp_path / "archive.txt"
    recorded = p1logger("record", "--input", str(frames), str(archive), env=cli_env(P1_DECRYPTION_KEY=KEY))
    assert recorded.returncode == 0, recorded.stderr
    text = archive.read_bytes()
    assert text.count(b"#P1 ") == text.count(b" ok ") == COUNT
    assert b"\xdb" not in text and text.split(b"\n", 1)[1].startswith(b"/FLU5")

    replayed = p1logger("replay", str(archive), env=cli_env(INFLUX_API="v1", INFLUX_URL=influxd.url,
                                                             INFLUX_BUCKET=influx_db, P1_SPOOL_DIR=tmp_path / "spool"))
    assert replayed.returncode == 0, replayed.stderr
    counts = stored_counts(influxd, influx_db)
    assert counts["energy"] == COUNT
    # The same as the plain recording stores.
    other = f"t_{uuid.uuid4().hex[:12]}"
    influxd.create_database(other)
    again = p1logger("replay", str(plain), env=cli_env(INFLUX_API="v1", INFLUX_URL=influxd.url, INFLUX_BUCKET=other,
                                                        P1_SPOOL_DIR=tmp_path / "spool2"))
    assert again.returncode == 0, again.stderr
    assert stored_counts(influxd, other) == counts


def test_replay_opens_frames_the_logger_could_not_with_the_key_it_gets_now(
    influxd: InfluxServer, influx_db: str, tmp_path: Path
) -> None:
    frames = simulated(tmp_path, "frames.bin", "--encryption-key", KEY)
    archive = tmp_path / "archive.txt"
    recorded = p1logger("record", "--input", str(frames), str(archive), env=cli_env(P1_DECRYPTION_KEY=WRONG))
    assert recorded.returncode == 0, recorded.stderr
    assert archive.read_bytes().count(b" rejected ") == COUNT
    env = cli_env(INFLUX_API="v1", INFLUX_URL=influxd.url, INFLUX_BUCKET=influx_db, P1_SPOOL_DIR=tmp_path / "spool")
    without = p1logger("replay", str(archive), env=env)
    assert stored_counts(influxd, influx_db) == {}
    with_key = p1logger("replay", "--restart", str(archive), env=env | {"P1_DECRYPTION_KEY": KEY})
    assert (without.returncode, with_key.returncode) == (0, 0), with_key.stderr
    assert stored_counts(influxd, influx_db)["energy"] == COUNT


def test_replay_of_a_raw_capture_of_encrypted_frames(influxd: InfluxServer, influx_db: str, tmp_path: Path) -> None:
    frames = simulated(tmp_path, "frames.bin", "--encryption-key", KEY)
    env = cli_env(INFLUX_API="v1", INFLUX_URL=influxd.url, INFLUX_BUCKET=influx_db, P1_SPOOL_DIR=tmp_path / "spool",
                  P1_DECRYPTION_KEY=KEY)
    result = p1logger("replay", str(frames), env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[-1].startswith(f"p1logger replay: {COUNT} telegrams, ")
    assert stored_counts(influxd, influx_db)["energy"] == COUNT


def test_doctor_in_process_leaves_the_reader_log_as_it_was(tmp_path: Path) -> None:
    """Doctor quiets the reader's own line about a wrong key while it checks, and only then."""
    import logging

    from p1logger import cli

    frames = simulated(tmp_path, "frames.bin", "--encryption-key", KEY)
    reader_log = logging.getLogger("p1logger.reader")
    before = reader_log.level
    status = cli.main(["doctor", "--source", f"file:{frames}", "--decryption-key", WRONG, "--influx-api", "v1",
                       "--influx-url", "http://127.0.0.1:9", "--spool-dir", str(tmp_path / "spool"),
                       "--wait-s", "5"])
    assert status == 1
    assert reader_log.level == before
