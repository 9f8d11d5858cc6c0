"""The table of settings (p1logger/settings.py): every setting parsed the same way from a flag and from the
environment, one line and exit 2 on a bad value, and the flags, --help, the README and the example
environment files agreeing with the table."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from p1logger import cli, settings
from p1logger.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "fixtures"


def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("P1_", "INFLUX_")):
            monkeypatch.delenv(name)


def command_line(command: str, tmp_path: Path) -> list[str]:
    """The command with what it needs besides settings (a file to read, a target)."""
    capture = tmp_path / "one.txt"
    capture.write_bytes(b"")
    extra = {"record": ["--input", str(capture), str(tmp_path / "out.txt")], "replay": [str(capture)],
             "dump": ["--input", str(capture)], "capacity": ["--input", str(capture)],
             "prices": ["fetch"]}
    return [command, *extra.get(command, [])]


def subparser(command: str) -> argparse.ArgumentParser:
    parser = cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    found: argparse.ArgumentParser = action.choices[command]
    return found


def flat(text: str) -> str:
    return " ".join(text.split())


# ------------------------------------------------------------------ every setting, malformed


# Settings that are read only when another one turns their part on.
NEEDS = {"P1_MQTT_PASSWORD": {"P1_MQTT_URL": "mqtt://user@127.0.0.1:1", "P1_OUTPUT": "mqtt"}}

CASES = [(setting.env, way) for setting in settings.SETTINGS for way in ("env", "flag")
         if way == "env" or (setting.flag and setting.kind != "switch")]


@pytest.mark.parametrize(("name", "way"), CASES, ids=[f"{name}-{way}" for name, way in CASES])
def test_a_malformed_value_is_one_line_and_exit_2(name: str, way: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    setting = settings.BY_ENV[name]
    clean_environment(monkeypatch)
    # A valid source and spool, so only the setting under test can be wrong.
    monkeypatch.setenv("P1_SOURCE", f"file:{tmp_path / 'one.txt'}")
    monkeypatch.setenv("P1_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setenv("P1_PRICES_FILE", str(tmp_path / "prices.csv"))
    for needed, value in NEEDS.get(name, {}).items():
        monkeypatch.setenv(needed, value)
    argv = command_line(setting.commands[0], tmp_path)
    if way == "env":
        monkeypatch.setenv(name, setting.bad)
    else:
        assert setting.flag is not None
        argv += [setting.flag, setting.bad]
    code = cli.main(argv)
    captured = capsys.readouterr()
    assert code == 2, captured
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and captured.err.endswith("\n"), captured.err
    assert "Traceback" not in captured.err
    named = name if way == "env" else setting.flag
    assert lines[0].startswith(f"p1logger {argv[0]}: {named} ") and "expected" in lines[0], lines[0]
    if setting.secret:
        assert setting.bad.strip() not in captured.err


@pytest.mark.parametrize("name", [s.env for s in settings.SETTINGS])
def test_the_bad_example_is_refused_and_the_default_accepted(name: str) -> None:
    setting = settings.BY_ENV[name]
    with pytest.raises(ConfigError):
        setting.convert(setting.bad, from_flag=False)
    default = setting.default_text()
    if default is not None:
        setting.convert(default, from_flag=False)


@pytest.mark.parametrize(("name", "bad"), [
    ("P1_BAUD", "fast"), ("P1_SPOOL_MAX_BYTES", "1 gigabyte"), ("P1_FLUSH_INTERVAL_S", "abc"),
    ("INFLUX_TIMEOUT_S", "inf"), ("INFLUX_TIMEOUT_S", "1e12"), ("INFLUX_TIMEOUT_S", "nan"),
    ("P1_BATCH_MAX_POINTS", "1e3"), ("INFLUX_URL", "http://[::1"), ("INFLUX_URL", "http://localhost:99999"),
    ("INFLUX_URL", "http://localhost:abc"), ("INFLUX_URL", "localhost:8086"), ("P1_TIMESTAMPS", "recieve"),
    ("P1_BYTESIZE", "9"), ("P1_COUNTRY", "XX"), ("P1_ARCHIVE_KEEP_DAYS", "-1"), ("P1_CAPACITY_PRICE", "x"),
    ("P1_CAPACITY_PRICE", "inf"), ("P1_SOURCE", "socket://meter:abc"), ("P1_STOPBITS", "1.5"),
])
def test_the_values_from_the_issue_are_refused(name: str, bad: str) -> None:
    with pytest.raises(ConfigError) as raised:
        settings.BY_ENV[name].convert(bad, from_flag=False)
    assert str(raised.value).startswith(f"{name} ")
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(("name", "text", "value"), [
    ("P1_SPOOL_MAX_BYTES", "1GiB", 1 << 30), ("P1_SPOOL_MAX_BYTES", "1G", 1 << 30),
    ("P1_SPOOL_MAX_BYTES", "512M", 512 << 20), ("P1_SPOOL_MAX_BYTES", "512 MiB", 512 << 20),
    ("P1_SPOOL_MAX_BYTES", "500MB", 500_000_000), ("P1_SPOOL_MAX_BYTES", "1073741824", 1 << 30),
    ("P1_ARCHIVE_MAX_BYTES", "0", 0), ("P1_ARCHIVE_MAX_BYTES", "1.5G", 3 << 29),
    ("P1_FLUSH_INTERVAL_S", "30s", 30.0), ("P1_FLUSH_INTERVAL_S", "5m", 300.0), ("P1_FLUSH_INTERVAL_S", "1.5", 1.5),
    ("P1_FLUSH_INTERVAL_S", "500ms", 0.5), ("P1_HEALTH_MAX_AGE_S", "2h", 7200.0), ("INFLUX_TIMEOUT_S", "5s", 5.0),
    ("P1_BATCH_MAX_POINTS", "5_000", 5000), ("P1_TIMESTAMPS", "Receive", "receive"), ("P1_PARITY", "even", "E"),
    ("P1_COUNTRY", "nl", "NL"), ("P1_COUNTRY", "auto", ""), ("P1_LOG_LEVEL", "debug", "DEBUG"),
    ("P1_XONXOFF", "yes", True), ("P1_XONXOFF", "0", False), ("INFLUX_URL", "https://[::1]:8086/", "https://[::1]:8086"),
])
def test_the_forms_people_write_are_accepted(name: str, text: str, value: object) -> None:
    assert settings.BY_ENV[name].convert(text, from_flag=False) == value


def test_a_flag_wins_over_the_environment_and_both_are_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    clean_environment(monkeypatch)
    monkeypatch.setenv("P1_SPOOL_MAX_BYTES", "512M")
    monkeypatch.setenv("P1_XONXOFF", "1")
    args = cli.build_parser().parse_args(["run", "--source", "simulator"])
    assert (args.spool_max_bytes, args.xonxoff, args.stopbits, args.baud) == (512 << 20, True, 1, 115200)
    args = cli.build_parser().parse_args(["run", "--spool-max-bytes", "2G", "--stopbits", "2"])
    assert (args.spool_max_bytes, args.stopbits) == (2 << 30, 2)
    monkeypatch.setenv("P1_STOPBITS", "2")
    assert cli.build_parser().parse_args(["dump"]).stopbits == 2


def run_process(*argv: str, **environment: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("P1_", "INFLUX_"))}
    env.update(environment)
    return subprocess.run([sys.executable, "-m", "p1logger", *argv], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=60, check=False)


def test_help_and_version_never_fail_and_other_commands_ignore_a_setting_they_do_not_use(tmp_path: Path) -> None:
    broken = {"P1_BAUD": "fast", "P1_SPOOL_MAX_BYTES": "1 gig", "INFLUX_TIMEOUT_S": "inf", "P1_COUNTRY": "XX",
              "P1_SPOOL_DIR": str(tmp_path)}
    assert run_process("--help", **broken).returncode == 0
    version = run_process("--version", **broken)
    assert (version.returncode, version.stderr) == (0, "")
    assert run_process("run", "--help", **broken).returncode == 0
    health = run_process("health", **broken)
    assert (health.returncode, health.stderr) == (1, "")
    assert health.stdout.startswith("no health state at ")
    dump = run_process("dump", "--input", str(FIXTURE / "SOURCES.md"), **broken)
    assert (dump.returncode, dump.stderr) == (2, "p1logger dump: P1_BAUD 'fast' is not valid: expected a baud rate, "
                                                   "115200 (DSMR 4/5, Belgium) or 9600 (DSMR 2.2/3)\n")


def test_credentials_in_the_url_are_refused_without_being_shown(tmp_path: Path) -> None:
    result = run_process("run", INFLUX_URL="http://db:8086/?token=SECRET-123", P1_SOURCE="simulator",
                         P1_SPOOL_DIR=str(tmp_path))
    assert result.returncode == 2
    assert "SECRET-123" not in result.stderr + result.stdout
    assert result.stderr == ("p1logger run: INFLUX_URL 'http://db:8086/?...' is not valid: expected a URL without "
                             "user, password, token or query (put credentials in INFLUX_TOKEN, or INFLUX_USERNAME "
                             "and INFLUX_PASSWORD)\n")
    userinfo = run_process("doctor", "--influx-url", "http://admin:hunter2@db:8086", P1_SPOOL_DIR=str(tmp_path))
    assert userinfo.returncode == 2 and "hunter2" not in userinfo.stderr + userinfo.stdout
    assert userinfo.stderr.startswith("p1logger doctor: --influx-url 'http://db:8086' is not valid")


def test_help_never_shows_a_value_from_the_environment(monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    clean_environment(monkeypatch)
    monkeypatch.setenv("INFLUX_TOKEN_FILE", "/run/secrets/SECRET-FILE-NAME")
    monkeypatch.setenv("INFLUX_USERNAME", "SECRET-USER")
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    out = capsys.readouterr().out
    assert "SECRET" not in out and "[env INFLUX_TOKEN_FILE]" in flat(out)


# ------------------------------------------------------------------ the table agrees with everything else


def env_names_in_help(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Every [env NAME] in the help of the parser's options, and of its own subcommands' ("prices fetch")."""
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for nested in action.choices.values():
                found.update(env_names_in_help(nested))
        match = re.search(r"\[env (\w+)", flat(action.help or ""))
        if match:
            found[match.group(1)] = action
    return found


@pytest.mark.parametrize("command", cli.COMMANDS)
def test_every_flag_with_a_variable_comes_from_the_table(command: str) -> None:
    parser = subparser(command)
    in_help = env_names_in_help(parser)
    table = {s.env for s in settings.SETTINGS if command in s.commands and s.flag}
    assert set(in_help) == table
    for name, action in in_help.items():
        setting = settings.BY_ENV[name]
        if action.option_strings:
            assert (action.option_strings, action.dest) == ([setting.flag, *setting.aliases], setting.dest)
        else:
            assert name == "P1_SOURCE" and action.dest == "device"


def test_every_variable_the_code_reads_is_in_the_table() -> None:
    read = set()
    for path in (REPO / "p1logger").rglob("*.py"):
        read |= set(re.findall(r"[\"']((?:P1|INFLUX|ENTSOE)_[A-Z0-9_]*[A-Z0-9])[\"']",
                               path.read_text(encoding="utf-8")))
    assert read - set(settings.BY_ENV) == set()


def test_the_readme_table_is_the_generated_one() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert settings.replace_readme_table(readme) == readme, (
        "README.md's settings table is out of date: run python -m p1logger.settings README.md")
    for setting in settings.SETTINGS:
        assert f"`{setting.env}`" in readme


def env_file_entries(path: Path, commented: bool = True) -> dict[str, str]:
    """KEY=value lines, and commented-out ones ("# KEY=value") too when ``commented``; the last one wins."""
    entries = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.fullmatch(r"#? ?([A-Z][A-Z0-9_]*)=(.*)" if commented else r"([A-Z][A-Z0-9_]*)=(.*)", line)
        if match:
            entries[match.group(1)] = match.group(2)
    return entries


def sourced(path: Path, tmp_path: Path, uncomment: bool) -> dict[str, str]:
    """What `set -a; . FILE` gives (docs/operations.md), with the commented-out settings switched on."""
    text = path.read_text(encoding="utf-8")
    if uncomment:
        text = re.sub(r"^# ?([A-Z][A-Z0-9_]*=)", r"\1", text, flags=re.MULTILINE)
    copy = tmp_path / path.name
    copy.write_text(text, encoding="utf-8")
    result = subprocess.run(["bash", "-c", f"set -a; . {copy} && env -0"], env={"PATH": os.environ["PATH"]},
                            capture_output=True, text=True, check=False)
    assert (result.returncode, result.stderr) == (0, "")
    return dict(item.split("=", 1) for item in result.stdout.split("\0") if "=" in item)


@pytest.mark.parametrize("uncomment", [False, True])
def test_the_systemd_environment_example_is_valid_shell_with_valid_settings(tmp_path: Path, uncomment: bool) -> None:
    path = REPO / "deploy" / "p1logger.env.example"
    assert set(env_file_entries(path)) <= set(settings.BY_ENV)
    entries = env_file_entries(path, commented=uncomment)
    environment = sourced(path, tmp_path, uncomment)
    for name in entries:
        value = environment[name]
        assert value == entries[name].strip()  # no comment or space crept into a value
        if value:
            settings.BY_ENV[name].convert(value, from_flag=False)


def test_the_compose_environment_example_uses_table_settings_or_compose_variables() -> None:
    compose = (REPO / "docker-compose.yml").read_text(encoding="utf-8")
    entries = env_file_entries(REPO / ".env.example")
    for name, value in entries.items():
        if name in settings.BY_ENV:
            if value:
                settings.BY_ENV[name].convert(value, from_flag=False)
        else:
            assert "${" + name in compose, f"{name} in .env.example is neither a setting nor used by compose"
    logger_environment = compose[compose.index("  p1logger:"):]
    for name in re.findall(r"^      ((?:P1|INFLUX)_[A-Z0-9_]+):", logger_environment, flags=re.MULTILINE):
        assert name in settings.BY_ENV


def test_the_table_defaults_match_the_code() -> None:
    from p1logger import capacity, spool
    from p1logger.outputs import archive, fanout
    from p1logger.framing import DEFAULT_MAX_TELEGRAM_BYTES
    from p1logger.timestamps import DEFAULT_TIMEZONE

    def default(name: str) -> object:
        return settings.BY_ENV[name].convert(str(settings.BY_ENV[name].default_text()), from_flag=False)

    assert default("P1_SPOOL_MAX_BYTES") == spool.DEFAULT_MAX_BYTES
    assert default("P1_ARCHIVE_MAX_BYTES") == archive.DEFAULT_MAX_BYTES
    assert default("P1_SERVE_RAW_MAX_CLIENTS") == fanout.DEFAULT_MAX_CLIENTS
    assert default("P1_CAPACITY_PRICE") == capacity.DEFAULT_PRICE_EUR_PER_KW_YEAR
    assert default("P1_CAPACITY_MARGIN_KW") == capacity.DEFAULT_MARGIN_KW
    assert default("P1_MAX_TELEGRAM_BYTES") == DEFAULT_MAX_TELEGRAM_BYTES
    assert default("P1_TIMEZONE") == DEFAULT_TIMEZONE


def test_a_missing_source_file_is_a_configuration_error(tmp_path: Path) -> None:
    result = run_process("run", "--source", f"file:{tmp_path}/missing.txt", "--output", "-",
                         P1_SPOOL_DIR=str(tmp_path / "spool"))
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"p1logger run: P1_SOURCE 'file:{tmp_path}/missing.txt': there is no file {tmp_path}/missing.txt\n"


def test_a_bad_simulator_variable_stops_run_before_it_starts(tmp_path: Path) -> None:
    result = run_process("run", "--output", "-", P1_SOURCE="simulator", P1_SIMULATOR_SPEED="fast",
                         P1_SPOOL_DIR=str(tmp_path / "spool"))
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == "p1logger run: P1_SIMULATOR_SPEED 'fast' is not valid: expected a speed factor above 0\n"


@given(st.sampled_from([s.env for s in settings.SETTINGS]), st.text(max_size=40))
@hypothesis_settings(max_examples=300, deadline=None, derandomize=True)
def test_any_text_is_a_value_or_one_line_of_config_error(name: str, text: str) -> None:
    setting = settings.BY_ENV[name]
    try:
        setting.convert(text, from_flag=False)
    except ConfigError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(f"{name} ")
        if setting.secret:  # the value is never shown
            assert str(exc).startswith(f"{name} is not valid: expected ")
