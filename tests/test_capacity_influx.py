"""A simulated month through `p1logger run` into a real influxd, checked against a hand computation.

October 2025 (it has the autumn DST change) from the simulated Fluvius meter of
test_capacity.py, one telegram every 300 s of meter time: three telegrams per
quarter, two of them on its boundaries, so every quarter is measured from the
counters. The file goes through build_pipeline with INFLUX_API=v1 into the
`influx_db` database of the session's influxd; the stored capacity figures must
equal the hand computation below and what `p1logger capacity --input FILE
--format json` prints. Without influxd this skips, unless P1_TEST_REQUIRE_SERVERS=1.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from helpers.influx_servers import InfluxServer
from test_capacity import METER, SimMeter, dsmr_stamp, utc_s

from p1logger import cli
from p1logger.commands.run import build_pipeline

START = utc_s("2025-10-01T00:00:00+02:00")
END = utc_s("2025-10-31T23:55:00+01:00")  # the last telegram; its quarter (23:45-00:00) stays open
STEP_S = 300
PRICE_EUR = 50.0

# 0-0:98.1.0 as the meter sends it on 1 October: (capture stamp, peak stamp, W) for 2024-09 .. 2025-09.
HISTORY = [
    ("241001000000S", "240912191500S", 3100),
    ("241101000000W", "241015184500S", 4000),
    ("241201000000W", "241120190000W", 4200),
    ("250101000000W", "241224181500W", 6500),
    ("250201000000W", "250108073000W", 5100),
    ("250301000000W", "250211190000W", 4400),
    ("250401000000S", "250305184500W", 3900),
    ("250501000000S", "250417201500S", 3300),
    ("250601000000S", "250522193000S", 2800),
    ("250701000000S", "250610211500S", 1900),  # below the floor
    ("250801000000S", "250701001500S", 0),  # away all July: no consumption
    ("250901000000S", "632525252525W", 2600),  # the meter lost the peak's time
    ("251001000000S", "250918200000S", 3000),
]

# The quarters above the 0.6 kW base load, by their local start.
SPECIAL_QUARTERS_W = {
    utc_s("2025-10-10T18:00:00+02:00"): 5200,  # the month's peak
    utc_s("2025-10-20T07:00:00+02:00"): 4000,
    utc_s("2025-10-26T02:45:00+02:00"): 3200,  # the summer-time 02:45, ending at 02:00 winter time
    utc_s("2025-10-26T02:00:00+01:00"): 2400,  # the winter-time 02:00, an hour after the summer-time one
    utc_s("2025-10-31T23:30:00+01:00"): 4600,
}
BASE_W = 600


def october_load_w(time_s: int) -> int:
    return SPECIAL_QUARTERS_W.get(time_s - time_s % 900, BASE_W)


@pytest.fixture
def october(tmp_path: Path) -> Path:
    # The meter reset its 1-0:1.6.0 at 00:00 on 1 October.
    sim = SimMeter(october_load_w, peak=(START, 0), history=HISTORY)
    path = tmp_path / "october.txt"
    with path.open("wb") as out:
        for _, raw in sim.run(START, END, STEP_S):
            out.write(raw)
    return path


def select(server: InfluxServer, db: str, influxql: str) -> list[dict[str, Any]]:
    series = server.query(influxql, db)["results"][0].get("series", [])
    return [dict(zip(s["columns"], values)) for s in series for values in s["values"]]


def test_simulated_month_in_influxd_matches_the_hand_computation_and_the_command(
    october: Path, influxd: InfluxServer, influx_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.WARNING, logger="p1logger.capacity")
    monkeypatch.setenv("INFLUX_API", "v1")
    monkeypatch.setenv("P1_CAPACITY_PRICE", str(PRICE_EUR))
    args = cli.build_parser().parse_args([
        "run", "--source", f"file:{october}", "--influx-url", influxd.url, "--influx-bucket", influx_db,
        "--spool-dir", str(tmp_path / "state"), "--instance", "capacity-test",
    ])
    pipeline, _ = build_pipeline(args)
    pipeline.start()
    assert pipeline.wait(120), "the pipeline did not finish the file"  # the outputs are closed by then
    pipeline.join(10)
    assert pipeline.failure is None
    # October 2025 has 31 days and the repeated hour: 745 h. 00:00 on the 1st to 23:55 on the 31st
    # is 745 h - 5 min = 8939 steps of 5 min: 8940 telegrams.
    assert pipeline.health.telegrams_ok == 8940
    assert (pipeline.health.points_dropped, pipeline.health.spool_points) == (0, 0)

    # 745 h x 4 = 2980 quarters; the first starts with the first telegram, the last is still open: 2979.
    # Each is W x 900 s, so its average is W: 0.6 kW, except the five above. No telegram falls within
    # 10 s before a quarter's end (they come at :00, :05 and :10), so no quarter_diff_kw is written
    # (InfluxQL counts a field that was never written as null).
    counts = select(influxd, influx_db, "SELECT count(quarter_avg_kw), count(quarter_diff_kw), max(quarter_avg_kw), "
                    "count(rolling_mean_kw) FROM capacity")
    assert [(c["count"], c["count_1"], c["max"], c["count_2"]) for c in counts] == [(2979, None, 5.2, 8940)]
    history = select(influxd, influx_db, "SELECT count(history_peak_kw) FROM capacity_history")
    assert [c["count"] for c in history] == [13]
    # One status point per telegram (300 s is more than the 10 s write interval).
    special = select(influxd, influx_db, f"SELECT quarter_avg_kw FROM capacity WHERE quarter_avg_kw > {BASE_W / 1000}")
    assert [(row["time"], row["quarter_avg_kw"]) for row in special] == [
        (start + 900, watts / 1000) for start, watts in sorted(SPECIAL_QUARTERS_W.items())]
    # The repeated hour: eight quarters between 00:00 and 02:00 UTC (02:00 CEST .. 03:00 CET) on the 26th.
    dst_night = select(influxd, influx_db, "SELECT count(quarter_avg_kw) FROM capacity "
                       f"WHERE time > {utc_s('2025-10-26T02:00:00+02:00')}s "
                       f"AND time <= {utc_s('2025-10-26T03:00:00+01:00')}s")
    assert dst_night[0]["count"] == 8

    # Warnings: until 10 October the month's peak is 0.6 kW, so the limit is the 2.5 kW floor. The 5.2 kW
    # quarter projects 5.2 from its first telegram (18:00), and (0.433 x 3600 + 5.2 x 600) / 900 = 5.199 at
    # 18:05 and (0.866 x 3600 + 5.2 x 300) / 900 = 5.197 at 18:10: three points with peak_warning 1. Later
    # quarters (4.0, 3.2, 2.4, 4.6) stay under 5.2. One log line for that one quarter:
    # shed 5.2 - 2.5 = 2.7 kW at 18:00.
    warned = select(influxd, influx_db, "SELECT projected_kw, shed_kw FROM capacity WHERE peak_warning = 1")
    peak_start = utc_s("2025-10-10T18:00:00+02:00")
    # 18:05: 0.433 kWh so far allows (2.5 x 900 - 1558.8) / 600 = 1.152 kW: shed 5.2 - 1.152 = 4.048.
    # 18:10: 0.866 kWh so far allows (2250 - 3117.6) / 300 < 0: shed all 5.2 kW.
    assert [(row["time"], row["projected_kw"], row["shed_kw"]) for row in warned] == [
        (peak_start, 5.2, 2.7), (peak_start + 300, 5.199, 4.048), (peak_start + 600, 5.197, 5.2)]
    assert [r.getMessage() for r in caplog.records if r.name == "p1logger.capacity"] == [
        ("quarter 2025-10-10 18:00+02:00–18:15+02:00 is heading for 5.200 kW, above this month's peak "
        "of 2.500 kW (margin 0.000 kW): shed 2.700 kW now")]

    # The state at the last telegram (31 October 23:55 CET), by hand:
    #   October so far: 5.2 kW (10 October 18:00-18:15, ours and the meter's 1-0:1.6.0)
    #   the 11 months before, each at least 2.5: Nov 4.2, Dec 6.5, Jan 5.1, Feb 4.4, Mar 3.9, Apr 3.3,
    #   May 2.8, Jun 1.9 -> 2.5, Jul 0.0 -> 2.5, Aug 2.6 (time unknown), Sep 3.0
    #   sum 5.2 + 4.2 + 6.5 + 5.1 + 4.4 + 3.9 + 3.3 + 2.8 + 2.5 + 2.5 + 2.6 + 3.0 = 46.0
    #   mean 46.0 / 12 = 3.83333 -> 3.833 kW; cost 3.83333 x 50 EUR = 191.667 -> 191.67 EUR
    #   the open quarter (23:45-00:00): 0.1 kWh in 600 s, 0.6 kW now: (360 + 0.6 x 300) / 900 = 0.6
    #   the meter's 1-0:1.4.0: 0.1 kWh / 15 min = 0.4 kW (written by the points stage as demand_kw)
    final = select(influxd, influx_db, "SELECT meter, running_peak_kw, rolling_mean_kw, yearly_cost_eur, projected_kw, "
                   f"shed_kw, peak_warning, demand_kw, quarter_avg_kw FROM capacity WHERE time = {END}s")
    assert final == [{
        "time": END, "meter": METER, "running_peak_kw": 5.2, "rolling_mean_kw": 3.833, "yearly_cost_eur": 191.67,
        "projected_kw": 0.6, "shed_kw": 0.0, "peak_warning": 0, "demand_kw": 0.4, "quarter_avg_kw": None,
    }]
    assert dsmr_stamp(END) == "251031235500W"

    # `p1logger capacity` on the same file agrees with what is stored and with the hand computation.
    assert cli.main(["capacity", "--input", str(october), "--format", "json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["month"]["running_peak_kw"], printed["rolling_mean"]["mean_kw"],
            printed["cost"]["yearly_cost_eur"]) == (5.2, 3.833, 191.67)
    assert printed["cost"]["price_eur_per_kw_year"] == PRICE_EUR
    assert [(m["month"], m["peak_kw"], m["billed_kw"], m["source"]) for m in printed["rolling_mean"]["months"]] == [
        ("2025-10", 5.2, 5.2, "running"), ("2025-09", 3.0, 3.0, "meter history"),
        ("2025-08", 2.6, 2.6, "meter history"), ("2025-07", 0.0, 2.5, "meter history"),
        ("2025-06", 1.9, 2.5, "meter history"), ("2025-05", 2.8, 2.8, "meter history"),
        ("2025-04", 3.3, 3.3, "meter history"), ("2025-03", 3.9, 3.9, "meter history"),
        ("2025-02", 4.4, 4.4, "meter history"), ("2025-01", 5.1, 5.1, "meter history"),
        ("2024-12", 6.5, 6.5, "meter history"), ("2024-11", 4.2, 4.2, "meter history"),
    ]
    assert printed["rolling_mean"]["months"][2]["time"] is None  # the placeholder peak time
    assert printed["month"]["our_peak"]["start_local"] == "2025-10-10T18:00:00+02:00"
    assert printed["quarters"] == {"measured": 2979, "skipped": 0, "counter_resets": 0}
    assert (printed["quarter"]["projected_kw"], printed["quarter"]["meter_demand_kw"]) == (0.6, 0.4)
