"""The `anchor:` section: where and how checkpoints of the device log go on chain."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from drivers.config_types import Duration, Expected, Matching, SubPath, backoff_findings, findings

RPC_URL_RULE = "a node's JSON-RPC URL like http://besu.plant.local:8545"
RPC_URL_PATTERN = r"https?://(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::[0-9]{1,5})?(?:/[^\s]*)?"
ADDRESS_RULE = "a contract address: 0x and 40 hex digits"
ADDRESS_PATTERN = r"0x[0-9A-Fa-f]{40}"
Wei = Annotated[int, Field(ge=0), Expected("an amount in wei (an integer, 0 on a free-gas chain)")]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ChainKeyConfig(_Section):
    """The chain account that pays for (or is permitted to send) anchor transactions."""

    keystore: Annotated[str, Expected("a file path")] = Field(
        min_length=1,
        description="Encrypted keystore of the chain account (`edgeseal-provision chain-key create`). "
        "A relative path starts at the configuration file's folder.",
    )
    passphrase_secret: str | None = Field(
        None, min_length=1, description="Name of the TPM-sealed secret holding the keystore's passphrase (production)."
    )
    passphrase_file: Annotated[str, Expected("a file path")] | None = Field(
        None, min_length=1, description="File holding the keystore's passphrase (development only)."
    )

    @model_validator(mode="after")
    def _one_passphrase(self) -> ChainKeyConfig:
        if (self.passphrase_secret is None) == (self.passphrase_file is None):
            found = "both" if self.passphrase_secret else "neither"
            raise findings([((), f"expected one of passphrase_secret or passphrase_file, found {found}")])
        return self


class FeesConfig(_Section):
    """Transaction fees. Unset amounts are asked of the node at each transaction."""

    type: Literal["eip1559", "legacy"] = Field(
        "eip1559",
        description="`eip1559`: maxFeePerGas and maxPriorityFeePerGas (London and later). "
        "`legacy`: gasPrice (Berlin chains, and free-gas consortium chains).",
    )
    max_fee: Wei | None = Field(
        None, description="eip1559: maxFeePerGas, fixed. Default: twice the latest base fee plus the priority fee."
    )
    priority_fee: Wei | None = Field(
        None, description="eip1559: maxPriorityFeePerGas, fixed. Default: the node's eth_maxPriorityFeePerGas."
    )
    gas_price: Wei | None = Field(
        None, description="legacy: gasPrice, fixed (0 on a free-gas chain). Default: the node's eth_gasPrice."
    )

    @model_validator(mode="after")
    def _fields_of_type(self) -> FeesConfig:
        found: list[tuple[SubPath, str]] = []
        wrong = ("gas_price",) if self.type == "eip1559" else ("max_fee", "priority_fee")
        for name in wrong:
            if getattr(self, name) is not None:
                found.append(((name,), f"expected no {name} with type: {self.type}, found one"))
        if self.max_fee is not None and self.priority_fee is not None and self.priority_fee > self.max_fee:
            found.append((("priority_fee",), f"expected at most max_fee ({self.max_fee}), found {self.priority_fee}"))
        if found:
            raise findings(found)
        return self

    @property
    def fixed(self) -> bool:
        """Fees set by configuration are never raised: the operator chose them."""
        return (self.gas_price if self.type == "legacy" else self.max_fee) is not None


class AnchorConfig(_Section):
    """Anchoring: signed checkpoints of the device log go to an AnchorRegistry contract."""

    rpc: Annotated[str, Matching(RPC_URL_RULE, RPC_URL_PATTERN)] = Field(
        description="JSON-RPC URL of a node of the chain (Besu, Quorum, FISCO BCOS in EVM mode, Ethereum)."
    )
    chain_id: int = Field(
        ge=1, description="The chain's id. A node of another chain is refused (and anchoring waits, saying so)."
    )
    contract: Annotated[str, Matching(ADDRESS_RULE, ADDRESS_PATTERN)] = Field(
        description="Address of the AnchorRegistry contract, quoted. Its code is checked against the build "
        "edgeseal ships."
    )
    key: ChainKeyConfig = Field(description="The chain account that sends anchor transactions.")
    poa: bool = Field(
        False, description="The chain's blocks carry validator data in extraData (Besu QBFT/IBFT 2.0, Quorum)."
    )
    finality: Literal["immediate", "confirmations"] = Field(
        "confirmations",
        description="`immediate`: a block is final once mined (QBFT, IBFT 2.0, FISCO BCOS PBFT). "
        "`confirmations`: final once `confirmations` blocks are on top (proof-of-work, proof-of-stake, Clique).",
    )
    confirmations: int = Field(12, ge=1, description="finality: confirmations only. Blocks on top for finality.")
    interval: Duration = Field(
        600.0, description="Anchor at most this often, e.g. 10m; an anchor covers the log to the newest checkpoint."
    )
    min_new_seals: int = Field(1, ge=1, description="Anchor only when the log grew by at least this many seals.")
    fees: FeesConfig = Field(FeesConfig(), description="Transaction fees.")
    gas_limit: int = Field(
        100_000, ge=50_000, description="Gas limit of an anchor transaction (an anchor uses 30,000 to 47,000)."
    )
    replace_after: Duration = Field(
        180.0,
        description="A transaction not mined after this long is replaced at the same nonce, "
        "with fees at least 12.5 % higher (unless fees are fixed).",
    )
    poll_interval: Duration = Field(2.0, description="How often the node is asked about transactions and blocks.")
    reconnect_delay: Duration = Field(
        1.0, description="Wait after a failed call to the node; doubles with each failure."
    )
    reconnect_delay_max: Duration = Field(60.0, description="Longest wait between two calls to a failing node.")

    @model_validator(mode="after")
    def _consistent(self) -> AnchorConfig:
        found = backoff_findings(self.reconnect_delay, self.reconnect_delay_max)
        if self.finality == "immediate" and "confirmations" in self.model_fields_set:
            found.append((("confirmations",), "expected no confirmations with finality: immediate, found some"))
        if found:
            raise findings(found)
        return self
