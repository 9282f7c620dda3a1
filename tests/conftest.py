"""Suite-wide guards: a test must not leave threads behind (the agent owns at most the
threads it documents, and a test that leaks one hides a shutdown bug)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

# the software TPM fixtures (swtpm_template, swtpm), the Modbus and OPC UA test servers
# (modbus_servers, opcua_servers), the independent node-opcua server (node_opcua_server),
# Mosquitto brokers (mqtt_brokers), a local Ethereum node (anvil) and a chain account
# (chain_keystore), for every test directory
pytest_plugins = [
    "tpm_fixtures",
    "modbus_servers",
    "opcua_servers",
    "node_opcua",
    "mqtt_broker",
    "anvil_chain",
    "anchor_harness",
]


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 2.0
    while True:
        leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert not leaked, f"test left threads running: {[t.name for t in leaked]}"
