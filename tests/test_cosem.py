"""Austrian M-Bus meters: M-Bus segments joined, the DLMS frame decrypted, the COSEM notification read.

The published TINETZ example (Kaifa MA309, tests/fixtures/encrypted, provenance in
tests/fixtures/encrypted/SOURCES.md) is read end to end; other layouts and A-XDR
types are built here from the DLMS Blue Book's encoding, and sealed into M-Bus
segments the way the example is.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import crcmod.predefined
import pytest

from p1logger import cosem, dlms, hdlc, mbus
from p1logger.decode import Telegram
from p1logger.points import PointBuilder
from p1logger.reader import Rejected, TelegramReader
from p1logger.timestamps import TimestampParser

ENCRYPTED = Path(__file__).resolve().parent / "fixtures" / "encrypted"
TIROL_KEY = bytes(range(0x10, 0x20))
TIROL_TITLE = b"KFM\x10\x10\x00\x00\x23"
VIENNA = ZoneInfo("Europe/Vienna")


def read_hex(name: str) -> bytes:
    return bytes.fromhex("".join((ENCRYPTED / name).read_text().split()))


def reader(key: bytes = TIROL_KEY) -> TelegramReader:
    return TelegramReader(TimestampParser(VIENNA), keys=dlms.Keys(key))


def feed(tested: TelegramReader, data: bytes, chunk: int) -> list[Telegram | Rejected]:
    out: list[Telegram | Rejected] = []
    for at in range(0, len(data), chunk):
        out += tested.feed(data[at : at + chunk])
    return out


TIROL_TELEGRAM = "\r\n".join([
    "/KFM5\\COSEM-1010000023",
    "",
    "0-0:1.0.0(07E50713010F2E2300FF8880)",  # read by the timestamp parser as any DLMS date-time
    "0-0:96.1.0(314B464D30313030303030303335)",
    "0-0:42.0.0(4B464D31313030313030303030303335)",
    "1-0:32.7.0(230.8*V)",
    "1-0:31.7.0(0.00*A)",
    "1-0:1.7.0(0*W)",
    "1-0:2.7.0(0*W)",
    "1-0:1.8.0(9108*Wh)",
    "1-0:2.8.0(0*Wh)",
    "1-0:3.8.0(96*varh)",
    "1-0:4.8.0(9*varh)",
    "!",
])


def test_the_published_notification_is_written_out_as_telegram_text() -> None:
    # The published plaintext: 0F, invoke id 0029B2DC, the time 2021-07-19 15:46:35 (deviation -120,
    # status 80: summer time), then a structure: the clock's OBIS and time, two identifiers, and eight
    # numbers each with its scaler and unit (230.8 V is 0x0904 at scaler -1).
    text = cosem.to_telegram(read_hex("smart_meter_tirol__kaifa_example_plaintext.hex"), TIROL_TITLE)
    assert text.decode("ascii") == TIROL_TELEGRAM


@pytest.mark.parametrize("chunk", [1, 7, 64, 4096])
def test_the_published_m_bus_stream_is_decoded_in_any_split(chunk: int) -> None:
    tested = reader()
    items = feed(tested, read_hex("smart_meter_tirol__kaifa_example_mbus.hex"), chunk)
    assert len(items) == 1 and isinstance(items[0], Telegram), items
    telegram = items[0]
    assert telegram.crc_ok is None
    assert telegram.raw == TIROL_TELEGRAM.encode("ascii") + b"\r\n"  # what the archive keeps
    assert telegram.timestamp is not None and telegram.timestamp.isoformat() == "2021-07-19T13:46:35+00:00"
    values = {obis: (reading.value, reading.unit) for obis, reading in telegram.fields.items() if obis != "0-0:1.0.0"}
    assert values == {
        "0-0:96.1.0": ("1KFM0100000035", None),
        "0-0:42.0.0": ("KFM1100100000035", None),
        "1-0:32.7.0": (230.8, "V"),
        "1-0:31.7.0": (0.0, "A"),
        "1-0:1.7.0": (0.0, "W"),
        "1-0:2.7.0": (0.0, "W"),
        "1-0:1.8.0": (9108.0, "Wh"),
        "1-0:2.8.0": (0.0, "Wh"),
        "1-0:3.8.0": (96.0, "varh"),
        "1-0:4.8.0": (9.0, "varh"),
    }
    assert telegram.unknown == {} and telegram.invalid == {}
    assert tested.stats.rejected == {} and tested.stats.decrypted == 1
    assert tested.cipher_framer is not None and tested.cipher_framer.segments.stats.segments == 2


def test_the_published_telegram_becomes_the_usual_points() -> None:
    items = reader().feed(read_hex("smart_meter_tirol__kaifa_example_mbus.hex"))
    assert isinstance(items[0], Telegram)
    t = 1626702395  # 2021-07-19 13:46:35 UTC
    meter = "1KFM0100000035"
    assert PointBuilder(VIENNA).build(items[0], 1_700_000_000.0) == [
        f"voltage,meter={meter},phase=L1 voltage_v=230.8 {t}",
        f"current,meter={meter},phase=L1 current_a=0.0 {t}",
        f"power,meter={meter},phase=total import_w=0.0,export_w=0.0 {t}",
        f"energy,meter={meter} import_total_kwh=9.108,export_total_kwh=0.0 {t}",  # 9108 Wh
    ]


# ------------------------------------------------------------------ built from the Blue Book's encoding


def obis(text: str) -> bytes:
    """09 06 and the six bytes of "A-B:C.D.E"."""
    a, rest = text.split("-")
    b, rest = rest.split(":")
    c, d, e = rest.split(".")
    return bytes((0x09, 0x06, int(a), int(b), int(c), int(d), int(e), 0xFF))


def scaler_unit(scaler: int, unit: int) -> bytes:
    return bytes((0x02, 0x02, 0x0F, scaler & 0xFF, 0x16, unit))


def u32(value: int) -> bytes:
    return b"\x06" + value.to_bytes(4, "big")


def date_time(year: int, month: int, day: int, hour: int, minute: int, second: int,
              deviation: int = -60, status: int = 0x00) -> bytes:
    return (year.to_bytes(2, "big") + bytes((month, day, 0xFF, hour, minute, second, 0x00))
            + deviation.to_bytes(2, "big", signed=True) + bytes((status,)))


def notification(body: bytes, sent_at: bytes | None = None) -> bytes:
    head = b"\x0f\x00\x01\x02\x03" + (b"\x0c" + sent_at if sent_at is not None else b"\x00")
    return head + body


def structure(*items: bytes) -> bytes:
    return bytes((0x02, len(items))) + b"".join(items)


def test_a_flat_layout_of_obis_value_and_scaler_unit_in_turn() -> None:
    # The other layout Austrian operators use: one structure, OBIS, value and scaler-unit in turn, and
    # the time only in the notification's header (here winter time: status 00, deviation -60).
    body = structure(
        obis("1-0:1.8.0"), u32(12_345_678), scaler_unit(0, 30),
        obis("1-0:2.8.0"), u32(1_000), scaler_unit(0, 30),
        obis("1-0:1.7.0"), u32(1_234), scaler_unit(0, 27),
        obis("1-0:32.7.0"), b"\x12" + (2_318).to_bytes(2, "big"), scaler_unit(-1, 35),
        obis("1-0:31.7.0"), b"\x12" + (123).to_bytes(2, "big"), scaler_unit(-2, 33),
        obis("1-0:13.7.0"), b"\x12" + (998).to_bytes(2, "big"), scaler_unit(-3, 255),
    )
    text = cosem.to_telegram(notification(body, date_time(2024, 1, 15, 8, 30, 5)), b"KFM\x00\x00\x00\x00\x01")
    assert text.decode("ascii").split("\r\n") == [
        "/KFM5\\COSEM-0000000001",
        "",
        "0-0:1.0.0(07E8010FFF081E0500FFC400)",  # the notification's own time
        "1-0:1.8.0(12345678*Wh)",
        "1-0:2.8.0(1000*Wh)",
        "1-0:1.7.0(1234*W)",
        "1-0:32.7.0(231.8*V)",
        "1-0:31.7.0(1.23*A)",
        "1-0:13.7.0(0.998)",
        "!",
    ]


def test_signed_and_wide_numbers_positive_scalers_and_other_types() -> None:
    body = structure(
        structure(obis("1-0:16.7.0"), b"\x05" + (-2_500).to_bytes(4, "big", signed=True), scaler_unit(0, 27)),
        structure(obis("1-0:1.8.0"), b"\x15" + (7).to_bytes(8, "big"), scaler_unit(3, 30)),  # 7 x 10^3 Wh
        structure(obis("1-0:14.7.0"), b"\x17" + bytes.fromhex("4248 0000"), scaler_unit(0, 44)),  # 50.0 Hz
        structure(obis("0-0:96.3.10"), b"\x03\x01"),  # a boolean, no unit
        structure(obis("0-0:96.13.0"), b"\x0a\x02Hi"),  # a visible-string: hex, as DSMR writes text
        structure(obis("0-0:96.14.0"), b"\x00"),  # null-data
    )
    text = cosem.to_telegram(notification(body), b"ISK\x00\x00\x00\x00\x02")
    assert text.decode("ascii").split("\r\n")[2:-1] == [
        "1-0:16.7.0(-2500*W)",
        "1-0:1.8.0(7000*Wh)",
        "1-0:14.7.0(50.0*Hz)",
        "0-0:96.3.10(1)",
        "0-0:96.13.0(4869)",
        "0-0:96.14.0()",
    ]


@pytest.mark.parametrize(("status", "utc"), [
    (0x80, "2025-10-26T00:30:01+00:00"),  # the autumn hour's first pass, summer time
    (0x00, "2025-10-26T01:30:01+00:00"),  # its second pass, winter time
    (0xFF, "2025-10-26T00:30:01+00:00"),  # no status: the zone decides (the first pass)
])
def test_the_clock_status_tells_the_autumn_hours_apart(status: int, utc: str) -> None:
    body = structure(obis("0-0:1.0.0"), b"\x09\x0c" + date_time(2025, 10, 26, 2, 30, 1, -60, status),
                     obis("1-0:1.8.0"), u32(5), scaler_unit(0, 30))
    text = cosem.to_telegram(notification(body), TIROL_TITLE)
    telegram = TelegramReader(TimestampParser(VIENNA)).feed(text + b"\r\n")[0]
    assert isinstance(telegram, Telegram) and telegram.timestamp is not None
    assert telegram.timestamp.isoformat() == utc


def test_a_clock_out_of_range_is_reported_not_moved_to_another_century() -> None:
    body = structure(obis("0-0:1.0.0"), b"\x09\x0c" + date_time(1999, 12, 31, 23, 59, 0), obis("1-0:1.8.0"), u32(5))
    telegram = TelegramReader(TimestampParser(VIENNA)).feed(cosem.to_telegram(notification(body), TIROL_TITLE)
                                                            + b"\r\n")[0]
    assert isinstance(telegram, Telegram)
    assert "0-0:1.0.0" in telegram.invalid and "out of range" in telegram.invalid["0-0:1.0.0"]


def test_another_billing_periods_value_does_not_replace_the_current_one() -> None:
    previous = obis("1-0:1.8.0")[:-1] + bytes((101,))  # F = 101: the last billing period
    body = structure(obis("1-0:1.8.0"), u32(9000), scaler_unit(0, 30), previous, u32(5), scaler_unit(0, 30))
    assert cosem.to_telegram(notification(body), TIROL_TITLE).decode("ascii").split("\r\n")[2:-1] == [
        "1-0:1.8.0(9000*Wh)"]


def test_values_without_obis_codes_are_rejected_saying_so() -> None:
    # Some meters send the values alone, in an order of their own: nothing says which is which.
    with pytest.raises(cosem.CosemError, match="no OBIS-coded values"):
        cosem.to_telegram(notification(structure(u32(1), u32(2))), TIROL_TITLE)


@pytest.mark.parametrize(("plaintext", "why"), [
    (notification(structure(obis("1-0:1.8.0"), u32(1))[:-2]), "cut short"),
    (notification(structure(obis("1-0:1.8.0"), u32(1)) + b"\x00"), "1 bytes after"),
    (notification(b"\x02\x01\x20\x00"), "type 0x20"),
    (notification(b"\x02\x85"), "bad length form"),
    (b"/not a notification", "not a DLMS data-notification"),
    (bytes.fromhex("0f00000001" "0c" "07e5"), "cut short"),  # the notification's time cut short
    (bytes.fromhex("0f00000001" "0c" "07e5071301"), "cut short"),
])
def test_damaged_notifications_raise(plaintext: bytes, why: str) -> None:
    with pytest.raises(cosem.CosemError, match=why):
        cosem.to_telegram(plaintext, TIROL_TITLE)


# ------------------------------------------------------------------ M-Bus segments


def long_frame(ci: int, data: bytes) -> bytes:
    content = bytes((0x53, 0xFF, ci, 0x01, 0x67)) + data
    return bytes((0x68, len(content), len(content), 0x68)) + content + bytes((sum(content) & 0xFF, 0x16))


def segmented(apdu: bytes, size: int = 245) -> bytes:
    pieces = [apdu[at : at + size] for at in range(0, len(apdu), size)]
    return b"".join(long_frame((count & 0x0F) | (0x10 if count == len(pieces) - 1 else 0), piece)
                    for count, piece in enumerate(pieces))


def sealed(plaintext: bytes, counter: int, key: bytes = TIROL_KEY) -> bytes:
    """Encrypted the way the Kaifa example is: security suite 1, encryption only (21), no tag."""
    keystream_frame = dlms.encrypt(plaintext, dlms.Keys(key), TIROL_TITLE, counter)
    frame = dlms.parse_frame(keystream_frame)
    assert frame is not None
    body = b"\x21" + counter.to_bytes(4, "big") + frame.ciphertext
    return b"\xdb\x08" + TIROL_TITLE + b"\x82" + len(body).to_bytes(2, "big") + body


def meter_stream(count: int) -> tuple[bytes, list[bytes]]:
    plaintexts = [notification(structure(obis("1-0:1.8.0"), u32(1000 + n), scaler_unit(0, 30)),
                               date_time(2024, 1, 15, 8, 30, n)) for n in range(count)]
    return b"".join(segmented(sealed(p, 100 + n), 20) for n, p in enumerate(plaintexts)), plaintexts


def energy(items: list[Telegram | Rejected]) -> list[float]:
    return [item.fields["1-0:1.8.0"].value for item in items if isinstance(item, Telegram)]  # type: ignore[misc]


def test_a_stream_of_segmented_frames_is_read_frame_by_frame() -> None:
    stream, _ = meter_stream(5)
    tested = reader()
    assert energy(feed(tested, stream, 33)) == [1000.0, 1001.0, 1002.0, 1003.0, 1004.0]
    assert tested.cipher_framer is not None
    assert tested.cipher_framer.segments.stats.segments == 5 * 3  # 57-byte frames in 20-byte pieces
    assert tested.stats.rejected == {}


def test_a_damaged_segment_loses_its_frame_only() -> None:
    stream, _ = meter_stream(4)
    frame_bytes = len(stream) // 4
    damaged = bytearray(stream)
    damaged[frame_bytes + 20] ^= 0x01  # a bit of the second frame's first segment: its checksum fails
    tested = reader()
    assert energy(feed(tested, bytes(damaged), 50)) == [1000.0, 1002.0, 1003.0]
    assert tested.cipher_framer is not None and tested.cipher_framer.segments.stats.segments == 4 * 3 - 1
    assert tested.cipher_framer.stats.damaged_wrappers == 1


def test_a_missing_segment_drops_its_frame_and_is_counted() -> None:
    stream, _ = meter_stream(3)
    frames = mbus_frames(stream)
    del frames[4]  # the second DLMS frame's middle segment
    tested = reader()
    assert energy(feed(tested, b"".join(frames), 64)) == [1000.0, 1002.0]
    assert tested.cipher_framer is not None and tested.cipher_framer.segments.stats.dropped == 1


def test_a_stream_joined_mid_frame_starts_at_the_next_frame() -> None:
    stream, _ = meter_stream(3)
    frames = mbus_frames(stream)
    tested = reader()
    assert energy(feed(tested, b"".join(frames)[len(frames[0]) + 7 :], 64)) == [1001.0, 1002.0]


def test_a_wrong_key_rejects_every_frame_as_not_opening() -> None:
    stream, _ = meter_stream(2)
    tested = reader(bytes(16))
    items = tested.feed(stream)
    assert [(item.reason, item.detail) for item in items if isinstance(item, Rejected)] == [
        ("decrypt", f"{dlms.DECRYPTION_FAILED} (the frame does not decrypt to a telegram)")] * 2
    assert not any(isinstance(item, Telegram) for item in items)


def test_a_notification_without_obis_codes_is_rejected_as_unsupported() -> None:
    plaintext = notification(structure(u32(1), u32(2)))
    tested = reader()
    items = tested.feed(segmented(sealed(plaintext, 7)))
    assert [(item.reason, item.detail) for item in items if isinstance(item, Rejected)] == [
        ("unsupported", f"{dlms.COSEM_CONTENT} (the notification holds no OBIS-coded values (a meter that sends "
                        "values alone, in an order of its own, is not read))")]
    assert tested.stats.rejected == {"unsupported": 1}


def test_a_replayed_frame_counter_is_rejected() -> None:
    stream, _ = meter_stream(2)
    tested = reader()
    first = tested.feed(stream)
    again = tested.feed(stream)
    assert energy(first) == [1000.0, 1001.0]
    assert [item.reason for item in again if isinstance(item, Rejected)] == ["replay", "replay"]


def frames_in(stream: bytes, frame_at: Callable[[bytes, int], object],
              kind: type[mbus.Segment] | type[hdlc.HdlcFrame]) -> list[bytes]:
    """The M-Bus or HDLC frames a stream is made of, each one whole and checked by ``frame_at``."""
    frames, at = [], 0
    while at < len(stream):
        frame = frame_at(stream, at)
        assert isinstance(frame, kind)
        frames.append(stream[at : at + frame.frame_bytes])
        at += frame.frame_bytes
    return frames


def mbus_frames(stream: bytes) -> list[bytes]:
    return frames_in(stream, mbus.segment_at, mbus.Segment)


def test_segment_at_checks_the_frame() -> None:
    frame = long_frame(0x10, b"\xdb\x08abc")
    segment = mbus.segment_at(frame, 0)
    assert segment == mbus.Segment(len(frame), 0, True, b"\xdb\x08abc")
    assert mbus.segment_at(frame[:-1], 0) is True  # more bytes needed
    assert mbus.segment_at(frame[:2], 0) is True
    bad_sum = frame[:-2] + bytes(((frame[-2] + 1) & 0xFF,)) + frame[-1:]
    assert mbus.segment_at(bad_sum, 0) == mbus.Damaged(len(frame))  # skipped whole
    assert mbus.segment_at(frame[:-1] + b"\x17", 0) is None  # no stop byte
    assert mbus.segment_at(long_frame(0x72, b"data"), 0) is None  # CI 72: an M-Bus data record, not DLMS
    assert mbus.segment_at(b"\x68\x10\x11\x68" + bytes(20), 0) is None  # the two lengths differ
    assert mbus.segment_at(b"kWh)\r\n", 2) is None  # an "h" in a plain telegram


def test_plain_telegrams_with_a_key_set_still_pass_through() -> None:
    # A key set for a meter that sends plain text (its "h"s are not M-Bus frames).
    telegram = (Path(__file__).resolve().parent / "fixtures" / "ndokter_dsmr_parser__sagemcom_t210_d_r.txt").read_bytes()
    items = reader().feed(telegram)
    assert [type(item).__name__ for item in items] == ["Telegram"]


def test_the_archived_text_reads_back_as_the_same_telegram_with_no_key() -> None:
    # The archive keeps the telegram as written out (no CRC line): a replay reads it like any DSMR 2.2 one.
    live = reader().feed(read_hex("smart_meter_tirol__kaifa_example_mbus.hex"))
    assert isinstance(live[0], Telegram)
    again = TelegramReader(TimestampParser(VIENNA)).feed(live[0].raw)
    assert len(again) == 1 and isinstance(again[0], Telegram)
    assert again[0].fields == live[0].fields and again[0].timestamp == live[0].timestamp


# ------------------------------------------------------------------ through the command line, into influxd


def test_dump_reads_the_published_m_bus_capture(tmp_path: Path) -> None:
    from test_run_cli import cli_env, p1logger

    capture = tmp_path / "tirol.bin"
    capture.write_bytes(read_hex("smart_meter_tirol__kaifa_example_mbus.hex"))
    result = p1logger("dump", "--input", str(capture), "--format", "json",
                      env=cli_env(P1_DECRYPTION_KEY=TIROL_KEY.hex(), P1_TIMEZONE="Europe/Vienna"))
    assert result.returncode == 0, result.stderr
    [line] = result.stdout.splitlines()
    decoded = json.loads(line)
    assert (decoded["meter"], decoded["timestamp"], decoded["crc_ok"]) == ("1KFM0100000035", "2021-07-19T13:46:35Z", None)
    assert decoded["fields"]["1-0:1.8.0"] == {"value": 9108.0, "unit": "Wh"}
    assert decoded["fields"]["1-0:32.7.0"] == {"value": 230.8, "unit": "V"}
    assert TIROL_KEY.hex() not in result.stdout + result.stderr


def test_replay_of_an_m_bus_capture_stores_every_frame(influxd: Any, influx_db: str, tmp_path: Path) -> None:
    from test_run_cli import cli_env, p1logger

    stream, _ = meter_stream(12)
    capture = tmp_path / "mbus.bin"
    capture.write_bytes(stream)
    env = cli_env(INFLUX_API="v1", INFLUX_URL=influxd.url, INFLUX_BUCKET=influx_db, P1_SPOOL_DIR=tmp_path / "spool",
                  P1_DECRYPTION_KEY=TIROL_KEY.hex(), P1_TIMEZONE="Europe/Vienna")
    result = p1logger("replay", str(capture), env=env)
    assert result.returncode == 0, result.stderr
    rows = influxd.query("SELECT import_total_kwh FROM energy", influx_db)["results"][0]["series"][0]["values"]
    # 2024-01-15 08:30:00-11 local winter time (UTC+1): 07:30:00-11 UTC, 1705303800 + n; 1000-1011 Wh.
    assert rows == [[1705303800 + n, (1000 + n) / 1000] for n in range(12)]


# ------------------------------------------------------------------ EVN (Netz NÖ): the flat layout, real captures


EVN_CASES = {
    # file: (key, meter header, UTC time, values). Expected values as published (SOURCES.md), scaled.
    "netz_noe__kaifa_ma309m_doc_example_mbus.hex": (
        "36C66639E48A8CA4D6BC8B282A793BBB", "KFM5\\COSEM-6750000009", "2021-09-27T07:47:15+00:00",
        {"1-0:1.8.0": 12937.0, "1-0:2.8.0": 0.0, "1-0:1.7.0": 0.0, "1-0:2.7.0": 0.0, "1-0:32.7.0": 233.7,
         "1-0:52.7.0": 0.0, "1-0:72.7.0": 0.0, "1-0:31.7.0": 0.0, "1-0:51.7.0": 0.0, "1-0:71.7.0": 0.0,
         "1-0:13.7.0": 1.0, "0-0:96.1.0": "181220000009"}),
    "energyagent__evn_sagemcom_t210d_mbus.hex": (
        "A89AE6C225E45130298B3CC3F4D23463", "SAG5\\COSEM-5905E990F3", "2023-06-09T06:57:55+00:00",
        {"1-0:1.8.0": 6842204.0, "1-0:2.8.0": 6430217.0, "1-0:1.7.0": 0.0, "1-0:2.7.0": 2088.0, "1-0:32.7.0": 237.3,
         "1-0:52.7.0": 237.8, "1-0:72.7.0": 239.2, "1-0:31.7.0": 3.2, "1-0:51.7.0": 2.73, "1-0:71.7.0": 2.92,
         "1-0:13.7.0": 0.991, "0-0:96.1.0": "178210193075"}),
    "evn__sagemcom_t210d_length_low_byte_mbus.hex": (
        "E36344D76C1F6E5DD9F54258B5508866", "SAG5\\COSEM-5905ED3312", "2023-04-14T15:56:05+00:00",
        {"1-0:1.8.0": 627660.0, "1-0:2.8.0": 0.0, "1-0:1.7.0": 515.0, "1-0:2.7.0": 0.0, "1-0:32.7.0": 232.9,
         "1-0:52.7.0": 236.5, "1-0:72.7.0": 237.2, "1-0:31.7.0": 0.85, "1-0:51.7.0": 0.94, "1-0:71.7.0": 1.18,
         "1-0:13.7.0": 0.819, "0-0:96.1.0": "178210431186"}),
}
EVN_UNITS = {"1-0:1.8.0": "Wh", "1-0:2.8.0": "Wh", "1-0:1.7.0": "W", "1-0:2.7.0": "W", "1-0:32.7.0": "V",
             "1-0:52.7.0": "V", "1-0:72.7.0": "V", "1-0:31.7.0": "A", "1-0:51.7.0": "A", "1-0:71.7.0": "A",
             "1-0:13.7.0": None, "0-0:96.1.0": None}


@pytest.mark.parametrize("name", sorted(EVN_CASES))
@pytest.mark.parametrize("chunk", [1, 64, 4096])
def test_evn_captures_decode_to_their_published_values(name: str, chunk: int) -> None:
    key, header, utc, values = EVN_CASES[name]
    tested = reader(bytes.fromhex(key))
    items = feed(tested, read_hex(name), chunk)
    assert len(items) == 1 and isinstance(items[0], Telegram), items
    telegram = items[0]
    assert telegram.header == header
    assert telegram.timestamp is not None and telegram.timestamp.isoformat() == utc
    assert {obis: (r.value, r.unit) for obis, r in telegram.fields.items() if obis != "0-0:1.0.0"} == {
        obis: (value, EVN_UNITS[obis]) for obis, value in values.items()}
    assert telegram.unknown == {} and telegram.invalid == {}


def test_evn_three_phase_points_in_the_units_their_names_carry() -> None:
    key, _, _, _ = EVN_CASES["energyagent__evn_sagemcom_t210d_mbus.hex"]
    [telegram] = reader(bytes.fromhex(key)).feed(read_hex("energyagent__evn_sagemcom_t210d_mbus.hex"))
    assert isinstance(telegram, Telegram)
    t = 1686293875  # 2023-06-09 06:57:55 UTC
    meter = "178210193075"  # the meter number EVN's layout ends with
    assert PointBuilder(VIENNA).build(telegram, 1_700_000_000.0) == [
        f"energy,meter={meter} import_total_kwh=6842.204,export_total_kwh=6430.217 {t}",
        f"power,meter={meter},phase=total import_w=0.0,export_w=2088.0 {t}",
        f"voltage,meter={meter},phase=L1 voltage_v=237.3 {t}",
        f"voltage,meter={meter},phase=L2 voltage_v=237.8 {t}",
        f"voltage,meter={meter},phase=L3 voltage_v=239.2 {t}",
        f"current,meter={meter},phase=L1 current_a=3.2 {t}",
        f"current,meter={meter},phase=L2 current_a=2.73 {t}",
        f"current,meter={meter},phase=L3 current_a=2.92 {t}",
    ]


# ------------------------------------------------------------------ bare DLMS frames, reconnects, and noise


def bare_frames(count: int) -> list[bytes]:
    """The same notifications in bare DB frames (no M-Bus around them)."""
    return [sealed(notification(structure(obis("1-0:1.8.0"), u32(1000 + n), scaler_unit(0, 30))), 100 + n)
            for n in range(count)]


def test_bare_dlms_frames_holding_notifications_are_read() -> None:
    assert energy(reader().feed(b"".join(bare_frames(3)))) == [1000.0, 1001.0, 1002.0]


def test_a_bare_frame_cut_short_costs_only_itself() -> None:
    # With no tag, a frame cut short still opens to a notification's first bytes; the next frame
    # inside it is found again.
    frames = bare_frames(3)
    tested = reader()
    items = tested.feed(frames[0][:-10] + frames[1] + frames[2])
    assert energy(items) == [1001.0, 1002.0]
    assert tested.stats.rejected == {"incomplete": 1}


def test_after_a_reconnect_bare_frames_are_looked_for_again() -> None:
    stream, _ = meter_stream(1)
    tested = reader()
    assert energy(tested.feed(stream)) == [1000.0]
    tested.reset()  # another meter, or a dongle that unwraps the segments, after a reconnect
    assert energy(tested.feed(b"".join(bare_frames(2)))) == [1000.0, 1001.0]


def test_noise_and_damaged_captures_never_raise() -> None:
    # Corrupt input is counted and skipped, never raised: random bytes, and the published captures and
    # plaintexts with bytes flipped, cut, inserted or dropped, fed in random pieces.
    rng = random.Random(20261130)
    captures = [(read_hex("smart_meter_tirol__kaifa_example_mbus.hex"), TIROL_KEY)] + [
        (read_hex(name), bytes.fromhex(case[0])) for name, case in EVN_CASES.items()] + [
        (read_hex(name), bytes.fromhex(case[0])) for name, case in WIENER_NETZE.items()] + [
        (read_hex("dlms_parser__landisgyr_e450_hdlc_gbt.hex"), bytes.fromhex("5FDE26FE7A1A36B6E1C0BA048FA9A023"))]
    plaintext = read_hex("smart_meter_tirol__kaifa_example_plaintext.hex")
    telegrams = 0
    for case in range(1500):
        capture, key = captures[case % len(captures)]
        if case % 3 == 0:
            data, key = segmented(sealed(damaged(rng, plaintext), 1 + case), rng.choice([20, 245])), TIROL_KEY
        elif case % 3 == 1:
            data = damaged(rng, capture * 2)
        else:
            data = rng.randbytes(rng.randint(0, 600))
        tested = reader(key)
        at = 0
        while at < len(data):
            size = rng.choice([1, 7, 64, 4096])
            telegrams += sum(isinstance(item, Telegram) for item in tested.feed(data[at : at + size]))
            at += size
    assert telegrams > 0  # some damage leaves frames whole: those are still read


def damaged(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(len(out)) if out else 0
        action = rng.randrange(4)
        if action == 0 and out:
            out[at] ^= 1 << rng.randrange(8)
        elif action == 1:
            out[at:at] = rng.randbytes(rng.randint(1, 6))
        elif action == 2:
            del out[at : at + rng.randint(1, 6)]
        else:
            out[at:at] = bytes((rng.choice([0x02, 0x09, 0x0C, 0x0F, 0x68, 0x81, 0x82, 0xDB, 0xFF]),))
    return bytes(out)


def test_a_frame_of_more_than_sixteen_segments_counts_them_modulo_sixteen() -> None:
    stream = b"".join(segmented(sealed(notification(structure(obis("1-0:1.8.0"), u32(7), scaler_unit(0, 30)),
                                                    date_time(2024, 1, 15, 8, 30, 0)), 5 + n), 2) for n in range(2))
    tested = reader()
    assert energy(feed(tested, stream, 50)) == [7.0, 7.0]
    assert tested.cipher_framer is not None and tested.cipher_framer.segments.stats.segments > 2 * 16


# ------------------------------------------------------------------ HDLC: Landis+Gyr E450 and Wiener Netze


E450 = "dlms_parser__landisgyr_e450_hdlc_gbt.hex"
E450_KEYS = dlms.Keys(bytes.fromhex("5FDE26FE7A1A36B6E1C0BA048FA9A023"), bytes.fromhex("7DA42A44E00BD0AF5E1A911E3CCA64FD"))
# The published raw values (SOURCES.md), in the register's base units: an E450 sends no scaler or unit.
E450_VALUES = {
    "1-0:1.8.0": (12048950.0, "Wh"), "1-0:1.8.1": (8768040.0, "Wh"), "1-0:1.8.2": (3280910.0, "Wh"),
    "1-0:1.7.0": (545.0, "W"), "1-0:2.8.0": (18054.0, "Wh"), "1-0:2.8.1": (18054.0, "Wh"), "1-0:2.8.2": (0.0, "Wh"),
    "1-0:2.7.0": (0.0, "W"), "1-0:3.8.0": (30098.0, "varh"), "1-0:3.8.1": (29488.0, "varh"),
    "1-0:3.8.2": (610.0, "varh"), "1-0:3.7.0": (9.0, "var"), "1-0:4.8.0": (9801363.0, "varh"),
    "1-0:4.8.1": (6492443.0, "varh"), "1-0:4.8.2": (3308920.0, "varh"), "1-0:4.7.0": (379.0, "var"),
}


@pytest.mark.parametrize("chunk", [1, 50, 4096])
def test_a_landis_gyr_e450_block_transfer_over_hdlc_decodes_to_its_published_values(chunk: int) -> None:
    tested = TelegramReader(TimestampParser(VIENNA), keys=E450_KEYS)
    items = feed(tested, read_hex(E450), chunk)
    assert len(items) == 1 and isinstance(items[0], Telegram), items
    telegram = items[0]
    assert telegram.header == "LGZ5\\COSEM-67735DD3A9"
    assert telegram.timestamp is not None and telegram.timestamp.isoformat() == "2023-11-10T09:58:50+00:00"
    assert {obis: (r.value, r.unit) for obis, r in telegram.fields.items() if obis != "0-0:1.0.0"} == E450_VALUES
    assert tested.cipher_framer is not None and tested.cipher_framer.messages.stats.frames == 3


def test_the_e450_tag_is_checked_with_the_authentication_key() -> None:
    wrong = TelegramReader(TimestampParser(VIENNA), keys=dlms.Keys(E450_KEYS.decryption, bytes(16)))
    assert [item.reason for item in wrong.feed(read_hex(E450)) if isinstance(item, Rejected)] == ["decrypt"]


def test_e450_points_in_kilowatt_hours_and_watts() -> None:
    [telegram] = TelegramReader(TimestampParser(VIENNA), keys=E450_KEYS).feed(read_hex(E450))
    assert isinstance(telegram, Telegram)
    meter, t = "LGZ5\\COSEM-67735DD3A9", 1699610330
    assert PointBuilder(VIENNA).build(telegram, 1_700_000_000.0) == [
        f"energy,meter={meter} import_total_kwh=12048.95,import_t1_kwh=8768.04,import_t2_kwh=3280.91,"
        f"export_total_kwh=18.054,export_t1_kwh=18.054,export_t2_kwh=0.0 {t}",
        f"power,meter={meter},phase=total import_w=545.0,export_w=0.0 {t}",
    ]


def test_a_damaged_hdlc_frame_loses_its_message_only() -> None:
    data = bytearray(read_hex(E450))
    data[60] ^= 0x01  # inside the first frame: its FCS fails, so the transfer has no block 1
    tested = TelegramReader(TimestampParser(VIENNA), keys=E450_KEYS)
    assert not any(isinstance(item, Telegram) for item in tested.feed(bytes(data)))
    assert tested.cipher_framer is not None and tested.cipher_framer.stats.damaged_wrappers == 1
    assert tested.cipher_framer.messages.stats.frames == 2 and tested.stats.rejected == {}
    # The next transfer is read: the same capture again would be a replayed counter, so a fresh reader.
    assert isinstance(TelegramReader(TimestampParser(VIENNA), keys=E450_KEYS).feed(
        bytes(data) + read_hex(E450))[-1], Telegram)


WIENER_NETZE = {  # file: key, UTC time, the eight values (Wh, Wh, varh, varh, W, W, var, var), device name
    "energyagent__wiener_netze_iskra_am550_hdlc.hex": (
        "927CE4ECA62FE23E19406C5EE452285E", "2021-10-21T04:44:02+00:00", (855, 246, 103, 169, 0, 0, 0, 0), None),
    "energyagent__wiener_netze_siemens_im350_hdlc.hex": (
        "4F9278B252D90B3F742F5711232AD27A", "2021-10-21T03:40:34+00:00", (1465, 0, 0, 5521, 4, 0, 0, 18),
        "SMS1030788000020"),
    "energyagent__wiener_netze_landisgyr_hdlc.hex": (
        "1F51C774301C3E940065D9200DDDA5B4", "2021-11-03T03:56:57+00:00", (9099, 7601, 8090, 7397, 0, 0, 0, 0), None),
}


@pytest.mark.parametrize("name", sorted(WIENER_NETZE))
def test_wiener_netze_values_are_read_in_the_specifications_order(name: str) -> None:
    key, utc, values, device = WIENER_NETZE[name]
    [telegram] = reader(bytes.fromhex(key)).feed(read_hex(name))
    assert isinstance(telegram, Telegram)
    assert telegram.timestamp is not None and telegram.timestamp.isoformat() == utc
    expected: dict[str, tuple[object, str | None]] = {
        obis: (float(value), unit) for (obis, unit), value in zip(cosem.WIENER_NETZE_VALUES, values)}
    if device is not None:
        expected["0-0:42.0.0"] = (device, None)
    assert {obis: (r.value, r.unit) for obis, r in telegram.fields.items() if obis != "0-0:1.0.0"} == expected


def test_values_alone_in_another_shape_are_not_guessed() -> None:
    # Netz Burgenland's fourteen values without OBIS codes: an order p1logger does not know.
    body = structure(b"\x09\x0c" + date_time(2022, 12, 12, 12, 35, 45), *(b"\x12" + bytes(2),) * 6, *(u32(1),) * 4)
    with pytest.raises(cosem.CosemError, match="no OBIS-coded values"):
        cosem.to_telegram(notification(body), TIROL_TITLE)


def hdlc_frames(stream: bytes) -> list[bytes]:
    return frames_in(stream, hdlc.frame_at, hdlc.HdlcFrame)


def test_hdlc_frame_at_checks_the_envelope_and_both_checksums() -> None:
    first, second, last = hdlc_frames(read_hex(E450))
    assert len(first) == 141 and b"\x7e" in first[1:-1]  # a flag byte inside is data: HDLC here has no stuffing
    parsed = hdlc.frame_at(first, 0)
    assert isinstance(parsed, hdlc.HdlcFrame) and not parsed.more
    assert parsed.information[:4] == bytes.fromhex("E6E700E0")  # LLC, then block transfer
    assert hdlc.frame_at(first[:100], 0) is True
    assert hdlc.frame_at(first[:-1] + b"\x00", 0) is None  # no closing flag where the length says
    bad_fcs = bytearray(first)
    bad_fcs[-2] ^= 0xFF
    assert hdlc.frame_at(bytes(bad_fcs), 0) == mbus.Damaged(141)
    bad_hcs = bytearray(first)
    bad_hcs[7] ^= 0x01
    assert hdlc.frame_at(bytes(bad_hcs), 0) is None  # nothing vouches for its length: not a frame start
    assert hdlc.frame_at(b"~~kWh", 0) is None


def test_block_transfer_blocks_join_only_in_their_order() -> None:
    first, second, last = hdlc_frames(read_hex(E450))
    # A block missing, the first missing (nothing under way to drop), a block repeated.
    for stream, dropped in ((first + last, 1), (second + last, 0), (first + second + second + last, 1)):
        tested = TelegramReader(TimestampParser(VIENNA), keys=E450_KEYS)
        assert not any(isinstance(item, Telegram) for item in tested.feed(stream))
        assert tested.stats.rejected == {}
        assert tested.cipher_framer is not None and tested.cipher_framer.messages.stats.dropped == dropped


def test_hdlc_looking_noise_on_a_smarty_line_loses_nothing() -> None:
    # A header-shaped burst whose HCS fails is no frame: bare DLMS frames after it are still read.
    frames = bare_frames(8)
    stream = b"".join(frames[:3]) + bytes.fromhex("7EA009030313000000007E") + b"".join(frames[3:])
    assert energy(reader().feed(stream)) == [1000.0 + n for n in range(8)]


def test_a_length_bit_flipped_in_one_hdlc_frame_costs_that_frame_only() -> None:
    key, message = wiener_netze_message()
    sealed_frames = [hdlc_frame(message(100 + n)) for n in range(6)]
    damaged = bytearray(sealed_frames[2])
    damaged[1] |= 0x04  # the length grows by 1024: its HCS fails, so it is not taken for a frame
    items = reader(key).feed(b"".join(sealed_frames[:2]) + bytes(damaged) + b"".join(sealed_frames[3:]))
    assert sum(isinstance(item, Telegram) for item in items) == 5


def test_a_message_missing_its_last_segment_costs_only_itself() -> None:
    key, message = wiener_netze_message()
    first = message(1)
    split = [hdlc_frame(first[:30], more=True), hdlc_frame(first[30:60], more=True)]  # its last segment lost
    items = reader(key).feed(b"".join(split) + hdlc_frame(message(2)) + hdlc_frame(message(3)))
    assert sum(isinstance(item, Telegram) for item in items) == 2


def test_frames_sharing_one_flag_are_read() -> None:
    first, second, last = hdlc_frames(read_hex(E450))
    shared = first + second[1:] + last[1:]  # one flag between frames, as HDLC allows
    assert isinstance(TelegramReader(TimestampParser(VIENNA), keys=E450_KEYS).feed(shared)[-1], Telegram)


def wiener_netze_message() -> tuple[bytes, Callable[[int], bytes]]:
    """The published Iskra frame's key, and its notification sealed again (LLC first) with any counter."""
    name = "energyagent__wiener_netze_iskra_am550_hdlc.hex"
    key = bytes.fromhex(WIENER_NETZE[name][0])
    parsed = hdlc.frame_at(read_hex(name), 0)
    assert isinstance(parsed, hdlc.HdlcFrame)
    apdu = dlms.parse_frame(parsed.information[3:])
    assert apdu is not None
    plaintext = dlms.decrypt_unverified(apdu, key)

    def message(counter: int) -> bytes:
        return b"\xe6\xe7\x00" + dlms.encrypt(plaintext, dlms.Keys(key), apdu.system_title, counter,
                                               dlms.SECURITY_ENCRYPTED)

    return key, message


def hdlc_frame(information: bytes, more: bool = False) -> bytes:
    """One type-3 HDLC frame (addresses 03 and 21, control 13), with both checksums."""
    x25 = crcmod.predefined.mkCrcFun("x-25")
    length = 2 + 2 + 1 + 2 + len(information) + 2
    header = bytes((0xA0 | (0x08 if more else 0) | length >> 8, length & 0xFF, 0x03, 0x21, 0x13))
    header += x25(header).to_bytes(2, "little")
    body = header + information
    return b"\x7e" + body + x25(body).to_bytes(2, "little") + b"\x7e"


def test_base_units_cover_demand_registers() -> None:
    def code(text: str) -> bytes:
        return obis(text)[2:]

    assert [cosem.base_unit(code(t)) for t in (
        "1-0:1.8.0", "1-0:1.7.0", "1-0:1.4.0", "1-0:1.6.0", "1-0:2.6.0", "1-0:21.7.0", "1-0:23.8.0", "1-0:9.8.0",
        "1-0:32.7.0", "1-0:31.7.0", "1-0:13.7.0", "0-0:1.8.0", "1-0:1.29.0",
    )] == ["Wh", "W", "W", "W", "W", "W", "varh", "VAh", "", "", "", "", "Wh"]


def test_the_wiener_netze_shape_needs_a_real_time() -> None:
    serial = b"\x0a\x0c" + b"181220000009"  # a 12-character serial, not a date-time
    for body in (structure(serial, *(u32(n) for n in range(8))),
                 structure(b"\x09\x0c" + date_time(2021, 10, 21, 6, 44, 2), serial, *(u32(n) for n in range(8)))):
        with pytest.raises(cosem.CosemError, match="no OBIS-coded values"):
            cosem.to_telegram(notification(body), TIROL_TITLE)


def test_a_cosem_telegram_is_labelled_austrian() -> None:
    from p1logger.config import detect_country, tariff_label

    [telegram] = TelegramReader(TimestampParser(VIENNA), keys=E450_KEYS).feed(read_hex(E450))
    assert isinstance(telegram, Telegram)
    assert detect_country(telegram.header, telegram.fields) == (
        "AT", "the meter sends DLMS/COSEM data, as Austrian meters do")
    assert [tariff_label("AT", 1), tariff_label("AT", 2)] == ["T1", "T2"]


def test_the_mqtt_state_of_an_evn_meter_is_in_the_units_its_keys_carry() -> None:
    from p1logger.outputs.mqtt import state

    key = EVN_CASES["energyagent__evn_sagemcom_t210d_mbus.hex"][0]
    [telegram] = reader(bytes.fromhex(key)).feed(read_hex("energyagent__evn_sagemcom_t210d_mbus.hex"))
    assert isinstance(telegram, Telegram)
    assert state.encode(state.build_state(telegram, 1686293875, {})) == (
        b'{"current_l1_a":3.2,"current_l2_a":2.73,"current_l3_a":2.92,"energy_export_total_kwh":6430.217,'
        b'"energy_import_total_kwh":6842.204,"meter":"178210193075","power_export_w":2088.0,"power_import_w":0.0,'
        b'"time":"2023-06-09T06:57:55+00:00","voltage_l1_v":237.3,"voltage_l2_v":237.8,"voltage_l3_v":239.2}')
