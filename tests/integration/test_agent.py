"""The agent for real: simulator -> sequencer -> SQLite on disk -> sealer -> export -> verify."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest
from agent_harness import SIMULATED, export_and_verify, run_for, write_config
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from agent.buffer.store import Buffer
from agent.config import load_config
from agent.errors import KeyError_
from agent.export import Selection, export_bundle
from agent.keys.software import SoftwareSigner, load_key_file
from agent.trust.bundle import decode_bundle
from agent.trust.leaf import decode_leaf
from agent.trust.payloads import SealPayload, open_seal
from agent.trust.verify import verify_bundle
from provisioning.ca import build_csr, create_ca, issue_device_certificate
from provisioning.devca import make_demo_identity


def _seals(data: bytes) -> list[SealPayload]:
    return [open_seal(b.seal)[1] for b in decode_bundle(data).batches]


def test_readings_are_sealed_exported_and_verified_across_restarts(tmp_path: Path) -> None:
    config_path = write_config(tmp_path, sources=SIMULATED)
    config = load_config(config_path)

    first = run_for(config, 1.5)
    report, data = export_and_verify(config_path)
    assert report.valid, report.findings
    sealed = Buffer.open(config.buffer.dir).sealed_through()
    assert report.readings == sealed > 200
    assert report.complete == [(1, sealed)] and report.boots == [1]
    assert report.checkpointed_size == first.log_size == first.seals

    leaves = [decode_leaf(r) for b in decode_bundle(data).batches for r in b.readings]
    flaky = [leaf for leaf in leaves if leaf.tag == "flaky"]
    assert {leaf.quality for leaf in flaky} == {0, 0x800A0000}, "a failing tag yields Bad readings, not silence"
    assert all(leaf.value is None for leaf in flaky if leaf.quality)
    assert {type(leaf.value) for leaf in leaves if leaf.tag == "running"} == {bool}

    second = run_for(config, 1.0)
    report, data = export_and_verify(config_path)
    assert report.valid, report.findings
    assert second.boot == 2 and report.boots == [1, 2]
    seals = _seals(data)
    resumed = next(s for s in seals if s.boot == 2)
    assert resumed.b == first.log_size + 1 and resumed.s0 == sealed + 1, "b and seq continue after a restart"
    assert report.complete == [(1, seals[-1].last_seq)]


def test_first_seal_after_each_start_carries_the_certificate_chain(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, sources=SIMULATED))
    run_for(config, 0.7)
    run_for(config, 0.7)
    buffer = Buffer.open(config.buffer.dir)
    messages = [open_seal(row.cose)[0] for row in buffer.seals()]
    with_chain = [SealPayload.decode(m.payload).b for m in messages if m.x5chain()]
    boots = [SealPayload.decode(m.payload).boot for m in messages]
    assert with_chain == [1, boots.index(2) + 1]
    assert len(messages[0].x5chain()) == 2  # device certificate, then the issuing CA


def test_selective_bundle_discloses_only_the_chosen_tag(tmp_path: Path) -> None:
    config_path = write_config(tmp_path, sources=SIMULATED)
    run_for(load_config(config_path), 1.0)
    report, data = export_and_verify(config_path, Selection(frozenset({"temp"})))
    assert report.valid and report.selective, report.findings
    assert set(report.tags) == {"temp"} and report.readings == report.tags["temp"] > 10
    assert b"salt_key" not in data and b"meter." not in data


class SlowSigner(SoftwareSigner):
    """A hardware TPM's pace: 200-600 ms per signature."""

    async def sign_digest(self, digest: bytes) -> bytes:
        await asyncio.sleep(random.uniform(0.2, 0.6))
        return await super().sign_digest(digest)


def test_a_slow_signer_makes_seals_larger_not_readings_slower(tmp_path: Path) -> None:
    config_path = write_config(tmp_path, sources=SIMULATED, seal="interval: 50ms\n  checkpoint_every: 2")
    config = load_config(config_path)
    signer = SlowSigner.from_files(config.identity.key, config.identity.cert_chain)
    run_for(config, 2.5, signer=signer)
    report, data = export_and_verify(config_path)
    assert report.valid, report.findings
    stamps = sorted(
        decode_leaf(r).ts for b in decode_bundle(data).batches for r in b.readings if decode_leaf(r).tag == "temp"
    )
    # a signer that held readings up would leave a gap of 200-600 ms at every one of its
    # ~10 signatures; one long gap is a disk's fsync on a busy machine, not the signer
    stalls = [b - a for a, b in zip(stamps, stamps[1:]) if b - a >= 150_000_000]
    assert len(stalls) <= 1, f"readings stalled {[round(s / 1e6) for s in stalls]} ms while the signer worked"
    seals = _seals(data)
    assert len(seals) <= 2.5 / 0.2 + 2, "one signature at a time, each covering what arrived meanwhile"
    # ~400 readings/s and a 50 ms seal interval: ~20 per seal with a fast signer
    assert report.readings / len(seals) > 60, "seals grew while the signer was busy"


def test_checkpoints_are_signed_while_a_slow_signer_runs(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, sources=SIMULATED, seal="interval: 50ms\n  checkpoint_every: 2"))
    signer = SlowSigner.from_files(config.identity.key, config.identity.cert_chain)
    stats = run_for(config, 3.0, signer=signer)
    buffer = Buffer.open(config.buffer.dir)
    sizes = [size for size, _ in buffer.checkpoints()]
    buffer.close()
    assert len(sizes) >= 3 and sizes[-1] == stats.log_size, "checkpoints kept coming, and the last covers all"


def test_the_agent_refuses_a_device_id_its_certificate_does_not_name(tmp_path: Path) -> None:
    config_path = write_config(tmp_path, sources=SIMULATED)
    config_path.write_text(config_path.read_text().replace("id: test-gateway-1", "id: another-gateway"))
    with pytest.raises(KeyError_, match="device certificate is for 'test-gateway-1'"):
        run_for(load_config(config_path), 0.5)
    assert not (tmp_path / "state" / "buffer.db").exists(), "refused before touching the buffer"


def test_a_renewed_certificate_keeps_older_data_verifiable(tmp_path: Path) -> None:
    """Same device key, a new certificate whose validity starts after the first run's data:
    the export picks a recorded chain valid for all of it, and the bundle verifies."""
    config_path = write_config(tmp_path, sources=SIMULATED)
    key = load_key_file(tmp_path / "device-key.pem")
    ca = create_ca("Renewal Test Factory")
    (tmp_path / "ca.pem").write_bytes(ca.root_cert.public_bytes(Encoding.PEM))

    def install_certificate() -> None:
        cert = issue_device_certificate(ca, build_csr(key, "test-gateway-1", None))
        chain = cert.public_bytes(Encoding.PEM) + ca.issuing_cert.public_bytes(Encoding.PEM)
        (tmp_path / "device-chain.pem").write_bytes(chain)

    install_certificate()
    config = load_config(config_path)
    run_for(config, 0.8)
    time.sleep(1.1)  # certificate times have one-second resolution
    install_certificate()  # renewed: valid only from now on
    run_for(config, 0.8)
    report, data = export_and_verify(config_path)
    assert report.valid, report.findings
    assert report.boots == [1, 2]
    carried = [open_seal(b.seal)[0].x5chain() for b in decode_bundle(data).batches]
    assert len({tuple(c) for c in carried if c}) == 2, "each run's first seal carries its own chain"


def test_after_a_key_change_an_export_holds_the_newest_key_s_batches(tmp_path: Path) -> None:
    config_path = write_config(tmp_path, sources=SIMULATED)
    config = load_config(config_path)
    run_for(config, 0.8)
    replacement = make_demo_identity(tmp_path / "replacement", "test-gateway-1")  # a new key and CA
    for name in ("device-key.pem", "device-chain.pem", "ca.pem"):
        (tmp_path / name).write_bytes((replacement.key_path.parent / name).read_bytes())
    second = run_for(config, 0.8)
    buffer = Buffer.open(config.buffer.dir, create=False)
    bundle, summary = export_bundle(buffer)
    buffer.close()
    assert summary.left_out_older_key > 0
    report = verify_bundle(bundle.encode(), x509.load_pem_x509_certificates((tmp_path / "ca.pem").read_bytes()))
    assert report.valid, report.findings
    assert report.boots == [2] and report.last_b == second.log_size
