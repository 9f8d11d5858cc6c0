"""Checks on readings that passed their CRC but cannot be right (pure: no I/O, no clock).

``MeterClock``: InfluxDB keeps one point per series and timestamp, so a meter
clock that stands still or steps back would make each new reading silently
overwrite an older one.  The guard notices, counts, warns once per episode,
and stores the affected telegrams at a time that overwrites nothing: the
receive time, or one second past the last stored time when that is later,
marked with the field ``clock_fallback=1i``.

``PLAUSIBLE``: a value no household meter can measure (930 V on a 230 V grid)
is a broken meter or a CRC collision.  It is still stored as sent, never
dropped silently, but counted, so ``health`` can point at the meter.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

logger = logging.getLogger(__name__)

# Field -> (lowest, highest) a meter on a household connection can measure, in the field's unit.
# Wide on purpose: only the impossible counts (a 400 V phase-to-phase fault is possible, 930 V is not;
# a household main fuse is at most a few hundred A; 250 kW is a large farm's connection).
PLAUSIBLE: dict[str, tuple[float, float]] = {
    "voltage_v": (0.0, 500.0),
    "current_a": (0.0, 1000.0),
    "import_w": (0.0, 250_000.0),
    "export_w": (0.0, 250_000.0),
    "demand_kw": (0.0, 250.0),
}


def implausible(field: str, value: float) -> bool:
    limits = PLAUSIBLE.get(field)
    return limits is not None and not limits[0] <= value <= limits[1]


# A receive time further than this from the meter's last stored time is a replay, not a clock to fall back on.
RECEIVE_TIME_WINDOW_S = 3600


@dataclass(slots=True)
class ClockStats:
    repeated: int = 0  # telegrams whose meter time equals the previous one
    backward: int = 0  # telegrams whose meter time is before the previous one
    episodes: int = 0  # runs of such telegrams, each warned about once


class MeterClock:
    """Per meter: the timestamp to store a telegram's instantaneous points at, and whether it is a fallback."""

    # Meters on one stream: one in practice; bounded so a garbled meter id cannot grow it.
    MAX_METERS = 16

    def __init__(self) -> None:
        self.stats = ClockStats()
        self._last_meter: dict[str, int] = {}  # meter -> the last meter time seen
        self._last_used: dict[str, int] = {}  # meter -> the last time a point was stored at
        self._in_episode: set[str] = set()

    def place(self, meter: str, meter_time_s: int, received_at_s: float) -> tuple[int, bool]:
        """(time to use, whether it is a fallback instead of the meter's time).

        A fallback is the receive time, or one second past the last stored time when that is later (or when
        the receive time is far off, as in a recording replayed today): a measurement keeps one series
        (InfluxDB 3 fixes its tags), so only distinct times keep readings apart.
        The meter's clock is used again once it passes the last stored time.
        """
        last_meter = self._last_meter.get(meter)
        last_used = self._last_used.get(meter)
        self._remember(self._last_meter, meter, meter_time_s)
        if last_used is None or meter_time_s > last_used:
            if meter in self._in_episode:
                self._in_episode.discard(meter)
                logger.info("meter %s: its clock is past the last stored time again (%d s)", meter, meter_time_s)
            self._remember(self._last_used, meter, meter_time_s)
            return meter_time_s, False
        if last_meter is not None and meter_time_s == last_meter:
            self.stats.repeated += 1
            what = "repeated its time"
        else:
            self.stats.backward += 1
            what = f"is {last_used - meter_time_s} s behind the last stored reading"
        # The receive time, unless it is far from the meter's (a recording replayed today): then just after.
        receive_s = int(received_at_s)
        placed = max(receive_s if abs(receive_s - last_used) <= RECEIVE_TIME_WINDOW_S else last_used + 1, last_used + 1)
        if meter not in self._in_episode:
            self._in_episode.add(meter)
            self.stats.episodes += 1
            logger.warning("meter %s: its clock %s (%d s, last stored %d s); until it passes that again, readings "
                           "are stored at the receive time (or a second after the last) and marked "
                           "clock_fallback=1; a meter whose clock stays wrong needs P1_TIMESTAMPS=receive",
                           meter, what, meter_time_s, last_used)
        self._remember(self._last_used, meter, placed)
        return placed, True

    def _remember(self, table: dict[str, int], meter: str, time_s: int) -> None:
        if meter not in table and len(table) >= self.MAX_METERS:
            table.clear()
            self._in_episode.clear()
        table[meter] = time_s
