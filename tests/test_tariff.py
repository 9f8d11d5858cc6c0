"""The tariff file: what it accepts, how it prices a quarter, and one clear line per mistake."""

from __future__ import annotations

from datetime import date, datetime, timezone
from pathlib import Path

import pytest

from p1logger.cli import main as cli_main
from p1logger.cost import CostSummary, CostTracker
from p1logger.decode import Reading, Telegram
from p1logger.errors import ConfigError
from p1logger.tariff import Tariff, load_tariff
from p1logger.timestamps import load_zone

ZONE = load_zone("Europe/Brussels")


def write(folder: Path, text: str, csv: dict[str, str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, body in (csv or {}).items():
        (folder / name).write_text(body, encoding="utf-8")
    path = folder / "tariff.toml"
    path.write_text(text, encoding="utf-8")
    return path


def mistakes(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_tariff(path, ZONE)
    return str(caught.value).splitlines()


def local(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=ZONE)


def quarter_prices(tariff: Tariff, when: str, register: int = 1, meter: str = "M") -> tuple[float | None, float | None]:
    moment = local(when)
    contract = tariff.contract_on(moment.date())
    assert contract is not None
    start_s = int(moment.timestamp())
    return contract.import_price(start_s, moment, register, meter), contract.export_price(start_s, moment, register)


# --------------------------------------------------------------------------- prices


def test_fixed_prices_by_register_with_vat_on_import_only(tmp_path: Path) -> None:
    tariff = load_tariff(write(tmp_path, """
[[contract]]
from = 2026-01-01
import_eur_per_kwh = { 1 = 0.30, 2 = 0.20 }
export_eur_per_kwh = 0.05
vat_percent = 6
"""), ZONE)
    assert quarter_prices(tariff, "2026-02-01T12:00", 1) == (pytest.approx(0.318), 0.05)
    assert quarter_prices(tariff, "2026-02-01T12:00", 2) == (pytest.approx(0.212), 0.05)
    assert tariff.contract_on(date(2025, 12, 31)) is None


def test_wallonia_2026_slots_by_local_hour(tmp_path: Path) -> None:
    tariff = load_tariff(write(tmp_path, """
[[contract]]
from = 2026-01-01
time_of_use = "wallonia-2026"
import_eur_per_kwh = { green = 0.20, orange = 0.30, red = 0.45 }
export_eur_per_kwh = 0.04
"""), ZONE)
    expected = {"00:45": 0.30, "01:00": 0.20, "06:45": 0.20, "07:00": 0.30, "10:45": 0.30, "11:00": 0.20,
                "16:45": 0.20, "17:00": 0.45, "21:45": 0.45, "22:00": 0.30, "23:45": 0.30}
    for hour, price in expected.items():
        assert quarter_prices(tariff, f"2026-06-13T{hour}")[0] == price, hour
    # Local time: in summer and winter alike.
    assert quarter_prices(tariff, "2026-01-13T17:00")[0] == 0.45


def test_dynamic_hourly_rows_apply_to_their_four_quarters_with_multiplier_and_adder(tmp_path: Path) -> None:
    csv = ("start,eur_per_kwh\n# EPEX BE, converted\n2026-03-01T00:00:00+01:00,0.100\n"
           "2026-03-01T01:00:00+01:00,-0.020\n2026-03-01T02:00:00+01:00,0.050\n")
    tariff = load_tariff(write(tmp_path, """
[[contract]]
from = 2026-03-01
import_prices_csv = "day-ahead.csv"
import_multiplier = 1.2
import_adder_eur_per_kwh = 0.10
export_prices_csv = "day-ahead.csv"
export_adder_eur_per_kwh = -0.01
""", {"day-ahead.csv": csv}), ZONE)
    for minute in ("00", "15", "30", "45"):
        assert quarter_prices(tariff, f"2026-03-01T01:{minute}") == (pytest.approx(0.076), pytest.approx(-0.03))
    assert quarter_prices(tariff, "2026-03-01T02:45")[0] == pytest.approx(0.16)
    assert quarter_prices(tariff, "2026-03-01T03:00") == (None, None)  # the CSV ends


def test_time_of_use_grid_fees_on_top_of_a_dynamic_price(tmp_path: Path) -> None:
    csv = "".join(f"2026-03-01T{h:02d}:{m:02d}:00+01:00,0.1\n" for h in range(24) for m in (0, 15, 30, 45))
    tariff = load_tariff(write(tmp_path, """
[[contract]]
from = 2026-03-01
time_of_use = "wallonia-2026"
import_prices_csv = "p.csv"
import_adder_eur_per_kwh = { green = 0.05, orange = 0.10, red = 0.20 }
""", {"p.csv": csv}), ZONE)
    assert quarter_prices(tariff, "2026-03-01T18:15")[0] == pytest.approx(0.3)
    assert quarter_prices(tariff, "2026-03-01T12:00")[0] == pytest.approx(0.15)


def _telegram(meter: str, when: str, import_kwh: float) -> Telegram:
    return Telegram("HDR", local(when), True, {
        "0-0:96.1.1": Reading(meter),
        "1-0:1.8.1": Reading(import_kwh, "kWh"),
        "1-0:1.8.2": Reading(0.0, "kWh"),
    })


def test_an_exclusive_night_meter_is_priced_apart_with_no_fixed_charge_twice(tmp_path: Path) -> None:
    tariff = load_tariff(write(tmp_path, """
[[contract]]
from = 2026-01-01
import_eur_per_kwh = { 1 = 0.30, 2 = 0.20 }
exclusive_night_meter = "NIGHT1"
exclusive_night_eur_per_kwh = 0.15
fixed_eur_per_day = 0.0
"""), ZONE)
    summary = CostSummary(ZONE)
    tracker = CostTracker(tariff, ZONE, on_quarter=summary.add)
    tracker.build(_telegram("NIGHT1", "2026-02-02T23:00:00", 100.0), 0)
    tracker.build(_telegram("NIGHT1", "2026-02-02T23:15:00", 102.0), 0)
    assert summary.total.import_eur == pytest.approx(0.30)


def test_a_missing_hour_is_shared_over_its_quarters_by_time(tmp_path: Path) -> None:
    csv = "".join(f"2026-03-02T{h:02d}:{m:02d}:00+01:00,{0.1 * (1 + m // 15)}\n" for h in range(24)
                  for m in (0, 15, 30, 45))
    tariff = load_tariff(write(tmp_path, """
[[contract]]
from = 2026-03-01
import_prices_csv = "p.csv"
""", {"p.csv": csv}), ZONE)
    finished = []
    tracker = CostTracker(tariff, ZONE, on_quarter=finished.append)
    tracker.build(_telegram("M", "2026-03-02T09:55:00", 10.0), 0)
    tracker.build(_telegram("M", "2026-03-02T11:00:00", 23.0), 0)  # 13 kWh in 65 minutes
    assert [(q.local.strftime("%H:%M"), round(q.import_kwh, 9)) for q in finished] == [
        ("09:45", 1.0), ("10:00", 3.0), ("10:15", 3.0), ("10:30", 3.0), ("10:45", 3.0)]
    assert sum(q.import_eur for q in finished) == pytest.approx(0.4 + 0.3 + 0.6 + 0.9 + 1.2)


def test_a_relative_csv_is_read_from_the_tariff_files_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "conf", '[[contract]]\nfrom = 2026-01-01\nimport_prices_csv = "p.csv"\n',
                 {"p.csv": "2026-01-01T00:00:00+01:00,0.1\n"})
    monkeypatch.chdir(tmp_path)
    assert load_tariff(path, ZONE).series()[0].path == tmp_path / "conf" / "p.csv"


# --------------------------------------------------------------------------- mistakes


def test_every_mistake_is_one_line_naming_the_file_and_the_fix(tmp_path: Path) -> None:
    path = write(tmp_path, """
[[contract]]
from = 2026-01-01
to = 2026-02-28
import_eur_per_kwh = { 1 = 0.30, 2 = 0.20 }

[[contract]]
from = 2026-02-15
import_eur_per_kwh = 0.25
fixed_eur_per_day = "0.3"

[[contract]]
name = "dynamic"
from = 2026-05-01
to = 2026-05-31
import_prices_csv = "prices.csv"
colour = "blue"

[[contract]]
from = 2026-07-01
import_prices_csv = "prices.csv"
""", {"prices.csv": "start,eur_per_kwh\n2026-05-01T00:00:00+02:00,0.1\n2026-05-01T01:00:00+02:00,0.2\n"
                    "2026-05-01T00:45:00+02:00,0.3\n2026-05-01T04:00:00+02:00,0.2\n"})
    lines = mistakes(path)
    assert lines == [
        f"{path}: contract 2: fixed_eur_per_day = '0.3' is not a number",
        f"{path}: contract 3: unknown setting colour (see docs/cost.md for the settings)",
        f"{path}: contract 2 (from 2026-02-15) overlaps contract 1 (from 2026-01-01): a day can be in one contract "
        "only; end contract 1 (from 2026-01-01) before 2026-02-15",
        f"{path}: price gap: no contract from 2026-06-01 to 2026-06-30, between contract 3 (dynamic) and "
        "contract 4 (from 2026-07-01)",
        f"{tmp_path / 'prices.csv'} line 4: 2026-05-01T00:45:00+02:00 is out of order (not after the row before "
        "it): sort the file by time",
        f"{tmp_path / 'prices.csv'} line 5: price gap: no price from 2026-05-01T02:00:00+02:00 to "
        "2026-05-01T04:00:00+02:00",
    ]


def test_overlapping_contracts(tmp_path: Path) -> None:
    path = write(tmp_path, """
[[contract]]
from = 2026-01-01
to = 2026-03-31
import_eur_per_kwh = 0.3
[[contract]]
from = 2026-03-01
import_eur_per_kwh = 0.2
""")
    assert mistakes(path) == [f"{path}: contract 2 (from 2026-03-01) overlaps contract 1 (from 2026-01-01): a day "
                              "can be in one contract only; end contract 1 (from 2026-01-01) before 2026-03-01"]


def test_slots_that_overlap_or_leave_an_hour_out(tmp_path: Path) -> None:
    path = write(tmp_path, """
[[contract]]
from = 2026-01-01
time_of_use = { cheap = ["00:00-08:00"], dear = ["07:00-20:00"] }
import_eur_per_kwh = { cheap = 0.2, dear = 0.3 }
[[contract]]
from = 2026-02-01
time_of_use = { cheap = ["00:00-08:00"], dear = ["08:00-20:00"] }
import_eur_per_kwh = { cheap = 0.2, dear = 0.3 }
""")
    assert mistakes(path) == [
        f"{path}: contract 1: time_of_use: 07:00 is in both 'cheap' and 'dear'",
        f"{path}: contract 2: time_of_use: no slot holds 20:00: every hour of the day needs a slot",
    ]


def test_a_register_the_meter_reports_without_a_price_stops_p1logger_cost_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "[[contract]]\nfrom = 2026-01-01\nimport_eur_per_kwh = { 1 = 0.30 }\n")
    recording = tmp_path / "t.txt"
    from p1logger.simulate import PROFILES, MeterModel

    model = MeterModel(PROFILES["be3"], datetime(2026, 3, 2, 12, tzinfo=timezone.utc))
    recording.write_bytes(model.telegram())
    assert cli_main(["cost", "--input", str(recording), "--tariff", str(path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"p1logger cost: {path}: contract 1 (from 2026-01-01): no import price for register 2 that meter "
        "1SAG1100000001 reports: add 2 = ... to import_eur_per_kwh",
        f"{path}: contract 1 (from 2026-01-01): no export price, but meter 1SAG1100000001 reports export "
        "registers 1, 2: set export_eur_per_kwh or export_prices_csv",
    ]


def test_no_tariff_file_is_a_config_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cli_main(["cost", "--input", str(tmp_path / "x"), "--tariff", str(tmp_path / "none.toml")]) == 2
    assert capsys.readouterr().err == (f"p1logger cost: cannot read the tariff file {tmp_path / 'none.toml'} "
                                       "(No such file or directory): fix P1_TARIFF_FILE or --tariff\n")


def test_doctor_lines_for_the_tariff_file(tmp_path: Path) -> None:
    from p1logger.cost import tariff_checks

    csv = "".join(f"2026-03-01T{h:02d}:00:00+01:00,0.1\n" for h in range(24))
    path = write(tmp_path, '[[contract]]\nfrom = 2026-01-01\nimport_prices_csv = "p.csv"\n', {"p.csv": csv})
    noon = int(local("2026-03-01T12:00").timestamp())
    assert tariff_checks(str(path), ZONE, noon) == [
        (True, f"tariff: {path}: 1 contract(s), from 2026-01-01"),
        (True, f"tariff: {tmp_path / 'p.csv'} has prices until 2026-03-02T00:00+01:00"),
    ]
    assert tariff_checks(str(path), ZONE, noon + 86400)[1] == (
        False, f"tariff: {tmp_path / 'p.csv'} has no price for now (it ends at 2026-03-02T00:00+01:00): "
        "run 'p1logger prices fetch'")
    assert tariff_checks(str(path), ZONE, int(local("2025-12-31T12:00").timestamp()))[1] == (
        False, "tariff: no contract is in force today (2025-12-31): add one")
    bad = write(tmp_path / "bad", "[[contract]]\nfrom = 2026-01-01\n")
    assert tariff_checks(str(bad), ZONE, noon) == [
        (False, f"tariff: {bad}: contract 1: no import price: set import_eur_per_kwh or import_prices_csv")]
    assert tariff_checks(None, ZONE, noon) == []


def test_every_example_in_docs_cost_md_is_a_valid_tariff_file(tmp_path: Path) -> None:
    import re

    text = (Path(__file__).resolve().parent.parent / "docs" / "cost.md").read_text(encoding="utf-8")
    examples = re.findall(r"```toml\n(.*?)```", text, re.DOTALL)
    assert len(examples) == 4
    csv = "start,eur_per_kwh\n2026-01-01T00:00:00+01:00,0.1\n"
    for number, example in enumerate(examples):
        folder = tmp_path / str(number)
        names = re.findall(r'_prices_csv = "([^"]+)"', example)
        tariff = load_tariff(write(folder, example, {name: csv for name in names}), ZONE)
        assert tariff.contracts, number


def test_the_issues_example_file(tmp_path: Path) -> None:
    tariff = load_tariff(write(tmp_path, """
[[contract]]
from = 2026-01-01
import_eur_per_kwh = { 1 = 0.32, 2 = 0.26 }   # by tariff register: 1-0:1.8.1, 1-0:1.8.2, ...
export_eur_per_kwh = { 1 = 0.04, 2 = 0.03 }   # 1-0:2.8.1, 1-0:2.8.2, ...
fixed_eur_per_day = 0.25
gas_eur_per_m3 = 1.15
water_eur_per_m3 = 4.50

[[contract]]                                  # a dynamic contract
from = 2026-03-01
import_prices_csv = "prices.csv"              # rows: start (ISO 8601 with offset), eur_per_kwh; 15-min or hourly
import_multiplier = 1.0
import_adder_eur_per_kwh = 0.12               # supplier mark-up, grid fees and taxes per kWh
export_prices_csv = "prices.csv"
export_multiplier = 1.0
export_adder_eur_per_kwh = -0.01
fixed_eur_per_day = 0.30
""", {"prices.csv": "2026-03-01T00:00:00+01:00,0.08\n2026-03-01T00:15:00+01:00,0.09\n"}), ZONE)
    assert quarter_prices(tariff, "2026-02-28T10:00", 2) == (0.26, 0.03)
    assert quarter_prices(tariff, "2026-03-01T00:15") == (pytest.approx(0.21), pytest.approx(0.08))
    assert [c.fixed_eur_per_day for c in tariff.contracts] == [0.25, 0.30]
