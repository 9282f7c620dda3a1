"""The `anchor` section made into a running worker: the chain account opened from its
keystore (the passphrase unsealed by the TPM, or read from a file in development), and
the node connection."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount

from agent.anchor.keystore import open_keystore, read_passphrase_file
from agent.anchor.rpc import Chain
from agent.anchor.worker import Anchorer
from agent.buffer.store import Buffer
from agent.errors import UsageError

SecretReader = Callable[[str], Awaitable[str]]


async def start_anchoring(anchor: Any, buffer: Buffer, secret: SecretReader | None) -> tuple[Anchorer, Chain]:
    """Raises UsageError or KeyError_ when the chain account cannot be opened: before
    anything starts, with one line saying why."""
    account = await open_account(anchor.key, secret)
    chain = Chain.connect(anchor.rpc, poa=anchor.poa)
    return Anchorer(buffer, chain, account, anchor), chain


async def open_account(key: Any, secret: SecretReader | None) -> LocalAccount:
    if key.passphrase_secret is not None:
        if secret is None:
            raise UsageError(f"anchor.key.passphrase_secret {key.passphrase_secret!r} needs identity.signer: tpm")
        passphrase = (await secret(key.passphrase_secret)).encode()
    else:
        passphrase = read_passphrase_file(Path(key.passphrase_file))
    # scrypt takes about a second: off the event loop
    return await asyncio.to_thread(open_keystore, Path(key.keystore), passphrase)
