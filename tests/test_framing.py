"""The framer finds exactly the telegrams in any byte stream, in any split, and stays bounded."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p1logger import crc
from p1logger.crc import crc16
from p1logger.decode import Telegram
from p1logger.framing import Frame, Framer, Reject
from p1logger.reader import Rejected, TelegramReader
from p1logger.timestamps import TimestampParser

FIXTURES = Path(__file__).resolve().parent / "fixtures"
TELEGRAMS = [p.read_bytes() for p in sorted(FIXTURES.glob("*.txt"))]
T211 = (FIXTURES / "wassasin_dsmr5__sagemcom_t211_dsmr50.txt").read_bytes()
FLUVIUS = (FIXTURES / "ndokter_dsmr_parser__fluvius_v171_alt.txt").read_bytes()
DSMR22 = (FIXTURES / "ndokter_dsmr_parser__v2_2.txt").read_bytes()
CHUNK_BYTES = 4096


def telegram(*lines: str, crc_text: str | None = None) -> bytes:
    """A telegram with a correct CRC unless ``crc_text`` says otherwise."""
    body = ("\r\n".join(["/TST5\\FRAMING", "", *lines]) + "\r\n!").encode("ascii")
    return body + (f"{crc16(body):04X}" if crc_text is None else crc_text).encode("ascii") + b"\r\n"


SMALL = telegram("1-0:1.8.1(000001.000*kWh)")


def feed(framer: Framer, data: bytes, cuts: list[int] | None = None) -> list[Frame | Reject]:
    """Feed ``data`` split at ``cuts`` (or in one piece)."""
    out: list[Frame | Reject] = []
    start = 0
    for cut in sorted(set(cuts or [])) + [len(data)]:
        out.extend(framer.feed(data[start:cut]))
        start = cut
    return out


def frames(items: list[Frame | Reject]) -> list[bytes]:
    return [i.raw for i in items if isinstance(i, Frame)]


def rejects(items: list[Frame | Reject]) -> list[tuple[str, bytes]]:
    return [(i.reason, i.raw) for i in items if isinstance(i, Reject)]


# --- Any split, with noise between telegrams ---------------------------------------

_NOISE_BYTE = st.one_of(st.sampled_from(b"\r\n"), st.integers(0, 255).filter(lambda b: b not in b"/!"))
# Line noise between telegrams: anything but "/" and "!", line breaks included.
NOISE = st.lists(_NOISE_BYTE, max_size=40).map(bytes)
# Noise that ends in one or more "/" on the line the telegram starts on, as when
# the reader joins mid-line: the header re-anchors on the last "/".
_SAME_LINE = st.lists(_NOISE_BYTE.filter(lambda b: b != 0x0A), max_size=12).map(bytes)
SLASH_NOISE = st.tuples(NOISE, st.lists(_SAME_LINE, min_size=1, max_size=3), _SAME_LINE).map(
    lambda t: t[0] + b"".join(part + b"/" for part in t[1]) + t[2]
)


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    picks=st.lists(st.tuples(st.sampled_from(TELEGRAMS), st.one_of(NOISE, SLASH_NOISE)), min_size=1, max_size=4),
    trailing=NOISE,
    data=st.data(),
)
def test_any_split_of_telegrams_and_noise_yields_exactly_the_telegrams(
    picks: list[tuple[bytes, bytes]], trailing: bytes, data: st.DataObject
) -> None:
    stream = b"".join(noise + tele for tele, noise in picks) + trailing
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=40), label="cuts")
    framer = Framer()
    items = feed(framer, stream, cuts)
    assert frames(items) == [tele for tele, _ in picks]
    assert rejects(items) == []
    assert framer.stats.frames == len(picks)
    assert framer.stats.garbage_bytes == sum(len(noise) for _, noise in picks) + len(trailing)
    assert framer.buffered_bytes == 0


def test_every_single_cut_between_two_telegrams_and_noise() -> None:
    stream = b"\x00noise\r\n" + FLUVIUS + b"\r\n\xffjunk\r\nab/cd/" + DSMR22
    for cut in range(len(stream) + 1):
        framer = Framer()
        items = feed(framer, stream, [cut])
        assert frames(items) == [FLUVIUS, DSMR22], cut
        assert rejects(items) == [], cut
        assert framer.stats.garbage_bytes == len(stream) - len(FLUVIUS) - len(DSMR22)


def test_the_whole_corpus_byte_by_byte() -> None:
    stream = b"".join(TELEGRAMS)
    framer = Framer()
    items = feed(framer, stream, list(range(len(stream))))
    assert frames(items) == TELEGRAMS
    assert rejects(items) == []


# --- Start-up, garbage and cut telegrams -------------------------------------------


def test_garbage_before_the_first_telegram_is_counted() -> None:
    prefix = b"\x00\xff\xfe line noise\r\n\r\n~~~!?"
    framer = Framer()
    assert frames(feed(framer, prefix + T211)) == [T211]
    assert framer.stats.garbage_bytes == len(prefix)
    assert (framer.stats.incomplete, framer.stats.bad_end, framer.stats.oversize) == (0, 0, 0)


def test_a_partial_telegram_at_start_up_cut_anywhere_is_skipped() -> None:
    for start in range(1, len(FLUVIUS)):
        framer = Framer()
        items = feed(framer, FLUVIUS[start:] + T211, [len(FLUVIUS) - start])
        assert frames(items) == [T211], start
        assert rejects(items) == [], start
        assert framer.stats.garbage_bytes == len(FLUVIUS) - start


def test_a_telegram_cut_at_a_line_end_by_the_next_one_is_counted_incomplete() -> None:
    last_line = FLUVIUS.index(b"\r\n!") + 2
    boundaries = [i + 2 for i in range(len(FLUVIUS)) if FLUVIUS.startswith(b"\r\n", i) and i + 2 <= last_line]
    assert len(boundaries) == 38  # header, blank line and 36 data lines
    for cut in boundaries:
        framer = Framer()
        items = feed(framer, FLUVIUS[:cut] + T211)
        assert rejects(items) == [("incomplete", FLUVIUS[:cut])], cut
        assert frames(items) == [T211]
        assert framer.stats.incomplete == 1


def test_a_telegram_cut_mid_line_swallows_the_next_one_and_the_stream_recovers() -> None:
    # The next "/" is not at a line start, so it may be text inside a value:
    # the framer cannot split there.  The merged candidate fails the CRC, and
    # the telegram after it is read normally.
    cut = FLUVIUS.index(b"1-0:1.8.1(") + 14
    reader = TelegramReader(TimestampParser("Europe/Brussels"))
    results = reader.feed(FLUVIUS[:cut] + T211 + T211)
    assert [type(r) for r in results] == [Rejected, Telegram]
    assert isinstance(results[0], Rejected) and results[0].reason == "crc"
    assert results[0].raw == FLUVIUS[:cut] + T211
    assert results[1].raw == T211
    assert reader.stats.ok == 1 and dict(reader.stats.rejected) == {"crc": 1}


# --- The end line ---------------------------------------------------------------------


@pytest.mark.parametrize("crc_text", ["", "A", "ab", "0aB", "B9F", "1234", "abcd", "ABCD", "0000"])
def test_end_lines_with_zero_to_four_hex_digits_in_either_case(crc_text: str) -> None:
    data = telegram("1-0:1.8.1(000001.000*kWh)", crc_text=crc_text)
    for cut in range(len(data) + 1):
        framer = Framer()
        items = feed(framer, data + SMALL, [cut])
        assert [(type(i), i.raw) for i in items] == [(Frame, data), (Frame, SMALL)], cut
        first = items[0]
        assert isinstance(first, Frame) and first.crc_text == crc_text
        assert first.body == data[: data.index(b"\r\n!") + 3]


def test_a_stray_carriage_return_on_the_end_line_is_tolerated() -> None:
    data = SMALL[:-2] + b"\r\r\n"
    items = Framer().feed(data + SMALL)
    assert [(type(i), i.raw) for i in items] == [(Frame, data), (Frame, SMALL)]
    first = items[0]
    assert isinstance(first, Frame) and crc.check(first.body, first.crc_text) is True


@pytest.mark.parametrize(
    ("end", "detail"),
    [
        (b"!XYZW\r\n", "not a CRC"),
        (b"!12345\r\n", "not a CRC"),
        (b"!AB CD\r\n", "not a CRC"),
        (b"!-\r\n", "not a CRC"),
        (b"!ABCD12345678\r\n", "no line end after '!'"),
    ],
)
def test_a_bad_end_line_is_counted_and_the_next_telegram_is_read(end: bytes, detail: str) -> None:
    bad = telegram("1-0:1.8.1(000001.000*kWh)", crc_text="")[:-3] + end
    for cut in (0, len(bad) - 3, len(bad) - 1, len(bad) + 5):
        framer = Framer()
        items = feed(framer, bad + SMALL, [cut])
        assert len(items) == 2, cut
        reject, frame = items
        assert isinstance(reject, Reject) and reject.reason == "bad_end" and detail in reject.detail
        assert isinstance(frame, Frame) and frame.raw == SMALL
        assert framer.stats.bad_end == 1 and framer.stats.frames == 1


# --- Values containing "/" ------------------------------------------------------------


def test_a_slash_inside_a_value_never_splits_a_telegram() -> None:
    data = telegram(
        "0-0:96.13.0(/ISK5\\2MT382-1000 see a/b)",
        "1-0:1.8.1(000001.000*kWh)",
        "0-0:96.13.1(//)",
    )
    for cut in range(len(data) + 1):
        framer = Framer()
        items = feed(framer, data, [cut])
        assert frames(items) == [data], cut
        assert rejects(items) == []
    reader = TelegramReader(TimestampParser("UTC"))
    (result,) = reader.feed(data)
    assert isinstance(result, Telegram) and result.crc_ok is True
    assert result.fields["0-0:96.13.0"].value == "/ISK5\\2MT382-1000 see a/b"


def test_noise_with_slashes_on_the_header_line_is_dropped_up_to_the_last_slash() -> None:
    # An identification line never contains "/" (IEC 62056-21), so text before
    # the last "/" on it is noise that happened to precede the telegram.
    framer = Framer()
    items = feed(framer, b"xx/yy//" + T211)
    assert frames(items) == [T211]
    assert framer.stats.garbage_bytes == len(b"xx/yy//")


# --- Size limits ---------------------------------------------------------------------


def test_the_limit_must_leave_room_for_a_telegram() -> None:
    with pytest.raises(ValueError, match="at least 64"):
        Framer(max_telegram_bytes=63)


def test_an_oversize_telegram_received_whole_is_counted_and_the_next_one_read() -> None:
    framer = Framer(max_telegram_bytes=256)
    items = framer.feed(FLUVIUS + SMALL)
    assert rejects(items) == [("oversize", FLUVIUS)]
    assert frames(items) == [SMALL]
    assert framer.stats.oversize == 1


def test_an_oversize_telegram_received_in_pieces_is_counted_and_the_next_one_read() -> None:
    framer = Framer(max_telegram_bytes=256)
    stream = FLUVIUS + SMALL
    items = feed(framer, stream, list(range(0, len(stream), 16)))
    oversize = [raw for reason, raw in rejects(items) if reason == "oversize"]
    assert len(oversize) == 1 and FLUVIUS.startswith(oversize[0]) and len(oversize[0]) > 256
    assert frames(items) == [SMALL]
    assert framer.stats.oversize == 1
    # Everything of the dropped telegram is accounted for: rejected or counted as garbage.
    assert len(oversize[0]) + framer.stats.garbage_bytes == len(FLUVIUS)


def _bounded_feed(framer: Framer, blob: bytes) -> list[Frame | Reject]:
    out: list[Frame | Reject] = []
    for offset in range(0, len(blob), CHUNK_BYTES):
        out.extend(framer.feed(blob[offset : offset + CHUNK_BYTES]))
        assert framer.buffered_bytes <= framer.max_telegram_bytes + CHUNK_BYTES
    return out


TEN_MB = 10 * 1024 * 1024


def test_ten_megabytes_without_a_slash_buffer_nothing() -> None:
    blob = random.Random(1).randbytes(TEN_MB).replace(b"/", b"")
    framer = Framer()
    assert _bounded_feed(framer, blob) == []
    assert framer.buffered_bytes == 0
    assert framer.stats.garbage_bytes == len(blob)
    assert frames(framer.feed(T211)) == [T211]


@pytest.mark.parametrize(
    "kind",
    ["random bytes with slashes", "one slash then no line break", "a header then lines without end"],
)
def test_ten_megabytes_with_slashes_and_no_end_stay_bounded(kind: str) -> None:
    if kind == "random bytes with slashes":
        blob = random.Random(2).randbytes(TEN_MB).replace(b"!", b"/")
    elif kind == "one slash then no line break":
        blob = b"/" + b"A" * TEN_MB
    else:
        line = b"1-0:1.8.1(000001.000*kWh)\r\n"
        blob = b"/XMX5LGBBFFB231216240\r\n\r\n" + line * (TEN_MB // len(line))
    framer = Framer()
    items = _bounded_feed(framer, blob)
    assert framer.stats.oversize > 0
    assert all(isinstance(i, Reject) for i in items)
    # Whatever was left half-read, the next telegrams after a line break are found.
    assert frames(_bounded_feed(framer, b"\r\n" + T211 + T211)) == [T211, T211]
