"""The command line loads only the command it runs: ``health`` (the Docker HEALTHCHECK, every 30 s) and
``--help`` must not pay for the engine.  Each check runs in a fresh interpreter, since this one has
imported everything already."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from p1logger import cli

REPO = Path(__file__).resolve().parent.parent

# Runs `main(argv)` in a fresh interpreter and reports the exit status and the p1logger modules and heavy
# third-party packages it imported.
PROBE = """
import json, sys
from p1logger.cli import main
try:
    status = main(json.loads(sys.argv[1]))
except SystemExit as exc:
    status = exc.code
heavy = ("tenacity", "urllib3", "influxdb_client", "serial", "numpy", "sqlite3", "paho", "cryptography")
loaded = sorted(m for m in sys.modules if m.startswith("p1logger.") or m.split(".")[0] in heavy)
sys.stderr.write("\\n" + json.dumps({"status": status, "loaded": loaded}) + "\\n")
"""


def probe(argv: list[str], **env: str) -> tuple[int, list[str], str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("P1_", "INFLUX_"))}
    environment.update(env)
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argv)], capture_output=True, text=True,
                          cwd=REPO, env=environment, timeout=60)
    report = json.loads(done.stderr.rstrip().rsplit("\n", 1)[-1])
    return report["status"], report["loaded"], done.stdout


def test_health_imports_only_its_own_modules(tmp_path: Path) -> None:
    now = time.time()
    (tmp_path / "health.json").write_text(json.dumps({
        "updated_at": now, "started_at": now - 100, "last_telegram_at": now - 2, "database_state": "up",
        "source_state": "open"}), encoding="utf-8")
    status, loaded, out = probe(["health"], P1_SPOOL_DIR=str(tmp_path))
    assert status == 0
    assert out.startswith("ok: last telegram 2 s ago, database up")
    # The settings a command reads (config, and the settings table beside it) and the health file: no engine,
    # no decoder, no third-party package.
    allowed = {"p1logger.cli", "p1logger.commands", "p1logger.commands.health", "p1logger.config",
               "p1logger.settings", "p1logger.errors", "p1logger.health", "p1logger.timestamps"}
    assert set(loaded) <= allowed, sorted(set(loaded) - allowed)
    assert {"p1logger.commands.health", "p1logger.health"} <= set(loaded)


def test_top_level_help_lists_every_command_without_importing_one() -> None:
    status, loaded, out = probe(["--help"])
    assert status == 0
    for name, (_, help_line) in cli.COMMANDS.items():
        assert f"    {name}" in out
        assert help_line.split()[0] in out
    assert loaded == ["p1logger.cli", "p1logger.errors"]


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_command_has_its_own_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli.main([name, "--help"])
    assert stopped.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: p1logger {name} ")
    assert out.count("\n") > 3  # its own options, not the one-line listing


def test_the_listing_and_the_loaded_command_show_the_same_help_line(capsys: pytest.CaptureFixture[str]) -> None:
    for name, (_, help_line) in cli.COMMANDS.items():
        parser = cli.build_parser(load=(name,))
        listing = parser.format_help()
        assert " ".join(help_line.split()) in " ".join(listing.split())


def test_the_command_is_the_first_word_that_is_not_an_option() -> None:
    assert cli.command_in(["--version"]) is None
    assert cli.command_in(["health", "--max-age-s", "5"]) == "health"
    assert cli.command_in(["-h", "dump", "--input", "run"]) == "dump"
    assert cli.command_in(["nonsense", "run"]) is None


def test_an_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli.main(["nonsense"])
    assert stopped.value.code == 2
    assert "invalid choice: 'nonsense'" in capsys.readouterr().err


def test_no_command_prints_the_listing_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    err = capsys.readouterr().err
    assert "health" in err and "replay" in err
