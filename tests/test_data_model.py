"""docs/data-model.md against the writer's schema (p1logger.points.SCHEMA)."""

from __future__ import annotations

import re
from pathlib import Path

from test_dashboards import INTENTIONALLY_UNSHOWN, reference_schema

from p1logger import datamodel
from p1logger.points import SCHEMA

REPO = Path(__file__).resolve().parent.parent
DATA_MODEL = REPO / "docs" / "data-model.md"


def test_the_field_list_is_generated_from_the_schema() -> None:
    text = DATA_MODEL.read_text(encoding="utf-8")
    assert datamodel.replace_field_list(text) == text, (
        "docs/data-model.md's field list is out of date: run python -m p1logger.datamodel docs/data-model.md")
    listed = re.findall(r"^\| `(\w+)` \| `(\w+)` \| (float|integer) \|", text, flags=re.MULTILINE)
    assert listed == [(m, f, "integer" if t == "int" else "float") for m, spec in SCHEMA.items()
                      for f, t in spec.fields.items()]


def test_the_described_fields_and_tags_are_the_schema() -> None:
    described = reference_schema()
    assert {m: (spec["fields"], spec["tags"]) for m, spec in described.items()} == {
        m: (dict(spec.fields), set(spec.tags)) for m, spec in SCHEMA.items()}


def test_every_file_the_page_cites_exists_and_units_are_right() -> None:
    text = DATA_MODEL.read_text(encoding="utf-8")
    for cited in re.findall(r"`((?:tests|p1logger|docs)/[\w./-]+)`", text):
        assert (REPO / cited).exists(), cited
    cost = next(line for line in text.splitlines() if line.startswith("| `yearly_cost_eur`"))
    assert "in euros" in cost and "cents" not in cost


def test_the_unshown_section_matches_the_dashboard_test() -> None:
    text = DATA_MODEL.read_text(encoding="utf-8")
    section = text[text.index("## Fields written but not shown"):text.index("## Every field")]
    if INTENTIONALLY_UNSHOWN:
        for measurement, field in INTENTIONALLY_UNSHOWN:
            assert f"`{measurement}`" in section
            assert f"`{field}`" in section or f"every `{measurement}` field" in section
    else:
        assert "Today that list is empty" in section
