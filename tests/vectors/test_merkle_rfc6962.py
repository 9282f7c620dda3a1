"""Every inclusion and consistency case of the RFC 6962/9162 vectors (transparency-dev),
valid and mutated, read in place from the shared test data."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

import pytest

from agent.trust.merkle import ProofError, verify_consistency, verify_inclusion

ROOT = Path(__file__).resolve().parents[2]
VECTOR_DIR = Path("shared") / "testdata" / "merkle-rfc6962"


def _vectors() -> Path:
    """The shared test data beside the checkout, beside the repository it was cloned
    from, or where EDGESEAL_TESTDATA points; read in place, never copied."""
    origin = subprocess.run(
        ["git", "-C", str(ROOT), "config", "--get", "remote.origin.url"], capture_output=True, text=True
    ).stdout.strip()
    candidates = [ROOT.parent / VECTOR_DIR]
    if origin and Path(origin).is_dir():
        candidates.append(Path(origin).resolve().parent / VECTOR_DIR)
    if "EDGESEAL_TESTDATA" in os.environ:
        candidates.insert(0, Path(os.environ["EDGESEAL_TESTDATA"]) / "merkle-rfc6962")
    return next((c for c in candidates if c.is_dir()), candidates[0])


VECTORS = _vectors()


def _cases(kind: str) -> list[Path]:
    cases = sorted((VECTORS / kind).rglob("*.json"))
    assert len(cases) > 50, f"test vectors missing under {VECTORS / kind}"
    return cases


def _b64(s: str) -> bytes:
    return base64.b64decode(s)


@pytest.mark.parametrize("case", _cases("inclusion"), ids=lambda p: str(p.relative_to(VECTORS)))
def test_inclusion_vector(case: Path) -> None:
    v = json.loads(case.read_text())
    check = lambda: verify_inclusion(  # noqa: E731
        _b64(v["leafHash"]), v["leafIdx"], v["treeSize"], [_b64(p) for p in v["proof"] or []], _b64(v["root"])
    )
    if v["wantErr"]:
        with pytest.raises(ProofError):
            check()
    else:
        check()


@pytest.mark.parametrize("case", _cases("consistency"), ids=lambda p: str(p.relative_to(VECTORS)))
def test_consistency_vector(case: Path) -> None:
    v = json.loads(case.read_text())
    check = lambda: verify_consistency(  # noqa: E731
        v["size1"], v["size2"], [_b64(p) for p in v["proof"] or []], _b64(v["root1"]), _b64(v["root2"])
    )
    if v["wantErr"]:
        with pytest.raises(ProofError):
            check()
    else:
        check()
