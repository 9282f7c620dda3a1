"""The committed agent/anchor/AnchorRegistry.json is what contracts/AnchorRegistry.sol
compiles to with the pinned npm solc and the settings of contracts/build.py: byte for
byte, metadata hash included, so the bytecode on chain can be traced to the source."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

BUILD_SCRIPT = Path(__file__).resolve().parents[3] / "contracts" / "build.py"


@pytest.fixture(scope="module")
def build() -> ModuleType:
    # contracts/ is not a package (the agent never compiles): load the build script by path
    spec = importlib.util.spec_from_file_location("contracts_build", BUILD_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_artifact_is_what_the_source_compiles_to(build: ModuleType) -> None:
    try:
        rebuilt = build.compile_artifact()
    except build.BuildError as error:
        # a failure, not a skip: without the pinned compiler the artifact is unchecked
        pytest.fail(str(error), pytrace=False)
    committed = json.loads(build.ARTIFACT.read_text())
    # field by field first, for a message that says what differs
    for field in ("compiler", "settings", "abi", "bytecode", "deployedBytecode", "storageLayout"):
        assert rebuilt[field] == committed[field], f"{field} differs; run: python contracts/build.py"
    assert build.render(rebuilt) == build.ARTIFACT.read_text()


def test_the_bytecode_runs_on_paris(build: ModuleType) -> None:
    # PUSH0 (0x5f, Shanghai) is what the compiler's default fork would add and what a
    # pre-Shanghai chain rejects; walk the opcodes, stepping over PUSH1..PUSH32 data
    code = bytes.fromhex(json.loads(build.ARTIFACT.read_text())["deployedBytecode"][2:])
    code = code[: -2 - int.from_bytes(code[-2:], "big")]  # without the CBOR metadata trailer
    position, opcodes = 0, set()
    while position < len(code):
        opcode = code[position]
        opcodes.add(opcode)
        position += 1 + (opcode - 0x5F if 0x60 <= opcode <= 0x7F else 0)
    assert 0x5F not in opcodes
    assert json.loads(build.ARTIFACT.read_text())["settings"]["evmVersion"] == "paris"


def test_a_checkpoint_takes_one_storage_slot(build: ModuleType) -> None:
    layout = json.loads(build.ARTIFACT.read_text())["storageLayout"]
    (checkpoint,) = [t for name, t in layout["types"].items() if name.startswith("t_struct(Checkpoint)")]
    assert checkpoint["numberOfBytes"] == "32"
    assert [(m["label"], m["slot"], m["offset"]) for m in checkpoint["members"]] == [
        ("treeSize", "0", 0),
        ("blockNumber", "0", 8),
    ]
