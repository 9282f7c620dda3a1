"""The device side of enrollment, over one ESAPI context: create the key, have it sign its
CSR, gather the TPM's evidence about it, answer the CA's challenge, describe it.

Every TPM command goes through agent.keys.tpm.esys (errors become TpmError/TpmUnreachable);
object handles opened here are closed in `finally`.
"""

from __future__ import annotations

import hashlib
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from tpm2_pytss import ESAPI, TPMA_OBJECT, TPMT_PUBLIC
from tpm2_pytss.cryptography import public_to_key, tpm_ecc_private_key

from agent.errors import TpmError, VerificationFailed
from agent.keys.tpm import esys
from agent.keys.tpm.signer import read_device_key
from agent.keys.tpm.templates import key_problems
from agent.trust.certs import key_id
from provisioning.attestation import csr_der
from provisioning.ca import build_csr
from provisioning.evidence import Challenge, Evidence
from provisioning.files import AlreadyExists

# Together they mean the private key was made inside this TPM and can never leave it.
NON_EXPORTABLE = TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.SENSITIVEDATAORIGIN


def keygen(esapi: ESAPI, handle: int, device_id: str, *, force: bool) -> tuple[TPMT_PUBLIC, bool]:
    """(public area, created): the same device id on the same TPM gives the same key."""
    occupied = handle in esys.persistent_handles(esapi)
    try:
        return esys.create_identity_key(esapi, handle, device_id, force=force)
    except TpmError as exc:
        # esys refuses to replace another key with a plain TpmError; for this tool that is
        # material left alone (exit 1), like an existing key file.
        if occupied and not force and not exc.transient:
            raise AlreadyExists(str(exc)) from None
        raise


def device_public_key(public: TPMT_PUBLIC) -> ec.EllipticCurvePublicKey:
    key = public_to_key(public)
    assert isinstance(key, ec.EllipticCurvePublicKey)  # a device key is P-256 (its template, read_device_key)
    return key


def make_csr(esapi: ESAPI, handle: int, device_id: str, model: str | None) -> x509.CertificateSigningRequest:
    """A CSR signed inside the TPM by the device key at `handle`."""
    read_device_key(esapi, handle)
    _check_made_for(esapi, handle, device_id)
    key, _ = esys.open_persistent(esapi, handle)
    try:
        with esys.tss_errors("signing the CSR with the device key"):
            return build_csr(tpm_ecc_private_key(esapi, key), device_id, model)
    finally:
        esapi.tr_close(key)


def _check_made_for(esapi: ESAPI, handle: int, device_id: str) -> None:
    """The key at `handle` is the one `tpm keygen --device-id` makes for this id: only then
    can the same command recreate the certified key after an owner clear."""
    try:
        esys.create_identity_key(esapi, handle, device_id, force=False)  # the same key: a no-op
    except TpmError as exc:
        if exc.transient:
            raise
        raise VerificationFailed(
            f"the key at TPM handle 0x{handle:08x} was not made for device id {device_id}: after an owner"
            f" clear, 'tpm keygen --device-id {device_id}' would make another key; run that command first"
        ) from None


def gather_evidence(esapi: ESAPI, handle: int, csr: x509.CertificateSigningRequest) -> Evidence:
    """TPM2_Certify of the device key, qualified by the CSR's hash, and the EK certificate."""
    public = read_device_key(esapi, handle)
    if device_public_key(public) != csr.public_key():
        raise VerificationFailed(
            f"the CSR is not for the key at TPM handle 0x{handle:08x}: make it with 'csr --tpm' on this TPM"
        )
    key, _ = esys.open_persistent(esapi, handle)
    try:
        attest, signature, ak_public = esys.certify(esapi, key, hashlib.sha256(csr_der(csr)).digest())
    finally:
        esapi.tr_close(key)
    ek_cert, ek_public = esys.endorsement_certificate(esapi)
    return Evidence(ek_cert, ek_public, ak_public, public.marshal(), attest, signature)


def activate(esapi: ESAPI, evidence: Evidence, challenge: Challenge) -> bytes:
    """The secret of the CA's challenge, which only the TPM of the evidence can recover."""
    ek_cert, template = esys.endorsement_template(esapi)
    if ek_cert != evidence.ek_cert:
        # Checked first: on a wrong TPM, swtpm (libtpms < 0.10) answers a failed
        # decryption with TPM_RC_FAILURE, which reads like a broken TPM.
        raise VerificationFailed(
            "this TPM's EK certificate is not the one in the evidence: activate on the TPM that made it"
        )
    return esys.activate_credential(esapi, template, challenge.credential, challenge.secret)


def describe_key(esapi: ESAPI, handle: int) -> dict[str, Any]:
    """What `inspect --tpm` shows of the object at `handle`; stable keys (JSON)."""
    key, public = esys.open_persistent(esapi, handle)
    esapi.tr_close(key)
    attributes = public.objectAttributes
    public_key = _ec_key(public)
    return {
        "handle": f"0x{handle:08x}",
        "kid": key_id(public_key).hex() if public_key else None,
        "public_key": public_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
        if public_key
        else None,
        "attributes": str(TPMA_OBJECT(attributes)).split("|") if attributes else [],
        "non_exportable": attributes & NON_EXPORTABLE == NON_EXPORTABLE,
        "problems": key_problems(public),
    }


def _ec_key(public: TPMT_PUBLIC) -> ec.EllipticCurvePublicKey | None:
    try:
        key = public_to_key(public)
    except ValueError:  # not an asymmetric key
        return None
    return key if isinstance(key, ec.EllipticCurvePublicKey) else None
