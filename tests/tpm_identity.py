"""A TPM-backed device identity for tests: the key created in a running swtpm, a demo CA
certificate for it, and an agent config that signs with it."""

from __future__ import annotations

from pathlib import Path

from agent.keys.tpm.tcti import parse_tcti
from provisioning.devca import DemoIdentity, make_demo_tpm_identity
from provisioning.swtpm import SoftwareTpm

HANDLE = 0x81020001


def tpm_identity(tpm: SoftwareTpm, directory: Path, device_id: str) -> DemoIdentity:
    return make_demo_tpm_identity(directory, device_id, parse_tcti(tpm.tcti), HANDLE)
