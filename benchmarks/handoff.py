"""How often the writer wakes per telegram handed over: the pipeline's doorbell against a plain queue.

    python benchmarks/handoff.py [--items 40] [--period-s 0.2]

Two threads, as in ``p1logger run``: a "reader" that sleeps, works about a millisecond (decoding a
telegram), then hands an item over and goes back to sleep; a "writer" that waits for items and works
about a millisecond on each. Counted: the voluntary context switches of each thread
(/proc/self/task/*/status), i.e. how often it went to sleep to be woken again. The baseline, in the same
run, hands over through ``queue.Queue`` alone, whose wait wakes the writer while the reader still holds
the interpreter lock, so that the writer often sleeps a second time for it. Linux only.
"""

from __future__ import annotations

import argparse
import platform
import queue
import sys
import threading
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from p1logger.pipeline import Doorbell  # noqa: E402


def voluntary_switches() -> int:
    status = Path(f"/proc/self/task/{threading.get_native_id()}/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("voluntary_ctxt_switches"))


def busy(iterations: int = 20000) -> int:
    total = 0
    for i in range(iterations):
        total += i
    return total


def run(mode: str, items: int, period_s: float) -> tuple[float, float]:
    """Wake-ups per item of the reader and the writer, handing over through ``mode``."""
    handed: queue.Queue[int | None] = queue.Queue()
    bell = Doorbell()
    pause = threading.Event()
    woken: dict[str, float] = {}

    def take() -> int | None:
        if mode == "queue":
            return handed.get()
        while True:
            try:
                return handed.get_nowait()
            except queue.Empty:
                bell.wait(10.0)

    def give(item: int | None) -> None:
        handed.put(item)
        if mode == "doorbell":
            bell.ring()

    def writer() -> None:
        before = voluntary_switches()
        while take() is not None:
            busy()
        woken["writer"] = (voluntary_switches() - before) / items

    def reader() -> None:
        before = voluntary_switches()
        for item in range(items):
            pause.wait(period_s)
            busy()
            give(item)
        woken["reader"] = (voluntary_switches() - before) / items
        give(None)

    threads: list[Callable[[], None]] = [writer, reader]
    running = [threading.Thread(target=target) for target in threads]
    for thread in running:
        thread.start()
    for thread in running:
        thread.join()
    bell.close()
    return woken["reader"], woken["writer"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=40, help="items handed over per run (default %(default)s)")
    parser.add_argument("--period-s", type=float, default=0.2, help="the reader's sleep (default %(default)s)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each, interleaved (default %(default)s)")
    args = parser.parse_args()
    print(f"machine: {platform.system()} {platform.machine()}, Python {platform.python_version()}; "
          f"{args.items} items, one every {args.period_s} s; wake-ups per item handed over")
    results: dict[str, list[tuple[float, float]]] = {"queue": [], "doorbell": []}
    for _ in range(args.runs):
        for mode in results:
            results[mode].append(run(mode, args.items, args.period_s))
    for mode, runs in results.items():
        figures = ", ".join(f"reader {r:.2f} writer {w:.2f}" for r, w in runs)
        print(f"{mode:9s} {figures}")
    queue_writer = sorted(w for _, w in results["queue"])[len(results["queue"]) // 2]
    bell_writer = sorted(w for _, w in results["doorbell"])[len(results["doorbell"]) // 2]
    print(f"ratio: the writer wakes {bell_writer:.2f} times per item with the doorbell, "
          f"{queue_writer:.2f} with queue.Queue alone (median): {bell_writer / queue_writer:.2f}x")


if __name__ == "__main__":
    main()
