"""MqttConnection against real Mosquitto brokers: a publish returns on the broker's
acknowledgement; publishes in flight when the connection ends raise NotDelivered, in
bounded time, and nobody but the caller sends them again; the connection comes back
with the broker; TLS, mutual TLS and refused logins are logged once, with their reason;
the last will is published on an unclean end, not on a clean one."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest
from driver_harness import in_new_loop
from mqtt_broker import BrokerFarm, BrokerSpec
from mqtt_harness import Link, RefusingBroker, Running, Watcher, settings, up

from agent.publish import mqtt
from agent.publish.mqtt import NotDelivered, Refused, Will

LOGGER = "edgeseal.mqtt"


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


def assert_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
@in_new_loop
async def test_publish_returns_once_acknowledged(mqtt_brokers: BrokerFarm, protocol: str) -> None:
    broker = mqtt_brokers.start()
    threads = threading.active_count()
    async with Watcher(broker.url, "edge/#") as watcher, Running(settings(broker.url, protocol=protocol)) as connection:
        await up(connection)
        assert threading.active_count() == threads, "paho runs in the event loop, with no thread"
        await connection.publish("edge/batches", b"batch 1")
        await connection.publish("edge/status", b"online", retain=True)
        await connection.publish("edge/live", b"21.5", qos=0)  # returns once written: no broker acks QoS 0
        await watcher.wait_for(3)
        assert watcher.payloads() == [b"batch 1", b"online", b"21.5"]


@in_new_loop
async def test_broker_killed_mid_flight_then_back(mqtt_brokers: BrokerFarm, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, LOGGER)
    broker = mqtt_brokers.start()
    async with Running(settings(broker.url)) as connection:
        await up(connection)

        async def send() -> str:
            try:
                await connection.publish("edge/batches", bytes(64 * 1024))
            except NotDelivered:
                return "not delivered"
            return "acknowledged"

        sending = [asyncio.create_task(send()) for _ in range(200)]  # more than Mosquitto's Receive Maximum (20)
        await asyncio.wait(sending, return_when=asyncio.FIRST_COMPLETED)
        broker.kill()
        async with asyncio.timeout(2):  # no publish hangs: each one is settled at the loss
            outcomes = await asyncio.gather(*sending)
        assert {"acknowledged", "not delivered"} == set(outcomes)
        assert not connection.connected.is_set()
        with pytest.raises(NotDelivered, match="not connected"):
            await connection.publish("edge/batches", b"while down")

        await asyncio.sleep(1.0)  # several attempts, against a closed port
        assert sum("still cannot connect" in r.getMessage() for r in caplog.records) >= 2
        broker.start()
        await up(connection)
        await connection.publish("edge/batches", b"after the outage")

    lost, refused = warnings(caplog)  # one line each, however many attempts
    assert lost.startswith(f"connection to {broker.url} lost: ")  # a reset or an end of stream: a race
    assert refused == (
        f"cannot connect to {broker.url}: connection refused (is the broker running and listening on that port?);"
        " retrying with backoff"
    )
    assert_no_traceback(caplog)


@in_new_loop
async def test_silent_link_fails_publishes_within_twice_the_keepalive(
    mqtt_brokers: BrokerFarm, caplog: pytest.LogCaptureFixture
) -> None:
    broker = mqtt_brokers.start()
    async with Link(broker.port) as link, Running(settings(link.url, keepalive=1)) as connection:
        await up(connection)
        link.freeze()  # no RST, no FIN: only the keepalive notices
        loop = asyncio.get_running_loop()
        began = loop.time()
        with pytest.raises(NotDelivered, match="within the keepalive"):
            await connection.publish("edge/batches", b"into the void")
        # silence for a keepalive, then a PINGREQ unanswered for another, each seen at loop_misc's 1 s tick
        assert loop.time() - began < 2 * 1 + 2 + 0.5
    assert f"connection to {link.url} lost: no answer from the broker within the keepalive (1 s)" in warnings(caplog)[0]


@in_new_loop
async def test_message_whose_puback_is_lost_is_sent_again_only_by_the_caller(mqtt_brokers: BrokerFarm) -> None:
    """The broker has the message but its PUBACK is lost with the connection: publish()
    raises NotDelivered; the persistent session is resumed, yet paho does not send the
    message again by itself (see test_paho_alone_would_send_it_again); the caller does,
    and the duplicate is the price of losing nothing."""
    broker = mqtt_brokers.start()
    sessions: list[bool] = []
    async with Link(broker.port) as link, Watcher(broker.url, "edge/batches") as watcher:
        async with Running(settings(link.url), on_connect=sessions.append) as connection:
            await up(connection)
            link.freeze(to_broker=False)  # PUBACKs stop in the link
            sending = asyncio.create_task(connection.publish("edge/batches", b"batch 7"))
            await watcher.wait_for(1)  # the broker has it
            link.cut()
            with pytest.raises(NotDelivered, match="connection lost before the broker acknowledged"):
                await sending
            await up(connection)
            await asyncio.sleep(1.0)  # time for paho to send it again, if it did
            assert sessions == [False, True], "the broker kept the session"
            assert watcher.payloads() == [b"batch 7"]
            await connection.publish("edge/batches", b"batch 7")
            await watcher.wait_for(2)
            assert watcher.payloads() == [b"batch 7", b"batch 7"]


@in_new_loop
async def test_paho_alone_would_send_it_again(mqtt_brokers: BrokerFarm, monkeypatch: pytest.MonkeyPatch) -> None:
    """Why MqttConnection drops paho's copies at a loss: without that, paho sends every
    unacknowledged message again after the next CONNACK, on top of the caller's copy."""
    monkeypatch.setattr(mqtt._Client, "drop_out_messages", lambda _client: [])
    broker = mqtt_brokers.start()
    async with Link(broker.port) as link, Watcher(broker.url, "edge/batches") as watcher:
        async with Running(settings(link.url)) as connection:
            await up(connection)
            link.freeze(to_broker=False)
            sending = asyncio.create_task(connection.publish("edge/batches", b"batch 7"))
            await watcher.wait_for(1)
            link.cut()
            with pytest.raises(NotDelivered):
                await sending
            await watcher.wait_for(2)  # paho's own DUP copy, after the reconnect
            assert watcher.payloads() == [b"batch 7", b"batch 7"]


@in_new_loop
async def test_tls_checks_the_broker_against_the_ca_file(
    mqtt_brokers: BrokerFarm, caplog: pytest.LogCaptureFixture
) -> None:
    broker = mqtt_brokers.start(BrokerSpec(tls=True))
    assert broker.tls is not None
    async with Running(settings(broker.url, ca_file=str(broker.tls.ca_file))) as connection:
        await up(connection)
        await connection.publish("edge/batches", b"over TLS")
    async with Running(settings(broker.url)) as connection:  # the system's CAs do not know the test CA
        await asyncio.sleep(1.0)
        assert not connection.connected.is_set()
    assert warnings(caplog) == [
        f"cannot connect to {broker.url}: TLS: the broker's certificate does not verify against the system's CAs:"
        " self-signed certificate in certificate chain; retrying with backoff"
    ]


@in_new_loop
async def test_mutual_tls(mqtt_brokers: BrokerFarm, caplog: pytest.LogCaptureFixture) -> None:
    broker = mqtt_brokers.start(BrokerSpec(tls=True, require_certificate=True))
    assert broker.tls is not None
    trusted = settings(broker.url, ca_file=str(broker.tls.ca_file))
    client_cert, client_key = str(broker.tls.client_cert), str(broker.tls.client_key)
    async with Running(settings(broker.url, ca_file=trusted.ca_file, cert_file=client_cert, key_file=client_key)) as c:
        await up(c)
        await c.publish("edge/batches", b"over mutual TLS")
    async with Running(trusted) as connection:
        await asyncio.sleep(1.0)
        assert not connection.connected.is_set()
    (warning,) = warnings(caplog)
    assert "no CONNACK from the broker" in warning and "certificate required" in warning
    assert_no_traceback(caplog)


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
@in_new_loop
async def test_refused_login_is_logged_once_and_retried(
    mqtt_brokers: BrokerFarm, caplog: pytest.LogCaptureFixture, protocol: str
) -> None:
    broker = mqtt_brokers.start(BrokerSpec(allow_anonymous=False, users={"edge": "correct horse"}))
    login = settings(broker.url, protocol=protocol, username="edge", password="battery staple")
    async with Running(login) as connection:
        await asyncio.sleep(1.0)
        assert not connection.connected.is_set()
        attempts = broker.log.read_text().count("not authorised")
        broker.restart(users={"edge": "battery staple"})  # the broker learns the new password
        await up(connection)
    assert attempts >= 3
    assert warnings(caplog) == [
        f"cannot connect to {broker.url}: the broker refused the connection: Not authorized"
        " (check username and password); retrying with backoff"
    ]
    assert "battery staple" not in caplog.text and "battery staple" not in repr(login)


@in_new_loop
async def test_last_will_on_an_unclean_end_not_on_a_clean_one(mqtt_brokers: BrokerFarm) -> None:
    broker = mqtt_brokers.start()
    async with Link(broker.port) as link, Watcher(broker.url, "edge/status") as watcher:
        with_will = settings(link.url, will=Will("edge/status", b"offline"))
        async with Running(with_will) as connection:
            await up(connection)
            link.cut()  # the client is gone without a DISCONNECT, as when the gateway dies
            await watcher.wait_for(1)
            assert watcher.payloads() == [b"offline"]
            await up(connection)
        # leaving Running cancelled run(), which sent a DISCONNECT: no will this time
        await asyncio.sleep(0.5)
        assert watcher.payloads() == [b"offline"]
    assert "Client edge-1 disconnected." in broker.log.read_text()


@in_new_loop
async def test_cancelled_while_the_broker_does_not_answer(
    mqtt_brokers: BrokerFarm, caplog: pytest.LogCaptureFixture
) -> None:
    broker = mqtt_brokers.start()
    async with Link(broker.port) as link:
        link.freeze()  # TCP connects (to the link), no CONNACK comes
        async with Running(settings(link.url, connect_timeout=0.5)) as connection:
            await asyncio.sleep(0.8)
            assert not connection.connected.is_set()
        # Running's exit checked that run() ended promptly on its cancellation
    assert warnings(caplog) == [f"cannot connect to {link.url}: no answer within 0.5 s; retrying with backoff"]


@in_new_loop
async def test_refused_message_leaves_the_connection_up(mqtt_brokers: BrokerFarm) -> None:
    broker = mqtt_brokers.start()
    async with Running(settings(broker.url)) as connection:  # MQTT 5: a PUBACK has a reason code
        await up(connection)
        with pytest.raises(Refused, match="the broker refused the message: Not authorized"):
            await connection.publish("$SYS/edge", b"clients may not publish here")
        assert connection.connected.is_set()
        await connection.publish("edge/batches", b"still fine")


@in_new_loop
async def test_subscription_is_made_again_when_the_broker_forgot_it(mqtt_brokers: BrokerFarm) -> None:
    broker = mqtt_brokers.start()  # no persistence: a restarted broker has no sessions
    async with Watcher(broker.url, "edge/#") as watcher, Running(settings(broker.url)) as connection:
        await up(connection)
        broker.kill()
        broker.start()
        await up(connection)
        await asyncio.sleep(0.5)  # both connections back, the watcher's SUBSCRIBE answered
        await connection.publish("edge/batches", b"after the restart")
        await watcher.wait_for(1)
        assert watcher.payloads() == [b"after the restart"]


@in_new_loop
async def test_slow_subscriber_loses_the_newest_messages_with_a_warning(
    mqtt_brokers: BrokerFarm, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mqtt, "SUBSCRIPTION_BUFFER", 3)
    broker = mqtt_brokers.start()
    async with Running(settings(broker.url)) as connection:
        await up(connection)
        messages = connection.subscribe("edge/#")
        first = asyncio.create_task(anext(messages))  # subscribes, then nobody reads for a while
        await asyncio.sleep(0.2)
        for number in range(6):
            await connection.publish("edge/batches", bytes([number]))
        await asyncio.sleep(0.2)
        kept = [(await first).payload] + [(await anext(messages)).payload for _ in range(3)]
        assert kept == [bytes([0]), bytes([1]), bytes([2]), bytes([3])]
        await connection.publish("edge/batches", b"caught up")
        assert (await anext(messages)).payload == b"caught up"
        await messages.aclose()
    assert warnings(caplog) == [
        "subscriber to edge/# is too slow: dropping its newest messages",
        "subscriber to edge/# caught up after 2 messages dropped",
    ]


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
@in_new_loop
async def test_refused_subscription_ends_the_iteration(protocol: str) -> None:
    async with RefusingBroker() as broker, Running(settings(broker.url, protocol=protocol)) as connection:
        await up(connection)
        with pytest.raises(Refused, match="the broker refused the subscription to plant/#: "):
            async with asyncio.timeout(5):
                async for _message in connection.subscribe("plant/#"):
                    pass
        assert connection.connected.is_set()
