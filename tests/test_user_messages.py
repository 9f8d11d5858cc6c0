"""What a user reads: hints that point at the real cause, tariff labels that fit the meter, local times,
and recordings read as recordings."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.fake_meter import flooded_pty
from helpers.influx_servers import InfluxServer, http_request

from p1logger.cli import main
from p1logger.inputs import CRC_HINT, CRC_MISSING_HINT, GARBAGE_HINT, no_valid_telegram_hint
from p1logger.inputs.serial import describe_os_error

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
FLUVIUS = FIXTURES / "ndokter_dsmr_parser__fluvius_v171.txt"  # 2020-05-12 11:54:09 UTC, CRC ok
BAD_CRC = FIXTURES / "dsmrreader__kaifa_dsmr42_bad_crc.txt"


def clean_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("P1_", "INFLUX_"))}
    env.update(settings)
    return env


def p1logger(*argv: str, stdin: bytes | None = None, **settings: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "p1logger", *argv], env=clean_env(**settings), cwd=REPO,
                          input=stdin, capture_output=True, timeout=60, check=False)


# ------------------------------------------------------------------ checksum failures


def test_the_hint_follows_what_was_rejected() -> None:
    assert no_valid_telegram_hint({"crc": 4}) == CRC_HINT
    assert no_valid_telegram_hint({"crc": 2, "crc_missing": 1, "incomplete": 2}) == CRC_HINT
    # Only the CRC line missing, every time: a gateway that strips it, not a noisy line.
    assert no_valid_telegram_hint({"crc_missing": 5}) == CRC_MISSING_HINT
    assert CRC_MISSING_HINT.startswith("telegrams arrive without their CRC line although the meter is DSMR 4")
    assert no_valid_telegram_hint({}) == GARBAGE_HINT
    assert no_valid_telegram_hint({"crc": 1, "bad_end": 3}) == GARBAGE_HINT
    assert CRC_HINT.startswith("telegrams arrive but fail their checksum: noisy cable or two readers on one port?")


def test_a_serial_line_whose_telegrams_fail_only_their_crc_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    """A real pseudo-terminal fed whole telegrams with a wrong CRC: the line settings are right."""
    with flooded_pty(BAD_CRC.read_bytes(), gap_s=0.005) as path:
        status = main(["dump", path])
    assert status == 2
    assert capsys.readouterr().err == f"p1logger dump: {CRC_HINT}\n"


def test_a_file_of_crc_failures_gets_the_checksum_hint(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dump", "--input", str(BAD_CRC)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == f"p1logger dump: no valid telegram in {BAD_CRC.stat().st_size} bytes; {CRC_HINT}"


# ------------------------------------------------------------------ files named as devices


def test_a_regular_file_given_as_the_device_is_read_as_a_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dump", str(FLUVIUS), "--format", "json"]) == 0
    out, err = capsys.readouterr()
    assert '"meter":"1SAG3101021605"' in out and err == ""


def test_dialout_advice_only_for_a_character_device(tmp_path: Path) -> None:
    regular = tmp_path / "capture.txt"
    regular.write_bytes(b"")
    denied = describe_os_error(str(regular), PermissionError(errno.EACCES, "Permission denied"))
    assert "usermod" not in denied and "not a serial device" in denied
    assert "usermod -aG dialout" in describe_os_error("/dev/null", PermissionError(errno.EACCES, "Permission denied"))
    not_a_tty = describe_os_error(str(regular), OSError(errno.ENOTTY, "Inappropriate ioctl for device"))
    assert not_a_tty.endswith("is not a serial port: a recording is read with --input FILE (dump, record, "
                              "capacity) or P1_SOURCE=file:PATH (run)")


# ------------------------------------------------------------------ tariff labels


def test_a_dutch_simulated_meter_gets_dutch_labels_through_a_pipe() -> None:
    simulated = p1logger("simulate", "--profile", "nl", "--count", "2", "--speed", "1000",
                         "--start", "2025-01-15T10:00:00+01:00")
    assert simulated.returncode == 0
    dumped = p1logger("dump", "--input", "-", stdin=simulated.stdout)
    out = dumped.stdout.decode()
    assert dumped.returncode == 0
    assert out.splitlines()[0] == (
        "-- tariff labels for NL (tariff 1 = low (night), tariff 2 = normal (day)); detected: a DSMR meter "
        "without 0-0:96.1.4 (which every Belgian meter sends): Dutch tariff numbering; set P1_COUNTRY if the "
        "meter is elsewhere")
    assert "Energy imported, tariff 1 [low (night)]" in out and "day (peak)" not in out
    assert out.count("-- tariff labels") == 1


def test_a_belgian_meter_is_detected_and_a_setting_wins(capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("P1_COUNTRY", raising=False)
    assert main(["dump", "--input", str(FLUVIUS)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == ("-- tariff labels for BE (tariff 1 = day (peak), tariff 2 = night (off-peak)); "
                                   "detected: the meter sends 0-0:96.1.4, the Belgian e-MUCS version")
    monkeypatch.setenv("P1_COUNTRY", "nl")
    assert main(["dump", "--input", str(FLUVIUS)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "-- tariff labels for NL (tariff 1 = low (night), tariff 2 = normal (day)); P1_COUNTRY=NL"
    assert "tariff 2 [normal (day)]" in out


def test_run_logs_the_tariff_names_once(tmp_path: Path) -> None:
    capture = tmp_path / "three.txt"
    capture.write_bytes(FLUVIUS.read_bytes() * 3)
    result = p1logger("run", "--source", f"file:{capture}", "--output", "-", P1_SPOOL_DIR=str(tmp_path / "spool"))
    assert result.returncode == 0, result.stderr
    err = result.stderr.decode()
    assert err.count("tariff labels for ") == 1
    assert ("tariff labels for BE (tariff 1 = day (peak), tariff 2 = night (off-peak)); detected: the meter sends "
            "0-0:96.1.4, the Belgian e-MUCS version") in err


# ------------------------------------------------------------------ times and recordings


def test_dump_shows_the_meters_local_time_with_its_offset(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dump", "--input", str(FLUVIUS)]) == 0
    out = capsys.readouterr().out
    assert "== 2020-05-12 13:54:09+02:00  FLU5\\253769484_A  meter 1SAG3101021605  CRC ok" in out
    assert "Telegram time" in out and "2020-05-12 13:54:09+02:00" in out.split("Telegram time")[1].splitlines()[0]
    assert " UTC" not in out
    assert main(["dump", "--input", str(FLUVIUS), "--timezone", "Europe/Amsterdam", "--country", "BE"]) == 0
    assert "== 2020-05-12 13:54:09+02:00" in capsys.readouterr().out


def test_dump_of_a_recording_does_not_call_its_headers_noise(tmp_path: Path) -> None:
    capture = tmp_path / "capture.txt"
    capture.write_bytes(FLUVIUS.read_bytes() * 3)
    recording = tmp_path / "recording.txt"
    recorded = p1logger("record", "--input", str(capture), str(recording))
    assert recorded.returncode == 0, recorded.stderr
    assert recording.read_bytes().startswith(b"#P1 ")
    dumped = p1logger("dump", "--input", str(recording), "--format", "json")
    assert (dumped.returncode, dumped.stderr) == (0, b"")
    assert dumped.stdout.count(b"\n") == 3


# ------------------------------------------------------------------ InfluxDB


def test_doctor_says_to_set_v1_against_an_influxdb_1_server(influxd: InfluxServer, influx_db: str,
                                                            tmp_path: Path) -> None:
    version = http_request(influxd.http_port, "GET", "/ping").headers["x-influxdb-version"]
    assert version.startswith("1.")
    result = p1logger("doctor", "--wait-s", "1", P1_SOURCE=f"file:{FLUVIUS}", INFLUX_URL=influxd.url, INFLUX_API="v2",
                      INFLUX_TOKEN="t", INFLUX_ORG="home", INFLUX_BUCKET=influx_db, P1_SPOOL_DIR=str(tmp_path))
    out = result.stdout.decode().splitlines()
    assert result.returncode == 1
    assert f"ok  InfluxDB {version} answers at {influxd.url}" in out
    assert (f"FIX this is InfluxDB 1.x (version {version}): set INFLUX_API=v1, with the database in INFLUX_BUCKET "
            "(and INFLUX_USERNAME and INFLUX_PASSWORD if it has authentication)") in out
    assert not any("does not exist" in line for line in out)


def test_run_says_to_set_v1_against_an_influxdb_1_server_and_logs_it_once(influxd: InfluxServer, influx_db: str,
                                                                          tmp_path: Path) -> None:
    capture = tmp_path / "three.txt"
    capture.write_bytes(FLUVIUS.read_bytes() * 3)
    version = http_request(influxd.http_port, "GET", "/ping").headers["x-influxdb-version"]
    result = p1logger("run", "--source", f"file:{capture}", INFLUX_URL=influxd.url, INFLUX_API="v2",
                      INFLUX_TOKEN="t", INFLUX_ORG="home", INFLUX_BUCKET=influx_db, P1_SPOOL_DIR=str(tmp_path / "s"))
    err = result.stderr.decode()
    assert result.returncode == 0, err
    hint = f"this is InfluxDB 1.x (version {version}): set INFLUX_API=v1"
    assert err.count(hint) == 1, err
    failure_lines = [line for line in err.splitlines() if " ERROR " in line or " unavailable (" in line]
    assert len(failure_lines) == 1 and hint in failure_lines[0] and "keeping data in its spool" in failure_lines[0]
