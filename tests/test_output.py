"""``run --output -``: line protocol on stdout that Telegraf's influx parser accepts, and the Telegraf example.

Every line is parsed by a strict line-protocol parser (Telegraf's grammar:
escapes, typed field values, an integer timestamp in nanoseconds) and checked
against the data model's schema.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers.archive_telegrams import T0, telegram

from p1logger.outputs.stdout import StdoutSink
from p1logger.points import SCHEMA
from p1logger.contracts import WriteKind

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
CAPTURE_FIXTURES = (
    "dries007_p1logger__fluvius_single_phase_50215.txt",  # BE, one phase
    "ndokter_dsmr_parser__fluvius_v171.txt",  # BE: gas, water, capacity, peak history
    "ndokter_dsmr_parser__sagemcom_t210_d_r.txt",  # AT: a backslash in the meter id, Wh units
    "dsmrreader__sweden_kamstrup.txt",  # SE
    "dsmrreader__kaifa_dsmr42_bad_crc.txt",  # rejected: no points
)


# ------------------------------------------------------------------ a strict line-protocol parser


class LineProtocolError(ValueError):
    pass


@dataclass(frozen=True)
class Point:
    measurement: str
    tags: dict[str, str]
    fields: dict[str, float | int | str | bool]
    types: dict[str, str]  # field -> "float", "int", "uint", "string", "bool"
    timestamp_ns: int


_FLOAT = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_INT = re.compile(r"[+-]?\d+i")
_UINT = re.compile(r"\d+u")
_BOOL = {"t": True, "T": True, "true": True, "True": True, "TRUE": True,
         "f": False, "F": False, "false": False, "False": False, "FALSE": False}


def _token(text: str, start: int, stops: str, escapable: str) -> tuple[str, int]:
    """Read up to an unescaped stop character; a backslash escapes only ``escapable`` characters."""
    out = []
    i = start
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text) and text[i + 1] in escapable:
            out.append(text[i + 1])
            i += 2
            continue
        if char in stops:
            break
        if char == "\n":
            raise LineProtocolError("newline inside a line")
        out.append(char)
        i += 1
    return "".join(out), i


def parse_line(line: str) -> Point:
    if not line or line[0] in " #,":
        raise LineProtocolError(f"bad line start: {line!r}")
    measurement, i = _token(line, 0, ", ", ", ")
    if not measurement:
        raise LineProtocolError("empty measurement")
    tags: dict[str, str] = {}
    while i < len(line) and line[i] == ",":
        key, i = _token(line, i + 1, "=, ", ",= ")
        if i >= len(line) or line[i] != "=" or not key:
            raise LineProtocolError(f"tag without '=' in {line!r}")
        value, i = _token(line, i + 1, ", ", ",= ")
        if not value:
            raise LineProtocolError(f"empty tag value for {key!r}")
        if key in tags:
            raise LineProtocolError(f"duplicate tag {key!r}")
        tags[key] = value
    if list(tags) != sorted(tags):
        raise LineProtocolError("tags are not sorted (InfluxDB's fastest form)")
    if i >= len(line) or line[i] != " ":
        raise LineProtocolError(f"no field set in {line!r}")
    i += 1
    fields: dict[str, float | int | str | bool] = {}
    types: dict[str, str] = {}
    while True:
        key, i = _token(line, i, "=, ", ",= ")
        if i >= len(line) or line[i] != "=" or not key:
            raise LineProtocolError(f"field without '=' in {line!r}")
        i += 1
        if line[i : i + 1] == '"':
            value_chars = []
            i += 1
            while i < len(line) and line[i] != '"':
                if line[i] == "\\" and line[i + 1 : i + 2] in ('"', "\\"):
                    i += 1
                value_chars.append(line[i])
                i += 1
            if i >= len(line):
                raise LineProtocolError("unterminated string")
            i += 1
            fields[key], types[key] = "".join(value_chars), "string"
        else:
            end = i
            while end < len(line) and line[end] not in ", ":
                end += 1
            text = line[i:end]
            if _INT.fullmatch(text):
                fields[key], types[key] = int(text[:-1]), "int"
            elif _UINT.fullmatch(text):
                fields[key], types[key] = int(text[:-1]), "uint"
            elif _FLOAT.fullmatch(text):
                fields[key], types[key] = float(text), "float"
            elif text in _BOOL:
                fields[key], types[key] = _BOOL[text], "bool"
            else:
                raise LineProtocolError(f"field {key!r} has no valid value: {text!r}")
            i = end
        if i < len(line) and line[i] == ",":
            i += 1
            continue
        break
    if i >= len(line) or line[i] != " ":
        raise LineProtocolError(f"no timestamp in {line!r}")
    stamp = line[i + 1 :]
    if not re.fullmatch(r"-?\d{1,19}", stamp):
        raise LineProtocolError(f"bad timestamp {stamp!r}")
    return Point(measurement, tags, fields, types, int(stamp))


def test_the_parser_is_strict() -> None:
    point = parse_line(r'power,meter=EST5\253710000_A,phase=L1 import_w=286.0,n=3i,s="a\"b" 1665064214000000000')
    assert point == Point("power", {"meter": "EST5\\253710000_A", "phase": "L1"},
                          {"import_w": 286.0, "n": 3, "s": 'a"b'}, {"import_w": "float", "n": "int", "s": "string"},
                          1665064214000000000)
    assert parse_line(r"m,t=a\ b\,c f=1e-05 0").tags == {"t": "a b,c"}
    # p1logger always writes a timestamp, so a line without one is refused too.
    for bad in ("m f=1", "m f=1 ", "m f=inf 1", "m f=nan 1", "m,t= f=1.0 1", "m,b=1,a=2 f=1.0 1", "m f=1.0 1.5",
                "m  f=1.0 1", "m f=1.0i 1", 'm f="x 1', "m f=1.0,f2 1", ",t=1 f=1.0 1"):
        with pytest.raises(LineProtocolError):
            parse_line(bad)


def check_against_schema(point: Point) -> None:
    schema = SCHEMA[point.measurement]  # KeyError: a measurement the data model does not know
    assert set(point.tags) <= schema.tags, point
    assert point.fields, point
    for name, kind in point.types.items():
        assert schema.fields[name] == kind, (point, name)  # "float" or "int", never anything else
    assert point.timestamp_ns % 1_000_000_000 == 0, point  # whole seconds, in nanoseconds


# ------------------------------------------------------------------ the command


def run_to_stdout(tmp_path: Path, args: list[str],
                  env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INFLUX_", "P1_"))}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "p1logger", "run", *args, "--spool-dir", str(tmp_path / "spool"),
                           "--instance", "test-pi"], cwd=ROOT, env=env, capture_output=True, timeout=60)


def test_run_writes_telegraf_format_line_protocol_without_any_influxdb_setting(tmp_path: Path) -> None:
    capture = tmp_path / "capture.txt"
    capture.write_bytes(b"".join((FIXTURES / name).read_bytes() for name in CAPTURE_FIXTURES))
    started_s = int(time.time())
    result = run_to_stdout(tmp_path, ["--source", f"file:{capture}", "--output", "-"])
    ended_s = int(time.time()) + 1
    assert result.returncode == 0, result.stderr
    text = result.stdout.decode("utf-8")
    assert text.endswith("\n")
    lines = text.splitlines()
    points = [parse_line(line) for line in lines]
    for point in points:
        check_against_schema(point)
    # The exact lines of the first telegram (the data model's contract), with nanosecond timestamps.
    for expected in (
        "energy,meter=1SAG1100096196 import_t1_kwh=2784.374,import_t2_kwh=3270.063,export_t1_kwh=350.978,"
        "export_t2_kwh=158.131,import_total_kwh=6054.437,export_total_kwh=509.109,active_tariff=2i "
        "1619365292000000000",
        "power,meter=1SAG1100096196,phase=total import_w=0.0,export_w=215.0 1619365292000000000",
        "voltage,meter=1SAG1100096196,phase=L1 voltage_v=236.3 1619365292000000000",
        "power,meter=EST5\\253710000_A,phase=total import_w=286.0,export_w=0.0 1665064214000000000",
        "gas,channel=1,device=7FLO2119033733,meter=1SAG3101021605 volume_m3=112.384 1589283958000000000",
        "capacity_history,meter=1SAG3101021605,month=2020-04 history_peak_kw=3.695 1587662738000000000",
    ):
        assert expected in lines
    meters = {p.tags.get("meter") for p in points if p.measurement != "p1logger"}
    assert meters == {"1SAG1100096196", "1SAG3101021605", "EST5\\253710000_A", "KAM5"}  # not the bad-CRC one
    energy = [p for p in points if p.measurement == "energy"]
    assert len(energy) == 4
    # The logger's own health, stamped with the wall clock: 4 valid, 1 rejected.
    health = [p for p in points if p.measurement == "p1logger"]
    assert health and all(p.tags == {"instance": "test-pi"} for p in health)
    assert all(started_s * 10**9 <= p.timestamp_ns <= ended_s * 10**9 for p in health)
    assert (health[-1].fields["telegrams_ok"], health[-1].fields["telegrams_rejected"]) == (4, 1)


def test_the_output_can_be_chosen_by_environment_variable(tmp_path: Path) -> None:
    capture = tmp_path / "capture.txt"
    capture.write_bytes((FIXTURES / CAPTURE_FIXTURES[0]).read_bytes())
    result = run_to_stdout(tmp_path, ["--source", f"file:{capture}"], {"P1_OUTPUT": "-"})
    assert result.returncode == 0, result.stderr
    measurements = sorted(parse_line(line).measurement for line in result.stdout.decode().splitlines())
    assert [m for m in measurements if m != "p1logger"] == ["current", "energy", "power", "power", "voltage"]


def test_an_unknown_output_is_a_clear_error(tmp_path: Path) -> None:
    result = run_to_stdout(tmp_path, ["--source", "file:/dev/null", "--output", "out.lp"])
    assert result.returncode == 2
    assert result.stderr.decode() == ("p1logger run: --output 'out.lp' is not valid: expected '-' (line protocol on "
                                      "standard output), 'mqtt' for MQTT only, a list such as 'influx,-', or unset "
                                      "to write to InfluxDB\n")


def test_when_stdout_goes_away_the_rest_waits_in_the_spool(tmp_path: Path) -> None:
    """`p1logger run --output - | head`: nothing is lost; the next run prints what was spooled."""
    capture = tmp_path / "capture.txt"
    capture.write_bytes(b"".join(telegram(n) for n in range(3000)))  # a reading a second
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INFLUX_", "P1_"))}
    command = [sys.executable, "-m", "p1logger", "run", "--output", "-", "--spool-dir", str(tmp_path / "spool"),
               "--instance", "test-pi", "--batch-max-points", "50"]
    child = subprocess.Popen([*command, "--source", f"file:{capture}"], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert child.stdout is not None and child.stderr is not None
    first = child.stdout.readline()
    child.stdout.close()  # the reader goes away
    errors: list[bytes] = []
    drain = threading.Thread(target=lambda: errors.append(child.stderr.read()), daemon=True)  # type: ignore[union-attr]
    drain.start()
    assert child.wait(timeout=60) == 0
    drain.join(10)
    assert b"standard output was closed" in errors[0]
    assert parse_line(first.decode().rstrip("\n")).measurement in SCHEMA
    # The next run (an empty source) sends the spooled points first.
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    rerun = subprocess.run([*command, "--source", f"file:{empty}"], cwd=ROOT, env=env, capture_output=True,
                           timeout=60)
    assert rerun.returncode == 0, rerun.stderr
    spooled = [parse_line(line) for line in rerun.stdout.decode().splitlines()]
    # What the closed pipe refused comes now, without a gap: one energy point for each second.
    seconds = sorted(p.timestamp_ns // 10**9 for p in spooled if p.measurement == "energy")
    assert seconds and seconds == list(range(seconds[0], seconds[0] + len(seconds)))
    assert seconds[0] >= T0 and seconds[-1] < T0 + 3000


def test_stdout_sink_flushes_each_batch_and_converts_to_nanoseconds() -> None:
    class Stream(io.StringIO):
        flushes = 0

        def flush(self) -> None:
            self.flushes += 1
            super().flush()

    stream = Stream()
    sink = StdoutSink(stream)
    result = sink.write(["power,meter=M import_w=1.0,export_w=0.0 1589284449", "p1logger,instance=pi queue_depth=0i 5"])
    assert (result.kind, result.points_written, result.kept_lines) == (WriteKind.OK, 2, ())
    assert stream.getvalue() == ("power,meter=M import_w=1.0,export_w=0.0 1589284449000000000\n"
                                 "p1logger,instance=pi queue_depth=0i 5000000000\n")
    assert stream.flushes == 1
    sink.write(["energy,meter=M active_tariff=1i 7"])
    assert stream.flushes == 2


def test_stdout_sink_keeps_the_lines_once_its_reader_is_gone() -> None:
    class Closed(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    stopped: list[bool] = []
    sink = StdoutSink(Closed(), on_closed=lambda: stopped.append(True))
    lines = ["power,meter=M import_w=1.0,export_w=0.0 1589284449"]
    for _ in range(2):
        result = sink.write(lines)
        assert (result.kind, result.points_written, result.kept_lines) == (WriteKind.TRANSIENT, 0, tuple(lines))
    assert stopped == [True]  # the logger is told to stop once


# ------------------------------------------------------------------ the Telegraf example


def test_the_telegraf_example_parses_and_runs_p1logger_as_an_execd_input() -> None:
    tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11")
    config = tomllib.loads((ROOT / "docs" / "telegraf.conf").read_text(encoding="utf-8"))
    (execd,) = config["inputs"]["execd"]
    assert execd["command"] == ["p1logger", "run", "--output", "-"]
    assert execd["data_format"] == "influx"
    assert execd["signal"] == "none"
    assert "influx_timestamp_precision" not in execd  # nanoseconds, the parser's default
    assert config["agent"]["omit_hostname"] is True  # no extra "host" tag beside the data model's tags
    (v2,) = config["outputs"]["influxdb_v2"]
    assert v2["bucket"] == "p1" and v2["token"] == "${INFLUX_TOKEN}" and v2["urls"] == ["http://localhost:8086"]
    assert {e.split("=", 1)[0] for e in execd["environment"]} == {"P1_SOURCE", "P1_TIMEZONE", "P1_SPOOL_DIR",
                                                                 "P1_LOG_LEVEL"}
