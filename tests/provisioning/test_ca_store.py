"""The CA directory on disk: encrypted keys, 0600, no silent replacement."""

from __future__ import annotations

import json
import stat

import pytest

from agent.errors import KeyError_, UsageError
from provisioning import ca_store
from provisioning.ca import create_ca
from provisioning.files import AlreadyExists

PASSPHRASE = b"sixteen-bytes-or-more"


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_round_trip(tmp_path, ca):
    ca_store.save(tmp_path / "ca", ca, PASSPHRASE)
    loaded = ca_store.load(tmp_path / "ca", PASSPHRASE)
    assert loaded.root_cert == ca.root_cert and loaded.issuing_cert == ca.issuing_cert
    assert loaded.root_key.public_key() == ca.root_key.public_key()
    assert loaded.issuing_key.public_key() == ca.issuing_key.public_key()


def test_keys_are_encrypted_and_private(tmp_path, ca):
    directory = tmp_path / "ca"
    ca_store.save(directory, ca, PASSPHRASE)
    assert _mode(directory) == 0o700
    for name in (ca_store.ROOT_KEY, ca_store.ISSUING_KEY):
        assert _mode(directory / name) == 0o600
        assert (directory / name).read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")


def test_issuer_loads_without_the_root_key(tmp_path, ca):
    ca_store.save(tmp_path, ca, PASSPHRASE)
    (tmp_path / ca_store.ROOT_KEY).unlink()  # kept offline
    key, cert = ca_store.load_issuer(tmp_path, PASSPHRASE)
    assert cert == ca.issuing_cert and key.public_key() == ca.issuing_key.public_key()


def test_wrong_passphrase_is_a_key_error(tmp_path, ca):
    ca_store.save(tmp_path, ca, PASSPHRASE)
    with pytest.raises(KeyError_, match="wrong passphrase"):
        ca_store.load(tmp_path, b"not-the-passphrase")


def test_existing_ca_is_not_replaced(tmp_path, ca):
    ca_store.save(tmp_path, ca, PASSPHRASE)
    before = (tmp_path / ca_store.ROOT_KEY).read_bytes()
    with pytest.raises(AlreadyExists, match="--force"):
        ca_store.save(tmp_path, create_ca("Other"), PASSPHRASE)
    assert (tmp_path / ca_store.ROOT_KEY).read_bytes() == before


def test_force_replaces_and_keeps_keys_private(tmp_path, ca):
    ca_store.save(tmp_path, ca, PASSPHRASE)
    (tmp_path / ca_store.ISSUING_KEY).chmod(0o644)
    other = create_ca("Other")
    ca_store.save(tmp_path, other, PASSPHRASE, force=True)
    assert ca_store.load(tmp_path, PASSPHRASE).root_cert == other.root_cert
    assert _mode(tmp_path / ca_store.ISSUING_KEY) == 0o600
    assert not list(tmp_path.glob(".*.tmp"))


def test_key_not_matching_its_certificate_is_refused(tmp_path, ca):
    ca_store.save(tmp_path / "a", ca, PASSPHRASE)
    ca_store.save(tmp_path / "b", create_ca("Other"), PASSPHRASE)
    (tmp_path / "a" / ca_store.ISSUING_KEY).replace(tmp_path / "b" / ca_store.ISSUING_KEY)
    with pytest.raises(KeyError_, match="does not belong"):
        ca_store.load(tmp_path / "b", PASSPHRASE)


def test_missing_file_is_a_key_error(tmp_path):
    with pytest.raises(KeyError_, match="cannot read CA certificate"):
        ca_store.load(tmp_path, PASSPHRASE)


def test_short_passphrase_is_refused(tmp_path, ca):
    with pytest.raises(UsageError, match="at least 16"):
        ca_store.save(tmp_path, ca, b"short")
    assert not list(tmp_path.iterdir())


def test_profile_is_production_unless_development(tmp_path, ca):
    ca_store.save(tmp_path / "prod", ca, PASSPHRASE)
    ca_store.save(tmp_path / "dev", ca, PASSPHRASE, development=True)
    assert ca_store.load_profile(tmp_path / "prod") == ca_store.PRODUCTION
    assert ca_store.load_profile(tmp_path / "dev") == ca_store.DEVELOPMENT
    assert json.loads((tmp_path / "dev" / ca_store.PROFILE).read_text()) == {"v": 1, "profile": "development"}


def test_a_ca_without_profile_is_production(tmp_path, ca):
    ca_store.save(tmp_path, ca, PASSPHRASE, development=True)
    (tmp_path / ca_store.PROFILE).unlink()  # a CA made before profiles, or a replacement cut short
    assert ca_store.load_profile(tmp_path) == ca_store.PRODUCTION


def test_a_damaged_profile_is_refused(tmp_path, ca):
    ca_store.save(tmp_path, ca, PASSPHRASE)
    (tmp_path / ca_store.PROFILE).write_text('{"profile": "lenient"}')
    with pytest.raises(KeyError_, match="profile.json: expected"):
        ca_store.load_profile(tmp_path)


def test_a_failed_replacement_leaves_the_strict_profile(tmp_path, ca):
    ca_store.save(tmp_path, ca, PASSPHRASE, development=True)
    (tmp_path / ca_store.ROOT_CERT).unlink()
    (tmp_path / ca_store.ROOT_CERT).mkdir()  # the new root certificate cannot be written
    with pytest.raises(KeyError_, match="cannot write"):
        ca_store.save(tmp_path, create_ca("Other"), PASSPHRASE, force=True)
    assert ca_store.load_profile(tmp_path) == ca_store.PRODUCTION
