"""``p1logger prices fetch`` against a recorded ENTSO-E answer served on 127.0.0.1."""

from __future__ import annotations

import threading
import urllib.parse
from collections.abc import Iterator
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from p1logger.cli import main as cli_main
from p1logger.dayahead import PriceDocumentError, merge, parse_price_document
from p1logger.errors import ConfigError
from p1logger.inputs.entsoe import DEFAULT_URL, fetch_price_document
from p1logger.tariff import PriceSeries

FIXTURE = Path(__file__).parent / "fixtures" / "entsoe" / "be-2026-02-17-a44.xml"
TOKEN = "entsoe-tok-0f3c9a77-DO-NOT-LEAK"
NO_DATA = b"""<?xml version="1.0" encoding="UTF-8"?>
<Acknowledgement_MarketDocument xmlns="urn:iec62325.351:tc57wg16:451-1:acknowledgementdocument:7:0">
  <mRID>0c4b1a4e-5b7e-4b1c</mRID><createdDateTime>2026-02-17T10:00:00Z</createdDateTime>
  <Reason><code>999</code><text>No matching data found for Data item Day-ahead Prices [12.1.D].</text></Reason>
</Acknowledgement_MarketDocument>
"""


class FakePlatform:
    """A tiny Transparency Platform: one answer per request, and what was asked."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, bytes]] = []
        self.queries: list[dict[str, str]] = []
        platform = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                platform.queries.append({k: v[0] for k, v in query.items()})
                status, body = platform.answers.pop(0)
                self.send_response(status)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def platform() -> Iterator[FakePlatform]:
    server = FakePlatform()
    try:
        yield server
    finally:
        server.close()


def fetch(platform: FakePlatform, output: Path, monkeypatch: pytest.MonkeyPatch, *extra: str) -> int:
    monkeypatch.setenv("ENTSOE_TOKEN", TOKEN)
    return cli_main(["prices", "fetch", "--zone", "BE", "--output", str(output), "--url", platform.url,
                     "--timezone", "Europe/Brussels", "--from", "2026-02-17", "--to", "2026-02-17", *extra])


def test_fetch_writes_the_quarter_hour_prices_as_csv_that_the_tariff_reads(
    platform: FakePlatform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    platform.answers.append((200, FIXTURE.read_bytes()))
    output = tmp_path / "prices.csv"
    assert fetch(platform, output, monkeypatch) == 0
    assert platform.queries == [{"securityToken": TOKEN, "documentType": "A44", "in_Domain": "10YBE----------2",
                                 "out_Domain": "10YBE----------2", "periodStart": "202602162300",
                                 "periodEnd": "202602172300"}]
    out, err = capsys.readouterr()
    assert out == (f"96 prices (15 min) for BE from 2026-02-17T00:00+01:00 to 2026-02-18T00:00+01:00 written to "
                   f"{output} (96 rows)\n")
    assert TOKEN not in out + err
    lines = output.read_text(encoding="utf-8").splitlines()
    assert lines[:5] == ["start,eur_per_kwh", "2026-02-17T00:00:00+01:00,0.07324", "2026-02-17T00:15:00+01:00,0.06979",
                         "2026-02-17T00:30:00+01:00,0.06584", "2026-02-17T00:45:00+01:00,0.06505"]
    assert len(lines) == 97
    # A03 left positions 42 and 43 out: they repeat position 41.
    assert lines[41].split(",")[1] == lines[42].split(",")[1] == lines[43].split(",")[1]
    assert lines[56:58] == ["2026-02-17T13:45:00+01:00,-0.0035", "2026-02-17T14:00:00+01:00,-0.0035"]
    series = PriceSeries(output)
    assert series.load() == []
    assert series.price_at(int(datetime(2026, 2, 16, 23, 15, tzinfo=timezone.utc).timestamp())) == 0.06979
    assert series.end_s == int(datetime(2026, 2, 17, 23, 0, tzinfo=timezone.utc).timestamp())


def test_a_second_fetch_merges_and_no_data_yet_leaves_the_file_alone(
    platform: FakePlatform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "prices.csv"
    output.write_text("start,eur_per_kwh\n2026-02-16T23:00:00+01:00,0.1\n2026-02-17T00:00:00+01:00,0.5\n")
    platform.answers += [(200, FIXTURE.read_bytes()), (200, NO_DATA)]
    assert fetch(platform, output, monkeypatch) == 0
    lines = output.read_text(encoding="utf-8").splitlines()
    assert lines[1:3] == ["2026-02-16T23:00:00+01:00,0.1", "2026-02-17T00:00:00+01:00,0.07324"]
    assert len(lines) == 98
    before = output.read_bytes()
    capsys.readouterr()
    assert fetch(platform, output, monkeypatch) == 1
    assert capsys.readouterr().err == ("p1logger prices: no prices for BE from 2026-02-17 to 2026-02-17 yet; "
                                       f"{output} is unchanged\n")
    assert output.read_bytes() == before


def test_a_refused_token_is_a_config_error_that_never_shows_the_token(
    platform: FakePlatform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    platform.answers.append((401, b"<html>Unauthorized</html>"))
    assert fetch(platform, tmp_path / "p.csv", monkeypatch) == 2
    out, err = capsys.readouterr()
    assert err == ("p1logger prices: 127.0.0.1:" + platform.url.split(":")[2].split("/")[0]
                   + " refused the security token (HTTP 401): check ENTSOE_TOKEN or ENTSOE_TOKEN_FILE\n")
    assert TOKEN not in out + err
    assert not (tmp_path / "p.csv").exists()


def test_no_token_says_where_to_get_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("ENTSOE_TOKEN", raising=False)
    monkeypatch.delenv("ENTSOE_TOKEN_FILE", raising=False)
    assert cli_main(["prices", "fetch", "--output", str(tmp_path / "p.csv")]) == 2
    assert capsys.readouterr().err == ("p1logger prices: no ENTSO-E security token: set ENTSOE_TOKEN or "
                                       "ENTSOE_TOKEN_FILE (transparency.entsoe.eu, My Account Settings, Web API "
                                       "Security Token)\n")


def test_hourly_and_quarter_hour_series_together_give_quarters_from_the_finest() -> None:
    def series(resolution: str, start: str, end: str, points: list[float]) -> str:
        body = "".join(f"<Point><position>{i}</position><price.amount>{p}</price.amount></Point>"
                       for i, p in enumerate(points, 1))
        return (f"<TimeSeries><currency_Unit.name>EUR</currency_Unit.name><price_Measure_Unit.name>MWH"
                f"</price_Measure_Unit.name><curveType>A03</curveType><Period><timeInterval><start>{start}</start>"
                f"<end>{end}</end></timeInterval><resolution>{resolution}</resolution>{body}</Period></TimeSeries>")

    document = ('<Publication_MarketDocument xmlns="urn:iec62325.351:tc57wg16:451-3:publicationdocument:7:3">'
                + series("PT60M", "2026-01-01T00:00Z", "2026-01-01T02:00Z", [100, 200])
                + series("PT15M", "2026-01-01T01:00Z", "2026-01-01T01:30Z", [10, 20])
                + "</Publication_MarketDocument>").encode()
    prices = parse_price_document(document)
    start = int(datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp())
    assert [(at - start, step, price) for at, (step, price) in prices.items()] == [
        (0, 900, 0.1), (900, 900, 0.1), (1800, 900, 0.1), (2700, 900, 0.1),
        (3600, 900, 0.01), (4500, 900, 0.02), (5400, 900, 0.2), (6300, 900, 0.2)]
    # Hourly rows replace the quarter rows they cover when merged into an old file.
    assert merge({start: 1.0, start + 900: 2.0, start + 7200: 3.0}, {start: (3600, 0.5)}) == {
        start: 0.5, start + 7200: 3.0}


def test_an_acknowledgement_is_an_error_with_its_reason() -> None:
    with pytest.raises(PriceDocumentError, match="ENTSO-E answered: Invalid request"):
        parse_price_document(b"<Acknowledgement_MarketDocument><Reason><code>999</code><text>Invalid request"
                             b"</text></Reason></Acknowledgement_MarketDocument>".replace(b"999", b"A01"))


@pytest.mark.parametrize("url", ["web-api.tp.entsoe.eu/api", "ftp://web-api.tp.entsoe.eu/api",
                                 "http://127.0.0.1:9/a pi"])
def test_a_mistyped_url_is_a_config_error_that_never_shows_the_token(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ENTSOE_TOKEN", TOKEN)
    code = cli_main(["prices", "fetch", "--zone", "BE", "--output", str(tmp_path / "p.csv"), "--url", url,
                     "--from", "2026-02-17", "--to", "2026-02-17"])
    out, err = capsys.readouterr()
    assert TOKEN not in out + err
    assert code == 2
    assert err == (f"p1logger prices: --url {url!r} is not valid: expected an http:// or https:// URL with a host "
                   "and no credentials\n")
    assert not (tmp_path / "p.csv").exists()
    # The fetch itself refuses such a URL too, before urllib builds a request whose errors quote it, token and all.
    with pytest.raises(ConfigError) as raised:
        fetch_price_document(url, TOKEN, "10YBE----------2", 1771282800, 1771369200)
    assert str(raised.value) == f"the ENTSO-E URL {url!r} must look like {DEFAULT_URL}: fix --url or P1_ENTSOE_URL"
