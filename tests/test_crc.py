"""CRC-16/ARC over a telegram's "/".."!" and the check against the CRC text that follows."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p1logger import crc

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def reference_crc16_arc(data: bytes) -> int:
    """Bit-by-bit CRC-16/ARC (reflected polynomial 0xA001, init 0, no final XOR), as the DSMR spec describes it."""
    value = 0
    for byte in data:
        value ^= byte
        for _ in range(8):
            value = (value >> 1) ^ 0xA001 if value & 1 else value >> 1
    return value


def body_of(name: str) -> tuple[bytes, str]:
    data = (FIXTURES / f"{name}.txt").read_bytes()
    end = data.index(b"\r\n!") + 3
    return data[:end], data[end:].strip().decode("ascii")


def test_standard_check_value() -> None:
    assert crc.crc16(b"123456789") == 0xBB3D
    assert reference_crc16_arc(b"123456789") == 0xBB3D


def test_empty_input() -> None:
    assert crc.crc16(b"") == 0


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.binary(max_size=2048))
def test_matches_the_bitwise_reference(data: bytes) -> None:
    assert crc.crc16(data) == reference_crc16_arc(data)


# CRCs printed by the meters (valid) and, for the telegrams whose printed CRC is
# wrong, the CRC of their text as recorded in tests/fixtures/SOURCES.md.
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ndokter_dsmr_parser__fluvius_v171", 0x3AD7),
        ("ndokter_dsmr_parser__fluvius_v171_alt", 0xC4B0),
        ("ndokter_dsmr_parser__v4_2", 0x6796),
        ("ndokter_dsmr_parser__v5", 0x6EEE),
        ("ndokter_dsmr_parser__unpadded_crc_warmtelink", 0x0B9F),
        ("slo1958_sl_xj_energymeter__fluvius_3ph_peak_history13", 0x838B),
        ("dsmrreader__sweden_kamstrup", 0x5FCE),
        ("athombv_node_dsmr_parser__luxembourg_spec_example", 0x8B52),
        ("dsmrreader__kaifa_dsmr42_bad_crc", 0x4BC6),  # printed ABCD on purpose
        ("athombv_node_dsmr_parser__sagemcom_t210d_anonymised", 0x60EB),  # printed B055
        ("athombv_node_dsmr_parser__sagemcom_xt211_anonymised", 0x47E6),  # printed 3BA5
        ("athombv_node_dsmr_parser__emucs_v211_spec_example", 0x74E0),  # printed 1234
    ],
)
def test_known_fixture_crcs(name: str, value: int) -> None:
    body, _ = body_of(name)
    assert crc.crc16(body) == value
    assert reference_crc16_arc(body) == value


def test_check_accepts_upper_lower_and_unpadded_text() -> None:
    body, printed = body_of("ndokter_dsmr_parser__fluvius_v171")
    assert printed == "3AD7"
    assert crc.check(body, "3AD7") is True
    assert crc.check(body, "3ad7") is True
    assert crc.check(body, "3Ad7") is True
    warmtelink, printed = body_of("ndokter_dsmr_parser__unpadded_crc_warmtelink")
    assert printed == "B9F"
    assert crc.check(warmtelink, "B9F") is True
    assert crc.check(warmtelink, "b9f") is True
    assert crc.check(warmtelink, "0B9F") is True


def test_check_rejects_a_wrong_crc() -> None:
    body, _ = body_of("ndokter_dsmr_parser__fluvius_v171")
    assert crc.check(body, "3AD8") is False
    assert crc.check(body, "0") is False
    assert crc.check(body[:-2] + b"X!", "3AD7") is False


def test_check_without_crc_is_none() -> None:
    body, printed = body_of("ndokter_dsmr_parser__v2_2")
    assert printed == ""
    assert crc.check(body, "") is None


@pytest.mark.parametrize("position", [0, 1, 50, -2, -1])
def test_any_single_bit_flip_is_detected(position: int) -> None:
    body, printed = body_of("wassasin_dsmr5__sagemcom_t211_dsmr50")
    for bit in range(8):
        flipped = bytearray(body)
        flipped[position] ^= 1 << bit
        assert crc.check(bytes(flipped), printed) is False
