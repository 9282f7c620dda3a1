"""`edgeseal watch` against a real Mosquitto broker: batch messages made by the real
sealer are published as the agent publishes them (the certificate retained, batches and
checkpoints at QoS 1), and the watch, run as a subprocess, prints one line per event and
exits 0, or 1 with findings. Bad usage and an unreachable broker exit 2 (run in-process)."""

from __future__ import annotations

import asyncio
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_runner import Result, in_process
from cryptography.hazmat.primitives.serialization import Encoding
from mqtt_broker import Broker, BrokerFarm, free_port
from sealed_stream import Device

from agent.buffer.store import Buffer
from agent.publish.mqtt import MqttConnection, MqttSettings
from agent.publish.publisher import Identity, Publisher, Topics
from agent.trust.bundle import Batch, decode_batch

PREFIX = "edgeseal/v1/stream-gw-1"
TIMEOUT = 15.0
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def device(tmp_path_factory: pytest.TempPathFactory) -> Device:
    """b 1..4 (seq 1..12) and a checkpoint of size 4."""
    device = Device.make(tmp_path_factory.mktemp("device"))
    device.boot(4)
    return device


class Watch:
    """A watching subprocess (`edgeseal watch`, or the Python consumer in docs/mqtt.md), its
    output read line by line as it comes."""

    def __init__(self, command: list[str], cwd: Path = REPO) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
        )
        self.lines: list[str] = []
        self._pending = b""

    @classmethod
    def edgeseal(cls, broker: Broker, device: Device, *options: str) -> Watch:
        command = [sys.executable, "-m", "agent.cli", "watch", "--mqtt", broker.url, "--topic", PREFIX]
        return cls([*command, "--ca", str(device.directory / "ca.pem"), *options])

    def read_until(self, start: str) -> list[str]:
        """Lines up to the first that starts with `start`."""
        assert self.process.stdout is not None
        deadline = time.monotonic() + TIMEOUT
        while not any(line.startswith(start) for line in self.lines):
            assert time.monotonic() < deadline, f"no line starting {start!r} within {TIMEOUT} s: {self.lines}"
            ready, _, _ = select.select([self.process.stdout], [], [], 0.1)
            if ready:
                chunk = os.read(self.process.stdout.fileno(), 65536)
                assert chunk, f"the watch ended: {self.lines}; stderr: {self._stderr()}"
                *complete, self._pending = (self._pending + chunk).split(b"\n")
                self.lines += [line.decode() for line in complete]
        return self.lines

    def end(self) -> tuple[int, list[str], str]:
        """Exit code, every line of stdout, and stderr, once it has ended."""
        out, err = self.process.communicate(timeout=TIMEOUT)
        lines = self.lines + (self._pending + out).decode().splitlines()
        return self.process.returncode, lines, err.decode()

    def _stderr(self) -> str:
        self.process.kill()
        return self.process.communicate()[1].decode()


def publish(broker: Broker, *messages: tuple[str, bytes]) -> None:
    """Publishes as the agent does: QoS 1, in order, over one connection; the certificate
    and the status retained."""

    async def run() -> None:
        connection = MqttConnection(MqttSettings(url=broker.url, client_id="test-agent", clean_start=True))
        runner = asyncio.create_task(connection.run())
        try:
            await asyncio.wait_for(connection.connected.wait(), TIMEOUT)
            for topic, payload in messages:
                retain = topic in ("cert", "status")
                await connection.publish(f"{PREFIX}/{topic}", payload, retain=retain)
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)

    asyncio.run(run())


@pytest.fixture
def broker(mqtt_brokers: BrokerFarm) -> Broker:
    return mqtt_brokers.start()


def test_every_batch_verified_a_duplicate_and_the_checkpoint(broker: Broker, device: Device) -> None:
    b1, b2, b3, b4 = device.messages()
    status = json.dumps({"state": "online"}).encode()
    publish(broker, ("cert", device.cert_message), ("status", status))
    watch = Watch.edgeseal(broker, device, "--count", "5")
    watch.read_until("certificate stream-gw-1")  # the retained certificate: the watch is subscribed
    publish(broker, ("batch", b1), ("batch", b2), ("batch", b2), ("batch", b3))
    publish(broker, ("checkpoint", device.checkpoints()[-1]), ("batch", b4))
    code, lines, err = watch.end()
    assert code == 0, (lines, err)
    assert "Traceback" not in err
    assert lines[1:] == [
        "b=1 verified: seq 1..3, 3 readings, boot 1",
        "b=2 verified: seq 4..6, 3 readings, boot 1",
        "duplicate of b=2",
        "b=3 verified: seq 7..9, 3 readings, boot 1",
        "checkpoint size=4 verified: its root is compared once seals up to b=4 arrive",
        "b=4 verified: seq 10..12, 3 readings, boot 1",
        "checkpoint size=4 verified: its root matches the seals b 1..4 received",
        "summary: VALID: 4 batches verified (b=1..4, boots 1), 12 readings; 1 duplicate, "
        "0 dropped undelivered (signed), 1 checkpoint; 0 findings",
    ]


def test_what_the_agents_publisher_sends_verifies(broker: Broker, device: Device) -> None:
    """The agent's own Publisher, from the state directory the pipeline sealed into."""
    publish(broker, ("cert", device.cert_message))
    watch = Watch.edgeseal(broker, device, "--count", "4")
    watch.read_until("certificate")
    _run_publisher(broker, device, batches=4)
    code, lines, err = watch.end()
    assert code == 0, (lines, err)
    verified = [line.split(":")[0] for line in lines if line.startswith("b=")]
    assert verified == [f"b={b} verified" for b in (1, 2, 3, 4)]  # the checkpoint may come between them
    assert lines[-1].startswith("summary: VALID: 4 batches verified")


def test_a_tampered_batch_and_a_missing_one_are_findings_in_json(broker: Broker, device: Device) -> None:
    b1, b2, _, b4 = device.messages()
    publish(broker, ("cert", device.cert_message))
    watch = Watch.edgeseal(broker, device, "--count", "3", "--json")
    watch.read_until('{"event": "certificate"')
    publish(broker, ("batch", b1), ("batch", _tampered(b2)), ("batch", b4))
    code, lines, err = watch.end()
    assert code == 1, (lines, err)
    events = [json.loads(line) for line in lines]
    assert [e["event"] for e in events] == ["certificate", "batch", "finding", "batch", "missing", "finding", "summary"]
    assert events[4] == {"event": "missing", "first_b": 2, "last_b": 3, "seqs": [4, 9]}
    found = [(e["where"], e["message"]) for e in events if e["event"] == "finding"]
    assert found == [
        ("b=2", "readings do not hash to the sealed root"),
        ("b=2..3", "missing: never received; no drop record names their seqs 4..9"),
    ]
    assert events[-1]["valid"] is False and events[-1]["findings"] == 2


def test_ctrl_c_ends_the_watch_with_its_summary(broker: Broker, device: Device) -> None:
    b1, _, b3, _ = device.messages()
    publish(broker, ("cert", device.cert_message))
    watch = Watch.edgeseal(broker, device)
    watch.read_until("certificate")
    publish(broker, ("batch", b1), ("batch", b3))
    watch.read_until("missing b=2")
    watch.process.send_signal(signal.SIGINT)
    code, lines, err = watch.end()
    assert code == 1 and "Traceback" not in err
    assert lines[-2:] == [
        "FINDING b=2: missing: never received; no drop record names their seqs 4..6",
        "summary: INVALID: 2 batches verified (b=1..3, boots 1), 6 readings; 0 duplicates, "
        "0 dropped undelivered (signed), 0 checkpoints; 1 finding",
    ]


def test_the_python_consumer_in_the_docs_works(broker: Broker, device: Device) -> None:
    """docs/mqtt.md's paho-mqtt snippet, run as written but for the broker and the device."""
    text = (REPO / "docs" / "mqtt.md").read_text()
    snippet = text.split("## Checking a stream from Python")[1].split("```python\n")[1].split("```")[0]
    snippet = snippet.replace("edgeseal/v1/GW-000123", PREFIX).replace(
        '"broker.example", 1883', f"{broker.host!r}, {broker.port}"
    )
    b1, b2, b3, _ = device.messages()
    publish(broker, ("cert", device.cert_message))
    consumer = Watch([sys.executable, "-u", "-c", snippet], cwd=device.directory)  # its ca.pem is there
    consumer.read_until("certificate")
    publish(broker, ("batch", b1), ("batch", b2), ("batch", b2), ("batch", b3))
    consumer.read_until("b=3 verified")
    consumer.process.send_signal(signal.SIGINT)
    _, lines, err = consumer.end()
    assert "Traceback" not in err
    assert lines[1:] == [
        "b=1 verified: seq 1..3, 3 readings, boot 1",
        "b=2 verified: seq 4..6, 3 readings, boot 1",
        "duplicate of b=2",
        "b=3 verified: seq 7..9, 3 readings, boot 1",
        "summary: VALID: 3 batches verified (b=1..3, boots 1), 9 readings; 1 duplicate, "
        "0 dropped undelivered (signed), 0 checkpoints; 0 findings",
    ]


def test_bad_usage_and_an_unreachable_broker_exit_2(
    capsys: pytest.CaptureFixture[str], device: Device, tmp_path: Path
) -> None:
    watch: Callable[..., Result] = in_process(capsys, "watch")
    ca = str(device.directory / "ca.pem")
    unreachable = f"mqtt://127.0.0.1:{free_port()}"
    cases: dict[str, tuple[list[str | Path], str]] = {
        "no CA file": (["--mqtt", unreachable, "--topic", PREFIX, "--ca", tmp_path / "none.pem"], "cannot read"),
        "bad URL": (["--mqtt", "http://127.0.0.1", "--topic", PREFIX, "--ca", ca], "expected an mqtt://"),
        "TLS files without TLS": (
            ["--mqtt", unreachable, "--topic", PREFIX, "--ca", ca, "--tls-ca", ca],
            "need an mqtts:// URL",
        ),
        "an unreadable TLS file": (
            ["--mqtt", "mqtts://127.0.0.1", "--topic", PREFIX, "--ca", ca, "--tls-ca", tmp_path / "none.pem"],
            "cannot read",
        ),
        "a wildcard prefix": (["--mqtt", unreachable, "--topic", "edgeseal/#", "--ca", ca], "without wildcards"),
        "unset password": (
            ["--mqtt", unreachable, "--topic", PREFIX, "--ca", ca, "--username", "u", "--password-env", "NO_SUCH_VAR"],
            "NO_SUCH_VAR is not set",
        ),
        "no broker there": (
            ["--mqtt", unreachable, "--topic", PREFIX, "--ca", ca, "--seconds", "1"],
            "never connected",
        ),
    }
    for name, (argv, expected) in cases.items():
        result = watch(*argv)
        assert result.code == 2, (name, result)
        assert "Traceback" not in result.err and expected in result.err, (name, result.err)
        assert result.out == "", name


def _tampered(message: bytes) -> bytes:
    batch = decode_batch(message)
    first = batch.readings[0][:-1] + bytes([batch.readings[0][-1] ^ 1])
    return Batch(batch.seal, batch.salt_key, [first, *batch.readings[1:]]).encode()


def _run_publisher(broker: Broker, device: Device, batches: int) -> None:
    """Runs the agent's Publisher over a copy of the device's state until it has `batches`
    acknowledged: the device's own buffer stays undelivered for the other tests."""
    state = device.directory / f"published-{broker.port}"
    shutil.copytree(device.directory / "state", state)

    async def run() -> None:
        buffer = Buffer.open(state)
        connection = MqttConnection(MqttSettings(url=broker.url, client_id="edgeseal-stream-gw-1", clean_start=True))
        chain = [c.public_bytes(Encoding.DER) for c in device.signer.certificate_chain]
        publisher = Publisher(
            buffer, connection, Topics(PREFIX), Identity(device.device_id, "test", 1, chain), max_in_flight=2,
            drain_rate=100,
        )  # fmt: skip
        tasks = [asyncio.create_task(connection.run()), asyncio.create_task(publisher.run())]
        try:
            async with asyncio.timeout(TIMEOUT):
                while publisher.published < batches:
                    await asyncio.sleep(0.05)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            buffer.close()

    asyncio.run(run())
