"""COSE interoperability with an independent implementation (pycose): our seals verify
there, and Sign1 messages made there verify here."""

import asyncio

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from pycose.algorithms import Es256
from pycose.headers import KID, Algorithm, ContentType
from pycose.keys import EC2Key
from pycose.keys.curves import P256
from pycose.messages import Sign1Message

from agent.keys.signer import key_id
from agent.keys.software import SoftwareSigner
from agent.trust import cose
from agent.trust.payloads import SEAL_CONTENT_TYPE, ZERO_HASH, SealPayload


def _pycose_key(private: ec.EllipticCurvePrivateKey, *, with_private: bool) -> EC2Key:
    numbers = private.private_numbers()
    fields = {"x": numbers.public_numbers.x.to_bytes(32, "big"), "y": numbers.public_numbers.y.to_bytes(32, "big")}
    if with_private:
        fields["d"] = numbers.private_value.to_bytes(32, "big")
    return EC2Key(crv=P256, **fields)


def _pycose_decode(data: bytes) -> Sign1Message:
    """pycose 1.1's decode() predates cbor2 6, which hands tag contents out as tuples:
    unwrap the tag here and let pycose parse the message structure itself."""
    tagged = cbor2.loads(data)
    assert tagged.tag == 18
    protected, unprotected, payload, signature = tagged.value
    return Sign1Message.from_cose_obj([protected, dict(unprotected), payload, signature], True)


def _seal(signer: SoftwareSigner) -> bytes:
    payload = SealPayload("dev-1", 1, 1, 1, 3, bytes(range(32)), ZERO_HASH, 1_700_000_000_000_000_000).encode()
    protected = cose.protected_header(SEAL_CONTENT_TYPE, key_id(signer.public_key))
    signature = asyncio.run(signer.sign_digest(cose.digest_to_sign(protected, payload)))
    return cose.assemble(protected, payload, signature)


@pytest.fixture
def private_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def test_our_seal_verifies_in_pycose(private_key: ec.EllipticCurvePrivateKey) -> None:
    data = _seal(SoftwareSigner(private_key, []))
    msg = _pycose_decode(data)
    msg.key = _pycose_key(private_key, with_private=False)
    assert msg.verify_signature()
    assert msg.phdr[Algorithm] is Es256
    assert msg.phdr[ContentType] == SEAL_CONTENT_TYPE
    assert msg.phdr[KID] == key_id(private_key.public_key())
    assert SealPayload.decode(msg.payload).dev == "dev-1"


def test_pycose_messages_verify_here_in_low_s_form(private_key: ec.EllipticCurvePrivateKey) -> None:
    """pycose signs with either s; we accept exactly the low-s one of the two equivalent
    signatures (one encoding per message), so a high-s message verifies once normalised."""
    kid = key_id(private_key.public_key())
    forms = set()
    for b in range(1, 21):  # pycose signs deterministically (RFC 6979): vary the payload
        payload = SealPayload("dev-2", 4, b, 100, 1, bytes(32), bytes(32), 5).encode()
        msg = Sign1Message(phdr={Algorithm: Es256, ContentType: SEAL_CONTENT_TYPE, KID: kid}, payload=payload)
        msg.key = _pycose_key(private_key, with_private=True)
        data = msg.encode(tag=True)
        tagged = cbor2.loads(data)
        protected, _, _, signature = tagged.value
        high = int.from_bytes(signature[32:], "big") > cose.P256_HALF_ORDER
        forms.add(high)
        if high:
            with pytest.raises(cose.CoseError, match="low-s"):
                cose.decode(data, SEAL_CONTENT_TYPE)
            data = cose.assemble(protected, payload, signature)  # normalises s
        parsed = cose.decode(data, SEAL_CONTENT_TYPE)
        cose.verify_signature(parsed, private_key.public_key())
        assert parsed.kid == kid and SealPayload.decode(parsed.payload).b == b
    assert forms == {False, True}, "20 signatures without both forms of s: vanishingly unlikely"


def test_a_changed_payload_fails_in_both(private_key: ec.EllipticCurvePrivateKey) -> None:
    data = bytearray(_seal(SoftwareSigner(private_key, [])))
    data[-80] ^= 1  # inside the payload
    msg = _pycose_decode(bytes(data))
    msg.key = _pycose_key(private_key, with_private=False)
    assert not msg.verify_signature()
    with pytest.raises(cose.CoseError):
        parsed = cose.decode(bytes(data), SEAL_CONTENT_TYPE)
        cose.verify_signature(parsed, private_key.public_key())
