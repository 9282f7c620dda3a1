"""Documentation cannot rot: every driver's sample.yaml loads through the real loader,
and its README shows the sample verbatim."""

from __future__ import annotations

from pathlib import Path

import pytest

import drivers
from agent.config import load_config

ROOT = Path(__file__).parents[2]
SAMPLES = sorted(ROOT.glob("drivers/*/sample.yaml"))


def test_the_simulator_has_a_sample() -> None:
    assert ROOT / "drivers/simulator/sample.yaml" in SAMPLES


def test_every_source_type_has_a_sample() -> None:
    assert {sample.parent.name for sample in SAMPLES} >= set(drivers.SOURCE_TYPES)


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.parent.name)
def test_sample_loads(sample: Path) -> None:
    config = load_config(sample, env={})
    assert {source.type for source in config.sources} == {sample.parent.name}


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.parent.name)
def test_readme_includes_the_sample_verbatim(sample: Path) -> None:
    readme = (sample.parent / "README.md").read_text(encoding="utf-8")
    assert f"```yaml\n{sample.read_text(encoding='utf-8')}```" in readme
