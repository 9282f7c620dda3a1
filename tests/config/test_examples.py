"""Examples cannot drift from the schema: every examples/*.yaml passes `edgeseal check-config`,
and examples/README.md describes each of them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cli_runner import in_process

ROOT = Path(__file__).parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))

# What the examples read from the environment, as a gateway's systemd drop-in would set it.
ENVIRONMENT = {
    "GATEWAY_ID": "MTR-000042",
    "ANCHOR_RPC_URL": "https://eth-node.example.com/v1/0123456789abcdef",
}


def test_the_documented_examples_are_there() -> None:
    assert {example.name for example in EXAMPLES} >= {
        "power-meter-modbus-rtu.yaml",
        "press-line-opcua.yaml",
        "energy-carbon-metering.yaml",
    }


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.stem)
def test_example_passes_check_config(
    example: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    result = in_process(capsys, "check-config")(example)
    assert result.code == 0, result.out + result.err
    assert result.out == f"{example}: ok\n"


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.stem)
def test_every_variable_an_example_reads_is_set_here(example: Path) -> None:
    text = example.read_text(encoding="utf-8")
    # ${NAME} and ${NAME:-default}, but not the escaped $${
    needed = set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text))
    assert needed <= ENVIRONMENT.keys()


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.stem)
def test_the_examples_readme_describes_it(example: Path) -> None:
    readme = (ROOT / "examples" / "README.md").read_text(encoding="utf-8")
    assert f"]({example.name})" in readme
