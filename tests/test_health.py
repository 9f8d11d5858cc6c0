"""``health.json`` and ``p1logger health``'s verdict when outputs differ: InfluxDB (a durable spool) and
MQTT (a bounded backlog in memory, for a live view that InfluxDB also has)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from p1logger.health import Health, check_state

NOW = 1_800_000_000.0


def influx(state: str = "up", down_s: float = 0.0, spool_points: int = 0) -> dict[str, Any]:
    return {"state": state, "last_write_ok_at": NOW - down_s, "last_write_error": "" if state == "up" else
            "connection refused", "points_written": 10, "spool_points": spool_points, "memory_points": 0}


def mqtt(state: str = "down", down_s: float = 600.0, backlog: int = 120, dropping: bool = False,
         dropped: int = 0) -> dict[str, Any]:
    return {"state": state, "broker": "mqtt://logger@127.0.0.1:1883", "last_write_ok_at": NOW - down_s,
            "last_write_error": "disconnected: Unspecified error", "published": 50, "backlog": backlog,
            "backlog_max": 10000, "dropping": dropping, "dropped": dropped, "refused": 0}


def verdict(tmp_path: Path, **outputs: dict[str, Any]) -> tuple[bool, str, dict[str, Any]]:
    health = Health(clock=lambda: NOW, started_at=NOW - 3600, last_telegram_at=NOW - 1, outputs=outputs)
    health.write_state(tmp_path)
    ok, message = check_state(tmp_path, 60.0, now=NOW)
    return ok, message, health.snapshot()


def test_a_broker_away_with_room_in_its_backlog_leaves_the_database_up_and_the_logger_healthy(
        tmp_path: Path) -> None:
    ok, message, snapshot = verdict(tmp_path, influx=influx(), mqtt=mqtt())
    assert snapshot["database_state"] == "up"
    assert snapshot["outputs"]["mqtt"]["state"] == "down"
    assert (ok, message) == (True, "ok: last telegram 1 s ago, database up; output mqtt down for 600 s "
                                   "(120 messages wait for it)")


def test_a_broker_away_while_readings_are_dropped_fails_and_says_influxdb_has_them(tmp_path: Path) -> None:
    ok, message, snapshot = verdict(tmp_path, influx=influx(), mqtt=mqtt(backlog=10000, dropping=True, dropped=15))
    assert snapshot["database_state"] == "up"
    assert (ok, message) == (False, "output mqtt: down for 600 s (disconnected: Unspecified error) and its backlog "
                                    "is full: new messages are dropped (15 so far); the database still gets "
                                    "every reading")


def test_dropping_only_just_now_is_not_yet_a_failure(tmp_path: Path) -> None:
    ok, message, _ = verdict(tmp_path, influx=influx(), mqtt=mqtt(down_s=30, backlog=10000, dropping=True))
    assert (ok, message) == (True, "ok: last telegram 1 s ago, database up; output mqtt down for 30 s "
                                   "(10000 messages wait for it)")


def test_influxdb_down_is_the_database_down_and_fails_after_the_max_age(tmp_path: Path) -> None:
    ok, message, snapshot = verdict(tmp_path, influx=influx("down", down_s=300, spool_points=4321), mqtt=mqtt("up"))
    assert snapshot["database_state"] == "down"
    assert (ok, message) == (False, "output influx: writes failing for 300 s (connection refused); "
                                    "4321 points safe in the spool")
