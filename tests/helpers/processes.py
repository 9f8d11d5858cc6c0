"""Watching a p1logger child process from a test."""

from __future__ import annotations

import subprocess
import threading


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
