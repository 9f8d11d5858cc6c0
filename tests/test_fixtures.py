"""Every real telegram in tests/fixtures frames, checks and decodes as its provenance says.

tests/fixtures/SOURCES.md records, per file, whether the printed CRC is valid.
One entry is overridden on purpose: the Warmtelink heat meter prints its CRC
without the leading zero (``!B9F`` for 0B9F).  SOURCES.md marks it not valid
because it compares four upper-case digits; numerically it is right, and
p1logger accepts it.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from p1logger import crc
from p1logger.decode import Decoder, decode
from p1logger.framing import Frame, Framer
from p1logger.reader import Rejected, TelegramReader
from p1logger.timestamps import TimestampParser

FIXTURES = Path(__file__).resolve().parent / "fixtures"
NAMES = sorted(p.name for p in FIXTURES.glob("*.txt"))
UNPADDED_BUT_CORRECT = "ndokter_dsmr_parser__unpadded_crc_warmtelink.txt"

# The telegrams whose printed CRC does not match their text, and why (SOURCES.md).
KNOWN_BAD_CRC = {
    "ndokter_dsmr_parser__iskra_ie.txt",  # CRC computed over an octal-mangled literal
    "dsmrreader__kaifa_dsmr42_bad_crc.txt",  # replaced by ABCD on purpose
    "dsmrreader__iskra_mt382_dsmr50_example.txt",  # octal-mangled literal
    "dsmrreader__fluvius_single_phase.txt",  # octal-mangled literal
    "dsmrreader__fluvius_multiple_gas.txt",  # octal-mangled literal
    "dsmrreader__fluvius_polyphase.txt",  # octal-mangled literal
    "dsmrreader__fluvius_peak_data.txt",  # octal-mangled literal
    "dsmrreader__fluvius_without_gas.txt",  # octal-mangled literal
    "dsmrreader__iskra_am550e_dsmr50_mbus2.txt",  # octal-mangled literal
    "athombv_node_dsmr_parser__sagemcom_t210d_anonymised.txt",  # serials replaced after capture
    "athombv_node_dsmr_parser__sagemcom_xt211_anonymised.txt",  # anonymised after capture
    "athombv_node_dsmr_parser__emucs_v211_spec_example.txt",  # placeholder !1234
}

# Telegrams without a usable telegram time: DSMR 2.2/3.0 and IEC gateways send
# no 0-0:1.0.0; the rest send a placeholder or an impossible date.
NO_TELEGRAM_TIME = {
    "ndokter_dsmr_parser__v2_2.txt",
    "ndokter_dsmr_parser__v3.txt",
    "dsmrreader__iskra_mt382_dsmr22.txt",
    "nielsbasjes_dsmr_tools__iskra_mt382_dsmr22_a.txt",
    "nielsbasjes_dsmr_tools__iskra_mt382_dsmr22_b.txt",
    "nielsbasjes_dsmr_tools__kamstrup_ka6u_dsmr22.txt",
    "nielsbasjes_dsmr_tools__kamstrup_zabf_dsmr22_a.txt",
    "nielsbasjes_dsmr_tools__kamstrup_zabf_dsmr22_b.txt",
    "nielsbasjes_dsmr_tools__landisgyr_xmx_dsmr22.txt",
    "ndokter_dsmr_parser__esy5q3da1004_v304.txt",
    "ndokter_dsmr_parser__esy5q3db1024_v304.txt",
    "athombv_node_dsmr_parser__landisgyr_e350_dsmr40.txt",  # 000101010000W, clock never set
    "nielsbasjes_dsmr_tools__landisgyr_e350_dsmr42_b.txt",  # 000101010000W
    "wassasin_dsmr5__mcs_dsmr50_anonymised.txt",  # 000000000000W
    "athombv_node_dsmr_parser__sagemcom_xt211_anonymised.txt",  # 123412341234W
    "nrocco_smeterd__iskra_me382_1004_dsmr3_gas.txt",
    "nrocco_smeterd__iskra_me382_1003_dsmr3.txt",
}


def _sources() -> dict[str, tuple[str, str]]:
    """file -> (CRC given, CRC valid) from the table in SOURCES.md."""
    table: dict[str, tuple[str, str]] = {}
    for line in (FIXTURES / "SOURCES.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in line.split("|")[1:-1]]
            table[cells[0].strip("`")] = (cells[5], cells[6])
    return table


SOURCES = _sources()


def expected_verdict(name: str) -> bool | None:
    given, valid = SOURCES[name]
    if valid == "-":
        assert given == "-"
        return None
    if name == UNPADDED_BUT_CORRECT:
        return True
    return {"yes": True, "NO": False}[valid]


def test_sources_describes_exactly_the_fixture_files() -> None:
    assert len(NAMES) == 93
    assert sorted(SOURCES) == NAMES


def test_the_known_bad_crcs_are_the_ones_sources_marks_not_valid() -> None:
    marked_bad = {name for name, (_, valid) in SOURCES.items() if valid == "NO"}
    assert marked_bad - {UNPADDED_BUT_CORRECT} == KNOWN_BAD_CRC
    verdicts = [expected_verdict(name) for name in NAMES]
    assert (verdicts.count(True), verdicts.count(False), verdicts.count(None)) == (68, 12, 13)


@pytest.mark.parametrize("name", NAMES)
def test_fixture_frames_checks_and_decodes(name: str) -> None:
    data = (FIXTURES / name).read_bytes()
    framer = Framer()
    items = framer.feed(data)
    assert len(items) == 1 and isinstance(items[0], Frame), items
    frame = items[0]
    end = data.index(b"\r\n!") + 3
    assert frame.raw == data
    assert frame.body == data[:end]
    assert frame.crc_text == SOURCES[name][0].replace("-", "")
    assert (framer.stats.frames, framer.stats.garbage_bytes, framer.buffered_bytes) == (1, 0, 0)

    verdict = crc.check(frame.body, frame.crc_text)
    assert verdict is expected_verdict(name)

    parser = TimestampParser("Europe/Brussels")
    telegram = decode(frame.body, parser, verdict, frame.raw)
    assert telegram.invalid == {}
    assert telegram.unknown == {}
    assert telegram.header == data[1 : data.index(b"\r\n")].decode("ascii")
    assert telegram.meter_id
    # Every data line became a field (the DSMR 2.2 gas value line joins its object line).
    data_lines = [ln for ln in data[:end].decode("ascii").split("\r\n")[1:] if ln and ln[0] not in "(!"]
    assert len(telegram.fields) == len(data_lines)
    assert (telegram.timestamp is None) == (name in NO_TELEGRAM_TIME)
    if telegram.timestamp is not None:
        assert isinstance(telegram.timestamp, datetime) and telegram.timestamp.utcoffset() is not None


def test_the_cached_decoder_agrees_with_the_uncached_one_over_the_corpus() -> None:
    parser = TimestampParser("Europe/Brussels")
    decoder = Decoder(parser)
    bodies = [(FIXTURES / n).read_bytes() for n in NAMES]
    for _ in range(2):  # the second pass is served from the line cache
        for data in bodies:
            assert decoder.decode(data).fields == decode(data, parser).fields


def test_the_whole_corpus_as_one_stream() -> None:
    reader = TelegramReader(TimestampParser("Europe/Brussels"))
    stream = b"".join((FIXTURES / n).read_bytes() for n in NAMES)
    results = []
    for offset in range(0, len(stream), 4096):
        results.extend(reader.feed(stream[offset : offset + 4096]))
    assert [r.raw for r in results] == [(FIXTURES / n).read_bytes() for n in NAMES]
    rejected = [NAMES[i] for i, r in enumerate(results) if isinstance(r, Rejected)]
    assert set(rejected) == KNOWN_BAD_CRC and len(rejected) == 12
    assert all(r.reason == "crc" for r in results if isinstance(r, Rejected))
    assert reader.stats.ok == 81
    assert dict(reader.stats.rejected) == {"crc": 12}
    assert reader.stats.invalid_values == 0
    assert dict(reader.stats.unknown_obis) == {}
    assert reader.garbage_bytes == 0
