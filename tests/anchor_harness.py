"""Anchoring for tests: the AnchorRegistry deployed on a test chain (anvil), a funded
chain account in a keystore, and the agent's `anchor:` section pointing at them."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from anvil_chain import Anvil

from agent.anchor import devchain
from agent.anchor.keystore import create_keystore, keystore_address
from agent.trust.bundle import Anchor, decode_anchor

PASSPHRASE = b"test passphrase, development only"
T = TypeVar("T")


@dataclass(frozen=True)
class ChainAccount:
    keystore: Path
    passphrase_file: Path
    address: str


@pytest.fixture(scope="session")
def chain_keystore(tmp_path_factory: pytest.TempPathFactory) -> ChainAccount:
    """One keystore for the session (scrypt costs about a second); each test funds it on its own chain."""
    directory = tmp_path_factory.mktemp("chain-key")
    passphrase_file = directory / "passphrase"
    passphrase_file.write_bytes(PASSPHRASE)
    keystore = directory / "chain-key.json"
    create_keystore(keystore, PASSPHRASE)
    return ChainAccount(keystore, passphrase_file, keystore_address(keystore))


def deploy_registry(anvil: Anvil) -> str:
    """The registry on `anvil`, deployed and checked as the demo deploys it on a node."""
    return devchain.deploy_registry(anvil.url)


def fund(anvil: Anvil, address: str, ether: int = 10) -> None:
    devchain.fund(anvil.url, address, ether * 10**18)


def anchor_section(
    url: str,
    chain_id: int,
    contract: str,
    account: ChainAccount,
    *,
    passphrase_secret: str | None = None,
    **settings: object,
) -> str:
    """The `anchor:` YAML section: fast defaults for tests, overridable; the passphrase in
    a file unless it is a TPM-sealed secret."""
    values: dict[str, object] = {
        "finality": "immediate",
        "interval": "1s",
        "poll_interval": "100ms",
        "replace_after": "30s",
        "reconnect_delay": "100ms",
        "reconnect_delay_max": "500ms",
    }
    values.update(settings)
    lines = [
        "anchor:",
        f"  rpc: {url}",
        f"  chain_id: {chain_id}",
        f'  contract: "{contract}"',
        "  key:",
        f"    keystore: {account.keystore}",
        f"    passphrase_secret: {passphrase_secret}"
        if passphrase_secret
        else f"    passphrase_file: {account.passphrase_file}",
    ]
    lines += [
        f"  {name}: {json.dumps(value) if not isinstance(value, str) else value}" for name, value in values.items()
    ]
    return "\n".join(lines) + "\n"


class AgentProcess:
    """`edgeseal run` as its own process, as systemd would run it."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> AgentProcess:
        log = (self.config.parent / "agent.log").open("ab")
        with log:
            command = [sys.executable, "-m", "agent.cli", "run", "--config", str(self.config)]
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        """The exit code; None when the agent was not running."""
        code = None
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            code = self.process.wait(timeout=30)
        self.process = None
        return code

    def log(self) -> str:
        return (self.config.parent / "agent.log").read_text(errors="replace")


class Journal:
    """An agent's buffer read beside the running agent: any query, and its anchoring tables by name."""

    def __init__(self, state_dir: Path) -> None:
        self.db = state_dir / "buffer.db"

    def rows(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        if not self.db.exists():
            return []
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5)
        try:
            return conn.execute(sql, args).fetchall()
        except sqlite3.OperationalError:  # the schema is not there yet
            return []
        finally:
            conn.close()

    def transactions(self) -> list[tuple[bytes, int, int, int, int, int]]:
        """(hash, nonce, size, max_fee, tip, state) of every anchor transaction, in signing order."""
        return self.rows("SELECT hash, nonce, size, max_fee, tip, state FROM anchor_txs ORDER BY signed")

    def records(self) -> list[Anchor]:
        return [decode_anchor(record) for (record,) in self.rows("SELECT record FROM anchors ORDER BY size")]

    def alarms(self) -> list[str]:
        return [message for (message,) in self.rows("SELECT message FROM anchor_alarms ORDER BY t")]


def wait_for(
    condition: Callable[[], T | None], what: str, timeout: float = 30.0, *, every: Callable[[], None] | None = None
) -> T:
    """condition()'s first true value; `every` runs between attempts (e.g. mine a block)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        if every is not None:
            every()
        time.sleep(0.2)
