"""The demo identity: a real chain, a private key, and a CA nobody can reuse."""

from __future__ import annotations

import stat

import pytest
from cryptography import x509

from agent.errors import KeyError_
from agent.keys.software import SoftwareSigner, load_certificate_chain
from provisioning import ca_store
from provisioning.chain import chain_problems
from provisioning.devca import make_demo_identity
from provisioning.files import AlreadyExists


@pytest.fixture
def demo(tmp_path):
    return make_demo_identity(tmp_path, "demo-gw-1", "simulated")


def test_chain_verifies_against_ca_pem(demo):
    chain = load_certificate_chain(demo.chain_path)
    (root,) = load_certificate_chain(demo.ca_path)
    assert len(chain) == 2
    assert chain_problems(chain, root) == []


def test_key_is_private_and_matches_the_certificate(demo):
    assert stat.S_IMODE(demo.key_path.stat().st_mode) == 0o600
    signer = SoftwareSigner.from_files(demo.key_path, demo.chain_path)
    assert signer.certificate_chain[0].public_key() == signer.public_key


def test_every_subject_says_demo(demo):
    for cert in load_certificate_chain(demo.chain_path) + load_certificate_chain(demo.ca_path):
        (org,) = cert.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)
        assert "demo" in org.value and "not for production" in org.value


def test_demo_ca_keys_are_encrypted(demo, tmp_path):
    for name in (ca_store.ROOT_KEY, ca_store.ISSUING_KEY):
        path = tmp_path / "demo-ca" / name
        assert path.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_rerun_keeps_the_identity(demo, tmp_path):
    key = demo.key_path.read_bytes()
    assert make_demo_identity(tmp_path, "demo-gw-1") == demo
    assert demo.key_path.read_bytes() == key


def test_rerun_for_another_device_is_refused(demo, tmp_path):
    with pytest.raises(KeyError_, match="demo-gw-1"):
        make_demo_identity(tmp_path, "demo-gw-2")


def test_partial_identity_is_not_overwritten(demo):
    demo.key_path.unlink()
    with pytest.raises(AlreadyExists):
        make_demo_identity(demo.ca_path.parent, "demo-gw-1")
    assert not demo.key_path.exists()


def test_cli_inspect_accepts_the_demo_chain(demo, run):
    assert run("inspect", demo.chain_path, "--ca", demo.ca_path).code == 0
