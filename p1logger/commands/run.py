"""``p1logger run``: the main job. Read the meter, store every reading in InfluxDB."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Callable

from p1logger import config
from p1logger.cli import setup_logging
from p1logger.errors import ConfigError
from p1logger.health import default_spool_dir
from p1logger.pipeline import LineBuilder, Pipeline, PipelineSettings, RawObserver, Sink
from p1logger.points import PointBuilder
from p1logger.reader import TelegramReader
from p1logger.sink import InfluxSink, InfluxTarget
from p1logger.source import open_source
from p1logger.spool import Spool
from p1logger.timestamps import TimestampParser

logger = logging.getLogger(__name__)

SPOOL_FILE = "spool.db"
LIVE_WRITE_ATTEMPTS = 3
DEAD_LETTER_FILE = "dead-letter.lp"


def add_influx_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("InfluxDB")
    group.add_argument("--influx-url", default=config.env("INFLUX_URL", "http://localhost:8086"),
                       help="InfluxDB URL (default %(default)s) [env INFLUX_URL]")
    group.add_argument("--influx-api", choices=("v2", "v1"), default=config.env("INFLUX_API", "v2"),
                       help="v2 for InfluxDB 2.x; v1 for InfluxDB 1.x (/write with user and password) "
                       "(default %(default)s) [env INFLUX_API]")
    group.add_argument("--influx-org", default=config.env("INFLUX_ORG", ""),
                       help="organization (v2) [env INFLUX_ORG]")
    group.add_argument("--influx-bucket", default=config.env("INFLUX_BUCKET", "p1"),
                       help="bucket (v2), or database or database/retention_policy (v1) "
                       "(default %(default)s) [env INFLUX_BUCKET]")
    # Secrets: no defaults shown, so --help never prints one.
    group.add_argument("--influx-token-file", default=config.env("INFLUX_TOKEN_FILE"),
                       help="file holding the API token (v2) [env INFLUX_TOKEN_FILE; or put the token itself "
                       "in INFLUX_TOKEN, which is safer than a flag]")
    group.add_argument("--influx-username", default=config.env("INFLUX_USERNAME"),
                       help="user name (v1) [env INFLUX_USERNAME; the password comes from INFLUX_PASSWORD "
                       "or INFLUX_PASSWORD_FILE]")
    group.add_argument("--influx-timeout-s", type=float, default=float(config.env("INFLUX_TIMEOUT_S", "5") or 5),
                       help="seconds to wait for one write (default %(default)s) [env INFLUX_TIMEOUT_S]")


def influx_target(args: argparse.Namespace) -> InfluxTarget:
    # argparse checks choices only on the command line, not on a default taken from the environment.
    if args.influx_api not in ("v1", "v2"):
        raise ConfigError(f"INFLUX_API must be v2 (InfluxDB 2) or v1 (InfluxDB 1.x), not {args.influx_api!r}: fix INFLUX_API")
    token = config.read_secret(config.env("INFLUX_TOKEN"), args.influx_token_file, "token", "INFLUX_TOKEN_FILE")
    password = config.read_secret(config.env("INFLUX_PASSWORD"), config.env("INFLUX_PASSWORD_FILE"), "password",
                                  "INFLUX_PASSWORD_FILE")
    if args.influx_api == "v2" and not token:
        raise ConfigError("no InfluxDB token: set INFLUX_TOKEN or INFLUX_TOKEN_FILE (or INFLUX_API=v1 for InfluxDB 1.x)")
    if args.influx_api == "v2" and not args.influx_org:
        raise ConfigError("no InfluxDB organization: set INFLUX_ORG")
    username = args.influx_username
    if args.influx_api == "v1" and password and not username:
        raise ConfigError("INFLUX_PASSWORD is set but INFLUX_USERNAME is not: set both, or neither")
    if args.influx_api == "v1" and username and not password:
        raise ConfigError("INFLUX_USERNAME is set but no password: set INFLUX_PASSWORD or INFLUX_PASSWORD_FILE")
    return InfluxTarget(
        url=args.influx_url.rstrip("/"),
        api=args.influx_api,
        org=args.influx_org,
        bucket=args.influx_bucket,
        token=token if args.influx_api == "v2" else None,
        username=username if args.influx_api == "v1" else None,
        password=password if args.influx_api == "v1" else None,
        timeout_s=args.influx_timeout_s,
    )


# Options that run and replay share.
def add_timestamps_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup, receive_means: str) -> None:
    parser.add_argument("--timestamps", choices=("meter", "receive"), default=config.env("P1_TIMESTAMPS", "meter"),
                        help=f"stamp points with the meter's clock, or with {receive_means} "
                        "(default %(default)s) [env P1_TIMESTAMPS]")


def add_spool_dir_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup, holds: str) -> None:
    parser.add_argument("--spool-dir", default=config.env("P1_SPOOL_DIR", default_spool_dir()),
                        help=f"where {holds} live (default %(default)s) [env P1_SPOOL_DIR]")


def add_batch_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument("--batch-max-points", type=int, default=int(config.env("P1_BATCH_MAX_POINTS", "5000") or 0),
                        help="points per write (default %(default)s) [env P1_BATCH_MAX_POINTS]")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "run",
        help="read the meter and store every reading in InfluxDB (the main job)",
        description="Read telegrams from P1_SOURCE, decode them and write them to InfluxDB in batches. "
        "When the database is down, data goes to an on-disk spool and is sent when it is back. "
        "With a file: source, exits once everything is written or spooled.",
        epilog="examples:\n"
        "  INFLUX_TOKEN=... INFLUX_ORG=home p1logger run --source /dev/ttyUSB0\n"
        "  INFLUX_API=v1 INFLUX_BUCKET=p1 p1logger run --source file:telegrams.txt\n"
        "  p1logger run --source simulator --output -",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--source", default=config.env("P1_SOURCE"),
                        help="serial device, socket://host:port, rfc2217://host:port, file:PATH (replays a "
                        "recording as fast as possible), or simulator [env P1_SOURCE]")
    parser.add_argument("--realtime", action="store_true", default=config.env("P1_REALTIME") == "1",
                        help="pace a file: source at one telegram per second [env P1_REALTIME=1]")
    config.add_source_arguments(parser, positional=False)
    config.add_decode_arguments(parser)
    add_timestamps_argument(parser, "the receive time for meters whose clock is wrong")
    add_influx_arguments(parser)
    store = parser.add_argument_group("batching and spool")
    add_spool_dir_argument(store, "the spool, the dead-letter file and the health state")
    store.add_argument("--spool-max-bytes", type=int, default=int(config.env("P1_SPOOL_MAX_BYTES", str(1 << 30)) or 0),
                       help="spool size bound; past it the oldest data is dropped and counted "
                       "(default %(default)s = 1 GiB) [env P1_SPOOL_MAX_BYTES]")
    add_batch_argument(store)
    store.add_argument("--flush-interval-s", type=float, default=float(config.env("P1_FLUSH_INTERVAL_S", "1") or 0),
                       help="longest wait before a write (default %(default)s) [env P1_FLUSH_INTERVAL_S]")
    store.add_argument("--watchdog-s", type=float, default=float(config.env("P1_WATCHDOG_S", "30") or 0),
                       help="reopen the source after this long without a valid telegram "
                       "(default %(default)s) [env P1_WATCHDOG_S]")
    store.add_argument("--instance", default=config.env("P1_INSTANCE", socket.gethostname()),
                       help="the instance tag of the logger's own health points (default: host name) [env P1_INSTANCE]")
    config.add_logging_arguments(parser)
    for feature in _features():
        feature.add_run_arguments(parser)
    parser.set_defaults(func=main)


@dataclass
class RunContext:
    """What the optional features (capacity, archive, fan-out, stdout) plug into."""

    args: argparse.Namespace
    timestamps: TimestampParser
    spool_dir: Path
    shutdown: threading.Event
    extra_builders: list[LineBuilder] = field(default_factory=list)
    raw_observers: list[RawObserver] = field(default_factory=list)
    closers: list[Callable[[], None]] = field(default_factory=list)
    sink: Sink | None = None  # a feature may replace InfluxDB (e.g. line protocol on stdout)


# Optional features of ``run``.  Each module defines
#   add_run_arguments(parser: argparse.ArgumentParser) -> None
#   setup_run(context: RunContext) -> None
# and may add builders, raw observers, closers, or replace the sink.
FEATURE_MODULES = ("p1logger.capacity", "p1logger.archive", "p1logger.fanout", "p1logger.output")


def _features() -> list[ModuleType]:
    found = []
    for name in FEATURE_MODULES:
        try:
            found.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
    return [module for module in found if hasattr(module, "setup_run")]


def check_positive(name: str, value: float, variable: str) -> None:
    if not value > 0:
        raise ConfigError(f"{name} must be positive, not {value}: fix {variable}")


def build_pipeline(args: argparse.Namespace, shutdown: threading.Event | None = None) -> tuple[Pipeline, RunContext]:
    if not args.source:
        raise ConfigError("no source: set P1_SOURCE (e.g. /dev/ttyUSB0, socket://host:2001, file:PATH or simulator)")
    timestamps = TimestampParser(args.timezone)
    config.check_country(args.country)
    settings = config.serial_settings(args)
    check_positive("the batch size", args.batch_max_points, "P1_BATCH_MAX_POINTS")
    check_positive("the flush interval", args.flush_interval_s, "P1_FLUSH_INTERVAL_S")
    check_positive("the watchdog", args.watchdog_s, "P1_WATCHDOG_S")
    check_positive("the spool size", args.spool_max_bytes, "P1_SPOOL_MAX_BYTES")
    spool_dir = Path(args.spool_dir)
    shutdown = shutdown or threading.Event()
    context = RunContext(args, timestamps, spool_dir, shutdown)
    for feature in _features():
        feature.setup_run(context)
    # A short retry budget: a batch waiting on retries lives only in memory, and the
    # spool (drained with single-attempt probes) is the long-term retry.
    sink = context.sink or InfluxSink(influx_target(args), dead_letter_path=spool_dir / DEAD_LETTER_FILE,
                                      shutdown=shutdown, max_attempts=LIVE_WRITE_ATTEMPTS,
                                      backoff_initial_s=0.5, backoff_max_s=10.0)
    try:
        spool_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the spool directory {spool_dir} ({exc.strerror}): fix P1_SPOOL_DIR") from None
    spool = Spool(spool_dir / SPOOL_FILE, max_bytes=args.spool_max_bytes)
    pipeline = Pipeline(
        open_source=lambda: open_source(args.source, settings, realtime=args.realtime),
        reader=TelegramReader(timestamps, args.max_telegram_bytes),
        builder=PointBuilder(timestamps.zone, use_receive_time=args.timestamps == "receive"),
        sink=sink,
        spool=spool,
        settings=PipelineSettings(
            max_points=args.batch_max_points,
            flush_interval_s=args.flush_interval_s,
            watchdog_s=args.watchdog_s,
            instance=args.instance,
            state_dir=spool_dir,
        ),
        extra_builders=context.extra_builders,
        raw_observers=context.raw_observers,
        stop_event=shutdown,
    )
    return pipeline, context


def main(args: argparse.Namespace) -> int:
    setup_logging(config.check_log_level(args.log_level))
    pipeline, context = build_pipeline(args)

    def on_signal(signum: int, _frame: object) -> None:
        logger.info("received %s; writing or spooling what is in memory", signal.Signals(signum).name)
        pipeline.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    logger.info("p1logger run: source %s, spool %s", args.source, args.spool_dir)
    pipeline.start()
    try:
        while not pipeline.wait(0.5):
            pass
        # Also after a failure: the other thread may still be writing or spooling
        # what it holds, and the sink and spool must stay open until it is done.
        pipeline.join(pipeline.settings.shutdown_budget_s)
    finally:
        for close in context.closers:
            close()
        pipeline.sink.close()
        pipeline.spool.close()
    if pipeline.failure is not None:
        return 1
    health = pipeline.health
    logger.info(
        "done: %d telegrams, %d rejected, %d points written, %d spooled, %d in the spool, %d dropped%s",
        health.telegrams_ok, health.telegrams_rejected, health.points_written, health.points_spooled,
        health.spool_points, health.points_dropped,
        f", {health.telegrams_dropped} telegrams dropped (queue full)" if health.telegrams_dropped else "",
    )
    return 0
