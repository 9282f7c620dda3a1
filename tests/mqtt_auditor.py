"""An auditor's MQTT subscription for the promise suites: a persistent session (it
survives the broker's and the agent's restarts) counting every batch message by `b`."""

from __future__ import annotations

import threading
from collections import Counter

import paho.mqtt.client as paho
from mqtt_broker import Broker

from agent.trust import cbor
from agent.trust.payloads import open_seal


class Subscriber:
    """Every batch message the broker accepted for `device`, counted by `b`, in arrival order."""

    def __init__(self, broker: Broker, device: str) -> None:
        self.received: Counter[int] = Counter()
        self.order: list[int] = []
        self.seals: dict[int, bytes] = {}  # the first seal received for each b
        self._lock = threading.Lock()
        self._client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="auditor", clean_session=False)
        self._client.on_connect = lambda client, *_: client.subscribe(f"edgeseal/v1/{device}/batch", qos=1)
        self._client.on_message = self._on_message
        host, port = broker.url.removeprefix("mqtt://").rsplit(":", 1)
        self._client.connect(host, int(port))
        self._client.loop_start()

    def _on_message(self, _client: paho.Client, _userdata: object, message: paho.MQTTMessage) -> None:
        seal = cbor.decode(message.payload)["seal"]
        b = open_seal(seal)[1].b
        with self._lock:
            self.received[b] += 1
            self.order.append(b)
            self.seals.setdefault(b, seal)

    def numbers(self) -> Counter[int]:
        with self._lock:
            return Counter(self.received)

    def seen(self) -> dict[int, bytes]:
        with self._lock:
            return dict(self.seals)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
