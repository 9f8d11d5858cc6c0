"""The InfluxDB output (1.x and 2.x): its settings, and how ``run`` and ``doctor`` get it.

    target.py      where to write (URL, API version, destination, credentials)
    transports.py  HTTP per API version (v1 /write, v2 /api/v2/write), one interface
    sink.py        one batch: status handling, 400 bisection, dead letters
    checks.py      doctor's checks (influxdb-client, v2 only, imported there)

Batching, retry and the spool come from ``outputs.lines.LineOutput``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from p1logger import config
from p1logger import settings as settings_table
from p1logger.contracts import Check, Output, RunContext
from p1logger.errors import ConfigError
from p1logger.outputs import OutputSpec, selected
from p1logger.outputs.influx.target import InfluxTarget
from p1logger.outputs.influx.transports import TRANSPORTS
from p1logger.outputs.lines import SPOOL_FILE, LineOutput, LineOutputSettings

NAME = "influx"
DEAD_LETTER_FILE = "dead-letter.lp"


def add_influx_arguments(parser: argparse.ArgumentParser) -> None:
    # The token and the password have no flag (ps would show it); their files do.
    settings_table.add(parser.add_argument_group("InfluxDB (the token: INFLUX_TOKEN; the v1 password: "
                                                 "INFLUX_PASSWORD or INFLUX_PASSWORD_FILE)"),
                       "INFLUX_URL", "INFLUX_API", "INFLUX_ORG", "INFLUX_BUCKET", "INFLUX_TOKEN_FILE",
                       "INFLUX_USERNAME", "INFLUX_TIMEOUT_S")


def influx_urls(args: Any) -> list[str]:
    urls = [url.strip().rstrip("/") for url in str(args.influx_url).split(",") if url.strip()]
    if not urls:
        raise ConfigError("no InfluxDB URL: set INFLUX_URL (e.g. http://localhost:8086)")
    return urls


def output_name(index: int) -> str:
    """The first InfluxDB is "influx"; more (INFLUX_URL with commas) are "influx-2", "influx-3"..."""
    return NAME if index == 0 else f"{NAME}-{index + 1}"


def influx_target(args: Any, url: str | None = None) -> InfluxTarget:
    """The target for ``url`` (default: the first of --influx-url) with the shared settings."""
    token = config.read_secret(settings_table.value("INFLUX_TOKEN"), args.influx_token_file, "token",
                               "INFLUX_TOKEN_FILE")
    password = config.read_secret(settings_table.value("INFLUX_PASSWORD"), settings_table.value("INFLUX_PASSWORD_FILE"),
                                  "password", "INFLUX_PASSWORD_FILE")
    token, username, password = TRANSPORTS[args.influx_api].credentials(
        token=token, org=args.influx_org, username=args.influx_username, password=password)
    return InfluxTarget(
        url=url if url is not None else influx_urls(args)[0],
        api=args.influx_api,
        org=args.influx_org,
        bucket=args.influx_bucket,
        token=token,
        username=username,
        password=password,
        timeout_s=args.influx_timeout_s,
    )


def adopt_old_spool(spool_dir: Path, output_dir: Path) -> None:
    """Before outputs had a directory each, InfluxDB's spool was spool_dir/spool.db: keep sending it."""
    old = spool_dir / SPOOL_FILE
    new = output_dir / SPOOL_FILE
    if old.exists() and not new.exists():
        output_dir.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal", "-shm"):
            if old.with_name(old.name + suffix).exists():
                os.replace(old.with_name(old.name + suffix), new.with_name(new.name + suffix))


def _create(settings: Any, context: RunContext) -> list[Output]:
    targets = [influx_target(settings, url) for url in influx_urls(settings)]
    if len({target.url for target in targets}) < len(targets):
        raise ConfigError("INFLUX_URL names the same InfluxDB twice: list each one once")
    return [_output(output_name(n), target, context) for n, target in enumerate(targets)]


def _output(name: str, target: InfluxTarget, context: RunContext) -> Output:
    directory = context.output_dir(name)
    if name == NAME:
        try:
            adopt_old_spool(context.spool_dir, directory)
        except OSError as exc:
            raise ConfigError(f"cannot move the old spool into {directory} ({exc.strerror}): "
                              "fix P1_SPOOL_DIR") from None
    from p1logger.outputs.influx.sink import InfluxSink  # tenacity and the rest: only for a run that writes

    # One attempt per write: LineOutput retries from the spool, so nothing waits in memory meanwhile.
    sink = InfluxSink(target, dead_letter_path=directory / DEAD_LETTER_FILE, shutdown=context.shutdown,
                      report_outages=False,
                      max_attempts=1)
    return LineOutput(
        name,
        sink,
        LineOutputSettings(
            flush_interval_s=context.flush_interval_s,
            batch_max_points=context.batch_max_points,
            spool_max_bytes=context.spool_max_bytes,
            durable=True,
            spool_dir=directory,
            backpressure_batches=None if context.live else 16,
            retry_initial_s=context.retry_initial_s,
            retry_max_s=context.retry_max_s,
        ),
        clock=context.clock or time.monotonic,
        wall_clock=context.wall_clock or time.time,
    )


def _check(settings: Any) -> list[Check]:
    try:
        targets = [influx_target(settings, url) for url in influx_urls(settings)]
    except ConfigError as exc:
        return [Check(False, f"InfluxDB: {exc}")]
    checks: list[Check] = []
    for target in targets:
        transport = target.transport()
        try:
            checks.append(Check(True, f"InfluxDB: {target.url} ({target.api}), {target.describe_destination()}"))
            checks.extend(transport.check())
        finally:
            transport.close()
    return checks


SPEC = OutputSpec(NAME, add_influx_arguments, lambda settings: NAME in selected(settings), _create, _check)
