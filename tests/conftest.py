"""Shared fixtures: a private influxd 1.x, a fresh database per test, and a v2 API proxy.

Without influxd the tests that need it skip, unless P1_TEST_REQUIRE_SERVERS=1
(CI), where a missing server is a failure.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.influx_servers import V2_ORG, V2_TOKEN, InfluxServer, V2Proxy, find_influxd, require_server


def _influxd_binary() -> str:
    binary, detail = find_influxd()
    if binary is None:
        require_server("influxd", detail)
    assert binary is not None
    return binary


def _start(tmp_path_factory: pytest.TempPathFactory, name: str, admin: tuple[str, str] | None) -> InfluxServer:
    server = InfluxServer(_influxd_binary(), tmp_path_factory.mktemp(name), admin=admin)
    server.start()
    return server


@pytest.fixture(scope="session")
def influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxServer]:
    """influxd 1.x with auth off, shared by the session; tests may stop() and start() it."""
    server = _start(tmp_path_factory, "influxd", None)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def influxd_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxServer]:
    """influxd 1.x with auth on; `.admin` holds the admin user and password."""
    server = _start(tmp_path_factory, "influxd-auth", ("p1admin", "admin-pw-for-tests"))
    try:
        yield server
    finally:
        server.stop()


def _fresh_database(server: InfluxServer) -> str:
    server.start()  # a test that stopped it and failed must not break the next one
    name = f"t_{uuid.uuid4().hex[:12]}"
    server.create_database(name)
    return name


@pytest.fixture
def influx_db(influxd: InfluxServer) -> str:
    """A new, empty database on `influxd`, for this test only."""
    return _fresh_database(influxd)


@pytest.fixture
def influx_auth_db(influxd_auth: InfluxServer) -> str:
    return _fresh_database(influxd_auth)


@pytest.fixture
def v2_proxy(influxd: InfluxServer) -> Iterator[V2Proxy]:
    """An InfluxDB 2 API in front of `influxd`: bucket = database, org `V2_ORG`, token `V2_TOKEN`."""
    influxd.start()
    proxy = V2Proxy(influxd, token=V2_TOKEN, org=V2_ORG)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def dead_letter_path(tmp_path: Path) -> Path:
    return tmp_path / "dead-letter.lp"


# ---------------------------------------------------------------- mosquitto


def _mosquitto_binaries() -> tuple[str, str]:
    from helpers.mqtt_servers import find_mosquitto

    binary, detail = find_mosquitto()
    if binary is None:
        require_server("mosquitto", detail)
    assert binary is not None
    return binary, detail


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator["MosquittoServer"]:
    """mosquitto with password auth, an ACL and a TLS listener, shared by the session; anonymous access off."""
    from helpers.mqtt_servers import MosquittoServer

    binary, passwd = _mosquitto_binaries()
    server = MosquittoServer(binary, passwd, tmp_path_factory.mktemp("mosquitto"), tls=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator["MosquittoServer"]:
    """A mosquitto of this test's own, which it may stop() and start() (a broker restart)."""
    from helpers.mqtt_servers import MosquittoServer

    binary, passwd = _mosquitto_binaries()
    server = MosquittoServer(binary, passwd, tmp_path / "mosquitto")
    server.start()
    try:
        yield server
    finally:
        server.stop()
