"""The chain account's keystore: a standard v3 keystore any Ethereum tool opens, written
0600 and atomically, never replaced by accident, and every bad file one clear error.

scrypt with eth_account's default parameters costs most of a second per encryption or
decryption, so one keystore is made and opened per module; checks of a file's shape fail
before any key derivation and cost nothing."""

from __future__ import annotations

import copy
import hashlib
import json
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import eth_keyfile
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import is_checksum_address, keccak

from agent.anchor.keystore import create_keystore, keystore_address, open_keystore, read_passphrase_file
from agent.errors import KeyError_

PASSPHRASE = b"correct horse battery staple"
DELETE = object()


@dataclass(frozen=True)
class Made:
    path: Path
    address: str

    def document(self) -> dict[str, Any]:
        return json.loads(self.path.read_text())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Made:
    path = tmp_path_factory.mktemp("keystore") / "chain-key.json"
    return Made(path, create_keystore(path, PASSPHRASE))


@pytest.fixture(scope="module")
def opened(made: Made) -> LocalAccount:
    return open_keystore(made.path, PASSPHRASE)


def _one_line(error: pytest.ExceptionInfo[KeyError_], path: Path, *words: str) -> None:
    message = str(error.value)
    assert "\n" not in message and message.startswith(str(path)), message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


def _write(path: Path, document: object) -> Path:
    path.write_text(json.dumps(document))
    return path


def test_the_address_is_eip55_and_read_without_the_passphrase(made: Made) -> None:
    assert is_checksum_address(made.address)
    assert keystore_address(made.path) == made.address
    assert made.document()["address"].lower() == made.address[2:].lower()


def test_the_file_is_a_standard_scrypt_keystore_private_from_the_start(made: Made, opened: LocalAccount) -> None:
    assert stat.S_IMODE(made.path.stat().st_mode) == 0o600
    assert [p.name for p in made.path.parent.iterdir()] == [made.path.name]  # no temporary file left
    document = made.document()
    assert document["version"] == 3 and document["crypto"]["kdf"] == "scrypt"
    assert document["crypto"]["kdfparams"]["n"] == 2**18  # eth_account's default work factor
    assert bytes(Account.decrypt(document, PASSPHRASE.decode())) == bytes(opened.key)  # eth_account opens it too


def test_the_opened_account_signs_transactions_that_recover_to_its_address(made: Made, opened: LocalAccount) -> None:
    assert opened.address == made.address
    transaction: dict[str, Any] = {
        "type": 2,
        "chainId": 1337,
        "nonce": 0,
        "to": "0x" + "11" * 20,
        "value": 0,
        "data": "0x1234",
        "gas": 60_000,
        "maxFeePerGas": 2 * 10**9,
        "maxPriorityFeePerGas": 10**9,
    }
    signed = opened.sign_transaction(transaction)
    assert Account.recover_transaction(signed.raw_transaction) == made.address


def test_a_wrong_passphrase_is_one_clear_line(made: Made) -> None:
    with pytest.raises(KeyError_) as error:
        open_keystore(made.path, b"not the passphrase")
    _one_line(error, made.path, "wrong passphrase")


def test_an_address_field_edited_to_show_another_account_is_refused(made: Made, tmp_path: Path) -> None:
    document = made.document()
    other = Account.create().address
    document["address"] = other[2:]
    path = _write(tmp_path / "edited.json", document)
    assert keystore_address(path) == other  # what the file claims, without the passphrase
    with pytest.raises(KeyError_) as error:
        open_keystore(path, PASSPHRASE)
    _one_line(error, path, f"address field says {other}", f"its key is {made.address}")


def _changed(document: dict[str, Any], field: str, value: object) -> dict[str, Any]:
    changed = copy.deepcopy(document)
    *parents, last = field.split(".")
    target = changed
    for key in parents:
        target = target[key]
    if value is DELETE:
        del target[last]
    else:
        target[last] = value
    return changed


READERS: dict[str, Callable[[Path], object]] = {
    "address": keystore_address,
    "open": lambda path: open_keystore(path, PASSPHRASE),
}
SHAPES = {
    "version 4": ("version", 4, '"version": 3, found 4'),
    "no address": ("address", DELETE, '"address": 40 hex digits, found no such field'),
    "short address": ("address", "abc", '"address": 40 hex digits, found "abc"'),
    "crypto a string": ("crypto", "x", '"crypto.cipher": "aes-128-ctr", found no such field'),
    "other cipher": ("crypto.cipher", "aes-256-gcm", '"crypto.cipher": "aes-128-ctr", found "aes-256-gcm"'),
    "no mac": ("crypto.mac", DELETE, '"crypto.mac": 64 hex digits, found no such field'),
    "iv not hex": ("crypto.cipherparams.iv", "zz" * 16, '"crypto.cipherparams.iv": 32 hex digits'),
    "other kdf": ("crypto.kdf", "argon2id", '"crypto.kdf": "scrypt" or "pbkdf2", found "argon2id"'),
    "scrypt n too large": ("crypto.kdfparams.n", 2**20, '"crypto.kdfparams.n": a power of two from 2 to 2^18'),
    "scrypt n not a power of two": ("crypto.kdfparams.n", 1000, "found 1000"),
    "dklen as text": ("crypto.kdfparams.dklen", "32", '"crypto.kdfparams.dklen": 32, found "32"'),
    "no salt": ("crypto.kdfparams.salt", DELETE, '"crypto.kdfparams.salt": hex digits, found no such field'),
}


@pytest.mark.parametrize("reader", READERS.values(), ids=READERS.keys())
@pytest.mark.parametrize("field, value, words", SHAPES.values(), ids=SHAPES.keys())
def test_a_file_of_the_wrong_shape_is_one_clear_line(made, tmp_path, reader, field, value, words) -> None:  # type: ignore[no-untyped-def]
    path = _write(tmp_path / "keystore.json", _changed(made.document(), field, value))
    with pytest.raises(KeyError_) as error:
        reader(path)
    _one_line(error, path, "expected a v3 keystore with", words)


@pytest.mark.parametrize("reader", READERS.values(), ids=READERS.keys())
@pytest.mark.parametrize(
    "content, words",
    [
        (b"", "no valid JSON"),
        (b"{not json", "no valid JSON"),
        (b"\xff\xfe\xfd", "no valid JSON"),
        (b"[1, 2]", "a JSON object at the top, found [1, 2]"),
        (b'"' + b"x" * 100 + b'"', 'found "xxxxxxxxxx'),
    ],
)
def test_a_file_that_is_no_keystore_is_one_clear_line(tmp_path, reader, content, words) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "keystore.json"
    path.write_bytes(content)
    with pytest.raises(KeyError_) as error:
        reader(path)
    _one_line(error, path, "expected a v3 keystore", words)


@pytest.mark.parametrize("reader", READERS.values(), ids=READERS.keys())
def test_a_missing_or_unreadable_file_is_one_clear_line(tmp_path, reader) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(KeyError_) as error:
        reader(tmp_path / "absent.json")
    _one_line(error, tmp_path / "absent.json", "no chain keystore there", "chain-key create")
    with pytest.raises(KeyError_) as error:
        reader(tmp_path)
    _one_line(error, tmp_path, "cannot read the chain keystore")


def _pbkdf2_keystore(key: bytes, passphrase: bytes) -> dict[str, Any]:
    """A v3 keystore of `key` with one PBKDF2 round: fast, and valid whatever `key` is."""
    document = eth_keyfile.create_keyfile_json(b"\x01" * 32, passphrase, kdf="pbkdf2", iterations=1)
    crypto = document["crypto"]
    derived = hashlib.pbkdf2_hmac("sha256", passphrase, bytes.fromhex(crypto["kdfparams"]["salt"]), 1, 32)
    # AES-CTR: ciphertext = keystream XOR plaintext, so the keystream re-encrypts any key
    stream = bytes(c ^ 1 for c in bytes.fromhex(crypto["ciphertext"]))
    ciphertext = bytes(s ^ k for s, k in zip(stream, key, strict=True))
    crypto["ciphertext"] = ciphertext.hex()
    crypto["mac"] = keccak(derived[16:32] + ciphertext).hex()
    return document


def test_a_pbkdf2_keystore_of_another_tool_opens(tmp_path: Path) -> None:
    account = Account.create()
    document = _pbkdf2_keystore(bytes(account.key), PASSPHRASE)
    document["address"] = account.address[2:]
    assert open_keystore(_write(tmp_path / "k.json", document), PASSPHRASE).address == account.address


def test_a_keystore_holding_no_valid_secp256k1_key_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "k.json", _pbkdf2_keystore(b"\x00" * 32, PASSPHRASE))
    with pytest.raises(KeyError_) as error:
        open_keystore(path, PASSPHRASE)
    _one_line(error, path, "expected a secp256k1 private key", "found an invalid one")


def test_an_existing_file_is_replaced_only_with_force(tmp_path: Path, made: Made) -> None:
    path = tmp_path / "chain-key.json"
    path.write_bytes(b"an old keystore")
    path.chmod(0o644)
    with pytest.raises(KeyError_) as error:
        create_keystore(path, PASSPHRASE)
    _one_line(error, path, "exists", "--force")
    assert path.read_bytes() == b"an old keystore"
    address = create_keystore(path, PASSPHRASE, force=True)
    assert address != made.address and keystore_address(path) == address
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # the old file's looser mode is not kept


def test_refuses_a_missing_folder_and_an_empty_passphrase(tmp_path: Path) -> None:
    with pytest.raises(KeyError_) as error:
        create_keystore(tmp_path / "absent" / "k.json", PASSPHRASE)
    _one_line(error, tmp_path / "absent" / "k.json", "no folder")
    with pytest.raises(KeyError_) as error:
        create_keystore(tmp_path / "k.json", b"")
    _one_line(error, tmp_path / "k.json", "empty passphrase")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "content, passphrase",
    [(b"secret\n", b"secret"), (b"secret\r\n", b"secret"), (b"secret\n\n", b"secret\n"), (b" secret ", b" secret ")],
)
def test_a_passphrase_file_loses_one_trailing_newline(tmp_path: Path, content: bytes, passphrase: bytes) -> None:
    (tmp_path / "passphrase").write_bytes(content)
    assert read_passphrase_file(tmp_path / "passphrase") == passphrase


@pytest.mark.parametrize("content", [b"", b"\n"])
def test_an_empty_passphrase_file_is_refused(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "passphrase").write_bytes(content)
    with pytest.raises(KeyError_) as error:
        read_passphrase_file(tmp_path / "passphrase")
    _one_line(error, tmp_path / "passphrase", "found an empty file")
    with pytest.raises(KeyError_) as error:
        read_passphrase_file(tmp_path / "absent")
    _one_line(error, tmp_path / "absent", "cannot read passphrase file")
