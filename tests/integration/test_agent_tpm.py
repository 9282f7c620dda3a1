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
from tests.tpm_identity import HANDLE, tpm_identity

DEVICE = "tpm-gateway-1"


def _config(directory: Path, tpm: SoftwareTpm) -> Path:
    path = directory / "edgeseal.yaml"
    path.write_text(
        f"""device:
  id: {DEVICE}
identity:
  signer: tpm
  tpm: {{tcti: "{tpm.tcti}", handle: 0x{HANDLE:08x}}}
  cert_chain: device-chain.pem
sources:
{SIMULATED}
seal:
  interval: 100ms
  checkpoint_every: 3
  checkpoint_interval: 500ms
buffer:
  dir: state
"""
    )
    return path


def test_the_agent_seals_with_the_tpm_key_and_the_bundle_verifies(swtpm: SoftwareTpm, tmp_path: Path) -> None:
    tpm_identity(swtpm, tmp_path, DEVICE)
    config_path = _config(tmp_path, swtpm)
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
        run_for(load_config(_config(tmp_path, swtpm)), 0.5)
    assert not (tmp_path / "state").exists()  # refused before opening the buffer
