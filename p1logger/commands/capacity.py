"""``p1logger capacity``: the Belgian capacity tariff as p1logger sees it right now.

Reads a live meter or a recorded file through the same CapacityTracker that
``p1logger run`` uses, and prints the running quarter, its projection, this
month's peak, the 12 months of the rolling mean and the estimated cost.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from typing import Any, TextIO

from p1logger import config
from p1logger.capacity import (
    FLOOR_KW,
    CapacityState,
    CapacityTracker,
    QuarterResult,
    local_text,
    quarter_label,
)
from p1logger.builders import add_capacity_arguments
from p1logger.cli import setup_logging
from p1logger.commands.common import ReadCounts, open_input, read_items, summary
from p1logger.decode import Telegram
from p1logger.errors import ConfigError
from p1logger.reader import TelegramReader
from p1logger.render import iso_utc
from p1logger.timestamps import TimestampParser


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "capacity",
        help="show the Belgian capacity tariff: this quarter-hour, the month's peak, the 12-month mean, the cost",
        description="Read a Belgian meter (or a recording of one) and show what the capacity tariff is made of: "
        "the running quarter-hour and where it is heading, this month's peak (the meter's and p1logger's own, "
        "from the import counters), the 12 monthly peaks of the rolling mean with the 2.5 kW floor applied, "
        "and the estimated yearly cost. A file is read to its end and the state there is printed; a live "
        "meter prints the state every --every-s seconds until stopped.",
        epilog="examples:\n  p1logger capacity /dev/ttyUSB0 --once\n"
        "  p1logger capacity --input telegrams.txt\n"
        "  p1logger capacity --input telegrams.txt --format json --capacity-price 48.5",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    config.add_source_arguments(parser, positional=True)
    config.add_decode_arguments(parser)
    config.add_decryption_arguments(parser)
    add_capacity_arguments(parser)
    output = parser.add_argument_group("output")
    output.add_argument("--format", choices=("table", "json"), default="table",
                        help="table for people, json for programs (one object per state) (default %(default)s)")
    output.add_argument("--once", action="store_true",
                        help="live meter: print the state after the first telegram with capacity data, then stop")
    output.add_argument("--every-s", type=float, default=10.0,
                        help="live meter: seconds of meter time between two states (default %(default)s)")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    if not args.every_s > 0:
        raise ConfigError(f"--every-s must be positive, not {args.every_s}")
    # Warnings only: a quarter heading above the peak, a counter that went back.
    setup_logging("WARNING")
    timestamps = TimestampParser(args.timezone)
    keys = config.decryption_keys(args)
    source, live = open_input(args)
    reader = TelegramReader(timestamps, args.max_telegram_bytes, keys=keys)
    tracker = CapacityTracker(timestamps.zone, args.capacity_price, args.capacity_margin_kw)
    out = sys.stdout
    counts = ReadCounts()
    printed_at: int | None = None
    try:
        for item in read_items(source, reader, live, counts):
            if not isinstance(item, Telegram):
                continue
            tracker.build(item, time.time())
            if not live:
                continue
            state = tracker.state()
            if state is None:
                continue
            if printed_at is None or state.time_s - printed_at >= args.every_s or args.once:
                _print(state, args.format, out)
                printed_at = state.time_s
                if args.once:
                    return 0
    finally:
        out.flush()
        source.close()
        line = summary("capacity", counts, reader.garbage_bytes)
        if line:
            print(line, file=sys.stderr)
    state = tracker.state()
    if state is None:
        where = "the input" if not args.input else args.input
        print(f"p1logger capacity: no telegram with capacity data (1-0:1.4.0 or 1-0:1.6.0) in {where}: "
              "only Belgian meters send them", file=sys.stderr)
        return 1
    if not live:
        _print(state, args.format, out)
    return 0


def _print(state: CapacityState, fmt: str, out: TextIO) -> None:
    if fmt == "json":
        out.write(json.dumps(state_json(state), ensure_ascii=False) + "\n")
    else:
        out.write(state_table(state) + "\n")
    out.flush()


# --------------------------------------------------------------------------- JSON


def _utc(time_s: int) -> datetime:
    return datetime.fromtimestamp(time_s, timezone.utc)


def _local(state: CapacityState, moment: datetime | None) -> str | None:
    return moment.astimezone(state.zone).isoformat() if moment is not None else None


def _span_json(state: CapacityState, start_s: int, end_s: int) -> dict[str, str | None]:
    """A quarter's bounds in UTC and in the meter's local time."""
    return {
        "start": iso_utc(_utc(start_s)),
        "end": iso_utc(_utc(end_s)),
        "start_local": _local(state, _utc(start_s)),
        "end_local": _local(state, _utc(end_s)),
    }


def _quarter_json(state: CapacityState, result: QuarterResult | None) -> dict[str, Any] | None:
    if result is None:
        return None
    return {
        **_span_json(state, result.start_s, result.end_s),
        "average_kw": result.average_kw,
        "meter_demand_kw": result.meter_demand_kw,
        "diff_kw": result.diff_kw,
    }


def state_json(state: CapacityState) -> dict[str, Any]:
    quarter = state.quarter
    return {
        "meter": state.meter,
        "time": iso_utc(state.time()),
        "time_local": _local(state, state.time()),
        "timezone": str(state.zone),
        "quarter": {
            **_span_json(state, quarter.start_s, quarter.end_s),
            "measured": quarter.measured,
            "not_measured_because": quarter.why_not,
            "energy_kwh": quarter.energy_kwh,
            "elapsed_s": quarter.elapsed_s,
            "average_so_far_kw": quarter.average_so_far_kw,
            "meter_demand_kw": quarter.meter_demand_kw,
            "power_kw": quarter.power_kw,
            "limit_kw": quarter.limit_kw,
            "projected_kw": quarter.projected_kw,
            "shed_kw": quarter.shed_kw,
            "peak_warning": quarter.peak_warning,
            "margin_kw": state.margin_kw,
        },
        "last_quarter": _quarter_json(state, state.last_quarter),
        "month": {
            "month": state.month,
            "meter_peak_kw": state.meter_peak_kw,
            "meter_peak_time": iso_utc(state.meter_peak_time),
            "our_peak": _quarter_json(state, state.our_peak),
            "running_peak_kw": state.running_peak_kw,
        },
        "rolling_mean": {
            "floor_kw": FLOOR_KW,
            "months": [
                {"month": m.month, "peak_kw": m.peak_kw, "billed_kw": m.billed_kw, "source": m.source,
                 "time": iso_utc(m.time)}
                for m in state.months
            ],
            "missing_months": list(state.missing_months),
            "unplaced_history": [{"value": e.value, "unit": e.unit, "time": iso_utc(e.time)}
                                 for e in state.unplaced_history],
            "mean_kw": state.rolling_mean_kw,
        },
        "cost": {"price_eur_per_kw_year": state.price_eur_per_kw_year, "yearly_cost_eur": state.yearly_cost_eur},
        "quarters": {
            "measured": state.stats.quarters_measured,
            "skipped": state.stats.quarters_skipped,
            "counter_resets": state.stats.counter_resets,
        },
    }


# --------------------------------------------------------------------------- table


def _kw(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.3f} kW"


def _when(state: CapacityState, moment: datetime | None) -> str:
    return "time unknown" if moment is None else local_text(moment, state.zone)


def state_table(state: CapacityState) -> str:
    quarter = state.quarter
    rows = [f"== capacity tariff, meter {state.meter}, at {_when(state, state.time())} ({state.zone})",
            f"quarter-hour        {quarter_label(quarter.start_s, state.zone)}"]
    if quarter.measured:
        rows.append(f"  average so far    {_kw(quarter.average_so_far_kw)} ({quarter.energy_kwh:.3f} kWh "
                    f"in {quarter.elapsed_s} s, from the import counters)")
    else:
        rows.append(f"  average so far    not measured: {quarter.why_not}")
    rows.append(f"  meter 1-0:1.4.0   {_kw(quarter.meter_demand_kw)}")
    rows.append(f"  power 1-0:1.7.0   {_kw(quarter.power_kw)}")
    if quarter.projected_kw is not None:
        warning = "YES" if quarter.peak_warning else "no"
        rows.append(f"  projected         {_kw(quarter.projected_kw)} if this power holds to the end")
        rows.append(f"  limit             {_kw(quarter.limit_kw)} (this month's peak, at least {FLOOR_KW} kW)"
                    f"; margin {state.margin_kw:.3f} kW")
        rows.append(f"  shed now          {_kw(quarter.shed_kw)}; peak warning {warning}")
    else:
        rows.append("  projected         unknown until a quarter is measured from its start")
    if state.last_quarter is not None:
        last = state.last_quarter
        rows.append(f"last quarter        {quarter_label(last.start_s, state.zone)}: {_kw(last.average_kw)}, "
                    f"meter {_kw(last.meter_demand_kw)}, difference {_kw(last.diff_kw)}")
    rows.append(f"this month          {state.month}")
    rows.append(f"  meter peak        {_kw(state.meter_peak_kw)} at {_when(state, state.meter_peak_time)}")
    ours = state.our_peak
    rows.append(f"  p1logger's peak   {_kw(ours.average_kw) if ours else 'none measured yet'}"
                + (f" in {quarter_label(ours.start_s, state.zone)}" if ours else ""))
    rows.append(f"  running peak      {_kw(state.running_peak_kw)}")
    rows.append(f"rolling mean        {len(state.months)} monthly peaks, each at least {FLOOR_KW} kW")
    for month in state.months:
        when = f", at {_when(state, month.time)}" if month.source == "meter history" else ""
        rows.append(f"  {month.month:<18}{month.peak_kw:.3f} kW, billed {month.billed_kw:.3f} kW "
                    f"({month.source}{when})")
    for name in state.missing_months:
        rows.append(f"  {name:<18}unknown: not in the meter's history, not seen by p1logger")
    if state.unplaced_history:
        rows.append(f"  ({len(state.unplaced_history)} history entries carry no date and are left out)")
    rows.append(f"  mean              {_kw(state.rolling_mean_kw)}")
    cost = "unknown" if state.yearly_cost_eur is None else f"{state.yearly_cost_eur:.2f} EUR per year"
    rows.append(f"estimated cost      {cost} at {state.price_eur_per_kw_year:.2f} EUR per kW per year")
    rows.append(f"quarters            {state.stats.quarters_measured} measured, {state.stats.quarters_skipped} "
                "not measured")
    return "\n".join(rows)
