"""What ``p1logger health`` and ``p1logger --help`` cost, against a bare Python that imports json and sqlite3.

    python benchmarks/startup.py [--runs 20]

The Docker image runs ``p1logger health`` every 30 s, so its CPU is paid all
day; ``--help`` is what a person waits for.  Each program is run ``--runs``
times, interleaved with the baseline so that load from other processes hits
both alike.  CPU is user + system time of the child (``getrusage``); the
median of the runs is reported.  Targets: health at most 2x the baseline's
CPU, ``--help`` under 100 ms of wall time.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cost(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one run of ``command``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT, env=env, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="runs of each program (default %(default)s)")
    args = parser.parse_args()
    python = sys.executable
    with tempfile.TemporaryDirectory() as scratch:
        # A fresh health state, so that health does its whole job and exits 0.
        state = Path(scratch) / "health.json"
        now = time.time()
        state.write_text(f'{{"updated_at": {now}, "started_at": {now - 60}, "last_telegram_at": {now}, '
                         f'"database_state": "up", "source_state": "open"}}', encoding="utf-8")
        env = {**os.environ, "P1_SPOOL_DIR": scratch, "PYTHONPATH": str(ROOT)}
        programs = {
            "python -c 'import json, sqlite3'": [python, "-c", "import json, sqlite3"],
            "p1logger health": [python, "-m", "p1logger", "health"],
            "p1logger --help": [python, "-m", "p1logger", "--help"],
            "p1logger dump --help": [python, "-m", "p1logger", "dump", "--help"],
        }
        status = subprocess.run(programs["p1logger health"], capture_output=True, text=True, cwd=ROOT, env=env)
        if status.returncode != 0:
            raise SystemExit(f"p1logger health failed: {status.stdout}{status.stderr}")
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in programs}
        for _ in range(args.runs):
            for name, command in programs.items():
                samples[name].append(cost(command, env))
    print(f"machine: {os.uname().sysname} {os.uname().machine}, Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} cores; median of {args.runs} runs, interleaved")
    cpu = {name: statistics.median(c for c, _ in runs) for name, runs in samples.items()}
    wall = {name: statistics.median(w for _, w in runs) for name, runs in samples.items()}
    for name in programs:
        spread = sorted(c for c, _ in samples[name])
        print(f"{name:34} CPU {cpu[name] * 1000:6.1f} ms (min {spread[0] * 1000:.1f}, max {spread[-1] * 1000:.1f})"
              f"  wall {wall[name] * 1000:6.1f} ms")
    baseline = cpu["python -c 'import json, sqlite3'"]
    print(f"ratio: health CPU = {cpu['p1logger health'] / baseline:.2f}x the bare import (target <= 2x); "
          f"--help wall = {wall['p1logger --help'] * 1000:.0f} ms (target < 100 ms), "
          f"{cpu['p1logger --help'] / baseline:.2f}x the bare import's CPU")


if __name__ == "__main__":
    main()
