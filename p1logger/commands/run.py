"""``p1logger run``: the main job. Read the meter, store every reading in InfluxDB."""

from __future__ import annotations

import argparse
import logging
import signal

from p1logger import config
from p1logger import settings as settings_table
from p1logger.builders import add_builder_arguments
from p1logger.cli import setup_logging
from p1logger.outputs import add_output_arguments
from p1logger.pipeline import build_pipeline

logger = logging.getLogger(__name__)


def default_spool_dir() -> str:
    return settings_table.default_spool_dir()


# Options that run and replay share.
def add_timestamps_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    settings_table.add(parser, "P1_TIMESTAMPS")


def add_spool_dir_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    settings_table.add(parser, "P1_SPOOL_DIR")


def add_batch_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    settings_table.add(parser, "P1_BATCH_MAX_POINTS")


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
    settings_table.add(parser, "P1_SOURCE", "P1_REALTIME")
    config.add_source_arguments(parser, positional=False)
    config.add_decode_arguments(parser)
    config.add_decryption_arguments(parser)
    add_timestamps_argument(parser)
    store = parser.add_argument_group("batching and spool")
    settings_table.add(store, "P1_SPOOL_DIR", "P1_SPOOL_MAX_BYTES", "P1_BATCH_MAX_POINTS", "P1_FLUSH_INTERVAL_S",
                       "P1_WATCHDOG_S", "P1_INSTANCE")
    config.add_logging_arguments(parser)
    add_builder_arguments(parser)
    add_output_arguments(parser)
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    setup_logging(config.check_log_level(args.log_level))
    pipeline, context = build_pipeline(args)

    def on_signal(signum: int, _frame: object) -> None:
        logger.info("received %s; writing or spooling what is in memory", signal.Signals(signum).name)
        pipeline.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    logger.info("p1logger run: source %s, outputs %s, spool %s", args.source,
                ", ".join(output.name for output in pipeline.outputs), args.spool_dir)
    pipeline.start()
    # A long wait: a signal still interrupts it (its handler runs here), and an idle logger stays asleep.
    while not pipeline.wait(3600.0):
        pass
    # Also after a failure: the other thread may still be writing or spooling what it holds.
    pipeline.join(pipeline.settings.shutdown_budget_s)
    if pipeline.failure is not None:
        return 1
    health = pipeline.health
    logger.info(
        "done: %d telegrams, %d rejected, %d points written, %d spooled, %d in the spool, %d dropped%s",
        health.telegrams_ok, health.telegrams_rejected, health.points_written, health.points_spooled,
        health.spool_points, health.points_dropped,
        f", {health.telegrams_dropped} telegrams dropped (queue full)" if health.telegrams_dropped else "",
    )
    if len(health.line_outputs()) > 1:
        for name, output in health.line_outputs().items():
            logger.info("output %s: %d points written, %d spooled, %d in the spool, %d dropped", name,
                        output.get("points_written", 0), output.get("points_spooled", 0),
                        output.get("spool_points", 0), output.get("points_dropped", 0))
    return 0
