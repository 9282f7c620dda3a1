"""Installing the device certificate chain where the agent reads it, after checking that
it certifies the key in this device's TPM (the agent's start-up self-test would refuse
anything else, on site, much later)."""

from __future__ import annotations

import json
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from agent.errors import KeyError_, VerificationFailed
from agent.keys.tpm.tcti import Tcti
from agent.trust.certs import key_id
from provisioning.chain import chain_problems
from provisioning.files import AlreadyExists, write_public_atomic

CHAIN_FILE = "device-chain.pem"


def check_chain(
    chain: list[x509.Certificate], tpm_key: ec.EllipticCurvePublicKey, handle: int, root: x509.Certificate | None
) -> None:
    if not chain:
        raise KeyError_("the chain file holds no certificate")
    if any(cert.subject == cert.issuer for cert in chain):
        raise KeyError_(
            "the chain holds a self-issued (root) certificate: install the device certificate and its"
            " intermediates only (what 'ca issue --chain-out' writes); verifiers bring their own root"
        )
    certified = chain[0].public_key()
    if certified != tpm_key:
        kid = key_id(certified).hex() if isinstance(certified, ec.EllipticCurvePublicKey) else "not an EC key"
        raise VerificationFailed(
            f"the certificate is for another key (kid {kid}) than the one at TPM handle 0x{handle:08x}"
            f" (kid {key_id(tpm_key).hex()}): it belongs to another device, or the key was re-created"
        )
    problems = chain_problems(chain, root) if root is not None else []
    if problems:
        raise VerificationFailed("the chain does not lead to the root given:\n  " + "\n  ".join(problems))


def install_chain(dest: Path, chain: list[x509.Certificate], *, force: bool) -> tuple[Path, bool]:
    """(path, whether it changed): the same chain again is a no-op; another one needs `force`."""
    path = dest / CHAIN_FILE
    data = b"".join(cert.public_bytes(Encoding.PEM) for cert in chain)
    try:
        existing = path.read_bytes() if path.exists() else None
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KeyError_(f"{dest}: cannot install into it: {exc.strerror}") from None
    if existing == data:
        return path, False
    if existing is not None and not force:
        raise AlreadyExists(f"{path}: holds another certificate chain; use --force to replace it")
    write_public_atomic(path, data)
    return path, True


def config_snippet(tcti: Tcti, handle: int, chain_path: Path) -> str:
    """The identity section for edgeseal.yaml."""
    return (
        "identity:\n"
        "  signer: tpm\n"
        "  tpm:\n"
        f"    tcti: {json.dumps(str(tcti))}\n"
        f"    handle: 0x{handle:08x}\n"
        f"  cert_chain: {json.dumps(str(chain_path.resolve()))}\n"  # a JSON string is a YAML string
    )
