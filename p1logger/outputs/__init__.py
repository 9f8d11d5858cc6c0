"""Where records go: the one registry of outputs.

| name       | module                    | turned on by                    | takes            |
|------------|---------------------------|---------------------------------|------------------|
| ``influx`` | ``outputs/influx/``       | default; ``--output influx,...`` | line protocol    |
| ``stdout`` | ``outputs/stdout.py``     | ``--output -``                  | line protocol    |
| ``fanout`` | ``outputs/fanout.py``     | ``--serve-raw HOST:PORT``       | raw telegrams    |
| ``archive``| ``outputs/archive.py``    | ``--archive DIR``               | raw telegrams    |
| ``mqtt``   | ``outputs/mqtt/``         | ``--mqtt-url``; alone: ``--output mqtt`` | records + figures |

Each module defines ``SPEC: OutputSpec``: its settings (argparse flags), when
it is on, how to create it for ``run`` and how ``doctor`` checks it without
starting anything. To add an output: a module (or folder) here, and its name
in ``OUTPUT_MODULES``. Line-protocol outputs get batching, retry and a spool
per output from ``outputs.lines.LineOutput``.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from p1logger import settings as settings_table
from p1logger.contracts import Check, Output, RunContext
from p1logger.errors import ConfigError

OUTPUT_MODULES = (
    "p1logger.outputs.influx",
    "p1logger.outputs.stdout",
    "p1logger.outputs.fanout",
    "p1logger.outputs.archive",
    "p1logger.outputs.mqtt",
)

# --output names; "-" is standard output. Unset: InfluxDB only.
SELECTABLE = {"influx": "influx", "-": "stdout", "stdout": "stdout", "mqtt": "mqtt"}


@dataclass(frozen=True)
class OutputSpec:
    name: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    enabled: Callable[[Any], bool]  # (settings) -> is this output on?
    # (settings, context) -> the output (or several: one per InfluxDB URL), not started
    create: Callable[[Any, RunContext], Output | Sequence[Output]]
    check: Callable[[Any], list[Check]]  # (settings) -> doctor's lines; opens no port, takes no lock


def output_specs() -> list[OutputSpec]:
    specs = []
    for name in OUTPUT_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue  # an output not built yet
        specs.append(module.SPEC)
    return specs


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    settings_table.add(parser.add_argument_group("output"), "P1_OUTPUT")
    for spec in output_specs():
        spec.add_arguments(parser)


def selected(settings: Any) -> set[str]:
    """The outputs --output names (InfluxDB when unset)."""
    text = getattr(settings, "output", None)
    if not text:
        return {"influx"}
    names = set()
    for part in str(text).split(","):
        name = SELECTABLE.get(part.strip())
        if name is None:
            raise ConfigError(f"--output {text!r} is not supported: use '-' for standard output, 'mqtt' for MQTT "
                              "only, or leave it unset to write to InfluxDB (fix P1_OUTPUT)")
        names.add(name)
    return names


def enabled_specs(settings: Any) -> list[OutputSpec]:
    specs = [spec for spec in output_specs() if spec.enabled(settings)]
    if not specs:
        raise ConfigError("no output is configured: leave P1_OUTPUT unset for InfluxDB, or set it to '-'")
    return specs


def create_outputs(settings: Any, context: RunContext) -> list[Output]:
    """Every configured output, created (not started). On a ConfigError the ones made so far are closed."""
    outputs: list[Output] = []
    try:
        for spec in enabled_specs(settings):
            made = spec.create(settings, context)
            outputs.extend(made if isinstance(made, Sequence) else [made])
    except BaseException:
        for output in outputs:
            output.close(0.0)
        raise
    return outputs
