"""Sends line protocol to one InfluxDB target and says what became of every line.

`InfluxSink.write` takes line protocol (second precision) and reports what
became of every line: stored, rejected for good (saved to a dead-letter file),
or kept for the caller to spool and send again. What each HTTP status means
follows Telegraf's InfluxDB outputs:

- 2xx: stored.
- 400/422: the server refused some lines. They are isolated by bisecting the
  batch; rewriting the good lines is harmless because a point with the same
  series and timestamp overwrites itself, so nothing is duplicated.
- 413: the batch is too big; it is split in halves until it fits.
- 401/403/404: a configuration problem. Retrying cannot help, but the data is
  fine, so it is kept.
- 429, 5xx, refused connections and timeouts: retried with backoff; when the
  attempts run out the data is kept.

The HTTP itself (and everything that differs between InfluxDB 1.x and 2.x)
is in ``transports``. Secrets never reach a log line or a message.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import tenacity

from p1logger.contracts import Check, WriteKind, WriteResult
from p1logger.errors import ConfigError
from p1logger.outputs.influx.checks import influxdb_1_hint, is_influxdb_1
from p1logger.outputs.influx.target import InfluxTarget
from p1logger.outputs.influx.transports import HttpTransport, Reply, TransientError, http_text, one_line

logger = logging.getLogger(__name__)

# A persistent rejection (a field-type conflict on every telegram) is logged once, then summed up per interval.
REJECTION_LOG_INTERVAL_S = 60.0
# Rejected lines kept in the dead-letter file per interval: enough to see what is wrong, and a
# conflict on every telegram takes weeks, not hours, to reach the file's size limit.
DEAD_LETTER_LINES_PER_INTERVAL = 20
_DROPPED = re.compile(r"\bdropped=(\d+)")


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class _Tally:
    """What one write() did to its lines, filled in as the batch is split."""

    written: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (line, reason)
    kept: list[str] = field(default_factory=list)
    keep_kind: WriteKind | None = None
    keep_message: str = ""
    first_rejection: str = ""
    retry_after_s: float | None = None
    uncopied: int = 0  # rejected lines not identified (the server said how many; no bisection was needed)

    @property
    def rejected_count(self) -> int:
        return len(self.rejected) + self.uncopied

    def keep(self, lines: Sequence[str], kind: WriteKind, message: str) -> None:
        self.kept.extend(lines)
        if self.keep_kind is None:
            self.keep_kind, self.keep_message = kind, message


class InfluxSink:
    """Writes line protocol to one InfluxDB target. Use it from one thread.

    `sleep` waits between attempts; the default waits on `shutdown`, so a
    shutdown cuts a backoff short. Once `shutdown` is set no further attempt
    starts after the current one fails.
    """

    def __init__(
        self,
        target: InfluxTarget,
        *,
        dead_letter_path: Path | None,
        max_attempts: int = 5,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 60.0,
        backoff_jitter_s: float = 1.0,
        dead_letter_max_bytes: int = 16 * 1024 * 1024,
        shutdown: threading.Event | None = None,
        sleep: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = _utc_now,
        report_outages: bool = True,
    ) -> None:
        if max_attempts < 1:
            raise ConfigError(f"max_attempts must be at least 1, not {max_attempts}")
        self.target = target
        self.dead_letter_path = dead_letter_path
        self.dead_letter_max_bytes = dead_letter_max_bytes
        self._shutdown = shutdown if shutdown is not None else threading.Event()
        self._sleep = sleep if sleep is not None else self._interruptible_sleep
        self._clock = clock
        self._wall_clock = wall_clock
        self._max_attempts = max_attempts
        self._call_attempts = max_attempts
        self._backoff_max_s = backoff_max_s
        # backoff_initial_s * 2**(n-1) + uniform(0, jitter), capped in _wait: what
        # wait_exponential_jitter computes, but its `initial` is deprecated from tenacity
        # 9.2 on and its replacement `multiplier` is missing before, so it is composed
        # from parts that every tenacity >= 8.2 has.
        self._backoff = tenacity.wait_exponential(multiplier=backoff_initial_s) + tenacity.wait_random(
            0, backoff_jitter_s
        )
        self._transport: HttpTransport = target.transport()
        self._last_kind = WriteKind.OK
        # False when the caller logs outages itself (run's LineOutput): each failure is said once.
        self._report_outages = report_outages
        self._server_version: str | None = None
        self.rejection_log_interval_s = REJECTION_LOG_INTERVAL_S
        self._rejections_since: float | None = None
        self._rejected_unlogged = 0
        self._rejected_writes_unlogged = 0
        self._rejection_reason = ""
        self._dead_letter_window_at = clock()
        self._dead_lettered = 0
        self._begun: tuple[list[str], float] = ([], 0.0)

    def _interruptible_sleep(self, seconds: float) -> None:
        self._shutdown.wait(seconds)

    def close(self) -> None:
        self.flush_rejection_summary(force=True)
        self._transport.close()

    @property
    def transport(self) -> HttpTransport:
        return self._transport

    def check(self) -> list[Check]:
        """``doctor``'s checks for this target (see ``transports``)."""
        return self._transport.check()

    def __enter__(self) -> InfluxSink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"InfluxSink({self.target!r})"

    # -- writing

    def write(self, lines: Sequence[str], max_attempts: int | None = None) -> WriteResult:
        """Write line protocol lines (second precision) and report what became of each.

        Server and network trouble never raises: it is in the result, with the
        lines the caller must keep.  ``max_attempts`` overrides the retry budget
        for this call (a single-attempt probe while the database is known down).
        """
        self._call_attempts = max_attempts or self._max_attempts
        started = self._clock()
        tally = _Tally()
        if lines:
            self._store(list(lines), tally)
        return self._report(len(lines), tally, (self._clock() - started) * 1000.0)

    def _report(self, total: int, tally: _Tally, latency_ms: float) -> WriteResult:
        """The result of a write and its log lines, once every line is judged."""
        saved_note = self._dead_letter(tally.rejected, tally.uncopied) if tally.rejected_count else ""
        result = self._result(total, tally, saved_note, latency_ms)
        self._log(result, tally)
        return result

    def begin(self, lines: Sequence[str]) -> None:
        """Send one attempt of a write and return at once; ``finish`` reads the answer and reports.

        For a live second's write: its answer is read at the next flush, when it has long arrived, so
        the output thread does not wake a second time each second to wait for it.
        """
        self._begun = (list(lines), self._clock())
        self._transport.begin_post(lines)

    def finish(self) -> WriteResult:
        """What became of the write ``begin`` sent, as ``write(lines, max_attempts=1)`` would report it."""
        lines, started = self._begun
        self._begun = ([], 0.0)
        self._call_attempts = 1
        tally = _Tally()
        try:
            first: Reply | TransientError = self._checked(self._transport.finish_post())
        except TransientError as exc:
            first = exc
        self._store(lines, tally, first)
        waited_s = self._clock() - started
        return self._report(len(lines), tally, max(0.0, waited_s - self._transport.last_reply_age_s) * 1000.0)

    def _wait(self, state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, TransientError) and exc.retry_after_s is not None:
            return min(exc.retry_after_s, self._backoff_max_s)
        return min(float(self._backoff(state)), self._backoff_max_s)

    def _before_sleep(self, state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait_s = state.next_action.sleep if state.next_action else 0.0
        logger.info(
            "InfluxDB write attempt %d of %d failed (%s); trying again in %.1f s",
            state.attempt_number,
            self._call_attempts,
            exc,
            wait_s,
        )

    def _post_once(self, lines: Sequence[str]) -> Reply:
        return self._checked(self._transport.post(lines))

    @staticmethod
    def _checked(reply: Reply) -> Reply:
        if reply.status == 429 or reply.status >= 500:
            raise TransientError(http_text(reply.status, reply.reason), reply.retry_after_s)
        return reply

    def _post(self, lines: Sequence[str]) -> Reply:
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(TransientError),
            stop=tenacity.stop_after_attempt(self._call_attempts) | tenacity.stop_when_event_set(self._shutdown),
            wait=self._wait,
            sleep=self._sleep,
            before_sleep=self._before_sleep,
            reraise=True,
        )
        try:
            return retrying(self._post_once, lines)
        except TransientError as exc:
            exc.attempts = retrying.statistics.get("attempt_number", 1)
            raise

    def _store(self, lines: list[str], tally: _Tally, first: Reply | TransientError | None = None) -> None:
        """Write ``lines``, or judge ``first``, the answer to a write of them already sent."""
        if tally.keep_kind is not None:
            # The server already said it cannot take data now; asking again per half would only wait longer.
            tally.keep(lines, tally.keep_kind, tally.keep_message)
            return
        try:
            if isinstance(first, TransientError):
                raise first
            reply = first if first is not None else self._post(lines)
        except TransientError as exc:
            tally.retry_after_s = exc.retry_after_s
            tries = "1 attempt" if exc.attempts == 1 else f"{exc.attempts} attempts"
            tally.keep(
                lines, WriteKind.TRANSIENT, f"InfluxDB did not take the write after {tries} ({exc}); the data is kept"
            )
            return
        status = reply.status
        if 200 <= status < 300:
            tally.written += len(lines)
        elif status in (400, 422):
            tally.first_rejection = tally.first_rejection or reply.reason or f"HTTP {status}"
            dropped = _dropped(reply.reason, len(lines))
            if len(lines) == 1:
                tally.rejected.append((lines[0], http_text(status, reply.reason)))
            elif dropped is not None and not self._dead_letter_room(len(tally.rejected)):
                # A partial write stored the rest; bisecting would only find lines there is no room to keep.
                tally.written += len(lines) - dropped
                tally.uncopied += dropped
            else:
                self._split(lines, tally)
        elif status == 413:
            if len(lines) == 1:
                tally.rejected.append((lines[0], "HTTP 413: this one line is larger than the server accepts"))
            else:
                self._split(lines, tally)
        elif status in (401, 403):
            tally.keep(lines, WriteKind.AUTH, self._auth_message(status))
        elif status == 404:
            tally.keep(lines, WriteKind.NOT_FOUND, self._not_found_message(reply.reason))
        else:
            tally.keep(
                lines,
                WriteKind.UNEXPECTED,
                f"InfluxDB answered HTTP {status} ({reply.reason or 'no reason given'}); the data is kept",
            )

    def _dead_letter_room(self, pending: int) -> int:
        """How many more rejected lines the dead-letter file takes in this interval (``pending`` already found)."""
        if self.dead_letter_path is None:
            return 0
        now = self._clock()
        if now - self._dead_letter_window_at >= self.rejection_log_interval_s:
            self._dead_letter_window_at, self._dead_lettered = now, 0
        return max(0, DEAD_LETTER_LINES_PER_INTERVAL - self._dead_lettered - pending)

    def _split(self, lines: list[str], tally: _Tally) -> None:
        middle = len(lines) // 2
        self._store(lines[:middle], tally)
        self._store(lines[middle:], tally)

    def _auth_message(self, status: int) -> str:
        fix = self.target.transport_class.auth_fix(self.target)
        return f"InfluxDB refused the write (HTTP {status}): {fix}; the data is kept"

    def _not_found_message(self, reason: str) -> str:
        if self.target.api == "v2":
            # InfluxDB 1.x before 1.8 has no /api/v2/write: its 404 means the wrong API, not a missing bucket.
            if self._server_version is None:
                self._server_version = self._ping_version()
            if is_influxdb_1(self._server_version):
                return f"{influxdb_1_hint(self._server_version)}; the data is kept"
        where = self.target.describe_destination()
        fix = self.target.transport_class.not_found_fix(self.target)
        said = f" (InfluxDB said: {reason})" if reason else ""
        return f"InfluxDB has no {where}{said}: {fix}; the data is kept"

    def _ping_version(self) -> str:
        try:
            status, _, headers = self._transport.request("GET", "/ping", {})
        except Exception:  # noqa: BLE001 - only a better message is at stake; the write's own error stands
            return ""
        return headers.get("X-Influxdb-Version", "") if 200 <= status < 300 else ""

    # -- dead letters

    def _dead_letter(self, rejected: list[tuple[str, str]], uncopied: int) -> str:
        """Append rejected lines (up to the interval's quota) to the dead-letter file; a note for the message."""
        if self.dead_letter_path is None:
            return "not saved (no dead-letter file configured)"
        room = self._dead_letter_room(0)
        kept, skipped = rejected[:room], len(rejected) - min(room, len(rejected)) + uncopied
        over = (f"; {skipped} not saved (more than {DEAD_LETTER_LINES_PER_INTERVAL} in "
                f"{self.rejection_log_interval_s:.0f} s)") if skipped else ""
        if not kept:
            return f"counted{over}"
        stamp = self._wall_clock().astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        text = "".join(f"# {stamp} rejected by InfluxDB: {one_line(reason)}\n{line}\n" for line, reason in kept)
        try:
            size = self.dead_letter_path.stat().st_size if self.dead_letter_path.exists() else 0
            if size + len(text.encode("utf-8")) > self.dead_letter_max_bytes:
                return (
                    f"NOT saved: dead-letter file {self.dead_letter_path} reached its limit of "
                    f"{self.dead_letter_max_bytes} bytes; move it away"
                )
            self.dead_letter_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.dead_letter_path, "a", encoding="utf-8") as out:
                out.write(text)
        except OSError as exc:
            return f"NOT saved: cannot write dead-letter file {self.dead_letter_path}: {exc.strerror or exc}"
        self._dead_lettered += len(kept)
        return f"saved to {self.dead_letter_path}{over}"

    # -- reporting

    def _result(self, total: int, tally: _Tally, saved_note: str, latency_ms: float) -> WriteResult:
        rejected = tally.rejected_count
        rejection = (
            f"InfluxDB rejected {rejected} of {total} points ({tally.first_rejection}); they are {saved_note}"
            if rejected
            else ""
        )
        if tally.keep_kind is not None:
            kind, message = tally.keep_kind, tally.keep_message
            if tally.written or rejected:
                message += f"; {len(tally.kept)} of {total} points kept, {tally.written} stored"
            if rejection:
                message += f"; {rejection}"
        elif rejected:
            kind, message = WriteKind.REJECTED, f"{rejection}; the other {tally.written} are stored"
        else:
            kind, message = WriteKind.OK, f"{tally.written} points stored"
        return WriteResult(kind, tally.written, rejected, tuple(tally.kept), message, latency_ms, tally.retry_after_s)

    def _note_rejection(self, rejected: int, total: int, reason: str) -> None:
        """Log a rejection at once, then at most one summary per interval while it persists."""
        now = self._clock()
        if self._rejections_since is None:
            # The reason is logged once per write, not once per bisection step.
            logger.warning("InfluxDB rejected %d of %d points (%s); see %s", rejected, total, reason,
                           self.dead_letter_path or "the counters")
            self._rejections_since = now
            return
        self._rejected_unlogged += rejected
        self._rejected_writes_unlogged += 1
        self._rejection_reason = reason
        self.flush_rejection_summary(now)

    def flush_rejection_summary(self, now: float | None = None, *, force: bool = False) -> None:
        """The summary of rejections not logged yet, once the interval is over (or now, when forced)."""
        if self._rejections_since is None:
            return
        now = self._clock() if now is None else now
        if not force and now - self._rejections_since < self.rejection_log_interval_s:
            return
        if self._rejected_unlogged:
            logger.warning("InfluxDB rejected %d more points in %d writes in the last %.0f s (latest: %s); see %s",
                           self._rejected_unlogged, self._rejected_writes_unlogged, now - self._rejections_since,
                           self._rejection_reason, self.dead_letter_path or "the counters")
            self._rejections_since = now
        else:
            self._rejections_since = None  # quiet for a whole interval: the next one is news again
        self._rejected_unlogged = self._rejected_writes_unlogged = 0

    def _log(self, result: WriteResult, tally: _Tally) -> None:
        if tally.rejected_count:
            self._note_rejection(tally.rejected_count,
                                 result.points_written + result.points_rejected + result.points_kept,
                                 tally.first_rejection)
        if result.kind in (WriteKind.OK, WriteKind.REJECTED):
            if self._last_kind not in (WriteKind.OK, WriteKind.REJECTED) and self._report_outages:
                logger.info("InfluxDB takes writes again")
        elif result.kind is not self._last_kind and self._report_outages:
            # Said once when the trouble starts, not on every flush while it lasts.
            logger.error("%s", result.message)
        else:
            logger.debug("%s", result.message)
        self._last_kind = result.kind


def _dropped(reason: str, batch_points: int) -> int | None:
    """How many points a 400 "partial write ... dropped=N" says were refused (the rest were stored); else None."""
    match = _DROPPED.search(reason) if "partial write" in reason else None
    if match is None:
        return None
    dropped = int(match.group(1))
    return dropped if 0 < dropped <= batch_points else None
