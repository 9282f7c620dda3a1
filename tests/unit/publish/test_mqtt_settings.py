"""MqttSettings: the broker URL and every inconsistent setting rejected at construction,
all problems at once; the password never shown."""

from __future__ import annotations

import pytest

from agent.publish.mqtt_settings import Endpoint, MqttSettings, parse_url


@pytest.mark.parametrize(
    ("url", "endpoint"),
    [
        ("mqtt://broker.plant", Endpoint("broker.plant", 1883, tls=False)),
        ("mqtts://broker.plant", Endpoint("broker.plant", 8883, tls=True)),
        ("mqtts://10.0.0.5:18883/", Endpoint("10.0.0.5", 18883, tls=True)),
        ("mqtt://[fd00::1]:1884", Endpoint("fd00::1", 1884, tls=False)),
    ],
)
def test_url(url: str, endpoint: Endpoint) -> None:
    assert parse_url(url) == endpoint


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("tcp://broker:1883", "expected an mqtt:// or mqtts:// URL"),
        ("broker:1883", "expected an mqtt:// or mqtts:// URL"),
        ("mqtt://edge:secret@broker", "the URL must not carry credentials"),
        ("mqtt://:1883", "the URL names no host"),
        ("mqtt://broker/plant", "expected no path, query or fragment"),
        ("mqtt://broker?x=1", "expected no path, query or fragment"),
        ("mqtt://broker:70000", "out of range"),
    ],
)
def test_bad_url(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_url(url)


def test_credentials_in_the_url_are_not_repeated_in_the_error() -> None:
    with pytest.raises(ValueError) as raised:
        MqttSettings("mqtt://edge:secret@broker", "edge-1")
    assert "secret" not in str(raised.value)


def test_defaults_keep_a_persistent_session_over_mqtt_5() -> None:
    settings = MqttSettings("mqtts://broker", "edge-1")
    assert (settings.protocol, settings.clean_start, settings.endpoint.tls) == ("5", False, True)


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"client_id": ""}, "client_id must not be empty"),
        ({"protocol": "3.1"}, "protocol must be '3.1.1' or '5'"),
        ({"keepalive": 0}, "keepalive must be 1 to 65535 s"),
        ({"connect_timeout": 0}, "connect_timeout must be positive"),
        ({"url": "mqtt://broker", "ca_file": "ca.pem"}, "need an mqtts:// URL"),
        ({"key_file": "client.key"}, "key_file needs cert_file"),
        ({"password": "secret"}, "password needs username"),
        ({"reconnect_delay": 0}, "reconnect_delay must be positive"),
        ({"reconnect_delay": 5, "reconnect_delay_max": 1}, "at most reconnect_delay_max"),
    ],
)
def test_inconsistent_settings(changes: dict[str, object], problem: str) -> None:
    arguments: dict[str, object] = {"url": "mqtts://broker", "client_id": "edge-1", **changes}
    with pytest.raises(ValueError, match=problem):
        MqttSettings(**arguments)  # type: ignore[arg-type]


def test_all_problems_at_once() -> None:
    with pytest.raises(ValueError) as raised:
        MqttSettings("mqtt://broker", "", keepalive=0, ca_file="ca.pem")
    assert str(raised.value) == (
        "client_id must not be empty: the broker keeps the session under it; keepalive must be 1 to 65535 s, not 0;"
        " ca_file, cert_file and key_file need an mqtts:// URL"
    )


def test_password_is_never_shown() -> None:
    settings = MqttSettings("mqtts://broker", "edge-1", username="edge", password="correct horse")
    assert "correct horse" not in repr(settings) and "correct horse" not in str(settings)
