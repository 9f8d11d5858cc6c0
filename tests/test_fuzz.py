"""Random and damaged input never crashes the reader and never grows memory without bound.

The reader must never raise: a problem with a telegram becomes a Rejected or a
value in ``Telegram.invalid``.  The decoder on its own may raise only the
project's own errors.  Damaged telegrams get a fresh CRC half of the time so
that the damage reaches the decoder instead of stopping at the CRC check.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p1logger.crc import crc16
from p1logger.decode import Decoder, Telegram, decode
from p1logger.errors import P1Error
from p1logger.obis import OBIS_TABLE, lookup
from p1logger.reader import _MAX_TRACKED_UNKNOWN, Rejected, TelegramReader
from p1logger.timestamps import TimestampParser

FIXTURES = Path(__file__).resolve().parent / "fixtures"
TELEGRAMS = [p.read_bytes() for p in sorted(FIXTURES.glob("*.txt"))]
PARSER = TimestampParser("Europe/Brussels")
FUZZ = settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


def with_fresh_crc(data: bytes) -> bytes:
    """Recompute the CRC of the last telegram-like part so the decoder sees the damage."""
    end = data.rfind(b"\r\n!")
    if end < 0:
        return data
    body = data[: end + 3]
    return body + f"{crc16(body):04X}".encode() + b"\r\n"


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(TELEGRAMS)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "delete", "insert", "truncate", "duplicate_line"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 40))]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=40) | st.sampled_from([b"/", b"!", b"\r\n", b"(", b")"]))
        elif op == "truncate":
            del data[pos:]
        elif op == "duplicate_line":
            start = data.rfind(b"\n", 0, pos) + 1
            stop = data.find(b"\n", pos)
            if stop > 0:
                data[start:start] = data[start : stop + 1]
    result = bytes(data)
    return with_fresh_crc(result) if draw(st.booleans()) else result


def feed_in_pieces(reader: TelegramReader, data: bytes, sizes: list[int]) -> list[Telegram | Rejected]:
    """Feed ``data`` in pieces of ``sizes`` (the rest in one piece), checking the bounds after each."""
    out: list[Telegram | Rejected] = []
    offset = 0
    for size in [*sizes, len(data)]:
        piece = data[offset : offset + size]
        out.extend(reader.feed(piece))
        assert_bounded(reader, len(piece))
        offset += size
    return out


def assert_bounded(reader: TelegramReader, chunk_bytes: int) -> None:
    assert reader.framer.buffered_bytes <= reader.framer.max_telegram_bytes + chunk_bytes
    assert len(reader.decoder._cache) <= reader.decoder.cache_lines
    assert len(reader.stats.unknown_obis) <= _MAX_TRACKED_UNKNOWN


def check_results(results: list[Telegram | Rejected]) -> None:
    for result in results:
        assert isinstance(result, (Telegram, Rejected))
        if isinstance(result, Telegram):
            assert result.crc_ok is not False
            assert isinstance(result.meter_id, str)
            result.mbus_devices()
        else:
            assert result.reason in {"crc", "crc_missing", "decode", "incomplete", "oversize", "bad_end"}


@FUZZ
@given(st.binary(max_size=4096), st.lists(st.integers(1, 512), max_size=20))
def test_random_bytes_never_crash_the_reader(data: bytes, sizes: list[int]) -> None:
    reader = TelegramReader(PARSER)
    check_results(feed_in_pieces(reader, data, sizes))


@FUZZ
@given(st.lists(damaged(), min_size=1, max_size=4), st.lists(st.integers(1, 700), max_size=20))
def test_damaged_telegrams_never_crash_the_reader(parts: list[bytes], sizes: list[int]) -> None:
    reader = TelegramReader(PARSER)
    valid = TELEGRAMS[-1]
    results = feed_in_pieces(reader, b"".join(parts) + valid + valid, sizes)
    check_results(results)
    # However bad the damage, the reader is back in step for the last telegram.
    assert results and isinstance(results[-1], Telegram) and results[-1].raw == valid


@FUZZ
@given(damaged(), st.booleans())
def test_the_decoder_raises_only_its_own_errors_on_damaged_telegrams(data: bytes, as_text: bool) -> None:
    body: bytes | str = data.decode("latin-1") if as_text else data
    for decoder in (Decoder(PARSER, cache_lines=64), Decoder(PARSER, cache_lines=0)):
        try:
            telegram = decoder.decode(body)
        except P1Error:
            continue
        telegram.mbus_devices()
        assert isinstance(telegram.meter_id, str)
        assert len(decoder._cache) <= decoder.cache_lines


@FUZZ
@given(st.text(max_size=600))
def test_the_decoder_raises_only_its_own_errors_on_any_text(text: str) -> None:
    for body in (text, "/" + text):
        try:
            decode(body, PARSER)
        except P1Error:
            pass


_OBIS_CODES = [d.obis.replace("-n:", "-1:") for d in OBIS_TABLE] + ["0-3:24.2.1", "1-1:1.8.1", "1-0:1.8.0*255"]
_VALUE_TEXT = st.text(alphabet="0123456789.*-:SWswkWhm3AVGJ()ABCDEFx ", max_size=16)
_LINE = st.tuples(
    st.sampled_from(_OBIS_CODES) | st.from_regex(r"\A[01]-[0-9]:[0-9]{1,3}\.[0-9]{1,2}\.[0-9]{1,3}\Z"),
    st.lists(_VALUE_TEXT, min_size=1, max_size=8),
).map(lambda t: (t[0], f"{t[0]}({')('.join(t[1])})"))


@FUZZ
@given(st.lists(_LINE, min_size=1, max_size=25))
def test_every_known_line_is_a_field_or_invalid_and_every_unknown_line_is_kept(lines: list[tuple[str, str]]) -> None:
    body = "/FUZ5\\LINES\r\n\r\n" + "".join(line + "\r\n" for _, line in lines) + "!"
    telegram = decode(body, PARSER)
    for obis, _ in lines:
        code = obis.split("*")[0]
        if lookup(code) is None:
            assert code in telegram.unknown
        else:
            assert code in telegram.fields or code in telegram.invalid, (code, telegram.invalid)
    assert Decoder(PARSER).decode(body).fields == telegram.fields


@FUZZ
@given(st.text(max_size=20))
def test_the_timestamp_parser_returns_utc_or_none_for_any_text(text: str) -> None:
    value = PARSER.parse(text)
    assert value is None or (isinstance(value, datetime) and value.tzinfo is timezone.utc)


# --- Memory bounds under sustained load ----------------------------------------------


def _telegram(*lines: str) -> bytes:
    body = ("\r\n".join(["/TST5\\BOUNDS", "", *lines]) + "\r\n!").encode("ascii")
    return body + f"{crc16(body):04X}".encode() + b"\r\n"


def test_unknown_obis_tracking_stops_at_its_bound() -> None:
    reported: list[str] = []
    reader = TelegramReader(PARSER, on_unknown=lambda obis, payload: reported.append(obis))
    stream = b"".join(_telegram("1-0:1.8.1(000001.000*kWh)", f"1-0:97.{i // 100}.{i % 100}(1)") for i in range(600))
    results = reader.feed(stream)
    assert len(results) == 600 and all(isinstance(r, Telegram) for r in results)
    assert all(len(r.unknown) == 1 for r in results if isinstance(r, Telegram))
    assert len(reader.stats.unknown_obis) == _MAX_TRACKED_UNKNOWN
    assert len(reported) == _MAX_TRACKED_UNKNOWN


def test_the_line_cache_never_exceeds_its_size() -> None:
    decoder = Decoder(PARSER, cache_lines=100)
    for n in range(50):
        lines = [f"1-0:1.8.1({n:06d}.{i:03d}*kWh)" for i in range(30)]
        telegram = decoder.decode(_telegram(*lines))
        assert telegram.fields["1-0:1.8.1"].value == float(f"{n}.029")
        assert len(decoder._cache) <= 100
    # One telegram longer than the whole cache still decodes completely.
    long_lines = [f"0-{1 + i % 4}:24.2.1(250101120000W)({i:05d}.000*m3)" for i in range(500)]
    telegram = decoder.decode(_telegram(*long_lines))
    assert telegram.fields["0-4:24.2.1"].value == 499.0
    assert len(decoder._cache) <= 100


def test_the_obis_resolution_cache_is_bounded() -> None:
    decoder = Decoder(PARSER)
    for start in range(0, 6000, 1000):
        lines = [f"1-0:{i // 1000}.{i % 1000 // 10}.{i % 10}(1)" for i in range(start, start + 1000)]
        decoder.decode("\r\n".join(["/TST5\\RESOLVE", "", *lines, "!"]))
    # 6000 distinct codes went through; the cache filled up to its bound and stopped.
    assert len(decoder._resolved) == 4096


def test_a_long_stream_of_noise_and_damage_keeps_every_buffer_bounded() -> None:
    reader = TelegramReader(PARSER)
    junk = bytes(range(256)) * 64
    for round_ in range(200):
        piece = TELEGRAMS[round_ % len(TELEGRAMS)]
        chunk = junk[: 1000 + round_ * 37 % 4000] + piece[: len(piece) // 2] + b"\r\n" + piece
        reader.feed(chunk)
        assert_bounded(reader, len(chunk))
    assert reader.stats.ok > 0
