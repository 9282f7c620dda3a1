"""Compiles AnchorRegistry.sol into the committed artifact agent/anchor/AnchorRegistry.json.

    python contracts/build.py            (re)write agent/anchor/AnchorRegistry.json
    python contracts/build.py --check    exit 1 if the committed artifact is not what the source compiles to

The compiler is the npm solcjs pinned by contracts/package-lock.json (install it with
`bash scripts/npm-tools.sh`), driven by standard JSON input whose settings are all
spelled out here: with the same compiler, settings and source bytes, solc's output is
byte-identical, metadata hash included, so anyone can check that the deployed bytecode is
this source. The settings go into the artifact, so a verifier on a block explorer can
use them as they are.

This is a build tool, not part of the agent: the agent never compiles, it reads the
artifact's ABI and bytecode.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "AnchorRegistry.sol"
# shipped with the agent, which deploys the contract and checks deployed code against it
ARTIFACT = HERE.parent / "agent" / "anchor" / "AnchorRegistry.json"
SOLCJS = HERE / "node_modules" / ".bin" / "solcjs"
INSTALL_COMMAND = "bash scripts/npm-tools.sh"
CONTRACT = "AnchorRegistry"
# the source's name as solc sees it: it is part of the metadata, hence of the bytecode,
# so it must not depend on where the repository is checked out
SOURCE_NAME = "AnchorRegistry.sol"
COMPILER_VERSION = "0.8.37+commit.f401782d.Emscripten.clang"

SETTINGS = {
    # the oldest fork our target chains run (DESIGN §3.5); solc 0.8.37's default, osaka, emits
    # PUSH0, which a pre-Shanghai chain (Besu, FISCO BCOS, Quorum genesis files) rejects
    "evmVersion": "paris",
    "optimizer": {"enabled": True, "runs": 200},
    "viaIR": False,
    # the defaults, written out so a change of default in another compiler cannot slip in
    "metadata": {"bytecodeHash": "ipfs", "appendCBOR": True},
    "outputSelection": {
        SOURCE_NAME: {CONTRACT: ["abi", "evm.bytecode.object", "evm.deployedBytecode.object", "storageLayout"]}
    },
}


class BuildError(Exception):
    """The compiler is missing or the wrong version, or the source does not compile cleanly."""


def compiler_version() -> str:
    if not SOLCJS.exists():
        raise BuildError(f"solcjs is not installed in {HERE}; run: {INSTALL_COMMAND}")
    return subprocess.run([SOLCJS, "--version"], capture_output=True, text=True, check=True).stdout.strip()


def compile_artifact() -> dict:
    """The artifact the current source compiles to, as a JSON-ready dict."""
    version = compiler_version()
    if version != COMPILER_VERSION:
        raise BuildError(f"solcjs is {version}, the artifact is pinned to {COMPILER_VERSION}; run: {INSTALL_COMMAND}")
    # read bytes, not text: a newline translation would change the source hash in the bytecode
    source = SOURCE.read_bytes().decode("utf-8")
    request = {"language": "Solidity", "sources": {SOURCE_NAME: {"content": source}}, "settings": SETTINGS}
    completed = subprocess.run(
        [SOLCJS, "--standard-json"], input=json.dumps(request), capture_output=True, text=True, check=True
    )
    output = _parse_output(completed.stdout)
    # warnings fail the build too: the source is small enough to be kept clean
    problems = [e["formattedMessage"] for e in output.get("errors", []) if e["severity"] != "info"]
    if problems:
        raise BuildError("solc reported:\n" + "\n".join(problems))
    compiled = output["contracts"][SOURCE_NAME][CONTRACT]
    return {
        "contractName": CONTRACT,
        "sourceName": SOURCE_NAME,
        "compiler": {"name": "solc", "version": version, "package": "npm solc@0.8.37"},
        "settings": SETTINGS,
        "abi": compiled["abi"],
        "bytecode": "0x" + compiled["evm"]["bytecode"]["object"],
        "deployedBytecode": "0x" + compiled["evm"]["deployedBytecode"]["object"],
        "storageLayout": compiled["storageLayout"],
    }


def _parse_output(stdout: str) -> dict:
    # solcjs prints a non-JSON notice (no SMT solver) before its JSON: skip to the JSON line
    lines = stdout.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("{"):
            return json.loads("\n".join(lines[index:]))
    raise BuildError(f"solcjs printed no JSON:\n{stdout}")


def render(artifact: dict) -> str:
    return json.dumps(artifact, indent=2) + "\n"


def main(argv: list[str]) -> int:
    try:
        rendered = render(compile_artifact())
    except BuildError as error:
        print(f"contracts/build.py: {error}", file=sys.stderr)
        return 2
    if argv == ["--check"]:
        if ARTIFACT.read_text() != rendered:
            print(f"{ARTIFACT} is not what {SOURCE.name} compiles to; run: python contracts/build.py", file=sys.stderr)
            return 1
        return 0
    ARTIFACT.write_text(rendered)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
