"""The AnchorRegistry contract as built (agent/anchor/AnchorRegistry.json, from
contracts/AnchorRegistry.sol): its ABI and bytecode, for deploying it and for checking
that an address holds it."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any


@cache
def artifact() -> dict[str, Any]:
    return json.loads(resources.files("agent.anchor").joinpath("AnchorRegistry.json").read_text())


def deployed_code() -> bytes:
    """The runtime code at a deployed AnchorRegistry: the artifact's, byte for byte (the
    contract has no immutables)."""
    return bytes.fromhex(artifact()["deployedBytecode"].removeprefix("0x"))


def creation_code() -> bytes:
    return bytes.fromhex(artifact()["bytecode"].removeprefix("0x"))
