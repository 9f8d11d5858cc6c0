"""``p1logger dump`` on every fixture, its JSON shape, and its one-line errors."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from helpers.fake_meter import flooded_pty

from p1logger.cli import main
from p1logger.inputs import GARBAGE_HINT
from p1logger.inputs.serial import describe_os_error

FIXTURES = Path(__file__).parent / "fixtures"
ALL = sorted(p.name for p in FIXTURES.glob("*.txt"))
# The CRC failures documented in tests/fixtures/SOURCES.md (octal-mangled literals,
# anonymised ids, placeholders, a deliberately wrong CRC).
BAD_CRC = {
    "ndokter_dsmr_parser__iskra_ie.txt",
    "dsmrreader__kaifa_dsmr42_bad_crc.txt",
    "dsmrreader__iskra_mt382_dsmr50_example.txt",
    "dsmrreader__fluvius_single_phase.txt",
    "dsmrreader__fluvius_multiple_gas.txt",
    "dsmrreader__fluvius_polyphase.txt",
    "dsmrreader__fluvius_peak_data.txt",
    "dsmrreader__fluvius_without_gas.txt",
    "dsmrreader__iskra_am550e_dsmr50_mbus2.txt",
    "athombv_node_dsmr_parser__sagemcom_t210d_anonymised.txt",
    "athombv_node_dsmr_parser__sagemcom_xt211_anonymised.txt",
    "athombv_node_dsmr_parser__emucs_v211_spec_example.txt",
}


@pytest.mark.parametrize("name", ALL)
def test_dump_json_on_every_fixture(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["dump", "--input", str(FIXTURES / name), "--format", "json", "--all"])
    out, err = capsys.readouterr()
    objects = [json.loads(line) for line in out.splitlines()]
    assert len(objects) == 1
    item = objects[0]
    if name in BAD_CRC:
        assert status == 1
        assert item["rejected"] == "crc" and item["crc_ok"] is False
        assert "1 rejected (1 crc)" in err
    else:
        assert status == 0
        assert "rejected" not in item
        assert item["crc_ok"] in (True, None)
        assert err == ""
    raw = (FIXTURES / name).read_bytes().decode("ascii")
    assert item["header"] == raw.split("\r\n", 1)[0][1:]
    assert set(item) >= {"crc_ok", "header", "timestamp", "fields"}
    for obis, field in item["fields"].items():
        assert obis in raw
        assert set(field) <= {"value", "unit", "time", "raw"}


@pytest.mark.parametrize("name", ALL)
def test_dump_table_on_every_fixture(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["dump", "--input", str(FIXTURES / name)])
    out, _ = capsys.readouterr()
    if name in BAD_CRC:
        assert status == 1 and out == ""
    else:
        assert status == 0
        labels, blank, title = out.splitlines()[:3]
        assert labels.startswith("-- tariff labels for ") and "; detected: " in labels and blank == ""
        assert title.startswith("== ")
        header = (FIXTURES / name).read_bytes().split(b"\r\n", 1)[0][1:].decode()
        assert header in title


def test_json_values_times_and_peak_history(capsys: pytest.CaptureFixture[str]) -> None:
    main(["dump", "--input", str(FIXTURES / "ndokter_dsmr_parser__fluvius_v171.txt"), "--format", "json"])
    item = json.loads(capsys.readouterr().out)
    assert item["crc_ok"] is True
    assert item["timestamp"] == "2020-05-12T11:54:09Z"
    assert item["meter"] == "1SAG3101021605"
    fields = item["fields"]
    assert fields["1-0:1.8.2"] == {"value": 15.758, "unit": "kWh"}
    assert fields["0-0:96.14.0"] == {"value": 1, "unit": None}
    assert fields["0-1:24.2.3"] == {"value": 112.384, "unit": "m3", "time": "2020-05-12T11:45:58Z"}
    assert fields["1-0:1.6.0"] == {"value": 2.589, "unit": "kW", "time": "2020-05-09T11:45:58Z"}
    assert fields["0-0:98.1.0"]["value"] == [
        {"time": "2020-04-23T17:25:38Z", "value": 3.695, "unit": "kW", "month": "2020-04"},
        {"time": "2020-03-05T11:21:39Z", "value": 5.98, "unit": "kW", "month": "2020-03"},
        {"time": "2020-02-10T02:54:21Z", "value": 4.318, "unit": "kW", "month": "2020-02"},
    ]


def test_json_null_crc_for_dsmr22(capsys: pytest.CaptureFixture[str]) -> None:
    main(["dump", "--input", str(FIXTURES / "ndokter_dsmr_parser__v2_2.txt"), "--format", "json"])
    item = json.loads(capsys.readouterr().out)
    assert item["crc_ok"] is None and item["timestamp"] is None
    assert item["fields"]["0-1:24.3.0"] == {"value": 1.001, "unit": "m3", "time": "2016-11-07T18:00:00Z"}


def test_once_stops_after_the_first_valid_telegram(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stream = tmp_path / "three.txt"
    stream.write_bytes(b"".join((FIXTURES / name).read_bytes() for name in ALL[:3]))
    assert main(["dump", "--input", str(stream), "--format", "json", "--once"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1


def test_rejects_are_summarised_on_stderr_not_printed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stream = tmp_path / "mixed.txt"
    stream.write_bytes(b"garbage\r\n" + b"".join((FIXTURES / name).read_bytes() for name in ALL))
    assert main(["dump", "--input", str(stream), "--format", "json"]) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == len(ALL) - len(BAD_CRC)
    assert err == f"p1logger dump: {len(ALL) - len(BAD_CRC)} valid, 12 rejected (12 crc); 9 bytes of noise skipped\n"


def test_stdin_input(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import io
    import sys

    data = (FIXTURES / "wassasin_dsmr5__kaifa_dsmr42.txt").read_bytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    assert main(["dump", "--input", "-", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["header"] == "KFM5KAIFA-METER"


def test_missing_device_is_one_line_with_the_fix(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dump", "/dev/ttyUSB-does-not-exist"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == ("p1logger dump: serial device /dev/ttyUSB-does-not-exist does not exist: is the P1 cable "
                   "plugged in? List devices with: ls -l /dev/serial/by-id/\n")


def test_no_source_given_is_one_line(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("P1_SOURCE", raising=False)
    assert main(["dump"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_permission_and_busy_messages_say_what_to_do() -> None:
    # /dev/null stands in for a serial port: a character device, as a tty is.
    denied = describe_os_error("/dev/null", OSError(errno.EACCES, "Permission denied"))
    assert denied == ("permission denied on /dev/null: add the user to the dialout group "
                      "(sudo usermod -aG dialout $USER, then log in again)")
    busy = describe_os_error("/dev/ttyUSB0", OSError(errno.EBUSY, "Device or resource busy"))
    assert "another program" in busy
    refused = describe_os_error("socket://127.0.0.1:2001", ConnectionRefusedError(errno.ECONNREFUSED, "refused"))
    assert "ser2net" in refused


def test_only_garbage_on_a_serial_line_says_wrong_baud_or_cable(capsys: pytest.CaptureFixture[str]) -> None:
    """A real pseudo-terminal fed noise, as a meter read at the wrong baud rate looks."""
    noise = bytes(range(128, 256)) * 8  # no '/' at all, like bytes at the wrong baud rate
    with flooded_pty(noise, gap_s=0.01) as path:
        status = main(["dump", path])
    assert status == 2
    err = capsys.readouterr().err
    assert err == f"p1logger dump: {GARBAGE_HINT}\n"
