"""A TPM gateway end to end: its chain account made by `edgeseal-provision chain-key
create` with the keystore's passphrase sealed to its TPM, the agent unsealing it at
start, anchoring, and an export whose anchor records verify."""

from __future__ import annotations

from pathlib import Path

from agent_harness import SIMULATED, export_and_verify, run_for
from anchor_harness import ChainAccount, anchor_section, deploy_registry, fund
from anvil_chain import Anvil

from agent.anchor.keystore import keystore_address
from agent.config import load_config
from agent.trust.bundle import decode_bundle
from provisioning import cli as provision
from provisioning.swtpm import SoftwareTpm
from tests.tpm_identity import tpm_agent_config, tpm_identity

DEVICE = "tpm-gateway-1"


def test_the_keystore_passphrase_is_unsealed_by_the_gateways_tpm(
    swtpm: SoftwareTpm, tmp_path: Path, anvil: Anvil
) -> None:
    tpm_identity(swtpm, tmp_path, DEVICE)
    config = tpm_agent_config(tmp_path, swtpm, DEVICE, SIMULATED)
    keystore = tmp_path / "chain-key.json"
    create = ["chain-key", "create", "--keystore", str(keystore), "--passphrase-secret", "chain-key"]
    assert provision.main([*create, "--secrets-dir", str(tmp_path / "secrets"), "--tcti", swtpm.tcti]) == 0
    assert (tmp_path / "secrets" / "chain-key.sealed").exists()
    account = ChainAccount(keystore, tmp_path / "unused", keystore_address(keystore))
    contract = deploy_registry(anvil)
    fund(anvil, account.address)
    section = anchor_section(anvil.url, anvil.chain_id, contract, account, passphrase_secret="chain-key")
    config.write_text(config.read_text() + section)

    run_for(load_config(config), 3.0)

    report, data = export_and_verify(config)
    assert report.valid, report.findings
    assert decode_bundle(data).anchors
