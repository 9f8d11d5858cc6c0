"""The test servers themselves: loopback only, restartable, and the proxy's faults do what they say."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest
from helpers.influx_servers import V2_ORG, V2_TOKEN, InfluxServer, V2Proxy, http_request

AUTH = {"Authorization": f"Token {V2_TOKEN}"}


def _listening_addresses(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket the process listens on, from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found: set[tuple[str, int]] = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for row in Path(table).read_text().splitlines()[1:]:
            cols = row.split()
            local, state, inode = cols[1], cols[3], cols[9]
            if state != "0A" or inode not in inodes:  # 0A: LISTEN
                continue
            hex_addr, hex_port = local.split(":")
            assert len(hex_addr) == width
            if width == 8:
                address = ".".join(str(int(hex_addr[i : i + 2], 16)) for i in (6, 4, 2, 0))
            else:
                address = "ipv6:" + hex_addr
            found.add((address, int(hex_port, 16)))
    return found


def test_influxd_listens_on_loopback_only(influxd: InfluxServer) -> None:
    influxd.start()
    assert influxd._proc is not None
    assert _listening_addresses(influxd._proc.pid) == {
        ("127.0.0.1", influxd.http_port),
        ("127.0.0.1", influxd.rpc_port),
    }


def test_influxd_restart_keeps_data_and_url(influxd: InfluxServer, influx_db: str) -> None:
    body = b"power,meter=A import_w=1.0 1589284449\npower,meter=A import_w=2.0 1589284450"
    assert http_request(influxd.http_port, "POST", f"/write?db={influx_db}&precision=s", body=body).status == 204
    url = influxd.url
    influxd.stop()
    assert not influxd.running
    with pytest.raises(ConnectionRefusedError):
        http_request(influxd.http_port, "GET", "/ping")
    influxd.start()
    assert influxd.url == url
    assert influxd.count(influx_db, "power") == 2


def test_proxy_forwards_gzip_writes_and_records_them(v2_proxy: V2Proxy, influxd: InfluxServer, influx_db: str) -> None:
    body = gzip.compress(b"energy,meter=A active_tariff=2i 1589284449\n")
    reply = http_request(
        v2_proxy.port,
        "POST",
        f"/api/v2/write?org={V2_ORG}&bucket={influx_db}&precision=s",
        body=body,
        headers={**AUTH, "Content-Encoding": "gzip"},
    )
    assert reply.status == 204
    assert influxd.rows(influx_db, "energy") == [{"time": 1589284449, "active_tariff": 2, "meter": "A"}]
    assert [(r.status, r.lines, r.content_encoding) for r in v2_proxy.writes()] == [(204, 1, "gzip")]


def test_proxy_partial_write_stores_only_lines_without_the_marker(
    v2_proxy: V2Proxy, influxd: InfluxServer, influx_db: str
) -> None:
    v2_proxy.partial_write("BAD", times=1)
    body = b"p,m=a v=1 1\np,m=BAD v=2 2\np,m=c v=3 3"
    path = f"/api/v2/write?org={V2_ORG}&bucket={influx_db}&precision=s"
    reply = http_request(v2_proxy.port, "POST", path, body=body, headers=AUTH)
    assert reply.status == 400
    assert json.loads(reply.body) == {"code": "invalid", "message": "partial write: line holds marker 'BAD' dropped=1"}
    assert [r["m"] for r in influxd.rows(influx_db, "p")] == ["a", "c"]
    # times=1: the next request with the marker is no longer faulted.
    assert http_request(v2_proxy.port, "POST", path, body=body, headers=AUTH).status == 204
    assert influxd.count(influx_db, "p") == 3


def test_proxy_faults_apply_in_order_and_expire(v2_proxy: V2Proxy, influx_db: str) -> None:
    v2_proxy.fail_with(503, retry_after_s=2)
    v2_proxy.fail_with(413, times=None, over_bytes=20)
    path = f"/api/v2/write?org={V2_ORG}&bucket={influx_db}&precision=s"
    first = http_request(v2_proxy.port, "POST", path, body=b"p v=1 1", headers=AUTH)
    assert (first.status, first.headers.get("retry-after")) == (503, "2")
    assert http_request(v2_proxy.port, "POST", path, body=b"p v=1 1", headers=AUTH).status == 204
    big = b"p v=1 1\np v=2 2\np v=3 3"
    assert http_request(v2_proxy.port, "POST", path, body=big, headers=AUTH).status == 413
    v2_proxy.clear_faults()
    assert http_request(v2_proxy.port, "POST", path, body=big, headers=AUTH).status == 204
    assert v2_proxy.write_statuses() == [503, 204, 413, 204]
    assert [r.lines for r in v2_proxy.writes()] == [1, 1, 3, 3]


def test_proxy_checks_token_org_and_bucket(v2_proxy: V2Proxy, influx_db: str) -> None:
    assert http_request(v2_proxy.port, "GET", "/ping").status == 204
    assert http_request(v2_proxy.port, "GET", "/health").status == 200
    assert http_request(v2_proxy.port, "GET", "/api/v2/buckets").status == 401
    wrong = {"Authorization": "Token nope"}
    assert (
        http_request(v2_proxy.port, "POST", "/api/v2/write?org=x&bucket=y", body=b"p v=1 1", headers=wrong).status
        == 401
    )
    found = http_request(v2_proxy.port, "GET", f"/api/v2/buckets?org={V2_ORG}&name={influx_db}", headers=AUTH)
    assert [b["name"] for b in json.loads(found.body)["buckets"]] == [influx_db]
    missing = http_request(v2_proxy.port, "GET", f"/api/v2/buckets?org={V2_ORG}&name=nope", headers=AUTH)
    assert json.loads(missing.body)["buckets"] == []
    assert http_request(v2_proxy.port, "GET", "/api/v2/orgs?org=other", headers=AUTH).status == 404
    nobucket = http_request(
        v2_proxy.port, "POST", f"/api/v2/write?org={V2_ORG}&bucket=nope", body=b"p v=1 1", headers=AUTH
    )
    assert (nobucket.status, json.loads(nobucket.body)["message"]) == (404, 'bucket "nope" not found')


def test_proxy_refuse_and_reopen_on_the_same_port(v2_proxy: V2Proxy) -> None:
    port = v2_proxy.port
    v2_proxy.refuse()
    with pytest.raises(ConnectionRefusedError):
        http_request(port, "GET", "/ping")
    v2_proxy.reopen()
    assert v2_proxy.port == port
    assert http_request(port, "GET", "/ping").status == 204
