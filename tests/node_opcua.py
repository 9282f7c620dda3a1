"""An independent OPC UA server for interoperability tests: node-opcua (Node.js), running
tests/interop/opcua/server.js, whose address space that file describes.

A server of another stack than the driver's own catches what a loopback test with the
same library on both ends cannot: each side's reading of the specification. It runs as
a subprocess whose output goes to a file, not a pipe, so no reader thread is needed and a
chatty server never blocks on a full pipe. The fixture holds its standard input open: the
server stops when that closes, so even a killed test run leaves no server behind.

Use the `node_opcua_server` fixture: a fresh server for each test, sharing one PKI
directory per session (the server's key and certificate are made once).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SERVER_DIR = Path(__file__).parent / "interop" / "opcua"
NAMESPACE_URI = "urn:edgeseal:interop"
INSTALL_COMMAND = "bash scripts/npm-tools.sh"
START_TIMEOUT = 30.0  # a first start makes a 2048-bit key; a slow CI machine gets slack


@dataclass(frozen=True)
class NodeOpcuaServer:
    url: str  # opc.tcp://127.0.0.1:PORT/UA/edgeseal
    namespace_uri: str  # of the test nodes; resolve it to an index through the NamespaceArray
    certificate: Path  # the server's own certificate (PEM), made by node-opcua on first start
    username: str = "edgeseal"  # the one user accepted besides anonymous
    password: str = "interop"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def node_opcua_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's directory for node-opcua: its PKI, temporary files and home."""
    if shutil.which("node") is None:
        pytest.skip("node-opcua interop needs Node.js (node not found on PATH)")
    if not (SERVER_DIR / "node_modules" / "node-opcua").is_dir():
        # a failure, not a skip: with Node.js present the interop test must run
        pytest.fail(f"node-opcua is not installed in {SERVER_DIR}; run: {INSTALL_COMMAND}", pytrace=False)
    return tmp_path_factory.mktemp("node-opcua")


@pytest.fixture
def node_opcua_server(node_opcua_home: Path, tmp_path: Path) -> Iterator[NodeOpcuaServer]:
    """A running node-opcua server of this test's own; stopped afterwards."""
    port = free_port()
    log_path = tmp_path / "node-opcua.log"
    # HOME and TMPDIR point into the session's directory as well, so that nothing that
    # node-opcua writes by default can land in the real home directory
    env = {**os.environ, "HOME": str(node_opcua_home), "TMPDIR": str(node_opcua_home)}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            ["node", "server.js", str(port), str(node_opcua_home / "pki")],
            cwd=SERVER_DIR,
            env=env,
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        url = _wait_ready(process, log_path)
        yield NodeOpcuaServer(
            url, NAMESPACE_URI, node_opcua_home / "pki" / "server" / "own" / "certs" / "certificate.pem"
        )
    finally:
        _stop(process)


def _wait_ready(process: subprocess.Popen[bytes], log_path: Path) -> str:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        for line in log_path.read_text(errors="replace").splitlines():
            if line.startswith("READY "):
                return line.split()[1]
        if process.poll() is not None or time.monotonic() > deadline:
            state = f"exited with {process.returncode}" if process.returncode is not None else "never became ready"
            pytest.fail(f"node-opcua server {state}; its output:\n{log_path.read_text(errors='replace')}")
        time.sleep(0.05)


def _stop(process: subprocess.Popen[bytes]) -> None:
    assert process.stdin is not None
    process.stdin.close()  # the server shuts down when its standard input closes
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
