"""A narrow, typed view of an Ethereum-compatible node's JSON-RPC: the only module of the
agent that uses web3.

Everything the anchoring needs is a handful of calls, each answering plain bytes and
ints. Failures come in three kinds, because the caller acts differently on each:
`ChainUnavailable` (the node is down, slow or erring: back off and retry, nothing is
lost), `TransactionRejected` (the node refused a signed transaction, saying why), and
"not found", which is an answer (None), not an error: a transaction dropped or reorganised
away has no receipt, and that is what the caller looks for.

web3's own retries are switched off: the anchoring worker owns the backoff, so a node that
is down costs one failed call per attempt, not a hidden burst of them.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
from web3 import AsyncWeb3
from web3.exceptions import BlockNotFound, ExtraDataLengthError, TransactionNotFound, Web3Exception, Web3RPCError
from web3.middleware import ExtraDataToPOAMiddleware
from web3.providers.rpc import AsyncHTTPProvider

T = TypeVar("T")
TIMEOUT = 10.0
# how nodes say that they already have a transaction (geth, Besu, anvil, Quorum)
ALREADY_KNOWN = ("already known", "known transaction", "already imported", "transaction_already_known")
NONCE_TOO_LOW = ("nonce too low", "nonce_too_low", "nonce is too low")


class ChainUnavailable(Exception):
    """The node cannot be asked now (down, timing out, erring); retry later."""


class TransactionRejected(Exception):
    """The node refused a signed transaction; the message is the node's reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.nonce_too_low = any(s in reason.lower() for s in NONCE_TOO_LOW)


@dataclass(frozen=True)
class Receipt:
    tx_hash: bytes
    block: int
    block_hash: bytes
    succeeded: bool  # status 1; a revert is mined too, with status 0
    gas_used: int
    to: bytes | None  # the called contract (None: a deployment)


@dataclass(frozen=True)
class Log:
    topics: list[bytes]
    data: bytes
    tx_hash: bytes


class Chain:
    """One node, through an AsyncWeb3 over HTTP (the demo's development chain is served over HTTP too)."""

    def __init__(self, web3: AsyncWeb3) -> None:  # type: ignore[type-arg]
        self.web3 = web3

    @classmethod
    def connect(cls, url: str, *, poa: bool = False, timeout: float = TIMEOUT) -> Chain:
        provider = AsyncHTTPProvider(
            url,
            request_kwargs={"timeout": aiohttp.ClientTimeout(total=timeout)},
            exception_retry_configuration=None,
        )
        web3 = AsyncWeb3(provider)
        if poa:  # QBFT/IBFT blocks carry validator data in extraData, beyond the 32 bytes web3 checks for
            web3.middleware_onion.inject(ExtraDataToPOAMiddleware, layer=0)
        return cls(web3)

    async def close(self) -> None:
        provider = self.web3.provider
        disconnect = getattr(provider, "disconnect", None)
        if disconnect is not None:
            await _asked(disconnect())
        # web3's HTTP session manager takes a lock through a thread pool of its own, which
        # nothing else shuts down
        manager = getattr(provider, "_request_session_manager", None)
        if manager is not None:
            manager.session_pool.shutdown(wait=True)

    async def chain_id(self) -> int:
        return int(await _asked(self.web3.eth.chain_id))

    async def code(self, address: bytes) -> bytes:
        return bytes(await _asked(self.web3.eth.get_code(_address(address))))

    async def head(self) -> int:
        return int(await _asked(self.web3.eth.block_number))

    async def block_hash(self, number: int) -> bytes | None:
        """The hash of the canonical block at `number`; None if there is none (yet)."""
        try:
            block = await _asked(self.web3.eth.get_block(number))
        except BlockNotFound:
            return None
        return bytes(block["hash"])

    async def block_number_of(self, block_hash: bytes) -> int | None:
        """The number of the block with this hash; None if the node does not know it."""
        try:
            block = await _asked(self.web3.eth.get_block(block_hash))
        except BlockNotFound:
            return None
        return int(block["number"])

    async def confirmed_nonce(self, address: bytes) -> int:
        """Transactions of `address` in the latest block: never the `pending` count, which
        some nodes (Besu) give past nonce gaps and which stays stale after a drop."""
        return int(await _asked(self.web3.eth.get_transaction_count(_address(address), "latest")))

    async def receipt(self, tx_hash: bytes) -> Receipt | None:
        try:
            r = await _asked(self.web3.eth.get_transaction_receipt(tx_hash))
        except TransactionNotFound:
            return None
        if r is None or r.get("blockHash") is None:
            return None
        tx_hash, block, block_hash = bytes(r["transactionHash"]), int(r["blockNumber"]), bytes(r["blockHash"])
        to = bytes.fromhex(r["to"].removeprefix("0x")) if r.get("to") else None
        return Receipt(tx_hash, block, block_hash, r["status"] == 1, int(r["gasUsed"]), to)

    async def knows(self, tx_hash: bytes) -> bool:
        """Whether the node has the transaction, in its pool or in a block."""
        try:
            return await _asked(self.web3.eth.get_transaction(tx_hash)) is not None
        except TransactionNotFound:
            return False

    async def send_raw(self, raw: bytes) -> None:
        """Sends a signed transaction; one the node already has counts as sent."""
        try:
            await _asked(self.web3.eth.send_raw_transaction(raw), rejection=True)
        except TransactionRejected as exc:
            if not any(s in str(exc).lower() for s in ALREADY_KNOWN):
                raise

    async def call(self, to: bytes, data: bytes) -> bytes:
        return bytes(await _asked(self.web3.eth.call({"to": _address(to), "data": data}, "latest")))

    async def logs(self, address: bytes, block_hash: bytes, topics: list[bytes | None]) -> list[Log]:
        criteria: Any = {"address": _address(address), "blockHash": block_hash, "topics": topics}
        found = await _asked(self.web3.eth.get_logs(criteria))
        return [Log([bytes(t) for t in e["topics"]], bytes(e["data"]), bytes(e["transactionHash"])) for e in found]

    async def base_fee(self) -> int | None:
        """The latest block's base fee; None on a chain without EIP-1559."""
        block = await _asked(self.web3.eth.get_block("latest"))
        fee = block.get("baseFeePerGas")
        return None if fee is None else int(fee)

    async def priority_fee(self) -> int:
        return int(await _asked(self.web3.eth.max_priority_fee))

    async def gas_price(self) -> int:
        return int(await _asked(self.web3.eth.gas_price))


async def _asked(request: Awaitable[T], *, rejection: bool = False) -> T:
    """The node's answer, with transport and node errors mapped onto ChainUnavailable
    (or TransactionRejected, for a refused transaction). Not-found errors pass through:
    the callers turn them into None."""
    try:
        return await request
    except (TransactionNotFound, BlockNotFound):
        raise
    except ExtraDataLengthError:
        raise ChainUnavailable("the chain's blocks carry validator data in extraData: set anchor.poa: true") from None
    except Web3RPCError as exc:
        message = _rpc_message(exc)
        raise (TransactionRejected(message) if rejection else ChainUnavailable(message)) from None
    except (TimeoutError, aiohttp.ClientError, OSError, Web3Exception, ValueError) as exc:
        # eth-tester raises ValueError-like errors for refused transactions
        if rejection and isinstance(exc, (ValueError, Web3Exception)):
            raise TransactionRejected(str(exc) or type(exc).__name__) from None
        raise ChainUnavailable(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from None


def _rpc_message(exc: Web3RPCError) -> str:
    response = getattr(exc, "rpc_response", None)
    if isinstance(response, dict) and isinstance(response.get("error"), dict):
        return str(response["error"].get("message", exc))
    return str(exc)


def _address(address: bytes) -> str:
    return AsyncWeb3.to_checksum_address(address)
