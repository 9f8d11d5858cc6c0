"""``p1logger prices fetch``: day-ahead prices for a bidding zone into the tariff file's price CSV."""

from __future__ import annotations

import argparse
import sys
from datetime import date, datetime, timedelta
from pathlib import Path

from p1logger import config, settings
from p1logger.dayahead import BIDDING_ZONES, bidding_zone
from p1logger.inputs.entsoe import fetch_price_document, update_price_csv
from p1logger.errors import ConfigError
from p1logger.timestamps import load_zone


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("prices", help="day-ahead prices for a dynamic contract",
                                   description="Day-ahead prices for the tariff file's dynamic contracts.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    fetch = actions.add_parser(
        "fetch",
        help="download day-ahead prices from ENTSO-E into a price CSV",
        description="Download the day-ahead prices of a bidding zone from ENTSO-E's Transparency Platform "
        "(free, with your own security token: register on transparency.entsoe.eu and ask for API access) "
        "and merge them into a price CSV (start,eur_per_kwh), which a running p1logger re-reads when it "
        "changes. Run it every afternoon, after the day-ahead auction (around 13:00 CET).",
        epilog="example:\n  ENTSOE_TOKEN_FILE=/etc/p1logger/entsoe p1logger prices fetch --zone BE "
        "--output /etc/p1logger/prices.csv",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    settings.add(fetch, "P1_PRICES_ZONE", help_suffix=f": {', '.join(BIDDING_ZONES)} or an EIC code")
    settings.add(fetch, "P1_PRICES_FILE")
    fetch.add_argument("--from", dest="start", metavar="DATE", help="first local day (default: today)")
    fetch.add_argument("--to", dest="end", metavar="DATE", help="last local day (default: tomorrow)")
    settings.add(fetch, "P1_TIMEZONE", help_suffix=", also of the days and of the CSV")
    settings.add(fetch, "ENTSOE_TOKEN_FILE", help_suffix=" (or the token itself in ENTSOE_TOKEN)")
    settings.add(fetch, "P1_ENTSOE_URL")
    fetch.set_defaults(func=main)
    parser.set_defaults(func=lambda args: parser.print_help(sys.stderr) or 2)


def _day(text: str | None, default: date, flag: str) -> date:
    if text is None:
        return default
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{flag} {text!r} is not a date such as 2026-03-01") from None


def main(args: argparse.Namespace) -> int:
    zone = load_zone(args.timezone)
    eic = bidding_zone(args.zone)
    if not args.output:
        raise ConfigError("no price file: give --output FILE or set P1_PRICES_FILE")
    token = config.read_secret(settings.value("ENTSOE_TOKEN"), args.token_file, "ENTSO-E token", "ENTSOE_TOKEN_FILE")
    if not token:
        raise ConfigError("no ENTSO-E security token: set ENTSOE_TOKEN or ENTSOE_TOKEN_FILE "
                          "(transparency.entsoe.eu, My Account Settings, Web API Security Token)")
    today = datetime.now(zone).date()
    first = _day(args.start, today, "--from")
    last = _day(args.end, today + timedelta(days=1), "--to")
    if last < first:
        raise ConfigError(f"--to {last} is before --from {first}")
    start_s = int(datetime(first.year, first.month, first.day, tzinfo=zone).timestamp())
    after = last + timedelta(days=1)
    end_s = int(datetime(after.year, after.month, after.day, tzinfo=zone).timestamp())
    prices = fetch_price_document(args.url, token, eic, start_s, end_s)
    output = Path(args.output)
    if not prices:
        print(f"p1logger prices: no prices for {args.zone} from {first} to {last} yet; {output} is unchanged",
              file=sys.stderr)
        return 1
    rows = update_price_csv(output, prices, zone)
    starts = sorted(prices)
    first_at = datetime.fromtimestamp(starts[0], zone).isoformat(timespec="minutes")
    end_at = datetime.fromtimestamp(starts[-1] + prices[starts[-1]][0], zone).isoformat(timespec="minutes")
    minutes = sorted({step // 60 for step, _ in prices.values()})
    print(f"{len(prices)} prices ({'/'.join(str(m) for m in minutes)} min) for {args.zone} from {first_at} to "
          f"{end_at} written to {output} ({rows} rows)")
    return 0
