"""`edgeseal-provision secret seal NAME`: the value from stdin or the environment, never argv."""

from __future__ import annotations

import io

import pytest

from tests.tpm_identity import unsealed


def test_seals_what_stdin_gives_without_its_newline(run, swtpm, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"broker-password\n")))
    result = run("secret", "seal", "mqtt-password", "--dir", tmp_path, "--tcti", swtpm.tcti)
    assert result.code == 0, result.err
    assert "sealed secret 'mqtt-password'" in result.out
    assert unsealed(swtpm, tmp_path, "mqtt-password") == b"broker-password"


def test_seals_an_environment_variable(run, swtpm, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CHAIN_PASSPHRASE", "keystore-passphrase")
    args = ("secret", "seal", "chain", "--dir", tmp_path, "--tcti", swtpm.tcti, "--from-env", "CHAIN_PASSPHRASE")
    assert run(*args).code == 0
    assert run(*args).code == 2  # exists: --force needed
    assert run(*args, "--force").code == 0
    assert unsealed(swtpm, tmp_path, "chain") == b"keystore-passphrase"


@pytest.mark.parametrize(
    "stdin, extra, message",
    [
        (b"", (), "the secret is empty"),
        (b"x" * 129, (), "at most 128 bytes"),
        (b"x", ("--from-env", "UNSET_VARIABLE_FOR_TEST"), "UNSET_VARIABLE_FOR_TEST is not set"),
        (b"x", ("--tcti", "/dev/tpm0"), "--tcti"),
    ],
)
def test_refusals_are_usage_errors(run, swtpm, tmp_path, monkeypatch, stdin, extra, message) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    options = ("--tcti", swtpm.tcti) if "--tcti" not in extra else ()
    result = run("secret", "seal", "name", "--dir", tmp_path, *options, *extra)
    assert result.code == 2 and message in result.err, result.err
    assert not (tmp_path / "name.sealed").exists()
