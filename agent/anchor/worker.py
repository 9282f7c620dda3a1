"""The anchoring worker: signed checkpoints of the device log -> AnchorRegistry, tracked
to finality whatever the chain does.

One worker sends everything, one nonce at a time: a checkpoint anchors the whole log up
to its size, so a newer anchor makes any older one unneeded and nothing is gained by
queueing them. That keeps every rule simple and safe:

- The nonce is ours: the `latest` transaction count when nothing of ours is open, and the
  open transactions' nonce while they are. Never the `pending` count, which Besu gives
  past nonce gaps and which stays stale after a drop.
- A transaction is signed once, journalled with an fsync, and only then sent. After a
  crash, a restart, a node restart or a drop, the same bytes are re-sent.
- Not mined within `replace_after`: replaced at the same nonce with fees 12.5 % higher,
  anchoring the newest checkpoint. Whichever of them is mined counts.
- Mined: final at once (immediate-finality chains) or after `confirmations` blocks, when
  the receipt is fetched again and its block must still be the canonical one. A reorg
  takes the transaction back to waiting, and it is re-sent.
- The nonce used by a transaction not of ours (another process with this account): ours
  are void and the newest checkpoint is anchored at the next nonce. The account's count
  below our open nonce means the chain lost transactions (a reset development chain, a
  reorganisation beyond finality): ours are void too, since that nonce may never be
  reached, and the newest checkpoint is anchored at the chain's count.
- A receipt of a call to another contract (the configured address changed while a
  transaction was open) anchors nothing here: that nonce is void.
- At start and after every outage of the node: the chain id, the contract's code and the
  latest on-chain checkpoint are checked (a restarted node may be another chain). The
  worker never anchors a tree size at or below the chain's; an on-chain checkpoint that
  the local log does not contain is an alarm, because only a clone of this device's chain
  key (or a state directory restored from an older backup) can have made it.

Errors of the node back off and retry; nothing the worker does ends the agent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address

from agent.anchor import fees as fee_rules
from agent.anchor.registry import deployed_code
from agent.anchor.rpc import Chain, ChainUnavailable, Receipt, TransactionRejected
from agent.buffer.anchor_journal import AnchorTx
from agent.buffer.store import Buffer, BufferWriteError
from agent.crashpoints import crash_point
from agent.trust.anchors import (
    AnchorFormatError,
    anchor_calldata,
    anchored_topics,
    decode_anchored,
    decode_latest,
    latest_calldata,
)
from agent.trust.bundle import Anchor
from agent.trust.payloads import open_checkpoint

log = logging.getLogger(__name__)


class ChainMismatch(Exception):
    """The node is not the configured chain, or the contract is not there: anchoring
    waits until the operator fixes it, and says so."""


@dataclass
class AnchoringState:
    """What the worker knows now, for logs and metrics."""

    on_chain_size: int | None = None  # the latest checkpoint anchored, as the chain says
    problem: str | None = None  # why anchoring cannot proceed now, if it cannot
    refused: str | None = None  # the node's reason for refusing the last send (said once)


class Anchorer:
    def __init__(
        self,
        buffer: Buffer,
        chain: Chain,
        account: LocalAccount,
        settings: Any,
        *,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self._buffer, self._chain, self._account, self._settings = buffer, chain, account, settings
        self._journal = buffer.anchors
        self._contract = bytes.fromhex(settings.contract.removeprefix("0x"))
        self._sender = bytes.fromhex(account.address.removeprefix("0x"))
        self._clock = clock
        self._checked = False  # chain id, code and on-chain checkpoint checked on this connection
        self.state = AnchoringState()

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                if not self._checked:
                    await self._check_chain()
                await self.step()
            except (ChainUnavailable, BufferWriteError) as exc:
                failures += 1
                if failures == 1:
                    log.warning("anchoring paused: %s; retrying", exc)
                self._checked = False
                await asyncio.sleep(self._backoff(failures))
                continue
            except ChainMismatch as exc:
                if str(exc) != self.state.problem:
                    log.error("anchoring stopped: %s", exc)
                self.state.problem = str(exc)
                self._checked = False
                await asyncio.sleep(self._settings.reconnect_delay_max)
                continue
            if failures or self.state.problem:
                log.info("anchoring resumed: the node answers")
                failures, self.state.problem = 0, None
            await asyncio.sleep(self._settings.poll_interval)

    def _backoff(self, failures: int) -> float:
        s = self._settings
        return min(s.reconnect_delay * 2 ** (failures - 1), s.reconnect_delay_max)

    # -- the chain, checked -----------------------------------------------------------

    async def _check_chain(self) -> None:
        s = self._settings
        chain_id = await self._chain.chain_id()
        if chain_id != s.chain_id:
            raise ChainMismatch(f"the node at {s.rpc} is chain {chain_id}, not the configured chain_id {s.chain_id}")
        code = await self._chain.code(self._contract)
        if code != deployed_code():
            found = f"other code ({len(code)} bytes)" if code else "no code"
            raise ChainMismatch(f"{s.contract} on chain {chain_id} holds {found}, not the AnchorRegistry")
        self._checked = await self._reconcile()

    async def _reconcile(self) -> bool:
        """The chain's latest checkpoint of this device, by this account, against the log;
        False while there is no checkpoint yet to know the device key id by."""
        kid = self._device_key_id()
        if kid is None:
            return False
        answer = await self._chain.call(self._contract, latest_calldata(self._sender, kid))
        view = decode_latest(answer)
        self.state.on_chain_size = view.tree_size
        if view.tree_size == 0:
            recorded = self._journal.latest_anchored()
            if recorded is not None:
                log.warning(
                    "the chain holds no anchor of this device although checkpoint %d was anchored"
                    " (a reset chain or a reorganisation beyond finality): anchoring again",
                    recorded.size,
                )
            return True
        root = await self._anchored_root(kid, view.block, view.tree_size)
        log_size = self._log_size()
        if view.tree_size > log_size:
            self._alarm(
                f"the chain holds an anchor of this device's log at size {view.tree_size} (block {view.block}),"
                f" beyond this log's {log_size} seals: a clone of the chain key, or a state directory restored"
                " from an older backup"
            )
        elif root != self._buffer.log_root(view.tree_size):
            self._alarm(
                f"the chain's anchor of this device's log at size {view.tree_size} (block {view.block}) has root"
                f" {root.hex() if root else 'none'}, which is not this log's: a clone or compromise of the chain key"
            )
        return True

    async def _anchored_root(self, kid: bytes, block: int, size: int) -> bytes | None:
        block_hash = await self._chain.block_hash(block)
        if block_hash is None:
            raise ChainUnavailable(f"block {block} named by the contract is not available yet")
        for entry in await self._chain.logs(self._contract, block_hash, anchored_topics(kid, self._sender)):
            try:
                event = decode_anchored(entry.topics, entry.data)
            except AnchorFormatError:
                continue
            if event.tree_size == size:
                return event.root
        return None

    def _alarm(self, message: str) -> None:
        alarms = self._journal.alarms()
        if not alarms or alarms[-1].message != message:
            self._journal.raise_alarm(message, self._clock())
        log.error("ANCHORING ALARM: %s", message)

    # -- one round --------------------------------------------------------------------

    async def step(self) -> None:
        """Follow the open transactions, or send a new one when an anchor is due."""
        pending = self._journal.open_transactions()
        if pending:
            await self._follow(pending)
        elif self._checked and self._due():
            target = self._target(0)
            if target is not None:
                nonce = await self._chain.confirmed_nonce(self._sender)
                await self._send_new(nonce, target, await fee_rules.offered(self._settings.fees, self._chain))

    def _due(self) -> bool:
        last = self._journal.last_signed()
        elapsed = (self._clock() - last) / 1e9 if last is not None else None
        # a clock stepped back must not hold anchoring off until it catches up
        return elapsed is None or elapsed < 0 or elapsed >= self._settings.interval

    def _target(self, at_least: int) -> int | None:
        """The newest checkpoint, if it adds enough seals to what the chain holds."""
        newest = self._buffer.last_checkpoint_size()
        on_chain = self.state.on_chain_size or 0
        enough = newest - on_chain >= self._settings.min_new_seals and newest > on_chain
        return newest if enough and newest >= at_least else None

    async def _follow(self, pending: list[AnchorTx]) -> None:
        nonce = pending[0].nonce
        found = await self._mined(pending)
        if found is not None:
            tx, receipt = found
            if receipt.to != self._contract:
                self._journal.void(nonce)
                log.warning(
                    "anchor transaction %s went to another contract than %s", tx.hash.hex(), self._settings.contract
                )
                return
            if not receipt.succeeded:
                self._journal.void(nonce)
                log.error(
                    "anchor transaction %s reverted in block %d; checking the chain's latest checkpoint",
                    receipt.tx_hash.hex(),
                    receipt.block,
                )
                self._checked = False
                return
            if await self._settle_if_final(tx, receipt):
                return
            if await self._chain.block_hash(receipt.block) == receipt.block_hash:
                return  # mined, waiting for confirmations
            log.warning("anchor transaction %s: block %d was reorganised away", receipt.tx_hash.hex(), receipt.block)
        count = await self._chain.confirmed_nonce(self._sender)
        if count > nonce and await self._mined(pending) is None:
            self._journal.void(nonce)
            log.warning(
                "nonce %d of %s was used by a transaction not sent by this agent; anchoring anew",
                nonce,
                self._account.address,
            )
            self._checked = False  # that transaction may have been an anchor: look at the chain first
            return
        if count < nonce:
            self._journal.void(nonce)
            log.warning(
                "the chain counts %d transactions of %s, fewer than this agent's open nonce %d: it lost"
                " transactions (a reset chain, or a reorganisation beyond finality); anchoring anew",
                count,
                self._account.address,
                nonce,
            )
            self._checked = False
            return
        newest = pending[-1]
        if (self._clock() - newest.signed) / 1e9 >= self._settings.replace_after:
            await self._replace(newest)
        elif not await self._chain.knows(newest.hash):
            log.info("re-sending anchor transaction %s: the node does not have it", newest.hash.hex())
            await self._send(newest.raw)

    async def _mined(self, pending: list[AnchorTx]) -> tuple[AnchorTx, Receipt] | None:
        for tx in reversed(pending):
            receipt = await self._chain.receipt(tx.hash)
            if receipt is not None:
                return tx, receipt
        return None

    async def _settle_if_final(self, tx: AnchorTx, receipt: Receipt) -> bool:
        confirmations = await self._chain.head() - receipt.block
        final = self._settings.finality == "immediate" or confirmations >= self._settings.confirmations
        if not final:
            return False
        # fetched again at finality: the receipt's block must still be the chain's
        again = await self._chain.receipt(receipt.tx_hash)
        if again is None or again.block_hash != receipt.block_hash:
            return False
        if await self._chain.block_hash(receipt.block) != receipt.block_hash:
            return False
        checkpoint = self._buffer.checkpoint(tx.size)
        assert checkpoint is not None  # journalled from a stored checkpoint; checkpoints are never deleted
        record = Anchor(
            checkpoint=checkpoint,
            chain_id=self._settings.chain_id,
            contract=self._contract,
            tx=receipt.tx_hash,
            block=receipt.block,
            block_hash=receipt.block_hash,
            confirmations=confirmations,
        )
        crash_point("anchor.final")
        self._journal.settle(receipt.tx_hash, tx.size, record.encode(), self._clock())
        self.state.on_chain_size = tx.size
        log.info(
            "anchored checkpoint %d in block %d (%d confirmations), transaction %s",
            tx.size,
            receipt.block,
            confirmations,
            receipt.tx_hash.hex(),
        )
        return True

    async def _replace(self, stuck: AnchorTx) -> None:
        offered = await fee_rules.offered(self._settings.fees, self._chain)
        fees = fee_rules.raised(fee_rules.Fees(stuck.max_fee, stuck.tip, offered.legacy), offered)
        target = self._target(stuck.size) or stuck.size
        if self._settings.fees.fixed or (fees.max_fee, fees.tip, target) == (stuck.max_fee, stuck.tip, stuck.size):
            log.warning(
                "anchor transaction %s not mined after %ds; fees are fixed: re-sending it",
                stuck.hash.hex(),
                self._settings.replace_after,
            )
            await self._send(stuck.raw)
            return
        log.warning(
            "anchor transaction %s not mined after %ds: replacing it at nonce %d with fees %d/%d wei",
            stuck.hash.hex(),
            self._settings.replace_after,
            stuck.nonce,
            fees.max_fee,
            fees.tip,
        )
        await self._send_new(stuck.nonce, target, fees)

    async def _send_new(self, nonce: int, size: int, fees: fee_rules.Fees) -> None:
        checkpoint = self._buffer.checkpoint(size)
        assert checkpoint is not None
        message, payload = open_checkpoint(checkpoint)
        s = self._settings
        transaction: dict[str, Any] = {
            "chainId": s.chain_id,
            "nonce": nonce,
            "to": to_checksum_address(self._contract),
            "value": 0,
            "gas": s.gas_limit,
            "data": anchor_calldata(message.kid, size, payload.root),
            **fees.fields(),
        }
        signed = self._account.sign_transaction(transaction)
        raw, tx_hash = bytes(signed.raw_transaction), bytes(signed.hash)
        tx = AnchorTx(tx_hash, nonce, size, raw, fees.max_fee, fees.tip, self._clock())
        self._journal.add(tx)  # fsync'd before it can reach any node
        log.info("anchoring checkpoint %d: transaction %s, nonce %d", size, tx.hash.hex(), nonce)
        crash_point("anchor.journaled")
        await self._send(tx.raw)
        crash_point("anchor.sent")

    async def _send(self, raw: bytes) -> None:
        try:
            await self._chain.send_raw(raw)
        except TransactionRejected as exc:
            # too low: mined already, or taken; the next round tells which
            if not exc.nonce_too_low and str(exc) != self.state.refused:
                log.warning("the node refuses the anchor transaction: %s; sending it again each round", exc)
            self.state.refused = str(exc)
        else:
            self.state.refused = None

    # -- the local log ----------------------------------------------------------------

    def _log_size(self) -> int:
        last = self._buffer.last_seal()
        return last.b if last else 0

    def _device_key_id(self) -> bytes | None:
        """The key id the newest checkpoint is signed with: the on-chain deviceKeyId."""
        newest = self._buffer.last_checkpoint_size()
        checkpoint = self._buffer.checkpoint(newest) if newest else None
        return open_checkpoint(checkpoint)[0].kid if checkpoint else None
