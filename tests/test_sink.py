"""InfluxSink against a real influxd 1.x (v1 API) and, for v2, the proxy that stores into it.

Every wait goes through an injected sleep that records and returns at once.
After each failure the points are counted in influxd: nothing lost, nothing twice.
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from helpers.influx_servers import V2_ORG, V2_TOKEN, InfluxServer, V2Proxy, free_port
from helpers.fake_meter import Sleeps

from p1logger.errors import ConfigError
from p1logger.contracts import WriteKind, WriteResult
from p1logger.outputs.influx.sink import InfluxSink
from p1logger.outputs.influx.target import InfluxTarget
from p1logger.outputs.influx.transports import GZIP_MIN_BYTES

T0 = 1589284449
METER = "1SAG3101021605"
WALL = datetime(2020, 5, 12, 12, 0, 0, tzinfo=timezone.utc)


def power_lines(count: int, *, meter: str = METER, start: int = T0) -> list[str]:
    return [f"power,meter={meter} import_w={100.0 + i:.1f},export_w=0.0 {start + i}" for i in range(count)]


def v1_sink(
    server: InfluxServer, bucket: str, dead_letter_path: Path | None, sleep: Sleeps, **kwargs: Any
) -> InfluxSink:
    target_args = {k: kwargs.pop(k) for k in ("username", "password", "gzip", "timeout_s") if k in kwargs}
    target = InfluxTarget(url=server.url, api="v1", org="", bucket=bucket, **target_args)
    return InfluxSink(target, dead_letter_path=dead_letter_path, sleep=sleep, wall_clock=lambda: WALL, **kwargs)


def v2_sink(proxy: V2Proxy, bucket: str, dead_letter_path: Path | None, sleep: Sleeps, **kwargs: Any) -> InfluxSink:
    target_args: dict[str, Any] = {"token": V2_TOKEN, "org": V2_ORG, "timeout_s": 5.0}
    target_args |= {k: kwargs.pop(k) for k in ("token", "org", "timeout_s", "gzip") if k in kwargs}
    target = InfluxTarget(url=proxy.url, api="v2", bucket=bucket, **target_args)
    return InfluxSink(target, dead_letter_path=dead_letter_path, sleep=sleep, wall_clock=lambda: WALL, **kwargs)


def assert_all_stored(result: WriteResult, count: int) -> None:
    assert (result.kind, result.points_written, result.points_rejected, result.points_kept) == (
        WriteKind.OK,
        count,
        0,
        0,
    ), result.message


def assert_all_kept(result: WriteResult, lines: list[str], kind: WriteKind) -> None:
    assert result.kind is kind, result.message
    assert (result.points_written, result.points_rejected) == (0, 0)
    assert result.kept_lines == tuple(lines)
    assert result.points_kept == len(lines)


# ------------------------------------------------------------------ config (no server)


def test_target_repr_hides_token_and_password() -> None:
    target = InfluxTarget(
        url="http://db:8086", api="v1", org="", bucket="p1/rp", token="tok-XYZ", username="u", password="pw-XYZ"
    )
    assert repr(target) == (
        "InfluxTarget(url='http://db:8086', api='v1', org='', bucket='p1/rp', token='***', username='u', "
        "password='***', timeout_s=10.0, gzip=True)"
    )
    assert str(target) == repr(target)
    assert (target.database, target.retention_policy) == ("p1", "rp")


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"api": "v3"}, "InfluxDB API must be 'v1' or 'v2', not 'v3'"),
        ({"url": "db:8086"}, "InfluxDB URL 'db:8086' must look like http://host:8086"),
        ({"url": "ftp://db"}, "InfluxDB URL 'ftp://db' must look like http://host:8086"),
        ({"bucket": ""}, "InfluxDB bucket name '' is empty or malformed"),
        ({"org": ""}, "InfluxDB 2 needs an organization name"),
        ({"token": None}, "InfluxDB 2 needs an API token with write permission on the bucket"),
        ({"username": "u"}, "set both the InfluxDB username and password, or neither"),
        ({"timeout_s": 0}, "InfluxDB timeout must be positive, not 0 s"),
    ],
)
def test_target_rejects_bad_config_with_a_clear_message(kwargs: dict[str, Any], expected: str) -> None:
    args: dict[str, Any] = {"url": "http://db:8086", "api": "v2", "org": "home", "bucket": "p1", "token": "t"}
    with pytest.raises(ConfigError) as info:
        InfluxTarget(**(args | kwargs))
    assert str(info.value) == expected


def test_target_url_with_credentials_is_refused_without_echoing_them() -> None:
    with pytest.raises(ConfigError) as info:
        InfluxTarget(url="http://admin:Hunter2-pw@db:8086", api="v1", org="", bucket="p1")
    assert str(info.value) == "the InfluxDB URL must not contain a user or password; set them separately"


def test_sink_needs_at_least_one_attempt() -> None:
    target = InfluxTarget(url="http://127.0.0.1:9", api="v1", org="", bucket="p1")
    with pytest.raises(ConfigError, match="max_attempts must be at least 1, not 0"):
        InfluxSink(target, dead_letter_path=None, max_attempts=0)


# ------------------------------------------------------------------ v1 against influxd

MIXED_LINES = [
    f"power,meter={METER} import_w=234.0,export_w=0.0 {T0}",
    f"power,meter={METER},phase=L1 import_w=120.5,export_w=0.0 {T0}",
    f"voltage,meter={METER},phase=L1 voltage_v=231.4 {T0}",
    f"energy,meter={METER} import_t1_kwh=0.034,import_t2_kwh=12345.678,active_tariff=1i {T0}",
    f"energy,meter={METER} import_t1_kwh=0.035,import_t2_kwh=12345.678,active_tariff=2i {T0 + 1}",
    f"gas,channel=1,device=G0012345678901234,meter={METER} volume_m3=1234.567 {T0 - 249}",
    f"p1logger,instance=my\\ host telegrams_ok=12i,write_latency_ms=3.5,last_telegram_age_s=0.0 {T0 + 1}",
]


@pytest.mark.parametrize("gzip", [True, False])
def test_v1_write_reads_back_every_value_type_tag_and_timestamp(
    influxd: InfluxServer, influx_db: str, dead_letter_path: Path, gzip: bool
) -> None:
    sleeps = Sleeps()
    with v1_sink(influxd, influx_db, dead_letter_path, sleeps, gzip=gzip) as sink:
        result = sink.write(MIXED_LINES)

    assert_all_stored(result, 7)
    assert result.message == "7 points stored"
    assert result.latency_ms >= 0.0

    def rows(measurement: str) -> list[dict[str, Any]]:
        return sorted(influxd.rows(influx_db, measurement), key=repr)

    assert rows("power") == [
        {"time": T0, "export_w": 0, "import_w": 120.5, "meter": METER, "phase": "L1"},
        {"time": T0, "export_w": 0, "import_w": 234, "meter": METER, "phase": None},
    ]
    assert rows("voltage") == [{"time": T0, "voltage_v": 231.4, "meter": METER, "phase": "L1"}]
    assert rows("energy") == [
        {"time": T0, "active_tariff": 1, "import_t1_kwh": 0.034, "import_t2_kwh": 12345.678, "meter": METER},
        {"time": T0 + 1, "active_tariff": 2, "import_t1_kwh": 0.035, "import_t2_kwh": 12345.678, "meter": METER},
    ]
    assert rows("gas") == [
        {"time": T0 - 249, "channel": "1", "device": "G0012345678901234", "meter": METER, "volume_m3": 1234.567}
    ]
    assert rows("p1logger") == [
        {"time": T0 + 1, "instance": "my host", "last_telegram_age_s": 0, "telegrams_ok": 12, "write_latency_ms": 3.5}
    ]
    # JSON shows 234.0 as 234, so the stored types are asked for separately.
    assert influxd.field_types(influx_db, "power") == {"export_w": "float", "import_w": "float"}
    assert influxd.field_types(influx_db, "energy") == {
        "active_tariff": "integer",
        "import_t1_kwh": "float",
        "import_t2_kwh": "float",
    }
    assert influxd.field_types(influx_db, "p1logger") == {
        "last_telegram_age_s": "float",
        "telegrams_ok": "integer",
        "write_latency_ms": "float",
    }
    assert sleeps == []
    assert not dead_letter_path.exists()


def test_v1_empty_write_sends_nothing(influxd: InfluxServer, influx_db: str) -> None:
    with v1_sink(influxd, influx_db, None, Sleeps()) as sink:
        result = sink.write([])
    assert_all_stored(result, 0)
    assert result.message == "0 points stored"


def test_v1_database_slash_retention_policy(influxd: InfluxServer, influx_db: str, dead_letter_path: Path) -> None:
    influxd.query(f'CREATE RETENTION POLICY "keep_all" ON "{influx_db}" DURATION INF REPLICATION 1')
    with v1_sink(influxd, f"{influx_db}/keep_all", dead_letter_path, Sleeps()) as sink:
        result = sink.write(power_lines(5))
    assert_all_stored(result, 5)
    assert influxd.count(influx_db, "power", rp="keep_all") == 5
    assert influxd.count(influx_db, "power", rp="autogen") == 0
    assert [r["import_w"] for r in influxd.rows(influx_db, "power", rp="keep_all")] == [100, 101, 102, 103, 104]


def test_v1_rejected_lines_go_to_dead_letter_and_the_rest_is_stored(
    influxd: InfluxServer, influx_db: str, dead_letter_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="p1logger")
    type_conflict = f"energy,meter={METER} import_t1_kwh=0.036,active_tariff=2.5 {T0 + 2}"
    unparseable = f"power,meter={METER} import_w= {T0 + 3}"
    good = [f"energy,meter={METER} import_t1_kwh=0.034,active_tariff=1i {T0}", *power_lines(5)]
    batch = [good[0], good[1], type_conflict, good[2], good[3], unparseable, good[4], good[5]]
    sleeps = Sleeps()
    with v1_sink(influxd, influx_db, dead_letter_path, sleeps) as sink:
        result = sink.write(batch)

    assert (result.kind, result.points_written, result.points_rejected, result.points_kept) == (
        WriteKind.REJECTED,
        6,
        2,
        0,
    )
    assert influxd.count(influx_db, "energy") == 1
    assert influxd.count(influx_db, "power") == 5
    assert sleeps == []  # a 400 is never retried
    dead = dead_letter_path.read_text(encoding="utf-8").splitlines()
    assert dead[1::2] == [type_conflict, unparseable]
    prefix = "# 2020-05-12T12:00:00Z rejected by InfluxDB: HTTP 400: "
    assert dead[0].startswith(prefix) and "field type conflict" in dead[0], dead[0]
    assert dead[2].startswith(prefix) and "unable to parse" in dead[2], dead[2]
    assert len(dead) == 4
    assert result.message.startswith("InfluxDB rejected 2 of 8 points (")
    assert result.message.endswith(f"they are saved to {dead_letter_path}; the other 6 are stored")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "rejected 2 of 8 points" in warnings[0].getMessage()

    # Appending: a second rejection adds to the file and keeps the first.
    with v1_sink(influxd, influx_db, dead_letter_path, sleeps) as sink:
        again = sink.write([type_conflict])
    assert (again.kind, again.points_written, again.points_rejected) == (WriteKind.REJECTED, 0, 1)
    assert dead_letter_path.read_text(encoding="utf-8").splitlines()[1::2] == [
        type_conflict,
        unparseable,
        type_conflict,
    ]


def test_v1_dead_letter_file_is_bounded_and_the_drop_is_reported(
    influxd: InfluxServer, influx_db: str, dead_letter_path: Path
) -> None:
    bad = f"power,meter={METER} import_w= {T0}"
    with v1_sink(influxd, influx_db, dead_letter_path, Sleeps(), dead_letter_max_bytes=60) as sink:
        result = sink.write([bad, *power_lines(2)])
    assert (result.kind, result.points_written, result.points_rejected) == (WriteKind.REJECTED, 2, 1)
    assert f"NOT saved: dead-letter file {dead_letter_path} reached its limit of 60 bytes" in result.message
    assert not dead_letter_path.exists()


def test_v1_missing_database_keeps_the_data_and_names_it(influxd: InfluxServer, dead_letter_path: Path) -> None:
    lines = power_lines(3)
    sleeps = Sleeps()
    with v1_sink(influxd, "no_such_db", dead_letter_path, sleeps) as sink:
        result = sink.write(lines)
    assert_all_kept(result, lines, WriteKind.NOT_FOUND)
    assert result.message == (
        "InfluxDB has no database 'no_such_db' (InfluxDB said: database not found: \"no_such_db\"): "
        'create it (CREATE DATABASE "no_such_db") or fix the name; the data is kept'
    )
    assert sleeps == []
    assert "no_such_db" not in influxd.databases()


def test_v1_server_restarted_during_the_backoff(influxd: InfluxServer, influx_db: str) -> None:
    with v1_sink(influxd, influx_db, None, Sleeps()) as sink:
        assert_all_stored(sink.write(power_lines(2)), 2)
    influxd.stop()
    sleeps = Sleeps(hook=lambda n: influxd.start())
    with v1_sink(influxd, influx_db, None, sleeps, max_attempts=3) as sink:
        result = sink.write(power_lines(4, start=T0 + 100))
    assert_all_stored(result, 4)
    assert len(sleeps) == 1
    assert influxd.count(influx_db, "power") == 6  # the restart kept the first two


def test_v1_server_down_for_every_attempt_keeps_the_data(influxd: InfluxServer, influx_db: str) -> None:
    lines = power_lines(3)
    sleeps = Sleeps()
    influxd.stop()
    try:
        with v1_sink(influxd, influx_db, None, sleeps, max_attempts=4) as sink:
            result = sink.write(lines)
    finally:
        influxd.start()
    assert_all_kept(result, lines, WriteKind.TRANSIENT)
    assert result.message == (
        f"InfluxDB did not take the write after 4 attempts (no answer from {influxd.url}: connection refused); "
        "the data is kept"
    )
    assert len(sleeps) == 3
    assert influxd.count(influx_db, "power") == 0
    # What was kept goes in whole once the server is back.
    with v1_sink(influxd, influx_db, None, Sleeps()) as sink:
        assert_all_stored(sink.write(list(result.kept_lines)), 3)
    assert influxd.count(influx_db, "power") == 3


def test_v1_credentials(influxd_auth: InfluxServer, influx_auth_db: str) -> None:
    influxd_auth.query("CREATE USER \"writer\" WITH PASSWORD 'w-pass'")
    influxd_auth.query(f'GRANT WRITE ON "{influx_auth_db}" TO "writer"')
    influxd_auth.query("CREATE USER \"reader\" WITH PASSWORD 'r-pass'")
    influxd_auth.query(f'GRANT READ ON "{influx_auth_db}" TO "reader"')
    lines = power_lines(3)
    sleeps = Sleeps()

    def write_as(username: str, password: str) -> WriteResult:
        with v1_sink(influxd_auth, influx_auth_db, None, sleeps, username=username, password=password) as sink:
            return sink.write(lines)

    assert_all_stored(write_as("writer", "w-pass"), 3)
    wrong = write_as("writer", "not-the-password")
    assert_all_kept(wrong, lines, WriteKind.AUTH)
    assert wrong.message == (
        "InfluxDB refused the write (HTTP 401): the InfluxDB username/password (or token) is wrong or the user "
        f"may not write to database '{influx_auth_db}'; fix the credentials or GRANT WRITE; the data is kept"
    )
    read_only = write_as("reader", "r-pass")
    assert_all_kept(read_only, lines, WriteKind.AUTH)
    assert read_only.message.startswith("InfluxDB refused the write (HTTP 403): ")
    assert sleeps == []
    assert influxd_auth.count(influx_auth_db, "power") == 3


def test_v1_check(influxd: InfluxServer, influx_db: str) -> None:
    def check(bucket: str) -> list[tuple[bool, str]]:
        with v1_sink(influxd, bucket, None, Sleeps()) as sink:
            return sink.check()

    ok = check(influx_db)
    assert [passed for passed, _ in ok] == [True, True, True]
    assert ok[0][1].startswith("InfluxDB ") and ok[0][1].endswith(f" answers at {influxd.url}")
    assert ok[1:] == [(True, "no credentials are needed"), (True, f"database '{influx_db}' exists")]
    assert check("nope")[2] == (
        False,
        "database 'nope' does not exist (or this user cannot see it): run CREATE DATABASE \"nope\" or fix the name",
    )
    assert check(f"{influx_db}/autogen")[3] == (True, f"retention policy 'autogen' exists on database '{influx_db}'")
    assert check(f"{influx_db}/weekly")[3] == (
        False,
        f"retention policy 'weekly' does not exist on database '{influx_db}': create it or fix the name",
    )
    influxd.stop()
    try:
        down = check(influx_db)
    finally:
        influxd.start()
    assert down == [
        (
            False,
            f"InfluxDB does not answer at {influxd.url} (connection refused): "
            "check the URL and that InfluxDB is running and reachable",
        )
    ]


def test_v1_check_credentials(influxd_auth: InfluxServer, influx_auth_db: str) -> None:
    user, password = influxd_auth.admin or ("", "")

    def check(password: str) -> list[tuple[bool, str]]:
        with v1_sink(influxd_auth, influx_auth_db, None, Sleeps(), username=user, password=password) as sink:
            return sink.check()

    assert check(password)[1:] == [
        (True, "the credentials are accepted"),
        (True, f"database '{influx_auth_db}' exists"),
    ]
    assert check("wrong")[1:] == [
        (False, "InfluxDB refused the username/password or token (HTTP 401): fix the credentials")
    ]


# ------------------------------------------------------------------ v2 through the proxy


def test_v2_large_write_is_gzipped_and_stored(v2_proxy: V2Proxy, influxd: InfluxServer, influx_db: str) -> None:
    lines = power_lines(400)
    assert len("\n".join(lines)) >= GZIP_MIN_BYTES
    with v2_sink(v2_proxy, influx_db, None, Sleeps()) as sink:
        assert_all_stored(sink.write(lines), 400)
    assert [(w.status, w.lines, w.content_encoding) for w in v2_proxy.writes()] == [(204, 400, "gzip")]
    assert influxd.count(influx_db, "power") == 400


def test_v2_a_live_seconds_write_is_sent_plain(v2_proxy: V2Proxy, influxd: InfluxServer, influx_db: str) -> None:
    lines = power_lines(24)  # about what a three-phase meter's second gives, 1.5 KiB
    assert 1024 < len("\n".join(lines)) < GZIP_MIN_BYTES
    with v2_sink(v2_proxy, influx_db, None, Sleeps()) as sink:
        assert_all_stored(sink.write(lines), 24)
    assert [(w.status, w.lines, w.content_encoding) for w in v2_proxy.writes()] == [(204, 24, None)]
    assert influxd.count(influx_db, "power") == 24


def test_a_token_with_a_line_break_around_it_still_works_and_inside_it_is_a_config_error(
    v2_proxy: V2Proxy, influxd: InfluxServer, influx_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A token taken from a file into an environment variable (a Kubernetes secret) often ends in a newline;
    # http.client refuses such a header with a ValueError that quotes it, token and all.
    caplog.set_level(logging.DEBUG)
    with v2_sink(v2_proxy, influx_db, None, Sleeps(), token=V2_TOKEN + "\n") as sink:
        assert_all_stored(sink.write(power_lines(2)), 2)
    with pytest.raises(ConfigError) as raised:
        InfluxTarget(url=v2_proxy.url, api="v2", org=V2_ORG, bucket=influx_db, token="tok-AB\nCD-secret")
    assert str(raised.value) == ("the InfluxDB token contains a line break or another control character: "
                                 "fix INFLUX_TOKEN or INFLUX_TOKEN_FILE")
    assert V2_TOKEN not in caplog.text


def test_v2_small_write_is_plain_http_to_the_v2_api_and_stored(
    v2_proxy: V2Proxy, influxd: InfluxServer, influx_db: str
) -> None:
    sleeps = Sleeps()
    with v2_sink(v2_proxy, influx_db, None, sleeps) as sink:
        result = sink.write(MIXED_LINES)
    assert_all_stored(result, 7)
    writes = v2_proxy.writes()
    # A small body is sent as it is: gzip would cost CPU for nothing.
    assert [(w.status, w.lines, w.content_encoding) for w in writes] == [(204, 7, None)]
    assert writes[0].query == {"org": V2_ORG, "bucket": influx_db, "precision": "s"}
    assert {m: influxd.count(influx_db, m) for m in ("power", "voltage", "energy", "gas", "p1logger")} == {
        "power": 2,
        "voltage": 1,
        "energy": 2,
        "gas": 1,
        "p1logger": 1,
    }
    assert influxd.field_types(influx_db, "energy")["active_tariff"] == "integer"
    assert sleeps == []


def test_v1_writes_reuse_one_connection(influxd: InfluxServer, influx_db: str) -> None:
    target = InfluxTarget(url=influxd.url, api="v1", org="", bucket=influx_db, timeout_s=5.0)
    with InfluxSink(target, dead_letter_path=None) as sink:
        for n in range(5):
            assert_all_stored(sink.write(power_lines(2, start=T0 + 10 * n)), 2)
        assert sink.transport.connections_opened == 1
    assert influxd.count(influx_db, "power") == 10


def test_v2_without_gzip(v2_proxy: V2Proxy, influxd: InfluxServer, influx_db: str) -> None:
    with v2_sink(v2_proxy, influx_db, None, Sleeps(), gzip=False) as sink:
        assert_all_stored(sink.write(power_lines(2)), 2)
    assert [(w.status, w.content_encoding) for w in v2_proxy.writes()] == [(204, None)]
    assert influxd.count(influx_db, "power") == 2


def test_v2_500_is_retried_with_exponential_backoff(v2_proxy: V2Proxy, influxd: InfluxServer, influx_db: str) -> None:
    v2_proxy.fail_with(500, times=2)
    sleeps = Sleeps()
    with v2_sink(v2_proxy, influx_db, None, sleeps, backoff_initial_s=1.0, backoff_jitter_s=0.5) as sink:
        result = sink.write(power_lines(4))
    assert_all_stored(result, 4)
    assert v2_proxy.write_statuses() == [500, 500, 204]
    assert len(sleeps) == 2
    assert 1.0 <= sleeps[0] <= 1.5 and 2.0 <= sleeps[1] <= 2.5, sleeps
    assert influxd.count(influx_db, "power") == 4


def test_v2_503_waits_for_retry_after(v2_proxy: V2Proxy, influxd: InfluxServer, influx_db: str) -> None:
    v2_proxy.fail_with(503, retry_after_s=7)
    sleeps = Sleeps()
    with v2_sink(v2_proxy, influx_db, None, sleeps) as sink:
        result = sink.write(power_lines(3))
    assert_all_stored(result, 3)
    assert sleeps == [7.0]
    assert v2_proxy.write_statuses() == [503, 204]
    assert influxd.count(influx_db, "power") == 3


def test_v2_retry_after_is_capped_by_backoff_max(v2_proxy: V2Proxy, influx_db: str) -> None:
    v2_proxy.fail_with(429, retry_after_s=3600)
    sleeps = Sleeps()
    with v2_sink(v2_proxy, influx_db, None, sleeps, backoff_max_s=30.0) as sink:
        assert_all_stored(sink.write(power_lines(1)), 1)
    assert sleeps == [30.0]


def test_v2_429_is_retried(v2_proxy: V2Proxy, influxd: InfluxServer, influx_db: str) -> None:
    v2_proxy.fail_with(429)
    sleeps = Sleeps()
    with v2_sink(v2_proxy, influx_db, None, sleeps) as sink:
        assert_all_stored(sink.write(power_lines(3)), 3)
    assert v2_proxy.write_statuses() == [429, 204]
    assert len(sleeps) == 1
    assert influxd.count(influx_db, "power") == 3


def test_v2_5xx_until_the_attempts_run_out_keeps_everything(
    v2_proxy: V2Proxy, influxd: InfluxServer, influx_db: str, dead_letter_path: Path
) -> None:
    v2_proxy.fail_with(502, times=None)
    lines = power_lines(5)
    sleeps = Sleeps()
    with v2_sink(v2_proxy, influx_db, dead_letter_path, sleeps, max_attempts=3) as sink:
        result = sink.write(lines)
    assert_all_kept(result, lines, WriteKind.TRANSIENT)
    assert result.message == (
        "InfluxDB did not take the write after 3 attempts (HTTP 502: injected HTTP 502); the data is kept"
    )
    assert v2_proxy.write_statuses() == [502, 502, 502]
    assert len(sleeps) == 2
    assert influxd.count(influx_db, "power") == 0
    assert not dead_letter_path.exists()


def test_v2_client_does_not_retry_by_itself(v2_proxy: V2Proxy, influx_db: str) -> None:
    v2_proxy.fail_with(503, times=None)
    with v2_sink(v2_proxy, influx_db, None, Sleeps(), max_attempts=1) as sink:
        result = sink.write(power_lines(2))
    assert result.kind is WriteKind.TRANSIENT
    assert v2_proxy.write_statuses() == [503]


def test_v2_partial_write_isolates_exactly_the_bad_lines(
    v2_proxy: V2Proxy, influxd: InfluxServer, influx_db: str, dead_letter_path: Path
) -> None:
    lines = power_lines(10)
    bad = [lines[2].replace("meter=", "meter=BAD"), lines[7].replace("meter=", "meter=BAD")]
    lines[2], lines[7] = bad
    v2_proxy.partial_write("BAD")
    sleeps = Sleeps()
    with v2_sink(v2_proxy, influx_db, dead_letter_path, sleeps) as sink:
        result = sink.write(lines)
    assert (result.kind, result.points_written, result.points_rejected, result.points_kept) == (
        WriteKind.REJECTED,
        8,
        2,
        0,
    )
    assert dead_letter_path.read_text(encoding="utf-8").splitlines() == [
        "# 2020-05-12T12:00:00Z rejected by InfluxDB: HTTP 400: partial write: line holds marker 'BAD' dropped=1",
        bad[0],
        "# 2020-05-12T12:00:00Z rejected by InfluxDB: HTTP 400: partial write: line holds marker 'BAD' dropped=1",
        bad[1],
    ]
    stored = influxd.rows(influx_db, "power")
    assert [r["time"] for r in stored] == [T0 + i for i in range(10) if i not in (2, 7)]
    assert {r["meter"] for r in stored} == {METER}
    assert sleeps == []
    assert all(w.status in (204, 400) for w in v2_proxy.writes())


def test_v2_401_keeps_the_data_and_blames_the_token(v2_proxy: V2Proxy, influxd: InfluxServer, influx_db: str) -> None:
    v2_proxy.fail_with(401)
    lines = power_lines(4)
    sleeps = Sleeps()
    with v2_sink(v2_proxy, influx_db, None, sleeps) as sink:
        result = sink.write(lines)
    assert_all_kept(result, lines, WriteKind.AUTH)
    assert result.message == (
        "InfluxDB refused the write (HTTP 401): the API token is wrong or lacks write permission on bucket "
        f"'{influx_db}' in organization '{V2_ORG}'; create a token with write access to that bucket and "
        "configure it; the data is kept"
    )
    assert v2_proxy.write_statuses() == [401]
    assert sleeps == []
    assert influxd.count(influx_db, "power") == 0


def test_v2_wrong_token_is_refused_by_the_server(v2_proxy: V2Proxy, influx_db: str) -> None:
    lines = power_lines(2)
    with v2_sink(v2_proxy, influx_db, None, Sleeps(), token="not-the-token") as sink:
        result = sink.write(lines)
    assert_all_kept(result, lines, WriteKind.AUTH)
    assert v2_proxy.write_statuses() == [401]


def test_v2_missing_bucket_or_org_keeps_the_data_and_names_it(v2_proxy: V2Proxy, influxd: InfluxServer) -> None:
    lines = power_lines(2)
    sleeps = Sleeps()
    with v2_sink(v2_proxy, "nobucket", None, sleeps) as sink:
        result = sink.write(lines)
    assert_all_kept(result, lines, WriteKind.NOT_FOUND)
    assert result.message == (
        f"InfluxDB has no bucket 'nobucket' in organization '{V2_ORG}' (InfluxDB said: bucket \"nobucket\" not "
        "found): create it in InfluxDB or fix the bucket/org names; the data is kept"
    )
    with v2_sink(v2_proxy, "nobucket", None, sleeps, org="elsewhere") as sink:
        result = sink.write(lines)
    assert_all_kept(result, lines, WriteKind.NOT_FOUND)
    assert "organization 'elsewhere'" in result.message
    assert 'organization name "elsewhere" not found' in result.message
    assert v2_proxy.write_statuses() == [404, 404]
    assert sleeps == []


def test_v2_413_splits_the_batch_until_it_fits(v2_proxy: V2Proxy, influxd: InfluxServer, influx_db: str) -> None:
    lines = power_lines(8)
    two_lines = len("\n".join(lines[:2]).encode())
    v2_proxy.fail_with(413, times=None, over_bytes=two_lines)
    sleeps = Sleeps()
    with v2_sink(v2_proxy, influx_db, None, sleeps) as sink:
        result = sink.write(lines)
    assert_all_stored(result, 8)
    writes = v2_proxy.writes()
    assert [(w.status, w.lines) for w in writes] == [
        (413, 8),
        (413, 4),
        (204, 2),
        (204, 2),
        (413, 4),
        (204, 2),
        (204, 2),
    ]
    assert [r["time"] for r in influxd.rows(influx_db, "power")] == [T0 + i for i in range(8)]
    assert sleeps == []


def test_v2_413_on_a_single_line_dead_letters_only_that_line(
    v2_proxy: V2Proxy, influxd: InfluxServer, influx_db: str, dead_letter_path: Path
) -> None:
    lines = power_lines(3)
    huge = f"power,meter={'X' * 300} import_w=1.0 {T0 + 50}"
    v2_proxy.fail_with(413, times=None, over_bytes=200)
    with v2_sink(v2_proxy, influx_db, dead_letter_path, Sleeps()) as sink:
        result = sink.write([lines[0], huge, lines[1], lines[2]])
    assert (result.kind, result.points_written, result.points_rejected, result.points_kept) == (
        WriteKind.REJECTED,
        3,
        1,
        0,
    )
    assert dead_letter_path.read_text(encoding="utf-8").splitlines() == [
        "# 2020-05-12T12:00:00Z rejected by InfluxDB: HTTP 413: this one line is larger than the server accepts",
        huge,
    ]
    assert influxd.count(influx_db, "power") == 3


def test_v2_connection_refused_then_back(v2_proxy: V2Proxy, influxd: InfluxServer, influx_db: str) -> None:
    v2_proxy.refuse()
    sleeps = Sleeps(hook=lambda n: v2_proxy.reopen() if n == 2 else None)
    with v2_sink(v2_proxy, influx_db, None, sleeps, max_attempts=5) as sink:
        result = sink.write(power_lines(3))
    assert_all_stored(result, 3)
    assert len(sleeps) == 2
    assert v2_proxy.write_statuses() == [204]  # the refused attempts never reached it
    assert influxd.count(influx_db, "power") == 3


def test_v2_connection_refused_throughout_keeps_the_data(
    v2_proxy: V2Proxy, influxd: InfluxServer, influx_db: str
) -> None:
    v2_proxy.refuse()
    lines = power_lines(3)
    sleeps = Sleeps()
    with v2_sink(v2_proxy, influx_db, None, sleeps, max_attempts=2) as sink:
        result = sink.write(lines)
    assert_all_kept(result, lines, WriteKind.TRANSIENT)
    assert result.message == (
        f"InfluxDB did not take the write after 2 attempts (no answer from {v2_proxy.url}: connection refused); "
        "the data is kept"
    )
    assert len(sleeps) == 1
    assert influxd.count(influx_db, "power") == 0


def test_v2_hang_longer_than_the_timeout_is_retried(v2_proxy: V2Proxy, influxd: InfluxServer, influx_db: str) -> None:
    v2_proxy.hang(3.0)
    sleeps = Sleeps()
    with v2_sink(v2_proxy, influx_db, None, sleeps, timeout_s=0.3) as sink:
        result = sink.write(power_lines(3))
    assert_all_stored(result, 3)
    assert v2_proxy.write_statuses() == [None, 204]
    assert len(sleeps) == 1
    assert influxd.count(influx_db, "power") == 3


def test_v2_hang_every_time_keeps_the_data(v2_proxy: V2Proxy, influxd: InfluxServer, influx_db: str) -> None:
    v2_proxy.hang(3.0, times=None)
    lines = power_lines(2)
    with v2_sink(v2_proxy, influx_db, None, Sleeps(), timeout_s=0.2, max_attempts=2) as sink:
        result = sink.write(lines)
    assert_all_kept(result, lines, WriteKind.TRANSIENT)
    assert result.message == (
        f"InfluxDB did not take the write after 2 attempts (no answer from {v2_proxy.url}: "
        "no answer within the timeout); the data is kept"
    )
    assert influxd.count(influx_db, "power") == 0


def test_v2_shutdown_stops_the_retries(v2_proxy: V2Proxy, influx_db: str) -> None:
    v2_proxy.fail_with(503, times=None)
    shutdown = threading.Event()
    sleeps = Sleeps(hook=lambda n: shutdown.set())
    lines = power_lines(2)
    with v2_sink(v2_proxy, influx_db, None, sleeps, max_attempts=10, shutdown=shutdown) as sink:
        result = sink.write(lines)
    assert_all_kept(result, lines, WriteKind.TRANSIENT)
    # The attempt after the interrupted wait is the last one.
    assert v2_proxy.write_statuses() == [503, 503]
    assert len(sleeps) == 1


def test_v2_default_sleep_is_cut_short_by_shutdown(v2_proxy: V2Proxy, influx_db: str) -> None:
    # The one test that uses the real sleep: it must end when shutdown is set, not after Retry-After.
    v2_proxy.fail_with(503, times=None, retry_after_s=120)
    shutdown = threading.Event()
    target = InfluxTarget(url=v2_proxy.url, api="v2", org=V2_ORG, bucket=influx_db, token=V2_TOKEN)
    timer = threading.Timer(0.2, shutdown.set)
    timer.start()
    try:
        with InfluxSink(target, dead_letter_path=None, shutdown=shutdown, max_attempts=3) as sink:
            result = sink.write(power_lines(1))
    finally:
        timer.cancel()
    assert result.kind is WriteKind.TRANSIENT
    assert v2_proxy.write_statuses() == [503, 503]
    assert 150 < result.latency_ms < 5000


def test_v2_auth_failure_halfway_through_a_split_keeps_the_rest_unsent(
    v2_proxy: V2Proxy, influxd: InfluxServer, influx_db: str
) -> None:
    lines = power_lines(4)
    v2_proxy.fail_with(413, times=1)
    v2_proxy.fail_with(401, times=None)
    with v2_sink(v2_proxy, influx_db, None, Sleeps()) as sink:
        result = sink.write(lines)
    assert result.kind is WriteKind.AUTH
    assert result.kept_lines == tuple(lines)
    # After the first half is refused the second is not even tried.
    assert v2_proxy.write_statuses() == [413, 401]
    assert influxd.count(influx_db, "power") == 0


def test_v2_recovery_is_logged_once_and_repeats_are_quiet(
    v2_proxy: V2Proxy, influx_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="p1logger")
    v2_proxy.fail_with(401, times=2)
    with v2_sink(v2_proxy, influx_db, None, Sleeps()) as sink:
        kinds = [sink.write(power_lines(1)).kind for _ in range(3)]
    assert kinds == [WriteKind.AUTH, WriteKind.AUTH, WriteKind.OK]
    messages = [(r.levelname, r.getMessage()[:40]) for r in caplog.records if r.name == "p1logger.outputs.influx.sink"]
    assert messages == [
        ("ERROR", "InfluxDB refused the write (HTTP 401): t"),
        ("INFO", "InfluxDB takes writes again"),
    ]


def test_v2_check(v2_proxy: V2Proxy, influx_db: str) -> None:
    def check(**kwargs: Any) -> list[tuple[bool, str]]:
        bucket = kwargs.pop("bucket", influx_db)
        with v2_sink(v2_proxy, bucket, None, Sleeps(), **kwargs) as sink:
            return sink.check()

    answers = (True, f"InfluxDB v2-proxy answers at {v2_proxy.url}")
    assert check() == [
        answers,
        (True, f"the API token is accepted and organization '{V2_ORG}' exists"),
        (True, f"bucket '{influx_db}' exists in organization '{V2_ORG}'"),
    ]
    assert check(token="wrong") == [
        answers,
        (False, "the API token was not accepted (HTTP 401): create an API token in InfluxDB and configure it"),
    ]
    assert check(org="elsewhere") == [
        answers,
        (False, "organization 'elsewhere' does not exist or the token cannot see it: fix the org name"),
    ]
    assert check(bucket="nobucket")[2] == (
        False,
        f"bucket 'nobucket' does not exist in organization '{V2_ORG}' (or the token cannot read it): "
        "create the bucket or fix its name",
    )
    v2_proxy.refuse()
    assert check() == [
        (
            False,
            f"InfluxDB does not answer at {v2_proxy.url} (connection refused): "
            "check the URL and that InfluxDB is running and reachable",
        )
    ]


# ------------------------------------------------------------------ secrets


SECRET_TOKEN = "tok-5ecret-9f8e7d6c5b4a"
SECRET_PASSWORD = "pw-5ecret-1a2b3c4d5e6f"
WRONG_PASSWORD = "pw-wr0ng-0f9e8d7c6b5a"


def test_no_secret_in_any_log_result_or_error(
    influxd: InfluxServer,
    influxd_auth: InfluxServer,
    influx_db: str,
    influx_auth_db: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    proxy = V2Proxy(influxd, token=SECRET_TOKEN, org=V2_ORG)
    proxy.start()
    try:
        target = InfluxTarget(url=proxy.url, api="v2", org=V2_ORG, bucket=influx_db, token=SECRET_TOKEN, timeout_s=0.3)
        sink = InfluxSink(target, dead_letter_path=tmp_path / "dl.lp", sleep=Sleeps(), max_attempts=2)
        texts += [repr(target), str(target), repr(sink)]
        lines = power_lines(4)
        faults: list[Callable[[], None]] = [
            lambda: None,
            lambda: proxy.fail_with(500, times=None),
            lambda: proxy.fail_with(503, retry_after_s=1),
            lambda: proxy.fail_with(429, times=None),
            lambda: proxy.partial_write("meter=BAD", times=None),
            lambda: proxy.fail_with(401),
            lambda: proxy.fail_with(403),
            lambda: proxy.fail_with(404),
            lambda: proxy.fail_with(418),
            lambda: proxy.fail_with(413, times=None, over_bytes=10),
            lambda: proxy.hang(1.0),
            proxy.refuse,
        ]
        for fault in faults:
            proxy.clear_faults()
            proxy.reopen()
            fault()
            result = sink.write([*lines, lines[0].replace("meter=", "meter=BAD")])
            texts += [str(result), repr(result), result.message]
            texts += [str(sink.check())]
        proxy.reopen()
        proxy.clear_faults()
        sink.close()
        for bad in (
            InfluxTarget(url=proxy.url, api="v2", org="nope", bucket=influx_db, token=SECRET_TOKEN),
            InfluxTarget(url=proxy.url, api="v2", org=V2_ORG, bucket="nope", token=SECRET_TOKEN),
        ):
            with InfluxSink(bad, dead_letter_path=None, sleep=Sleeps()) as other:
                texts += [str(other.write(lines)), str(other.check())]
    finally:
        proxy.stop()

    influxd_auth.query(f"CREATE USER \"secretive\" WITH PASSWORD '{SECRET_PASSWORD}'")
    influxd_auth.query(f'GRANT WRITE ON "{influx_auth_db}" TO "secretive"')
    for password, bucket in [
        (SECRET_PASSWORD, influx_auth_db),
        (SECRET_PASSWORD, "nope"),
        (WRONG_PASSWORD, influx_auth_db),
    ]:
        target = InfluxTarget(
            url=influxd_auth.url, api="v1", org="", bucket=bucket, username="secretive", password=password
        )
        with InfluxSink(target, dead_letter_path=tmp_path / "dl.lp", sleep=Sleeps(), max_attempts=2) as sink:
            result = sink.write([*power_lines(2), f"power,meter=X import_w= {T0}"])
            texts += [repr(target), repr(sink), str(result), str(sink.check())]
    influxd_auth.stop()
    try:
        target = InfluxTarget(
            url=influxd_auth.url,
            api="v1",
            org="",
            bucket=influx_auth_db,
            username="secretive",
            password=SECRET_PASSWORD,
        )
        with InfluxSink(target, dead_letter_path=None, sleep=Sleeps(), max_attempts=2) as sink:
            texts += [str(sink.write(power_lines(1))), str(sink.check())]
    finally:
        influxd_auth.start()

    for url in (f"http://u:{SECRET_PASSWORD}@db:8086", f"http://{SECRET_TOKEN}@db:8086"):
        with pytest.raises(ConfigError) as info:
            InfluxTarget(url=url, api="v1", org="", bucket="p1")
        texts += [str(info.value), repr(info.value)]

    everything = "\n".join([caplog.text, *texts, *(r.getMessage() for r in caplog.records)])
    assert "InfluxDB refused the write (HTTP 401)" in everything  # the paths really ran
    assert "InfluxDB rejected 1 of 5 points" in everything
    assert "connection refused" in everything
    basic = base64.b64encode(f"secretive:{SECRET_PASSWORD}".encode()).decode()
    for secret in (SECRET_TOKEN, SECRET_PASSWORD, WRONG_PASSWORD, basic):
        assert secret not in everything
    assert SECRET_PASSWORD not in (tmp_path / "dl.lp").read_text(encoding="utf-8")


# ------------------------------------------------------------------ a write sent now, its answer read later


def test_begin_then_finish_stores_a_live_write_and_reports_it_as_a_plain_write(
    influxd: InfluxServer, influx_db: str, v2_proxy: V2Proxy
) -> None:
    with v1_sink(influxd, influx_db, None, Sleeps()) as sink:
        for second in range(3):  # one kept-alive connection, each answer read before the next write
            sink.begin(power_lines(12, start=T0 + 12 * second))
            assert_all_stored(sink.finish(), 12)
        assert sink.transport.connections_opened == 1
    assert influxd.count(influx_db, "power") == 36
    # The v2 proxy closes each connection after its answer: the next write opens another.
    with v2_sink(v2_proxy, influx_db, None, Sleeps()) as sink:
        for second in range(2):
            sink.begin(power_lines(12, start=T0 + 100 + 12 * second))
            assert_all_stored(sink.finish(), 12)
        assert sink.transport.connections_opened == 2
    assert [(w.status, w.lines) for w in v2_proxy.writes()] == [(204, 12), (204, 12)]
    assert influxd.count(influx_db, "power") == 60


def test_an_answer_read_later_that_refuses_or_never_comes_keeps_the_data(
    influxd: InfluxServer, influx_db: str, v2_proxy: V2Proxy
) -> None:
    lines = power_lines(5)
    with v2_sink(v2_proxy, influx_db, None, Sleeps()) as sink:
        v2_proxy.fail_with(503, retry_after_s=7)
        sink.begin(lines)
        result = sink.finish()
        assert_all_kept(result, lines, WriteKind.TRANSIENT)
        assert result.retry_after_s == 7
        v2_proxy.fail_with(400)  # a write the server will never take, line by line: dead letters
        sink.begin(lines[:1])
        assert (sink.finish().points_rejected, influxd.count(influx_db, "power")) == (1, 0)
    nobody = InfluxTarget(url=f"http://127.0.0.1:{free_port()}", api="v1", org="", bucket=influx_db)
    with InfluxSink(nobody, dead_letter_path=None, sleep=Sleeps()) as sink:
        sink.begin(lines)  # refused at once: the answer is that no one listens, read as late as any
        result = sink.finish()
    assert_all_kept(result, lines, WriteKind.TRANSIENT)
    assert "connection refused" in result.message


def test_a_write_sent_early_that_times_out_is_reported_not_sent_again(
    influxd: InfluxServer, influx_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A host that stops answering: the send times out. Sending again when the answer is due would
    # hold the output thread for a second timeout (20 s by default) before it reports the outage.
    import http.client

    connects: list[int] = []

    def connect(self: http.client.HTTPConnection) -> None:
        connects.append(1)
        raise TimeoutError("timed out")

    monkeypatch.setattr(http.client.HTTPConnection, "connect", connect)
    lines = power_lines(3)
    with v1_sink(influxd, influx_db, None, Sleeps()) as sink:
        sink.begin(lines)
        result = sink.finish()
    assert_all_kept(result, lines, WriteKind.TRANSIENT)
    assert "no answer within the timeout" in result.message
    assert len(connects) == 1


def test_the_answer_time_is_read_from_the_socket_before_a_closing_server_takes_it(
    v2_proxy: V2Proxy, influxd: InfluxServer, influx_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from p1logger.outputs.influx import transports

    asked: list[bool] = []
    real = transports.reply_age_s

    def reply_age_s(sock: Any) -> float:
        asked.append(sock is not None and sock.fileno() >= 0)
        return real(sock)

    monkeypatch.setattr(transports, "reply_age_s", reply_age_s)
    with v2_sink(v2_proxy, influx_db, None, Sleeps()) as sink:  # the proxy closes each connection
        sink.begin(power_lines(2))
        assert_all_stored(sink.finish(), 2)
    assert asked == [True]
