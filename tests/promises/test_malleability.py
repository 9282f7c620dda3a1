"""Changes that keep every signature valid: a second encoding of the same signed thing,
or a true but different claim. The verifier must reject the first kind and say exactly
what the second kind proves."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from fixtures import SealedState, export, make_sealed_state, mutate_bundle, open_pipeline, replace

from agent.export import export_bundle
from agent.keys.software import SoftwareSigner
from agent.report import render_text
from agent.trust import cbor, cose, merkle
from agent.trust.bundle import Batch, Bundle, InclusionProof, decode_bundle
from agent.trust.certs import _content_start, _der_element, key_id, parse_der_chain, verify_chain
from agent.trust.leaf import encode_leaf, leaf_hashes
from agent.trust.payloads import (
    CHECKPOINT_CONTENT_TYPE,
    SEAL_CONTENT_TYPE,
    ZERO_HASH,
    CheckpointPayload,
    SealPayload,
    seal_digest,
)
from agent.trust.verify import verify_bundle
from drivers.api import Reading
from provisioning.devca import make_demo_identity


def _state(tmp_path: Path, **kwargs: object) -> SealedState:
    return make_sealed_state(tmp_path, **kwargs)  # type: ignore[arg-type]


def _with_checkpoint(bundle: Bundle, index: int, change: callable) -> Bundle:  # type: ignore[valid-type]
    checkpoints = list(bundle.checkpoints)
    tag = cbor.decode(checkpoints[index])
    checkpoints[index] = cbor.encode(cbor2.CBORTag(18, change(list(tag.value))))
    return replace(bundle, checkpoints=checkpoints)


def _high_s(parts: list) -> list:
    protected, unprotected, payload, signature = parts
    s = int.from_bytes(signature[32:], "big")
    return [protected, unprotected, payload, signature[:32] + (cose.P256_ORDER - s).to_bytes(32, "big")]


def test_a_checkpoint_with_the_other_equivalent_signature_is_rejected(tmp_path: Path) -> None:
    state = _state(tmp_path)
    data = mutate_bundle(export(state), lambda b: _with_checkpoint(b, 0, _high_s))
    report = verify_bundle(data, state.roots())
    assert not report.valid
    assert [(f.where, f.message) for f in report.findings] == [("checkpoints[0]", "signature is not in low-s form")]


def test_a_checkpoint_with_something_in_its_unprotected_header_is_rejected(tmp_path: Path) -> None:
    state = _state(tmp_path)
    certs = export(state)  # any bytes would do; a certificate looks most innocent
    add_chain = lambda parts: [parts[0], {33: certs[:50]}, parts[2], parts[3]]  # noqa: E731
    report = verify_bundle(mutate_bundle(export(state), lambda b: _with_checkpoint(b, 1, add_chain)), state.roots())
    assert [(f.where, f.message) for f in report.findings] == [("checkpoints[1]", "unprotected header must be empty")]


def test_a_bundle_cut_short_says_which_seals_it_leaves_out(tmp_path: Path) -> None:
    state = _state(tmp_path)
    cut = mutate_bundle(export(state), lambda b: replace(b, batches=b.batches[:-1], log_proofs=b.log_proofs[:-1]))
    report = verify_bundle(cut, state.roots())
    assert report.valid and report.last_b == state.batches - 1 and report.checkpointed_size == state.batches
    text = render_text(report, "cut.cbor")
    assert f"b {state.batches}..{state.batches} are in the device log but not in this bundle" in text


def test_data_signed_under_another_device_name_is_rejected(tmp_path: Path) -> None:
    """The key is the device's, but the seals name another device: the certificate
    (serialNumber) decides which device the data is from."""
    identity = make_demo_identity(tmp_path, "GW-1")
    signer = SoftwareSigner.from_files(identity.key_path, identity.chain_path)

    async def seal_as_someone_else() -> bytes:
        buffer, sequencer, sealer = open_pipeline(tmp_path / "state", signer, "GW-2")
        await sequencer.submit([Reading("t", time.time_ns(), 1.0, 0)])
        await sealer.finish()
        data = export_bundle(buffer)[0].encode()
        buffer.close()
        return data

    data = asyncio.run(seal_as_someone_else())
    roots = x509.load_pem_x509_certificates(identity.ca_path.read_bytes())
    report = verify_bundle(data, roots)
    assert [(f.where, f.message) for f in report.findings] == [
        ("bundle", "signed as device(s) ['GW-2'], but the certificate is for 'GW-1'")
    ]
    assert report.device == "GW-1"


def _hand_made_bundle(state: SealedState, seals: list[tuple[int, int, int, int]]) -> bytes:
    """A bundle whose seals (b, boot, s0, n) the device key signs as given, as only a
    device itself could: the verifier's last line against its own key holder."""
    signer = state.signer()
    kid = key_id(signer.public_key)

    def sign(content_type: str, payload: bytes) -> bytes:
        protected = cose.protected_header(content_type, kid)
        signature = asyncio.run(signer.sign_digest(cose.digest_to_sign(protected, payload)))
        return cose.assemble(protected, payload, signature)

    batches, prev, now = [], ZERO_HASH, time.time_ns()
    for b, boot, s0, n in seals:
        readings = [encode_leaf(seq, now, "t", 1.0, 0) for seq in range(s0, s0 + n)]
        salt_key = bytes(range(32))
        root = merkle.root_of(leaf_hashes(salt_key, s0, readings))
        seal = sign(SEAL_CONTENT_TYPE, SealPayload(state.device_id, boot, b, s0, n, root, prev, now).encode())
        batches.append(Batch(seal, salt_key, readings))
        prev = seal_digest(seal)
    log = merkle.MerkleTree([merkle.leaf_hash(batch.seal) for batch in batches])
    checkpoint = sign(CHECKPOINT_CONTENT_TYPE, CheckpointPayload(state.device_id, log.size, log.root(), now).encode())
    certs = [c.public_bytes(Encoding.DER) for c in signer.certificate_chain]
    proofs = [InclusionProof(log.size, i, log.inclusion_proof(i)) for i in range(log.size)]
    return Bundle(certs, batches, [checkpoint], proofs, []).encode()


def test_a_history_from_b_1_must_account_for_seq_1(tmp_path: Path) -> None:
    state = _state(tmp_path)
    report = verify_bundle(_hand_made_bundle(state, [(1, 1, 5, 3), (2, 1, 8, 2)]), state.roots())
    assert [(f.where, f.message) for f in report.findings] == [
        ("batches (b=1)", "the first seal must account for seq 1 (as a reading or in a gap)")
    ]


def test_boot_never_goes_back(tmp_path: Path) -> None:
    state = _state(tmp_path)
    report = verify_bundle(_hand_made_bundle(state, [(1, 2, 1, 3), (2, 1, 4, 2)]), state.roots())
    assert [(f.where, f.message) for f in report.findings] == [("batches[1] (b=2)", "boot went back from 2 to 1")]


def _der(tag: int, content: bytes) -> bytes:
    n = len(content)
    length = (
        bytes([n])
        if n < 128
        else bytes([0x80 | ((n.bit_length() + 7) // 8)]) + n.to_bytes((n.bit_length() + 7) // 8, "big")
    )
    return bytes([tag]) + length + content


def _signature_twin(cert_der: bytes) -> bytes:
    """The same certificate with its ECDSA signature as (r, n - s): valid, other bytes."""
    start = _content_start(cert_der, 0)
    after_tbs = _der_element(cert_der, start)[1]
    after_algorithm = _der_element(cert_der, after_tbs)[1]
    bits_at = _content_start(cert_der, after_algorithm)
    r, s = decode_dss_signature(cert_der[bits_at + 1 :])
    signature = _der(0x03, b"\x00" + encode_dss_signature(r, cose.P256_ORDER - s))
    return _der(0x30, cert_der[start:after_algorithm] + signature)


def test_certificates_must_be_the_bytes_a_seal_carries(tmp_path: Path) -> None:
    state = _state(tmp_path)
    data = export(state)
    twin = _signature_twin(decode_bundle(data).certs[0])
    chain = parse_der_chain([twin, decode_bundle(data).certs[1]])
    verify_chain(chain, state.roots(), [chain[0].not_valid_before_utc])  # a valid certificate...
    report = verify_bundle(mutate_bundle(data, lambda b: replace(b, certs=[twin, *b.certs[1:]])), state.roots())
    assert [(f.where, f.message) for f in report.findings] == [  # ...but not the bytes the log holds
        ("certs", "differ from the certificate chain that seal b=1 carries")
    ]


def test_an_invalid_bundle_claims_no_completeness_gaps_or_log_coverage(tmp_path: Path) -> None:
    state = _state(tmp_path)
    data = mutate_bundle(export(state), lambda b: _with_checkpoint(b, 1, lambda parts: parts))  # untouched...
    assert verify_bundle(data, state.roots()).valid  # ...verifies; now break one seal's signature:
    broken = bytearray(data)
    seal = decode_bundle(data).batches[1].seal
    at = data.find(seal) + len(seal) - 1
    broken[at] ^= 1
    report = verify_bundle(bytes(broken), state.roots())
    assert not report.valid
    assert (report.complete, report.gaps, report.checkpointed_size) == ([], [], None)
