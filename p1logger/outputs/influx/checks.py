"""``p1logger doctor``'s InfluxDB checks: does it answer, are the credentials accepted, does the destination exist.

The v2 checks use influxdb-client's organization and bucket APIs, imported
only here (about 38 MB, more than a Raspberry Pi writing to 1.x should pay).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from p1logger.contracts import Check
from p1logger.outputs.influx.transports import TransientError, describe_io_error, one_line, reason_from_body

if TYPE_CHECKING:
    from p1logger.outputs.influx.target import InfluxTarget
    from p1logger.outputs.influx.transports import V1Transport


def _unreachable(target: InfluxTarget, why: str) -> Check:
    return Check(
        False,
        f"InfluxDB does not answer at {target.url} ({why}): check the URL and that InfluxDB is running and reachable",
    )


def is_influxdb_1(version: str) -> bool:
    """What /ping's X-Influxdb-Version says: "1.6.7" or "1.8.10" for 1.x, "v2.7.4" or "2.7.4" for 2.x."""
    return version.strip().lstrip("v").startswith("1.")


def influxdb_1_hint(version: str) -> str:
    return (f"this is InfluxDB 1.x (version {version}): set INFLUX_API=v1, with the database in INFLUX_BUCKET "
            "(and INFLUX_USERNAME and INFLUX_PASSWORD if it has authentication)")


def check_v2(target: InfluxTarget) -> list[Check]:
    from influxdb_client.client.influxdb_client import InfluxDBClient
    from influxdb_client.rest import ApiException
    from urllib3.exceptions import HTTPError

    api_exception = ApiException
    client = InfluxDBClient(url=target.url, token=target.token or "", org=target.org,
                            timeout=int(target.timeout_s * 1000), retries=False)
    try:
        return _check_v2(target, client, api_exception, HTTPError)
    finally:
        client.close()


def _check_v2(target: InfluxTarget, client: Any, api_exception: type[Exception], http_error: type[Exception]) -> list[Check]:
    try:
        version = client.version()
    except api_exception as exc:
        return [_unreachable(target, f"HTTP {getattr(exc, 'status', 0)} on /ping")]
    except (http_error, OSError) as exc:
        return [_unreachable(target, describe_io_error(exc))]
    checks: list[Check] = [Check(True, f"InfluxDB {version} answers at {target.url}")]
    if is_influxdb_1(str(version)):
        checks.append(Check(False, influxdb_1_hint(str(version))))
        return checks

    def ask(call: Callable[[], Any]) -> tuple[Any, int | None, str]:
        try:
            return call(), None, ""
        except api_exception as exc:
            return None, getattr(exc, "status", 0), reason_from_body(getattr(exc, "body", None))
        except (http_error, OSError) as exc:
            return None, 0, describe_io_error(exc)

    orgs, status, reason = ask(lambda: client.organizations_api().find_organizations(org=target.org))
    if status in (401, 403):
        checks.append(
            Check(False, f"the API token was not accepted (HTTP {status}): create an API token in InfluxDB and configure it")
        )
        return checks
    if status == 404 or (status is None and not orgs):
        checks.append(
            Check(False, f"organization '{target.org}' does not exist or the token cannot see it: fix the org name")
        )
        return checks
    if status is not None:
        checks.append(Check(False, f"cannot list organizations ({f'HTTP {status}' if status else 'no answer'}: {reason})"))
        return checks
    checks.append(Check(True, f"the API token is accepted and organization '{target.org}' exists"))

    buckets, status, reason = ask(lambda: client.buckets_api().find_buckets(org=target.org, name=target.bucket))
    found = status is None and buckets is not None and any(b.name == target.bucket for b in buckets.buckets or [])
    if found:
        checks.append(Check(True, f"bucket '{target.bucket}' exists in organization '{target.org}'"))
    elif status is None or status == 404:
        checks.append(
            Check(
                False,
                f"bucket '{target.bucket}' does not exist in organization '{target.org}' (or the token cannot "
                "read it): create the bucket or fix its name",
            )
        )
    else:
        checks.append(Check(False, f"cannot list buckets ({f'HTTP {status}' if status else 'no answer'}: {reason})"))
    return checks


def check_v1(target: InfluxTarget, transport: V1Transport) -> list[Check]:
    try:
        status, _, headers = transport.request("GET", "/ping", {})
    except TransientError as exc:
        return [_unreachable(target, exc.detail)]
    if status != 204:
        return [_unreachable(target, f"HTTP {status} on /ping")]
    version = headers.get("X-Influxdb-Version", "(unknown version)")
    checks: list[Check] = [Check(True, f"InfluxDB {version} answers at {target.url}")]

    def show(influxql: str) -> tuple[int, list[str], str]:
        try:
            status, body, _ = transport.request("GET", "/query", {"q": influxql})
        except TransientError as exc:
            return 0, [], str(exc)
        try:
            answer = json.loads(body or b"{}")
        except ValueError:
            return status, [], reason_from_body(body)
        result = (answer.get("results") or [{}])[0]
        error = answer.get("error") or result.get("error") or ""
        names = [row[0] for s in result.get("series", []) for row in s.get("values", [])]
        return status, names, error

    status, databases, error = show("SHOW DATABASES")
    if status in (401, 403):
        checks.append(Check(False, f"InfluxDB refused the username/password or token (HTTP {status}): fix the credentials"))
        return checks
    if status != 200 or error:
        checks.append(Check(False, f"cannot list databases (HTTP {status}: {one_line(error)})"))
        return checks
    who = "the credentials are accepted" if target.username or target.token else "no credentials are needed"
    checks.append(Check(True, who))
    if target.database not in databases:
        checks.append(
            Check(
                False,
                f"database '{target.database}' does not exist (or this user cannot see it): "
                f'run CREATE DATABASE "{target.database}" or fix the name',
            )
        )
        return checks
    checks.append(Check(True, f"database '{target.database}' exists"))
    rp = target.retention_policy
    if rp:
        status, policies, error = show(f'SHOW RETENTION POLICIES ON "{target.database}"')
        if rp in policies:
            checks.append(Check(True, f"retention policy '{rp}' exists on database '{target.database}'"))
        else:
            checks.append(
                Check(
                    False,
                    f"retention policy '{rp}' does not exist on database '{target.database}': "
                    "create it or fix the name",
                )
            )
    return checks
