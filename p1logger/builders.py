"""The line builders every telegram goes through, in order, and the one place they are registered.

    points    (p1logger.points)    the meter's readings: energy, power, voltage, gas...
    capacity  (p1logger.capacity)  the Belgian capacity tariff: quarters, peaks, projection
    cost      (p1logger.cost)      energy cost per quarter-hour, with a tariff file (P1_TARIFF_FILE)

``run`` and ``replay`` build the same list with ``create_builders``, so both
store the same series and fields. To add a builder (energy cost, say): a
module with the pure computation, and one ``BuilderSpec`` in ``BUILDERS``.
A builder's ``figures()`` (its latest derived state) reach the outputs in
``Record.figures[name]``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from p1logger import settings as settings_table
from p1logger.capacity import DEFAULT_PRICE_EUR_PER_KW_YEAR, CapacityTracker
from p1logger.contracts import Builder, Figures
from p1logger.cost import add_cost_arguments, create_tracker, tariff_capacity_price
from p1logger.decode import Telegram
from p1logger.points import PointBuilder


@dataclass(frozen=True)
class BuilderSpec:
    name: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    # (settings, zone, use_receive_time) -> the builder, or None when it is turned off
    create: Callable[[Any, ZoneInfo, bool], Builder | None]


# ------------------------------------------------------------------ points


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def _points(settings: Any, zone: ZoneInfo, use_receive_time: bool) -> Builder:
    return PointBuilder(zone, use_receive_time=use_receive_time)


# ------------------------------------------------------------------ capacity

PRICE_VARIABLE = "P1_CAPACITY_PRICE"
MARGIN_VARIABLE = "P1_CAPACITY_MARGIN_KW"


class CapacityBuilder:
    """The capacity tracker as a builder: its lines, and its state as figures for outputs that publish it."""

    name = "capacity"

    def __init__(self, tracker: CapacityTracker) -> None:
        self.tracker = tracker

    def build(self, telegram: Telegram, received_at_s: float) -> list[str]:
        return self.tracker.build(telegram, received_at_s)

    def figures(self) -> Figures | None:
        state = self.tracker.state()
        if state is None:
            return None
        quarter = state.quarter
        return {
            "meter": state.meter,
            "time_s": state.time_s,
            "demand_kw": quarter.meter_demand_kw,
            "quarter_avg_kw": quarter.average_so_far_kw,
            "month_peak_kw": state.running_peak_kw,
            "rolling_mean_kw": state.rolling_mean_kw,
            "projected_kw": quarter.projected_kw,
            "shed_kw": quarter.shed_kw,
            "peak_warning": quarter.peak_warning,
            "yearly_cost_eur": state.yearly_cost_eur,
        }


def add_capacity_arguments(parser: argparse.ArgumentParser) -> None:
    settings_table.add(parser.add_argument_group("capacity tariff (Belgium)"), PRICE_VARIABLE, MARGIN_VARIABLE)


def _capacity(settings: Any, zone: ZoneInfo, use_receive_time: bool) -> Builder:
    # Silent for meters without capacity data.
    price = tariff_capacity_price(settings, zone, DEFAULT_PRICE_EUR_PER_KW_YEAR)
    return CapacityBuilder(CapacityTracker(zone, settings.capacity_price if price is None else price,
                                           settings.capacity_margin_kw, use_receive_time=use_receive_time))


BUILDERS: tuple[BuilderSpec, ...] = (
    BuilderSpec("points", _no_arguments, _points),
    BuilderSpec("capacity", add_capacity_arguments, _capacity),
    BuilderSpec("cost", add_cost_arguments, create_tracker),
)


def add_builder_arguments(parser: argparse.ArgumentParser) -> None:
    for spec in BUILDERS:
        spec.add_arguments(parser)


def create_builders(settings: Any, zone: ZoneInfo, use_receive_time: bool) -> list[Builder]:
    """Every builder that is on, in order; the same for ``run`` and ``replay``."""
    builders = [spec.create(settings, zone, use_receive_time) for spec in BUILDERS]
    return [builder for builder in builders if builder is not None]
