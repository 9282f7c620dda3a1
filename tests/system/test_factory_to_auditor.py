"""The whole life of a device identity, through the commands people run: the factory
enrolls a box whose key is in its TPM, the agent seals with it, and an auditor holding
only the manufacturer's root certificate verifies the export."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent import cli as edgeseal
from agent.config import load_config
from provisioning import cli as provision
from provisioning.swtpm import SoftwareTpm
from tests.agent_harness import SIMULATED, run_for
from tests.tpm_identity import tpm_agent_config

DEVICE = "GW-0042"


def test_factory_enrollment_to_a_verified_export(
    swtpm: SoftwareTpm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EDGESEAL_CA_PASSPHRASE", "factory-ca-passphrase-long-enough")
    vendor = tmp_path / "tpm-vendor.pem"
    vendor.write_bytes(swtpm.files.vendor_root_cert.read_bytes() + swtpm.files.ek_issuer_cert.read_bytes())
    ca, box = tmp_path / "factory-ca", tmp_path / "box"

    assert provision.main(["ca", "init", "--dir", str(ca), "--org", "ACME Gateways"]) == 0
    enroll = ["enroll", "--device-id", DEVICE, "--model", "EG-200", "--ca-dir", str(ca), "--tpm-ca", str(vendor)]
    assert provision.main([*enroll, "--dest", str(box), "--tcti", swtpm.tcti]) == 0

    config_path = tpm_agent_config(box, swtpm, DEVICE, SIMULATED)
    stats = run_for(load_config(config_path), 1.5)
    assert stats.seals >= 3
    bundle = tmp_path / "bundle.cbor"
    assert edgeseal.main(["export", "--state-dir", str(box / "state"), "-o", str(bundle)]) == 0

    capsys.readouterr()
    assert edgeseal.main(["verify", str(bundle), "--ca", str(ca / "root.pem")]) == 0
    report = capsys.readouterr().out
    assert ": VALID" in report and DEVICE in report and "ACME Gateways" in report

    other_ca = tmp_path / "other-ca"
    assert provision.main(["ca", "init", "--dir", str(other_ca), "--org", "Someone Else"]) == 0
    assert edgeseal.main(["verify", str(bundle), "--ca", str(other_ca / "root.pem")]) == 1
