"""A throw-away identity for `edgeseal demo`: a demo CA and one device key, in software
or in a (software) TPM.

Every subject says "demo (not for production)", so nobody mistakes its data for a real
device's. The CA keys are saved encrypted under a random passphrase that is discarded at
once: the demo CA issues this one certificate and can never issue another, so the demo
directory holds nothing that can mint identities.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from tpm2_pytss.cryptography import public_to_key, tpm_ecc_private_key

from agent.errors import KeyError_
from agent.keys.software import load_certificate_chain
from agent.keys.tpm import esys
from agent.keys.tpm.handles import DEFAULT_HANDLE
from agent.keys.tpm.tcti import Tcti
from agent.trust.certs import device_id_of
from provisioning import ca_store
from provisioning.ca import build_csr, create_ca, issue_device_certificate
from provisioning.files import refuse_existing, write_device_key, write_public

DEMO_CA_ORGANIZATION = "edgeseal demo CA (not for production)"
DEMO_DEVICE_ORGANIZATION = "edgeseal demo device (not for production)"


@dataclass(frozen=True)
class DemoIdentity:
    key_path: Path | None  # device-key.pem, 0600; None when the key is in a TPM
    chain_path: Path  # device-chain.pem: device certificate, then the issuing CA
    ca_path: Path  # ca.pem: the demo root, what `edgeseal verify --ca` takes


def make_demo_identity(directory: Path, device_id: str, model: str | None = None) -> DemoIdentity:
    """Create the demo identity in `directory`, or return the one already there.

    Reusing an existing identity keeps the device key, so a rerun of the demo continues
    the same seal chain instead of starting one under a new key.
    """
    directory = Path(directory)
    identity = DemoIdentity(directory / "device-key.pem", directory / "device-chain.pem", directory / "ca.pem")
    paths = [identity.key_path, identity.chain_path, identity.ca_path, directory / "demo-ca"]
    if all(path.exists() for path in paths):
        return _reused(identity, device_id)
    refuse_existing(paths, "remove them to create a new demo identity")

    ca = create_ca(DEMO_CA_ORGANIZATION, common_name_prefix="edgeseal demo")
    ca_store.save(directory / "demo-ca", ca, secrets.token_urlsafe(32).encode())
    device_key = ec.generate_private_key(ec.SECP256R1())
    csr = build_csr(device_key, device_id, model, organization=DEMO_DEVICE_ORGANIZATION)
    device_cert = issue_device_certificate(ca, csr)

    write_device_key(identity.key_path, device_key)
    write_public(identity.chain_path, _pem(device_cert) + _pem(ca.issuing_cert))
    write_public(identity.ca_path, _pem(ca.root_cert))
    return identity


def make_demo_tpm_identity(
    directory: Path, device_id: str, tcti: Tcti, handle: int = DEFAULT_HANDLE, model: str | None = None
) -> DemoIdentity:
    """Like make_demo_identity, with the device key created in the TPM at `handle`.

    The key's template is derived from the device id, so rerunning on the same TPM finds
    the same key, and the certificate already in `directory` is reused.
    """
    directory = Path(directory)
    identity = DemoIdentity(None, directory / "device-chain.pem", directory / "ca.pem")
    with esys.connected(tcti) as esapi:
        public, _ = esys.create_identity_key(esapi, handle, device_id, force=False)
        if identity.chain_path.exists() and identity.ca_path.exists():
            chain = load_certificate_chain(identity.chain_path)
            if chain and chain[0].public_key() == public_to_key(public):
                return _reused(identity, device_id)
        key = esapi.tr_from_tpmpublic(handle)
        try:
            csr = build_csr(tpm_ecc_private_key(esapi, key), device_id, model, organization=DEMO_DEVICE_ORGANIZATION)
        finally:
            esapi.tr_close(key)
    ca = create_ca(DEMO_CA_ORGANIZATION, common_name_prefix="edgeseal demo")
    ca_store.save(directory / "demo-ca", ca, secrets.token_urlsafe(32).encode(), force=True)
    device_cert = issue_device_certificate(ca, csr)
    write_public(identity.chain_path, _pem(device_cert) + _pem(ca.issuing_cert))
    write_public(identity.ca_path, _pem(ca.root_cert))
    return identity


def _reused(identity: DemoIdentity, device_id: str) -> DemoIdentity:
    found = device_id_of(load_certificate_chain(identity.chain_path)[0])
    if found != device_id:
        raise KeyError_(
            f"{identity.chain_path}: holds the demo identity of device {found!r}, not {device_id!r};"
            " use another directory"
        )
    return identity


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)
