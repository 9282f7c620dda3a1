"""The CA's credential challenge: proof that the AK lives in the TPM of the EK.

TPM2_MakeCredential (done in software here) encrypts a secret to the EK, bound to the AK's
name; TPM2_ActivateCredential releases it only inside the TPM that holds that EK and has
an object of that name loaded. The CA stays stateless: the secret is
HMAC-SHA256(K, SHA-256(CSR DER) || AK name) with K derived from the issuing CA's private
key (HKDF-SHA256 over its private scalar), so `ca issue` recomputes it instead of
remembering it, and it is worthless for any other CSR or AK.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from tpm2_pytss import TPM2B_NAME, TPM2B_PUBLIC
from tpm2_pytss.utils import make_credential

from agent.errors import VerificationFailed
from provisioning.attestation import VerifiedEvidence
from provisioning.evidence import Challenge

_KEY_LABEL = b"edgeseal enrollment challenge v1"


def expected_secret(issuing_key: ec.EllipticCurvePrivateKey, csr_der: bytes, ak_name: bytes) -> bytes:
    scalar = issuing_key.private_numbers().private_value.to_bytes(32, "big")
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_KEY_LABEL).derive(scalar)
    return hmac.new(key, hashlib.sha256(csr_der).digest() + ak_name, hashlib.sha256).digest()


def make_challenge(issuing_key: ec.EllipticCurvePrivateKey, csr_der: bytes, evidence: VerifiedEvidence) -> Challenge:
    """The credential for verified evidence; a fresh encryption each time, the same secret."""
    secret = expected_secret(issuing_key, csr_der, evidence.ak_name)
    blob, encrypted_seed = make_credential(
        TPM2B_PUBLIC(publicArea=evidence.ek_public), secret, TPM2B_NAME(evidence.ak_name)
    )
    return Challenge(blob.marshal(), encrypted_seed.marshal())


def check_response(
    issuing_key: ec.EllipticCurvePrivateKey, csr_der: bytes, evidence: VerifiedEvidence, response: bytes
) -> None:
    if not hmac.compare_digest(expected_secret(issuing_key, csr_der, evidence.ak_name), response):
        raise VerificationFailed(
            "the response does not answer this CA's challenge for this CSR and TPM: it was activated by"
            " another TPM, for another CSR, or by another CA's challenge"
        )
