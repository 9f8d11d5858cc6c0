"""Encrypted meters (DLMS general-glo-ciphering, AES-128-GCM): framing, decryption, and the reader stage.

Frames are built here with known keys, system titles and counters in the
layout Luxembourg's Smarty sends (DB 08 <title> 82 <len> 30 <counter>
<ciphertext> <12-byte tag>), and checked against two published frames
(tests/fixtures/encrypted, provenance in tests/fixtures/SOURCES.md).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from helpers.fake_meter import BELGIAN_3PH, DUTCH_DSMR5, fixture, restamped_series
from hypothesis import given, settings
from hypothesis import strategies as st

from p1logger import dlms
from p1logger.crc import crc16
from p1logger.decode import Telegram
from p1logger.errors import ConfigError
from p1logger.reader import TelegramReader
from p1logger.timestamps import TimestampParser

ENCRYPTED = Path(__file__).resolve().parent / "fixtures" / "encrypted"
KEY = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
AUTH = bytes.fromhex("F0E0D0C0B0A090807060504030201000")
TITLE = b"SAG" + bytes.fromhex("1100000001")
OPENHAB_KEY = bytes.fromhex("D491470F47126332B07D1923B3504188")
TIROL_KEY = bytes(range(0x10, 0x20))


def read_hex(name: str) -> bytes:
    return bytes.fromhex("".join((ENCRYPTED / name).read_text().split()))


def reader(keys: dlms.Keys | None, **kwargs: object) -> TelegramReader:
    return TelegramReader(TimestampParser("Europe/Brussels"), keys=keys, **kwargs)  # type: ignore[arg-type]


def telegrams(items: list[Telegram | object]) -> list[Telegram]:
    return [item for item in items if isinstance(item, Telegram)]


PLAIN = restamped_series(fixture(BELGIAN_3PH), 3)


def frames(keys: dlms.Keys = dlms.Keys(KEY), first_counter: int = 1000) -> list[bytes]:
    return [dlms.encrypt(telegram, keys, TITLE, first_counter + i) for i, telegram in enumerate(PLAIN)]


# ------------------------------------------------------------------ published frames


def test_published_smarty_frame_decrypts_and_its_tag_verifies_with_the_specification_key() -> None:
    raw = read_hex("openhab__smarty_long.hex")
    frame = dlms.parse_frame(raw)
    assert frame is not None
    assert (frame.system_title, frame.security_control, frame.frame_counter) == (
        bytes.fromhex("534147677001BD54"), 0x30, 0x05A8E3)
    assert (len(raw), len(frame.ciphertext), len(frame.tag)) == (711, 681, 12)
    expected = (ENCRYPTED / "openhab__smarty_long_plaintext.txt").read_bytes()

    without_auth = dlms.decrypt(frame, dlms.Keys(OPENHAB_KEY))
    with_auth = dlms.decrypt(frame, dlms.Keys(OPENHAB_KEY, dlms.SPECIFICATION_AUTHENTICATION_KEY))

    assert without_auth == with_auth
    assert without_auth.replace(b"\r\n", b"\n") == expected
    with pytest.raises(dlms.DecryptionError, match="P1_AUTHENTICATION_KEY"):
        dlms.decrypt(frame, dlms.Keys(OPENHAB_KEY, AUTH))


def test_published_smarty_frame_is_rejected_for_its_crc_as_published() -> None:
    """openHAB's test reads it in lenient mode: the CRC line does not match the text (the
    frame was made from an edited telegram), and the reader must not store such a telegram."""
    result = reader(dlms.Keys(OPENHAB_KEY)).feed(read_hex("openhab__smarty_long.hex"))
    assert [(item.reason, item.detail) for item in result] == [  # type: ignore[union-attr]
        ("crc", "CRC CFDE does not match 99BD in a decrypted frame")
    ]


def test_published_austrian_kaifa_apdu_decrypts_to_the_published_cosem_payload() -> None:
    """Security suite 1, encryption only (no tag): the same keystream; the payload is a COSEM
    data-notification, not a DSMR telegram (p1logger.cosem reads it: tests/test_cosem.py)."""
    frame = dlms.parse_frame(read_hex("smart_meter_tirol__kaifa_example_apdu.hex"))
    assert frame is not None
    assert (frame.system_title, frame.security_control, frame.frame_counter, frame.tag) == (
        b"KFM\x10\x10\x00\x00\x23", 0x21, 0x00295B9A, b"")
    plaintext = read_hex("smart_meter_tirol__kaifa_example_plaintext.hex")
    assert dlms.decrypt_unverified(frame, TIROL_KEY) == plaintext
    assert dlms.decrypt(frame, dlms.Keys(TIROL_KEY)) == plaintext
    with pytest.raises(dlms.DecryptionError, match="does not decrypt to a telegram"):
        dlms.decrypt(frame, dlms.Keys(bytes(16)))


def test_the_published_austrian_m_bus_stream_is_read_as_one_telegram() -> None:
    """The TINETZ example as sent: two M-Bus segments around the APDU (tests/test_cosem.py has the rest)."""
    tested = reader(dlms.Keys(TIROL_KEY))
    result = tested.feed(read_hex("smart_meter_tirol__kaifa_example_mbus.hex"))
    assert [type(r).__name__ for r in result] == ["Telegram"]
    assert tested.stats.rejected == {} and tested.stats.decrypted == 1


# ------------------------------------------------------------------ building and opening frames


def test_a_built_frame_has_the_smarty_layout() -> None:
    telegram = PLAIN[0]
    raw = dlms.encrypt(telegram, dlms.Keys(KEY, AUTH), TITLE, 0x01020304)
    body_bytes = 1 + 4 + len(telegram) + 12
    assert raw[:11] == b"\xdb\x08" + TITLE + b"\x82"
    assert int.from_bytes(raw[11:13], "big") == body_bytes == len(raw) - 13
    assert raw[13:18] == b"\x30\x01\x02\x03\x04"
    frame = dlms.parse_frame(raw)
    assert frame is not None and frame.tag == raw[-12:] and frame.ciphertext == raw[18:-12]


@pytest.mark.parametrize("length", [60, 200])  # one-byte (< 0x80) and 0x81 length forms
def test_short_length_forms_are_framed(length: int) -> None:
    body = b"/ABC5\\test\r\n\r\n" + b"x" * (length - 30) + b"\r\n!"
    telegram = body + b"%04X\r\n" % crc16(body)
    raw = dlms.encrypt(telegram, dlms.Keys(KEY), TITLE, 7)
    assert raw[10] == (len(raw) - 11 if len(raw) - 11 < 0x80 else 0x81)
    framer = dlms.CipherFramer(8192)
    assert [item.raw for item in framer.feed(raw) if isinstance(item, dlms.CipherFrame)] == [raw]


@pytest.mark.parametrize("auth", [None, AUTH], ids=["without-auth-key", "with-auth-key"])
def test_frames_decode_to_the_telegrams_inside_exactly(auth: bytes | None) -> None:
    keys = dlms.Keys(KEY, auth)
    plain = telegrams(reader(None).feed(b"".join(PLAIN)))
    tested = reader(keys)
    decoded = telegrams(tested.feed(b"".join(frames(dlms.Keys(KEY, auth)))))
    assert [t.raw for t in decoded] == PLAIN
    assert [(t.timestamp, t.fields) for t in decoded] == [(t.timestamp, t.fields) for t in plain]
    assert (tested.stats.ok, tested.stats.decrypted, tested.stats.rejected_total) == (3, 3, 0)


def test_plain_telegrams_still_pass_when_a_key_is_set() -> None:
    mixed = frames()[0] + fixture(DUTCH_DSMR5) + frames()[1]
    decoded = telegrams(reader(dlms.Keys(KEY)).feed(mixed))
    assert [t.raw for t in decoded] == [PLAIN[0], fixture(DUTCH_DSMR5), PLAIN[1]]


# ------------------------------------------------------------------ bad input


def test_a_wrong_key_is_one_clear_line_counted_and_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    tested = reader(dlms.Keys(bytes(16)), clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="p1logger.reader"):
        first = tested.feed(b"".join(frames()))
        now[0] = 700.0
        second = tested.feed(dlms.encrypt(PLAIN[0], dlms.Keys(KEY), TITLE, 5000))
    assert [(r.reason, r.detail) for r in first + second] == [  # type: ignore[union-attr]
        ("decrypt", "decryption failed: check P1_DECRYPTION_KEY (the frame does not decrypt to a telegram)")] * 4
    assert tested.stats.rejected == {"decrypt": 4}
    assert [r.getMessage() for r in caplog.records] == [
        "encrypted frame rejected: decryption failed: check P1_DECRYPTION_KEY (the frame does not decrypt to a telegram)",
        "encrypted frame rejected: decryption failed: check P1_DECRYPTION_KEY (the frame does not decrypt to a "
        "telegram) (2 more since the last report)",
    ]


def test_every_frame_under_a_wrong_key_is_counted_as_such_and_nothing_else() -> None:
    many = [dlms.encrypt(PLAIN[i % 3], dlms.Keys(KEY, AUTH), TITLE, i) for i in range(1, 301)]
    for keys in (dlms.Keys(bytes(16)), dlms.Keys(KEY, bytes(16))):
        tested = reader(keys)
        tested.feed(b"".join(many))
        assert (tested.stats.rejected, tested.stats.ok, tested.garbage_bytes) == ({"decrypt": 300}, 0, 0)


def test_a_wrong_authentication_key_fails_the_tag() -> None:
    result = reader(dlms.Keys(KEY, bytes(16))).feed(frames(dlms.Keys(KEY, AUTH))[0])
    assert [(r.reason, r.detail) for r in result] == [  # type: ignore[union-attr]
        ("decrypt", "decryption failed: check P1_DECRYPTION_KEY and P1_AUTHENTICATION_KEY (the GCM tag does not match)")]


@pytest.mark.parametrize("auth, reason", [(AUTH, "decrypt"), (None, "crc")], ids=["tag-catches", "crc-catches"])
def test_a_flipped_ciphertext_byte_is_rejected_and_the_next_frame_still_passes(auth: bytes | None, reason: str) -> None:
    good = frames(dlms.Keys(KEY, auth))
    damaged = bytearray(good[0])
    damaged[100] ^= 0x04  # inside a value: the telegram still starts with "/"
    tested = reader(dlms.Keys(KEY, auth))
    result = tested.feed(bytes(damaged) + good[1])
    assert [getattr(r, "reason", "ok") for r in result] == [reason, "ok"]
    assert tested.stats.rejected == {reason: 1}


@pytest.mark.parametrize("auth", [None, AUTH], ids=["without-auth-key", "with-auth-key"])
@pytest.mark.parametrize("cut", [20, 300, -13])
def test_a_truncated_frame_costs_only_itself(auth: bytes | None, cut: int) -> None:
    good = frames(dlms.Keys(KEY, auth))
    tested = reader(dlms.Keys(KEY, auth))
    result = tested.feed(good[0][:cut] + good[1] + good[2])
    assert [t.raw for t in telegrams(result)] == PLAIN[1:]
    assert tested.stats.rejected == {"incomplete": 1}


def test_garbage_between_frames_is_skipped() -> None:
    good = frames()
    noise = [b"\x00\xff\xdb\x08garbage", b"\xdb\x08" + TITLE + b"\x99\x99", b"/noise\r\n\xdb"]
    stream = noise[0] + good[0] + noise[1] + good[1] + noise[2] + good[2]
    tested = reader(dlms.Keys(KEY))
    assert [t.raw for t in telegrams(tested.feed(stream))] == PLAIN
    assert tested.stats.ok == 3


def test_a_frame_counter_that_goes_back_is_a_replay() -> None:
    good = frames()
    tested = reader(dlms.Keys(KEY))
    result = tested.feed(good[1] + good[1] + good[0] + good[2])
    assert [getattr(r, "reason", "ok") for r in result] == ["ok", "replay", "replay", "ok"]
    detail = result[2].detail  # type: ignore[union-attr]
    assert detail == "frame counter 1000 of meter 5341471100000001 is not above the last one (1001): a replayed frame"
    tested.reset()  # a reconnect (or the watchdog) forgets the counters: a meter reset heals
    assert len(telegrams(tested.feed(good[0]))) == 1


def test_endless_fake_headers_keep_the_buffer_bounded_and_real_frames_still_pass() -> None:
    tested = reader(dlms.Keys(KEY))
    assert tested.cipher_framer is not None
    # Headers claiming a frame of 8 KB, each followed by noise holding another such header.
    fake = b"\xdb\x08" + TITLE + b"\x82\x20\x00\x30" + b"\x00" * 100
    for _ in range(300):
        tested.feed(fake)
        assert tested.cipher_framer.buffered_bytes <= tested.cipher_framer.max_frame_bytes
    decoded = telegrams(tested.feed(b"".join(frames()) + b"\x00" * 8192))
    assert [t.raw for t in decoded] == PLAIN
    assert tested.stats.ok == 3


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_any_split_gives_the_same_telegrams(data: st.DataObject) -> None:
    stream = b"\x00\xdb" + b"".join(frames(dlms.Keys(KEY, AUTH)))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    tested = reader(dlms.Keys(KEY, AUTH))
    out: list[object] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)]):
        out += tested.feed(stream[start:end])
    assert [t.raw for t in telegrams(out)] == PLAIN
    assert tested.stats.rejected_total == 0


def test_a_split_at_every_byte_gives_the_same_telegrams() -> None:
    stream = b"".join(frames())
    for cut in range(len(stream) + 1):
        tested = reader(dlms.Keys(KEY))
        out = tested.feed(stream[:cut]) + tested.feed(stream[cut:])
        assert [t.raw for t in telegrams(out)] == PLAIN, cut
    tested = reader(dlms.Keys(KEY))
    one_by_one = [item for i in range(len(stream)) for item in tested.feed(stream[i : i + 1])]
    assert [t.raw for t in telegrams(one_by_one)] == PLAIN


# ------------------------------------------------------------------ the simulator


@pytest.mark.parametrize("profile", ["lu", "be3"])
def test_the_simulator_sends_the_same_telegrams_encrypted_with_a_rising_counter(profile: str) -> None:
    from datetime import datetime, timezone

    from p1logger.inputs.simulator import SimulatorSource

    start = datetime(2025, 7, 6, 8, 0, tzinfo=timezone.utc)
    plain = SimulatorSource(profile, start=start, sleep=lambda _s: None)
    sealed = SimulatorSource(profile, start=start, sleep=lambda _s: None, keys=dlms.Keys(KEY, AUTH))
    sent = [(plain.read(), sealed.read()) for _ in range(3)]
    parsed = [dlms.parse_frame(frame) for _, frame in sent]
    assert [(f.system_title[:3], f.security_control, len(f.tag)) for f in parsed if f] == [(b"SAG", 0x30, 12)] * 3
    counters = [f.frame_counter for f in parsed if f]
    assert counters == [counters[0], counters[0] + 1, counters[0] + 2]
    assert [dlms.decrypt(f, dlms.Keys(KEY, AUTH)) for f in parsed if f] == [text for text, _ in sent]
    assert sealed.description.endswith(", encrypted")


# ------------------------------------------------------------------ keys


@pytest.mark.parametrize("text", ["123", "G" * 32, "00" * 17, ""])
def test_a_malformed_key_names_the_setting_and_never_the_value(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        dlms.parse_key(text, "P1_DECRYPTION_KEY")
    message = str(caught.value)
    assert message == ("P1_DECRYPTION_KEY is not valid: expected a key of 32 hex digits (16 bytes, as the grid "
                       "operator gives it)")
    assert not text or text not in message


def test_keys_never_show_in_repr() -> None:
    keys = dlms.Keys(KEY, AUTH)
    assert repr(keys) == str(keys) == "Keys(decryption=<set>, authentication=<set>)"
    assert dlms.parse_key(" 0x" + KEY.hex() + "\n", "X") == KEY
