"""How well the capacity warning does on a simulated month: recall, precision and lead time.

    python benchmarks/capacity_warnings.py [--month 2026-01] [--seed 1] [--profile be3]

A Belgian meter (p1logger.simulate.MeterModel, with its EV charging, heat
pump, oven and kettle runs) is simulated second by second for a whole month,
and every second's readings go through the same CapacityTracker that
``p1logger run`` uses.  The truth comes from the model's own counters: a
quarter *sets a new peak* when its average is above the month's highest
quarter before it and above the 2.5 kW floor (going higher below the floor
costs nothing).

- recall: of the quarters that set a new peak, the share the tracker warned
  in with at least 3 minutes left (target >= 90%);
- precision: of the quarters it warned in, the share that ended above the
  limit it warned against (target >= 50%);
- at most one warning per quarter (counted, target 0 repeats);
- lead time: seconds between the warning and the end of the quarter, for the
  peak quarters it warned in.

The readings are handed to the tracker as decoded telegrams (no text, no CRC):
this measures the rule, not the decoder, and keeps a month to about a minute.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from p1logger.capacity import CapacityTracker  # noqa: E402
from p1logger.decode import Reading, Telegram  # noqa: E402
from p1logger.quarters import FLOOR_KW, QUARTER_S, month_bounds_s  # noqa: E402
from p1logger.simulate import PROFILES, MeterModel  # noqa: E402

RECALL_TARGET = 0.90
PRECISION_TARGET = 0.50
MIN_LEAD_S = 180
UTC = timezone.utc
ONE_SECOND = timedelta(seconds=1)


Detail = tuple[int, float, float, "int | None"]  # quarter start, average kW, limit kW, warned s into it


def run(month: str, seed: int, profile: str, days: int | None = None) -> tuple[dict[str, float], list[Detail]]:
    zone = ZoneInfo(PROFILES[profile].zone)
    first_s, end_s, _ = month_bounds_s(int(datetime(int(month[:4]), int(month[5:7]), 2, tzinfo=zone).timestamp()), zone)
    if days is not None:
        end_s = min(end_s, first_s + days * 86400)
    model = MeterModel(PROFILES[profile], datetime.fromtimestamp(first_s, UTC), seed)
    tracker = CapacityTracker(zone)
    meter = Reading(PROFILES[profile].meter_id)
    warned: dict[int, tuple[int, float]] = {}  # quarter start -> (warning time, limit then)
    repeats = 0
    quarter_kwh_start = model.total_import_kwh
    month_peak_kw = 0.0
    peak_quarters: list[int] = []
    limit_at_end: dict[int, float] = {}
    averages: dict[int, float] = {}
    time_s = first_s
    while time_s < end_s:
        fields = {
            "0-0:96.1.1": meter,
            "1-0:1.8.1": Reading(round(model.import_kwh[1], 3), "kWh"),
            "1-0:1.8.2": Reading(round(model.import_kwh[2], 3), "kWh"),
            "1-0:1.4.0": Reading(round(model.demand_kw(), 3), "kW"),
            "1-0:1.7.0": Reading(round(model.import_w / 1000, 3), "kW"),
        }
        stamp = datetime.fromtimestamp(time_s, UTC)
        tracker.build(Telegram("SIM", stamp, True, fields), time_s)
        if tracker.last_warning is not None and tracker.last_warning[1] == time_s:
            start = tracker.last_warning[0]
            if start in warned:
                repeats += 1
            else:
                warned[start] = (time_s, tracker.last_warning[2])
        model.advance_to(model.now + ONE_SECOND)  # the state only: no telegram text is needed
        time_s += 1
        if time_s % QUARTER_S == 0:
            start = time_s - QUARTER_S
            average = (model.total_import_kwh - quarter_kwh_start) * 4
            quarter_kwh_start = model.total_import_kwh
            averages[start] = average
            limit_at_end[start] = max(month_peak_kw, FLOOR_KW)
            if average > max(month_peak_kw, FLOOR_KW):
                peak_quarters.append(start)
            month_peak_kw = max(month_peak_kw, average)
    caught = [q for q in peak_quarters if q in warned and q + QUARTER_S - warned[q][0] >= MIN_LEAD_S]
    true_warnings = [q for q, (_, limit) in warned.items() if averages.get(q, 0.0) > limit]
    leads = [q + QUARTER_S - warned[q][0] for q in peak_quarters if q in warned]
    details: list[Detail] = [
        (q, round(averages[q], 3), limit_at_end[q], (warned[q][0] - q) if q in warned else None)
        for q in sorted(set(peak_quarters) | set(warned))
    ]
    return {
        "quarters": len(averages),
        "peak_quarters": len(peak_quarters),
        "warned_quarters": len(warned),
        "caught": len(caught),
        "true_warnings": len(true_warnings),
        "repeats": repeats,
        "recall": len(caught) / len(peak_quarters) if peak_quarters else 1.0,
        "precision": len(true_warnings) / len(warned) if warned else 1.0,
        "lead_median_s": statistics.median(leads) if leads else 0.0,
        "lead_min_s": min(leads) if leads else 0.0,
        "month_peak_kw": round(month_peak_kw, 3),
    }, details


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--month", default="2026-01", help="YYYY-MM to simulate (default %(default)s)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", default="be3", choices=[p for p, v in PROFILES.items() if v.belgian])
    parser.add_argument("--verbose", action="store_true", help="list every peak quarter and every warning")
    parser.add_argument("--days", type=int, default=None, help="only the month's first DAYS days (a quicker look)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the tracker's per-quarter WARNING lines are what is measured
    r, details = run(args.month, args.seed, args.profile, args.days)
    print(f"simulated {args.month}, profile {args.profile}, seed {args.seed}: {r['quarters']:.0f} quarters, "
          f"month peak {r['month_peak_kw']} kW")
    print(f"quarters that set a new peak  {r['peak_quarters']:4d}")
    print(f"quarters warned in            {r['warned_quarters']:4d}  (repeated warnings in one quarter: "
          f"{r['repeats']}, target 0)")
    print(f"recall     {r['recall']:7.1%}  ({r['caught']} of {r['peak_quarters']} peak quarters warned with "
          f">= {MIN_LEAD_S // 60} min left; target >= {RECALL_TARGET:.0%})  "
          f"{'OK' if r['recall'] >= RECALL_TARGET else 'MISSED'}")
    print(f"precision  {r['precision']:7.1%}  ({r['true_warnings']} of {r['warned_quarters']} warned quarters ended "
          f"above the limit; target >= {PRECISION_TARGET:.0%})  "
          f"{'OK' if r['precision'] >= PRECISION_TARGET else 'MISSED'}")
    if args.verbose:
        zone = ZoneInfo(PROFILES[args.profile].zone)
        print("quarter                    average  limit  warned (s into the quarter)  new peak")
        for start, average, limit, warned_s in details:
            local = datetime.fromtimestamp(start, zone)
            print(f"{local:%Y-%m-%d %H:%M%z}  {average:7.3f}  {limit:5.3f}  {str(warned_s):>5}  "
                  f"{'yes' if average > limit else 'no'}")
    print(f"lead time  median {r['lead_median_s'] / 60:.1f} min, shortest {r['lead_min_s'] / 60:.1f} min "
          f"before the quarter's end (peak quarters warned in)")


if __name__ == "__main__":
    main()
