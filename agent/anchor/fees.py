"""Transaction fees: what to offer, and how much more a replacement must offer.

A replacement at the same nonce is accepted by geth and Besu only with both fee caps at
least 10 % higher (anvil takes any increase); 12.5 % clears every node's rule. Fees set
in the configuration are the operator's choice and are never raised: on a free-gas
consortium chain they are 0, and a stuck transaction is re-sent rather than replaced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent.anchor.rpc import Chain


@dataclass(frozen=True)
class Fees:
    max_fee: int  # maxFeePerGas, or gasPrice for a legacy transaction (wei)
    tip: int  # maxPriorityFeePerGas; equal to max_fee for a legacy transaction
    legacy: bool

    def fields(self) -> dict[str, int]:
        """The transaction's fee fields, always explicit: a node's defaults are not ours."""
        if self.legacy:
            return {"gasPrice": self.max_fee}
        return {"maxFeePerGas": self.max_fee, "maxPriorityFeePerGas": self.tip}


async def offered(config: Any, chain: Chain) -> Fees:
    """The fees of a new transaction: configured amounts, the rest asked of the node."""
    if config.type == "legacy":
        price = config.gas_price if config.gas_price is not None else await chain.gas_price()
        return Fees(price, price, legacy=True)
    tip = config.priority_fee if config.priority_fee is not None else await chain.priority_fee()
    if config.max_fee is not None:
        return Fees(config.max_fee, min(tip, config.max_fee), legacy=False)
    base = await chain.base_fee()
    # twice the base fee rides out six full blocks of base-fee rises (12.5 % each)
    return Fees(2 * (base or 0) + tip, tip, legacy=False)


def raised(old: Fees, now: Fees) -> Fees:
    """Fees for a replacement: at least 12.5 % above the old on both caps, or what the
    node suggests now if that is more."""
    max_fee = max(_plus_eighth(old.max_fee), now.max_fee)
    tip = min(max(_plus_eighth(old.tip), now.tip), max_fee)
    return Fees(max_fee, tip, old.legacy)


def _plus_eighth(wei: int) -> int:
    return wei + -(-wei // 8)  # ceiling: 1 wei becomes 2, never stays 1
