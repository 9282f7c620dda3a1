import asyncio
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature

from agent.errors import KeyError_
from agent.keys.signer import Signer
from agent.keys.software import SoftwareSigner, load_key_file
from provisioning.devca import make_demo_identity


@pytest.fixture
def identity(tmp_path: Path):  # type: ignore[no-untyped-def]
    return make_demo_identity(tmp_path, "key-test")


def test_signs_a_digest_as_raw_r_s_that_verifies(identity) -> None:  # type: ignore[no-untyped-def]
    signer = SoftwareSigner.from_files(identity.key_path, identity.chain_path)
    assert isinstance(signer, Signer)
    digest = bytes(range(32))
    raw = asyncio.run(signer.sign_digest(digest))
    assert len(raw) == 64
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    signer.public_key.verify(der, digest, ec.ECDSA(Prehashed(hashes.SHA256())))


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_refuses_a_key_file_others_can_read(identity, mode: int) -> None:  # type: ignore[no-untyped-def]
    os.chmod(identity.key_path, mode)
    with pytest.raises(KeyError_, match="chmod 600"):
        load_key_file(identity.key_path)


def test_refuses_a_certificate_of_another_key(identity, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    other = make_demo_identity(tmp_path / "other", "key-test")
    with pytest.raises(KeyError_, match="does not belong"):
        SoftwareSigner.from_files(identity.key_path, other.chain_path)


def test_missing_and_garbage_key_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(KeyError_, match="cannot read"):
        load_key_file(tmp_path / "absent.pem")
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"not a key")
    garbage.chmod(0o600)
    with pytest.raises(KeyError_, match="not an unencrypted PEM"):
        load_key_file(garbage)
