"""Watching a p1logger child process from a test."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path


class StderrLines:
    """Collects a child's stderr lines as they come, so a test can wait for one."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert process.stderr is not None
        self._thread = threading.Thread(target=self._collect, args=(process.stderr,), daemon=True)
        self._thread.start()

    def _collect(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.lines.append(line)

    def text(self) -> str:
        self._thread.join(timeout=5)
        return "".join(self.lines)


def log_tail(path: Path, chars: int = 2000) -> str:
    """The end of a server's log, for the message of a failed start."""
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def start_server(command: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    """A server started in its own session, its output appended to ``log_path`` (read by ``log_tail``)."""
    log = open(log_path, "ab")  # noqa: SIM115 - the child keeps it
    try:
        return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    finally:
        log.close()


def stop_process(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM (a server saves its state and exits), then SIGKILL if it has not gone within 10 s."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
