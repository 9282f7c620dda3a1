"""The CA's two enrollment steps over a CA directory: answer evidence with a challenge,
and issue a certificate once the challenge is answered.

A production CA issues only with TPM proof (evidence that verifies, plus the response to
its challenge); a development CA may also issue for a bare CSR (software keys: demo,
tests). Either way, every issued certificate is logged before it is returned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from agent.errors import VerificationFailed
from provisioning import ca_store, issuance_log
from provisioning.attestation import VerifiedEvidence, csr_der, verify_evidence
from provisioning.ca import check_csr, issue_device_certificate
from provisioning.challenge import check_response, make_challenge
from provisioning.evidence import Challenge, Evidence


@dataclass(frozen=True)
class TpmProof:
    evidence: Evidence
    response: bytes  # the secret the TPM recovered from the challenge
    trusted: Sequence[x509.Certificate]  # TPM vendor CA certificates


@dataclass(frozen=True)
class Issued:
    certificate: x509.Certificate
    issuing_cert: x509.Certificate
    evidence: VerifiedEvidence | None


class EvidenceRequired(VerificationFailed):
    """A production CA was asked to certify a key without proof that it lives in a TPM."""


def challenge(
    ca_dir: Path,
    passphrase: bytes,
    csr: x509.CertificateSigningRequest,
    evidence: Evidence,
    trusted: Sequence[x509.Certificate],
) -> Challenge:
    check_csr(csr)
    verified = verify_evidence(evidence, csr, trusted)
    issuing_key, _ = ca_store.load_issuer(ca_dir, passphrase)
    return make_challenge(issuing_key, csr_der(csr), verified)


def issue(ca_dir: Path, passphrase: bytes, csr: x509.CertificateSigningRequest, proof: TpmProof | None) -> Issued:
    if proof is None and ca_store.load_profile(ca_dir) == ca_store.PRODUCTION:
        raise EvidenceRequired(
            f"{ca_dir} is a production CA: it certifies only keys proven to live in a TPM. Give --attest,"
            " --response and --tpm-ca (the 'tpm attest', 'ca challenge', 'tpm activate' steps), or use a CA"
            " made with 'ca init --development' for software keys"
        )
    check_csr(csr)
    issuing_key, issuing_cert = ca_store.load_issuer(ca_dir, passphrase)
    verified = None
    if proof is not None:
        verified = verify_evidence(proof.evidence, csr, proof.trusted)
        check_response(issuing_key, csr_der(csr), verified, proof.response)
    certificate = issue_device_certificate((issuing_key, issuing_cert), csr)
    issuance_log.append(ca_dir, issuance_log.record(certificate, verified))
    return Issued(certificate, issuing_cert, verified)
