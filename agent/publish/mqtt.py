"""MQTT I/O: the only module that imports paho.

`MqttConnection(settings).run()` keeps one connection to the broker, reconnecting with
backoff until it is cancelled. `publish()` returns once the broker has acknowledged the
message: the only moment its caller may mark the data delivered.

paho runs without a thread: this event loop drives it through paho's socket callbacks
(as in paho's examples/loop_asyncio.py) and calls `loop_misc` every second for the
keepalive. paho's own connect looks the name up, opens TCP and does the TLS handshake in
blocking calls, which would stop the loop, and every driver with it, for up to the
connect timeout while the broker is unreachable; so the socket is opened here, with
asyncio, and handed to paho (`_Client`).

Messages in flight when a connection ends
    Every `publish()` still waiting for its acknowledgement raises `NotDelivered`, and
    paho's copies of those messages are dropped. Left alone, paho would send them again
    (DUP) after the next CONNACK, as MQTT asks of a persistent session; but the caller
    re-sends whatever was not acknowledged from its durable buffer, so paho's copies would
    only add duplicates and hold payloads in memory through an outage. A broker keeps no
    state for a QoS 1 message it received, so nothing is lost by not re-sending the same
    packet. (QoS 2 is not offered for this reason: a dropped QoS 2 message leaves its
    packet id held in the broker's session, which then discards a new message that
    reuses it.) At least once, then: a message whose PUBACK was lost arrives twice.

The in-flight window
    How many publishes await their PUBACK at once is the publisher's window. paho's
    `max_inflight_messages` is switched off (0), so paho never holds a message back in a
    queue of its own: a `publish()` is on the wire at once and its wait is the broker's.
    The one limit kept here is the broker's: an MQTT 5 broker names in its CONNACK how
    many QoS 1 messages it takes at once (Receive Maximum; 20 for Mosquitto), and paho
    does not enforce it; a `publish()` beyond it waits for a slot before it is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.publish.mqtt_settings import MqttSettings, Will

# the whole API, settings included, so that users import from one module
__all__ = ["Message", "MqttConnection", "MqttSettings", "NotDelivered", "Refused", "Will"]

NEVER_EXPIRES = 0xFFFFFFFF  # MQTT 5 session expiry: kept, as in MQTT 3.1.1, until a clean start
RECEIVE_MAXIMUM = 65535  # MQTT 5's value when a broker names none; MQTT 3.1.1 has no limit
SUBSCRIPTION_BUFFER = 1000  # messages a slow subscriber may fall behind before newer ones are dropped

log = logging.getLogger("edgeseal.mqtt")


class NotDelivered(ConnectionError):
    """The broker did not acknowledge the message: send it again later."""


class Refused(NotDelivered):
    """The broker answered with a failure reason code: a message it will not take (MQTT 5,
    e.g. not authorized for the topic) or a subscription it will not grant."""


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    retain: bool


@dataclass
class _Subscription:
    qos: int
    queue: asyncio.Queue[Message | Refused] = field(default_factory=lambda: asyncio.Queue(SUBSCRIPTION_BUFFER))
    dropped: int = 0


class _Failed(Exception):
    """A connection attempt that ended before a successful CONNACK."""


class _Client(paho.Client):
    """paho's client, connecting over a socket opened by `_open_socket`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.opened: socket.socket | None = None

    def _create_socket(self) -> socket.socket:  # paho's private hook: one reason paho is pinned below 3
        sock, self.opened = self.opened, None
        if sock is None:  # paho never reconnects by itself (reconnect_on_failure=False)
            raise ConnectionError("no socket opened for paho")
        return sock


class MqttConnection:
    """One MQTT connection, kept up by `run()`. `connected` is set while the broker has
    accepted the connection; `on_connect(session_present)`, called from `run()` after each
    successful CONNACK, tells the publisher when to (re)start from its oldest undelivered
    batch and to publish its status again."""

    def __init__(self, settings: MqttSettings, *, on_connect: Callable[[bool], None] | None = None) -> None:
        self.settings = settings
        self.connected = asyncio.Event()
        self._on_connect_hook = on_connect
        self._client = self._paho_client()
        self._window: asyncio.Semaphore | None = None  # this connection's slots; None while down
        self._acks: dict[int, asyncio.Future[None]] = {}  # publishes awaiting the broker, by packet id
        self._subscriptions: dict[str, _Subscription] = {}  # by topic filter
        self._subscribing: dict[int, str] = {}  # SUBSCRIBE packet id -> topic filter, until its SUBACK
        self._connack: asyncio.Future[bool] | None = None  # session present, or _Failed
        self._ended: asyncio.Future[str] | None = None  # why the connection ended
        self._socket_error: str | None = None  # paho's last socket error, for the reason
        self._problem: str | None = None  # the fault last logged: logged again only when it changes

    async def run(self) -> None:
        """Connects, and connects again with backoff whenever the connection fails or ends,
        until cancelled; then closes it with a DISCONNECT (so the broker drops the will)."""
        loop = asyncio.get_running_loop()
        settings = self.settings
        delay = settings.reconnect_delay
        while True:
            began = loop.time()
            try:
                await self._connection()
            except (OSError, _Failed) as failure:  # ssl.SSLError, TimeoutError and socket.gaierror are OSErrors
                self._report(_describe(failure, settings))
            if loop.time() - began > settings.reconnect_delay_max:
                delay = settings.reconnect_delay  # it ran well: the backoff starts over
            await asyncio.sleep(delay)
            # a connection that keeps ending as soon as it is up backs off like a failing one
            delay = min(delay * 2, settings.reconnect_delay_max)

    async def publish(self, topic: str, payload: bytes, *, qos: Literal[0, 1] = 1, retain: bool = False) -> None:
        """Returns once the broker has the message: its PUBACK (QoS 1), or the message
        written to the socket (QoS 0, which no broker acknowledges). Raises NotDelivered
        when not connected or when the connection ends first, Refused when the broker
        answers with a failure reason code."""
        if qos not in (0, 1):
            raise ValueError(f"qos must be 0 or 1, not {qos} (see the module's docstring)")
        window = self._window
        if window is None:
            raise NotDelivered("not connected to the MQTT broker")
        async with window:
            if window is not self._window:  # the connection ended while this waited for a slot
                raise NotDelivered("the connection to the MQTT broker ended")
            info = self._client.publish(topic, payload, qos, retain)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                raise NotDelivered(paho.error_string(info.rc))
            ack = self._acks[info.mid] = asyncio.get_running_loop().create_future()
            try:
                await ack
            finally:
                del self._acks[info.mid]

    async def subscribe(self, topic: str, qos: Literal[0, 1] = 1) -> AsyncIterator[Message]:
        """Messages matching the topic filter `topic`, until the iteration stops. The
        subscription is made again at every connection (retained messages come again then).
        A consumer more than SUBSCRIPTION_BUFFER messages behind loses the newer ones."""
        if topic in self._subscriptions:
            raise ValueError(f"already subscribed to {topic!r}")
        subscription = self._subscriptions[topic] = _Subscription(qos)
        if self.connected.is_set():
            self._subscribe(topic, qos)
        try:
            while True:
                item = await subscription.queue.get()
                if isinstance(item, Refused):
                    raise item
                yield item
        finally:
            del self._subscriptions[topic]
            if self.connected.is_set():
                self._client.unsubscribe(topic)

    # One connection, from opening the socket to its end

    async def _connection(self) -> None:
        loop = asyncio.get_running_loop()
        self._connack, self._ended = loop.create_future(), loop.create_future()
        self._socket_error = None
        try:
            async with asyncio.timeout(self.settings.connect_timeout):
                self._connect(await _open_socket(self.settings))
                session_present = await self._connack
            self._up(session_present)
            while not self._ended.done():
                await asyncio.wait([self._ended], timeout=1.0)
                self._client.loop_misc()  # keepalive: a PINGREQ when idle, the end when unanswered
            log.warning("connection to %s lost: %s; reconnecting", self.settings.url, self._ended.result())
        finally:
            self._close()
            # paho would send these again after the next CONNACK: the caller does (see the module's docstring)
            self._client.drop_out_messages()
            self._subscribing.clear()

    def _connect(self, sock: socket.socket) -> None:
        """paho takes the socket over and queues its CONNECT."""
        settings, endpoint = self.settings, self.settings.endpoint
        self._client.opened = sock
        if settings.protocol == "5":
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = 0 if settings.clean_start else NEVER_EXPIRES
            self._client.connect(
                endpoint.host,
                endpoint.port,
                settings.keepalive,
                clean_start=settings.clean_start,
                properties=properties,
            )
        else:
            self._client.connect(endpoint.host, endpoint.port, settings.keepalive)

    def _up(self, session_present: bool) -> None:
        self._problem = None
        session = "session resumed" if session_present else "new session"
        log.info("connected to %s as %s (%s)", self.settings.url, self.settings.client_id, session)
        if self._on_connect_hook is not None:
            self._on_connect_hook(session_present)

    def _close(self) -> None:
        """Ends the connection now, if there is one: with a DISCONNECT if it fits in the
        socket's buffer, else by closing the socket."""
        if self._client.socket() is None:
            return
        self._client.disconnect()
        self._client.loop_write()  # paho closes the socket once the DISCONNECT is written
        sock = cast(socket.socket | None, self._client.socket())  # the one _open_socket opened
        if sock is not None:
            with contextlib.suppress(OSError):  # already reset by the peer
                sock.shutdown(socket.SHUT_RDWR)
            self._client.loop_read()  # paho reads the end of the stream and closes the socket

    def _report(self, problem: str) -> None:
        """A failed attempt is logged when its reason differs from the last one logged."""
        if problem == self._problem:
            log.debug("still cannot connect to %s: %s", self.settings.url, problem)
            return
        self._problem = problem
        log.warning("cannot connect to %s: %s; retrying with backoff", self.settings.url, problem)

    def _subscribe(self, topic: str, qos: int) -> None:
        _, mid = self._client.subscribe(topic, qos)
        if mid is not None:  # None: not connected after all; the next connection subscribes
            self._subscribing[mid] = topic

    # The paho client and its callbacks, which paho calls in this loop: from the calls above and the socket handlers

    def _paho_client(self) -> _Client:
        settings = self.settings
        v5 = settings.protocol == "5"
        client = _Client(
            CallbackAPIVersion.VERSION2,
            client_id=settings.client_id,
            clean_session=None if v5 else settings.clean_start,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            reconnect_on_failure=False,  # no reconnecting (to try MQTT 3.1) behind our back
        )
        client.max_inflight_messages = 0  # see "The in-flight window" in the module's docstring
        if settings.username is not None:
            client.username_pw_set(settings.username, settings.password)
        if settings.will is not None:
            client.will_set(settings.will.topic, settings.will.payload, qos=1, retain=settings.will.retain)
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_socket_register_write
        client.on_socket_unregister_write = self._on_socket_unregister_write
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_log = self._on_log
        return client

    def _on_socket_open(self, client: paho.Client, _userdata: Any, sock: Any) -> None:
        asyncio.get_running_loop().add_reader(sock, self._readable, sock)

    def _on_socket_close(self, client: paho.Client, _userdata: Any, sock: Any) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(sock)
        loop.remove_writer(sock)

    def _on_socket_register_write(self, client: paho.Client, _userdata: Any, sock: Any) -> None:
        asyncio.get_running_loop().add_writer(sock, client.loop_write)

    def _on_socket_unregister_write(self, client: paho.Client, _userdata: Any, sock: Any) -> None:
        asyncio.get_running_loop().remove_writer(sock)

    def _readable(self, sock: Any) -> None:
        # Over TLS, what loop_read leaves of a record waits decrypted in the SSL object,
        # where the selector cannot see it: read on while some is pending.
        while self._client.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS:
            if not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
                break

    def _on_connect(self, client: paho.Client, _userdata: Any, flags: Any, reason: ReasonCode, properties: Any) -> None:
        assert self._connack is not None
        if reason.is_failure:  # paho closes the connection next
            hint = " (check username and password)" if reason.value in (0x86, 0x87) else ""
            self._connack.set_exception(_Failed(f"the broker refused the connection: {reason}{hint}"))
            return
        self._window = asyncio.Semaphore(getattr(properties, "ReceiveMaximum", RECEIVE_MAXIMUM))
        self.connected.set()
        for topic, subscription in self._subscriptions.items():
            self._subscribe(topic, subscription.qos)
        self._connack.set_result(flags.session_present)

    def _on_disconnect(self, client: paho.Client, _userdata: Any, flags: Any, reason: ReasonCode, _props: Any) -> None:
        assert self._connack is not None and self._ended is not None
        if flags.is_disconnect_packet_from_server:
            why = f"the broker disconnected: {reason}"
        elif reason == "Keep alive timeout":
            why = f"no answer from the broker within the keepalive ({self.settings.keepalive} s)"
        else:
            why = self._socket_error or "closed by the other end"
        self.connected.clear()
        self._window = None
        for ack in self._acks.values():
            if not ack.done():
                ack.set_exception(NotDelivered(f"connection lost before the broker acknowledged: {why}"))
        if not self._connack.done():
            self._connack.set_exception(_Failed(f"no CONNACK from the broker: {why}"))
        if not self._ended.done():
            self._ended.set_result(why)

    def _on_publish(self, client: paho.Client, _userdata: Any, mid: int, reason: ReasonCode, _props: Any) -> None:
        ack = self._acks.get(mid)
        if ack is None or ack.done():  # its publish() was cancelled
            return
        if reason.is_failure:
            ack.set_exception(Refused(f"the broker refused the message: {reason}"))
        else:
            ack.set_result(None)

    def _on_subscribe(self, client: paho.Client, _userdata: Any, mid: int, reasons: list[ReasonCode], _p: Any) -> None:
        topic = self._subscribing.pop(mid, None)
        if topic is None or topic not in self._subscriptions or not reasons[0].is_failure:
            return
        refused = Refused(f"the broker refused the subscription to {topic}: {reasons[0]}")
        self._deliver(topic, self._subscriptions[topic], refused)

    def _on_message(self, client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        received = Message(message.topic, bytes(message.payload), bool(message.retain))
        for topic, subscription in self._subscriptions.items():
            if paho.topic_matches_sub(topic, received.topic):
                self._deliver(topic, subscription, received)

    @staticmethod
    def _deliver(topic: str, subscription: _Subscription, item: Message | Refused) -> None:
        try:
            subscription.queue.put_nowait(item)
        except asyncio.QueueFull:
            subscription.dropped += 1
            if subscription.dropped == 1:
                log.warning("subscriber to %s is too slow: dropping its newest messages", topic)
            return
        if subscription.dropped:
            log.warning("subscriber to %s caught up after %d messages dropped", topic, subscription.dropped)
            subscription.dropped = 0

    def _on_log(self, client: paho.Client, _userdata: Any, level: int, text: str) -> None:
        # paho logs no secret (not the password); its socket errors are the reason a connection ended
        if level == paho.MQTT_LOG_ERR:
            self._socket_error = text
        log.debug("paho: %s", text)


async def _open_socket(settings: MqttSettings) -> socket.socket:
    """A connected socket, past the TLS handshake for mqtts://, opened without blocking the loop."""
    endpoint = settings.endpoint
    loop = asyncio.get_running_loop()
    sock = await _connect_tcp(loop, endpoint.host, endpoint.port)
    if not endpoint.tls:
        return sock
    try:
        sock = _tls_context(settings).wrap_socket(sock, server_hostname=endpoint.host, do_handshake_on_connect=False)
        await _handshake(loop, sock)
    except BaseException:
        sock.close()
        raise
    return sock


async def _connect_tcp(loop: asyncio.AbstractEventLoop, host: str, port: int) -> socket.socket:
    """A TCP connection to the first of host's addresses that takes one."""
    try:  # an IP address needs no lookup, so no thread of asyncio's resolver
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except socket.gaierror:
        addresses = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    failure: OSError | None = None
    for family, kind, proto, _, address in addresses:
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, address)
            return sock
        except OSError as error:
            sock.close()
            failure = error
        except BaseException:
            sock.close()
            raise
    assert failure is not None  # getaddrinfo raises rather than return no address
    raise failure


def _tls_context(settings: MqttSettings) -> ssl.SSLContext:
    """Made at every attempt, so that renewed certificates are used from the next connection."""
    try:
        context = ssl.create_default_context(cafile=settings.ca_file)
    except OSError as error:
        raise _Failed(f"cannot use ca_file {settings.ca_file}: {error.strerror or error}") from error
    if settings.cert_file:
        try:
            context.load_cert_chain(settings.cert_file, settings.key_file)
        except OSError as error:
            files = " and key_file ".join(filter(None, (settings.cert_file, settings.key_file)))
            raise _Failed(f"cannot use cert_file {files}: {error.strerror or error}") from error
    return context


async def _handshake(loop: asyncio.AbstractEventLoop, sock: ssl.SSLSocket) -> None:
    while True:
        try:
            sock.do_handshake()
            return
        except ssl.SSLWantReadError:
            await _ready(loop.add_reader, loop.remove_reader, sock)
        except ssl.SSLWantWriteError:
            await _ready(loop.add_writer, loop.remove_writer, sock)
        except ssl.SSLError:
            raise
        except OSError as error:  # reset or closed in the handshake: most often a port without TLS
            raise _Failed(f"TLS handshake failed: {error.strerror or error} (is it a TLS port?)") from error


async def _ready(watch: Callable[..., None], unwatch: Callable[[Any], object], sock: socket.socket) -> None:
    ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    watch(sock, _settle, ready)
    try:
        await ready
    finally:
        unwatch(sock)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():  # the selector may report the socket ready again before the waiter runs
        future.set_result(None)


def _describe(failure: OSError | _Failed, settings: MqttSettings) -> str:
    """Why a connection attempt failed, in words for the log."""
    if isinstance(failure, ssl.SSLCertVerificationError):
        where = settings.ca_file or "the system's CAs"
        return f"TLS: the broker's certificate does not verify against {where}: {failure.verify_message}"
    if isinstance(failure, ssl.SSLError):
        return f"TLS handshake failed: {failure}"
    if isinstance(failure, socket.gaierror):
        return f"cannot resolve {settings.endpoint.host}: {failure.strerror}"
    if isinstance(failure, TimeoutError):
        return f"no answer within {settings.connect_timeout:g} s"
    if isinstance(failure, ConnectionRefusedError):
        return "connection refused (is the broker running and listening on that port?)"
    if isinstance(failure, OSError):
        return failure.strerror or str(failure)
    return str(failure)
