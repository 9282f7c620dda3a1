"""The gateway's chain account: a secp256k1 key in a Web3 Secret Storage (v3) keystore.

Anchoring transactions are signed with a secp256k1 key, a curve TPM 2.0 does not have, so
the key lives in a standard encrypted keystore (scrypt with eth_account's default
parameters, readable by geth and every Ethereum library). Its passphrase is a TPM-sealed
secret (`agent.keys.secrets`): a copied keystore is useless away from this gateway. A plain
passphrase file is for development only.

Every way a keystore can fail to open is a `KeyError_` of one line naming the file.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import eth_keyfile
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_keyfile.exceptions import EthKeyfileValueError
from eth_utils import to_checksum_address

from agent.errors import KeyError_
from agent.files import fsync_directory, write_new_file

KDF: Final = "scrypt"  # explicit: eth_account would otherwise take ETH_ACCOUNT_KDF from the environment
CIPHER = "aes-128-ctr"
KDFS = ("scrypt", "pbkdf2")  # what v3 keystores written by other tools may use

Check = tuple[str, str, Callable[[Any], bool]]  # field path, what it must hold, the test
_MISSING = object()


def check_destination(path: Path, *, force: bool) -> None:
    """Raise unless a keystore may be written at `path`; callers check before anything is
    done for it (sealing its passphrase, the slow key derivation)."""
    if not path.parent.is_dir():
        raise KeyError_(f"{path}: cannot write the chain keystore: no folder {path.parent}")
    if path.exists() and not force:
        raise KeyError_(f"{path} exists: use --force to replace the chain keystore (and lose the account it holds)")


def create_keystore(path: Path, passphrase: bytes, *, force: bool = False) -> str:
    """Make a new account, write its keystore (mode 0600, atomically); return its EIP-55 address."""
    check_destination(path, force=force)
    if not passphrase:
        raise KeyError_(f"{path}: refusing to encrypt the chain keystore with an empty passphrase")
    account = Account.create()
    document = eth_keyfile.create_keyfile_json(bytes(account.key), passphrase, kdf=KDF)
    _write_private(path, json.dumps(document, indent=2).encode() + b"\n")
    return account.address


def keystore_address(path: Path) -> str:
    """The EIP-55 address the keystore names; no passphrase needed."""
    return _address(_load(path))


def open_keystore(path: Path, passphrase: bytes) -> LocalAccount:
    """The account the keystore holds, checked against the address it claims."""
    document = _load(path)
    try:
        key = eth_keyfile.decode_keyfile_json(document, passphrase)
    except EthKeyfileValueError:  # the one eth_keyfile raises for a checked v3 file: the MAC does not match
        raise KeyError_(f"{path}: wrong passphrase for the chain keystore (its MAC does not match)") from None
    try:
        account: LocalAccount = Account.from_key(key)
    except ValueError:  # zero, or not below the curve's order
        raise KeyError_(
            f"{path}: expected a secp256k1 private key in the chain keystore, found an invalid one"
        ) from None
    claimed = _address(document)
    if account.address != claimed:  # "address" is outside the MAC: edited to show another account
        raise KeyError_(f"{path}: the keystore's address field says {claimed}, but its key is {account.address}")
    return account


def read_passphrase_file(path: Path) -> bytes:
    """A development passphrase: the file's bytes, one trailing newline dropped."""
    try:
        value = path.read_bytes()
    except OSError as exc:
        raise KeyError_(f"{path}: cannot read passphrase file: {exc.strerror}") from None
    value = value.removesuffix(b"\n").removesuffix(b"\r")  # files written by echo or an editor end so
    if not value:
        raise KeyError_(f"{path}: expected a passphrase, found an empty file")
    return value


def _load(path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise KeyError_(
            f"{path}: no chain keystore there: create one with 'edgeseal-provision chain-key create'"
        ) from None
    except OSError as exc:
        raise KeyError_(f"{path}: cannot read the chain keystore: {exc.strerror}") from None
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise KeyError_(f"{path}: expected a v3 keystore (JSON), found no valid JSON: {exc}") from None
    problem = _shape_problem(document)
    if problem:
        raise KeyError_(f"{path}: expected a v3 keystore with {problem}")
    return document  # type: ignore[no-any-return]  # _shape_problem found an object


def _address(document: dict[str, Any]) -> str:
    return to_checksum_address("0x" + document["address"])


def _shape_problem(document: object) -> str | None:
    """The first field a v3 keystore needs that `document` lacks, said as "X, found Y".
    Checked up front so that eth_keyfile only ever sees a well-formed keystore."""
    if not isinstance(document, dict):
        return f"a JSON object at the top, found {_shown(document)}"
    return _first_problem(document, FIELDS) or _first_problem(document, KDF_PARAMS[document["crypto"]["kdf"]])


def _first_problem(document: dict[str, Any], checks: list[Check]) -> str | None:
    for field, expected, valid in checks:
        value = _at(document, field)
        if not valid(value):
            found = "no such field" if value is _MISSING else _shown(value)
            return f'"{field}": {expected}, found {found}'
    return None


def _at(document: dict[str, Any], field: str) -> Any:
    """The value at a dotted path, or _MISSING where the path stops."""
    value: Any = document
    for key in field.split("."):
        if not isinstance(value, dict) or key not in value:
            return _MISSING
        value = value[key]
    return value


def _shown(value: object) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _equal(field: str, wanted: object) -> Check:
    return (field, json.dumps(wanted), lambda v: type(v) is type(wanted) and v == wanted)


def _hex(field: str, size: int | None = None) -> Check:
    count = f"{{{size}}}" if size else "+"
    expected = f"{2 * size} hex digits" if size else "hex digits"
    return (field, expected, lambda v: isinstance(v, str) and bool(re.fullmatch(f"(?:[0-9a-fA-F]{{2}}){count}", v)))


def _integer(field: str, low: int, high: int) -> Check:
    return (field, f"an integer from {low} to {high}", lambda v: type(v) is int and low <= v <= high)


FIELDS = [
    _equal("version", 3),
    _hex("address", 20),
    _equal("crypto.cipher", CIPHER),
    _hex("crypto.cipherparams.iv", 16),
    _hex("crypto.ciphertext", 32),
    _hex("crypto.mac", 32),
    ("crypto.kdf", " or ".join(json.dumps(k) for k in KDFS), lambda v: v in KDFS),
]
# The bounds keep a damaged file from taking the gateway's memory or hours of its time:
# scrypt needs 128 * r * n bytes, 256 MiB at eth_account's (and geth's) n = 2^18, r = 8.
SCRYPT_N = {2**i for i in range(1, 19)}
KDF_PARAMS = {
    "scrypt": [
        ("crypto.kdfparams.n", "a power of two from 2 to 2^18", lambda v: type(v) is int and v in SCRYPT_N),
        _integer("crypto.kdfparams.r", 1, 8),
        _integer("crypto.kdfparams.p", 1, 16),
        _equal("crypto.kdfparams.dklen", 32),
        _hex("crypto.kdfparams.salt"),
    ],
    "pbkdf2": [
        _integer("crypto.kdfparams.c", 1, 10_000_000),
        _equal("crypto.kdfparams.prf", "hmac-sha256"),
        _equal("crypto.kdfparams.dklen", 32),
        _hex("crypto.kdfparams.salt"),
    ],
}


def _write_private(path: Path, data: bytes) -> None:
    """Mode 0600 from the first byte; a new file renamed over the target, so a power cut
    leaves the old keystore or the new one, and an old file's looser mode is never kept."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        write_new_file(temporary, data, 0o600)
        os.replace(temporary, path)
        fsync_directory(path.parent)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise KeyError_(f"{path}: cannot write the chain keystore: {exc.strerror}") from None
