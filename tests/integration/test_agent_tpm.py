"""The agent signing with its key in a (software) TPM: every seal and checkpoint verifies
against the CA, and the agent refuses to start when the TPM key is not the certified one."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import load_config
from agent.errors import KeyError_
from provisioning.devca import make_demo_identity
from provisioning.swtpm import SoftwareTpm
from tests.agent_harness import SIMULATED, export_and_verify, run_for
from tests.tpm_identity import tpm_agent_config, tpm_identity

DEVICE = "tpm-gateway-1"


def test_the_agent_seals_with_the_tpm_key_and_the_bundle_verifies(swtpm: SoftwareTpm, tmp_path: Path) -> None:
    tpm_identity(swtpm, tmp_path, DEVICE)
    config_path = tpm_agent_config(tmp_path, swtpm, DEVICE, SIMULATED)
    stats = run_for(load_config(config_path), 1.5)
    assert stats.seals >= 5
    report, _ = export_and_verify(config_path)
    assert report.valid, report.findings
    assert report.readings > 0 and report.device == DEVICE


def test_the_agent_refuses_to_start_when_the_certificate_is_not_for_the_tpm_key(
    swtpm: SoftwareTpm, tmp_path: Path
) -> None:
    tpm_identity(swtpm, tmp_path / "tpm", DEVICE)
    make_demo_identity(tmp_path, DEVICE)  # a software key's chain where the config looks
    with pytest.raises(KeyError_, match="not for the key at TPM handle"):
        run_for(load_config(tpm_agent_config(tmp_path, swtpm, DEVICE, SIMULATED)), 0.5)
    assert not (tmp_path / "state").exists()  # refused before opening the buffer
