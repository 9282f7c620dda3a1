"""TPM-sealed secrets: sealed on this TPM, opened by the agent's TPM thread, useless on
any other TPM, and every misuse a clear error."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from agent.errors import KeyError_, TpmError
from agent.keys.secrets import seal_secret
from agent.keys.tpm import esys
from agent.keys.tpm.tcti import parse_tcti
from provisioning.swtpm import SoftwareTpm, manufacture
from tests.tpm_identity import unsealed


def _seal(tpm: SoftwareTpm, directory: Path, name: str, value: bytes, force: bool = False) -> Path:
    with esys.connected(parse_tcti(tpm.tcti)) as esapi:
        return seal_secret(esapi, directory, name, value, force=force)


def test_a_sealed_secret_opens_on_its_tpm_and_the_file_holds_no_plaintext(swtpm: SoftwareTpm, tmp_path: Path) -> None:
    path = _seal(swtpm, tmp_path, "mqtt-password", b"correct horse battery staple")
    assert path == tmp_path / "mqtt-password.sealed"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert b"horse" not in path.read_bytes()
    assert unsealed(swtpm, tmp_path, "mqtt-password") == b"correct horse battery staple"


def test_another_tpm_cannot_open_it(swtpm: SoftwareTpm, tmp_path: Path) -> None:
    _seal(swtpm, tmp_path / "secrets", "chain-passphrase", b"s3cret")
    with SoftwareTpm(manufacture(tmp_path / "other-tpm")) as other:  # its own seeds
        with pytest.raises(TpmError, match="unsealing a secret"):
            unsealed(other, tmp_path / "secrets", "chain-passphrase")


def test_an_existing_secret_is_replaced_only_with_force(swtpm: SoftwareTpm, tmp_path: Path) -> None:
    _seal(swtpm, tmp_path, "token", b"one")
    with pytest.raises(KeyError_, match="use --force"):
        _seal(swtpm, tmp_path, "token", b"two")
    _seal(swtpm, tmp_path, "token", b"two", force=True)
    assert unsealed(swtpm, tmp_path, "token") == b"two"


def test_misuse_is_a_clear_error(swtpm: SoftwareTpm, tmp_path: Path) -> None:
    with pytest.raises(KeyError_, match="no sealed secret 'absent'.*secret seal absent"):
        unsealed(swtpm, tmp_path, "absent")
    with pytest.raises(KeyError_, match="expected a secret name"):
        _seal(swtpm, tmp_path, "../escape", b"x")
    (tmp_path / "garbage.sealed").write_bytes(b"\xa1\x61v\x02")
    with pytest.raises(KeyError_, match="not a version 1 sealed secret file"):
        unsealed(swtpm, tmp_path, "garbage")
