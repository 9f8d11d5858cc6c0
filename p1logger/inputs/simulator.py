"""``P1_SOURCE=simulator``: the simulated meter (``p1logger.simulate``) as an input.

With a key it sends every telegram encrypted, as a Luxembourg Smarty does
(p1logger.dlms), so the decryption stage can be tried end to end.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Callable

from p1logger.errors import ConfigError
from p1logger.simulate import PROFILES, MeterModel

if TYPE_CHECKING:
    from p1logger.dlms import Keys

UTC = timezone.utc
_COUNTER_EPOCH_S = 1577836800  # 2020-01-01T00:00:00Z


class SimulatorSource:
    """``P1_SOURCE=simulator``: the model in-process, one telegram per second of its clock.

    At speed 1 the meter's clock follows the wall clock, so dashboards show "now".
    """

    def __init__(
        self,
        profile: str = "be3",
        speed: float = 1.0,
        start: datetime | None = None,
        seed: int = 1,
        sleep: Callable[[float], object] = time.sleep,
        wall_clock: Callable[[], float] = time.time,
        count: int | None = None,
        keys: Keys | None = None,
    ) -> None:
        if profile not in PROFILES:
            raise ConfigError(f"unknown simulator profile {profile!r}: use one of {', '.join(PROFILES)}")
        if not speed > 0:
            raise ConfigError(f"simulator speed must be positive, not {speed}")
        self.description = f"simulated {PROFILES[profile].description}"
        self._sleep = sleep
        self._interval_s = 1.0 / speed
        begin = start or datetime.fromtimestamp(int(wall_clock()), UTC)
        self.model = MeterModel(PROFILES[profile], begin, seed)
        self._first = True
        self._remaining = count
        self.keys = keys
        if keys is not None:
            self.description += ", encrypted"
        # Maker code + serial, as a Sagemcom meter's system title is built.
        self.system_title = b"SAG" + (int(PROFILES[profile].meter_id[-8:]) % (1 << 40)).to_bytes(5, "big")

    def read(self) -> bytes:
        if self._remaining is not None:
            if self._remaining <= 0:
                raise EOFError  # a bounded demo or test run ends like a file
            self._remaining -= 1
        if not self._first:
            self._sleep(self._interval_s)
            self.model.next_telegram()
        self._first = False
        telegram = self.model.telegram()
        if self.keys is None:
            return telegram
        from p1logger.dlms import encrypt

        return encrypt(telegram, self.keys, self.system_title, self.frame_counter())

    def frame_counter(self) -> int:
        """One more per telegram and never back across restarts: the meter clock's seconds since 2020."""
        return int(self.model.now.timestamp()) - _COUNTER_EPOCH_S

    def close(self) -> None:
        pass


def simulator_from_env(sleep: Callable[[float], object] = time.sleep) -> SimulatorSource:
    """``P1_SOURCE=simulator``, tuned by P1_SIMULATOR_PROFILE, _SPEED, _COUNT and _START."""
    from p1logger import settings

    start_text = settings.value("P1_SIMULATOR_START")
    start = datetime.fromisoformat(start_text) if start_text else None
    if start is not None and start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    return SimulatorSource(settings.value("P1_SIMULATOR_PROFILE"), speed=settings.value("P1_SIMULATOR_SPEED"),
                           start=start, sleep=sleep, count=settings.value("P1_SIMULATOR_COUNT") or None,
                           keys=simulator_keys(settings.value("P1_SIMULATOR_ENCRYPTION_KEY"),
                                               settings.value("P1_SIMULATOR_AUTHENTICATION_KEY")))


def simulator_keys(encryption: str | None, authentication: str | None,
                   names: tuple[str, str] = ("P1_SIMULATOR_ENCRYPTION_KEY", "P1_SIMULATOR_AUTHENTICATION_KEY"),
                   ) -> Keys | None:
    """The simulated meter's keys: with one, it sends encrypted frames."""
    from p1logger.dlms import Keys, parse_key

    if not encryption:
        if authentication:
            raise ConfigError(f"{names[1]} is set but {names[0]} is not: set both, or neither")
        return None
    return Keys(parse_key(encryption, names[0]), parse_key(authentication, names[1]) if authentication else None)
