"""Real OPC UA servers for tests: each one is tests/opcua_server.py (asyncua) in a process of
its own, built from a `ServerSpec`, so that a test can SIGKILL it at any moment and start it
again on the same port, as the driver would see a PLC crash or reboot.

Use the `opcua_servers` fixture, a `ServerFarm` that kills everything it started:

    server = opcua_servers.start(ServerSpec(variables=(Variable("Temp", value=21.5),)))
    async with Client(server.url) as client:
        await server.set_alarm(client, "HighTemp", True)  # needs Alarm("HighTemp") in the spec
    server.restart(shift=3)  # same port, every namespace index moved by 3

`make_certificate` writes a server (or client) certificate and key for the secured endpoints.
The farm runs no thread: it awaits the READY line with select() on the child's stdout.
The spec's dataclasses come from opcua_server.py and are re-exported here.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, ua
from asyncua.crypto import cert_gen
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID
from opcua_server import APPLICATION_URI, EVENT_FIELDS, EVENT_TYPE, Alarm, Bulk, ServerSpec, Variable

__all__ = [
    "APPLICATION_URI",
    "EVENT_FIELDS",
    "EVENT_TYPE",
    "Alarm",
    "Bulk",
    "CertificateFiles",
    "OpcUaServer",
    "ServerFarm",
    "ServerSpec",
    "Variable",
    "make_certificate",
]

SCRIPT = Path(__file__).with_name("opcua_server.py")
STARTUP_TIMEOUT = 30.0  # a bulk of 10,000 variables takes a few seconds to build


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclasses.dataclass(frozen=True)
class CertificateFiles:
    certificate: Path  # DER
    private_key: Path  # PEM, unencrypted


def make_certificate(directory: Path, name: str = "server", application_uri: str = APPLICATION_URI) -> CertificateFiles:
    """A self-signed OPC UA application certificate (RSA 2048, SHA-256) with subjectAltName
    URI `application_uri`, DNS localhost and IP 127.0.0.1, written to `directory` as
    `<name>.der` and `<name>.pem` (the key). Serves servers and clients alike."""
    key = cert_gen.generate_private_key()
    names = [
        x509.UniformResourceIdentifier(application_uri),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    certificate = cert_gen.generate_self_signed_app_certificate(key, f"edgeseal test {name}", {}, names, usages)
    files = CertificateFiles(directory / f"{name}.der", directory / f"{name}.pem")
    files.certificate.write_bytes(certificate.public_bytes(serialization.Encoding.DER))
    files.private_key.write_bytes(cert_gen.dump_private_key_as_pem(key))
    return files


class OpcUaServer:
    """One server process on a fixed port; `start` again after `kill` reuses the port."""

    def __init__(self, spec: ServerSpec, directory: Path) -> None:
        self.spec = dataclasses.replace(spec, port=free_port())
        self._directory = directory
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        return self.spec.port

    @property
    def url(self) -> str:
        return self.spec.url

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def log(self) -> Path:
        """The server's stderr (asyncua's warnings and errors), across its restarts."""
        return self._directory / f"opcua-{self.port}.log"

    def start(self) -> OpcUaServer:
        assert self._process is None, "the server is running"
        spec_file = self._directory / f"opcua-{self.port}.json"
        spec_file.write_text(self.spec.to_json())
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, str(SCRIPT), str(spec_file)], stdout=subprocess.PIPE, stderr=log
            )
        try:
            self._await_ready()
        except BaseException:
            self.kill()
            raise
        return self

    def kill(self) -> None:
        """SIGKILL, as a crash or power loss: no session is closed, no socket said goodbye."""
        if self._process is None:
            return
        self._process.kill()
        self._process.wait(timeout=10)
        assert self._process.stdout is not None
        self._process.stdout.close()
        self._process = None

    def restart(self, **changes: Any) -> OpcUaServer:
        """Kills the server and starts it again on the same port, with `changes` to its spec
        (e.g. `shift=2`, `stall_create_monitored_items=None`)."""
        self.kill()
        self.spec = dataclasses.replace(self.spec, **changes)
        return self.start()

    async def emit_event(
        self, client: Client, message: str, *, severity: int = 500, batch_id: str = "", quantity: float = 0.0
    ) -> None:
        """Fires an EVENT_TYPE event at the spec's `events` object and at the Server object."""
        await self._call(
            client,
            "EmitEvent",
            ua.Variant(message, ua.VariantType.String),
            ua.Variant(severity, ua.VariantType.UInt16),
            ua.Variant(batch_id, ua.VariantType.String),
            ua.Variant(quantity, ua.VariantType.Double),
        )

    async def set_alarm(self, client: Client, name: str, active: bool) -> None:
        """Activates or deactivates the alarm `name`; either fires a condition event."""
        await self._call(
            client, "SetAlarm", ua.Variant(name, ua.VariantType.String), ua.Variant(active, ua.VariantType.Boolean)
        )

    async def _call(self, client: Client, method: str, *arguments: ua.Variant) -> None:
        namespace = await client.get_namespace_index(self.spec.namespaces[0])
        control = client.get_node(ua.NodeId("TestControl", namespace))
        await control.call_method(ua.NodeId(f"TestControl.{method}", namespace), *arguments)

    def _await_ready(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        stdout, seen = self._process.stdout.fileno(), b""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while b"\n" not in seen:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"OPC UA test server not ready in {STARTUP_TIMEOUT} s; see {self.log}")
            if select.select([stdout], [], [], remaining)[0]:
                chunk = os.read(stdout, 4096)
                if not chunk:
                    raise RuntimeError(f"OPC UA test server exited:\n{self.log.read_text()[-3000:]}")
                seen += chunk
        assert seen.decode().strip() == f"READY {self.url}", seen


class ServerFarm:
    """Starts servers on demand; `close` kills every one of them."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._servers: list[OpcUaServer] = []

    def start(self, spec: ServerSpec | None = None) -> OpcUaServer:
        server = OpcUaServer(spec or ServerSpec(), self._directory)
        self._servers.append(server)
        return server.start()

    def close(self) -> None:
        for server in self._servers:
            server.kill()


@pytest.fixture
def opcua_servers(tmp_path: Path) -> Iterator[ServerFarm]:
    farm = ServerFarm(tmp_path)
    try:
        yield farm
    finally:
        farm.close()
