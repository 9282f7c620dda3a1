"""`edgeseal-provision chain-key create | show` on a software TPM: the passphrase is sealed
before the keystore exists, the TPM gives back exactly the passphrase that opens it, and
nothing is half-made when something is refused.

Keystores cost most of a second each (scrypt), so the sealed one is made once per module."""

from __future__ import annotations

import io
import stat
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.anchor.keystore import keystore_address, open_keystore
from provisioning.cli import main
from provisioning.swtpm import SoftwareTpm, SwtpmFiles, clone
from tests.tpm_identity import unsealed

SECRET = "chain-key"


@dataclass(frozen=True)
class Created:
    tpm: SoftwareTpm
    keystore: Path
    secrets_dir: Path
    out: str

    @property
    def address(self) -> str:
        return keystore_address(self.keystore)


@pytest.fixture(scope="module")
def created(swtpm_template: SwtpmFiles, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Created]:
    """`chain-key create --passphrase-secret`, run once, on a TPM of this module's own."""
    directory = tmp_path_factory.mktemp("chain-key")
    keystore, secrets_dir = directory / "chain-key.json", directory / "secrets"
    with SoftwareTpm(clone(swtpm_template, directory / "swtpm")) as tpm:
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = main(
                ["chain-key", "create", "--keystore", str(keystore), "--passphrase-secret", SECRET]
                + ["--secrets-dir", str(secrets_dir), "--tcti", tpm.tcti]
            )
        assert code == 0, err.getvalue()
        yield Created(tpm, keystore, secrets_dir, out.getvalue())


def _one_line_error(result, *words: str, code: int = 2) -> None:  # type: ignore[no-untyped-def]
    """Exit `code` with one `edgeseal-provision: ...` line on stderr holding `words`."""
    assert result.code == code, f"exit {result.code}: {result.out}{result.err}"
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgeseal-provision: "), result.err
    for word in words:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"


def test_the_tpm_unseals_the_passphrase_that_opens_the_keystore(created: Created) -> None:
    passphrase = unsealed(created.tpm, created.secrets_dir, SECRET)
    assert len(passphrase.decode("utf-8")) == 43  # 32 random bytes, base64url: text, as the agent reads secrets
    assert open_keystore(created.keystore, passphrase).address == created.address


def test_create_prints_the_address_and_what_the_chain_operator_must_do(created: Created) -> None:
    first, wrote, then = created.out.splitlines()
    assert first == f"chain account {created.address}"
    assert f"sealed to this TPM as secret '{SECRET}' in {created.secrets_dir}" in wrote
    assert f"fund {created.address}" in then and "permission it" in then
    assert f"anchor.key.keystore to {created.keystore}" in then
    assert f"anchor.key.passphrase_secret: {SECRET}" in then
    for private in (created.keystore, created.secrets_dir / f"{SECRET}.sealed"):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600


def test_show_prints_the_same_address(run, created: Created) -> None:  # type: ignore[no-untyped-def]
    result = run("chain-key", "show", "--keystore", created.keystore)
    assert result.code == 0 and result.out == f"{created.address}\n"


def test_an_existing_keystore_is_kept_and_no_secret_is_sealed(run, swtpm, tmp_path) -> None:  # type: ignore[no-untyped-def]
    keystore = tmp_path / "chain-key.json"
    keystore.write_bytes(b"the account in use")
    result = run(
        "chain-key", "create", "--keystore", keystore, "--passphrase-secret", SECRET,
        "--secrets-dir", tmp_path / "secrets", "--tcti", swtpm.tcti,
    )  # fmt: skip
    _one_line_error(result, str(keystore), "--force", code=1)  # existing material left alone
    assert keystore.read_bytes() == b"the account in use"
    assert not (tmp_path / "secrets").exists()


@pytest.mark.parametrize(
    "case, words",
    [
        ("secret exists", ("use --force to replace secret 'chain-key'",)),
        ("bad secret name", ("expected a secret name",)),
        ("TPM stopped", ("cannot reach the TPM",)),
    ],
)
def test_when_sealing_fails_no_keystore_is_written(run, swtpm, tmp_path, case, words) -> None:  # type: ignore[no-untyped-def]
    secrets_dir, name = tmp_path / "secrets", SECRET
    if case == "secret exists":
        secrets_dir.mkdir()
        (secrets_dir / f"{SECRET}.sealed").write_bytes(b"another keystore's passphrase")
    elif case == "bad secret name":
        name = "../escape"
    tcti = swtpm.tcti
    if case in ("TPM stopped", "bad secret name"):  # a bad name is refused before the TPM is opened
        swtpm.stop()
    result = run(
        "chain-key", "create", "--keystore", tmp_path / "chain-key.json", "--passphrase-secret", name,
        "--secrets-dir", secrets_dir, "--tcti", tcti,
    )  # fmt: skip
    _one_line_error(result, *words)
    assert not (tmp_path / "chain-key.json").exists()


def test_a_passphrase_file_for_development(run, tmp_path) -> None:  # type: ignore[no-untyped-def]
    keystore, passphrase_file = tmp_path / "chain-key.json", tmp_path / "passphrase"
    passphrase_file.write_bytes(b"development passphrase\n")
    create = ("chain-key", "create", "--keystore", keystore, "--passphrase-file", passphrase_file)
    result = run(*create)
    assert result.code == 0, result.err
    address = keystore_address(keystore)
    assert f"chain account {address}" in result.out and "development only" in result.out
    assert open_keystore(keystore, b"development passphrase").address == address

    _one_line_error(run(*create), "--force", code=1)
    assert keystore_address(keystore) == address
    assert run(*create, "--force").code == 0
    replaced = run("chain-key", "show", "--keystore", keystore).out.strip()
    assert replaced == keystore_address(keystore) != address


def test_unusable_keystores_and_bad_usage_exit_2(run, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _one_line_error(run("chain-key", "show", "--keystore", tmp_path / "absent.json"), "no chain keystore there")
    (tmp_path / "garbage.json").write_bytes(b"\x00garbage")
    _one_line_error(run("chain-key", "show", "--keystore", tmp_path / "garbage.json"), "expected a v3 keystore")
    empty = tmp_path / "empty-passphrase"
    empty.write_bytes(b"\n")
    result = run("chain-key", "create", "--keystore", tmp_path / "k.json", "--passphrase-file", empty)
    _one_line_error(result, "found an empty file")
    for argv, message in [
        (("--keystore", "k.json"), "one of the arguments --passphrase-secret --passphrase-file is required"),
        (("--keystore", "k.json", "--passphrase-secret", "s", "--passphrase-file", "f"), "not allowed with"),
        (("--passphrase-file", "f"), "required: --keystore"),
    ]:
        result = run("chain-key", "create", *argv)
        assert result.code == 2 and message in result.err and "Traceback" not in result.err, result.err
    assert not (tmp_path / "k.json").exists()


def test_help_says_a_passphrase_file_is_for_development_only(run) -> None:  # type: ignore[no-untyped-def]
    result = run("chain-key", "create", "--help")
    assert result.code == 0 and "development only" in result.out
    assert run("chain-key", "show", "--help").code == 0
