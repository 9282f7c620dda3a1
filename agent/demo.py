"""`edgeseal demo`: the whole stack on one box with embedded defaults.

A simulated press line -> sealed buffer -> export -> verify, with a short summary. The
device key is in a software TPM (swtpm, started in DIR/swtpm) when swtpm is installed,
else in a file, and every output says which.
It leaves the agent's state directory at DIR/state and the root certificate that
verifies its data at DIR/ca.pem. Running it again continues the same device history.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import logging
from pathlib import Path

from cryptography import x509

from agent.buffer.store import Buffer
from agent.config import load_config
from agent.errors import UsageError
from agent.export import Selection, export_bundle
from agent.keys.tpm.handles import DEFAULT_HANDLE
from agent.keys.tpm.tcti import parse_tcti
from agent.report import render_text
from agent.runtime import RunStats, install_signal_handlers, run_agent
from agent.trust.verify import verify_bundle
from provisioning.devca import make_demo_identity, make_demo_tpm_identity
from provisioning.swtpm import SoftwareTpm, manufacture, swtpm_available

DEVICE_ID = "demo-press-line-1"
DISCLOSED_TAG = "press.temperature"


def run_demo(directory: Path, seconds: float) -> int:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{directory}: cannot use as the demo directory: {exc.strerror}") from None
    with contextlib.ExitStack() as stack:
        if swtpm_available():
            tpm = stack.enter_context(SoftwareTpm(manufacture(directory / "swtpm")))
            identity = make_demo_tpm_identity(directory, DEVICE_ID, parse_tcti(tpm.tcti), DEFAULT_HANDLE)
            key_text = f"key in a software TPM (swtpm, {tpm.tcti})"
            identity_yaml = f'identity:\n  signer: tpm\n  tpm: {{tcti: "{tpm.tcti}"}}\n  cert_chain: device-chain.pem\n'
        else:
            identity = make_demo_identity(directory, DEVICE_ID)
            key_text = "SOFTWARE KEY (development only, not a TPM: install swtpm for a TPM-held key)"
            identity_yaml = "identity:\n  signer: software\n  key: device-key.pem\n  cert_chain: device-chain.pem\n"
        config_path = directory / "edgeseal.yaml"
        template = importlib.resources.files("agent").joinpath("demo_config.yaml").read_text()
        config_path.write_text(template.replace("identity: {}\n", identity_yaml))
        config = load_config(config_path)
        logging.getLogger().setLevel(logging.WARNING)  # the demo prints its own summary
        print(f"edgeseal demo: device {DEVICE_ID}, {key_text}, {seconds:g} s")
        stats = asyncio.run(_run_for(config, seconds))
    print(f"  agent       boot {stats.boot}: {stats.seals} seals made, device log size {stats.log_size},", end=" ")
    print(f"{stats.dropped} readings dropped")

    roots = x509.load_pem_x509_certificates(identity.ca_path.read_bytes())
    buffer = Buffer.open(config.buffer.dir, create=False)
    try:
        exports = [
            (directory / "bundle.cbor", Selection()),
            (directory / f"{DISCLOSED_TAG}.cbor", Selection(frozenset({DISCLOSED_TAG}))),
        ]
        valid = True
        for path, selection in exports:
            bundle, _ = export_bundle(buffer, selection)
            path.write_bytes(bundle.encode())
            report = verify_bundle(path.read_bytes(), roots)
            valid &= report.valid
            print(render_text(report, str(path)))
    finally:
        buffer.close()
    print(f"  state       {config.buffer.dir}")
    print(f"  verify with edgeseal verify {directory / 'bundle.cbor'} --ca {identity.ca_path}")
    return 0 if valid else 1


async def _run_for(config: object, seconds: float) -> RunStats:
    stop = asyncio.Event()
    install_signal_handlers(stop)
    asyncio.get_running_loop().call_later(seconds, stop.set)
    stats = await run_agent(config, stop)
    return stats
