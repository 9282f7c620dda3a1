"""Runs MqttConnections in the test's event loop, watches topics through a connection of
their own, and puts a TCP relay (`Link`) between a connection and its broker that a test
can freeze or cut: the network faults a killed broker cannot show."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from agent.publish.mqtt import Message, MqttConnection, MqttSettings

TIMEOUT = 5.0


def settings(url: str, client_id: str = "edge-1", **changes: Any) -> MqttSettings:
    """Settings with a backoff short enough for tests."""
    base = MqttSettings(url, client_id, reconnect_delay=0.05, reconnect_delay_max=0.4, connect_timeout=2.0)
    return dataclasses.replace(base, **changes)


class Running:
    """`async with Running(settings) as connection:` runs `connection.run()` for the block;
    leaving it cancels run(), which must then end promptly and by that cancellation."""

    def __init__(self, settings: MqttSettings, **options: Any) -> None:
        self.connection = MqttConnection(settings, **options)
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> MqttConnection:
        self._task = asyncio.create_task(self.connection.run())
        return self.connection

    async def __aexit__(self, *_exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        async with asyncio.timeout(TIMEOUT):
            (outcome,) = await asyncio.gather(self._task, return_exceptions=True)
        if not self._task.cancelled():
            raise AssertionError("run() ended by itself") from outcome


async def up(connection: MqttConnection, timeout: float = TIMEOUT) -> None:
    async with asyncio.timeout(timeout):
        await connection.connected.wait()


class Watcher:
    """Collects what arrives on a topic filter, through a connection of its own."""

    def __init__(self, url: str, topic: str, **changes: Any) -> None:
        self.messages: list[Message] = []
        self._running = Running(settings(url, f"watcher-{id(self):x}", clean_start=True, **changes))
        self._topic = topic
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Watcher:
        connection = await self._running.__aenter__()
        await up(connection)
        self._task = asyncio.create_task(self._collect(connection))
        await asyncio.sleep(0.2)  # the SUBACK: the broker forwards what is published from now on
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self._running.__aexit__(*exc)

    async def _collect(self, connection: MqttConnection) -> None:
        async for message in connection.subscribe(self._topic):
            self.messages.append(message)
            self._arrived.set()

    def payloads(self) -> list[bytes]:
        return [message.payload for message in self.messages]

    async def wait_for(self, count: int, timeout: float = TIMEOUT) -> None:
        async with asyncio.timeout(timeout):
            while len(self.messages) < count:
                self._arrived.clear()
                await self._arrived.wait()


class Link:
    """A TCP relay to 127.0.0.1:`port`. `freeze` stops the bytes in one direction or both
    while the connections stay open (a network black hole); `cut` ends every relayed
    connection at once, which the broker sees as a client gone without a DISCONNECT.
    Connections made after a cut flow freely again."""

    def __init__(self, port: int) -> None:
        self._target = port
        self._server: asyncio.Server | None = None
        self._port = 0
        self._relays: set[asyncio.Task[None]] = set()
        self._pairs: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self._to_broker, self._to_client = asyncio.Event(), asyncio.Event()
        self._to_broker.set()
        self._to_client.set()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self._port}"

    async def __aenter__(self) -> Link:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self._port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self.cut()
        await asyncio.gather(*self._relays)  # each ends at the cut
        await self._server.wait_closed()

    def freeze(self, *, to_broker: bool = True, to_client: bool = True) -> None:
        if to_broker:
            self._to_broker.clear()
        if to_client:
            self._to_client.clear()

    def cut(self) -> None:
        for client, broker in self._pairs:
            client.transport.abort()
            broker.transport.abort()
        self._pairs.clear()
        self._to_broker.set()
        self._to_client.set()

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        relay = asyncio.current_task()
        assert relay is not None
        self._relays.add(relay)
        relay.add_done_callback(self._relays.discard)
        try:
            broker_reader, broker_writer = await asyncio.open_connection("127.0.0.1", self._target)
        except OSError:  # the broker is down: so is the relayed connection
            client_writer.transport.abort()
            return
        self._pairs.append((client_writer, broker_writer))
        await asyncio.gather(
            self._pump(client_reader, broker_writer, self._to_broker),
            self._pump(broker_reader, client_writer, self._to_client),
        )

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, flowing: asyncio.Event) -> None:
        try:
            while data := await reader.read(65536):
                await flowing.wait()
                if writer.is_closing():
                    return
                writer.write(data)
        except ConnectionError:
            pass
        writer.transport.abort()


class RefusingBroker:
    """Just enough of an MQTT 3.1.1 and 5 broker to accept connections and refuse every
    subscription (Not authorized), as brokers with subscribe ACLs do. Mosquitto 2.0 never
    refuses one: it grants the subscription and filters what it delivers."""

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()
        self.url = ""

    async def __aenter__(self) -> RefusingBroker:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"mqtt://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._server is not None
        self._server.close()
        async with asyncio.timeout(TIMEOUT):  # each ends with its client's DISCONNECT
            await asyncio.gather(*self._clients)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = asyncio.current_task()
        assert client is not None
        self._clients.add(client)
        client.add_done_callback(self._clients.discard)
        v5 = False
        try:
            while header := await reader.read(1):
                body = await reader.readexactly(await _remaining_length(reader))
                kind = header[0] >> 4
                if kind == 1:  # CONNECT: "\0\4MQTT", then the protocol level
                    v5 = body[6] == 5
                    writer.write(bytes([0x20, 3, 0, 0, 0]) if v5 else bytes([0x20, 2, 0, 0]))
                elif kind == 8:  # SUBSCRIBE: the packet id, then the filters
                    refusal = bytes([0, 0x87]) if v5 else bytes([0x80])  # (no properties) Not authorized
                    writer.write(bytes([0x90, 2 + len(refusal)]) + body[:2] + refusal)
                elif kind == 12:  # PINGREQ
                    writer.write(bytes([0xD0, 0]))
                elif kind == 14:  # DISCONNECT
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()


async def _remaining_length(reader: asyncio.StreamReader) -> int:
    value, shift = 0, 0
    while True:
        byte = (await reader.readexactly(1))[0]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value
        shift += 7
