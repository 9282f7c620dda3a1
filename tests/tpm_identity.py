"""A TPM-backed device identity for tests: the key created in a running swtpm, a demo CA
certificate for it, an agent config that signs with it, and the agent's way to unseal."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agent.keys.secrets import unseal_secret
from agent.keys.tpm.handles import DEFAULT_HANDLE
from agent.keys.tpm.tcti import parse_tcti
from agent.keys.tpm.worker import TpmWorker
from provisioning.devca import DemoIdentity, make_demo_tpm_identity
from provisioning.swtpm import SoftwareTpm

HANDLE = DEFAULT_HANDLE
FAST_SEALS = "{interval: 100ms, checkpoint_every: 3, checkpoint_interval: 500ms}"
BUFFER = "{dir: state}"


def tpm_identity(tpm: SoftwareTpm, directory: Path, device_id: str) -> DemoIdentity:
    return make_demo_tpm_identity(directory, device_id, parse_tcti(tpm.tcti), HANDLE)


def tpm_agent_config(
    directory: Path, tpm: SoftwareTpm, device_id: str, sources: str, *, seal: str = FAST_SEALS, buffer: str = BUFFER
) -> Path:
    """edgeseal.yaml in `directory`: signer tpm over `tpm`, device-chain.pem beside it;
    `seal` and `buffer` are those sections as YAML flow mappings."""
    path = directory / "edgeseal.yaml"
    path.write_text(
        f"""device:
  id: {device_id}
identity:
  signer: tpm
  tpm: {{tcti: "{tpm.tcti}", handle: 0x{HANDLE:08x}}}
  cert_chain: device-chain.pem
sources:
{sources}
seal: {seal}
buffer: {buffer}
"""
    )
    return path


def unsealed(tpm: SoftwareTpm, directory: Path, name: str) -> bytes:
    """What the agent would unseal: through its TPM thread, as at start."""

    async def main() -> bytes:
        worker = TpmWorker(parse_tcti(tpm.tcti))
        try:
            return await unseal_secret(worker, directory, name)
        finally:
            await worker.close()

    return asyncio.run(main())
