"""`p1logger doctor` checks every configured input and output without starting any of them.

Beside a running logger it must not take its fan-out port, its archive lock or
its spool; with no source it says so under "source".
"""

from __future__ import annotations

import socket
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from helpers.fake_meter import DUTCH_DSMR5, clean_environment, fixture
from helpers.influx_servers import InfluxServer

from p1logger import cli
from p1logger.outputs.archive import ArchiveWriter


@pytest.fixture(autouse=True)
def _hermetic(monkeypatch: pytest.MonkeyPatch) -> None:
    clean_environment(monkeypatch)


def test_doctor_beside_a_running_logger_takes_no_port_no_lock_and_no_spool(
    influxd: InfluxServer, influx_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "one.txt"
    source.write_bytes(fixture(DUTCH_DSMR5))
    archive = tmp_path / "archive"
    running_archive = ArchiveWriter(archive, ZoneInfo("Europe/Brussels"), background=False)
    running_archive.open()  # the running logger holds the archive lock...
    listener = socket.create_server(("127.0.0.1", 0))  # ...and its fan-out port
    port = listener.getsockname()[1]
    spool_dir = tmp_path / "spool"
    try:
        code = cli.main(["doctor", "--source", f"file:{source}", "--influx-api", "v1", "--influx-url", influxd.url,
                         "--influx-bucket", influx_db, "--spool-dir", str(spool_dir), "--archive", str(archive),
                         "--serve-raw", f"127.0.0.1:{port}"])
    finally:
        listener.close()
        running_archive.close()
    out = capsys.readouterr().out.splitlines()
    assert code == 0, out
    assert out[0] == f"ok  configuration: source file:{source}, outputs influx, fanout, archive"
    assert f"ok  fan-out: raw telegrams will be served on 127.0.0.1:{port}" in out
    assert f"ok  archive: {archive} exists and is writable" in out
    assert out[-1] == "all good: p1logger run is ready"
    assert not spool_dir.exists()  # nothing was set up


def test_doctor_without_a_source_says_so_under_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["doctor", "--output", "-", "--spool-dir", str(tmp_path / "spool")])
    out = capsys.readouterr().out.splitlines()
    assert code == 1
    assert out[:3] == [
        "ok  configuration: source (none), outputs stdout",
        "FIX source: no source: set P1_SOURCE (e.g. /dev/ttyUSB0, socket://host:2001, file:PATH or simulator)",
        "ok  output stdout: line protocol on standard output",
    ]
    assert not [line for line in out if line.startswith("FIX spool")]


def test_doctor_reports_a_bad_fanout_address_and_an_unwritable_archive(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "one.txt"
    source.write_bytes(fixture(DUTCH_DSMR5))
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("x")
    common = ["doctor", "--source", f"file:{source}", "--output", "-", "--spool-dir", str(tmp_path / "s"),
              "--archive", str(not_a_directory / "archive")]
    # A malformed address is refused while the flags are read, like every malformed setting (settings.py).
    assert cli.main([*common, "--serve-raw", ":2001"]) == 2
    assert capsys.readouterr().err == ("p1logger doctor: --serve-raw ':2001' is not valid: expected HOST:PORT, "
                                       "e.g. 127.0.0.1:2001 (this machine) or 0.0.0.0:2001 (the LAN)\n")
    code = cli.main([*common, "--serve-raw", "127.0.0.1:2001"])
    out = capsys.readouterr().out.splitlines()
    assert code == 1
    assert "ok  fan-out: raw telegrams will be served on 127.0.0.1:2001" in out
    assert f"FIX archive: {not_a_directory} is not a directory: fix P1_ARCHIVE_DIR" in out
    assert out[-1] == "1 thing(s) to fix, see FIX lines above"
