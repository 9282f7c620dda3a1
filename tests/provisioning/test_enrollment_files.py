"""The enrollment files (evidence, challenge) and the CA's stateless challenge secret."""

from __future__ import annotations

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from tpm2_pytss import TPM2B_ENCRYPTED_SECRET, TPM2B_ID_OBJECT, TPMT_PUBLIC
from tpm2_pytss import TPMA_OBJECT as A

from agent.errors import VerificationFailed
from agent.keys.tpm.templates import attestation_template
from agent.trust import cbor
from provisioning.attestation import VerifiedEvidence, tpm_name
from provisioning.challenge import check_response, expected_secret, make_challenge
from provisioning.evidence import (
    Challenge,
    Evidence,
    MalformedEnrollmentFile,
    decode_challenge,
    decode_evidence,
    encode,
)

EVIDENCE = Evidence(b"cert", b"ek", b"ak", b"key", b"attest", b"signature")


def test_evidence_and_challenge_round_trip() -> None:
    assert decode_evidence(encode(EVIDENCE)) == EVIDENCE
    assert decode_challenge(encode(Challenge(b"blob", b"seed"))) == Challenge(b"blob", b"seed")


def test_files_are_deterministic_cbor_maps() -> None:
    data = encode(Challenge(b"blob", b"seed"))
    assert data == cbor.encode({"v": 1, "credential": b"blob", "secret": b"seed"})
    assert cbor.decode(data) == {"v": 1, "credential": b"blob", "secret": b"seed"}


@pytest.mark.parametrize(
    "value, message",
    [
        ({"v": 2, "credential": b"b", "secret": b"s"}, 'expected "v": 1, found 2'),
        ({"v": 1, "credential": b"b"}, "expected the fields ['credential', 'secret'], found ['credential']"),
        ({"v": 1, "credential": b"b", "secret": b"s", "x": b""}, "found ['credential', 'secret', 'x']"),
        ({"v": 1, "credential": "text", "secret": b"s"}, "credential must be non-empty byte strings"),
        ({"v": 1, "credential": b"", "secret": b"s"}, "credential must be non-empty byte strings"),
        ([1, 2], "expected a CBOR map, found list"),
    ],
)
def test_a_challenge_of_the_wrong_shape_is_malformed(value: object, message: str) -> None:
    with pytest.raises(MalformedEnrollmentFile, match="^not challenge") as caught:
        decode_challenge(cbor.encode(value))
    assert message in str(caught.value)


def test_non_deterministic_or_truncated_cbor_is_malformed() -> None:
    length_first = cbor2.dumps({"v": 1, "secret": b"s", "credential": b"b"}, canonical=True)
    for data in (length_first, encode(EVIDENCE)[:-1], b""):
        with pytest.raises(MalformedEnrollmentFile):
            decode_evidence(data)


def _verified() -> VerifiedEvidence:
    """What the CA's side of the challenge uses of verified evidence: an EK-like decryption
    key (ECC here; the real EK is RSA, activated in test_tpm_enrollment_cli) and an AK name."""
    key = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()
    ek = TPMT_PUBLIC.parse("ecc256:aes128cfb", A.RESTRICTED | A.DECRYPT | A.FIXEDTPM | A.FIXEDPARENT)
    ek.unique.ecc.x, ek.unique.ecc.y = key.x.to_bytes(32, "big"), key.y.to_bytes(32, "big")
    ak = attestation_template().publicArea
    no_certificate = None  # not used by the challenge
    return VerifiedEvidence(no_certificate, ek, tpm_name(ak, ak.marshal(), "the AK"), b"")  # type: ignore[arg-type]


def test_the_secret_depends_on_the_ca_the_csr_and_the_ak() -> None:
    ca, other_ca = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    secret = expected_secret(ca, b"csr", b"ak")
    assert len(secret) == 32 and secret == expected_secret(ca, b"csr", b"ak")
    assert secret not in {
        expected_secret(other_ca, b"csr", b"ak"),
        expected_secret(ca, b"csr2", b"ak"),
        expected_secret(ca, b"csr", b"ak2"),
    }


def test_a_challenge_is_tpm_structures_and_only_its_secret_answers_it() -> None:
    ca, verified = ec.generate_private_key(ec.SECP256R1()), _verified()
    challenge = make_challenge(ca, b"csr", verified)
    assert TPM2B_ID_OBJECT.unmarshal(challenge.credential)[1] == len(challenge.credential)
    assert TPM2B_ENCRYPTED_SECRET.unmarshal(challenge.secret)[1] == len(challenge.secret)
    assert make_challenge(ca, b"csr", verified) != challenge  # a fresh seed each time, same secret
    check_response(ca, b"csr", verified, expected_secret(ca, b"csr", verified.ak_name))
    with pytest.raises(VerificationFailed, match="the response does not answer this CA's challenge"):
        check_response(ca, b"csr", verified, bytes(32))
