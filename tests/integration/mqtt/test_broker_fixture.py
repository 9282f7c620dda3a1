"""The Mosquitto test broker (tests/mqtt_broker.py) does what the MQTT publisher's tests rely
on, proven with a plain paho-mqtt 2.x client: anonymous and password logins, TLS with server
and with mutual authentication, crashes and restarts on the same port, and what persistence
keeps across an orderly restart and across a kill."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable, Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from mqtt_broker import Broker, BrokerFarm, BrokerSpec
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

TIMEOUT = 5.0


class Probe:
    """A paho-mqtt client speaking MQTT 5, driven by hand: `pump` calls its `loop()`, so no
    network thread runs. The callbacks only record what the broker did."""

    def __init__(
        self,
        broker: Broker,
        *,
        client_id: str = "",
        username: str | None = None,
        password: str | None = None,
        context: ssl.SSLContext | None = None,
    ) -> None:
        self._broker = broker
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        if username is not None:
            self.client.username_pw_set(username, password)
        if context is not None:
            self.client.tls_set_context(context)
        self.connack: ReasonCode | None = None
        self.session_present = False
        self.disconnected = False
        self.told_why = False  # the connection ended with a DISCONNECT packet from the broker
        self.messages: list[mqtt.MQTTMessage] = []
        self._acked: set[int] = set()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = lambda _client, _data, message: self.messages.append(message)
        self.client.on_subscribe = lambda _client, _data, mid, *_: self._acked.add(mid)
        self.client.on_publish = lambda _client, _data, mid, *_: self._acked.add(mid)

    def connect(self, session_expiry: int = 0) -> ReasonCode | None:
        """The CONNACK's reason code, or None if the broker closed the connection before one.
        With `session_expiry` (seconds) the session is resumed and outlives the connection."""
        properties = Properties(mqtt.PacketTypes.CONNECT)
        properties.SessionExpiryInterval = session_expiry
        self.client.connect(
            self._broker.host, self._broker.port, clean_start=session_expiry == 0, properties=properties
        )
        return self._await_connack()

    def reconnect(self) -> ReasonCode | None:
        self.connack, self.disconnected = None, False
        self.client.reconnect()
        return self._await_connack()

    def subscribe(self, topic_filter: str) -> None:
        self._await_ack(self.client.subscribe(topic_filter, qos=1)[1])

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self._await_ack(self.client.publish(topic, payload, qos=1, retain=retain).mid)

    def pump(self, until: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not until():
            assert time.monotonic() < deadline, f"no {what} within {TIMEOUT} s"
            if self.client.loop(timeout=0.01) == mqtt.MQTT_ERR_NO_CONN:
                time.sleep(0.01)  # loop() returns at once without a connection

    def close(self) -> None:
        self.client.disconnect()
        if (sock := self.client.socket()) is not None:
            sock.close()

    def _await_connack(self) -> ReasonCode | None:
        self.pump(lambda: self.connack is not None or self.disconnected, "CONNACK")
        return self.connack

    def _await_ack(self, mid: int) -> None:
        self.pump(lambda: mid in self._acked, f"acknowledgement of message {mid}")

    def _on_connect(self, _client: Any, _data: Any, flags: mqtt.ConnectFlags, reason: ReasonCode, *_: Any) -> None:
        self.connack, self.session_present = reason, flags.session_present

    def _on_disconnect(self, _client: Any, _data: Any, flags: mqtt.DisconnectFlags, *_: Any) -> None:
        self.disconnected, self.told_why = True, flags.is_disconnect_packet_from_server


@pytest.fixture
def probes() -> Iterator[Callable[..., Probe]]:
    """Makes probes (arguments as `Probe`'s) and closes them all after the test."""
    made: list[Probe] = []

    def make(broker: Broker, **options: Any) -> Probe:
        made.append(Probe(broker, **options))
        return made[-1]

    yield make
    for probe in made:
        probe.close()


def tls_context(broker: Broker, *, client_cert: bool = False, version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    """A client's TLS settings: trust the broker's CA; present the client certificate if asked;
    offer only TLS `version` if given."""
    assert broker.tls is not None
    context = ssl.create_default_context(cafile=broker.tls.ca_file)
    if client_cert:
        context.load_cert_chain(broker.tls.client_cert, broker.tls.client_key)
    if version is not None:
        context.minimum_version = context.maximum_version = version
    return context


def refused_handshake(broker: Broker, context: ssl.SSLContext) -> ssl.SSLError:
    """The error of a TLS connection that the broker refuses, from a bare handshake and one
    read (TLS 1.3 delivers some refusals after the client's side of the handshake). Not paho:
    paho 2.2 leaves the socket of a failed handshake unclosed (a ResourceWarning)."""
    with socket.create_connection((broker.host, broker.port), timeout=TIMEOUT) as raw:
        with pytest.raises(ssl.SSLError) as refusal, context.wrap_socket(raw, server_hostname=broker.host) as tls:
            tls.recv(1)
    return refusal.value


def retained(probe: Probe) -> list[bytes]:
    """The retained payloads under plant/ that `probe` receives on subscribing. A marker
    published after the subscription arrives after them, so no test waits on a timeout to
    learn that nothing came."""
    assert probe.connect() == "Success"
    probe.subscribe("plant/#")
    probe.publish("plant/marker", b"marker")
    probe.pump(lambda: any(message.payload == b"marker" for message in probe.messages), "marker")
    return [message.payload for message in probe.messages if message.retain]


def test_anonymous_clients_publish_and_subscribe(mqtt_brokers: BrokerFarm, probes: Callable[..., Probe]) -> None:
    broker = mqtt_brokers.start()
    assert broker.url == f"mqtt://127.0.0.1:{broker.port}"
    probe = probes(broker)
    assert probe.connect() == "Success"
    probe.subscribe("plant/#")
    probe.publish("plant/line1/temperature", b"21.5")
    probe.pump(lambda: bool(probe.messages), "message")
    assert [(message.topic, message.payload) for message in probe.messages] == [("plant/line1/temperature", b"21.5")]


def test_users_need_their_password(mqtt_brokers: BrokerFarm, probes: Callable[..., Probe]) -> None:
    broker = mqtt_brokers.start(BrokerSpec(allow_anonymous=False, users={"edge": "pass:word"}))
    assert probes(broker, username="edge", password="pass:word").connect() == "Success"
    # mosquitto 2.0 answers a wrong password with 135 "Not authorized", not 134 "Bad user name or password"
    assert probes(broker, username="edge", password="wrong").connect() == "Not authorized"
    assert probes(broker).connect() == "Not authorized"

    port = broker.port
    broker.restart(allow_anonymous=True)  # same port, new rules
    assert broker.port == port
    assert probes(broker).connect() == "Success"


def test_tls_clients_trust_the_broker_through_its_ca(mqtt_brokers: BrokerFarm, probes: Callable[..., Probe]) -> None:
    broker = mqtt_brokers.start(BrokerSpec(tls=True))
    assert broker.url == f"mqtts://127.0.0.1:{broker.port}"
    assert probes(broker, context=tls_context(broker)).connect() == "Success"
    refusal = refused_handshake(broker, ssl.create_default_context())  # the system's CAs only
    assert isinstance(refusal, ssl.SSLCertVerificationError)
    # the certificate names localhost too, for clients configured with a host name
    with socket.create_connection((broker.host, broker.port), timeout=TIMEOUT) as raw:
        tls_context(broker).wrap_socket(raw, server_hostname="localhost").close()


def test_mutual_tls_needs_the_client_certificate(mqtt_brokers: BrokerFarm, probes: Callable[..., Probe]) -> None:
    broker = mqtt_brokers.start(BrokerSpec(tls=True, require_certificate=True))
    # with TLS 1.3 the client's side of the handshake completes before the broker asks for
    # a certificate: paho sees the refusal as a connection closed before any CONNACK
    assert probes(broker, context=tls_context(broker, version=ssl.TLSVersion.TLSv1_3)).connect() is None
    assert "peer did not return a certificate" in broker.log.read_text()
    # with TLS 1.2 the handshake itself fails
    refusal = refused_handshake(broker, tls_context(broker, version=ssl.TLSVersion.TLSv1_2))
    assert refusal.reason == "SSLV3_ALERT_HANDSHAKE_FAILURE"

    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        context = tls_context(broker, client_cert=True, version=version)
        assert probes(broker, context=context).connect() == "Success", version


def test_killed_broker_drops_clients_and_takes_them_back_on_the_same_port(
    mqtt_brokers: BrokerFarm, probes: Callable[..., Probe]
) -> None:
    broker = mqtt_brokers.start()
    probe = probes(broker)
    assert probe.connect() == "Success"

    broker.kill()
    probe.pump(lambda: probe.disconnected, "disconnect")
    assert not probe.told_why
    with pytest.raises(ConnectionRefusedError):
        probe.reconnect()  # the outage

    broker.start()
    assert probe.reconnect() == "Success"
    probe.subscribe("plant/#")
    probe.publish("plant/line1/temperature", b"22.0")
    probe.pump(lambda: bool(probe.messages), "message after the restart")


@pytest.mark.parametrize("persistence", [True, False])
def test_retained_message_survives_an_orderly_restart_with_persistence(
    mqtt_brokers: BrokerFarm, probes: Callable[..., Probe], persistence: bool
) -> None:
    broker = mqtt_brokers.start(BrokerSpec(persistence=persistence))
    publisher = probes(broker)
    assert publisher.connect() == "Success"
    publisher.publish("plant/pump", b"on", retain=True)

    broker.stop()
    broker.start()
    assert retained(probes(broker)) == ([b"on"] if persistence else [])


def test_killed_broker_keeps_only_what_it_had_saved(mqtt_brokers: BrokerFarm, probes: Callable[..., Probe]) -> None:
    broker = mqtt_brokers.start(BrokerSpec(persistence=True))
    publisher = probes(broker)
    assert publisher.connect() == "Success"
    publisher.publish("plant/pump", b"on", retain=True)
    broker.save()
    publisher.publish("plant/pump", b"off", retain=True)
    publisher.publish("plant/valve", b"open", retain=True)

    broker.kill()  # no autosave: both later messages were acknowledged, and are lost
    broker.start()
    assert retained(probes(broker)) == [b"on"]


def test_persistent_session_keeps_queued_messages_across_a_restart(
    mqtt_brokers: BrokerFarm, probes: Callable[..., Probe]
) -> None:
    broker = mqtt_brokers.start(BrokerSpec(persistence=True))
    collector = probes(broker, client_id="collector")
    # MQTT 5 ends a session with its connection unless the client asks for a session expiry
    assert collector.connect(session_expiry=3600) == "Success"
    collector.subscribe("plant/#")
    collector.close()
    publisher = probes(broker)
    assert publisher.connect() == "Success"
    publisher.publish("plant/line1/temperature", b"23.5")  # queued for the absent collector

    broker.restart()
    collector = probes(broker, client_id="collector")
    assert collector.connect(session_expiry=3600) == "Success"
    assert collector.session_present
    collector.pump(lambda: bool(collector.messages), "queued message")
    assert collector.messages[0].payload == b"23.5"
