"""Changes that keep every signature valid: a second encoding of the same signed thing,
or a true but different claim. The verifier must reject the first kind and say exactly
what the second kind proves."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import cbor2
from cryptography import x509
from fixtures import SealedState, export, make_sealed_state, mutate_bundle, open_pipeline, replace

from agent.export import export_bundle
from agent.keys.software import SoftwareSigner
from agent.report import render_text
from agent.trust import cbor, cose
from agent.trust.bundle import Bundle
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
