"""MQTT settings: the URL, the password file, and one clear line for each mistake, never with the password."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from p1logger.errors import ConfigError
from p1logger.outputs.mqtt.settings import MqttSettings, add_arguments, from_args, parse_url


def parse(argv: list[str], monkeypatch: pytest.MonkeyPatch, env: dict[str, str] | None = None) -> MqttSettings | None:
    for name in ("P1_MQTT_URL", "P1_MQTT_PASSWORD", "P1_MQTT_PASSWORD_FILE", "P1_MQTT_CA_FILE",
                 "P1_MQTT_INTERVAL_S", "P1_MQTT_PREFIX", "P1_MQTT_CLIENT_ID", "P1_MQTT_DISCOVERY_PREFIX"):
        monkeypatch.delenv(name, raising=False)
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return from_args(parser.parse_args(argv))


@pytest.mark.parametrize("url, expected", [
    ("mqtt://broker", ("broker", 1883, False, None, None)),
    ("mqtts://broker", ("broker", 8883, True, None, None)),
    ("mqtt://ha:s%40cret@10.0.0.2:1884", ("10.0.0.2", 1884, False, "ha", "s@cret")),
    ("MQTTS://user@[::1]:8884/", ("::1", 8884, True, "user", None)),
])
def test_urls(url: str, expected: tuple[object, ...]) -> None:
    assert parse_url(url) == expected


@pytest.mark.parametrize("url, message", [
    ("http://broker", "the MQTT URL must start with mqtt:// or mqtts://, not 'http': fix P1_MQTT_URL"),
    ("broker:1883", "the MQTT URL must start with mqtt:// or mqtts://, not 'broker': fix P1_MQTT_URL"),
    ("mqtt://u:pw-secret@broker:99999", "the MQTT URL has a port that is not a number from 1 to 65535: fix P1_MQTT_URL"),
    ("mqtt://u:pw-secret@:1883", "the MQTT URL has no host (mqtt://host:1883): fix P1_MQTT_URL"),
    ("mqtt://u:pw-secret@broker/topic", "the MQTT URL takes no path or query; set the topic prefix with "
     "--mqtt-prefix: fix P1_MQTT_URL"),
])
def test_bad_urls_are_one_line_without_the_password(url: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_url(url)
    assert str(caught.value) == message
    assert "pw-secret" not in str(caught.value)


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse([], monkeypatch) is None  # no URL: no MQTT output
    settings = parse(["--mqtt-url", "mqtt://broker"], monkeypatch)
    assert settings is not None
    assert (settings.prefix, settings.discovery_prefix, settings.interval_s, settings.per_field_topics,
            settings.backlog_max_messages) == ("p1logger", "homeassistant", 0.0, False, 10000)
    assert settings.client_id.startswith("p1logger-")


def test_password_from_a_file_wins_and_never_shows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "mqtt-password"
    secret.write_text("file-secret\n")
    settings = parse([], monkeypatch, {"P1_MQTT_URL": "mqtt://ha:url-secret@broker",
                                       "P1_MQTT_PASSWORD_FILE": str(secret)})
    assert settings is not None and settings.password == "file-secret"
    assert "secret" not in repr(settings) and "secret" not in settings.describe()
    assert settings.describe() == "mqtt://ha@broker:1883"
    env = parse([], monkeypatch, {"P1_MQTT_URL": "mqtt://ha@broker", "P1_MQTT_PASSWORD": "env-secret"})
    assert env is not None and env.password == "env-secret"


def test_option_mistakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cases = [
        ({"P1_MQTT_URL": "mqtt://broker", "P1_MQTT_PASSWORD": "x"},
         "an MQTT password is set but no user: put it in the URL, mqtt://user@host: fix P1_MQTT_URL"),
        ({"P1_MQTT_URL": "mqtt://u@broker", "P1_MQTT_PASSWORD_FILE": str(tmp_path / "missing")},
         f"cannot read the MQTT password file {tmp_path / 'missing'} (No such file or directory): "
         "fix P1_MQTT_PASSWORD_FILE"),
        ({"P1_MQTT_URL": "mqtt://broker", "P1_MQTT_CA_FILE": str(tmp_path)},
         "an MQTT CA file is set but the URL is mqtt://: use mqtts:// for TLS, or unset P1_MQTT_CA_FILE"),
        ({"P1_MQTT_URL": "mqtts://broker", "P1_MQTT_CA_FILE": str(tmp_path / "ca.crt")},
         f"the MQTT CA file {tmp_path / 'ca.crt'} does not exist: fix P1_MQTT_CA_FILE"),
        # Parsed with every other setting (p1logger/settings.py): one line naming the variable.
        ({"P1_MQTT_URL": "mqtt://broker", "P1_MQTT_INTERVAL_S": "-1"},
         "P1_MQTT_INTERVAL_S '-1' is not valid: expected seconds (at least 0, at most 604800), a number or with a "
         "unit: 30, 1.5, 500ms, 30s, 5m, 1h"),
        ({"P1_MQTT_URL": "mqtt://broker", "P1_MQTT_PREFIX": "p1/#"},
         "P1_MQTT_PREFIX 'p1/#' is not valid: expected an MQTT topic without + or #, e.g. p1logger"),
    ]
    for env, message in cases:
        with pytest.raises(ConfigError) as caught:
            parse([], monkeypatch, env)
        assert str(caught.value) == message


def test_discovery_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = parse(["--mqtt-url", "mqtt://b", "--mqtt-discovery-prefix", "none", "--mqtt-interval-s", "10",
                      "--mqtt-per-field-topics", "--mqtt-prefix", "/home/p1/"], monkeypatch)
    assert settings is not None
    assert (settings.discovery_prefix, settings.interval_s, settings.per_field_topics, settings.prefix) == (
        None, 10.0, True, "home/p1")


def test_tls_errors_name_what_to_fix() -> None:
    import ssl

    from p1logger.outputs.mqtt.output import tls_error

    settings = MqttSettings("broker.lan", 8883, True)
    mismatch = ssl.SSLCertVerificationError(1, "certificate verify failed")
    mismatch.verify_message = "Hostname mismatch, certificate is not valid for 'broker.lan'."
    assert str(tls_error(settings, mismatch)) == (
        "TLS with the MQTT broker broker.lan:8883 failed (Hostname mismatch, certificate is not valid for "
        "'broker.lan'.): fix the host in P1_MQTT_URL: use the name the broker's certificate was made for")
    unknown = ssl.SSLCertVerificationError(1, "certificate verify failed")
    unknown.verify_message = "unable to get local issuer certificate"
    assert str(tls_error(settings, unknown)).endswith("fix P1_MQTT_CA_FILE (the CA that signed the broker's "
                                                      "certificate)")
    plain = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
    plain.reason = "WRONG_VERSION_NUMBER"
    with_ca = MqttSettings("broker.lan", 1883, True, ca_file=Path("/ca.crt"))
    assert str(tls_error(with_ca, plain)) == (
        "TLS with the MQTT broker broker.lan:1883 failed (WRONG_VERSION_NUMBER): fix the broker's TLS set-up, or "
        "the port in P1_MQTT_URL (is it the TLS listener?)")
