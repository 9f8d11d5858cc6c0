"""Every benchmark runs once in a quick mode, so that none of them rots: it must finish with exit status 0
and print the ratio against its baseline.  No timing is asserted here; the figures are in
docs/performance.md."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# benchmark -> (quick arguments, the line that carries its ratio against the baseline of the same run)
QUICK: dict[str, tuple[list[str], str]] = {
    "decode.py": (["--telegrams", "200", "--repeat", "1"], r"ratio +\d+\.\dx"),
    "decrypt.py": (["--telegrams", "100", "--repeat", "1"], r"COSEM \(EVN layout\).* ratio \d+\.\d\dx baseline"),
    "mqtt_state.py": (["--telegrams", "100", "--repeats", "1"], r"MQTT state \+ JSON: .* ratio \d+\.\d\d"),
    "dump_json.py": (["--telegrams", "200", "--runs", "1"], r"ratio: p1logger is \d+\.\dx dsmr_parser in CPU"),
    "startup.py": (["--runs", "1"], r"ratio: health CPU = \d+\.\d\dx the bare import"),
    "footprint.py": (["--seconds", "4"], r"ratio: \d+\.\d\d ms CPU per telegram-second = \d+\.\d\d dsmr_parser parses"),
    "backfill.py": (["--seconds", "300"], r"target 10,000/s -> \d+\.\d\dx"),
    "replay.py": (["--telegrams", "300"], r"energy points stored: (\d+), expected \1"),
    "spool_drain.py": (["--batches", "3", "--points-per-batch", "200"], r"drain/in-memory = \d+\.\d{3}"),
    "capacity_warnings.py": (["--days", "1"], r"recall +\d+\.\d%.*\n.*precision +\d+\.\d%"),
    "handoff.py": (["--items", "5", "--period-s", "0.05", "--runs", "1"], r"ratio: the writer wakes \d+\.\d\d times"),
}


def test_every_benchmark_is_covered() -> None:
    assert sorted(QUICK) == sorted(p.name for p in (REPO / "benchmarks").glob("*.py") if p.name != "stream.py")


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(QUICK))
def test_benchmark_runs_in_quick_mode(name: str) -> None:
    arguments, ratio = QUICK[name]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / name), *arguments], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(ratio, done.stdout), done.stdout
