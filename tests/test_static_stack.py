"""Static checks of the Docker stack: Dockerfile, docker-compose.yml, .env.example
and the Grafana provisioning.

No Docker engine runs here, so `docker compose up` cannot be tried. Instead
docker-compose.yml is validated against the Compose Specification's JSON
schema (check-jsonschema's vendored copy), and the promises the stack makes
are checked one by one: it starts without a .env file, every service restarts
and waits for healthy dependencies, InfluxDB listens on localhost only, the
logger falls back to its simulator, the images are pinned, and what Grafana
is told to load exists.

check-jsonschema (and ruamel.yaml, which it brings) come with the `[test]`
extras; without them these tests skip, unless P1_TEST_REQUIRE_SERVERS=1.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from helpers.influx_servers import require_server

REPO = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
DATASOURCES = REPO / "grafana" / "provisioning" / "datasources" / "influxdb.yaml"
DASHBOARD_PROVIDERS = REPO / "grafana" / "provisioning" / "dashboards" / "p1logger.yaml"
DASHBOARD_DIR = REPO / "grafana" / "dashboards"
GRAFANA_CHECK = REPO / "tools" / "grafana-check"
CHECK_TIMEOUT_S = 60.0

# ${NAME}, ${NAME:-default} or ${NAME-default}, as Compose interpolates them.
INTERPOLATION_RE = re.compile(r"\$\{(?P<name>[A-Za-z_]\w*)(?:(?P<op>:?-)(?P<default>[^}]*))?\}")


def _check_jsonschema() -> None:
    try:
        import check_jsonschema  # noqa: F401
    except ImportError:
        require_server("check-jsonschema", "pip install -e '.[test]' (or pip install check-jsonschema)")


def load_yaml(path: Path) -> Any:
    _check_jsonschema()  # ruamel.yaml comes with it
    from ruamel.yaml import YAML

    return YAML(typ="safe").load(path.read_text(encoding="utf-8"))


def iter_strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, Mapping):
        for value in node.values():
            yield from iter_strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from iter_strings(value)


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's variable interpolation for the forms this project uses."""

    def substitute(match: re.Match[str]) -> str:
        name, op, default = match.group("name", "op", "default")
        if op is None:
            if name not in env:
                raise AssertionError(f"${{{name}}} has no default and is not set")
            return env[name]
        if op == ":-":
            return env.get(name) or default
        return env.get(name, default)

    escaped = value.replace("$$", "\0")
    resolved = INTERPOLATION_RE.sub(substitute, escaped)
    assert "$" not in resolved, f"unsupported interpolation in {value!r}"
    return resolved.replace("\0", "$")


def resolved_compose(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """docker-compose.yml as Compose would see it with the given .env (default: none)."""

    def walk(node: Any) -> Any:
        if isinstance(node, str):
            return interpolate(node, env or {})
        if isinstance(node, Mapping):
            return {key: walk(value) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(value) for value in node]
        return node

    compose: dict[str, Any] = walk(load_yaml(COMPOSE_FILE))
    return compose


def compose_defaults() -> dict[str, str]:
    """Every variable docker-compose.yml interpolates, with its default."""
    defaults: dict[str, str] = {}
    for text in iter_strings(load_yaml(COMPOSE_FILE)):
        for match in INTERPOLATION_RE.finditer(text):
            name, default = match.group("name"), match.group("default")
            assert match.group("op") == ":-", f"{match.group(0)}: give it a default with :- so no .env is needed"
            assert defaults.setdefault(name, default) == default, f"{name} has two different defaults"
    return defaults


def read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep and name == name.strip(), f"{path.name}: not NAME=value: {line!r}"
        assert name not in values, f"{path.name}: {name} set twice"
        values[name] = value
    return values


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "Dockerfile ends inside a continued line"
    return [(text.split(None, 1)[0].upper(), " ".join(text.split()[1:])) for text in logical]


# --------------------------------------------------------------------------- compose


def test_compose_file_matches_the_compose_specification() -> None:
    _check_jsonschema()
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)],
        capture_output=True,
        text=True,
        timeout=CHECK_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "ok -- validation done"


def test_compose_schema_check_rejects_a_broken_file(tmp_path: Path) -> None:
    _check_jsonschema()
    broken = COMPOSE_FILE.read_text(encoding="utf-8").replace(
        "    restart: unless-stopped\n", "    restart: [unless-stopped]\n", 1
    )
    assert broken != COMPOSE_FILE.read_text(encoding="utf-8")
    path = tmp_path / "docker-compose.yml"
    path.write_text(broken, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=CHECK_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 1
    assert "$.services.influxdb.restart" in result.stdout + result.stderr


def test_compose_needs_no_env_file() -> None:
    defaults = compose_defaults()
    assert sorted(defaults) == sorted(read_env_file(ENV_EXAMPLE))
    compose = resolved_compose()
    assert sorted(compose["services"]) == ["grafana", "influxdb", "mosquitto", "p1logger"]
    # The broker is optional: it starts only with `--profile mqtt`.
    assert {name: s.get("profiles") for name, s in compose["services"].items()} == {
        "grafana": None, "influxdb": None, "mosquitto": ["mqtt"], "p1logger": None}


def test_mosquitto_needs_a_password_and_allows_no_anonymous_login() -> None:
    compose = resolved_compose({"MQTT_USER": "u", "MQTT_PASSWORD": "pw", "P1_MQTT_URL": "mqtt://u@mosquitto:1883"})
    broker = compose["services"]["mosquitto"]
    assert broker["environment"] == {"MQTT_USER": "u", "MQTT_PASSWORD": "pw"}
    script = broker["command"][2]
    # $$ in the file is a literal $ for the container's shell, not a Compose variable.
    assert 'mosquitto_passwd -c -b /mosquitto/data/passwords "$MQTT_USER" "$MQTT_PASSWORD"' in script
    assert re.fullmatch(r"eclipse-mosquitto:2\.\d+\.\d+", broker["image"])
    conf_mount = next(v for v in broker["volumes"] if v.startswith("./deploy/mosquitto.conf:"))
    conf = (REPO / "deploy" / "mosquitto.conf").read_text(encoding="utf-8").splitlines()
    assert "allow_anonymous false" in conf and "password_file /mosquitto/data/passwords" in conf
    assert conf_mount.split(":")[1] == "/mosquitto/config/mosquitto.conf"
    logger = compose["services"]["p1logger"]["environment"]
    assert (logger["P1_MQTT_URL"], logger["P1_MQTT_PASSWORD"]) == ("mqtt://u@mosquitto:1883", "pw")
    assert resolved_compose()["services"]["p1logger"]["environment"]["P1_MQTT_URL"] == ""  # off by default


def test_env_example_lists_every_setting_with_the_compose_default() -> None:
    assert read_env_file(ENV_EXAMPLE) == compose_defaults()


def test_every_service_restarts_and_waits_for_healthy_dependencies() -> None:
    services = resolved_compose()["services"]
    for name, service in services.items():
        assert service["restart"] == "unless-stopped", name
        for dependency, spec in service.get("depends_on", {}).items():
            assert spec == {"condition": "service_healthy"}, f"{name} -> {dependency}"
            assert "healthcheck" in services[dependency], f"{dependency} has no healthcheck to wait for"
    assert set(services["grafana"]["depends_on"]) == {"influxdb"}
    assert set(services["p1logger"]["depends_on"]) == {"influxdb"}
    assert services["influxdb"]["healthcheck"]["test"] == ["CMD", "influx", "ping"]


def test_influxdb_listens_on_localhost_unless_told_otherwise() -> None:
    assert resolved_compose()["services"]["influxdb"]["ports"] == ["127.0.0.1:8086:8086"]
    opened = resolved_compose({"INFLUX_BIND": "0.0.0.0", "INFLUX_PORT": "18086"})
    assert opened["services"]["influxdb"]["ports"] == ["0.0.0.0:18086:8086"]


def test_influxdb_first_run_setup_comes_from_env() -> None:
    env = resolved_compose({"INFLUX_ORG": "o", "INFLUX_BUCKET": "b", "INFLUX_TOKEN": "t"})["services"]
    setup = env["influxdb"]["environment"]
    assert setup["DOCKER_INFLUXDB_INIT_MODE"] == "setup"
    assert (setup["DOCKER_INFLUXDB_INIT_ORG"], setup["DOCKER_INFLUXDB_INIT_BUCKET"]) == ("o", "b")
    # Grafana and the logger must use what InfluxDB was set up with.
    assert setup["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"] == "t"
    assert env["p1logger"]["environment"]["INFLUX_TOKEN"] == "t"
    assert env["grafana"]["environment"]["P1_INFLUX_TOKEN"] == "t"
    assert (env["p1logger"]["environment"]["INFLUX_ORG"], env["p1logger"]["environment"]["INFLUX_BUCKET"]) == ("o", "b")
    assert env["grafana"]["environment"]["P1_INFLUX_DATABASE"] == "b"
    assert len(resolved_compose()["services"]["influxdb"]["environment"]["DOCKER_INFLUXDB_INIT_PASSWORD"]) >= 8


def test_logger_runs_the_simulator_without_a_source() -> None:
    raw = load_yaml(COMPOSE_FILE)["services"]["p1logger"]
    assert raw["environment"]["P1_SOURCE"] == "${P1_SOURCE:-simulator}"
    for env in ({}, {"P1_SOURCE": ""}):
        logger = resolved_compose(env)["services"]["p1logger"]
        assert logger["environment"]["P1_SOURCE"] == "simulator"
    meter = resolved_compose({"P1_SOURCE": "/dev/ttyUSB0"})["services"]["p1logger"]
    assert meter["environment"]["P1_SOURCE"] == "/dev/ttyUSB0"
    # A device mapping fails on machines without the device: it stays commented out.
    assert "devices" not in raw and "group_add" not in raw
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    assert "    # devices:\n    #   - /dev/serial/by-id/" in text
    assert "    # group_add:\n    #   - dialout\n" in text


def test_logger_spool_is_on_a_named_volume_matching_the_image() -> None:
    compose = resolved_compose()
    logger = compose["services"]["p1logger"]
    spool_dir = logger["environment"]["P1_SPOOL_DIR"]
    assert logger["volumes"] == [f"p1logger-spool:{spool_dir}"]
    assert "p1logger-spool" in compose["volumes"]
    instructions = dockerfile_instructions()
    assert f"P1_SPOOL_DIR={spool_dir}" in " ".join(args for op, args in instructions if op == "ENV").split()
    assert ("VOLUME", f'["{spool_dir}"]') in instructions
    assert logger["build"] == {"context": "."}


def test_images_are_pinned_and_grafana_matches_the_schema_package() -> None:
    services = resolved_compose()["services"]
    assert re.fullmatch(r"influxdb:2\.7\.\d+", services["influxdb"]["image"])
    grafana = re.fullmatch(r"grafana/grafana:(\d+\.\d+\.\d+)", services["grafana"]["image"])
    assert grafana is not None
    package = json.loads((GRAFANA_CHECK / "package.json").read_text(encoding="utf-8"))
    lock = json.loads((GRAFANA_CHECK / "package-lock.json").read_text(encoding="utf-8"))
    assert package["dependencies"]["@grafana/schema"] == grafana.group(1)
    for name, version in package["dependencies"].items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"{name} is not pinned exactly: {version}"
        assert lock["packages"][f"node_modules/{name}"]["version"] == version
    assert lock["packages"][""]["dependencies"] == package["dependencies"]


# --------------------------------------------------------------------------- Grafana provisioning


def _container_path(service: Mapping[str, Any], host_path: str) -> PurePosixPath:
    for volume in service["volumes"]:
        source, target, *_ = volume.split(":")
        if source == host_path:
            return PurePosixPath(target)
    raise AssertionError(f"{host_path} is not mounted")


def test_grafana_loads_the_provisioning_and_the_dashboards() -> None:
    grafana = resolved_compose()["services"]["grafana"]
    assert _container_path(grafana, "./grafana/provisioning") == PurePosixPath("/etc/grafana/provisioning")
    dashboards_in_container = _container_path(grafana, "./grafana/dashboards")
    (provider,) = load_yaml(DASHBOARD_PROVIDERS)["providers"]
    assert PurePosixPath(provider["options"]["path"]) == dashboards_in_container
    home = PurePosixPath(grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert home.parent == dashboards_in_container
    assert (DASHBOARD_DIR / home.name).is_file()
    assert json.loads((DASHBOARD_DIR / home.name).read_text(encoding="utf-8"))["uid"] == "p1-live"


def test_datasource_is_influxql_with_the_token_from_env() -> None:
    (datasource,) = load_yaml(DATASOURCES)["datasources"]
    assert (datasource["type"], datasource["uid"], datasource["jsonData"]["version"]) == (
        "influxdb",
        "p1-influxdb",
        "InfluxQL",
    )
    grafana_env = resolved_compose()["services"]["grafana"]["environment"]
    used = set(re.findall(r"\$\{?(\w+)\}?", " ".join(iter_strings(datasource))))
    assert used == {"P1_INFLUX_URL", "P1_INFLUX_DATABASE", "P1_INFLUX_TOKEN"}
    assert used <= set(grafana_env)
    assert datasource["jsonData"]["dbName"] == "$P1_INFLUX_DATABASE"
    assert datasource["jsonData"]["httpHeaderName1"] == "Authorization"
    # The token only in secureJsonData, which Grafana encrypts.
    assert datasource["secureJsonData"] == {"httpHeaderValue1": "Token $P1_INFLUX_TOKEN"}
    assert "P1_INFLUX_TOKEN" not in " ".join(iter_strings(datasource["jsonData"]))
    assert grafana_env["P1_INFLUX_URL"] == "http://influxdb:8086"
    # InfluxDB 2's v1 API finds the bucket by the database name its DBRP mapping gives it.
    env = resolved_compose({"INFLUX_BUCKET": "b", "INFLUX_TOKEN": "t"})["services"]
    assert env["grafana"]["environment"]["P1_INFLUX_DATABASE"] == "b"
    assert env["grafana"]["environment"]["P1_INFLUX_TOKEN"] == "t"


DBRP_SCRIPT = REPO / "influxdb" / "init" / "dbrp.sh"


def test_influxdb2_first_start_maps_the_bucket_for_influxql(tmp_path: Path) -> None:
    influxdb = resolved_compose()["services"]["influxdb"]
    assert _container_path(influxdb, "./influxdb/init") == PurePosixPath("/docker-entrypoint-initdb.d")
    # The image runs only executable scripts; git keeps the mode.
    mode = subprocess.run(["git", "ls-files", "-s", str(DBRP_SCRIPT)], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout.split()[0]
    assert mode == "100755"
    # Run the script as the image would, with an influx CLI that records its arguments.
    stub = tmp_path / "bin" / "influx"
    stub.parent.mkdir()
    stub.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$ARGS_FILE"\n', encoding="utf-8")
    stub.chmod(0o755)
    setup = resolved_compose({"INFLUX_ORG": "o", "INFLUX_BUCKET": "b"})["services"]["influxdb"]["environment"]
    env = {
        "PATH": f"{stub.parent}:/usr/bin:/bin",
        "ARGS_FILE": str(tmp_path / "args"),
        "DOCKER_INFLUXDB_INIT_BUCKET_ID": "0123456789abcdef",
        **{k: v for k, v in setup.items() if k.startswith("DOCKER_INFLUXDB_INIT_")},
    }
    done = subprocess.run(["bash", str(DBRP_SCRIPT)], env=env, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "args").read_text(encoding="utf-8").split("\n")[:-1] == [
        "v1", "dbrp", "create", "--org", "o", "--bucket-id", "0123456789abcdef", "--db", "b", "--rp", "autogen",
        "--default",
    ]
    # Outside InfluxDB 2's setup (InfluxDB 1.8's image sources these scripts too) it says so and maps nothing.
    (tmp_path / "args").unlink()
    del env["DOCKER_INFLUXDB_INIT_BUCKET_ID"]
    for command in (["bash", str(DBRP_SCRIPT)], ["bash", "-c", f". {DBRP_SCRIPT}; echo still here"]):
        skipped = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30, check=False)
        assert skipped.returncode == 0, skipped.stderr
        assert "DOCKER_INFLUXDB_INIT_BUCKET_ID is not set" in skipped.stderr
        assert not (tmp_path / "args").exists()
    assert skipped.stdout == "still here\n"


def _datasource_refs(node: Any) -> Iterator[Any]:
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key == "datasource":
                yield value
            yield from _datasource_refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _datasource_refs(value)


def test_dashboards_use_only_the_provisioned_datasource() -> None:
    (datasource,) = load_yaml(DATASOURCES)["datasources"]
    expected = {"type": datasource["type"], "uid": datasource["uid"]}
    alert_rules = load_yaml(REPO / "grafana" / "provisioning" / "alerting" / "capacity.yaml")
    uids = {d["datasourceUid"] for g in alert_rules["groups"] for r in g["rules"] for d in r["data"]}
    assert uids == {datasource["uid"], "__expr__"}
    for path in sorted(DASHBOARD_DIR.glob("*.json")):
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        refs = list(_datasource_refs(dashboard))
        assert [r for r in refs if r != expected] == [], path.name
        # Every data panel, every query and every query variable names it.
        panels = [p for p in dashboard["panels"] if p["type"] not in ("text", "row")]
        variables = [v for v in dashboard["templating"]["list"] if v["type"] == "query"]
        assert all(p["datasource"] == expected for p in panels), path.name
        assert all(t["datasource"] == expected for p in panels for t in p["targets"]), path.name
        assert all(v["datasource"] == expected for v in variables), path.name
        assert len(refs) == len(panels) + sum(len(p["targets"]) for p in panels) + len(variables), path.name


# --------------------------------------------------------------------------- image


def test_dockerfile_builds_in_two_stages_and_runs_unprivileged() -> None:
    instructions = dockerfile_instructions()
    stages = [args for op, args in instructions if op == "FROM"]
    assert stages == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE}"]
    assert ("ARG", "PYTHON_IMAGE=python:3.12-slim") in instructions
    final = instructions[max(i for i, (op, _) in enumerate(instructions) if op == "FROM") :]
    (useradd,) = [args for op, args in final if op == "RUN" and "useradd" in args]
    assert "--groups dialout" in useradd and useradd.split("&&")[0].split()[-1] == "p1logger"
    assert [args for op, args in final if op == "USER"] == ["p1logger"]
    assert (
        "HEALTHCHECK",
        '--interval=30s --timeout=10s --start-period=60s --retries=3 CMD ["p1logger", "health"]',
    ) in final
    assert ("ENTRYPOINT", '["p1logger"]') in final
    assert ("CMD", '["run"]') in final
    # Only wheels reach the final image, never the source tree.
    assert [args for op, args in final if op == "COPY"] == []


def test_dockerignore_admits_exactly_what_the_build_copies() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*"
    admitted = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    copied: set[str] = set()
    for op, args in dockerfile_instructions():
        if op == "COPY" and "--from" not in args:
            copied.update(a.rstrip("/") for a in args.split()[:-1])
    assert admitted == copied == {"pyproject.toml", "README.md", "p1logger"}
