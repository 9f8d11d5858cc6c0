"""A simulated smart meter, so a newcomer without one still sees live dashboards.

The model is deterministic for a given start time and seed: a household load
curve (morning and evening peaks) with solar injection around midday, energy
counters that only ever grow, tariffs that switch at the hours the country
uses, a gas meter reporting every 5 minutes (Belgium) or every hour (the
Netherlands), a water meter, and Belgian capacity-tariff values computed from
its own quarter-hour averages.  Telegrams follow the DSMR 5 / e-MUCS line
format with a valid CRC.  With a key, every telegram is sent encrypted, as a
Luxembourg Smarty or an Austrian Sagemcom T210-D does (see p1logger.dlms), so
the decryption stage can be tried end to end without such a meter.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from p1logger.crc import crc16

UTC = timezone.utc
QUARTER_S = 900


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    header: str
    country: str
    zone: str
    phases: int
    belgian: bool  # e-MUCS lines and the capacity tariff
    gas_interval_s: int
    meter_id: str
    gas_id: str
    water_id: str


PROFILES: dict[str, Profile] = {
    "be3": Profile("be3", "Belgian three-phase meter (e-MUCS, Sagemcom T211-D style)", "FLU5\\253769484_A", "BE",
                   "Europe/Brussels", 3, True, 300, "1SAG1100000001", "7FLO2100000001", "8SAG1200000001"),
    "be1": Profile("be1", "Belgian single-phase meter (e-MUCS, Sagemcom S211 style)", "FLU5\\253770234_A", "BE",
                   "Europe/Brussels", 1, True, 300, "1SAG1100000002", "7FLO2100000002", "8SAG1200000002"),
    "nl": Profile("nl", "Dutch DSMR 5 meter (Iskra AM550 style)", "ISK5\\2M550T-1012", "NL",
                  "Europe/Amsterdam", 3, False, 3600, "E0044007100000001", "G0044007100000001",
                  "W0044007100000001"),
    # Sends its telegrams encrypted when given a key (--encryption-key), as the real one always does.
    "lu": Profile("lu", "Luxembourg Smarty (Sagemcom T210-D); encrypted with --encryption-key", "Lux5\\253694471_M",
                  "LU", "Europe/Luxembourg", 3, False, 300, "SAG1030700112345", "FLO1899000603551",
                  "ELS3535899803300"),
}


def _with_crc(lines: list[str]) -> bytes:
    body = ("\r\n".join(lines) + "\r\n!").encode("ascii")
    return body + f"{crc16(body):04X}\r\n".encode("ascii")


def _hex(text: str) -> str:
    return text.encode("ascii").hex().upper()


def _stamp(moment: datetime, zone: ZoneInfo) -> str:
    local = moment.astimezone(zone)
    return local.strftime("%y%m%d%H%M%S") + ("S" if local.dst() else "W")


def load_kw(local: datetime, rng: random.Random) -> float:
    """Household demand: a base load, a morning and a larger evening peak, some noise."""
    hour = local.hour + local.minute / 60 + local.second / 3600
    base = 0.25
    morning = 1.2 * math.exp(-((hour - 7.5) ** 2) / 0.8)
    evening = 2.4 * math.exp(-((hour - 19.0) ** 2) / 2.0)
    weekend = 0.4 if local.weekday() >= 5 and 9 <= hour <= 17 else 0.0
    # Short appliance bursts (kettle, oven) make the quarter-hour peaks realistic.
    burst = 2.0 if rng.random() < 0.01 else 0.0
    return max(0.05, base + morning + evening + weekend + burst + rng.gauss(0, 0.05))


def solar_kw(local: datetime) -> float:
    """A clear-sky bell around 13:00 local, longer and higher in summer."""
    hour = local.hour + local.minute / 60 + local.second / 3600
    day = local.timetuple().tm_yday
    season = 0.55 + 0.45 * math.cos(2 * math.pi * (day - 172) / 365)  # 1.0 at midsummer
    width = 2.2 + 1.3 * season
    return max(0.0, 4.0 * season * math.exp(-((hour - 13.0) ** 2) / (2 * width**2)) - 0.05)


def tariff(profile: Profile, local: datetime) -> int:
    """Tariff 1 is day in Belgium but low (night) in the Netherlands."""
    weekend = local.weekday() >= 5
    if profile.country == "BE":
        return 1 if (not weekend and 7 <= local.hour < 22) else 2
    return 1 if (weekend or local.hour >= 23 or local.hour < 7) else 2


@dataclass
class MeterModel:
    profile: Profile
    start: datetime
    seed: int = 1
    zone: ZoneInfo = field(init=False)
    rng: random.Random = field(init=False)
    now: datetime = field(init=False)
    import_kwh: dict[int, float] = field(init=False)
    export_kwh: dict[int, float] = field(init=False)
    gas_m3: float = 1234.567
    water_m3: float = 87.5
    import_w: float = 0.0
    export_w: float = 0.0
    quarter_start: datetime = field(init=False)
    quarter_start_kwh: float = 0.0
    month_peak: tuple[datetime, float] | None = None
    peak_month: str = ""  # "YYYY-MM" the running peak belongs to
    history: list[tuple[str, datetime, float]] = field(init=False)  # (month "YYYY-MM", occurred, kW)
    gas_captured: tuple[datetime, float] = field(init=False)
    water_captured: tuple[datetime, float] = field(init=False)

    def __post_init__(self) -> None:
        self.zone = ZoneInfo(self.profile.zone)
        self.rng = random.Random(self.seed)
        start = self.start.astimezone(UTC).replace(microsecond=0)
        self.import_kwh = {1: 3120.412, 2: 2841.105}
        self.export_kwh = {1: 1510.218, 2: 402.337}
        # Begin at the start of the quarter so the first capacity values are whole.
        self.now = self._quarter_floor(start)
        self.quarter_start = self.now
        self.quarter_start_kwh = self.total_import_kwh
        self.history = self._past_history(start)
        self._seed_month_peak(start)
        self.gas_captured = (self._capture_floor(self.now), self.gas_m3)
        self.water_captured = (self._capture_floor(self.now), self.water_m3)
        while self.now < start:
            self._step()

    @property
    def total_import_kwh(self) -> float:
        return sum(self.import_kwh.values())

    def _quarter_floor(self, moment: datetime) -> datetime:
        # Quarters are aligned to the meter's clock, which runs in whole hours offset from UTC here.
        epoch = int(moment.timestamp())
        return datetime.fromtimestamp(epoch - epoch % QUARTER_S, UTC)

    def _capture_floor(self, moment: datetime) -> datetime:
        epoch = int(moment.timestamp())
        return datetime.fromtimestamp(epoch - epoch % self.profile.gas_interval_s, UTC)

    def _past_history(self, start: datetime) -> list[tuple[str, datetime, float]]:
        """Thirteen plausible past monthly peaks, so the capacity dashboard is not empty."""
        rng = random.Random(self.seed * 7919)
        local = start.astimezone(self.zone)
        year, month = local.year, local.month
        history = []
        for _ in range(13):
            year, month = (year - 1, 12) if month == 1 else (year, month - 1)
            occurred = datetime(year, month, rng.randint(1, 28), rng.choice((7, 8, 18, 19, 20)),
                                rng.choice((0, 15, 30, 45)), tzinfo=self.zone)
            history.append((f"{year:04d}-{month:02d}", occurred.astimezone(UTC), round(rng.uniform(2.0, 6.5), 3)))
        return history

    def _label(self, moment: datetime) -> str:
        local = moment.astimezone(self.zone)
        return f"{local.year:04d}-{local.month:02d}"

    def _seed_month_peak(self, start: datetime) -> None:
        """A peak from earlier this month, as a meter that has been running would show."""
        local = start.astimezone(self.zone)
        self.peak_month = self._label(start)
        if local.day > 1:
            rng = random.Random(self.seed * 104729)
            occurred = datetime(local.year, local.month, rng.randint(1, local.day - 1), 19, 15, tzinfo=self.zone)
            self.month_peak = (occurred.astimezone(UTC), round(rng.uniform(1.5, 3.5), 3))

    def _step(self) -> None:
        """Advance one second."""
        local = self.now.astimezone(self.zone)
        net_kw = load_kw(local, self.rng) - solar_kw(local)
        self.import_w = max(net_kw, 0.0) * 1000
        self.export_w = max(-net_kw, 0.0) * 1000
        active = tariff(self.profile, local)
        self.import_kwh[active] += self.import_w / 3_600_000
        self.export_kwh[active] += self.export_w / 3_600_000
        # Gas for heating and hot water, more in winter and in the evening.
        winter = 0.5 + 0.5 * math.cos(2 * math.pi * (local.timetuple().tm_yday - 15) / 365)
        self.gas_m3 += (0.00002 + 0.0001 * winter * (1.5 if 6 <= local.hour <= 22 else 0.5)) * self.rng.random()
        if self.rng.random() < 0.02:
            self.water_m3 += 0.001 * self.rng.randint(1, 8)
        self.now += timedelta(seconds=1)
        if int(self.now.timestamp()) % QUARTER_S == 0:
            self._close_quarter()
        if int(self.now.timestamp()) % self.profile.gas_interval_s == 0:
            self.gas_captured = (self.now, self.gas_m3)
            self.water_captured = (self.now, self.water_m3)

    def _close_quarter(self) -> None:
        average_kw = round((self.total_import_kwh - self.quarter_start_kwh) * 4, 3)
        # The quarter that ends at 00:00 on the 1st still belongs to the month it was measured in.
        label = self._label(self.now - timedelta(seconds=1))
        if label != self.peak_month:
            if self.month_peak is not None:
                self.history.insert(0, (self.peak_month, self.month_peak[0], self.month_peak[1]))
                del self.history[13:]
            self.month_peak = None
            self.peak_month = label
        if self.month_peak is None or average_kw > self.month_peak[1]:
            self.month_peak = (self.now, average_kw)
        self.quarter_start = self.now
        self.quarter_start_kwh = self.total_import_kwh

    def advance_to(self, moment: datetime) -> None:
        target = moment.astimezone(UTC).replace(microsecond=0)
        while self.now < target:
            self._step()

    def demand_kw(self) -> float:
        """1-0:1.4.0: the running quarter's average demand so far."""
        elapsed_s = (self.now - self.quarter_start).total_seconds()
        if elapsed_s <= 0:
            return 0.0
        return (self.total_import_kwh - self.quarter_start_kwh) * 3600 / elapsed_s

    def telegram(self) -> bytes:
        """The telegram for the current second, CRC included."""
        p = self.profile
        z = self.zone
        if p.country == "LU":
            return _with_crc(self._luxembourg_lines())
        lines = [f"/{p.header}", ""]
        if p.belgian:
            lines += ["0-0:96.1.4(50217)", f"0-0:96.1.1({_hex(p.meter_id)})", f"0-0:1.0.0({_stamp(self.now, z)})"]
        else:
            lines += ["1-3:0.2.8(50)", f"0-0:1.0.0({_stamp(self.now, z)})", f"0-0:96.1.1({_hex(p.meter_id)})"]
        lines += [
            f"1-0:1.8.1({self.import_kwh[1]:010.3f}*kWh)",
            f"1-0:1.8.2({self.import_kwh[2]:010.3f}*kWh)",
            f"1-0:2.8.1({self.export_kwh[1]:010.3f}*kWh)",
            f"1-0:2.8.2({self.export_kwh[2]:010.3f}*kWh)",
            f"0-0:96.14.0({tariff(p, self.now.astimezone(z)):04d})",
        ]
        if p.belgian:
            month_local = self.now.astimezone(z)
            month_start = datetime(month_local.year, month_local.month, 1, tzinfo=z).astimezone(UTC)
            current = self.month_peak if self.peak_month == self._label(self.now) else None
            peak_time, peak_kw = current or (month_start, 0.0)
            history = "".join(
                f"({_stamp(self._month_after(month), z)})({_stamp(occurred, z)})({kw:06.3f}*kW)"
                for month, occurred, kw in self.history
            )
            lines += [
                f"1-0:1.4.0({self.demand_kw():06.3f}*kW)",
                f"1-0:1.6.0({_stamp(peak_time, z)})({peak_kw:06.3f}*kW)",
                f"0-0:98.1.0({len(self.history)})(1-0:1.6.0)(1-0:1.6.0){history}",
            ]
        lines += [f"1-0:1.7.0({self.import_w / 1000:06.3f}*kW)", f"1-0:2.7.0({self.export_w / 1000:06.3f}*kW)"]
        if not p.belgian:
            lines += ["0-0:96.7.21(00004)", "0-0:96.7.9(00002)", "1-0:99.97.0(0)(0-0:96.7.19)",
                      "1-0:32.32.0(00002)", "1-0:32.36.0(00000)", "0-0:96.13.0()"]
        shares = (0.5, 0.3, 0.2)[: p.phases] if p.phases == 3 else (1.0,)
        volts = [round(230 + 4 * math.sin(self.now.timestamp() / 600 + i) + self.rng.gauss(0, 0.4), 1)
                 for i in range(p.phases)]
        codes = ((21, 22, 32, 31), (41, 42, 52, 51), (61, 62, 72, 71))[: p.phases]
        power_lines, voltage_lines, current_lines = [], [], []
        for (imp, exp, volt, amp), share, voltage in zip(codes, shares, volts):
            phase_import_kw = self.import_w * share / 1000
            phase_export_kw = self.export_w * share / 1000
            power_lines += [f"1-0:{imp}.7.0({phase_import_kw:06.3f}*kW)", f"1-0:{exp}.7.0({phase_export_kw:06.3f}*kW)"]
            voltage_lines.append(f"1-0:{volt}.7.0({voltage:05.1f}*V)")
            amps = (phase_import_kw + phase_export_kw) * 1000 / voltage
            current_lines.append(f"1-0:{amp}.7.0({amps:06.2f}*A)" if p.belgian else f"1-0:{amp}.7.0({round(amps):03d}*A)")
        lines += power_lines[0::2] + power_lines[1::2] + voltage_lines + current_lines
        if p.belgian:
            lines += ["0-0:96.3.10(1)", "0-0:17.0.0(999.9*kW)", "1-0:31.4.0(999*A)", "0-0:96.13.0()"]
        gas_time, gas = self.gas_captured
        water_time, water = self.water_captured
        gas_obis = "24.2.3" if p.belgian else "24.2.1"
        lines += [
            "0-1:24.1.0(003)", f"0-1:96.1.{'1' if p.belgian else '0'}({_hex(p.gas_id)})",
            f"0-1:{gas_obis}({_stamp(gas_time, z)})({gas:09.3f}*m3)",
            "0-2:24.1.0(007)", f"0-2:96.1.{'1' if p.belgian else '0'}({_hex(p.water_id)})",
            f"0-2:24.2.1({_stamp(water_time, z)})({water:09.3f}*m3)",
        ]
        body = ("\r\n".join(lines) + "\r\n!").encode("ascii")
        return body + f"{crc16(body):04X}\r\n".encode("ascii")

    def _luxembourg_lines(self) -> list[str]:
        """The Smarty's layout (Luxmetering P1 specification): one energy register per
        direction, reactive energy and power, apparent power, and gas on channel 1."""
        p = self.profile
        z = self.zone
        import_kwh, export_kwh = self.total_import_kwh, sum(self.export_kwh.values())
        volts = [round(230 + 3 * math.sin(self.now.timestamp() / 700 + i) + self.rng.gauss(0, 0.4), 1) for i in range(3)]
        shares = (0.5, 0.3, 0.2)
        gas_time, gas = self.gas_captured
        lines = [
            f"/{p.header}", "", "1-3:0.2.8(42)", f"0-0:1.0.0({_stamp(self.now, z)})", f"0-0:42.0.0({_hex(p.meter_id)})",
            f"1-0:1.8.0({import_kwh:010.3f}*kWh)", f"1-0:2.8.0({export_kwh:010.3f}*kWh)",
            # Reactive energy follows the active energy here: a household's is a few percent of it.
            f"1-0:3.8.0({import_kwh * 0.04:010.3f}*kvarh)", f"1-0:4.8.0({import_kwh * 0.11:010.3f}*kvarh)",
            f"1-0:1.7.0({self.import_w / 1000:06.3f}*kW)", f"1-0:2.7.0({self.export_w / 1000:06.3f}*kW)",
            f"1-0:3.7.0({self.import_w * 0.00004:06.3f}*kvar)", f"1-0:4.7.0({self.import_w * 0.00011:06.3f}*kvar)",
            "0-0:17.0.0(069.0*kVA)",
            f"1-0:9.7.0({self.import_w * 1.006 / 1000:06.3f}*kVA)", f"1-0:10.7.0({self.export_w * 1.006 / 1000:06.3f}*kVA)",
            "0-0:96.3.10(1)", "0-0:96.7.21(00004)", "1-0:32.32.0(00002)", "1-0:52.32.0(00001)", "1-0:72.32.0(00000)",
            "1-0:32.36.0(00000)", "1-0:52.36.0(00000)", "1-0:72.36.0(00000)",
            "0-0:96.13.0()", "0-0:96.13.2()", "0-0:96.13.3()", "0-0:96.13.4()", "0-0:96.13.5()",
        ]
        lines += [f"1-0:{code}.7.0({volt:05.1f}*V)" for code, volt in zip((32, 52, 72), volts)]
        lines += [f"1-0:{code}.7.0({round((self.import_w + self.export_w) * share / volt):03d}*A)"
                  for code, share, volt in zip((31, 51, 71), shares, volts)]
        lines += [f"1-0:{code}.7.0({self.import_w * share / 1000:06.3f}*kW)" for code, share in zip((21, 41, 61), shares)]
        lines += [f"1-0:{code}.7.0({self.export_w * share / 1000:06.3f}*kW)" for code, share in zip((22, 42, 62), shares)]
        lines += ["0-1:24.1.0(003)", f"0-1:96.1.0({_hex(p.gas_id)})", f"0-1:24.2.1({_stamp(gas_time, z)})({gas:09.3f}*m3)",
                  "0-1:24.4.0(1)"]
        return lines

    def _month_after(self, month: str) -> datetime:
        """The stamp the meter gives a history entry: 00:00 on the first of the next month."""
        year, number = int(month[:4]), int(month[5:7])
        year, number = (year + 1, 1) if number == 12 else (year, number + 1)
        return datetime(year, number, 1, tzinfo=self.zone).astimezone(UTC)

    def next_telegram(self) -> bytes:
        self.advance_to(self.now + timedelta(seconds=1))
        return self.telegram()
