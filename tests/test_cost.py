"""Energy cost: a simulated week priced by hand, and by ``p1logger cost`` and the stored ``cost`` points.

The week and the hand computation are in ``helpers.cost_week`` (the MQTT test
checks the published state against the same figures).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from helpers.cost_week import (CENT, DAYS, DYNAMIC, EUR_KEYS, SCENARIOS, TIMESTAMPS, WEEK_S, WEEK_START, ZONE,
                               ZONE_NAME, Seen, Week, by_hand, cli_env, local_day, log_messages, make_week, p1logger,
                               price, prices_csv, tariff_files, week_total)
from helpers.influx_servers import InfluxServer

from p1logger.cli import main as cli_main
from p1logger.cost import CostSummary, CostTracker
from p1logger.reader import TelegramReader
from p1logger.simulate import PROFILES, MeterModel
from p1logger.timestamps import TimestampParser



@pytest.fixture(scope="module")
def week() -> Week:
    return make_week()


# --------------------------------------------------------------------------- p1logger cost agrees


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_p1logger_cost_agrees_with_the_week_worked_out_by_hand(
    scenario: str, week: Week, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recording = tmp_path / "week.txt"
    recording.write_bytes(week.raw)
    tariff = tariff_files(tmp_path / "tariff", scenario)
    expected = by_hand(week.seen, SCENARIOS[scenario][1])
    assert sorted(expected) == DAYS

    code = cli_main(["cost", "--input", str(recording), "--tariff", str(tariff), "--timezone", ZONE_NAME,
                     "--format", "json"])
    out = capsys.readouterr().out
    assert code == 0
    result = json.loads(out)

    assert result["from"] == "2026-03-23T00:00:00+01:00"
    assert result["to"] == "2026-03-30T00:00:00+02:00"
    # Every quarter of the week once: 96 a day, 92 on the day summer time starts.
    assert result["quarters"] == 6 * 96 + 92
    assert result["quarters_unpriced"] == 0
    assert [day["date"] for day in result["days"]] == [d.isoformat() for d in DAYS]
    for day in result["days"]:
        hand = expected[date.fromisoformat(day["date"])]
        for key in EUR_KEYS:
            assert abs(day[key] - hand[key]) <= CENT, (day["date"], key, day[key], hand[key])
        assert abs(day["import_kwh"] - hand["import_kwh"]) <= 0.0005
        assert abs(day["gas_m3"] - hand["gas_m3"]) <= 0.0005
    total = week_total(expected)
    for key in EUR_KEYS:
        assert abs(result[key] - total[key]) <= CENT, (key, result[key], total[key])
    if scenario == "switch":
        # The switch is visible: Wednesday pays the fixed contract's day charge, Thursday the dynamic one's.
        fixed = {day["date"]: day["fixed_eur"] for day in result["days"]}
        assert (fixed["2026-03-25"], fixed["2026-03-26"]) == (0.25, 0.32)


def test_the_table_shows_each_local_day_and_the_total(
    week: Week, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recording = tmp_path / "week.txt"
    recording.write_bytes(week.raw)
    tariff = tariff_files(tmp_path / "tariff", "fixed")
    assert cli_main(["cost", "--input", str(recording), "--tariff", str(tariff), "--timezone", ZONE_NAME]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("== energy cost from 2026-03-23T00:00:00+01:00 to 2026-03-30T00:00:00+02:00 "
                        "(Europe/Brussels)")
    assert [line.split()[0] for line in lines[3:10]] == [d.isoformat() for d in DAYS]
    total = week_total(by_hand(week.seen, SCENARIOS["fixed"][1]))
    assert lines[11].split()[0] == "total"
    assert abs(float(lines[11].split()[-1]) - total["total_eur"]) <= CENT


# --------------------------------------------------------------------------- the tracker itself


def telegrams(raw: bytes) -> list[Any]:
    reader = TelegramReader(TIMESTAMPS)
    return reader.feed(raw)


def test_live_figures_follow_the_quarters(week: Week, tmp_path: Path) -> None:
    from p1logger.tariff import load_tariff

    tariff = load_tariff(tariff_files(tmp_path, "switch"), ZONE)
    finished: list[Any] = []
    tracker = CostTracker(tariff, ZONE, on_quarter=finished.append)
    noon = int(datetime(2026, 3, 27, 12, 0, tzinfo=ZONE).timestamp())
    stored: list[str] = []
    for telegram in telegrams(week.raw):
        stored += tracker.build(telegram, 0.0)
        if int(telegram.timestamp.timestamp()) == noon:
            break
    figures = tracker.figures()
    assert figures is not None
    # Friday noon: the quarter 12:00-12:15 has just begun; 48 quarters of Friday are finished.
    friday = [q for q in finished if q.day == date(2026, 3, 27)]
    assert len(friday) == 48
    fixed_share = 0.30 * 1.06 / 96
    assert figures["quarter_start"] == "2026-03-27T11:00:00Z"
    assert figures["quarter_total_eur"] == round(fixed_share, 6)
    assert figures["import_price_eur_per_kwh"] == round(price(DYNAMIC, "import", 1, noon), 6)
    assert figures["export_price_eur_per_kwh"] == round(price(DYNAMIC, "export", 1, noon), 6)
    assert figures["today_total_eur"] == pytest.approx(sum(q.total_eur for q in friday) + fixed_share, abs=1e-6)
    last = stored[-1]
    assert last.startswith("cost,meter=1SAG1100000001 ")
    assert last.endswith(f" {noon - 900}")
    assert f"total_eur={figures['last_quarter_total_eur']!r}" in last
    assert figures["prices_missing"] is False


def test_counter_reset_and_clock_step_back_cost_nothing_negative_or_twice(week: Week, tmp_path: Path) -> None:
    from p1logger.tariff import load_tariff

    tariff = load_tariff(tariff_files(tmp_path, "fixed"), ZONE)
    decoded = telegrams(week.raw)[:13]  # the first hour: 00:00 to 01:00
    summary = CostSummary(ZONE)
    tracker = CostTracker(tariff, ZONE, on_quarter=summary.add)
    for telegram in decoded[:7]:
        tracker.build(telegram, 0.0)
    # The same telegram again, and one from 10 minutes before: a new baseline, nothing counted.
    tracker.build(decoded[6], 0.0)
    tracker.build(decoded[4], 0.0)
    # The meter restarts with its import counters 2800 kWh lower, and counts on from there.
    for telegram in decoded[7:]:
        for obis in ("1-0:1.8.1", "1-0:1.8.2"):
            reading = telegram.fields[obis]
            telegram.fields[obis] = reading._replace(value=round(reading.value - 2800.0, 3))
    for telegram in decoded[7:]:
        tracker.build(telegram, 0.0)
    assert (tracker.stats.clock_steps_back, tracker.stats.counter_resets) == (1, 2)
    seen = week.seen[:13]
    # Expected: the first 30 minutes, and 30:00-35:00 not at all (the reset), then 35:00 to 60:00.
    hand_kwh = sum(seen[6].imports[r] - seen[0].imports[r] + seen[12].imports[r] - seen[7].imports[r] for r in (1, 2))
    assert summary.total.import_kwh == pytest.approx(hand_kwh, abs=1e-9)
    assert summary.total.quarters == 4
    assert all(day.import_eur >= 0 for day in summary.days.values())


def test_a_counter_that_jumps_up_is_not_energy(week: Week, tmp_path: Path) -> None:
    from p1logger.tariff import load_tariff

    tariff = load_tariff(tariff_files(tmp_path, "fixed"), ZONE)
    decoded = telegrams(week.raw)[:4]
    reading = decoded[2].fields["1-0:1.8.1"]
    decoded[2].fields["1-0:1.8.1"] = reading._replace(value=reading.value + 500.0)  # 500 kWh in 5 minutes
    summary = CostSummary(ZONE)
    tracker = CostTracker(tariff, ZONE, on_quarter=summary.add)
    for telegram in decoded:
        tracker.build(telegram, 0.0)
    tracker.finish()
    seen = week.seen
    # 00:05-00:10 register 1 is skipped; at 00:15 it drops back by 500 and is skipped again.
    expected = (seen[1].imports[1] - seen[0].imports[1]) + sum(seen[3].imports[2] - seen[0].imports[2] for _ in [0])
    assert tracker.stats.counter_resets == 2
    assert summary.total.import_kwh == pytest.approx(expected, abs=1e-9)


def test_prices_that_run_out_warn_once_and_come_back_when_the_csv_grows(
    week: Week, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from p1logger.tariff import load_tariff

    folder = tmp_path / "t"
    path = tariff_files(folder, "dynamic")
    # Prices from Monday 00:00 to 06:00 local only.
    prices_csv(folder / "prices.csv", quarters=24)
    tariff = load_tariff(path, ZONE)
    summary = CostSummary(ZONE)
    tracker = CostTracker(tariff, ZONE, on_quarter=summary.add)
    decoded = telegrams(week.raw)
    caplog.set_level("WARNING", logger="p1logger.cost")
    for telegram in decoded[: 12 * 8 + 1]:  # to 08:00
        tracker.build(telegram, 0.0)
    figures = tracker.figures()
    assert figures is not None and figures["prices_missing"] is True and figures["import_price_eur_per_kwh"] is None
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert warnings[0].startswith("no import price for the quarter from 2026-03-23T06:00+01:00")
    assert f"{folder / 'prices.csv'} ends at 2026-03-23T06:00+01:00" in warnings[0]
    assert summary.total.quarters == 32 and summary.total.quarters_unpriced == 8
    # The kWh of the unpriced quarters are kept, without euros.
    assert summary.total.import_kwh == pytest.approx(sum(week.seen[96].imports.values())
                                                     - sum(week.seen[0].imports.values()), abs=1e-9)
    # A daily fetch writes the rest; the next quarter is priced again.
    prices_csv(folder / "prices.csv")
    import os
    os.utime(folder / "prices.csv", ns=(1, 1))
    for telegram in decoded[12 * 8 + 1: 12 * 8 + 4]:
        tracker.build(telegram, 0.0)
    assert tracker.figures()["prices_missing"] is False  # type: ignore[index]
    assert [r.getMessage() for r in caplog.records][1] == (
        "prices are back from 2026-03-23T08:00+01:00; 8 quarters since 2026-03-23T06:00+01:00 have no euros")


# --------------------------------------------------------------------------- stored points agree


def test_stored_cost_points_agree_with_the_week_worked_out_by_hand(
    week: Week, influxd: InfluxServer, influx_db: str, tmp_path: Path
) -> None:
    recording = tmp_path / "week.txt"
    recording.write_bytes(week.raw)
    tariff = tariff_files(tmp_path / "tariff", "switch")
    env = cli_env(P1_SOURCE=f"file:{recording}", INFLUX_API="v1", INFLUX_URL=influxd.url, INFLUX_BUCKET=influx_db,
                  P1_SPOOL_DIR=tmp_path / "spool", P1_TIMEZONE=ZONE_NAME, P1_TARIFF_FILE=tariff)
    result = p1logger("run", env=env, timeout_s=120)
    assert result.returncode == 0, result.stderr
    assert not [m for m in log_messages(result.stderr) if "price" in m], result.stderr

    rows = influxd.rows(influx_db, "cost")
    assert len(rows) == 6 * 96 + 92
    assert {row["meter"] for row in rows} == {"1SAG1100000001"}
    assert rows[0]["time"] == int(WEEK_START.timestamp())
    assert rows[-1]["time"] == int(WEEK_START.timestamp()) + WEEK_S - 900
    expected = by_hand(week.seen, SCENARIOS["switch"][1])
    stored: dict[date, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for row in rows:
        for key in EUR_KEYS:
            stored[local_day(row["time"])][key] += row[key]
    for day in DAYS:
        for key in EUR_KEYS:
            assert abs(stored[day][key] - expected[day][key]) <= CENT, (day, key)
    total = week_total(expected)
    summed = influxd.query("SELECT sum(total_eur) FROM cost", influx_db)["results"][0]["series"][0]["values"][0][1]
    assert abs(summed - total["total_eur"]) <= CENT
    # The dashboards' "by day" query: InfluxQL days in the meter's zone.
    by_day = influxd.query(f"SELECT sum(total_eur) FROM cost WHERE time >= '2026-03-22T23:00:00Z' AND "
                           f"time < '2026-03-29T22:00:00Z' GROUP BY time(1d) tz('{ZONE_NAME}')",
                           influx_db)["results"][0]["series"][0]["values"]
    assert len(by_day) == 7
    for (_, value), day in zip(by_day, DAYS):
        assert abs(value - expected[day]["total_eur"]) <= CENT, day


# --------------------------------------------------------------------------- a Dutch meter


def test_a_dutch_day_with_hourly_gas(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Register 1 is the low rate in the Netherlands; gas comes once an hour with its capture time."""
    zone = TimestampParser("Europe/Amsterdam").zone
    model = MeterModel(PROFILES["nl"], datetime(2026, 6, 1, tzinfo=zone).astimezone(timezone.utc), seed=5)
    seen: list[Seen] = []
    raw = b""
    start_s = int(datetime(2026, 6, 1, tzinfo=zone).timestamp())
    for offset in range(0, 86400 + 1, 300):
        model.advance_to(datetime.fromtimestamp(start_s + offset, timezone.utc))
        telegram = model.telegram()
        raw += telegram
        text = telegram.decode("ascii")
        gas = re.search(r"^0-1:24\.2\.1\((\w+)\)\((\d+\.\d+)\*m3\)", text, re.MULTILINE)
        assert gas
        seen.append(Seen(start_s + offset, {1: _kwh(text, "1.8.1"), 2: _kwh(text, "1.8.2")},
                         {1: _kwh(text, "2.8.1"), 2: _kwh(text, "2.8.2")}, (gas.group(1), float(gas.group(2))),
                         ("", 0.0)))
    (tmp_path / "week.txt").write_bytes(raw)
    tariff = write_text(tmp_path / "tariff.toml", """
[[contract]]
from = 2026-01-01
import_eur_per_kwh = { 1 = 0.25, 2 = 0.29 }   # 1 = low (night and weekend), 2 = normal
export_eur_per_kwh = { 1 = 0.05, 2 = 0.07 }
vat_percent = 21
fixed_eur_per_day = -0.35
gas_eur_per_m3 = 1.00
""")
    contract = {"import": {1: 0.25, 2: 0.29}, "export": {1: 0.05, 2: 0.07}, "fixed": -0.35, "gas": 1.0,
                "water": 0.0, "vat": 21.0}
    expected = by_hand(seen, lambda day: contract)[date(2026, 6, 1)]
    assert cli_main(["cost", "--input", str(tmp_path / "week.txt"), "--tariff", str(tariff), "--timezone",
                     "Europe/Amsterdam", "--format", "json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [day["date"] for day in result["days"]] == ["2026-06-01"]
    # 24 hourly gas readings in the day: 23 differences between them (the first is the baseline).
    assert abs(result["gas_m3"] - expected["gas_m3"]) <= 0.0005 and expected["gas_m3"] > 0
    for key in EUR_KEYS:
        assert abs(result[key] - expected[key]) <= CENT, key
    assert result["fixed_eur"] == round(-0.35 * 1.21, 2)


def _kwh(text: str, code: str) -> float:
    match = re.search(rf"^1-0:{re.escape(code)}\((\d+\.\d+)\*kWh\)", text, re.MULTILINE)
    assert match
    return float(match.group(1))


def write_text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- wired into run and replay


def test_the_cost_builder_is_on_with_a_tariff_file_and_its_figures_reach_the_records(
    week: Week, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from p1logger import cli
    from p1logger.builders import create_builders
    from p1logger.pipeline import RecordMaker

    monkeypatch.delenv("P1_TARIFF_FILE", raising=False)
    monkeypatch.delenv("P1_CAPACITY_PRICE", raising=False)
    monkeypatch.setenv("P1_SPOOL_DIR", str(tmp_path / "spool"))  # run's cost checkpoint goes there
    without = cli.build_parser().parse_args(["run", "--source", "file:x"])
    assert [b.name for b in create_builders(without, ZONE, False)] == ["points", "capacity"]

    monkeypatch.setenv("P1_TARIFF_FILE", str(tariff_files(tmp_path / "t", "switch")))
    settings = cli.build_parser().parse_args(["run", "--source", "file:x"])
    builders = create_builders(settings, ZONE, False)
    assert [b.name for b in builders] == ["points", "capacity", "cost"]

    maker = RecordMaker(builders, want_figures=True)
    totals: dict[int, float] = {}
    published: dict[int, float] = {}
    for telegram in telegrams(week.raw[: len(week.raw) // 3]):
        record = maker.make(telegram, 0.0)
        for line in record.lines:
            if line.startswith("cost,"):
                time_s = int(line.rsplit(" ", 1)[1])
                totals[time_s] = float(re.search(r"total_eur=([-\d.e]+)", line).group(1))  # type: ignore[union-attr]
                figures = record.figures["cost"]
                published[time_s] = figures["last_quarter_total_eur"]  # type: ignore[assignment]
    assert len(totals) > 200
    assert published == totals
    assert (tmp_path / "spool" / "cost" / "checkpoint.json").exists()


def test_the_tariff_files_capacity_price_is_used_when_none_is_set(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from p1logger import cli
    from p1logger.builders import create_builders

    path = tmp_path / "tariff.toml"
    path.write_text("[[contract]]\nfrom = 2020-01-01\nimport_eur_per_kwh = 0.3\ncapacity_eur_per_kw_year = 61.5\n",
                    encoding="utf-8")
    monkeypatch.delenv("P1_CAPACITY_PRICE", raising=False)
    settings = cli.build_parser().parse_args(["run", "--source", "file:x", "--tariff", str(path)])
    assert create_builders(settings, ZONE, False)[1].tracker.price_eur_per_kw_year == 61.5  # type: ignore[attr-defined]
    flagged = cli.build_parser().parse_args(["run", "--source", "file:x", "--tariff", str(path), "--capacity-price", "40"])
    assert create_builders(flagged, ZONE, False)[1].tracker.price_eur_per_kw_year == 40.0  # type: ignore[attr-defined]
    monkeypatch.setenv("P1_CAPACITY_PRICE", "48")
    settings = cli.build_parser().parse_args(["run", "--source", "file:x", "--tariff", str(path)])
    assert create_builders(settings, ZONE, False)[1].tracker.price_eur_per_kw_year == 48.0  # type: ignore[attr-defined]


def test_an_archive_gives_the_same_cost_as_the_recording(
    week: Week, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A gzipped daily archive file (``run --archive``), read like ``dump`` and ``capacity`` read it."""
    import gzip

    from p1logger.archive_format import encode_record

    plain = tmp_path / "week.txt"
    plain.write_bytes(week.raw)
    archive = tmp_path / "p1-2026-03-23.txt.gz"
    frames = [b"/" + part for part in week.raw.split(b"/") if part]  # the header starts with "/": one per telegram
    archive.write_bytes(gzip.compress(b"".join(encode_record(frame, True, 0.0) for frame in frames)))
    tariff = str(tariff_files(tmp_path / "t", "dynamic"))
    results = []
    for path in (plain, archive):
        assert cli_main(["cost", "--input", str(path), "--tariff", tariff, "--timezone", ZONE_NAME,
                         "--format", "json"]) == 0
        results.append(json.loads(capsys.readouterr().out))
    assert results[0] == results[1]
    assert results[0]["quarters"] == 6 * 96 + 92


# --------------------------------------------------------------------------- a restart of run


def _stored(lines: list[str]) -> dict[int, dict[str, float]]:
    """cost lines -> {time: fields}, as InfluxDB keeps them: a later point with the same time replaces one."""
    points: dict[int, dict[str, float]] = {}
    for text in lines:
        head, _, time_s = text.rpartition(" ")
        fields = head.split(" ", 1)[1]
        values = {k: float(v) for k, v in (pair.split("=") for pair in fields.split(","))}
        if int(time_s) in points:
            assert points[int(time_s)] == values  # written again unchanged, never a different value
        points[int(time_s)] = values
    return points


def test_a_restart_goes_on_from_the_checkpoint_without_losing_or_doubling(week: Week, tmp_path: Path) -> None:
    from helpers.cost_week import by_quarter

    from p1logger.cost import CheckpointFile
    from p1logger.tariff import load_tariff

    tariff_path = tariff_files(tmp_path / "t", "dynamic")
    checkpoint = CheckpointFile(tmp_path / "spool" / "cost" / "checkpoint.json")
    decoded = telegrams(week.raw)[:289]  # Monday, 00:00 to 24:00
    assert int(decoded[-1].timestamp.timestamp()) == int(WEEK_START.timestamp()) + 86400
    # The logger stops after 10:40 (mid-quarter) and is back at 11:05: the telegrams of 10:45-11:00 are lost.
    before, after = decoded[:129], decoded[133:]
    first = CostTracker(load_tariff(tariff_path, ZONE), ZONE, checkpoint=checkpoint)
    lines = [line for t in before for line in first.build(t, 0.0)]
    assert checkpoint.path.exists()
    second = CostTracker(load_tariff(tariff_path, ZONE), ZONE, checkpoint=checkpoint)
    at_2345 = None
    for telegram in after:
        lines += second.build(telegram, 0.0)
        if telegram is decoded[285]:  # 23:45
            at_2345 = second.figures()
    points = _stored(lines)

    # Expected: the day as if the telegrams from the last checkpoint (10:30, the last quarter's end) to the
    # restart had never been sent: the counters give that energy exactly, shared over 10:30-11:05 by time.
    seen = week.seen[:127] + week.seen[133:289]
    expected = by_quarter(seen, SCENARIOS["dynamic"][1])
    assert sorted(points) == sorted(expected) and len(points) == 96
    for start, hand in expected.items():
        for key in ("import_kwh", "export_kwh", *EUR_KEYS):
            assert abs(points[start][key] - hand[key]) <= 1e-6, (start, key)
    # Nothing lost: the day's import is the counters' difference.
    assert sum(p["import_kwh"] for p in points.values()) == pytest.approx(
        sum(seen[-1].imports.values()) - sum(seen[0].imports.values()), abs=1e-5)
    # Today's running total went on too: at 23:45 it is the day's cost but the last quarter's energy.
    figures = at_2345
    assert figures is not None
    day_total = sum(p["total_eur"] for p in points.values())
    assert figures["today_total_eur"] == pytest.approx(day_total - points[max(points)]["total_eur"]
                                                       + DYNAMIC["fixed"] * 1.06 / 96, abs=1e-5)

    # Without a checkpoint the quarter of the restart would have lost its part before 10:45.
    bare = CostTracker(load_tariff(tariff_path, ZONE), ZONE)
    lost = _stored([line for t in after for line in bare.build(t, 0.0)])
    restart_quarter = int(datetime(2026, 3, 23, 10, 45, tzinfo=ZONE).timestamp())
    assert restart_quarter not in lost and restart_quarter in points


def test_a_checkpoint_that_does_not_continue_is_not_used(week: Week, tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    from p1logger.cost import CheckpointFile
    from p1logger.tariff import load_tariff

    tariff = load_tariff(tariff_files(tmp_path / "t", "fixed"), ZONE)
    decoded = telegrams(week.raw)[:40]
    checkpoint = CheckpointFile(tmp_path / "checkpoint.json")
    first = CostTracker(tariff, ZONE, checkpoint=checkpoint)
    for telegram in decoded[:20]:
        first.build(telegram, 0.0)
    caplog.set_level("INFO", logger="p1logger.cost")
    # Started again on older telegrams (a file run again): a fresh start, nothing counted from the checkpoint.
    again = CostTracker(tariff, ZONE, checkpoint=checkpoint, on_quarter=(summary := CostSummary(ZONE)).add)
    for telegram in decoded[:7]:
        again.build(telegram, 0.0)
    assert summary.total.quarters == 2
    assert summary.total.import_kwh == pytest.approx(sum(week.seen[6].imports.values())
                                                     - sum(week.seen[0].imports.values()), abs=1e-9)
    assert "is not older than the first telegram" in caplog.text
    # Another meter's checkpoint, and a damaged one: ignored with a line in the log.
    state = first.state()
    state["meter"] = "OTHER"
    checkpoint.path.write_text(json.dumps(state), encoding="utf-8")
    CostTracker(tariff, ZONE, checkpoint=checkpoint).build(decoded[30], 0.0)
    assert "the cost checkpoint is for meter OTHER, not 1SAG1100000001" in caplog.text
    state = first.state()
    del state["imports"]
    checkpoint.path.write_text(json.dumps(state), encoding="utf-8")
    damaged = CostTracker(tariff, ZONE, checkpoint=checkpoint)
    damaged.build(decoded[30], 0.0)
    assert "the cost checkpoint is damaged" in caplog.text
    assert damaged.figures()["quarter_import_kwh"] == 0.0  # type: ignore[index]
    checkpoint.path.write_text("{not json", encoding="utf-8")
    assert CheckpointFile(checkpoint.path).load() is None
    # A checkpoint that cannot be written is a warning, once; the cost goes on.
    blocked = CheckpointFile(tmp_path / "file" / "checkpoint.json")
    (tmp_path / "file").write_text("not a folder")
    caplog.clear()
    stuck = CostTracker(tariff, ZONE, checkpoint=blocked, on_quarter=(summary := CostSummary(ZONE)).add)
    for telegram in decoded:
        stuck.build(telegram, 0.0)
    assert summary.total.quarters == 13
    written = [r.getMessage() for r in caplog.records if "cannot write" in r.getMessage()]
    assert len(written) == 1
    assert written[0].startswith(f"cannot write the cost checkpoint {blocked.path} (")
    assert written[0].endswith("): a restart now would lose the cost of the quarter in progress")


@pytest.mark.slow
def test_run_stopped_and_started_again_stores_every_quarter_once(
    week: Week, influxd: InfluxServer, influx_db: str, tmp_path: Path
) -> None:
    """Two ``p1logger run`` with one spool folder: the second goes on where the first stopped."""
    from helpers.cost_week import by_quarter

    monday = week.raw.split(b"/")
    frames = [b"/" + part for part in monday if part][:289]
    tariff = tariff_files(tmp_path / "tariff", "switch")
    env = cli_env(INFLUX_API="v1", INFLUX_URL=influxd.url, INFLUX_BUCKET=influx_db, P1_SPOOL_DIR=tmp_path / "spool",
                  P1_TIMEZONE=ZONE_NAME, P1_TARIFF_FILE=tariff)
    for name, part in (("first", frames[:129]), ("second", frames[133:])):
        (tmp_path / name).write_bytes(b"".join(part))
        result = p1logger("run", env={**env, "P1_SOURCE": f"file:{tmp_path / name}"}, timeout_s=120)
        assert result.returncode == 0, result.stderr
    assert "cost goes on from the checkpoint of 2026-03-23T10:30+01:00 (1 quarter(s) not yet stored)" in \
        log_messages(result.stderr)
    rows = influxd.rows(influx_db, "cost")
    expected = by_quarter(week.seen[:127] + week.seen[133:289], SCENARIOS["switch"][1])
    assert [row["time"] for row in rows] == sorted(expected)
    for row in rows:
        for key in EUR_KEYS:
            assert abs(row[key] - expected[row["time"]][key]) <= 1e-6, (row["time"], key)
    assert abs(sum(row["total_eur"] for row in rows) - sum(q["total_eur"] for q in expected.values())) <= CENT
